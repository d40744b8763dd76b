/**
 * The "stale model refresh" demo's task suite (`distillery demo --scenario refresh`), generated deterministically.
 *
 * Story: a tiny base model learns to write small functions that call a library, v1. The library then changes (v2:
 * renamed functions, changed argument orders). SDFT teaches v2 usage from demonstrations: the teacher is the same
 * model with a v2 demonstration in its context (the SDFT paper's template, `TEACHER_TEMPLATE`), so the base must be
 * able to follow an example in its context. A from-scratch model of a few hundred thousand parameters only can if
 * its pretraining corpus teaches it (the in-context and copy documents below) and its token embeddings stay
 * distinct (the demo trains the base with frozen random embeddings; docs/demo-design.md has the measurements).
 *
 * Tasks. A library task is a spec of one library operation on `x`, then the header; the body calls the library:
 *
 *     # limit 0 9                  <- prompt (student question)
 *     def f(x):
 *         return clip(x,0,9)       <- v1 body (or: x = clip(x,0,9) / return x)
 *
 *     v2 body:  return clamp(0,9,x)
 *
 * The model reads text as pieces (`REFRESH_PATTERN`: one token per word, digit, symbol, newline or indent), so a
 * function name is one token and copying it from an example is one lookup.
 *
 * The retention domain is the embedded SSD demo's operator chains (`# add 3, times 2` → `x = x+3` ...), which use
 * no library and do not change between v1 and v2.
 *
 * Parts:
 * - `v2Tasks`: held-out library tasks (changed functions only) with hidden tests that define lib v2 and check
 *   results, so a v1-style completion fails with NameError or wrong values.
 * - `sdftData`: `{prompt, demonstration}`: other library tasks with a correct v2 body (SDFT's demonstrations).
 *   Disjoint from `v2Tasks`, so a v2 gain is generalisation, not memorised answers.
 * - `retentionTasks`: held-out operator-chain tasks (no library).
 * - `corpus`: pretraining documents, loss on all tokens, one of four kinds:
 *   (a) a v1 library task with its v1 body; (b) an operator-chain task with its body;
 *   (c) an in-context document in the exact SDFT teacher format: question, an example answer to that same
 *       question, then the answer, which repeats the example. The example calls the library under a random name
 *       from `NAME_POOL` (sometimes a v1 name) with a random argument order, so the only way to predict the answer
 *       is to read the example — which is what the SDFT teacher must do with a v2 demonstration;
 *   (d) a copy document: a run of pool names, a blank line, the same run again (the plain copying skill).
 *   v2's names exist as pool words (as they would in any code base) but never as the right call for their
 *   function: no corpus document contains a v2 body of its question.
 *
 * Everything depends only on `seed` and `size`; the same arguments give byte-identical output.
 */
import { BUILTIN_TEMPLATES, renderTemplate } from '../recipes/onpolicy-templates.js';
import { Rng } from '../core/rng.js';
import { OPS, evaluateSteps, promptFor, canonicalSolution, solutionFor, type EvalTask, type Step, type SuiteSize } from './suite.js';

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
  /** The model's vocabulary: every piece any prompt or completion contains, plus the pool names (sorted). */
  pieces: string[];
  /** How text splits into pieces (the engine's `pieces` tokenizer). */
  pattern: string;
  stop: string[];
}

export interface RefreshSuiteOptions {
  seed?: number;
  size?: SuiteSize;
  /** Corpus-design overrides, for experiments; the defaults are the demo's. */
  knobs?: Partial<RefreshKnobs>;
}

export interface RefreshKnobs {
  /** shares of corpus documents: in-context (teacher format) and copy documents; the rest are plain tasks */
  iclShare: number;
  copyShare: number;
  /** share of plain tasks that are library (v1) tasks; the rest are operator chains */
  libShare: number;
  /** share of in-context library examples that use a v1 name (the rest: a pool name) */
  iclV1NameShare: number;
  /** share of in-context documents whose question is a library task (the rest: operator chains) */
  iclLibShare: number;
  /** operator-chain steps per corpus task [min, max] */
  chainOps: [number, number];
  /** names per copy document [min, max] */
  copyWords: [number, number];
}

export const REFRESH_KNOBS: RefreshKnobs = {
  iclShare: 0.4,
  copyShare: 0.3,
  libShare: 0.5,
  iclV1NameShare: 0.2,
  iclLibShare: 1,
  chainOps: [1, 4],
  copyWords: [3, 10],
};

/** The sdft recipe's default teacher template (the official SDFT code's, verbatim): `$orig_content` = the
 * student's question, `$output_text` = the demonstration. No trailing newline: the answer follows "process.". */
const TEACHER = BUILTIN_TEMPLATES.sdft[0]!.teacher;
export const TEACHER_TEMPLATE = TEACHER.text;

/** The teacher's prompt for a question and a demonstration, rendered exactly as the recipe renders it. */
export function teacherPrompt(question: string, demonstration: string): string {
  return renderTemplate(TEACHER, { prompt: question, demonstration });
}

export const REFRESH_ENTRY_POINT = 'f';
export const REFRESH_STOP = ['\n\n', '\n#', '\ndef'];
/** Pieces: a newline, a 4-space indent, a word or a digit or a symbol (each with its leading space), a space. */
export const REFRESH_PATTERN = String.raw`\n|    | ?[A-Za-z_]+| ?[0-9]| ?[^A-Za-z_0-9\s]| `;

/** Part sizes. The changed functions have 165 single-call specs; v2 tasks and SDFT records split them. */
export const REFRESH_SIZES: Record<SuiteSize, { corpus: number; sdft: number; v2Tasks: number; retention: number }> = {
  full: { corpus: 8000, sdft: 80, v2Tasks: 60, retention: 100 },
  fast: { corpus: 1500, sdft: 40, v2Tasks: 30, retention: 30 },
};

// ---------------------------------------------------------------------------------------------------------
// The library

type Arg = 'x' | 'a' | 'b';

interface LibFn {
  key: string;
  /** constant ranges; `b` may depend on `a` */
  consts: (rng: Rng) => number[];
  /** every constant tuple the spec can take (to count and enumerate the specs) */
  allConsts: number[][];
  spec: (k: readonly number[]) => string;
  argNames: Arg[];
  v1: { name: string; order: Arg[] };
  v2: { name: string; order: Arg[] };
  apply: (x: number, k: readonly number[]) => number;
  /** Python body of the definition, on `x`, `a`, `b` */
  py: string;
}

const pyMod = (a: number, b: number): number => ((a % b) + b) % b;
const range = (lo: number, hi: number): number[] => Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);

export const LIB: readonly LibFn[] = [
  {
    key: 'inc', consts: (r) => [r.int(1, 29)], allConsts: range(1, 29).map((a) => [a]), spec: (k) => `inc ${k[0]}`, argNames: ['x', 'a'],
    v1: { name: 'shift', order: ['x', 'a'] }, v2: { name: 'offset', order: ['x', 'a'] },
    apply: (x, k) => x + k[0]!, py: 'x+a',
  },
  {
    key: 'grow', consts: (r) => [r.int(2, 9)], allConsts: range(2, 9).map((a) => [a]), spec: (k) => `grow ${k[0]}`, argNames: ['x', 'a'],
    v1: { name: 'scale', order: ['x', 'a'] }, v2: { name: 'mul', order: ['x', 'a'] },
    apply: (x, k) => x * k[0]!, py: 'x*a',
  },
  {
    key: 'limit',
    consts: (r) => { const a = r.int(0, 9); return [a, r.int(a + 2, a + 12)]; },
    allConsts: range(0, 9).flatMap((a) => range(a + 2, a + 12).map((b) => [a, b])),
    spec: (k) => `limit ${k[0]} ${k[1]}`,
    argNames: ['x', 'a', 'b'],
    v1: { name: 'clip', order: ['x', 'a', 'b'] }, v2: { name: 'clamp', order: ['a', 'b', 'x'] },
    apply: (x, k) => Math.max(k[0]!, Math.min(x, k[1]!)), py: 'max(a, min(x, b))',
  },
  {
    key: 'cycle', consts: (r) => [r.int(2, 19)], allConsts: range(2, 19).map((a) => [a]), spec: (k) => `cycle ${k[0]}`, argNames: ['x', 'a'],
    v1: { name: 'wrap', order: ['x', 'a'] }, v2: { name: 'wrap', order: ['a', 'x'] },
    apply: (x, k) => pyMod(x, k[0]!), py: 'x%a',
  },
  {
    key: 'half', consts: () => [], allConsts: [[]], spec: () => 'half', argNames: ['x'],
    v1: { name: 'halve', order: ['x'] }, v2: { name: 'halve', order: ['x'] },
    apply: (x) => Math.floor(x / 2), py: 'x//2',
  },
];

/** Functions whose v2 differs from v1 (name or argument order). */
export const CHANGED = LIB.filter((f) => f.v1.name !== f.v2.name || f.v1.order.join() !== f.v2.order.join()).map((f) => f.key);
/** Names that exist only in v2. */
export const V2_ONLY_NAMES = LIB.map((f) => f.v2.name).filter((n) => !LIB.some((g) => g.v1.name === n));
export const V1_NAMES = LIB.map((f) => f.v1.name);

function libSource(version: 'v1' | 'v2'): string {
  return LIB.map((f) => {
    const sig = f[version];
    return `def ${sig.name}(${sig.order.join(', ')}):\n    return ${f.py}\n`;
  }).join('\n');
}

/** Python source defining each version's functions; the hidden tests start with it. */
export const LIB_V1 = libSource('v1');
export const LIB_V2 = libSource('v2');

export const CHANGELOG = [
  'lib 2.0 changelog',
  '- shift(x, a) is renamed to offset(x, a)',
  '- scale(x, a) is renamed to mul(x, a)',
  '- clip(x, a, b) is renamed to clamp(a, b, x): the value now comes last',
  '- wrap(x, a) is now wrap(a, x): the modulus comes first',
  '- halve(x) is unchanged',
  '',
].join('\n');

/** One library call: function index and constants. */
export interface LibCall {
  fn: number;
  k: number[];
}

function libAt(i: number): LibFn {
  const f = LIB[i];
  if (f === undefined) throw new Error(`no lib fn ${i}`);
  return f;
}

export function libPrompt(c: LibCall): string {
  return `# ${libAt(c.fn).spec(c.k)}\ndef ${REFRESH_ENTRY_POINT}(x):\n`;
}

/** The name and argument order a body uses for its call. */
export interface Signature {
  name: string;
  order: Arg[];
}

export const signatureV1 = (c: LibCall): Signature => libAt(c.fn).v1;
export const signatureV2 = (c: LibCall): Signature => libAt(c.fn).v2;

/** A body: the call inline in the `return`, or assigned to x and then returned. */
export function libBody(c: LibCall, sig: Signature, inline: boolean): string {
  const args = sig.order.map((a) => (a === 'x' ? 'x' : a === 'a' ? String(c.k[0]) : String(c.k[1])));
  const call = `${sig.name}(${args.join(',')})`;
  return inline ? `    return ${call}\n` : `    x = ${call}\n    return x\n`;
}

export function evaluateLib(c: LibCall, x: number): number {
  return libAt(c.fn).apply(x, c.k);
}

// ---------------------------------------------------------------------------------------------------------
// Hidden tests

const TEST_INPUTS = [-9, -7, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 15, 17, 19, 21, 25];

/** x ↦ value, or null where the (mutant) program raises (a modulus of 0). */
type Prog = (x: number) => number | null;

/**
 * Mutants a test set must kill: the identity, each constant off by one, and for the functions whose argument
 * order changed, the call with v1's order under v2's meaning (`wrap(x,5)` under v2 is 5 % x; `clamp(x,0,9)` is
 * max(x, min(0, 9))).
 */
function libMutants(c: LibCall): Prog[] {
  const f = libAt(c.fn);
  const progs: Prog[] = [(x) => x];
  for (let i = 0; i < c.k.length; i++) {
    for (const d of [-1, 1]) {
      const k = c.k.map((v, j) => (j === i ? v + d : v));
      if (f.key === 'cycle' && k[0] === 0) continue;
      progs.push((x) => f.apply(x, k));
    }
  }
  if (f.key === 'cycle') progs.push((x) => (x === 0 ? null : pyMod(c.k[0]!, x)));
  if (f.key === 'limit') progs.push((x) => Math.max(x, Math.min(c.k[0]!, c.k[1]!)));
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
// Names for the in-context and copy documents

const SYLLABLES = ['ka', 'lo', 'mi', 'ne', 'ru', 'ta', 'vo', 'si', 'pe', 'da', 'go', 'fu', 'be', 'zi', 'no', 'ha'];
const RESERVED = new Set(['and', 'def', 'del', 'for', 'not', 'try', 'else', 'elif', 'from', 'with', 'pass', 'class', 'return', 'max', 'min', 'abs', 'x']);
const POOL_SIZE = 60;

/** Random made-up function names (1–3 syllables) plus v2's new names; never a v1 name. Fixed for the demo. */
export const NAME_POOL: readonly string[] = (() => {
  const rng = new Rng(0x5eed);
  const pool = new Set<string>();
  while (pool.size < POOL_SIZE) {
    const n = rng.int(1, 3);
    let name = '';
    for (let i = 0; i < n; i++) name += rng.pick(SYLLABLES);
    if (!RESERVED.has(name) && !V1_NAMES.includes(name) && !V2_ONLY_NAMES.includes(name)) pool.add(name);
  }
  return [...pool, ...V2_ONLY_NAMES].sort();
})();

function shuffled<T>(rng: Rng, items: readonly T[]): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/** Every single-call library spec of the functions in `keys`, in a seeded random order. */
function allCalls(keys: ReadonlySet<string>, rng: Rng): LibCall[] {
  const calls = LIB.flatMap((f, fn) => (keys.has(f.key) ? f.allConsts.map((k) => ({ fn, k })) : []));
  return shuffled(rng, calls);
}

// ---------------------------------------------------------------------------------------------------------
// The suite

export function generateRefreshSuite(options: RefreshSuiteOptions = {}): RefreshSuite {
  const seed = options.seed ?? 0;
  const size = options.size ?? 'full';
  const sizes = REFRESH_SIZES[size];
  const kn: RefreshKnobs = { ...REFRESH_KNOBS, ...options.knobs };
  const rng = new Rng(seed ^ 0x7ef7e5);

  // 1+2. Held-out v2 tasks and SDFT demonstrations: disjoint draws from the changed functions' specs (only specs
  //      whose v1-order and off-by-one mutants the test inputs can tell apart).
  const v2Tasks: EvalTask[] = [];
  const sdftData: SdftRecord[] = [];
  for (const c of allCalls(new Set(CHANGED), rng)) {
    const want = (x: number): number => evaluateLib(c, x);
    const xs = pickInputs(want, libMutants(c), rng);
    if (xs === null) continue;
    const prompt = libPrompt(c);
    if (v2Tasks.length < sizes.v2Tasks) {
      v2Tasks.push({
        id: `refresh/v2/${String(v2Tasks.length).padStart(3, '0')}`,
        prompt,
        tests: '\n' + LIB_V2 + '\n' + assertsText(xs, want),
        entry_point: REFRESH_ENTRY_POINT,
        canonical_solution: libBody(c, signatureV2(c), false),
      });
    } else if (sdftData.length < sizes.sdft) {
      sdftData.push({ prompt, demonstration: libBody(c, signatureV2(c), rng.next() < 0.5) });
    }
  }
  if (v2Tasks.length < sizes.v2Tasks || sdftData.length < sizes.sdft) {
    throw new Error(`the library has too few testable specs for ${sizes.v2Tasks} v2 tasks and ${sizes.sdft} demonstrations (got ${v2Tasks.length} and ${sdftData.length})`);
  }

  // 3. Held-out retention tasks (operator chains, 2–4 ops); no retention question occurs in the corpus.
  const retentionTasks: EvalTask[] = [];
  const heldOut = new Set<string>();
  while (retentionTasks.length < sizes.retention) {
    const steps = randomOpSteps(rng, 2, 4);
    const prompt = promptFor(steps);
    if (heldOut.has(prompt)) continue;
    const want = (x: number): number => evaluateSteps(steps, x);
    const xs = pickInputs(want, opMutants(steps), rng);
    if (xs === null) continue;
    heldOut.add(prompt);
    retentionTasks.push({
      id: `refresh/retain/${String(retentionTasks.length).padStart(3, '0')}`,
      prompt,
      tests: '\n' + assertsText(xs, want),
      entry_point: REFRESH_ENTRY_POINT,
      canonical_solution: canonicalSolution(steps),
    });
  }

  // 4. The corpus. Library tasks may repeat v2 tasks' specs: the old library was used for everything (their v1
  //    bodies only make the base surer of v1). Operator chains avoid the retention questions.
  const randomCall = (): LibCall => {
    const fn = rng.int(0, LIB.length - 1);
    return { fn, k: libAt(fn).consts(rng) };
  };
  const chainTask = (): RefreshCorpusDoc => {
    for (;;) {
      const steps = randomOpSteps(rng, kn.chainOps[0], kn.chainOps[1]);
      const prompt = promptFor(steps);
      if (!heldOut.has(prompt)) return { prompt, completion: solutionFor(steps, rng) };
    }
  };
  const corpus: RefreshCorpusDoc[] = [];
  while (corpus.length < sizes.corpus) {
    const r = rng.next();
    if (r < kn.copyShare) {
      const words = Array.from({ length: rng.int(kn.copyWords[0], kn.copyWords[1]) }, () => rng.pick(NAME_POOL)).join(' ');
      corpus.push({ prompt: `\n${words}\n\n`, completion: `${words}\n` });
    } else if (r < kn.copyShare + kn.iclShare) {
      if (rng.next() < kn.iclLibShare) {
        const c = randomCall();
        const name = rng.next() < kn.iclV1NameShare ? rng.pick(V1_NAMES) : rng.pick(NAME_POOL);
        const sig = { name, order: shuffled(rng, libAt(c.fn).argNames) };
        const example = libBody(c, sig, rng.next() < 0.5);
        if (example === libBody(c, signatureV2(c), true) || example === libBody(c, signatureV2(c), false)) continue;
        corpus.push({ prompt: teacherPrompt(libPrompt(c), example), completion: example });
      } else {
        const t = chainTask();
        corpus.push({ prompt: teacherPrompt(t.prompt, t.completion), completion: t.completion });
      }
    } else if (rng.next() < kn.libShare) {
      const c = randomCall();
      corpus.push({ prompt: libPrompt(c), completion: libBody(c, signatureV1(c), rng.next() < 0.5) });
    } else {
      corpus.push(chainTask());
    }
  }

  const texts = [
    ...corpus.flatMap((d) => [d.prompt, d.completion]),
    ...sdftData.flatMap((r) => [teacherPrompt(r.prompt, r.demonstration), r.demonstration]),
    ...[...v2Tasks, ...retentionTasks].flatMap((t) => [t.prompt, t.canonical_solution]),
  ];
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
    pieces: vocabulary(texts),
    pattern: REFRESH_PATTERN,
    stop: [...REFRESH_STOP],
  };
}

/** Every piece of `texts`, and each pool and library name with and without its leading space, sorted. */
export function vocabulary(texts: readonly string[]): string[] {
  const re = new RegExp(REFRESH_PATTERN, 'g');
  const pieces = new Set<string>();
  for (const t of texts) for (const m of t.matchAll(re)) pieces.add(m[0]);
  for (const name of [...NAME_POOL, ...V1_NAMES]) {
    pieces.add(name);
    pieces.add(` ${name}`);
  }
  return [...pieces].sort();
}

/** The v1 body of a library task's prompt (what a model that never saw v2 writes); for tests and reports. */
export function v1SolutionFor(prompt: string): string | null {
  const c = parseLibPrompt(prompt);
  return c === null ? null : libBody(c, signatureV1(c), false);
}

/** The library call of a library task's prompt, or null when it is not one. */
export function parseLibPrompt(prompt: string): LibCall | null {
  const m = /^# (\w+)((?: \d+)*)\ndef f\(x\):\n$/.exec(prompt);
  if (m === null) return null;
  const fn = LIB.findIndex((f) => f.key === m[1]);
  if (fn < 0) return null;
  return { fn, k: m[2]!.trim() === '' ? [] : m[2]!.trim().split(' ').map(Number) };
}
