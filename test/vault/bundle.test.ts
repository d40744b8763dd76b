import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { open } from 'node:fs/promises';
import { Command } from 'commander';
import { importModel, listModels, verifyVault, type Manifest } from '../../src/vault/vault.js';
import { vaultLayout } from '../../src/vault/layout.js';
import { exportBundle, importBundle, readBundleIndex, BundleError, type ExportBundleHooks, type ImportBundleHooks } from '../../src/vault/bundle.js';
import { memberHeader, paxRecord, TarReader } from '../../src/vault/bundle-format.js';
import { registerBundleCommands } from '../../src/cli/bundle-commands.js';
import { UserError } from '../../src/core/errors.js';
import { freshHome, listTree, makeFakeModel, tempDir } from './helpers.js';
import { flipped, manifestFiles, readTar, sha256, truncated, twoModels, vaultState, writeTar, type RawMember } from './bundle-helpers.js';
import { runCli } from '../helpers/cli.js';

const hasTools = spawnSync('tar', ['--version']).status === 0 && spawnSync('sha256sum', ['--version']).status === 0;
const SMALL_CHUNK = { chunkSize: 64 << 10 };

/** A home with alpha (plus a 3 MB file) and beta sharing four blobs, and its bundle of both. */
async function exported(big = 3 << 20, exportHooks: ExportBundleHooks = SMALL_CHUNK): Promise<{ home: string; bundle: string; models: [Manifest, Manifest] }> {
  const home = freshHome();
  const models = await twoModels(home, big);
  const bundle = join(tempDir(), 'both.tar');
  await exportBundle(vaultLayout(home), ['alpha', 'beta:1'], bundle, {}, exportHooks);
  return { home, bundle, models };
}

async function refused(home: string, bundle: string, pattern: RegExp, hooks: ImportBundleHooks = {}): Promise<void> {
  const before = vaultState(home);
  await assert.rejects(importBundle(vaultLayout(home), bundle, {}, hooks), (e: unknown) => {
    assert.ok(e instanceof UserError, `expected a UserError, got ${(e as Error)?.stack ?? String(e)}`);
    assert.match(e.message, pattern);
    return true;
  });
  assert.deepEqual(vaultState(home), before, `vault unchanged after refusing ${bundle}`);
}

test('export two models sharing blobs, import into a fresh home: identical manifests, deduplicated blobs', async () => {
  const { home, bundle, models } = await exported();
  const [alpha, beta] = models;
  const unique = new Set([...alpha.files, ...beta.files].map((f) => f.sha256));
  assert.ok(unique.size < alpha.files.length + beta.files.length, 'the fixture shares blobs');

  // Member order: index, README, SHA256SUMS, manifests, blobs (each once).
  const { members } = readTar(bundle);
  const names = members.map((m) => m.name);
  assert.deepEqual(names.slice(0, 5), ['distillery-bundle.json', 'README.txt', 'SHA256SUMS', 'models/alpha/1.json', 'models/beta/1.json']);
  assert.deepEqual(names.slice(5).sort(), [...unique].map((h) => `blobs/sha256/${h}`).sort());
  assert.ok(members.every((m) => m.type === '0'));
  const index = await readBundleIndex(bundle);
  assert.equal(index.format, 'distillery-bundle');
  assert.equal(index.format_version, 1);
  assert.equal(index.distillery_version, JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')).version);
  assert.deepEqual(index.models.map((m) => [m.name, m.version, m.digest]), [['alpha', 1, alpha.digest], ['beta', 1, beta.digest]]);
  assert.deepEqual(index.blobs.map((b) => `blobs/sha256/${b.sha256}`), names.slice(5), 'index blobs in archive order');
  for (const b of index.blobs) assert.equal(members.find((m) => m.name.endsWith(b.sha256))!.size, b.size);
  // Manifests are stored byte for byte.
  assert.equal(members[3]!.data.toString('utf8'), readFileSync(join(home, 'models', 'alpha', '1.json'), 'utf8'));
  const readme = members[1]!.data.toString('utf8');
  assert.match(readme, /distillery vault import-bundle/);
  assert.match(readme, /sha256sum -c SHA256SUMS/);
  assert.match(readme, /alpha:1 .*mit/);

  const home2 = freshHome();
  const progress: number[] = [];
  const r = await importBundle(vaultLayout(home2), bundle, { onProgress: (p) => progress.push(p.bytesDone) }, SMALL_CHUNK);
  assert.deepEqual(r.models.map((m) => [m.original, m.ref, m.status]), [['alpha:1', 'alpha:1', 'imported'], ['beta:1', 'beta:1', 'imported']]);
  assert.equal(r.blobsStored, unique.size);
  assert.equal(r.blobsReused, 0);
  assert.equal(progress.at(-1), r.archiveBytes);
  assert.ok(progress.length > 40, 'progress while streaming the large blob');
  assert.deepEqual(manifestFiles(home2), manifestFiles(home), 'manifests identical, byte for byte');
  assert.deepEqual(listTree(join(home2, 'blobs', 'sha256')), listTree(join(home, 'blobs', 'sha256')), 'each blob stored once');
  const report = await verifyVault(undefined, undefined, home2);
  assert.equal(report.ok, true);
  assert.equal(report.models.length, 2);
  assert.deepEqual(listModels(undefined, home2).map((m) => m.digest), [alpha.digest, beta.digest]);
  assert.deepEqual(readdirSync(join(home2, 'blobs', 'tmp')), []);
  assert.deepEqual(readdirSync(join(home2, 'pending')), [], 'pending marker released');
});

test('system tar lists and extracts the bundle, and sha256sum -c passes (ustar and pax headers)', async (t) => {
  if (!hasTools) return t.skip('tar or sha256sum not installed');
  for (const forcePax of [false, true]) {
    const { bundle } = await exported(200_000, { ...SMALL_CHUNK, forcePax });
    const listed = spawnSync('tar', ['tf', bundle], { encoding: 'utf8' });
    assert.equal(listed.status, 0, listed.stderr);
    assert.deepEqual(listed.stdout.trim().split('\n'), (await expectedNames(bundle)));
    const dir = tempDir();
    const x = spawnSync('tar', ['xf', bundle, '-C', dir], { encoding: 'utf8' });
    assert.equal(x.status, 0, x.stderr);
    const c = spawnSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: dir, encoding: 'utf8' });
    assert.equal(c.status, 0, c.stdout + c.stderr);
    assert.equal(c.stdout.trim().split('\n').length, (await expectedNames(bundle)).length - 1);
    assert.ok(c.stdout.trim().split('\n').every((l) => l.endsWith(': OK')));
    // And the pax form imports too.
    const home2 = freshHome();
    assert.equal((await importBundle(vaultLayout(home2), bundle)).models.length, 2);
  }
});

async function expectedNames(bundle: string): Promise<string[]> {
  const index = await readBundleIndex(bundle);
  return ['distillery-bundle.json', 'README.txt', 'SHA256SUMS', ...index.models.map((m) => m.manifest), ...index.blobs.map((b) => `blobs/sha256/${b.sha256}`)];
}

test('pax records and headers for members of 8 GiB and more', async () => {
  assert.equal(paxRecord('size', '8589934592'), '19 size=8589934592\n');
  assert.equal(paxRecord('size', '1'), '9 size=1\n');
  for (let n = 1; n < 300; n++) {
    const r = paxRecord('path', 'x'.repeat(n));
    assert.equal(Buffer.byteLength(r), Number(r.split(' ')[0]), r);
  }
  const huge = 20 * 2 ** 30;
  const h = memberHeader(`blobs/sha256/${'a'.repeat(64)}`, huge, 0);
  assert.equal(h.length, 3 * 512, 'pax header, its data block, the ustar header');
  assert.equal(h.toString('latin1', 156, 157), 'x');
  assert.equal(memberHeader('x', 5, 0).length, 512);
  // The reader takes the size from the pax record.
  const file = join(tempDir(), 'huge-header.tar');
  writeFileSync(file, h);
  const fh = await open(file, 'r');
  try {
    const e = await new TarReader(fh, file).next();
    assert.equal(e?.name, `blobs/sha256/${'a'.repeat(64)}`);
    assert.equal(e?.size, huge);
    assert.equal(e?.dataOffset, 3 * 512);
  } finally {
    await fh.close();
  }
});

test('importing the same bundle twice: the second time everything is already present', async () => {
  const { bundle } = await exported(0);
  const home2 = freshHome();
  await importBundle(vaultLayout(home2), bundle);
  const before = listTree(home2);
  const again = await importBundle(vaultLayout(home2), bundle);
  assert.deepEqual(again.models.map((m) => [m.ref, m.status]), [['alpha:1', 'present'], ['beta:1', 'present']]);
  assert.equal(again.blobsStored, 0);
  assert.deepEqual(listTree(home2), before, 'nothing written');
});

test('name collisions: other content becomes the next version; same content elsewhere is present; --as renames', async () => {
  const { bundle, models } = await exported(0);
  const [alpha] = models;
  const home2 = freshHome();
  // home2 already has an "alpha" with other content, and beta's content under beta:1 and beta:2.
  await importModel(makeFakeModel(join(tempDir(), 'other'), { tensors: { q: { shape: [3] } } }), { name: 'alpha' }, home2);
  const betaSrc = makeFakeModel(join(tempDir(), 'beta'), { tensors: { w: { shape: [6, 6] } } });
  await importModel(betaSrc, { name: 'beta' }, home2);
  const r = await importBundle(vaultLayout(home2), bundle);
  assert.deepEqual(r.models.map((m) => [m.original, m.ref, m.status]), [['alpha:1', 'alpha:2', 'renumbered'], ['beta:1', 'beta:1', 'present']]);
  const m = JSON.parse(readFileSync(join(home2, 'models', 'alpha', '2.json'), 'utf8')) as Manifest;
  assert.deepEqual(m.source, { kind: 'bundle', path: bundle, original: 'alpha:1', original_source: alpha.source });
  for (const k of ['digest', 'created', 'files', 'lineage', 'license', 'architecture', 'parameters', 'details'] as const) assert.deepEqual(m[k], alpha[k], k);
  assert.equal((await verifyVault(undefined, undefined, home2)).ok, true);

  // Only a single-name bundle can be renamed.
  await assert.rejects(importBundle(vaultLayout(home2), bundle, { as: 'renamed' }), /--as needs a bundle of one model name/);
  const single = join(tempDir(), 'alpha.tar');
  await exportBundle(vaultLayout(home2), ['alpha:2'], single);
  const renamed = await importBundle(vaultLayout(home2), single, { as: 'renamed' });
  assert.deepEqual(renamed.models.map((x) => [x.original, x.ref, x.status]), [['alpha:2', 'renamed:2', 'renumbered']]);
  const again = await importBundle(vaultLayout(home2), single, { as: 'renamed' });
  assert.equal(again.models[0]!.status, 'present');
  await assert.rejects(importBundle(vaultLayout(home2), single, { as: 'Bad Name' }), /invalid model name/);
});

test('truncated at every member boundary and inside members: refused, vault unchanged', async () => {
  const { bundle } = await exported(0);
  const { members, end } = readTar(bundle);
  const size = readFileSync(bundle).length;
  const offsets = new Set<number>([0, 1, 511, size - 1, size - 512, end, end + 100]);
  for (const m of members) {
    for (const o of [m.headerOffset, m.headerOffset + 1, m.headerOffset + 300, m.dataOffset, m.dataOffset + 1, m.dataOffset + (m.size >> 1), m.dataOffset + m.size]) {
      if (o < size) offsets.add(o);
    }
  }
  // A home that already holds a model sharing blobs with the bundle: those must survive.
  const home = freshHome();
  await importModel(makeFakeModel(join(tempDir(), 'shared')), { name: 'resident' }, home);
  const tree = listTree(home);
  const dir = tempDir();
  let n = 0;
  for (const o of [...offsets].sort((a, b) => a - b)) {
    const cut = truncated(bundle, o, join(dir, `cut-${o}.tar`));
    const expect = o < 512 ? /not a Distillery bundle|bundle is truncated/ : /bundle is truncated: ended .* at byte \d+; the file is incomplete — copy it again/;
    // Up front (the file is too short for what its index lists): nothing at all is written.
    await refused(home, cut, expect);
    assert.deepEqual(listTree(home), tree, `nothing written for a cut at ${o}`);
    // While streaming (as if the file shrank during the import): blobs stored so far are removed again.
    await refused(home, cut, expect, { skipSizeCheck: true });
    n++;
  }
  assert.ok(n > 50, `${n} offsets tried`);
  // The precise message names the member and the byte.
  const blob = members.find((m) => m.name.startsWith('blobs/'))!;
  const cut = truncated(bundle, blob.dataOffset + 10, join(dir, 'named.tar'));
  for (const hooks of [{}, { skipSizeCheck: true }]) {
    await assert.rejects(importBundle(vaultLayout(home), cut, {}, hooks), (e: Error) => e.message.endsWith(`bundle is truncated: ended inside ${blob.name} at byte ${blob.dataOffset + 10}; the file is incomplete — copy it again`));
  }
  assert.deepEqual(listModels(undefined, home).map((m) => m.name), ['resident']);
});

test('one flipped byte in a blob, a manifest, the index, a header: refused with a clear message', async () => {
  const { bundle, models } = await exported(0);
  const { members } = readTar(bundle);
  const dir = tempDir();
  const home = freshHome();
  const at = (name: string) => members.find((m) => m.name === name)!;
  const shared = models[0].files.find((f) => f.path === 'tokenizer.json')!.sha256;
  const blob = at(`blobs/sha256/${shared}`);
  await refused(home, flipped(bundle, blob.dataOffset + 3, join(dir, 'blob.tar')), new RegExp(`blob ${shared} has sha256 [0-9a-f]{64}: its content was changed or corrupted \\(it holds alpha:1 tokenizer\\.json, beta:1 tokenizer\\.json\\)`));
  await refused(home, flipped(bundle, at('models/beta/1.json').dataOffset + 40, join(dir, 'manifest.tar')), /manifest models\/beta\/1\.json does not match the index/);
  await refused(home, flipped(bundle, at('distillery-bundle.json').dataOffset + 60, join(dir, 'index.tar')), /distillery-bundle\.json/);
  await refused(home, flipped(bundle, at('SHA256SUMS').dataOffset + 5, join(dir, 'sums.tar')), /SHA256SUMS/);
  await refused(home, flipped(bundle, at('README.txt').dataOffset + 5, join(dir, 'readme.tar')), /README\.txt was changed or corrupted/);
  await refused(home, flipped(bundle, blob.headerOffset + 20, join(dir, 'header.tar')), /tar header at byte \d+ .*has a bad checksum/);
  await refused(home, flipped(bundle, blob.headerOffset + 155, join(dir, 'cksum.tar')), /bad checksum/);
  await refused(home, flipped(bundle, blob.dataOffset + blob.size + 1, join(dir, 'padding.tar')), /non-zero padding/);
  await refused(home, flipped(bundle, readFileSync(bundle).length - 1, join(dir, 'end.tar')), /lone zero block|end of the archive/);
  // Any byte at all: every flip is refused and changes nothing.
  const size = readFileSync(bundle).length;
  let tried = 0;
  for (let o = 0; o < size; o += 61) {
    await refused(home, flipped(bundle, o, join(dir, `any-${o}.tar`)), /bundle|manifest/);
    tried++;
  }
  assert.ok(tried > 100);
  assert.deepEqual(vaultState(home).manifests, []);
});

test('a manifest consistent with the index but not with its own files is refused', async () => {
  const { bundle } = await exported(0);
  const { members } = readTar(bundle);
  const byName = new Map(members.map((m) => [m.name, m.data]));
  // Rewrite alpha's manifest (a file's sha256 changed, digest kept) and fix up the index and SHA256SUMS.
  const manifest = JSON.parse(byName.get('models/alpha/1.json')!.toString('utf8')) as Manifest;
  const victim = manifest.files.find((f) => f.path === 'extra/notes.txt')!;
  const other = manifest.files.find((f) => f.path === 'README.md')!;
  victim.sha256 = other.sha256;
  victim.size = other.size;
  const forged = Buffer.from(JSON.stringify(manifest, null, 2) + '\n');
  const index = JSON.parse(byName.get('distillery-bundle.json')!.toString('utf8'));
  const entry = index.models.find((m: { name: string }) => m.name === 'alpha');
  const oldSha = entry.manifest_sha256;
  entry.manifest_sha256 = sha256(forged);
  entry.manifest_size = forged.length;
  const indexBytes = Buffer.from(JSON.stringify(index, null, 2) + '\n');
  const sums = byName.get('SHA256SUMS')!.toString('utf8')
    .replace(/^[0-9a-f]{64}(?=  distillery-bundle\.json$)/m, sha256(indexBytes))
    .replace(oldSha, entry.manifest_sha256);
  const rebuilt = members.map((m) => ({
    name: m.name,
    data: m.name === 'distillery-bundle.json' ? indexBytes : m.name === 'SHA256SUMS' ? Buffer.from(sums) : m.name === 'models/alpha/1.json' ? forged : m.data,
  }));
  const file = writeTar(join(tempDir(), 'forged.tar'), rebuilt);
  await refused(freshHome(), file, /manifest models\/alpha\/1\.json: its digest does not match its file list/);
});

test('missing, duplicate, unexpected and misnamed members; not a bundle at all', async () => {
  const { bundle } = await exported(0);
  const { members } = readTar(bundle);
  const dir = tempDir();
  const home = freshHome();
  const plain = (list: RawMember[]) => list.map((m) => ({ name: m.name, data: Buffer.from(m.data) }));
  const blobs = members.filter((m) => m.name.startsWith('blobs/'));
  const last = blobs.at(-1)!;
  const middle = blobs[1]!;
  const make = (name: string, list: Array<{ name: string; data: Buffer }>) => writeTar(join(dir, name), list);

  await refused(home, make('no-last.tar', plain(members.slice(0, -1))), new RegExp(`bundle is incomplete: the archive ends without member ${last.name}`));
  await refused(home, make('no-middle.tar', plain(members.filter((m) => m !== middle))), new RegExp(`member ${middle.name} is missing`));
  const dup = plain(members);
  dup.splice(members.indexOf(middle) + 1, 0, { name: middle.name, data: Buffer.from(middle.data) });
  await refused(home, make('dup.tar', dup), new RegExp(`duplicate member "${middle.name}"`));
  await refused(home, make('dup-end.tar', [...plain(members), { name: last.name, data: Buffer.from(last.data) }]), /duplicate member .*\(after the last blob\)/);
  for (const evil of ['../../evil', '/etc/passwd', 'blobs/sha256/../../x', `blobs/sha256/${'0'.repeat(64)}`, 'models/alpha/1.json/../../x']) {
    const list = plain(members);
    list.splice(5, 0, { name: evil, data: Buffer.from('gotcha') });
    await refused(home, make('evil.tar', list), /unexpected member|is missing/);
    await refused(home, make('evil-end.tar', [...plain(members), { name: evil, data: Buffer.from('gotcha') }]), /unexpected member .*\(after the last blob\)/);
  }
  assert.ok(!existsSync(join(home, '..', 'evil')) && !existsSync(join(dir, '..', 'evil')));
  // A directory member is refused by type.
  const withDir = Buffer.concat([readFileSync(make('ok.tar', plain(members.slice(0, 3)))).subarray(0, -1024)]);
  const dirHeader = memberHeader('models/', 0, 0);
  dirHeader.write('5', 156, 'latin1');
  dirHeader.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of dirHeader) sum += b;
  dirHeader.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  writeFileSync(join(dir, 'dir.tar'), Buffer.concat([withDir, dirHeader, Buffer.alloc(1024)]));
  await refused(home, join(dir, 'dir.tar'), /unexpected member "models\/" of type directory/);

  // Not bundles.
  await refused(home, make('other.tar', [{ name: 'hello.txt', data: Buffer.from('hi') }]), /not a Distillery bundle \(a tar archive whose first member is "hello\.txt"/);
  writeFileSync(join(dir, 'empty'), '');
  await refused(home, join(dir, 'empty'), /not a Distillery bundle \(the file is empty\)/);
  writeFileSync(join(dir, 'text'), 'just some text\n'.repeat(100));
  await refused(home, join(dir, 'text'), /not a Distillery bundle \(not a POSIX tar archive\)/);
  await refused(home, make('empty.tar', []), /not a Distillery bundle \(an empty tar archive\)/);
  const wrongFormat = plain(members);
  wrongFormat[0] = { name: 'distillery-bundle.json', data: Buffer.from(JSON.stringify({ format: 'something-else' })) };
  await refused(home, make('format.tar', wrongFormat), /not a Distillery bundle \(format "something-else"\)/);
  const newer = plain(members);
  newer[0] = { name: 'distillery-bundle.json', data: Buffer.from(JSON.stringify({ ...JSON.parse(members[0]!.data.toString()), format_version: 2 })) };
  await assert.rejects(importBundle(vaultLayout(home), make('newer.tar', newer)), (e: UserError) => /format version 2 is not supported/.test(e.message) && /newer Distillery/.test(e.hint ?? ''));
  await assert.rejects(importBundle(vaultLayout(home), join(dir, 'nope.tar')), /bundle not found/);
  await assert.rejects(importBundle(vaultLayout(home), dir), /is a folder/);
  await assert.rejects(readBundleIndex(join(dir, 'text')), BundleError);
  assert.deepEqual(vaultState(home).blobs, []);
});

test('a failure midway removes the blobs this import stored, and only those', async () => {
  const { bundle, models } = await exported(0);
  const home = freshHome();
  await importModel(makeFakeModel(join(tempDir(), 'shared')), { name: 'resident' }, home);
  const before = vaultState(home);
  const seen: string[] = [];
  await assert.rejects(
    importBundle(vaultLayout(home), bundle, {}, {
      afterBlob: (sha, i) => {
        seen.push(sha);
        if (i === 3) throw new Error('simulated disk error');
      },
    }),
    /simulated disk error/,
  );
  assert.equal(seen.length, 4);
  assert.deepEqual(vaultState(home), before);
  // The shared blobs of "resident" were reused, not removed.
  assert.equal((await verifyVault(undefined, undefined, home)).ok, true);
  void models;
});

/** Runs importBundle in a child process that stops (forever) after the first chunk of blob `pauseAt`. */
function importUntilPaused(home: string, bundle: string, pauseAt: string): Promise<{ stored: string[]; pid: number }> {
  const bundleUrl = new URL('../../src/vault/bundle.js', import.meta.url).href;
  const layoutUrl = new URL('../../src/vault/layout.js', import.meta.url).href;
  const script = join(tempDir(), 'child.mjs');
  writeFileSync(script, `const { importBundle } = await import(${JSON.stringify(bundleUrl)});
const { vaultLayout } = await import(${JSON.stringify(layoutUrl)});
await importBundle(vaultLayout(${JSON.stringify(home)}), ${JSON.stringify(bundle)}, {}, {
  chunkSize: 64 << 10,
  afterBlob: (sha) => { process.stdout.write('stored ' + sha + '\\n'); },
  afterChunk: async (sha) => {
    if (sha === ${JSON.stringify(pauseAt)}) { process.stdout.write('paused\\n'); await new Promise(() => setInterval(() => {}, 1000)); }
  },
});
process.stdout.write('finished\\n');`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...process.execArgv, script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('paused\n')) child.kill('SIGKILL');
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL') return reject(new Error(`child ended with ${code}/${signal}: ${out}`));
      resolve({ stored: [...out.matchAll(/^stored ([0-9a-f]{64})$/gm)].map((m) => m[1]!), pid: child.pid! });
    });
  });
}

test('an import killed mid-blob (SIGKILL) resumes: stored blobs are reused, the partial temp file is swept', async () => {
  const { home, bundle, models } = await exported();
  const index = await readBundleIndex(bundle);
  const big = [...index.blobs].sort((a, b) => b.size - a.size)[0]!;
  const bigPos = index.blobs.indexOf(big);
  assert.ok(bigPos > 0, 'some blobs come before the large one');
  const home2 = freshHome();
  const { stored } = await importUntilPaused(home2, bundle, big.sha256);
  assert.deepEqual(stored, index.blobs.slice(0, bigPos).map((b) => b.sha256));
  // What a kill leaves: blobs stored so far (unreferenced), one partial temp file, a stale pending marker.
  assert.deepEqual(vaultState(home2).manifests, []);
  assert.equal(vaultState(home2).blobs.length, stored.length);
  assert.equal(vaultState(home2).temps.length, 1);
  assert.equal(vaultState(home2).pending.length, 1);

  const r = await importBundle(vaultLayout(home2), bundle, {}, SMALL_CHUNK);
  assert.equal(r.blobsReused, stored.length);
  assert.equal(r.blobsStored, index.blobs.length - stored.length);
  assert.deepEqual(r.models.map((m) => m.status), ['imported', 'imported']);
  assert.deepEqual(manifestFiles(home2), manifestFiles(home));
  assert.equal((await verifyVault(undefined, undefined, home2)).ok, true);
  assert.deepEqual(vaultState(home2).temps, [], 'the dead import\'s temp file was swept');
  void models;
});

test('export refuses missing or damaged blobs and leaves no file behind; existing output needs --force', async () => {
  const home = freshHome();
  const [alpha] = await twoModels(home, 100_000);
  const dir = tempDir();
  const out = join(dir, 'out.tar');
  const layout = vaultLayout(home);
  await assert.rejects(exportBundle(layout, [], out), /name at least one model/);
  await assert.rejects(exportBundle(layout, ['nope'], out), /no model named "nope"/);

  // Damaged in place (same size): found while streaming; the partial archive is removed.
  const big = alpha.files.find((f) => f.path === 'weights-extra.bin')!;
  const blob = join(home, 'blobs', 'sha256', big.sha256);
  chmodSync(blob, 0o644);
  const fd = openSync(blob, 'r+');
  writeSync(fd, Buffer.from([0x42]), 0, 1, 50_000);
  closeSync(fd);
  await assert.rejects(exportBundle(layout, ['alpha'], out, {}, SMALL_CHUNK), (e: UserError) => {
    assert.match(e.message, new RegExp(`cannot export alpha:1: blob ${big.sha256} is damaged: its content hashes to [0-9a-f]{64} \\(used by alpha:1 weights-extra\\.bin\\)`));
    assert.match(e.hint ?? '', /vault verify/);
    return true;
  });
  assert.deepEqual(readdirSync(dir), [], 'no partial file');

  // Missing: refused before writing anything; beta (which doesn't use it) still exports.
  unlinkSync(blob);
  await assert.rejects(exportBundle(layout, ['beta', 'alpha'], out), new RegExp(`cannot export alpha:1: blob ${big.sha256} is missing from the store`));
  assert.deepEqual(readdirSync(dir), []);
  writeFileSync(blob, Buffer.alloc(10));
  await assert.rejects(exportBundle(layout, ['alpha'], out), /has the wrong size \(10 bytes, expected 100000\)/);
  const r = await exportBundle(layout, ['beta', 'beta:1'], out);
  assert.deepEqual(r.models.map((m) => m.ref), ['beta:1'], 'a model named twice is exported once');
  await assert.rejects(exportBundle(layout, ['beta'], out), /already exists/);
  await exportBundle(layout, ['beta'], out, { force: true });
  await assert.rejects(exportBundle(layout, ['beta'], dir), /is a folder/);
  await assert.rejects(exportBundle(layout, ['beta'], join(dir, 'no', 'such', 'x.tar')), /does not exist/);
  assert.deepEqual(readdirSync(dir), ['out.tar']);
});

/** Runs `distillery vault …` in-process with the bundle commands (see runCli). */
function cli(home: string, ...args: string[]): Promise<{ out: string; err: string }> {
  return runCli((p) => registerBundleCommands(p.command('vault')), ['vault', ...args], { home });
}

test('CLI: export, show-bundle, import-bundle (text and --json), help with examples', async () => {
  const home = freshHome();
  await twoModels(home, 0);
  const file = join(tempDir(), 'models.tar');
  const exp = await cli(home, 'export', 'alpha', 'beta', '-o', file);
  assert.match(exp.out, /^exported alpha:1, beta:1 to /);
  assert.match(exp.out, /^2 model\(s\), \d+ file\(s\), .* in .* \(.*\/s\)$/m);
  assert.match(exp.err, /export/);
  const show = await cli(home, 'show-bundle', file);
  assert.match(show.out, /^alpha:1\s+6\s+/m);
  assert.equal(JSON.parse((await cli(home, 'show-bundle', file, '--json')).out).models.length, 2);

  const home2 = freshHome();
  mkdirSync(home2);
  const imp = await cli(home2, 'import-bundle', file);
  assert.match(imp.out, /^alpha:1\s+imported\s/m);
  assert.match(imp.out, /^2 model\(s\) imported: .* read in .* \(.*\/s\), \d+ blob\(s\) stored \(.*\), 0 already in the vault$/m);
  const again = JSON.parse((await cli(home2, 'import-bundle', file, '--json')).out);
  assert.deepEqual(again.models.map((m: { status: string }) => m.status), ['present', 'present']);
  const text = await cli(home2, 'import-bundle', file);
  assert.match(text.out, /^beta:1\s+already present/m);
  assert.match(text.out, /^0 model\(s\) imported, 2 already present/m);

  const program = new Command();
  registerBundleCommands(program.command('vault'));
  const vault = program.commands[0]!;
  assert.deepEqual(vault.commands.map((c) => c.name()), ['export', 'import-bundle', 'show-bundle']);
  for (const c of vault.commands) {
    assert.ok(c.description().length > 10, c.name());
    let help = '';
    c.configureOutput({ writeOut: (s) => (help += s) });
    c.outputHelp();
    assert.match(help, /Example/, c.name());
  }
});
