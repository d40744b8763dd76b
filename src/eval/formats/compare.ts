/**
 * Output comparison for stdin/stdout tasks, as LiveCodeBench's grade_stdio does it: the whole text is stripped,
 * split into lines, and each line stripped of surrounding whitespace; the line counts must be equal, and each
 * line pair equal as text — or, failing that, both lines must consist entirely of decimal numbers (split on
 * whitespace) and the two lists be equal as exact decimals (LiveCodeBench uses Python's Decimal: `0.50` matches
 * `0.5` and `1e3` matches `1000`, but `0.3333` does not match `0.333`, and `Yes 1.50` does not match `Yes 1.5`
 * because `Yes` is not a number). Unlike Decimal, `inf`/`nan` are not read as numbers here.
 */
export function stdoutMatches(actual: string, expected: string): boolean {
  const a = lines(actual);
  const e = lines(expected);
  if (a.length !== e.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === e[i]) continue;
    const at = a[i]!.split(/\s+/);
    const et = e[i]!.split(/\s+/);
    if (at.length !== et.length) return false;
    if (!at.every((x) => DECIMAL.test(x)) || !et.every((x) => DECIMAL.test(x))) return false;
    for (let j = 0; j < at.length; j++) if (normalise(at[j]!) !== normalise(et[j]!)) return false;
  }
  return true;
}

function lines(text: string): string[] {
  return text.replace(/\r\n?/g, '\n').trim().split('\n').map((l) => l.trim());
}

const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;

function normalise(s: string): string {
  let sign = '';
  if (s[0] === '+' || s[0] === '-') {
    sign = s[0] === '-' ? '-' : '';
    s = s.slice(1);
  }
  let exp = 0;
  const e = s.search(/[eE]/);
  if (e >= 0) {
    exp = Number(s.slice(e + 1));
    s = s.slice(0, e);
  }
  const dot = s.indexOf('.');
  let digits = dot >= 0 ? s.slice(0, dot) + s.slice(dot + 1) : s;
  exp += dot >= 0 ? dot : s.length; // position of the decimal point in `digits`
  const lead = digits.search(/[^0]/);
  if (lead < 0) return '0';
  digits = digits.slice(lead);
  exp -= lead;
  digits = digits.replace(/0+$/, '');
  return `${sign}0.${digits}e${exp}`;
}
