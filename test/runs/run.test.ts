import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Run, canonicalJson, shortHash } from '../../src/runs/run.js';

test('canonical JSON ignores key order and undefined fields', () => {
  assert.equal(canonicalJson({ b: 1, a: [2, { d: 1, c: undefined }] }), '{"a":[2,{"d":1}],"b":1}');
  assert.equal(shortHash({ a: 1, b: 2 }), shortHash({ b: 2, a: 1 }));
  assert.notEqual(shortHash({ a: 1 }), shortHash({ a: 2 }));
});

test('the same config reopens the same run; finished stages are not redone; failed ones are retried', async () => {
  const home = mkdtempSync(join(tmpdir(), 'distillery-run-'));
  try {
    const cfg = { recipe: 'x', lr: 1 };
    const { run, resumed } = Run.openOrCreate('ssd', cfg, home);
    assert.equal(resumed, false);
    let calls = 0;
    assert.equal(await run.stage('a', async () => ++calls), 1);
    await assert.rejects(run.stage('b', async () => { throw new Error('killed'); }), /killed/);

    const again = Run.openOrCreate('ssd', { lr: 1, recipe: 'x' }, home);
    assert.equal(again.resumed, true);
    assert.equal(again.run.id, run.id);
    assert.equal(await again.run.stage('a', async () => ++calls), 1, 'stage a is not rerun');
    assert.equal(calls, 1);
    assert.equal(again.run.stages.b?.status, 'running');
    assert.equal(await again.run.stage('b', async () => 'ok'), 'ok');
    assert.equal(again.run.stages.b?.attempts, 2);
    again.run.finish();
    assert.equal(Run.load(run.id, home).status, 'done');

    const other = Run.openOrCreate('ssd', { recipe: 'x', lr: 2 }, home);
    assert.notEqual(other.run.id, run.id);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
