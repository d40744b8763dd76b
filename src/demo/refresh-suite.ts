/**
 * The "stale model refresh" demo's task suite (`distillery demo --scenario refresh`), generated deterministically.
 *
 * Story: a tiny base model learns to write small functions that call a library, `lib` v1. The library then
 * changes (v2: renamed functions, a changed argument order). SDFT teaches v2 usage from demonstrations: the
 * teacher is the same model with a v2 demonstration in its context (the SDFT paper's template, `TEACHER_TEMPLATE`),
 * so the base must be able to follow an example in its context. A from-scratch 300k-parameter model only can if
 * its pretraining corpus teaches it, hence the corpus's "in-context" documents (below).
 *
 * Tasks. A library task is a spec of 1–3 library operations on `x`, then the header; the body calls the library:
 *
 *     # inc 3, limit 0 9                  <- prompt (student question)
 *     def f(x):
 *         x = lib.shift(x,3)              <- v1 body
 *         return lib.clip(x,0,9)
 *
 *     v2 body:  x = lib.offset(x,3)
 *               return lib.clamp(0,9,x)
 *
 * The retention domain is the embedded SSD demo's operator chains (`# add 3, times 2` → `x += 3` ...), which use
 * no library and do not change between v1 and v2.
 *
 * Parts (all disjoint by prompt = spec + fixed header):
 * - `v2Tasks`: held-out library tasks with hidden tests that define lib v2 and check results (so a v1-style
 *   completion fails with NameError or wrong values). Each uses at least one changed function.
 * - `sdftData`: `{prompt, demonstration}` — library tasks with a correct v2 body (SDFT's demonstrations).
 * - `retentionTasks`: held-out operator-chain tasks (no library).
 * - `corpus`: pretraining documents, loss on all tokens. Three kinds, packed so that documents have similar
 *   lengths (the train job pads a batch to its longest example):
 *   (a) v1 library tasks, (b) operator-chain tasks — several solved tasks per document, one after another;
 *   (c) in-context documents in the exact SDFT teacher format: question, an example answer to that same
 *       question, then the answer, which follows the example. In library questions the example calls the
 *       library under *random* function names and argument orders (never v1's, never v2's), so the model learns
 *       to take names and argument order from its context rather than from memory — which is what the SDFT
 *       teacher needs to do with a v2 demonstration. No v2 name or v2 call occurs anywhere in the corpus.
 *
 * Everything depends only on `seed` and `size`; the same arguments give byte-identical output.
 *
 * FEASIBILITY (bench/refresh-feasibility.py, measured): NOT VIABLE YET. With a 310k-parameter char Llama
 * trained from scratch for 600–2000 steps × 16 documents on this corpus (several variants of `REFRESH_KNOBS`),
 * the base never learned to copy a name from its context: teacher-prompt pass@1 on v2 tasks was 0 % in every
 * run, and the per-character loss of names in the answer equals that of the same names in the example (≈3.3
 * nats, i.e. no copying at all). Even with 40 % of documents replaced by pure copy documents (a random word
 * string, then the same string again), 700 steps × 16 left the copy half as hard to predict as the first half:
 * induction heads had not formed. Nothing may depend on this suite until a base passes that check.
 */
import { OPS, Rng, evaluateSteps, promptFor, canonicalSolution, solutionFor, type EvalTask, type Step, type SuiteSize } from './suite.js';

export type { EvalTask, SuiteSize } from './suite.js';

export interface RefreshCorpusDoc {
  prompt: string;
  completion: string;
}

export interface SdftRecord {
  /** the student's question (spec + header) */
  prompt: string;
  /** a correct v2 body for it */
  demonstration: string;
}

export interface RefreshSuite {
  seed: number;
  size: SuiteSize;
  libV1: string;
  libV2: string;
  changelog: string;
  corpus: RefreshCorpusDoc[];
  sdftData: SdftRecord[];
  v2Tasks: EvalTask[];
  retentionTasks: EvalTask[];
  alphabet: string;
  stop: string[];
}

export interface RefreshSuiteOptions {
  seed?: number;
  size?: SuiteSize;
  /** Corpus-design overrides, for experiments (bench/refresh-feasibility.py); the defaults are the demo's. */
  knobs?: Partial<RefreshKnobs>;
}

export interface RefreshKnobs {
  /** share of corpus documents in the teacher format */
  iclShare: number;
  /** share of in-context documents whose question is a library task (the rest: operator chains) */
  iclLibShare: number;
  /** share of in-context answers that copy the example exactly (the rest keep its names and argument order and
   * redraw the free form choices, e.g. whether the last call is inline in the `return`) */
  iclExactShare: number;
  /** plain documents are packed with solved tasks up to about this many characters */
  packChars: number;
  /** library calls per corpus task [min, max] */
  libOps: [number, number];
  /** operator-chain steps per corpus task [min, max] */
  chainOps: [number, number];
  /** library calls per in-context question [min, max] */
  iclLibOps: [number, number];
  /** length of the random names of in-context examples [min, max] */
  nameLen: [number, number];
}

export const REFRESH_KNOBS: RefreshKnobs = {
  iclShare: 0.5,
  iclLibShare: 0.8,
  iclExactShare: 1,
  packChars: 200,
  libOps: [1, 3],
  chainOps: [1, 3],
  iclLibOps: [1, 3],
  nameLen: [3, 8],
};

/** The SDFT paper's teacher prompt, verbatim: `$orig_content` = the student's question, `$output_text` = the demonstration. */
export const TEACHER_TEMPLATE =
  '\n$orig_content\n\nThis is an example for a response to the question:\n$output_text\n\nNow answer with a response of your own, including the thinking process.\n';

/** The teacher's prompt for a question and a demonstration (plain string substitution of the template). */
export function teacherPrompt(question: string, demonstration: string): string {
  const [a, rest] = TEACHER_TEMPLATE.split('$orig_content') as [string, string];
  const [b, c] = rest.split('$output_text') as [string, string];
  return a + question + b + demonstration + c;
}

export const REFRESH_ENTRY_POINT = 'f';
export const REFRESH_STOP = ['\n\n', '\n#', '\ndef'];
/** The embedded demo's alphabet plus the upper-case letters of the teacher template. */
export const REFRESH_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789 \n#,:()=+-*/%_<>!.TN';

/** Part sizes. Corpus: documents (see REFRESH_KNOBS for their kinds and lengths). */
export const REFRESH_SIZES: Record<SuiteSize, { corpus: number; sdft: number; v2Tasks: number; retention: number }> = {
  full: { corpus: 6000, sdft: 400, v2Tasks: 100, retention: 100 },
  fast: { corpus: 1500, sdft: 100, v2Tasks: 40, retention: 40 },
};

// ---------------------------------------------------------------------------------------------------------
// The library

type Arg = 'x' | 'a' | 'b';

interface LibFn {
  key: string;
  /** constant ranges; `b` may depend on `a` */
  consts: (rng: Rng) => number[];
  spec: (k: readonly number[]) => string;
  argNames: Arg[];
  v1: { name: string; order: Arg[] };
  v2: { name: string; order: Arg[] };
  apply: (x: number, k: readonly number[]) => number;
  /** Python body of the definition, on `x`, `a`, `b` */
  py: string;
}

const pyMod = (a: number, b: number): number => ((a % b) + b) % b;

export const LIB: readonly LibFn[] = [
  {
    key: 'inc', consts: (r) => [r.int(1, 9)], spec: (k) => `inc ${k[0]}`, argNames: ['x', 'a'],
    v1: { name: 'shift', order: ['x', 'a'] }, v2: { name: 'offset', order: ['x', 'a'] },
    apply: (x, k) => x + k[0]!, py: 'x+a',
  },
  {
    key: 'grow', consts: (r) => [r.int(2, 5)], spec: (k) => `grow ${k[0]}`, argNames: ['x', 'a'],
    v1: { name: 'scale', order: ['x', 'a'] }, v2: { name: 'mul', order: ['x', 'a'] },
    apply: (x, k) => x * k[0]!, py: 'x*a',
  },
  {
    key: 'limit', consts: (r) => { const a = r.int(0, 5); return [a, r.int(a + 2, a + 9)]; }, spec: (k) => `limit ${k[0]} ${k[1]}`,
    argNames: ['x', 'a', 'b'],
    v1: { name: 'clip', order: ['x', 'a', 'b'] }, v2: { name: 'clamp', order: ['a', 'b', 'x'] },
    apply: (x, k) => Math.max(k[0]!, Math.min(x, k[1]!)), py: 'max(a, min(x, b))',
  },
  {
    key: 'cycle', consts: (r) => [r.int(2, 9)], spec: (k) => `cycle ${k[0]}`, argNames: ['x', 'a'],
    v1: { name: 'wrap', order: ['x', 'a'] }, v2: { name: 'wrap', order: ['a', 'x'] },
    apply: (x, k) => pyMod(x, k[0]!), py: 'x%a',
  },
  {
    key: 'half', consts: () => [], spec: () => 'half', argNames: ['x'],
    v1: { name: 'halve', order: ['x'] }, v2: { name: 'halve', order: ['x'] },
    apply: (x) => Math.floor(x / 2), py: 'x//2',
  },
];

/** Functions whose v2 differs from v1 (name or argument order). */
export const CHANGED = LIB.filter((f) => f.v1.name !== f.v2.name || f.v1.order.join() !== f.v2.order.join()).map((f) => f.key);
/** Names that exist only in v2 (must never occur in the corpus). */
export const V2_ONLY_NAMES = LIB.map((f) => f.v2.name).filter((n) => !LIB.some((g) => g.v1.name === n));
export const V1_NAMES = LIB.map((f) => f.v1.name);

function libSource(version: 'v1' | 'v2'): string {
  return LIB.map((f) => {
    const sig = f[version];
    return `def ${sig.name}(${sig.order.join(', ')}):\n    return ${f.py}\n`;
  }).join('\n');
}

export const LIB_V1 = libSource('v1');
export const LIB_V2 = libSource('v2');

/** Python that defines `lib` (a class used as a namespace) holding the functions of `source`. */
export function libNamespace(source: string, version: 'v1' | 'v2'): string {
  const names = LIB.map((f) => f[version].name);
  return source + '\nclass lib:\n    pass\n\n' + names.map((n) => `lib.${n} = ${n}\n`).join('');
}

export const CHANGELOG = [
  'lib 2.0 changelog (calls are written lib.name(...))',
  '- shift(x, a) is renamed to offset(x, a)',
  '- scale(x, a) is renamed to mul(x, a)',
  '- clip(x, a, b) is renamed to clamp(a, b, x): the value now comes last',
  '- wrap(x, a) is now wrap(a, x): the modulus comes first',
  '- halve(x) is unchanged',
  '',
].join('\n');

/**
 * Calls are module-qualified (`lib.shift(x,3)`): the `.` right before every library name gives the model a
 * one-character cue to copy a name from its context (an in-context example) after.
 */
export const LIB_PREFIX = 'lib.';

export interface LibStep {
  fn: number;
  k: number[];
}

function libAt(i: number): LibFn {
  const f = LIB[i];
  if (f === undefined) throw new Error(`no lib fn ${i}`);
  return f;
}

export function libSpecText(steps: readonly LibStep[]): string {
  return steps.map((s) => libAt(s.fn).spec(s.k)).join(', ');
}

export function libPrompt(steps: readonly LibStep[]): string {
  return `# ${libSpecText(steps)}\ndef ${REFRESH_ENTRY_POINT}(x):\n`;
}

/** Name and argument order used for each library function when rendering a body. */
export type Naming = { name: string; order: Arg[] }[];

export const NAMING_V1: Naming = LIB.map((f) => f.v1);
export const NAMING_V2: Naming = LIB.map((f) => f.v2);

function call(naming: Naming, s: LibStep, x: string): string {
  const sig = naming[s.fn]!;
  const args = sig.order.map((a) => (a === 'x' ? x : a === 'a' ? String(s.k[0]) : String(s.k[1])));
  return `${LIB_PREFIX}${sig.name}(${args.join(',')})`;
}

/** A body: one `x = call` line per step; the last call inline in the `return` when `inlineLast`. */
export function libBody(steps: readonly LibStep[], naming: Naming, inlineLast: boolean): string {
  const lines: string[] = [];
  const body = inlineLast ? steps.slice(0, -1) : steps;
  for (const s of body) lines.push(`    x = ${call(naming, s, 'x')}\n`);
  const last = steps[steps.length - 1];
  if (inlineLast && last !== undefined) lines.push(`    return ${call(naming, last, 'x')}\n`);
  else lines.push('    return x\n');
  return lines.join('');
}

export function evaluateLib(steps: readonly LibStep[], x: number): number {
  let v = x;
  for (const s of steps) v = libAt(s.fn).apply(v, s.k);
  return v;
}

function randomLibSteps(rng: Rng, minOps: number, maxOps: number): LibStep[] {
  const n = rng.int(minOps, maxOps);
  const steps: LibStep[] = [];
  while (steps.length < n) {
    const fn = rng.int(0, LIB.length - 1);
    const prev = steps[steps.length - 1];
    if (prev !== undefined && prev.fn === fn) continue;
    steps.push({ fn, k: libAt(fn).consts(rng) });
  }
  return steps;
}

// ---------------------------------------------------------------------------------------------------------
// Hidden tests

const TEST_INPUTS = [-9, -7, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 15];

/** x ↦ value, or null where the (mutant) program raises (a modulus of 0). */
type Prog = (x: number) => number | null;

/**
 * Mutants a test set must kill: one step dropped, one constant off by one, and for the functions whose argument
 * order changed, the call with v1's order under v2's meaning (`wrap(x,5)` under v2 is 5 % x; `clamp(x,0,9)`
 * is max(x, min(0, 9))).
 */
function libMutants(steps: readonly LibStep[]): Prog[] {
  const progs: Prog[] = [(x) => x]; // the empty body: specs equal to the identity (grow 2, half) are rejected
  const plain = (ss: readonly LibStep[]): Prog => (x) => evaluateLib(ss, x);
  for (let i = 0; i < steps.length; i++) {
    progs.push(plain(steps.filter((_, j) => j !== i)));
    const s = steps[i]!;
    for (let c = 0; c < s.k.length; c++) {
      for (const d of [-1, 1]) {
        const k = s.k.map((v, j) => (j === c ? v + d : v));
        if (libAt(s.fn).key === 'cycle' && k[0] === 0) continue;
        progs.push(plain(steps.map((t, j) => (j === i ? { fn: t.fn, k } : t))));
      }
    }
    const key = libAt(s.fn).key;
    if (key === 'cycle' || key === 'limit') {
      // v1 argument order read with v2's meaning
      progs.push((x) => {
        let v = x;
        for (let j = 0; j < steps.length; j++) {
          const t = steps[j]!;
          if (j !== i) v = libAt(t.fn).apply(v, t.k);
          else if (key === 'cycle') {
            if (v === 0) return null;
            v = pyMod(t.k[0]!, v);
          } else v = Math.max(v, Math.min(t.k[0]!, t.k[1]!));
        }
        return v;
      });
    }
  }
  return progs;
}

function opMutants(steps: readonly Step[]): Prog[] {
  const progs: Prog[] = [(x) => x];
  for (let i = 0; i < steps.length; i++) {
    const dropped = steps.filter((_, j) => j !== i);
    progs.push((x) => evaluateSteps(dropped, x));
    const s = steps[i]!;
    if (OPS[s.op]!.k !== null) {
      for (const d of [-1, 1]) {
        const m = steps.map((t, j) => (j === i ? { op: t.op, k: t.k + d } : t));
        progs.push((x) => evaluateSteps(m, x));
      }
    }
  }
  return progs;
}

/** Five inputs on which every mutant differs from `want` somewhere; null when none are found. */
function pickInputs(want: (x: number) => number, mutants: Prog[], rng: Rng): number[] | null {
  for (let attempt = 0; attempt < 20; attempt++) {
    const pool = [...TEST_INPUTS];
    const xs: number[] = [];
    while (xs.length < 5) xs.push(pool.splice(rng.int(0, pool.length - 1), 1)[0] as number);
    xs.sort((a, b) => a - b);
    if (mutants.every((m) => xs.some((x) => m(x) !== want(x)))) return xs;
  }
  return null;
}

function assertsText(xs: readonly number[], want: (x: number) => number): string {
  return xs.map((x) => `assert ${REFRESH_ENTRY_POINT}(${x}) == ${want(x)}\n`).join('');
}

// ---------------------------------------------------------------------------------------------------------
// Operator chains (the retention domain), as in suite.ts

function randomOpSteps(rng: Rng, minOps: number, maxOps: number): Step[] {
  const n = rng.int(minOps, maxOps);
  const steps: Step[] = [];
  while (steps.length < n) {
    const op = rng.int(0, OPS.length - 1);
    const prev = steps[steps.length - 1];
    if (prev !== undefined && prev.op === op) continue;
    const range = OPS[op]!.k;
    steps.push({ op, k: range === null ? 0 : rng.int(range[0], range[1]) });
  }
  return steps;
}

// ---------------------------------------------------------------------------------------------------------
// Random names for the in-context documents

const LETTERS = 'abcdefghijklmnopqrstuvwxyz';
const RESERVED = new Set([
  'and', 'def', 'del', 'for', 'not', 'try', 'else', 'elif', 'from', 'with', 'pass', 'break', 'class', 'raise',
  'while', 'yield', 'async', 'await', 'global', 'import', 'lambda', 'return', 'assert', 'except', 'finally',
  'abs', 'max', 'min', 'sum', 'len', 'int', 'str', 'pow', 'map', 'zip', 'all', 'any', 'set', 'dir', 'hex', 'oct',
  'bin', 'chr', 'ord', 'iter', 'next', 'list', 'dict', 'type', 'bool', 'float', 'print', 'range', 'round', 'None',
]);
/** Every library name of either version; random names never contain one. */
const LIB_NAMES = [...new Set(LIB.flatMap((f) => [f.v1.name, f.v2.name]))];

function randomName(rng: Rng, len: [number, number]): string {
  for (;;) {
    const n = rng.int(len[0], len[1]);
    let name = '';
    for (let i = 0; i < n; i++) name += rng.pick(LETTERS.split(''));
    if (n >= 5 && rng.next() < 0.2) name = name.slice(0, 2) + '_' + name.slice(3);
    if (RESERVED.has(name)) continue;
    if (LIB_NAMES.some((n) => name.includes(n))) continue;
    return name;
  }
}

function shuffled<T>(rng: Rng, items: readonly T[]): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/** A random naming: distinct fresh names and a random argument order per function. */
function randomNaming(rng: Rng, len: [number, number]): Naming {
  const names = new Set<string>();
  while (names.size < LIB.length) names.add(randomName(rng, len));
  const list = [...names];
  return LIB.map((f, i) => ({ name: list[i]!, order: shuffled(rng, f.argNames) }));
}

// ---------------------------------------------------------------------------------------------------------
// The suite

export function generateRefreshSuite(options: RefreshSuiteOptions = {}): RefreshSuite {
  const seed = options.seed ?? 0;
  const size = options.size ?? 'full';
  const sizes = REFRESH_SIZES[size];
  const kn: RefreshKnobs = { ...REFRESH_KNOBS, ...options.knobs };
  const rng = new Rng(seed ^ 0x7ef7e5);
  const taken = new Set<string>();
  const changed = new Set(CHANGED);
  const usesChange = (steps: readonly LibStep[]): boolean => steps.some((s) => changed.has(libAt(s.fn).key));

  // 1. Held-out v2 tasks (2–3 library calls, at least one changed function).
  const v2Tasks: EvalTask[] = [];
  while (v2Tasks.length < sizes.v2Tasks) {
    const steps = randomLibSteps(rng, 2, 3);
    const prompt = libPrompt(steps);
    if (taken.has(prompt) || !usesChange(steps)) continue;
    const want = (x: number): number => evaluateLib(steps, x);
    const xs = pickInputs(want, libMutants(steps), rng);
    if (xs === null) continue;
    taken.add(prompt);
    v2Tasks.push({
      id: `refresh/v2/${String(v2Tasks.length).padStart(3, '0')}`,
      prompt,
      tests: '\n' + libNamespace(LIB_V2, 'v2') + '\n' + assertsText(xs, want),
      entry_point: REFRESH_ENTRY_POINT,
      canonical_solution: libBody(steps, NAMING_V2, false),
    });
  }

  // 2. Held-out retention tasks (operator chains, 2–4 ops).
  const retentionTasks: EvalTask[] = [];
  while (retentionTasks.length < sizes.retention) {
    const steps = randomOpSteps(rng, 2, 4);
    const prompt = promptFor(steps);
    if (taken.has(prompt)) continue;
    const want = (x: number): number => evaluateSteps(steps, x);
    const xs = pickInputs(want, opMutants(steps), rng);
    if (xs === null) continue;
    taken.add(prompt);
    retentionTasks.push({
      id: `refresh/retain/${String(retentionTasks.length).padStart(3, '0')}`,
      prompt,
      tests: '\n' + assertsText(xs, want),
      entry_point: REFRESH_ENTRY_POINT,
      canonical_solution: canonicalSolution(steps),
    });
  }

  // 3. SDFT records: v2 demonstrations for other library tasks.
  const sdftData: SdftRecord[] = [];
  while (sdftData.length < sizes.sdft) {
    const steps = randomLibSteps(rng, 1, 3);
    const prompt = libPrompt(steps);
    if (taken.has(prompt) || !usesChange(steps)) continue;
    taken.add(prompt);
    sdftData.push({ prompt, demonstration: libBody(steps, NAMING_V2, rng.next() < 0.5) });
  }

  // 4. The corpus: every spec not taken above (a spec may repeat inside the corpus).
  const plainTask = (): string => {
    for (;;) {
      if (rng.next() < 0.5) {
        const steps = randomLibSteps(rng, kn.libOps[0], kn.libOps[1]);
        const prompt = libPrompt(steps);
        if (taken.has(prompt)) continue;
        return prompt + libBody(steps, NAMING_V1, rng.next() < 0.5);
      }
      const steps = randomOpSteps(rng, kn.chainOps[0], kn.chainOps[1]);
      const prompt = promptFor(steps);
      if (taken.has(prompt)) continue;
      return prompt + solutionFor(steps, rng);
    }
  };
  const iclDoc = (): RefreshCorpusDoc => {
    for (;;) {
      if (rng.next() < kn.iclLibShare) {
        const steps = randomLibSteps(rng, kn.iclLibOps[0], kn.iclLibOps[1]);
        const question = libPrompt(steps);
        if (taken.has(question)) continue;
        const naming = randomNaming(rng, kn.nameLen);
        const inline = rng.next() < 0.5;
        const example = libBody(steps, naming, inline);
        const answer = rng.next() < kn.iclExactShare ? example : libBody(steps, naming, rng.next() < 0.5);
        return { prompt: teacherPrompt(question, example), completion: answer };
      }
      const steps = randomOpSteps(rng, kn.chainOps[0], kn.chainOps[1]);
      const question = promptFor(steps);
      if (taken.has(question)) continue;
      const example = solutionFor(steps, rng);
      const answer = rng.next() < kn.iclExactShare ? example : solutionFor(steps, rng);
      return { prompt: teacherPrompt(question, example), completion: answer };
    }
  };
  const corpus: RefreshCorpusDoc[] = [];
  while (corpus.length < sizes.corpus) {
    if (rng.next() < kn.iclShare) {
      corpus.push(iclDoc());
      continue;
    }
    const first = plainTask();
    const nl = first.indexOf('\n') + 1;
    const headerEnd = first.indexOf('\n', nl) + 1;
    let completion = first.slice(headerEnd);
    let length = first.length;
    while (length < kn.packChars) {
      const t = plainTask();
      completion += t;
      length += t.length;
    }
    corpus.push({ prompt: first.slice(0, headerEnd), completion });
  }

  return {
    seed,
    size,
    libV1: LIB_V1,
    libV2: LIB_V2,
    changelog: CHANGELOG,
    corpus,
    sdftData,
    v2Tasks,
    retentionTasks,
    alphabet: REFRESH_ALPHABET,
    stop: [...REFRESH_STOP],
  };
}

/** The v1 body of a v2 task's spec (what a model that never saw v2 writes); for tests and reports. */
export function v1SolutionFor(prompt: string): string | null {
  const steps = parseLibPrompt(prompt);
  return steps === null ? null : libBody(steps, NAMING_V1, false);
}

/** Library steps from a library task's prompt, or null when it is not one. */
export function parseLibPrompt(prompt: string): LibStep[] | null {
  const m = /^# (.*)\ndef f\(x\):\n$/.exec(prompt);
  if (m === null) return null;
  const steps: LibStep[] = [];
  for (const part of m[1]!.split(', ')) {
    const [word, ...nums] = part.split(' ');
    const fn = LIB.findIndex((f) => f.key === word);
    if (fn < 0) return null;
    steps.push({ fn, k: nums.map(Number) });
  }
  return steps;
}
