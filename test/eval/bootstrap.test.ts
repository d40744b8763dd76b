import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mulberry32 } from '../../src/core/rng.js';
import { bootstrapMeanCI, pairedBootstrapDiff } from '../../src/eval/bootstrap.js';

function values(count: number, seed: number): number[] {
  const r = mulberry32(seed);
  return Array.from({ length: count }, () => (r() < 0.4 ? 1 : r() * 0.5));
}

test('the interval contains the mean and is ordered', () => {
  for (const seed of [1, 2, 3]) {
    const v = values(50, seed);
    const { mean, ci } = bootstrapMeanCI(v);
    assert.ok(ci[0] <= mean && mean <= ci[1], `${ci} vs ${mean}`);
    assert.ok(ci[0] < ci[1]);
    assert.ok(Math.abs(mean - v.reduce((a, b) => a + b, 0) / v.length) < 1e-12);
  }
});

test('the interval is deterministic for a seed and changes with it', () => {
  const v = values(40, 7);
  assert.deepEqual(bootstrapMeanCI(v, { seed: 5 }), bootstrapMeanCI(v, { seed: 5 }));
  assert.deepEqual(bootstrapMeanCI(v), bootstrapMeanCI(v, { seed: 0, resamples: 2000, confidence: 0.95 }));
  assert.notDeepEqual(bootstrapMeanCI(v, { seed: 5 }).ci, bootstrapMeanCI(v, { seed: 6 }).ci);
});

test('the interval narrows with more tasks', () => {
  const width = (n: number) => {
    const { ci } = bootstrapMeanCI(values(n, 11));
    return ci[1] - ci[0];
  };
  const w20 = width(20);
  const w200 = width(200);
  const w2000 = width(2000);
  assert.ok(w200 < w20 * 0.6, `${w200} vs ${w20}`);
  assert.ok(w2000 < w200 * 0.6, `${w2000} vs ${w200}`);
});

test('a wider confidence gives a wider interval; constant values give a point', () => {
  const v = values(60, 3);
  const a = bootstrapMeanCI(v, { confidence: 0.8 });
  const b = bootstrapMeanCI(v, { confidence: 0.99 });
  assert.ok(b.ci[1] - b.ci[0] > a.ci[1] - a.ci[0]);
  assert.deepEqual(bootstrapMeanCI([0.25, 0.25, 0.25]), { mean: 0.25, ci: [0.25, 0.25] });
});

test('paired difference of identical lists is exactly 0 with CI [0, 0]', () => {
  const v = values(30, 9);
  const d = pairedBootstrapDiff(v, v);
  assert.equal(d.meanDiff, 0);
  assert.deepEqual(d.ci, [0, 0]);
  assert.equal(d.fractionAtOrBelowZero, 1);
});

test('paired difference detects a consistent improvement that unpaired intervals would hide', () => {
  const b = values(40, 13);
  const a = b.map((x) => x + 0.05);
  const d = pairedBootstrapDiff(a, b);
  assert.ok(Math.abs(d.meanDiff - 0.05) < 1e-12);
  assert.ok(Math.abs(d.ci[0] - 0.05) < 1e-9 && Math.abs(d.ci[1] - 0.05) < 1e-9);
  assert.equal(d.fractionAtOrBelowZero, 0);
  // The two separate intervals overlap heavily even so.
  const ia = bootstrapMeanCI(a).ci;
  const ib = bootstrapMeanCI(b).ci;
  assert.ok(ia[0] < ib[1]);

  const noisy = b.map((x, i) => x + (i % 2 === 0 ? 0.3 : -0.25));
  const dn = pairedBootstrapDiff(noisy, b);
  assert.ok(dn.ci[0] < dn.meanDiff && dn.meanDiff < dn.ci[1]);
  assert.ok(dn.fractionAtOrBelowZero > 0 && dn.fractionAtOrBelowZero < 1);
});

test('bootstrap refuses empty, mismatched or non-finite input', () => {
  assert.throws(() => bootstrapMeanCI([]), /zero tasks/);
  assert.throws(() => pairedBootstrapDiff([1, 2], [1]), /same tasks/);
  assert.throws(() => bootstrapMeanCI([1, NaN]), /finite/);
  assert.throws(() => bootstrapMeanCI([1], { confidence: 1 }), /confidence/);
  assert.throws(() => bootstrapMeanCI([1], { resamples: 0 }), /resamples/);
});
