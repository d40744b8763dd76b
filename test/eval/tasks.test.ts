import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../../src/core/errors.js';
import { buildChatProgram, buildProgram, extractCode, loadTasks, parseTasks, programFor, type CodeTask } from '../../src/eval/tasks.js';

const good = (id: string) => JSON.stringify({ id, prompt: 'def f(x):\n', tests: 'assert f(1) == 2\n', entry_point: 'f' });

function throwsUser(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof UserError, `expected a UserError, got ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  });
}

test('parseTasks reads tasks, skips blank lines, accepts HumanEval field names', () => {
  const he = JSON.stringify({ task_id: 'HumanEval/0', prompt: 'p', test: 'def check(candidate):\n    assert True\n', entry_point: 'g', canonical_solution: 'x' });
  const tasks = parseTasks([good('a'), '', '  ', he, JSON.stringify({ ...JSON.parse(good('b')), language: 'python' })].join('\n') + '\n', 'mem');
  assert.deepEqual(tasks.map((t) => t.id), ['a', 'HumanEval/0', 'b']);
  assert.equal(tasks[1]!.tests, 'def check(candidate):\n    assert True\n');
  assert.equal(tasks[2]!.language, 'python');
  assert.equal(tasks[0]!.language, undefined);
});

test('parse errors name the source, the line and the field', () => {
  const bad = (line: string) => [good('a'), '', line].join('\n');
  throwsUser(() => parseTasks(bad('{"id": "x"'), 'tasks.jsonl'), /^tasks\.jsonl:3: not valid JSON/);
  throwsUser(() => parseTasks(bad('[1]'), 'tasks.jsonl'), /^tasks\.jsonl:3: expected a JSON object, got an array/);
  throwsUser(() => parseTasks(bad(JSON.stringify({ id: 'x', tests: 't', entry_point: 'f' })), 'tasks.jsonl'), /^tasks\.jsonl:3: missing field "prompt"/);
  throwsUser(() => parseTasks(bad(JSON.stringify({ id: 'x', prompt: 7, tests: 't', entry_point: 'f' })), 'tasks.jsonl'), /^tasks\.jsonl:3: field "prompt" must be a string, got number 7/);
  throwsUser(() => parseTasks(bad(JSON.stringify({ id: 'x', prompt: '', tests: ' ', entry_point: 'f' })), 'tasks.jsonl'), /^tasks\.jsonl:3: field "tests" is empty/);
  throwsUser(() => parseTasks(bad(JSON.stringify({ id: 'x', prompt: '', tests: 't', entry_point: 'f(x)' })), 'tasks.jsonl'), /^tasks\.jsonl:3: field "entry_point" must be a Python identifier/);
  throwsUser(() => parseTasks(bad(JSON.stringify({ id: 'x', prompt: '', tests: 't', entry_point: 'f', language: 'js' })), 'tasks.jsonl'), /^tasks\.jsonl:3: field "language" must be "python"/);
  throwsUser(() => parseTasks(bad(JSON.stringify({ id: 3, prompt: '', tests: 't', entry_point: 'f' })), 'tasks.jsonl'), /^tasks\.jsonl:3: field "id" must be a string/);
});

test('duplicate ids are refused with both line numbers', () => {
  throwsUser(() => parseTasks([good('a'), good('b'), good('a')].join('\n'), 'x.jsonl'), /^x\.jsonl:3: duplicate id "a" \(first on line 1\)/);
});

test('loadTasks reads a file and reports unreadable or empty files', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'distillery-tasks-'));
  try {
    const file = join(dir, 't.jsonl');
    writeFileSync(file, good('one') + '\n' + good('two') + '\n');
    assert.equal((await loadTasks(file)).length, 2);
    writeFileSync(file, '\n');
    await assert.rejects(loadTasks(file), /no tasks/);
    await assert.rejects(loadTasks(join(dir, 'missing.jsonl')), /cannot read task file .*missing\.jsonl: ENOENT/);
    writeFileSync(file, good('one') + '\n' + '{"id": "two", "prompt": "", "tests": "x"}\n');
    await assert.rejects(loadTasks(file), new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2: missing field "entry_point"`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const task: CodeTask = { id: 't', prompt: 'def add(a, b):\n', tests: 'assert add(1, 2) == 3\n', entry_point: 'add' };

test('buildProgram is prompt + completion + blank line + tests', () => {
  assert.equal(buildProgram(task, '    return a + b'), 'def add(a, b):\n    return a + b\n\nassert add(1, 2) == 3\n');
  assert.equal(programFor(task, '    return a + b'), buildProgram(task, '    return a + b'));
});

test('HumanEval-style check(candidate) tests get called on the entry point', () => {
  const he: CodeTask = { ...task, tests: '\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n' };
  const p = buildProgram(he, '    return a + b\n');
  assert.ok(p.endsWith('\n\ncheck(add)\n'), p);
  assert.ok(!buildProgram(task, 'x').includes('check('));
});

test('extractCode takes the last python block, else the last plain block, else the raw text', () => {
  const two = 'Here:\n```python\ndef f():\n    return 1\n```\nBetter:\n```python\ndef f():\n    return 2\n```\nDone.';
  assert.equal(extractCode(two), 'def f():\n    return 2');
  assert.equal(extractCode('```py\nx = 1\n```'), 'x = 1');
  assert.equal(extractCode('text\n```\nplain = 1\n```\n'), 'plain = 1');
  assert.equal(extractCode('```python\na = 1\n```\n```\nshell stuff\n```'), 'a = 1');
  assert.equal(extractCode('```bash\nls\n```'), '```bash\nls\n```'); // only other languages: raw text
  assert.equal(extractCode('def f():\n    return 3\n'), 'def f():\n    return 3\n');
  assert.equal(extractCode('Sure:\n```python\ndef f():\n    return 4\n'), 'def f():\n    return 4'); // truncated answer
  assert.equal(extractCode('```python\n```'), '');
});

test('buildChatProgram places the extracted code after the prompt', () => {
  const answer = 'Sure!\n```python\ndef add(a, b):\n    return a + b\n```';
  assert.equal(buildChatProgram(task, answer), 'def add(a, b):\n\ndef add(a, b):\n    return a + b\n\nassert add(1, 2) == 3\n');
  assert.equal(programFor(task, answer, 'chat'), buildChatProgram(task, answer));
});
