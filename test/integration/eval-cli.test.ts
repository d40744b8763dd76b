import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, ENGINE_MISSING, STORIES, STORIES_MISSING, tempHome } from '../helpers/env.js';

test('`distillery eval` generates, executes in the sandbox and reports exact pass@k', { skip: STORIES_MISSING || ENGINE_MISSING, timeout: 120_000 }, () => {
  const home = tempHome();
  try {
    // Whatever the model writes lands in a comment (the completion stops at the first newline), so the
    // outcome of each task is fixed by its prompt: one task always passes and one always fails.
    const tasks = join(home, 'tasks.jsonl');
    writeFileSync(
      tasks,
      [
        { id: 'ok', prompt: 'def f(x):\n    return x + 1\n# Once upon a time', tests: 'assert f(1) == 2', entry_point: 'f' },
        { id: 'bad', prompt: 'def f(x):\n    return x\n# Once upon a time', tests: 'assert f(1) == 2', entry_point: 'f' },
      ].map((t) => JSON.stringify(t)).join('\n') + '\n',
    );
    const args = [CLI, 'eval', '--model', STORIES, '--tasks', tasks, '--n', '3', '--k', '1,3', '--max-tokens', '12', '--stop', '\\n', '--json', '-q'];
    const r = spawnSync(process.execPath, args, { env: { ...process.env, DISTILLERY_HOME: home }, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.tasks, 2);
    assert.equal(out.n, 3);
    assert.equal(out.pass_at_k['1'].value, 0.5);
    assert.equal(out.pass_at_k['3'].value, 0.5);
    assert.deepEqual(out.per_task.map((t: { id: string; correct: number }) => [t.id, t.correct]), [['ok', 3], ['bad', 0]]);
    assert.deepEqual(out.decoding.stop, ['\n']);
    assert.match(out.sandbox, /rlimits/);

    // Bad input is named.
    const bad = spawnSync(process.execPath, [...args.slice(0, 4), '--tasks', join(home, 'missing.jsonl')], { env: { ...process.env, DISTILLERY_HOME: home }, encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /missing\.jsonl/);
    const badK = spawnSync(process.execPath, [CLI, 'eval', '--model', STORIES, '--tasks', tasks, '--n', '2', '--k', '5'], { env: { ...process.env, DISTILLERY_HOME: home }, encoding: 'utf8' });
    assert.equal(badK.status, 1);
    assert.match(badK.stderr, /1 ≤ k ≤ n/);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('help is available for every command and unknown options fail with a usage hint', () => {
  const top = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' });
  assert.equal(top.status, 0);
  for (const cmd of ['demo', 'vault', 'ssd', 'eval', 'doctor']) assert.match(top.stdout, new RegExp(`\\n  ${cmd}\\b`));
  for (const cmd of ['ssd', 'eval', 'vault import']) {
    const r = spawnSync(process.execPath, [CLI, ...cmd.split(' '), '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0, cmd);
    assert.match(r.stdout, /Example/, `${cmd} --help shows an example`);
  }
  const bad = spawnSync(process.execPath, [CLI, 'ssd', '--no-such-flag'], { encoding: 'utf8' });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /unknown option/);
});
