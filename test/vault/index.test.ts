import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmSync, unlinkSync, chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { importModel, listModels, rebuildIndex, registerModel, findModelsByDigest } from '../../src/vault/vault.js';
import { freshHome, makeFakeModel, tempDir } from './helpers.js';

async function populated() {
  const home = freshHome();
  const src = makeFakeModel(join(tempDir(), 'fake'));
  const base = await importModel(src, { name: 'base' }, home);
  await importModel(src, { name: 'base' }, home);
  await registerModel(makeFakeModel(join(tempDir(), 'child'), { tensors: { w: { shape: [2] } } }), {
    name: 'child',
    lineage: { parent: { ref: 'base:1', digest: base.digest }, run_id: 'r1', recipe: {}, evaluation: {} },
  }, home);
  return { home, base };
}

test('the index lists models with their fields', async () => {
  const { home, base } = await populated();
  const rows = listModels(undefined, home);
  assert.deepEqual(rows.map((r) => `${r.name}:${r.version}`), ['base:1', 'base:2', 'child:1']);
  const r = rows[0]!;
  assert.equal(r.digest, base.digest);
  assert.equal(r.architecture, 'LlamaForCausalLM');
  assert.equal(r.parameters, base.parameters);
  assert.equal(r.manifest_path, 'models/base/1.json');
  assert.equal(r.created, base.created);
  assert.equal(r.size, base.files.reduce((s, f) => s + f.size, 0));
  assert.equal(rows[2]!.parent_digest, base.digest);
  assert.deepEqual(findModelsByDigest(base.digest, home).map((x) => x.version), [1, 2]);
  const db = new Database(join(home, 'distillery.db'), { readonly: true });
  assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  db.close();
});

test('rebuildIndex and a deleted db recreate the same rows', async () => {
  const { home } = await populated();
  const before = listModels(undefined, home);
  for (const f of ['distillery.db', 'distillery.db-wal', 'distillery.db-shm']) rmSync(join(home, f), { force: true });
  assert.deepEqual(listModels(undefined, home), before, 'opened without a db: rebuilt automatically');
  assert.ok(existsSync(join(home, 'distillery.db')));
  const r = rebuildIndex(home);
  assert.equal(r.models, 3);
  assert.deepEqual(r.skipped, []);
  assert.deepEqual(listModels(undefined, home), before);
});

test('the index follows manifests added or removed behind its back', async () => {
  const { home } = await populated();
  unlinkSync(join(home, 'models', 'base', '2.json'));
  assert.deepEqual(listModels(undefined, home).map((r) => `${r.name}:${r.version}`), ['base:1', 'child:1']);
  const p = join(home, 'models', 'child', '1.json');
  chmodSync(p, 0o644);
  writeFileSync(p, 'garbage');
  const r = rebuildIndex(home);
  assert.equal(r.models, 1);
  assert.equal(r.skipped.length, 1);
  assert.deepEqual(listModels(undefined, home).map((x) => `${x.name}:${x.version}`), ['base:1']);
});

test('other tables in distillery.db survive a rebuild', async () => {
  const { home } = await populated();
  const db = new Database(join(home, 'distillery.db'));
  db.exec('CREATE TABLE runs (id TEXT PRIMARY KEY); INSERT INTO runs VALUES (\'r1\')');
  db.close();
  rebuildIndex(home);
  const again = new Database(join(home, 'distillery.db'), { readonly: true });
  assert.deepEqual(again.prepare('SELECT id FROM runs').all(), [{ id: 'r1' }]);
  again.close();
});
