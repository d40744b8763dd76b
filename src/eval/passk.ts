/**
 * pass@k: the probability that at least one of k samples, drawn without replacement from the n generated for
 * a task, is correct. The unbiased estimator (Chen et al. 2021, "Evaluating Large Language Models Trained on
 * Code") with c correct out of n is
 *
 *     pass@k = 1 - C(n-c, k) / C(n, k)
 *
 * Binomials overflow quickly, so it is computed as the product 1 - prod_{i=n-c+1..n} (1 - k/i), which is the
 * same ratio written term by term (as in the paper's numpy reference code).
 */

/** Unbiased pass@k for one task with `c` of `n` samples correct. Requires 1 ≤ k ≤ n and 0 ≤ c ≤ n. */
export function passAtK(n: number, c: number, k: number): number {
  if (!Number.isInteger(n) || !Number.isInteger(c) || !Number.isInteger(k)) {
    throw new RangeError(`pass@k needs integers, got n=${n}, c=${c}, k=${k}`);
  }
  if (k < 1) throw new RangeError(`pass@k needs k ≥ 1, got k=${k}`);
  if (k > n) throw new RangeError(`pass@${k} needs at least ${k} samples per task, got n=${n}`);
  if (c < 0 || c > n) throw new RangeError(`pass@k needs 0 ≤ c ≤ n, got c=${c}, n=${n}`);
  if (n - c < k) return 1; // every k-subset contains a correct sample
  let allWrong = 1; // C(n-c, k) / C(n, k)
  for (let i = n - c + 1; i <= n; i++) allWrong *= 1 - k / i;
  return 1 - allWrong;
}

/** Mean of per-task pass@k; `tasks` gives (n, c) per task. Throws on an empty list. */
export function meanPassAtK(tasks: readonly { n: number; c: number }[], k: number): number {
  if (tasks.length === 0) throw new RangeError('pass@k over zero tasks is undefined');
  let sum = 0;
  for (const t of tasks) sum += passAtK(t.n, t.c, k);
  return sum / tasks.length;
}
