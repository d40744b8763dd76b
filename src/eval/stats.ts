/**
 * Statistics for evaluation results: pass@k and Avg@n over tasks, and the paired comparison of two models
 * scored on the same tasks.
 *
 * Paired comparison (model A = before/baseline, model B = after/candidate), on the tasks both were scored on:
 *
 * - **Paired bootstrap** of the difference in pass@k: per-task pass@k of B minus that of A, tasks resampled with
 *   replacement (bootstrap.ts), giving the mean difference and a percentile interval.
 * - **Exact McNemar test** on a per-task binary outcome. The outcome of a task is whether its *first* sample
 *   passed (sample_index 0; the first sample of an i.i.d. draw is an unbiased one-sample outcome, unlike
 *   "any of n passed" or a majority, which change meaning with n). It needs per-sample outcomes
 *   (`outcomes` on each per-task record), or n = 1 where the single result is the first sample; without them
 *   it is not computed (null, with the reason). With b = tasks A solved and B did not, c = the reverse, the
 *   two-sided p-value is the exact binomial probability 2·P(X ≤ min(b, c)), X ~ Bin(b + c, 1/2), capped at 1.
 * - **Exact sign test** on per-task pass rates (correct / n): tasks where B's rate is higher count +, lower
 *   count −, equal ones are dropped; p = 2·P(X ≤ min(+, −)), X ~ Bin(+ + −, 1/2), capped at 1. It uses all n
 *   samples and needs no per-sample outcomes.
 *
 * p-values are sums of exact binomial probabilities (computed in log space so large counts do not underflow),
 * never a normal or χ² approximation.
 *
 * Verdict: a difference is called significant when both the paired bootstrap interval excludes 0 and the exact
 * test (McNemar where available, else the sign test) gives p < α (default 0.05). Otherwise the verdict is
 * "no significant difference", with the numbers shown either way.
 */
import { UserError } from '../core/errors.js';
import { bootstrapMeanCI, pairedBootstrapDiff, type BootstrapOptions } from './bootstrap.js';
import { passAtK } from './passk.js';

export { HARNESS_VERSION } from './version.js';

/** One task's result as evaluation summaries store it; `outcomes` (per-sample, in sample order) is optional. */
export interface TaskResult {
  id: string;
  n: number;
  correct: number;
  /** Per-sample outcome: true/'pass' = passed. */
  outcomes?: readonly (boolean | string)[];
  difficulty?: string | number;
}

export interface Estimate {
  value: number;
  ci: [number, number];
}

/** Mean over tasks of unbiased per-task pass@k, with a bootstrap interval over tasks. */
export function passAtKEstimate(tasks: readonly TaskResult[], k: number, opts: BootstrapOptions = {}): Estimate {
  if (tasks.length === 0) throw new UserError('pass@k over zero tasks is undefined');
  const { mean, ci } = bootstrapMeanCI(tasks.map((t) => passAtK(t.n, t.correct, k)), opts);
  return { value: mean, ci };
}

/**
 * Avg@n: mean accuracy over samples, averaged per task first (each task weighs the same whatever its n), with a
 * bootstrap interval over tasks. With equal n per task it equals pass@1.
 */
export function avgAtN(tasks: readonly TaskResult[], opts: BootstrapOptions = {}): Estimate {
  if (tasks.length === 0) throw new UserError('Avg@n over zero tasks is undefined');
  for (const t of tasks) if (!(t.n >= 1) || t.correct < 0 || t.correct > t.n) throw new UserError(`task ${t.id}: bad counts n=${t.n}, correct=${t.correct}`);
  const { mean, ci } = bootstrapMeanCI(tasks.map((t) => t.correct / t.n), opts);
  return { value: mean, ci };
}

const logFactCache: number[] = [0];
function logFact(n: number): number {
  for (let i = logFactCache.length; i <= n; i++) logFactCache[i] = logFactCache[i - 1]! + Math.log(i);
  return logFactCache[n]!;
}

/** P(X = k) for X ~ Bin(n, p), exact up to floating point (log space). */
export function binomialPmf(k: number, n: number, p = 0.5): number {
  if (!Number.isInteger(n) || n < 0 || !Number.isInteger(k)) throw new RangeError(`binomial needs whole n ≥ 0 and k, got n=${n}, k=${k}`);
  if (k < 0 || k > n) return 0;
  if (p === 0) return k === 0 ? 1 : 0;
  if (p === 1) return k === n ? 1 : 0;
  return Math.exp(logFact(n) - logFact(k) - logFact(n - k) + k * Math.log(p) + (n - k) * Math.log1p(-p));
}

/** P(X ≤ k) for X ~ Bin(n, p). */
export function binomialCdf(k: number, n: number, p = 0.5): number {
  let s = 0;
  for (let i = 0; i <= Math.min(k, n); i++) s += binomialPmf(i, n, p);
  return Math.min(1, s);
}

/** Two-sided exact binomial test of `successes` out of `trials` against p = 1/2: 2·P(X ≤ min(s, n−s)), capped at 1. */
export function exactBinomialTwoSided(successes: number, trials: number): number {
  if (trials === 0) return 1;
  return Math.min(1, 2 * binomialCdf(Math.min(successes, trials - successes), trials));
}

export interface McNemarResult {
  /** Tasks A solved and B did not. */
  a_only: number;
  /** Tasks B solved and A did not. */
  b_only: number;
  both: number;
  neither: number;
  p: number;
  /** How each task's binary outcome was taken. */
  outcome: 'first sample';
}

/** Exact McNemar test from the discordant counts. */
export function mcnemarExact(aOnly: number, bOnly: number): number {
  return exactBinomialTwoSided(aOnly, aOnly + bOnly);
}

export interface SignTestResult {
  /** Tasks where B's pass rate is higher. */
  b_higher: number;
  a_higher: number;
  ties: number;
  p: number;
}

/** Exact sign test on paired values (ties dropped). */
export function signTest(a: readonly number[], b: readonly number[]): SignTestResult {
  let bh = 0, ah = 0, ties = 0;
  a.forEach((x, i) => {
    const y = b[i]!;
    if (y > x) bh++;
    else if (x > y) ah++;
    else ties++;
  });
  return { b_higher: bh, a_higher: ah, ties, p: exactBinomialTwoSided(bh, bh + ah) };
}

/** Whether the first sample of a task passed, or null when that is not known. */
export function firstSampleOutcome(t: TaskResult): boolean | null {
  if (t.outcomes && t.outcomes.length > 0) {
    const o = t.outcomes[0];
    return o === true || o === 'pass';
  }
  if (t.n === 1) return t.correct === 1;
  return null;
}

export interface PairedComparison {
  k: number;
  /** Tasks compared (present in both). */
  tasks: number;
  /** Task ids present in only one of the two results (not compared). */
  unmatched: { a_only: string[]; b_only: string[] };
  a: Estimate;
  b: Estimate;
  /** B − A in pass@k over the compared tasks, with a paired bootstrap interval. */
  diff: { value: number; ci: [number, number] };
  mcnemar: McNemarResult | null;
  /** Why McNemar was not computed, when it was not. */
  mcnemar_unavailable?: string;
  sign_test: SignTestResult;
  alpha: number;
  significant: boolean;
  direction: 'better' | 'worse' | 'none';
  verdict: string;
}

export interface CompareOptions extends BootstrapOptions {
  k?: number;
  /** Significance level (default 0.05). */
  alpha?: number;
  /** Names for the verdict line (default "A", "B"). */
  labels?: [string, string];
}

const signed = (x: number): string => `${x >= 0 ? '+' : '−'}${Math.abs(x * 100).toFixed(1)}`;
/** A p-value for a sentence: 3 significant digits, "< 0.001" below that. */
export function formatP(p: number): string {
  if (p < 0.001) return '< 0.001';
  return `= ${p >= 0.1 ? p.toFixed(2) : p.toFixed(3)}`;
}

/**
 * Compares B against A on the tasks both were scored on (matched by task id). Throws a UserError when they
 * share no task.
 */
export function comparePaired(a: readonly TaskResult[], b: readonly TaskResult[], opts: CompareOptions = {}): PairedComparison {
  const k = opts.k ?? 1;
  const alpha = opts.alpha ?? 0.05;
  const [la, lb] = opts.labels ?? ['A', 'B'];
  const bById = new Map(b.map((t) => [t.id, t]));
  const aIds = new Set(a.map((t) => t.id));
  const pairs: [TaskResult, TaskResult][] = [];
  for (const t of a) {
    const u = bById.get(t.id);
    if (u) pairs.push([t, u]);
  }
  if (pairs.length === 0) throw new UserError(`${la} and ${lb} were not scored on any common task, so they cannot be compared`);
  for (const [t, u] of pairs) {
    if (k > t.n || k > u.n) throw new UserError(`pass@${k} needs at least ${k} samples per task; task ${t.id} has ${Math.min(t.n, u.n)}`);
  }
  const unmatched = { a_only: a.filter((t) => !bById.has(t.id)).map((t) => t.id), b_only: b.filter((t) => !aIds.has(t.id)).map((t) => t.id) };
  const pa = pairs.map(([t]) => passAtK(t.n, t.correct, k));
  const pb = pairs.map(([, u]) => passAtK(u.n, u.correct, k));
  const ea = bootstrapMeanCI(pa, opts);
  const eb = bootstrapMeanCI(pb, opts);
  const d = pairedBootstrapDiff(pb, pa, opts);

  let mcnemar: McNemarResult | null = null;
  let mcnemarUnavailable: string | undefined;
  const firsts = pairs.map(([t, u]) => [firstSampleOutcome(t), firstSampleOutcome(u)] as const);
  if (firsts.every(([x, y]) => x !== null && y !== null)) {
    let aOnly = 0, bOnly = 0, both = 0, neither = 0;
    for (const [x, y] of firsts) {
      if (x && y) both++;
      else if (x) aOnly++;
      else if (y) bOnly++;
      else neither++;
    }
    mcnemar = { a_only: aOnly, b_only: bOnly, both, neither, p: mcnemarExact(aOnly, bOnly), outcome: 'first sample' };
  } else {
    mcnemarUnavailable = 'per-sample outcomes were not recorded (n > 1), so the first sample of each task is unknown';
  }
  const sign = signTest(
    pairs.map(([t]) => t.correct / t.n),
    pairs.map(([, u]) => u.correct / u.n),
  );
  const testP = mcnemar ? mcnemar.p : sign.p;
  const testName = mcnemar ? 'McNemar' : 'sign test';
  const ciExcludes0 = d.ci[0] > 0 || d.ci[1] < 0;
  const significant = ciExcludes0 && testP < alpha;
  const direction = significant ? (d.meanDiff > 0 ? 'better' : 'worse') : 'none';
  const numbers = `${signed(d.meanDiff)} pts [${(d.ci[0] * 100).toFixed(1)}, ${(d.ci[1] * 100).toFixed(1)}] pass@${k}, ${testName} p ${formatP(testP)}, ${pairs.length} tasks`;
  const verdict = significant
    ? `${lb} is ${direction} than ${la}: ${numbers}`
    : `no significant difference between ${lb} and ${la}: ${numbers}`;
  return {
    k,
    tasks: pairs.length,
    unmatched,
    a: { value: ea.mean, ci: ea.ci },
    b: { value: eb.mean, ci: eb.ci },
    diff: { value: d.meanDiff, ci: d.ci },
    mcnemar,
    ...(mcnemarUnavailable ? { mcnemar_unavailable: mcnemarUnavailable } : {}),
    sign_test: sign,
    alpha,
    significant,
    direction,
    verdict,
  };
}
