import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UserError } from '../../src/core/errors.js';
import { scoreCompletions } from '../../src/eval/score.js';
import { sandboxInfo } from '../../src/eval/sandbox.js';
import type { CodeTask } from '../../src/eval/tasks.js';

const hasPython = sandboxInfo().python !== null;

const tasks: CodeTask[] = [
  { id: 'add', prompt: 'def add(a, b):\n', tests: 'assert add(1, 2) == 3\nassert add(-1, 1) == 0\n', entry_point: 'add' },
  {
    id: 'double',
    prompt: 'def double(x):\n    """Twice x."""\n',
    tests: '\n\ndef check(candidate):\n    assert candidate(2) == 4\n    assert candidate(0) == 0\n',
    entry_point: 'double',
  },
  { id: 'neg', prompt: 'def neg(x):\n', tests: 'assert neg(3) == -3\n', entry_point: 'neg' },
];

const right = '    return a + b\n';
const completions = new Map<string, string[]>([
  // add: 4 of 4 correct
  ['add', [right, '    return b + a\n', '    return sum([a, b])\n', right]],
  // double: 2 of 4 (then a syntax error, and a SystemExit that would skip the tests)
  ['double', ['    return x * 2\n', '    return x + x\n', '    return x +* 2\n', '    import sys; sys.exit(0)\n']],
  // neg: 0 of 4 (wrong; a memory bomb; a NameError; plain wrong)
  ['neg', ['    return x\n', '    return bytearray(4 * 1024 ** 3)\n', '    return y\n', '    return abs(x)\n']],
]);

test('scoreCompletions gives the exact pass@k on a known task set', { skip: !hasPython && 'no python3' }, async () => {
  const progress: number[] = [];
  const r = await scoreCompletions(tasks, completions, { k: [2, 1, 4], concurrency: 2 }, (done) => progress.push(done));
  assert.equal(r.n, 12);
  assert.equal(r.executed, 11); // add's first and last completions are the same program, run once
  assert.equal(r.tasks, 3);
  assert.deepEqual(progress, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  assert.deepEqual(r.perTask.map((t) => [t.id, t.n, t.correct]), [['add', 4, 4], ['double', 4, 2], ['neg', 4, 0]]);
  assert.deepEqual(r.perTask[1]!.outcomes, ['pass', 'pass', 'fail', 'fail']);
  assert.deepEqual(r.perTask[2]!.outcomes, ['fail', 'memory', 'fail', 'fail']);
  assert.deepEqual(r.statusCounts, { pass: 6, fail: 5, timeout: 0, memory: 1, error: 0 });
  // pass@1 = mean(4/4, 2/4, 0/4); pass@2 for double = 1 - C(2,2)/C(4,2) = 5/6; pass@4 for double = 1
  assert.equal(r.passAtK[1]!.value, 0.5);
  assert.ok(Math.abs(r.passAtK[2]!.value - (1 + 5 / 6 + 0) / 3) < 1e-12);
  assert.ok(Math.abs(r.passAtK[4]!.value - 2 / 3) < 1e-12);
  assert.ok(Math.abs(r.perTask[1]!.passAtK[2]! - 5 / 6) < 1e-12);
  assert.deepEqual(Object.keys(r.passAtK), ['1', '2', '4']);
  for (const k of [1, 2, 4]) {
    const { value, ci } = r.passAtK[k]!;
    assert.ok(ci[0] <= value && value <= ci[1] && ci[0] >= 0 && ci[1] <= 1, `k=${k}: ${ci}`);
  }
  assert.equal(r.perTask[0]!.firstFailure, undefined);
  assert.equal(r.perTask[2]!.firstFailure?.index, 0);
  assert.match(r.perTask[2]!.firstFailure!.stderrTail, /AssertionError/);
  assert.match(r.sandbox, /rlimits/);
});

test('scoreCompletions refuses incomplete or inconsistent input', async () => {
  const reject = (c: Map<string, string[]>, k: number[], pattern: RegExp) =>
    assert.rejects(scoreCompletions(tasks, c, { k }), (e: unknown) => e instanceof UserError && pattern.test(e.message));
  const copy = () => new Map([...completions].map(([id, list]) => [id, [...list]]));
  const noNeg = copy();
  noNeg.delete('neg');
  await reject(noNeg, [1], /task "neg" has no completions/);
  await reject(copy(), [5], /fewer than k=5/);
  await reject(copy(), [0], /k ≥ 1/);
  await reject(copy(), [], /no k/);
  const extra = copy();
  extra.set('other', ['x']);
  await reject(extra, [1], /unknown task "other"/);
  const hole = copy();
  hole.set('add', ['a', 'b']);
  delete hole.get('add')![0];
  await reject(hole, [1], /completion 0 is missing/);
});

test('identical programs run once and share their outcome', { skip: !hasPython && 'no python3' }, async () => {
  // 4 distinct programs among 16 completions (2 per task).
  const dupTasks: CodeTask[] = [tasks[0]!, tasks[2]!];
  const dup = new Map<string, string[]>([
    ['add', [right, right, right, '    return a - b\n', right, '    return a - b\n', right, right]],
    ['neg', ['    return -x\n', '    return -x\n', '    return x\n', '    return -x\n', '    return -x\n', '    return -x\n', '    return -x\n', '    return -x\n']],
  ]);
  const progress: number[] = [];
  const r = await scoreCompletions(dupTasks, dup, { k: [1], concurrency: 2 }, (done, total) => {
    assert.equal(total, 16);
    progress.push(done);
  });
  assert.equal(r.n, 16);
  assert.equal(r.executed, 4);
  assert.deepEqual(progress, Array.from({ length: 16 }, (_, i) => i + 1));
  assert.deepEqual(r.perTask[0]!.outcomes, ['pass', 'pass', 'pass', 'fail', 'pass', 'fail', 'pass', 'pass']);
  assert.deepEqual(r.perTask[1]!.outcomes, ['pass', 'pass', 'fail', 'pass', 'pass', 'pass', 'pass', 'pass']);
  assert.deepEqual(r.statusCounts, { pass: 13, fail: 3, timeout: 0, memory: 0, error: 0 });
  assert.equal(r.perTask[0]!.firstFailure?.index, 3);
});
