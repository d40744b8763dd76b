import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { importModel, resolveModel, getManifest } from '../../src/vault/vault.js';
import { UserError } from '../../src/core/errors.js';
import { freshHome, makeFakeModel, stories260kDir, STORIES_MISSING, tempDir } from './helpers.js';

async function vaultWith(...names: string[]): Promise<{ home: string; src: string }> {
  const home = freshHome();
  const src = makeFakeModel(join(tempDir(), 'fake'));
  for (const n of names) await importModel(src, { name: n }, home);
  return { home, src };
}

test('NAME resolves to the latest version, NAME:VERSION to that one', async () => {
  const { home } = await vaultWith('tiny', 'tiny', 'tiny');
  const latest = await resolveModel('tiny', home);
  assert.equal(latest.kind, 'vault');
  assert.equal(latest.kind === 'vault' && latest.manifest.version, 3);
  assert.equal(latest.dir, join(home, 'views', 'tiny', '3'));
  const v2 = await resolveModel('tiny:2', home);
  assert.equal(v2.kind === 'vault' && v2.manifest.version, 2);
  assert.equal(getManifest('tiny:1', home).version, 1);
  await assert.rejects(resolveModel('tiny:4', home), (e: unknown) => e instanceof UserError && /no version 4/.test(e.message) && e.hint === 'versions: 1, 2, 3');
  await assert.rejects(resolveModel('tiny:0', home), /whole number/);
  await assert.rejects(resolveModel('tiny:x', home), /whole number/);
});

test('paths resolve to folders', async () => {
  const { home, src } = await vaultWith('tiny');
  assert.deepEqual(await resolveModel(src, home), { kind: 'path', dir: src });
  const rel = './' + join('test', '..', 'test');
  assert.deepEqual(await resolveModel(rel, home), { kind: 'path', dir: resolve('test') });
  await assert.rejects(resolveModel('./no/such/folder', home), /model folder not found/);
  // A bare word that is an existing folder and not a vault name is a path ("test" exists in the repo root).
  if (existsSync('test')) assert.deepEqual(await resolveModel('test', home), { kind: 'path', dir: resolve('test') });
});

test('unknown names list close names', async () => {
  const { home } = await vaultWith('stories260k', 'qwen3-0.6b');
  await assert.rejects(resolveModel('storys260k', home), (e: unknown) => {
    assert.ok(e instanceof UserError);
    assert.match(e.message, /no model named "storys260k"/);
    assert.match(e.hint ?? '', /did you mean stories260k\?/);
    return true;
  });
  await assert.rejects(resolveModel('storys', home), (e: unknown) => e instanceof UserError && e.hint === 'did you mean stories260k?');
  await assert.rejects(resolveModel('qwen3', home), (e: unknown) => e instanceof UserError && /qwen3-0\.6b/.test(e.hint ?? ''));
  await assert.rejects(resolveModel('zzzzzzzz', home), (e: unknown) => e instanceof UserError && /vault list/.test(e.hint ?? ''));
  await assert.rejects(resolveModel('anything', freshHome()), (e: unknown) => e instanceof UserError && /vault is empty/.test(e.hint ?? ''));
});

test('the view holds the model files, byte-identical, as symlinks into blobs', async () => {
  const { home, src } = await vaultWith('tiny');
  const r = await resolveModel('tiny', home);
  assert.equal(r.kind, 'vault');
  if (r.kind !== 'vault') return;
  for (const f of r.manifest.files) {
    const p = join(r.dir, f.path);
    assert.ok(lstatSync(p).isSymbolicLink(), f.path);
    assert.ok(!readlinkSync(p).startsWith('/'), 'relative links keep the home relocatable');
    assert.deepEqual(readFileSync(p), readFileSync(join(src, f.path)), f.path);
  }
  assert.deepEqual(readdirSync(join(home, 'views', 'tiny')), ['1'], 'no temp folders left');
});

test('stories260k view is a loadable HF folder identical to the source', async (t) => {
  const dir = stories260kDir();
  if (!dir) return t.skip(STORIES_MISSING);
  const home = freshHome();
  await importModel(dir, { name: 'stories260k' }, home);
  const r = await resolveModel('stories260k:1', home);
  const names = readdirSync(dir).sort();
  assert.deepEqual(readdirSync(r.dir).sort(), names);
  for (const n of names) assert.deepEqual(readFileSync(join(r.dir, n)), readFileSync(join(dir, n)), n);
});

test('a damaged view is rebuilt; a missing blob is reported', async () => {
  const { home } = await vaultWith('tiny');
  const r = await resolveModel('tiny', home);
  const cfg = join(r.dir, 'config.json');
  unlinkSync(cfg);
  writeFileSync(cfg, 'tampered');
  writeFileSync(join(r.dir, 'stray.txt'), 'not in the manifest');
  const again = await resolveModel('tiny', home);
  assert.equal(again.dir, r.dir);
  assert.ok(lstatSync(cfg).isSymbolicLink());
  assert.ok(!existsSync(join(r.dir, 'stray.txt')));
  assert.deepEqual(readdirSync(join(home, 'views', 'tiny')), ['1']);

  rmSync(r.dir, { recursive: true });
  assert.ok(existsSync(join((await resolveModel('tiny', home)).dir, 'config.json')), 'deleted view recreated');

  const m = getManifest('tiny', home);
  const blob = join(home, 'blobs', 'sha256', m.files.find((f) => f.path === 'config.json')!.sha256);
  chmodSync(blob, 0o644);
  unlinkSync(blob);
  await assert.rejects(resolveModel('tiny', home), (e: unknown) => e instanceof UserError && /tiny:1 is damaged/.test(e.message) && /config\.json/.test(e.message));
});

test('a vault name wins over a same-named folder in the working directory', async () => {
  const { home } = await vaultWith('test');
  // The repo root has a ./test folder; "test" still means the vault model, "./test" the folder.
  assert.equal((await resolveModel('test', home)).kind, 'vault');
  assert.equal((await resolveModel('./test', home)).kind, 'path');
});
