import { test } from 'node:test';
import assert from 'node:assert/strict';
import { meanPassAtK, passAtK } from '../../src/eval/passk.js';

/** pass@k by definition: the share of k-subsets of the n samples that contain at least one correct one. */
function bruteForce(n: number, c: number, k: number): number {
  const correct = (i: number) => i < c; // samples 0..c-1 are the correct ones
  let hit = 0;
  let total = 0;
  const walk = (start: number, left: number, any: boolean): void => {
    if (left === 0) {
      total++;
      if (any) hit++;
      return;
    }
    for (let i = start; i <= n - left; i++) walk(i + 1, left - 1, any || correct(i));
  };
  walk(0, k, false);
  return hit / total;
}

test('pass@k equals brute-force enumeration over all k-subsets', () => {
  for (let n = 1; n <= 9; n++) {
    for (let c = 0; c <= n; c++) {
      for (let k = 1; k <= n; k++) {
        const want = bruteForce(n, c, k);
        const got = passAtK(n, c, k);
        assert.ok(Math.abs(got - want) < 1e-12, `n=${n} c=${c} k=${k}: ${got} vs ${want}`);
      }
    }
  }
});

test('pass@1 is c/n', () => {
  for (const [n, c] of [[1, 0], [1, 1], [10, 3], [200, 37], [200, 200]] as const) {
    assert.ok(Math.abs(passAtK(n, c, 1) - c / n) < 1e-12);
  }
});

test('pass@k is stable for large n and exact at the edges', () => {
  assert.equal(passAtK(1000, 0, 100), 0);
  assert.equal(passAtK(1000, 1000, 100), 1);
  assert.equal(passAtK(1000, 901, 100), 1); // n - c < k: every subset has a correct sample
  const v = passAtK(1000, 1, 100);
  assert.ok(Math.abs(v - 0.1) < 1e-12, String(v)); // one correct sample is in a random 100-subset 10% of the time
});

test('pass@k refuses k > n and bad inputs', () => {
  assert.throws(() => passAtK(5, 1, 6), /at least 6 samples/);
  assert.throws(() => passAtK(5, 1, 0), /k ≥ 1/);
  assert.throws(() => passAtK(5, 6, 1), /0 ≤ c ≤ n/);
  assert.throws(() => passAtK(5, 1.5, 1), /integers/);
});

test('meanPassAtK averages over tasks', () => {
  assert.equal(meanPassAtK([{ n: 4, c: 4 }, { n: 4, c: 2 }, { n: 4, c: 0 }], 1), 0.5);
  assert.ok(Math.abs(meanPassAtK([{ n: 4, c: 4 }, { n: 4, c: 2 }, { n: 4, c: 0 }], 2) - 11 / 18) < 1e-12);
  assert.throws(() => meanPassAtK([], 1), /zero tasks/);
});
