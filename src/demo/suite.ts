/**
 * The embedded demo's task suite: small Python function-writing tasks, generated deterministically from a seed.
 *
 * A task is a spec — a chain of integer operations applied to `x`, written as a comment — followed by a
 * `def f(x):` header; the completion is the function body. Every operation has one or two equally valid code
 * forms, and the last operation may be written inline in the `return` (so solutions have several valid
 * forms: the "forks" of the SSD paper). Example:
 *
 *     # add 3, times 2, at least 5        <- prompt
 *     def f(x):
 *         x += 3                          <- completion
 *         x = x*2
 *         return max(x,5)
 *
 * The suite has three disjoint parts (see docs/demo-design.md):
 * - `corpus`: solved pairs the base model is pretrained on from scratch. A fraction of the solutions carry one
 *   corrupted character (a wrong program), which gives the base a low-probability distractor tail — the thing
 *   SSD's truncated sampling removes.
 * - `ssdPrompts`: prompts without answers, for SSD's self-sampling. Their specs never occur in the corpus.
 * - `evalTasks`: held-out tasks with hidden tests; their specs occur neither in the corpus nor in ssdPrompts.
 *
 * Everything depends only on `seed` and `size`; the same arguments give byte-identical output.
 */

import { Rng } from '../core/rng.js';

export type SuiteSize = 'full' | 'fast';

export interface CorpusPair {
  prompt: string;
  completion: string;
}

export interface SsdPrompt {
  prompt: string;
}

export interface EvalTask {
  id: string;
  prompt: string;
  /** Python asserts calling `entry_point`; starts with a newline so it can follow any completion. */
  tests: string;
  entry_point: string;
  /** One correct body (never shown to the model; used by tests of the suite itself). */
  canonical_solution: string;
}

export interface Suite {
  seed: number;
  size: SuiteSize;
  corpus: CorpusPair[];
  ssdPrompts: SsdPrompt[];
  evalTasks: EvalTask[];
  /** Every character any prompt, completion or test may contain, in a fixed order. */
  alphabet: string;
  /** Stop strings for sampling: a completion ends at a blank line or at the start of the next task. */
  stop: string[];
}

export interface SuiteOptions {
  seed?: number;
  size?: SuiteSize;
}

/** Part sizes: full is the 3-minute demo, fast is for tests (see src/demo/config.ts). */
export const SUITE_SIZES: Record<SuiteSize, { corpus: number; ssdPrompts: number; evalTasks: number }> = {
  full: { corpus: 12000, ssdPrompts: 1000, evalTasks: 160 },
  fast: { corpus: 3000, ssdPrompts: 200, evalTasks: 40 },
};

/** Share of corpus solutions that carry one corrupted character (the distractor tail). */
export const CORPUS_NOISE = 0.2;
export const ENTRY_POINT = 'f';
export const STOP = ['\n\n', '\n#', '\ndef'];
/** Fixed alphabet: lower-case letters, digits, space, newline and the punctuation the code uses. */
export const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789 \n#,:()=+-*/%_<>!.';

// ---------------------------------------------------------------------------------------------------------
// Operations. `apply` follows Python semantics (floor division, modulo with the divisor's sign).

interface OpKind {
  name: string;
  /** constant range, or null for a unary op */
  k: [number, number] | null;
  spec: (k: number) => string;
  /** statement forms (assigning to x) */
  stmts: (k: number) => string[];
  /** inline expression forms of the op applied to x (for `return ...`) */
  exprs: (k: number) => string[];
  apply: (x: number, k: number) => number;
}

const pyFloorDiv = (a: number, b: number): number => Math.floor(a / b);
const pyMod = (a: number, b: number): number => ((a % b) + b) % b;

export const OPS: readonly OpKind[] = [
  { name: 'add', k: [1, 9], spec: (k) => `add ${k}`, stmts: (k) => [`x = x+${k}`, `x += ${k}`], exprs: (k) => [`x+${k}`], apply: (x, k) => x + k },
  { name: 'sub', k: [1, 9], spec: (k) => `sub ${k}`, stmts: (k) => [`x = x-${k}`, `x -= ${k}`], exprs: (k) => [`x-${k}`], apply: (x, k) => x - k },
  { name: 'times', k: [2, 5], spec: (k) => `times ${k}`, stmts: (k) => [`x = x*${k}`, `x *= ${k}`], exprs: (k) => [`x*${k}`, `${k}*x`], apply: (x, k) => x * k },
  { name: 'mod', k: [2, 9], spec: (k) => `mod ${k}`, stmts: (k) => [`x = x%${k}`, `x %= ${k}`], exprs: (k) => [`x%${k}`], apply: (x, k) => pyMod(x, k) },
  { name: 'div', k: [2, 4], spec: (k) => `div ${k}`, stmts: (k) => [`x = x//${k}`, `x //= ${k}`], exprs: (k) => [`x//${k}`], apply: (x, k) => pyFloorDiv(x, k) },
  { name: 'atleast', k: [0, 9], spec: (k) => `at least ${k}`, stmts: (k) => [`x = max(x,${k})`, `x = max(${k},x)`], exprs: (k) => [`max(x,${k})`, `max(${k},x)`], apply: (x, k) => Math.max(x, k) },
  { name: 'atmost', k: [0, 9], spec: (k) => `at most ${k}`, stmts: (k) => [`x = min(x,${k})`, `x = min(${k},x)`], exprs: (k) => [`min(x,${k})`, `min(${k},x)`], apply: (x, k) => Math.min(x, k) },
  { name: 'negate', k: null, spec: () => 'negate', stmts: () => ['x = -x', 'x = 0-x'], exprs: () => ['-x'], apply: (x) => -x },
  { name: 'square', k: null, spec: () => 'square', stmts: () => ['x = x*x', 'x *= x'], exprs: () => ['x*x'], apply: (x) => x * x },
  { name: 'abs', k: null, spec: () => 'abs', stmts: () => ['x = abs(x)'], exprs: () => ['abs(x)'], apply: (x) => Math.abs(x) },
];

export interface Step {
  op: number;
  k: number;
}

export function specText(steps: readonly Step[]): string {
  return steps.map((s) => opAt(s.op).spec(s.k)).join(', ');
}

function opAt(i: number): OpKind {
  const op = OPS[i];
  if (op === undefined) throw new Error(`no op ${i}`);
  return op;
}

export function promptFor(steps: readonly Step[]): string {
  return `# ${specText(steps)}\ndef ${ENTRY_POINT}(x):\n`;
}

export function evaluateSteps(steps: readonly Step[], x: number): number {
  let v = x;
  for (const s of steps) v = opAt(s.op).apply(v, s.k);
  return v;
}

/** Expression of `op` applied to the expression `e` (nested form). Compound operands get parentheses. */
function nestExpr(op: OpKind, k: number, e: string): string {
  const atom = /^[a-z_]+$/.test(e) || /^[a-z]+\(.*\)$/.test(e) && balancedCall(e);
  const o = atom ? e : `(${e})`;
  switch (op.name) {
    case 'add': return `${o}+${k}`;
    case 'sub': return `${o}-${k}`;
    case 'times': return `${o}*${k}`;
    case 'mod': return `${o}%${k}`;
    case 'div': return `${o}//${k}`;
    case 'atleast': return `max(${e},${k})`;
    case 'atmost': return `min(${e},${k})`;
    case 'negate': return `-${o}`;
    case 'square': return `${o}**2`;
    case 'abs': return `abs(${e})`;
    default: throw new Error(`unknown op ${op.name}`);
  }
}

/** True when `e` is a single call `name(...)` whose parentheses close only at the end. */
function balancedCall(e: string): boolean {
  let depth = 0;
  for (let i = e.indexOf('('); i < e.length; i++) {
    if (e[i] === '(') depth++;
    else if (e[i] === ')') {
      depth--;
      if (depth === 0 && i !== e.length - 1) return false;
    }
  }
  return depth === 0;
}

/** The one-line form: `return <nested expression>`. */
export function nestedSolution(steps: readonly Step[]): string {
  let e = 'x';
  for (const s of steps) e = nestExpr(opAt(s.op), s.k, e);
  return `    return ${e}\n`;
}

/** Statement form on variable `v` (x: update x in place; y: copy into y first). */
function statementSolution(steps: readonly Step[], v: 'x' | 'y', rng: Rng): string {
  const lines: string[] = [];
  const inlineLast = rng.next() < 0.5;
  const body = inlineLast ? steps.slice(0, -1) : steps;
  let cur = 'x';
  for (const s of body) {
    const op = opAt(s.op);
    if (cur === v) lines.push(`    ${rng.pick(op.stmts(s.k)).replace(/\bx\b/g, v)}\n`);
    else lines.push(`    ${v} = ${rng.pick(op.exprs(s.k))}\n`); // first line of the y form: y = <op on x>
    cur = v;
  }
  const last = steps[steps.length - 1];
  if (inlineLast && last !== undefined) lines.push(`    return ${rng.pick(opAt(last.op).exprs(last.k)).replace(/\bx\b/g, cur)}\n`);
  else lines.push(`    return ${cur}\n`);
  return lines.join('');
}

/**
 * Shares of the three solution families in the corpus. Only the statement family on `x` is on: each op one of its
 * statement forms, the last op optionally inline in the `return` (those choices are the forks).
 *
 * The other two families were tried as a designed fork where the plurality family (one-line nested expression,
 * hard for a small model) is not the majority (statement families): greedy would always take the hard branch.
 * With all three on (0.4 / 0.3 / 0.3) the 310k base had not learned the task at all after 600 steps (held-out
 * greedy pass@1 5.6 %), so it does not fit the 3-minute budget; see docs/demo-design.md.
 */
export const FORM_SHARES = { nested: 0, statementsX: 1, statementsY: 0 } as const;

/** A random valid body drawn from the three families (see FORM_SHARES). */
export function solutionFor(steps: readonly Step[], rng: Rng): string {
  if (FORM_SHARES.statementsX === 1) return statementSolution(steps, 'x', rng);
  const r = rng.next();
  if (r < FORM_SHARES.nested) return nestedSolution(steps);
  if (r < FORM_SHARES.nested + FORM_SHARES.statementsX) return statementSolution(steps, 'x', rng);
  return statementSolution(steps, 'y', rng);
}

/** The first form of everything: a deterministic correct body. */
export function canonicalSolution(steps: readonly Step[]): string {
  return steps.map((s) => `    ${opAt(s.op).stmts(s.k)[0]}\n`).join('') + '    return x\n';
}

const NOISE_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789()=+-*/%,:';

/** One character of the body (not indentation, not the newlines) replaced by a different one. */
function corrupt(body: string, rng: Rng): string {
  const positions: number[] = [];
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (c !== ' ' && c !== '\n') positions.push(i);
  }
  const at = rng.pick(positions);
  let ch = rng.pick(NOISE_CHARS.split(''));
  while (ch === body[at]) ch = rng.pick(NOISE_CHARS.split(''));
  return body.slice(0, at) + ch + body.slice(at + 1);
}

function randomSteps(rng: Rng, minOps: number, maxOps: number): Step[] {
  const n = rng.int(minOps, maxOps);
  const steps: Step[] = [];
  while (steps.length < n) {
    const op = rng.int(0, OPS.length - 1);
    const prev = steps[steps.length - 1];
    if (prev !== undefined && prev.op === op) continue; // no "add 3, add 4": keeps every step meaningful
    const range = opAt(op).k;
    steps.push({ op, k: range === null ? 0 : rng.int(range[0], range[1]) });
  }
  return steps;
}

const TEST_INPUTS = [-9, -7, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 15];

/**
 * Hidden tests: 5 inputs, chosen so that every "near miss" (one step dropped, one constant off by one) fails at
 * least one of them. Returns null when no such input set is found (the spec is then rejected).
 */
function testsFor(steps: readonly Step[], rng: Rng): number[] | null {
  const mutants: Step[][] = [];
  for (let i = 0; i < steps.length; i++) {
    mutants.push(steps.filter((_, j) => j !== i));
    const s = steps[i];
    if (s !== undefined && opAt(s.op).k !== null) {
      for (const d of [-1, 1]) mutants.push(steps.map((t, j) => (j === i ? { op: t.op, k: t.k + d } : t)));
    }
  }
  for (let attempt = 0; attempt < 20; attempt++) {
    const pool = [...TEST_INPUTS];
    const xs: number[] = [];
    while (xs.length < 5) xs.push(pool.splice(rng.int(0, pool.length - 1), 1)[0] as number);
    xs.sort((a, b) => a - b);
    const want = xs.map((x) => evaluateSteps(steps, x));
    const killsAll = mutants.every((m) => xs.some((x, i) => evaluateSteps(m, x) !== want[i]));
    if (killsAll) return xs;
  }
  return null;
}

function testsText(steps: readonly Step[], xs: readonly number[]): string {
  return '\n' + xs.map((x) => `assert ${ENTRY_POINT}(${x}) == ${evaluateSteps(steps, x)}\n`).join('');
}

/** Generate the suite. Same options → identical output. */
export function generateSuite(options: SuiteOptions = {}): Suite {
  const seed = options.seed ?? 0;
  const size = options.size ?? 'full';
  const sizes = SUITE_SIZES[size];
  const rng = new Rng(seed ^ 0x5eed);

  // Held-out evaluation tasks first (2-4 ops), then SSD prompts (1-4 ops), then the corpus (1-4 ops);
  // each later part skips every spec an earlier part took, so the three are disjoint by spec.
  const taken = new Set<string>();
  const evalTasks: EvalTask[] = [];
  while (evalTasks.length < sizes.evalTasks) {
    const steps = randomSteps(rng, 2, 4);
    const spec = specText(steps);
    if (taken.has(spec)) continue;
    const xs = testsFor(steps, rng);
    if (xs === null) continue;
    taken.add(spec);
    evalTasks.push({
      id: `demo/${String(evalTasks.length).padStart(3, '0')}`,
      prompt: promptFor(steps),
      tests: testsText(steps, xs),
      entry_point: ENTRY_POINT,
      canonical_solution: canonicalSolution(steps),
    });
  }

  const ssdPrompts: SsdPrompt[] = [];
  while (ssdPrompts.length < sizes.ssdPrompts) {
    const steps = randomSteps(rng, 2, 4);
    const spec = specText(steps);
    if (taken.has(spec)) continue;
    taken.add(spec);
    ssdPrompts.push({ prompt: promptFor(steps) });
  }

  // The corpus may repeat a spec (with a different solution form), but never one of the above.
  const corpus: CorpusPair[] = [];
  while (corpus.length < sizes.corpus) {
    const steps = randomSteps(rng, 1, 4);
    if (taken.has(specText(steps))) continue;
    let completion = solutionFor(steps, rng);
    if (rng.next() < CORPUS_NOISE) completion = corrupt(completion, rng);
    corpus.push({ prompt: promptFor(steps), completion });
  }

  return { seed, size, corpus, ssdPrompts, evalTasks, alphabet: ALPHABET, stop: [...STOP] };
}
