import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, closeSync, openSync, readSync, unlinkSync, writeSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { importModel, verifyVault, type VerifyProgress } from '../../src/vault/vault.js';
import { freshHome, makeFakeModel, tempDir } from './helpers.js';

function flipByte(path: string, at: number): void {
  chmodSync(path, 0o644);
  const fd = openSync(path, 'r+');
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, at);
  b[0] = b[0]! ^ 0x01;
  writeSync(fd, b, 0, 1, at);
  closeSync(fd);
  chmodSync(path, 0o444);
}

async function setup() {
  const home = freshHome();
  const src = makeFakeModel(join(tempDir(), 'fake'));
  const a = await importModel(src, { name: 'a' }, home);
  const b = await importModel(makeFakeModel(join(tempDir(), 'b'), { tensors: { w: { shape: [6] } } }), { name: 'b' }, home);
  return { home, src, a, b };
}

test('a healthy vault verifies, with progress and throughput', async () => {
  const { home, a, b } = await setup();
  const seen: VerifyProgress[] = [];
  const r = await verifyVault(undefined, (p) => seen.push(p), home);
  assert.equal(r.ok, true);
  assert.deepEqual(r.models.map((m) => [m.ref, m.ok]), [['a:1', true], ['b:1', true]]);
  const unique = new Set([...a.files, ...b.files].map((f) => f.sha256));
  assert.equal(r.blobs, unique.size, 'shared blobs are hashed once');
  assert.equal(r.bytes, [...unique].reduce((s, h) => s + [...a.files, ...b.files].find((f) => f.sha256 === h)!.size, 0));
  assert.ok(r.bytesPerSecond > 0);
  assert.equal(seen.at(-1)!.bytesDone, seen.at(-1)!.bytesTotal);
  assert.equal(seen.at(-1)!.blobsDone, unique.size);
});

test('a single flipped byte is detected and names the models it breaks', async () => {
  const { home, a } = await setup();
  const shared = a.files.find((f) => f.path === 'tokenizer.json')!; // same content in a and b
  flipByte(join(home, 'blobs', 'sha256', shared.sha256), 5);
  const r = await verifyVault(undefined, undefined, home);
  assert.equal(r.ok, false);
  assert.equal(r.damaged.length, 1);
  const d = r.damaged[0]!;
  assert.equal(d.sha256, shared.sha256);
  assert.equal(d.problem, 'hash-mismatch');
  assert.notEqual(d.actualSha256, shared.sha256);
  assert.deepEqual(d.usedBy, [{ model: 'a:1', path: 'tokenizer.json' }, { model: 'b:1', path: 'tokenizer.json' }]);
  assert.deepEqual(r.models.map((m) => [m.ref, m.ok, m.damagedFiles]), [['a:1', false, ['tokenizer.json']], ['b:1', false, ['tokenizer.json']]]);
  // Verifying only one model reports only that model.
  const onlyA = await verifyVault('a', undefined, home);
  assert.deepEqual(onlyA.models.map((m) => m.ref), ['a:1']);
  assert.deepEqual(onlyA.damaged[0]!.usedBy, [{ model: 'a:1', path: 'tokenizer.json' }]);
});

test('flipping a byte deep inside the weights is detected too', async () => {
  const { home, a } = await setup();
  const w = a.files.find((f) => f.path === 'model.safetensors')!;
  flipByte(join(home, 'blobs', 'sha256', w.sha256), w.size - 3);
  const r = await verifyVault('a:1', undefined, home);
  assert.equal(r.ok, false);
  assert.deepEqual(r.models[0]!.damagedFiles, ['model.safetensors']);
});

test('missing and resized blobs are reported; re-importing a good copy repairs them', async () => {
  const { home, src, a } = await setup();
  const cfg = a.files.find((f) => f.path === 'config.json')!;
  const readme = a.files.find((f) => f.path === 'README.md')!;
  const weights = a.files.find((f) => f.path === 'model.safetensors')!;
  unlinkSync(join(home, 'blobs', 'sha256', cfg.sha256));
  chmodSync(join(home, 'blobs', 'sha256', readme.sha256), 0o644);
  writeFileSync(join(home, 'blobs', 'sha256', readme.sha256), 'shorter');
  flipByte(join(home, 'blobs', 'sha256', weights.sha256), 100);
  const r = await verifyVault('a', undefined, home);
  const problems = Object.fromEntries(r.damaged.map((d) => [d.usedBy[0]!.path, d.problem]));
  assert.deepEqual(problems, { 'config.json': 'missing', 'README.md': 'size-mismatch', 'model.safetensors': 'hash-mismatch' });

  await importModel(src, { name: 'a' }, home);
  const healed = await verifyVault(undefined, undefined, home);
  assert.equal(healed.ok, true, JSON.stringify(healed.damaged));
});

test('a tampered manifest is reported', async () => {
  const { home } = await setup();
  const p = join(home, 'models', 'b', '1.json');
  chmodSync(p, 0o644);
  writeFileSync(p, '{"schema": 1, "name": "b"');
  const r = await verifyVault(undefined, undefined, home);
  assert.equal(r.ok, false);
  assert.equal(r.badManifests.length, 1);
  assert.match(r.badManifests[0]!.error, /not valid JSON/);
  assert.deepEqual(r.models.map((m) => m.ref), ['a:1']);
});
