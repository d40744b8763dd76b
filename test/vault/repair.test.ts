import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, closeSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { registerVaultCommands } from '../../src/cli/vault-commands.js';
import { UserError } from '../../src/core/errors.js';
import { startMirror, type MirrorHandle } from '../../src/mirror/server.js';
import { exportBundle, importBundle } from '../../src/vault/bundle.js';
import { blobPath, vaultLayout } from '../../src/vault/layout.js';
import type { Manifest } from '../../src/vault/manifest.js';
import { repairVault } from '../../src/vault/repair.js';
import { importModel, verifyVault } from '../../src/vault/vault.js';
import { flipped, manifestFiles, readTar, twoModels } from './bundle-helpers.js';
import { freshHome, listTree, makeFakeModel, tempDir } from './helpers.js';
import { runCli } from '../helpers/cli.js';

/**
 * `vault repair --from BUNDLE|URL`: damaged and missing blobs restored from a bundle or a mirror, verified,
 * manifests untouched; what the source lacks stays reported.
 */

let src = '';
let alpha: Manifest;
let beta: Manifest;
let bundle = '';
let M: MirrorHandle;
const log: string[] = [];

before(async () => {
  src = freshHome();
  [alpha, beta] = await twoModels(src, 300_000);
  bundle = join(tempDir(), 'models.tar');
  await exportBundle(vaultLayout(src), ['alpha', 'beta'], bundle);
  M = await startMirror({ home: src, port: 0, log: (l) => log.push(l) });
});

after(async () => {
  await M?.close();
});

const fileOf = (m: Manifest, path: string) => m.files.find((f) => f.path === path)!;

/** A vault holding alpha and beta, one blob with a flipped byte (shared by both) and one deleted (alpha's). */
async function damagedHome(): Promise<{ home: string; flippedSha: string; deletedSha: string }> {
  const home = freshHome();
  await importBundle(vaultLayout(home), bundle);
  const flippedSha = fileOf(beta, 'config.json').sha256; // shared with alpha
  const p = blobPath(vaultLayout(home), flippedSha);
  chmodSync(p, 0o644);
  const fd = openSync(p, 'r+');
  writeSync(fd, Buffer.from('#'), 0, 1, 3);
  closeSync(fd);
  chmodSync(p, 0o444);
  const deletedSha = fileOf(alpha, 'weights-extra.bin').sha256;
  unlinkSync(blobPath(vaultLayout(home), deletedSha));
  return { home, flippedSha, deletedSha };
}

for (const kind of ['bundle', 'mirror'] as const) {
  test(`repair from a ${kind}: a changed and a missing blob are restored, verify is clean, manifests untouched`, async () => {
    const { home, flippedSha, deletedSha } = await damagedHome();
    const before = await verifyVault(undefined, undefined, home);
    assert.equal(before.ok, false);
    assert.equal(before.damaged.length, 2);
    const manifests = manifestFiles(home);
    const from = kind === 'bundle' ? bundle : M.url;
    const phases = new Set<string>();
    const r = await repairVault(vaultLayout(home), { from, onProgress: (p) => phases.add(p.phase) });
    assert.equal(r.ok, true);
    assert.deepEqual(r.source.kind, kind);
    assert.deepEqual(r.repaired.map((b) => [b.sha256, b.problem]).sort(), [[flippedSha, 'hash-mismatch'], [deletedSha, 'missing']].sort());
    assert.deepEqual(r.stillDamaged, []);
    assert.deepEqual(r.models.map((m) => [m.ref, m.ok, m.repairedFiles]), [
      ['alpha:1', true, ['config.json', 'weights-extra.bin']],
      ['beta:1', true, ['config.json']],
    ]);
    assert.equal(r.bytesRestored, fileOf(alpha, 'config.json').size + fileOf(alpha, 'weights-extra.bin').size);
    assert.deepEqual([...phases].sort(), ['recheck', 'restore', 'verify']);
    assert.equal((await verifyVault(undefined, undefined, home)).ok, true);
    assert.deepEqual(manifestFiles(home), manifests, 'manifests are never modified');
    assert.equal(statSync(blobPath(vaultLayout(home), deletedSha)).mode & 0o777, 0o444, 'restored blobs are read-only');
    assert.deepEqual(listTree(join(home, 'blobs', 'tmp')), [], 'no temp file left');
  });
}

test('blobs the source does not hold stay reported, with the models they break', async () => {
  const { home, deletedSha } = await damagedHome();
  // A model only this vault has, with one damaged blob of its own (importing it heals the shared config.json).
  const gamma = await importModel(makeFakeModel(join(tempDir(), 'gamma'), { tensors: { g: { shape: [5, 5] } } }), { name: 'gamma' }, home);
  const own = fileOf(gamma, 'model.safetensors').sha256;
  unlinkSync(blobPath(vaultLayout(home), own));
  for (const from of [bundle, M.url]) {
    const r = await repairVault(vaultLayout(home), { from });
    assert.equal(r.ok, false);
    assert.deepEqual(r.stillDamaged.map((b) => [b.sha256, b.reason]), [[own, from === bundle ? 'not in the bundle' : 'not on the mirror']]);
    assert.deepEqual(r.stillDamaged[0]!.usedBy, [{ model: 'gamma:1', path: 'model.safetensors' }]);
    assert.deepEqual(r.models.find((m) => m.ref === 'gamma:1'), { ref: 'gamma:1', ok: false, repairedFiles: [], damagedFiles: ['model.safetensors'] });
    if (from === bundle) assert.ok(r.repaired.some((b) => b.sha256 === deletedSha));
  }
  const v = await verifyVault(undefined, undefined, home);
  assert.deepEqual(v.damaged.map((d) => d.sha256), [own], 'everything else was repaired');
});

test('repair of one model restores only its blobs', async () => {
  const { home, flippedSha, deletedSha } = await damagedHome();
  const r = await repairVault(vaultLayout(home), { from: bundle, ref: 'beta' });
  assert.equal(r.ok, true);
  assert.deepEqual(r.repaired.map((b) => b.sha256), [flippedSha]);
  assert.deepEqual((await verifyVault(undefined, undefined, home)).damaged.map((d) => d.sha256), [deletedSha]);
});

test('a healthy vault: nothing is fetched or written', async () => {
  const home = freshHome();
  await importBundle(vaultLayout(home), bundle);
  const tree = listTree(home);
  for (const from of [bundle, M.url]) {
    const at = log.length;
    const r = await repairVault(vaultLayout(home), { from });
    assert.equal(r.ok, true);
    assert.deepEqual([r.repaired, r.stillDamaged, r.models], [[], [], []]);
    assert.equal(r.checked.models, 2);
    assert.equal(log.slice(at).filter((l) => l.includes('/blobs/')).length, 0);
  }
  assert.deepEqual(listTree(home).filter((l) => !l.startsWith('pending')), tree.filter((l) => !l.startsWith('pending')));
});

test('a bundle whose copy is damaged too: reported, the vault blob is left as it was', async () => {
  const { home, deletedSha } = await damagedHome();
  const member = readTar(bundle).members.find((m) => m.name === `blobs/sha256/${deletedSha}`)!;
  const bad = flipped(bundle, member.dataOffset + 100, join(tempDir(), 'bad.tar'));
  const r = await repairVault(vaultLayout(home), { from: bad });
  assert.equal(r.ok, false);
  const still = r.stillDamaged.find((b) => b.sha256 === deletedSha)!;
  assert.match(still.reason, /the bundle's copy is damaged too \(sha256 [0-9a-f]{64}\)/);
  assert.equal(r.repaired.length, 1, 'the other blob was restored');
  assert.deepEqual(listTree(join(home, 'blobs', 'tmp')), []);
});

test('bad sources are refused before the vault is read', async () => {
  const home = freshHome();
  await assert.rejects(repairVault(vaultLayout(home), { from: join(tempDir(), 'nope.tar') }), (e: unknown) => e instanceof UserError && /bundle not found/.test(e.message));
  await assert.rejects(repairVault(vaultLayout(home), { from: `${M.url}/alpha` }), /not a mirror address: .* it has a path/);
  await assert.rejects(repairVault(vaultLayout(home), { from: 'http://127.0.0.1:1' }), /cannot reach the mirror/);
  await assert.rejects(repairVault(vaultLayout(home), { from: bundle, token: 'x' }), /--token is for a mirror URL/);
  const T = await startMirror({ home: src, port: 0, token: 'repair-token-0123456789' });
  try {
    await assert.rejects(repairVault(vaultLayout(home), { from: T.url }), /requires a token/);
  } finally {
    await T.close();
  }
});

/** Runs `distillery vault …` in-process against `home` (see runCli). */
function cli(home: string, ...args: string[]): Promise<{ out: string; code: number }> {
  return runCli(registerVaultCommands, ['vault', ...args], { home });
}

test('CLI: vault verify points at repair; vault repair and vault pull print what they did', async () => {
  const { home } = await damagedHome();
  const v = await cli(home, 'verify');
  assert.equal(v.code, 1);
  assert.match(v.out, /distillery vault repair --from BUNDLE\|http:\/\/HOST:PORT/);
  const gamma = await importModel(makeFakeModel(join(tempDir(), 'gamma'), { tensors: { g: { shape: [4] } } }), { name: 'gamma' }, home);
  unlinkSync(blobPath(vaultLayout(home), fileOf(gamma, 'model.safetensors').sha256));
  const partial = await cli(home, 'repair', '--from', bundle);
  assert.equal(partial.code, 1);
  assert.match(partial.out, /repaired/);
  assert.match(partial.out, /STILL DAMAGED\s+gamma:1 model\.safetensors/);
  assert.match(partial.out, /: not in the bundle/);
  assert.match(partial.out, /1 blob\(s\) repaired from bundle .*models\.tar .*, 1 still damaged/);
  const json = JSON.parse((await cli(home, 'repair', 'alpha', '--from', M.url, '--json')).out);
  assert.equal(json.ok, true);
  const healthy = await cli(home, 'repair', 'alpha:1', '--from', M.url);
  assert.equal(healthy.code, 0);
  assert.match(healthy.out, /^nothing to repair: 1 model\(s\), \d+ blob\(s\) checked, all intact$/m);

  const fresh = freshHome();
  const p = await cli(fresh, 'pull', `${M.url}/alpha`);
  assert.equal(p.code, 0);
  assert.match(p.out, new RegExp(`^pulled alpha:1 from ${M.url}: .* in 7 file\\(s\\), digest ${alpha.digest.slice(0, 12)}$`, 'm'));
  const again = JSON.parse((await cli(fresh, 'pull', `${M.url}/alpha`, '--json')).out);
  assert.equal(again.model.status, 'present');
  assert.match((await cli(fresh, 'pull', `${M.url}/alpha`)).out, /already in the vault as alpha:1/);
  assert.match((await cli(fresh, 'pull', `${M.url}/beta`, '--as', 'alpha')).out, /^pulled beta:1 from .* as alpha:2: /m);
  assert.deepEqual(readFileSync(join(fresh, 'models', 'alpha', '1.json')), readFileSync(join(src, 'models', 'alpha', '1.json')));
});
