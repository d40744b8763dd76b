import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  avgAtN, binomialCdf, binomialPmf, comparePaired, exactBinomialTwoSided, firstSampleOutcome, formatP, HARNESS_VERSION,
  mcnemarExact, passAtKEstimate, signTest, type TaskResult,
} from '../../src/eval/stats.js';
import { isUserError } from '../../src/core/errors.js';

const close = (a: number, b: number, eps = 1e-12) => assert.ok(Math.abs(a - b) <= eps, `${a} vs ${b}`);

test('binomial probabilities match hand-computed values', () => {
  close(binomialPmf(0, 10), 1 / 1024);
  close(binomialPmf(5, 10), 252 / 1024);
  close(binomialCdf(1, 10), 11 / 1024);
  close(binomialCdf(5, 20), 21700 / 1048576);
  close(binomialPmf(2, 5, 0.3), 10 * 0.09 * 0.343);
  // Large counts do not underflow: C(2000,1000)/2^2000 ≈ 1/sqrt(π·1000).
  close(binomialPmf(1000, 2000), 1 / Math.sqrt(Math.PI * 1000), 1e-5);
  close(binomialCdf(2000, 2000), 1, 1e-9);
});

test('exact two-sided tests: McNemar and sign test', () => {
  close(exactBinomialTwoSided(1, 10), 22 / 1024);
  close(exactBinomialTwoSided(9, 10), 22 / 1024);
  assert.equal(exactBinomialTwoSided(5, 10), 1); // capped
  assert.equal(exactBinomialTwoSided(0, 0), 1);
  close(mcnemarExact(0, 5), 2 / 32);
  close(mcnemarExact(0, 6), 2 / 64);
  close(mcnemarExact(3, 3), 1);
  const s = signTest([0, 0, 0.5, 1, 0.2], [1, 0.5, 0.5, 1, 0.1]);
  assert.deepEqual({ ...s, p: 0 }, { b_higher: 2, a_higher: 1, ties: 2, p: 0 });
  close(s.p, 1);
});

test('Avg@n and pass@k over tasks', () => {
  const tasks: TaskResult[] = [
    { id: 'a', n: 4, correct: 1 },
    { id: 'b', n: 4, correct: 4 },
    { id: 'c', n: 2, correct: 0 },
  ];
  close(avgAtN(tasks).value, (0.25 + 1 + 0) / 3);
  close(passAtKEstimate(tasks, 1).value, (0.25 + 1 + 0) / 3);
  // pass@2 for (4,1) = 1 - C(3,2)/C(4,2) = 0.5; (4,4) = 1; (2,0) = 0.
  close(passAtKEstimate(tasks, 2).value, 0.5);
});

test('first-sample outcome: from outcomes, or n = 1, else unknown', () => {
  assert.equal(firstSampleOutcome({ id: 'x', n: 3, correct: 1, outcomes: ['fail', 'pass', 'fail'] }), false);
  assert.equal(firstSampleOutcome({ id: 'x', n: 2, correct: 1, outcomes: [true, false] }), true);
  assert.equal(firstSampleOutcome({ id: 'x', n: 1, correct: 1 }), true);
  assert.equal(firstSampleOutcome({ id: 'x', n: 5, correct: 1 }), null);
});

test('paired comparison: a clear improvement is significant, with the hand-computed McNemar p', () => {
  // 12 tasks, n = 1: A solves t0..t1, B solves t0..t9 → b_only = 8, a_only = 0, p = 2/256.
  const a: TaskResult[] = Array.from({ length: 12 }, (_, i) => ({ id: `t${i}`, n: 1, correct: i < 2 ? 1 : 0 }));
  const b: TaskResult[] = Array.from({ length: 12 }, (_, i) => ({ id: `t${i}`, n: 1, correct: i < 10 ? 1 : 0 }));
  const c = comparePaired(a, b, { labels: ['base', 'ssd'] });
  assert.equal(c.tasks, 12);
  close(c.diff.value, 8 / 12);
  assert.ok(c.diff.ci[0] > 0);
  assert.ok(c.mcnemar);
  assert.equal(c.mcnemar.b_only, 8);
  assert.equal(c.mcnemar.a_only, 0);
  assert.equal(c.mcnemar.both, 2);
  assert.equal(c.mcnemar.neither, 2);
  close(c.mcnemar.p, 2 / 256);
  assert.equal(c.significant, true);
  assert.equal(c.direction, 'better');
  assert.match(c.verdict, /^ssd is better than base: \+66\.7 pts \[\d+\.\d, \d+\.\d\] pass@1, McNemar p = 0\.008, 12 tasks$/);
});

test('paired comparison: no difference, task alignment by id, sign test when outcomes are unknown', () => {
  const a: TaskResult[] = [
    { id: 'x', n: 4, correct: 2 },
    { id: 'y', n: 4, correct: 1 },
    { id: 'z', n: 4, correct: 3 },
    { id: 'only-a', n: 4, correct: 0 },
  ];
  const b: TaskResult[] = [
    { id: 'z', n: 4, correct: 2 },
    { id: 'y', n: 4, correct: 2 },
    { id: 'x', n: 4, correct: 2 },
    { id: 'only-b', n: 4, correct: 4 },
  ];
  const c = comparePaired(a, b);
  assert.equal(c.tasks, 3);
  assert.deepEqual(c.unmatched, { a_only: ['only-a'], b_only: ['only-b'] });
  close(c.diff.value, 0);
  assert.equal(c.mcnemar, null);
  assert.match(c.mcnemar_unavailable!, /per-sample outcomes/);
  assert.deepEqual({ ...c.sign_test, p: 0 }, { b_higher: 1, a_higher: 1, ties: 1, p: 0 });
  close(c.sign_test.p, 1);
  assert.equal(c.significant, false);
  assert.match(c.verdict, /^no significant difference between B and A: \+0\.0 pts .* sign test p = 1\.00, 3 tasks$/);
});

test('paired comparison: a significant loss reads "worse"; disjoint task sets are an error', () => {
  const a: TaskResult[] = Array.from({ length: 30 }, (_, i) => ({ id: `t${i}`, n: 2, correct: 2, outcomes: ['pass', 'pass'] }));
  const b: TaskResult[] = Array.from({ length: 30 }, (_, i) => ({ id: `t${i}`, n: 2, correct: i < 5 ? 2 : 0, outcomes: i < 5 ? ['pass', 'pass'] : ['fail', 'fail'] }));
  const c = comparePaired(a, b);
  assert.equal(c.direction, 'worse');
  assert.match(c.verdict, /^B is worse than A: −83\.3 pts/);
  close(c.mcnemar!.p, 2 * binomialPmf(0, 25));
  assert.throws(() => comparePaired([{ id: 'p', n: 1, correct: 1 }], [{ id: 'q', n: 1, correct: 1 }]), (e) => isUserError(e));
  assert.throws(() => comparePaired(a, b, { k: 3 }), (e) => isUserError(e));
});

test('p-value formatting and the harness version', () => {
  assert.equal(formatP(0.0004), '< 0.001');
  assert.equal(formatP(0.0123), '= 0.012');
  assert.equal(formatP(0.5), '= 0.50');
  assert.match(HARNESS_VERSION, /^distillery-eval\/\d+$/);
});
