import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/core/paths.js';
import { UserError } from '../../src/core/errors.js';
import { canonicalChecks, checksFor, cutAtStop, detectFormat, loadTaskFile, parseTaskFile, promptFor } from '../../src/eval/formats/index.js';
import { stdoutMatches } from '../../src/eval/formats/compare.js';
import { checkCanonical, scoreCompletions } from '../../src/eval/score.js';
import { sandboxInfo } from '../../src/eval/sandbox.js';
import { extractCode, type CodeTask } from '../../src/eval/tasks.js';

const FIXTURES = join(packageRoot(), 'test', 'eval', 'fixtures', 'formats');
const hasPython = sandboxInfo().python !== null;
const noPython = !hasPython && 'no python3';

const FILES = {
  humaneval: 'humaneval.jsonl',
  'humaneval-plus': 'humaneval-plus.jsonl',
  mbpp: 'mbpp.jsonl',
  stdio: 'stdio.jsonl',
  'multipl-e': 'multipl-e-js.jsonl',
} as const;

test('each fixture loads with its detected format, and prompts are built per model type', async () => {
  const counts: Record<string, number> = {};
  for (const [fmt, file] of Object.entries(FILES)) {
    const { format, tasks } = await loadTaskFile(join(FIXTURES, file));
    assert.equal(format, fmt, file);
    counts[fmt] = tasks.length;
    for (const t of tasks) {
      assert.equal(t.format, fmt);
      assert.ok(t.canonical, `${t.id} has a reference`);
      assert.equal(promptFor(t, 'continuation'), t.prompt);
      assert.match(promptFor(t, 'chat'), fmt === 'multipl-e' ? /```javascript/ : /```python/);
    }
  }
  assert.deepEqual(counts, { humaneval: 3, 'humaneval-plus': 3, mbpp: 3, stdio: 4, 'multipl-e': 3 });
  const mbpp = (await loadTaskFile(join(FIXTURES, FILES.mbpp))).tasks[0]!;
  assert.equal(mbpp.prompt, '"""\nWrite a function to find the square of every number in a list.\nassert square_all([1, 2, 3]) == [1, 4, 9]\n"""\n');
  assert.equal(mbpp.entry_point, 'square_all');
  assert.equal(mbpp.id, '901');
  const js = (await loadTaskFile(join(FIXTURES, FILES['multipl-e']))).tasks[0]!;
  assert.equal(js.language, 'javascript');
});

test('--format forces a format; the existing JSONL still loads as "distillery"; errors name file and line', () => {
  const plain = JSON.stringify({ id: 'a', prompt: 'def f():\n', tests: 'assert f() == 1', entry_point: 'f' });
  assert.equal(parseTaskFile(plain + '\n', 'x.jsonl').format, 'distillery');
  assert.equal(detectFormat({ task_id: 'a', prompt: '', test: '', canonical_solution: '', entry_point: 'f' }), 'humaneval');
  const he = readFileSync(join(FIXTURES, FILES.humaneval), 'utf8');
  // HumanEval records also load as the distillery format (task_id/test aliases), without references.
  const forced = parseTaskFile(he, 'he.jsonl', 'distillery');
  assert.equal(forced.format, 'distillery');
  assert.equal(forced.tasks[0]!.canonical, undefined);
  assert.throws(() => parseTaskFile(he, 'he.jsonl', 'mbpp'), (e: unknown) => e instanceof UserError && /he\.jsonl:1: missing field "test_list"/.test(e.message));
  assert.throws(() => parseTaskFile(he, 'he.jsonl', 'nope' as never), /unknown task format/);
  const ts = JSON.stringify({ name: 'T', language: 'ts', prompt: 'function f(){\n', tests: 'x', stop_tokens: [] });
  assert.throws(() => parseTaskFile(ts + '\n', 'ts.jsonl'), (e: unknown) => e instanceof UserError && /ts\.jsonl:1: TypeScript tasks are not supported/.test(e.message));
  const compressed = JSON.stringify({ question_id: 'q', question_content: 'x', public_test_cases: [], private_test_cases: 'eJzLSM3JyVcozy' });
  assert.throws(() => parseTaskFile('\n' + compressed + '\n', 'lcb.jsonl'), (e: unknown) => e instanceof UserError && /lcb\.jsonl:2: field "private_test_cases"/.test(e.message) && /decompress/.test(e.hint ?? ''));
  const dup = JSON.stringify({ task_id: 1, text: 't', code: 'x', test_list: ['assert f(1) == 1'] });
  assert.throws(() => parseTaskFile(`${dup}\n${dup}\n`, 'm.jsonl'), /m\.jsonl:2: duplicate id "1"/);
  const noTests = JSON.stringify({ question_id: 'q', question_content: 'x', public_test_cases: [] });
  assert.throws(() => parseTaskFile(noTests, 's.jsonl'), /s\.jsonl:1: no test cases/);
});

test('extractCode: fenced blocks with or without a language, bare code after prose, function bodies', () => {
  assert.equal(extractCode('Here:\n```javascript\nfunction f() { return 1; }\n```', 'javascript'), 'function f() { return 1; }');
  assert.equal(extractCode('```js\nconst x = 1;\n```\n```python\ny = 2\n```', 'javascript'), 'const x = 1;');
  assert.equal(extractCode('```python\ny = 2\n```', 'javascript'), '```python\ny = 2\n```'); // another language only: raw text
  assert.equal(extractCode('```\nplain()\n```', 'javascript'), 'plain()');
  assert.equal(extractCode('Here is the solution:\ndef f(x):\n    return x\n'), 'def f(x):\n    return x\n');
  assert.equal(extractCode('Sure, this computes it\nimport math\nprint(math.pi)'), 'import math\nprint(math.pi)');
  assert.equal(extractCode('    return x + 1\n'), '    return x + 1\n'); // a body continuing the prompt
  assert.equal(extractCode('N, M = map(int, input().split())\nprint(N + M)\n'), 'N, M = map(int, input().split())\nprint(N + M)\n');
  assert.equal(extractCode('The answer is simple:\nfunction f() {}\n', 'javascript'), 'function f() {}\n');
  assert.equal(extractCode('just words and nothing else.'), 'just words and nothing else.');
});

test('stdout comparison normalises whitespace per line and compares numbers as decimals', () => {
  assert.ok(stdoutMatches('3\n', '3'));
  assert.ok(stdoutMatches('  a b  \r\nc\n\n\n', 'a b\nc'));
  assert.ok(stdoutMatches('1.5\n', '1.50'));
  assert.ok(stdoutMatches('1000 -0.0\n', '1e3 0'));
  assert.ok(!stdoutMatches('1 2', '1  2 3'));
  assert.ok(!stdoutMatches('0.3333', '0.333'));
  assert.ok(!stdoutMatches('a\nb', 'b\na'));
  assert.ok(!stdoutMatches('', '0'));
  assert.ok(!stdoutMatches('x\n\ny', 'x\ny'));
  assert.ok(stdoutMatches('\n\n  3 \n', '3'));
  assert.ok(!stdoutMatches('Yes 1.50', 'Yes 1.5')); // the decimal fallback needs every token to be a number
  assert.ok(stdoutMatches('', ''));
});

test('MultiPL-E continuations are cut at the stop tokens; stdin tasks make one run per case', async () => {
  assert.equal(cutAtStop('  return 1;\n}\n\nfunction g() {}', ['\nfunction ', '\n/*']), '  return 1;\n}\n');
  assert.equal(cutAtStop('abc', undefined), 'abc');
  const { tasks } = await loadTaskFile(join(FIXTURES, FILES.stdio));
  const sum = tasks.find((t) => t.id === 'sum-two')!;
  const checks = checksFor(sum, 'print(1)', 'continuation');
  assert.equal(checks.length, 3);
  assert.deepEqual(checks.map((c) => (typeof c.program === 'string' ? null : c.program.stdin)), ['1 2\n', '-5 5\n', '1000000000 1000000000\n']);
  assert.equal(checks[2]!.expectedStdout, '2000000000');
  const fn = tasks.find((t) => t.id === 'two-sum-fn')!;
  assert.equal(fn.entry_point, 'twoSum');
  assert.equal(canonicalChecks(fn)!.length, 1);
});

/** Scores one fixture with the references as completions plus wrong ones; returns per-task [id, correct]. */
async function scoreFixture(file: string, wrong: (t: CodeTask) => string, chat?: (t: CodeTask) => string): Promise<[string, number, string[]][]> {
  const { tasks } = await loadTaskFile(join(FIXTURES, file));
  const completions = new Map(tasks.map((t) => [t.id, [canonicalCompletion(t), wrong(t), canonicalCompletion(t)]]));
  const r = await scoreCompletions(tasks, completions, { k: [1, 3], concurrency: 2 });
  assert.equal(r.n, tasks.length * 3);
  if (chat) {
    const cr = await scoreCompletions(tasks, new Map(tasks.map((t) => [t.id, [chat(t)]])), { k: [1], concurrency: 2, format: 'chat' });
    assert.deepEqual(cr.perTask.map((p) => p.correct), tasks.map(() => 1), `${file} chat answers: ${JSON.stringify(cr.perTask.map((p) => p.firstFailure))}`);
  }
  return r.perTask.map((p) => [p.id, p.correct, p.outcomes]);
}

function canonicalCompletion(t: CodeTask): string {
  // stdin/stdout references are whole programs; as a continuation they follow the statement docstring.
  // With starter code, the prompt ends inside the method (indented); the continuation is the reference's body.
  if (t.format === 'stdio' && t.preamble) return t.canonical!.slice(t.canonical!.indexOf('\n', t.canonical!.indexOf('def ')) + 1).replace(/^[ \t]+/, '');
  return t.canonical!;
}

test('HumanEval and HumanEval+ fixtures score end to end: references pass, wrong completions fail', { skip: noPython, timeout: 120_000 }, async () => {
  const he = await scoreFixture(FILES.humaneval, () => '    return None\n', (t) => `Here you go:\n\`\`\`python\n${t.prompt}${t.canonical}\`\`\`\n`);
  assert.deepEqual(he.map(([id, c]) => [id, c]), [['Fix/0', 2], ['Fix/1', 2], ['Fix/2', 2]]);
  assert.deepEqual(he[0]![2], ['pass', 'fail', 'pass']);
  // HumanEval+: a slightly wrong mean (off by 1e-6, beyond atol 1e-9) fails; a sort that mutates its input
  // still passes its own outputs but must not pass when wrong.
  const plus = await scoreFixture(FILES['humaneval-plus'], (t) =>
    t.entry_point === 'mean' ? '    return sum(xs) / len(xs) + 1e-6\n' : t.entry_point === 'sort_desc' ? '    return sorted(xs)\n' : "    return sum(1 for c in s if c in 'aeiou')\n",
  );
  assert.deepEqual(plus.map(([id, c]) => [id, c]), [['FixPlus/0', 2], ['FixPlus/1', 2], ['FixPlus/2', 2]]);
  for (const [, , outcomes] of plus) assert.deepEqual(outcomes, ['pass', 'fail', 'pass']);
});

test('HumanEval+ compares floats within atol', { skip: noPython, timeout: 60_000 }, async () => {
  const { tasks } = await loadTaskFile(join(FIXTURES, FILES['humaneval-plus']));
  const mean = tasks.filter((t) => t.entry_point === 'mean');
  const r = await scoreCompletions(mean, new Map([['FixPlus/0', ['    return sum(xs) / len(xs) + 1e-12\n', '    return float(sum(xs)) / len(xs)\n']]]), { k: [1], concurrency: 1 });
  assert.deepEqual(r.perTask[0]!.outcomes, ['pass', 'pass']);
});

test('MBPP, stdin/stdout and MultiPL-E JS fixtures score end to end', { skip: noPython, timeout: 180_000 }, async () => {
  const mbpp = await scoreFixture(FILES.mbpp, () => 'def square_all(nums):\n    return nums\ndef count_words(s):\n    return 0\ndef second_smallest(nums):\n    return min(nums)\n', (t) => `\`\`\`python\n${t.canonical}\n\`\`\``);
  assert.deepEqual(mbpp.map(([id, c]) => [id, c]), [['901', 2], ['902', 2], ['903', 2]]);
  const stdio = await scoreFixture(FILES.stdio, (t) => (t.entry_point ? 'return [0, 0]\n' : 'print(42)\n'), (t) => `Solution:\n\`\`\`python\n${t.canonical}\`\`\``);
  assert.deepEqual(stdio.map(([id, c]) => [id, c]), [['sum-two', 2], ['reverse-lines', 2], ['halve', 2], ['two-sum-fn', 2]]);
  const js = await scoreFixture(FILES['multipl-e'], () => '  return 0;\n}\n', (t) => `\`\`\`js\n${t.prompt}${t.canonical}\`\`\``);
  assert.deepEqual(js.map(([id, c]) => [id, c]), [['JS_0_add', 2], ['JS_1_words', 2], ['JS_2_max', 2]]);
});

test('a wrong stdout is a fail with a "wrong answer" note naming the case', { skip: noPython, timeout: 60_000 }, async () => {
  const { tasks } = await loadTaskFile(join(FIXTURES, FILES.stdio));
  const sum = tasks.filter((t) => t.id === 'sum-two');
  const r = await scoreCompletions(sum, new Map([['sum-two', ['a, b = map(int, input().split())\nprint(a + b if a > 0 else 1)\n']]]), { k: [1], concurrency: 1 });
  assert.equal(r.perTask[0]!.correct, 0);
  assert.match(r.perTask[0]!.firstFailure!.note!, /wrong answer \(case 2 of 3\): expected "0\\n", got "1\\n"/);
});

test('console.assert and process.exit(0) before the end fail a JS task', { skip: noPython, timeout: 60_000 }, async () => {
  const { tasks } = await loadTaskFile(join(FIXTURES, FILES['multipl-e']));
  const max = tasks.filter((t) => t.id === 'JS_2_max'); // its tests use console.assert only
  const r = await scoreCompletions(max, new Map([['JS_2_max', ['  return xs[0];\n}\n', '  process.exit(0);\n}\n', '  return Math.max(...xs);\n}\n']]]), { k: [1], concurrency: 1 });
  assert.deepEqual(r.perTask[0]!.outcomes, ['fail', 'fail', 'pass']);
  assert.match(r.perTask[0]!.firstFailure!.stderrTail, /console\.assert failed: max of \[1,5,2\]/);
});

test('checkCanonical passes on every fixture and catches a broken reference, naming the task', { skip: noPython, timeout: 180_000 }, async () => {
  for (const file of Object.values(FILES)) {
    const { tasks } = await loadTaskFile(join(FIXTURES, file));
    const r = await checkCanonical(tasks, { concurrency: 2 });
    assert.deepEqual(r.map((x) => x.status), tasks.map(() => 'ok'), `${file}: ${JSON.stringify(r.filter((x) => x.status !== 'ok'))}`);
    const broken = tasks.map((t, i) => (i === 1 ? { ...t, canonical: t.canonical!.replace(/return|print/, t.language === 'javascript' ? 'return 1 + ' : 'raise ValueError("broken") or ') } : t));
    const b = await checkCanonical(broken, { concurrency: 2 });
    assert.deepEqual(b.map((x) => x.status), tasks.map((_, i) => (i === 1 ? 'failed' : 'ok')), file);
    assert.equal(b[1]!.id, tasks[1]!.id);
  }
  const noRef = await checkCanonical([{ id: 'x', prompt: 'def f():\n', tests: 'assert f() == 1', entry_point: 'f' }]);
  assert.deepEqual(noRef, [{ id: 'x', status: 'skipped' }]);
});
