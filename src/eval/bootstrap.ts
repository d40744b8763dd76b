/**
 * Percentile bootstrap confidence intervals over tasks.
 *
 * The unit of resampling is the task: a benchmark score is the mean of per-task values (e.g. per-task
 * pass@k), and its uncertainty comes mostly from which tasks happened to be in the benchmark. Resampling
 * tasks with replacement B times and taking the (α/2, 1-α/2) quantiles of the resampled means gives the
 * percentile interval. The random stream is a seeded mulberry32, so the same inputs and seed always give the
 * same interval on every platform.
 *
 * Caveats: this interval does not include the sampling noise within a task (the n samples), it is somewhat
 * too narrow when there are few tasks (below ~30), and with one task it collapses to that task's value.
 */

import { mulberry32 } from '../core/rng.js';

export interface BootstrapOptions {
  /** Number of resamples (default 2000). */
  resamples?: number;
  /** Coverage of the interval (default 0.95). */
  confidence?: number;
  /** PRNG seed (default 0). */
  seed?: number;
}

export interface MeanCI {
  mean: number;
  ci: [number, number];
}

export interface PairedDiffCI {
  /** Mean over tasks of a[i] - b[i]. */
  meanDiff: number;
  ci: [number, number];
  /**
   * Share of resampled mean differences that are ≤ 0: a one-sided bootstrap p-value for "a is better than
   * b" (small means the improvement is unlikely to be an accident of which tasks were drawn).
   */
  fractionAtOrBelowZero: number;
}

function resolve(opts: BootstrapOptions): Required<BootstrapOptions> {
  const resamples = opts.resamples ?? 2000;
  const confidence = opts.confidence ?? 0.95;
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(resamples) || resamples < 1) throw new RangeError(`resamples must be a positive integer, got ${resamples}`);
  if (!(confidence > 0 && confidence < 1)) throw new RangeError(`confidence must be in (0, 1), got ${confidence}`);
  return { resamples, confidence, seed };
}

function mean(values: readonly number[]): number {
  let s = 0;
  for (const v of values) s += v;
  return s / values.length;
}

/** Linear-interpolation quantile (type 7) of an ascending array. */
function quantile(sorted: Float64Array, q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** The B resampled means of `values`, sorted ascending. */
function resampledMeans(values: readonly number[], o: Required<BootstrapOptions>): Float64Array {
  const m = values.length;
  const rand = mulberry32(o.seed);
  const means = new Float64Array(o.resamples);
  for (let b = 0; b < o.resamples; b++) {
    let s = 0;
    for (let i = 0; i < m; i++) s += values[Math.floor(rand() * m)]!;
    means[b] = s / m;
  }
  return means.sort();
}

function checkValues(values: readonly number[], what: string): void {
  if (values.length === 0) throw new RangeError(`cannot bootstrap ${what} over zero tasks`);
  for (const v of values) if (!Number.isFinite(v)) throw new RangeError(`${what}: per-task values must be finite, got ${v}`);
}

/** Mean of per-task values with a percentile bootstrap interval over tasks. */
export function bootstrapMeanCI(values: readonly number[], opts: BootstrapOptions = {}): MeanCI {
  checkValues(values, 'a mean');
  const o = resolve(opts);
  const means = resampledMeans(values, o);
  const alpha = 1 - o.confidence;
  return { mean: mean(values), ci: [quantile(means, alpha / 2), quantile(means, 1 - alpha / 2)] };
}

/**
 * Paired bootstrap for the difference between two models scored on the same tasks: `a[i]` and `b[i]` must
 * be the two models' values on the same task i (align them by task id first). Resampling the per-task
 * differences keeps the pairing, which is far tighter than comparing two independent intervals.
 */
export function pairedBootstrapDiff(a: readonly number[], b: readonly number[], opts: BootstrapOptions = {}): PairedDiffCI {
  if (a.length !== b.length) throw new RangeError(`paired bootstrap needs the same tasks: got ${a.length} and ${b.length} values`);
  const diffs = a.map((v, i) => v - b[i]!);
  checkValues(diffs, 'a paired difference');
  const o = resolve(opts);
  const means = resampledMeans(diffs, o);
  const alpha = 1 - o.confidence;
  let atOrBelow = 0;
  for (const m of means) if (m <= 0) atOrBelow++;
  return {
    meanDiff: mean(diffs),
    ci: [quantile(means, alpha / 2), quantile(means, 1 - alpha / 2)],
    fractionAtOrBelowZero: atOrBelow / means.length,
  };
}
