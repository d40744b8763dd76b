import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/core/paths.js';
import { sandboxInfo } from '../../src/eval/sandbox.js';
import { CLI, tempHome } from '../helpers/env.js';

const FIXTURES = join(packageRoot(), 'test', 'eval', 'fixtures', 'formats');
const noPython = sandboxInfo().python === null && 'no python3';

function evalCli(home: string, args: string[]) {
  return spawnSync(process.execPath, [CLI, 'eval', ...args], { env: { ...process.env, DISTILLERY_HOME: home }, encoding: 'utf8', timeout: 120_000 });
}

test('`distillery eval --check-canonical` passes on every format fixture, with no model, and prints the sandbox level first', { skip: noPython, timeout: 300_000 }, () => {
  const home = tempHome();
  try {
    for (const [file, format, count] of [
      ['humaneval.jsonl', 'humaneval', 3],
      ['humaneval-plus.jsonl', 'humaneval-plus', 3],
      ['mbpp.jsonl', 'mbpp', 3],
      ['stdio.jsonl', 'stdio', 4],
      ['multipl-e-js.jsonl', 'multipl-e', 3],
    ] as const) {
      const r = evalCli(home, ['--tasks', join(FIXTURES, file), '--check-canonical']);
      assert.equal(r.status, 0, `${file}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr.split('\n')[0]!, /^sandbox: process group \+ .*rlimits/);
      assert.match(r.stdout, new RegExp(`\\(${format}\\): ${count} of ${count} reference solutions pass`));
    }
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('`distillery eval --check-canonical` catches a broken reference: exit 1, the task named with the sandbox output', { skip: noPython, timeout: 120_000 }, () => {
  const home = tempHome();
  try {
    const lines = readFileSync(join(FIXTURES, 'humaneval.jsonl'), 'utf8').trim().split('\n');
    const rec = JSON.parse(lines[1]!);
    rec.canonical_solution = '    return sorted(xs)\n';
    lines[1] = JSON.stringify(rec);
    const broken = join(home, 'broken.jsonl');
    writeFileSync(broken, lines.join('\n') + '\n');
    const r = evalCli(home, ['--tasks', broken, '--check-canonical']);
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /FAILED Fix\/1: the reference solution did not pass \(fail\) — a harness or data bug/);
    assert.match(r.stdout, /AssertionError/);
    assert.match(r.stdout, /2 of 3 reference solutions pass/);
    const j = evalCli(home, ['--tasks', broken, '--check-canonical', '--json']);
    assert.equal(j.status, 1);
    const out = JSON.parse(j.stdout);
    assert.equal(out.task_format, 'humaneval');
    assert.deepEqual(out.results.map((x: { id: string; status: string }) => [x.id, x.status]), [['Fix/0', 'ok'], ['Fix/1', 'failed'], ['Fix/2', 'ok']]);
    assert.match(out.results[1].stderr, /AssertionError/);

    // A JS reference broken the same way is caught too; --format forces the format.
    const js = readFileSync(join(FIXTURES, 'multipl-e-js.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    js[2].canonical_solution = '  return xs[0];\n}\n'; // console.assert-only tests
    const jsFile = join(home, 'js.jsonl');
    writeFileSync(jsFile, js.map((x) => JSON.stringify(x)).join('\n') + '\n');
    const rj = evalCli(home, ['--tasks', jsFile, '--check-canonical', '--format', 'multipl-e']);
    assert.equal(rj.status, 1, rj.stdout + rj.stderr);
    assert.match(rj.stdout, /FAILED JS_2_max:[\s\S]*console\.assert failed/);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
