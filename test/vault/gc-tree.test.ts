import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../../src/core/errors.js';
import { vaultLayout } from '../../src/vault/layout.js';
import { beginPending, livePending, pendingDir } from '../../src/vault/pending.js';
import { hasBlob, putBlob } from '../../src/vault/store.js';
import {
  collectGarbage, importFrom, importModel, lineageTree, modelView, registerModel, verifyVault, type Lineage, type TreeNode,
} from '../../src/vault/vault.js';
import { freshHome, makeFakeModel, tempDir, writeSafetensors } from './helpers.js';

async function orphanBlob(home: string, content: string): Promise<string> {
  const f = join(tempDir(), 'orphan.bin');
  writeFileSync(f, content);
  return (await putBlob(vaultLayout(home), f)).sha256;
}

test('gc removes only unreferenced blobs, stale temps and orphan views; --dry-run changes nothing', async () => {
  const home = freshHome();
  const layout = vaultLayout(home);
  const a = await importModel(makeFakeModel(join(tempDir(), 'a')), { name: 'a' }, home);
  await importModel(makeFakeModel(join(tempDir(), 'b'), { tokenizer: '{"b": 1}' }), { name: 'b' }, home); // shares the weights
  modelView(a, home);
  const orphan = await orphanBlob(home, 'left by an interrupted import');
  mkdirSync(layout.blobTmpDir, { recursive: true });
  const oldTemp = join(layout.blobTmpDir, '123-dead');
  writeFileSync(oldTemp, 'partial');
  const twoHoursAgo = new Date(Date.now() - 2 * 3600 * 1000);
  utimesSync(oldTemp, twoHoursAgo, twoHoursAgo);
  const freshTemp = join(layout.blobTmpDir, '456-writing');
  writeFileSync(freshTemp, 'still being written');
  mkdirSync(join(layout.viewsDir, 'gone', '3'), { recursive: true });

  const dry = collectGarbage({ dryRun: true }, home);
  assert.deepEqual(dry.removed.map((r) => r.sha256), [orphan]);
  assert.equal(dry.bytes, 'left by an interrupted import'.length);
  assert.ok(hasBlob(layout, orphan), 'a dry run removes nothing');

  const real = collectGarbage({}, home);
  assert.deepEqual(real.removed.map((r) => r.sha256), [orphan]);
  assert.equal(real.kept, a.files.length + 1);
  assert.equal(real.tempsRemoved, 1);
  assert.equal(real.viewsRemoved, 1);
  assert.ok(!hasBlob(layout, orphan));
  assert.ok(!existsSync(oldTemp) && existsSync(freshTemp), 'only temps untouched for an hour go');
  assert.ok(existsSync(join(layout.viewsDir, 'a', '1')), 'live views stay');
  assert.equal((await verifyVault(undefined, undefined, home)).ok, true);
  assert.equal(collectGarbage({}, home).removed.length, 0, 'a second run finds nothing');
});

test('gc removes nothing while an import is in flight, and sweeps markers of dead processes', async () => {
  const home = freshHome();
  const layout = vaultLayout(home);
  await importModel(makeFakeModel(join(tempDir(), 'a')), { name: 'a' }, home);
  const orphan = await orphanBlob(home, 'x');
  const live = beginPending(layout, 'import test');
  const blocked = collectGarbage({}, home);
  assert.equal(blocked.removed.length, 0);
  assert.match(blocked.blockedBy[0] ?? '', /^import test \(pid \d+\)$/);
  assert.ok(hasBlob(layout, orphan));
  live.end();

  // A marker left by a process that died (kill -9 mid-import) protects nothing.
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  writeFileSync(join(pendingDir(layout), `${dead.stdout}-x.json`), JSON.stringify({ pid: Number(dead.stdout), started: Date.now(), label: 'import dead' }));
  writeFileSync(join(pendingDir(layout), 'torn.json'), '{"pid": 1');
  assert.equal(livePending(layout).length, 0);
  const r = collectGarbage({}, home);
  assert.deepEqual(r.removed.map((x) => x.sha256), [orphan]);
  assert.deepEqual(r.blockedBy, []);
});

test('gc refuses to run when a manifest is unreadable', async () => {
  const home = freshHome();
  const layout = vaultLayout(home);
  await importModel(makeFakeModel(join(tempDir(), 'a')), { name: 'a' }, home);
  const orphan = await orphanBlob(home, 'y');
  mkdirSync(join(layout.modelsDir, 'broken'), { recursive: true });
  writeFileSync(join(layout.modelsDir, 'broken', '1.json'), '{"schema": 1, "name": ');
  assert.throws(() => collectGarbage({}, home), (e: unknown) => e instanceof UserError && /broken\/1\.json is unreadable/.test(e.message));
  assert.ok(hasBlob(layout, orphan), 'nothing was removed');
});

function lineage(parent: { ref: string; digest: string }, run: string, pass: [number, number] | null): Lineage {
  return {
    parent, run_id: run, recipe: { name: 'ssd', config: {} },
    evaluation: pass ? { base: { 1: { value: pass[0], ci: [0, 1] } }, distilled: { 1: { value: pass[1], ci: [0, 1] } } } : {},
  };
}

const shape = (n: TreeNode): unknown => ({ ref: n.ref, rel: n.relation, kids: n.children.map(shape) });

test('vault tree: distilled descendants and adapters under their base, a missing parent as its own root', async () => {
  const home = freshHome();
  const base = await importModel(makeFakeModel(join(tempDir(), 'base')), { name: 'base' }, home);
  const child = await registerModel(makeFakeModel(join(tempDir(), 'c'), { tokenizer: '{"c": 1}' }), { name: 'base-ssd', lineage: lineage({ ref: 'base:1', digest: base.digest }, 'run-1', [0.5, 0.75]) }, home);
  await registerModel(makeFakeModel(join(tempDir(), 'g'), { tokenizer: '{"g": 1}' }), { name: 'base-ssd', lineage: lineage({ ref: 'base-ssd:1', digest: child.digest }, 'run-2', null) }, home);
  const adapterDir = join(tempDir(), 'lora');
  mkdirSync(adapterDir);
  writeFileSync(join(adapterDir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', base_model_name_or_path: 'base' }));
  writeSafetensors(join(adapterDir, 'adapter_model.safetensors'), { 'a.lora_A.weight': { shape: [2, 8] } });
  await importFrom(adapterDir, {}, home);
  await registerModel(makeFakeModel(join(tempDir(), 'o'), { tokenizer: '{"o": 1}' }), { name: 'orphan', lineage: lineage({ ref: 'gone:4', digest: 'f'.repeat(64) }, 'run-9', null) }, home);

  const forest = lineageTree(undefined, home);
  assert.deepEqual(forest.map(shape), [
    { ref: 'base:1', rel: null, kids: [
      { ref: 'base-ssd:1', rel: 'distilled', kids: [{ ref: 'base-ssd:2', rel: 'distilled', kids: [] }] },
      { ref: 'lora:1', rel: 'adapter', kids: [] },
    ] },
    { ref: 'gone:4', rel: null, kids: [{ ref: 'orphan:1', rel: 'distilled', kids: [] }] },
  ]);
  assert.equal(forest[1]?.manifest, null);
  assert.deepEqual(forest[1]?.missing, { ref: 'gone:4', digest: 'f'.repeat(64) });
  assert.deepEqual(lineageTree('base-ssd:2', home).map((n) => n.ref), ['base:1'], 'only the tree holding the model');
  assert.deepEqual(lineageTree('orphan', home).map((n) => n.ref), ['gone:4']);
});
