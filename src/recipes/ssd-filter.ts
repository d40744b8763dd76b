/**
 * SSD's only data filter: no execution, no correctness check. The paper drops empty and stub outputs; the
 * released pipeline also drops the shortest 10% by characters (off by default here, `drop_shortest_pct`).
 *
 * Deviation, documented: the paper drops "single-line stubs". Completion-style prompts (a function header
 * followed by its body) have legitimate one-line answers, so a stub is recognised by its content instead:
 * nothing but placeholders such as `pass`, `...`, `raise NotImplementedError`, `return None` or comments.
 */
export interface FilterConfig {
  /** Outputs with fewer non-whitespace characters are dropped as empty. */
  min_chars: number;
  drop_stubs: boolean;
  /** Drop this percentage of the remaining outputs, shortest first (0 = off; ml-ssd uses 10). */
  drop_shortest_pct: number;
}

export const DEFAULT_FILTER: FilterConfig = { min_chars: 1, drop_stubs: true, drop_shortest_pct: 0 };

export interface FilterStats {
  total: number;
  empty: number;
  stub: number;
  shortest: number;
  kept: number;
}

const PLACEHOLDER_LINE =
  /^(pass|\.\.\.|return|return None|raise NotImplementedError(\(.*\))?|# ?(your code here|todo).*|#.*)$/i;

/** True when the text contains no real code: only placeholders, comments and fences. */
export function isStub(text: string): boolean {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !l.startsWith('```'));
  return lines.length > 0 && lines.every((l) => PLACEHOLDER_LINE.test(l));
}

export function filterSamples<T extends { completion: string }>(
  samples: T[],
  cfg: FilterConfig,
): { kept: T[]; stats: FilterStats } {
  const stats: FilterStats = { total: samples.length, empty: 0, stub: 0, shortest: 0, kept: 0 };
  let kept: T[] = [];
  for (const s of samples) {
    if (s.completion.replace(/\s+/g, '').length < cfg.min_chars) stats.empty++;
    else if (cfg.drop_stubs && isStub(s.completion)) stats.stub++;
    else kept.push(s);
  }
  if (cfg.drop_shortest_pct > 0 && kept.length > 0) {
    const drop = Math.floor((kept.length * cfg.drop_shortest_pct) / 100);
    // Stable order: sort indices by length, drop the first `drop`, keep original order otherwise.
    const order = kept.map((s, i) => [s.completion.length, i] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    const dropped = new Set(order.slice(0, drop).map(([, i]) => i));
    kept = kept.filter((_, i) => !dropped.has(i));
    stats.shortest = drop;
  }
  stats.kept = kept.length;
  return { kept, stats };
}
