import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../../src/core/errors.js';
import { startMirror, type MirrorHandle } from '../../src/mirror/server.js';
import { blobPath, vaultLayout } from '../../src/vault/layout.js';
import type { Manifest } from '../../src/vault/manifest.js';
import { parseMirrorBaseUrl, parseMirrorModelUrl, partPath, pullModel, type PullResult } from '../../src/vault/pull.js';
import { sweepDeadTemps } from '../../src/vault/receive.js';
import { sweepStaleTemps } from '../../src/vault/store.js';
import { importModel, registerModel, verifyVault } from '../../src/vault/vault.js';
import { manifestFiles, twoModels, vaultState } from './bundle-helpers.js';
import { freshHome, makeFakeModel, tempDir } from './helpers.js';

/**
 * `vault pull`: a model copied from another vault's mirror, byte for byte, each blob verified, resumable,
 * published only when complete and by the same rules as a bundle import.
 */

const CHILD = join(fileURLToPath(new URL('.', import.meta.url)), 'pull-child.js');
const BIG = 3_000_000;
const TOKEN = 'pull-test-token-0123456789';

let src = '';
let alpha: Manifest;
let beta: Manifest;
let child: Manifest; // alpha-ssd: lineage parent alpha:1
let M: MirrorHandle;
const log: string[] = [];
const FAST = { retryDelayMs: 10 };

before(async () => {
  src = freshHome();
  [alpha, beta] = await twoModels(src, BIG);
  child = await registerModel(makeFakeModel(join(tempDir(), 'kid'), { tokenizer: '{"kid": 1}' }), {
    name: 'alpha-ssd', lineage: { parent: { ref: 'alpha:1', digest: alpha.digest }, run_id: 'run-1', recipe: { name: 'ssd' }, evaluation: {} },
  }, src);
  M = await startMirror({ home: src, port: 0, log: (l) => log.push(l) });
});

after(async () => {
  await M?.close();
});

const bigBlob = () => alpha.files.find((f) => f.path === 'weights-extra.bin')!.sha256;
/** The server logs a request when its answer is closed, a moment after the client has read it. */
const settle = () => new Promise((r) => setTimeout(r, 100));
const blobRequests = (lines: string[], from = 0) => lines.slice(from).filter((l) => l.startsWith('GET /.distillery/v1/blobs/'));
const pull = (home: string, url: string, opts = {}, hooks = {}) => pullModel(vaultLayout(home), url, opts, { ...FAST, ...hooks });

/** A server in front of `target` that can rewrite answers (whole bodies are buffered; the test models are small). */
async function proxy(
  target: string,
  edit: (path: string, status: number, headers: IncomingHttpHeaders, body: Buffer) => { status?: number; headers?: IncomingHttpHeaders; body?: Buffer },
  reqHeaders: (h: IncomingHttpHeaders) => IncomingHttpHeaders = (h) => h,
): Promise<{ url: string; close: () => Promise<void>; seen: Array<{ path: string; range?: string }> }> {
  const t = new URL(target);
  const seen: Array<{ path: string; range?: string }> = [];
  const server: Server = createServer((req, res) => {
    seen.push({ path: req.url!, range: req.headers.range });
    const up = request({ host: t.hostname, port: t.port, path: req.url, method: req.method, headers: { ...reqHeaders(req.headers), host: t.host } }, (r) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => {
        const out = edit(req.url!, r.statusCode!, r.headers, Buffer.concat(chunks));
        const body = out.body ?? Buffer.concat(chunks);
        const headers = { ...(out.headers ?? r.headers), 'content-length': String(body.length) };
        delete headers['transfer-encoding'];
        res.writeHead(out.status ?? r.statusCode!, headers as unknown as Record<string, string>);
        res.end(body);
      });
    });
    up.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => new Promise<void>((r) => {
      server.close(() => r());
      server.closeAllConnections();
    }),
  };
}

test('pulling two models that share blobs: manifests byte-identical, verify ok, each blob fetched once', async () => {
  const home = freshHome();
  const from = log.length;
  const a = await pull(home, `${M.url}/alpha`);
  assert.equal(a.model.status, 'imported');
  assert.equal(a.model.ref, 'alpha:1');
  assert.equal(a.blobsDownloaded, new Set(alpha.files.map((f) => f.sha256)).size);
  assert.equal(a.bytesDownloaded, alpha.files.reduce((s, f) => s + f.size, 0) - 0);
  assert.equal(a.parent, null);
  const b = await pull(home, `${M.url}/beta:1`);
  assert.equal(b.model.ref, 'beta:1');
  assert.ok(b.blobsReused >= 3, `shared blobs reused (${b.blobsReused})`);
  assert.equal(b.blobsDownloaded + b.blobsReused, new Set(beta.files.map((f) => f.sha256)).size);

  const got = manifestFiles(home);
  const want = manifestFiles(src);
  assert.deepEqual(got, { 'alpha/1.json': want['alpha/1.json'], 'beta/1.json': want['beta/1.json'] }, 'byte-identical manifests');
  assert.equal((await verifyVault(undefined, undefined, home)).ok, true);
  await settle();
  const requested = blobRequests(log, from).map((l) => l.split(' ')[1]!.split('/').pop()!);
  assert.equal(requested.length, new Set(requested).size, 'no blob fetched twice');
  assert.deepEqual(new Set(requested), new Set([...alpha.files, ...beta.files].map((f) => f.sha256)));
  assert.ok(blobRequests(log, from).every((l) => / 200 /.test(l)));
  const st = vaultState(home);
  assert.deepEqual([st.temps, st.pending], [[], []], 'no temp file, lock or marker left');
  assert.equal(statSync(blobPath(vaultLayout(home), bigBlob())).mode & 0o777, 0o444);

  // Again: already present, nothing downloaded.
  const before = log.length;
  const again = await pull(home, `${M.url}/alpha:1`);
  assert.equal(again.model.status, 'present');
  assert.equal(again.model.ref, 'alpha:1');
  await settle();
  assert.equal(blobRequests(log, before).length, 0);
});

test('name collisions become the next version; --as stores under another name; source records the mirror', async () => {
  const home = freshHome();
  await importModel(makeFakeModel(join(tempDir(), 'other'), { tensors: { q: { shape: [3] } } }), { name: 'alpha' }, home);
  const r = await pull(home, `${M.url}/alpha`);
  assert.deepEqual([r.model.original, r.model.ref, r.model.status], ['alpha:1', 'alpha:2', 'renumbered']);
  const m = JSON.parse(readFileSync(join(home, 'models', 'alpha', '2.json'), 'utf8')) as Manifest;
  assert.deepEqual(m.source, { kind: 'mirror', url: M.url, original: 'alpha:1', original_source: alpha.source });
  for (const k of ['digest', 'created', 'files', 'lineage', 'license', 'architecture', 'parameters', 'details'] as const) assert.deepEqual(m[k], alpha[k], k);

  const as = await pull(home, `${M.url}/beta`, { as: 'gamma' });
  assert.deepEqual([as.model.original, as.model.ref, as.model.status], ['beta:1', 'gamma:1', 'renumbered']);
  assert.equal((JSON.parse(readFileSync(join(home, 'models', 'gamma', '1.json'), 'utf8')) as Manifest).source.kind, 'mirror');
  assert.equal((await pull(home, `${M.url}/beta`, { as: 'gamma' })).model.status, 'present');
  await assert.rejects(pull(home, `${M.url}/beta`, { as: 'Bad Name' }), /invalid model name/);
  assert.equal((await verifyVault(undefined, undefined, home)).ok, true);
});

test('lineage parent: reported with the command to pull it when missing here', async () => {
  const home = freshHome();
  const r = await pull(home, `${M.url}/alpha-ssd`);
  assert.equal(r.model.ref, 'alpha-ssd:1');
  assert.deepEqual(r.parent, { ref: 'alpha:1', digest: alpha.digest, local: null, onMirror: 'alpha:1', command: `distillery vault pull ${M.url}/alpha:1` });
  await pull(home, r.parent!.command!.split(' ').pop()!);
  const again = await pull(home, `${M.url}/alpha-ssd`);
  assert.equal(again.model.status, 'present');
  assert.equal(again.parent?.local, 'alpha:1');
  assert.equal(child.lineage?.parent.digest, alpha.digest);
});

test('tampered answers are refused and nothing is published or left behind', async () => {
  const big = bigBlob();
  const cases: Array<[string, Parameters<typeof proxy>[1], RegExp]> = [
    ['a blob with one byte changed', (path, status, headers, body) => {
      if (!path.endsWith(big)) return {};
      const b = Buffer.from(body);
      b[b.length >> 1] = b[b.length >> 1]! ^ 1;
      return { body: b };
    }, new RegExp(`the mirror sent blob ${big} \\(alpha:1 weights-extra\\.bin\\) with sha256 [0-9a-f]{64}: its content was changed or corrupted`)],
    ['a blob with extra bytes', (path, status, headers, body) => (path.endsWith(big) ? { body: Buffer.concat([body, Buffer.from('x')]) } : {}), /sent more than the 3000000 bytes/],
    ['a different announced digest', (path, status, headers) => (path.includes('/models/') ? { headers: { ...headers, 'x-distillery-digest': 'f'.repeat(64) } } : {}), /but the mirror announced/],
    ['a manifest whose file list was edited', (path, status, headers, body) => {
      if (!path.includes('/models/')) return {};
      const m = JSON.parse(body.toString()) as Manifest;
      m.files[0]!.sha256 = 'e'.repeat(64);
      return { body: Buffer.from(JSON.stringify(m)) };
    }, /digest does not match its file list/],
    ['another model\'s manifest', (path, status, headers, body) => (path.includes('/models/') ? { body: readFileSync(join(src, 'models', 'beta', '1.json')) } : {}), /sent the manifest of beta:1/],
    ['a manifest that is not JSON', (path, status, headers, body) => (path.includes('/models/') ? { body: body.subarray(0, 40) } : {}), /not valid JSON/],
  ];
  for (const [what, edit, re] of cases) {
    const p = await proxy(M.url, edit);
    const home = freshHome();
    await importModel(makeFakeModel(join(tempDir(), 'resident')), { name: 'resident' }, home);
    const before = vaultState(home);
    try {
      await assert.rejects(pull(home, `${p.url}/alpha`), (e: unknown) => e instanceof UserError && re.test(e.message), what);
    } finally {
      await p.close();
    }
    assert.deepEqual(vaultState(home), before, `${what}: the vault is unchanged`);
  }
});

test('a cut connection is resumed in the same call with a Range request', async () => {
  let cuts = 1;
  const logC: string[] = [];
  const C = await startMirror({
    home: src, port: 0, log: (l) => logC.push(l),
    testHooks: { cutBodyAfter: (label) => (label === 'alpha:1 weights-extra.bin' && cuts-- > 0 ? 1_000_000 : undefined) },
  });
  try {
    const home = freshHome();
    const r = await pull(home, `${C.url}/alpha`);
    assert.equal(r.model.status, 'imported');
    await settle();
    const big = blobRequests(logC).filter((l) => l.includes(bigBlob()));
    assert.equal(big.length, 2, big.join('\n'));
    assert.match(big[0]!, / 200 .*aborted$/);
    assert.match(big[1]!, / 206 /, 'the second request resumed with Range');
    assert.ok(r.bytesResumed > 0 && r.bytesResumed <= 1_000_000, `resumed after ${r.bytesResumed}`);
    assert.equal((await verifyVault(undefined, undefined, home)).ok, true);
  } finally {
    await C.close();
  }
});

test('an interrupted pull keeps its partial file; running it again resumes from it with Range', async () => {
  const logC: string[] = [];
  const C = await startMirror({
    home: src, port: 0, log: (l) => logC.push(l),
    testHooks: { cutBodyAfter: (label) => (label === 'alpha:1 weights-extra.bin' ? 1_000_000 : undefined) },
  });
  try {
    const home = freshHome();
    await assert.rejects(
      pull(home, `${C.url}/alpha`, {}, { maxAttempts: 1 }),
      (e: unknown) => e instanceof UserError && /downloading blob [0-9a-f]{64} \(alpha:1 weights-extra\.bin\) .* failed after 1 attempt/.test(e.message) && /resumes/.test(e.hint ?? ''),
    );
    assert.equal(existsSync(join(home, 'models')), false, 'nothing published');
    const part = partPath(vaultLayout(home), bigBlob());
    const kept = statSync(part).size;
    assert.ok(kept > 0 && kept <= 1_000_000, `partial file kept (${kept} bytes)`);
    assert.deepEqual(readdirSync(join(home, 'blobs', 'tmp')), [`pull-${bigBlob()}.part`], 'lock released');
    assert.deepEqual(readdirSync(join(home, 'pending')), [], 'marker released');

    // The sweeps of other imports leave a young partial file alone.
    sweepDeadTemps(vaultLayout(home));
    sweepStaleTemps(vaultLayout(home));
    assert.ok(existsSync(part));

    const from = logC.length;
    const r = await pull(home, `${C.url}/alpha`);
    assert.equal(r.model.ref, 'alpha:1');
    assert.equal(r.bytesResumed, kept);
    await settle();
    const big = blobRequests(logC, from);
    assert.equal(big.length, 1, 'only the unfinished blob is fetched again');
    assert.match(big[0]!, new RegExp(`^GET /.distillery/v1/blobs/${bigBlob()} 206 ${BIG - kept}B`));
    assert.equal((await verifyVault(undefined, undefined, home)).ok, true);
    assert.equal(existsSync(part), false);
  } finally {
    await C.close();
  }
});

test('a pull killed mid-blob (SIGKILL) resumes from its partial file', async () => {
  const home = freshHome();
  const out = await new Promise<string>((resolve, reject) => {
    const p = spawn(process.execPath, [CHILD, home, `${M.url}/alpha`, bigBlob(), '1000000'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => {
      text += d.toString();
      if (text.includes('stopped\n')) p.kill('SIGKILL');
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('exit', (code, signal) => (signal === 'SIGKILL' ? resolve(text) : reject(new Error(`child exited ${code}: ${err}`))));
  });
  assert.match(out, /stopped/);
  const part = partPath(vaultLayout(home), bigBlob());
  const kept = statSync(part).size;
  assert.ok(kept >= 1_000_000 && kept < BIG, `partial file survived the kill (${kept} bytes)`);
  assert.ok(existsSync(join(home, 'blobs', 'tmp', `pull-${bigBlob()}.lock`)), 'the dead process\'s lock is still there');
  const from = log.length;
  const r = await pull(home, `${M.url}/alpha`);
  assert.equal(r.model.status, 'imported');
  assert.equal(r.bytesResumed, kept);
  await settle();
  assert.match(blobRequests(log, from).find((l) => l.includes(bigBlob()))!, / 206 /);
  assert.equal((await verifyVault(undefined, undefined, home)).ok, true);
  assert.deepEqual(readdirSync(join(home, 'blobs', 'tmp')), []);
});

test('a server that ignores Range (200) is read from the start; a bad partial file is replaced', async () => {
  const noRange = await proxy(M.url, () => ({}), (h) => {
    const { range: _drop, ...rest } = h;
    return rest;
  });
  try {
    const home = freshHome();
    const good = readFileSync(blobPath(vaultLayout(src), bigBlob()));
    mkdirSync(join(home, 'blobs', 'tmp'), { recursive: true });
    writeFileSync(partPath(vaultLayout(home), bigBlob()), good.subarray(0, 500_000));
    const r = await pull(home, `${noRange.url}/alpha`);
    assert.equal(r.model.status, 'imported');
    assert.equal(r.bytesResumed, 0, 'started over');
    assert.ok(noRange.seen.some((s) => s.range === `bytes=500000-`), 'it asked for a range');
    assert.equal((await verifyVault(undefined, undefined, home)).ok, true);
  } finally {
    await noRange.close();
  }
  // A partial file whose bytes are wrong (e.g. written before a power cut) fails the hash once, then is fetched whole.
  const home = freshHome();
  mkdirSync(join(home, 'blobs', 'tmp'), { recursive: true });
  writeFileSync(partPath(vaultLayout(home), bigBlob()), Buffer.alloc(400_000, 7));
  const from = log.length;
  const r = await pull(home, `${M.url}/alpha`);
  assert.equal(r.model.status, 'imported');
  await settle();
  const big = blobRequests(log, from).filter((l) => l.includes(bigBlob()));
  assert.deepEqual(big.map((l) => l.split(' ')[2]), ['206', '200']);
  assert.equal((await verifyVault(undefined, undefined, home)).ok, true);
});

test('tokens: a clear 401 without or with a wrong one; works with --token or the environment', async () => {
  const T = await startMirror({ home: src, port: 0, token: TOKEN });
  const saved = process.env.DISTILLERY_MIRROR_TOKEN;
  try {
    delete process.env.DISTILLERY_MIRROR_TOKEN;
    const home = freshHome();
    await assert.rejects(pull(home, `${T.url}/beta`), (e: unknown) =>
      e instanceof UserError && /the mirror at http:\/\/127\.0\.0\.1:\d+ requires a token \(401/.test(e.message) && /--token/.test(e.hint ?? '') && /DISTILLERY_MIRROR_TOKEN/.test(e.hint ?? ''));
    await assert.rejects(pull(home, `${T.url}/beta`, { token: 'wrong-token-wrong-token' }), /refused the token/);
    assert.equal(existsSync(join(home, 'models')), false, 'nothing written');
    assert.equal((await pull(home, `${T.url}/beta`, { token: TOKEN })).model.ref, 'beta:1');
    process.env.DISTILLERY_MIRROR_TOKEN = TOKEN;
    assert.equal((await pull(home, `${T.url}/alpha`)).model.ref, 'alpha:1');
  } finally {
    if (saved === undefined) delete process.env.DISTILLERY_MIRROR_TOKEN;
    else process.env.DISTILLERY_MIRROR_TOKEN = saved;
    await T.close();
  }
});

test('URLs are parsed strictly, with messages that show the right form', async () => {
  assert.deepEqual(parseMirrorModelUrl('http://127.0.0.1:8470/qwen3-0.6b'), { base: 'http://127.0.0.1:8470', name: 'qwen3-0.6b', version: null });
  assert.deepEqual(parseMirrorModelUrl('https://Gpu-Box:8443/m:12'), { base: 'https://gpu-box:8443', name: 'm', version: 12 });
  assert.deepEqual(parseMirrorModelUrl('HTTP://host:80/m'), { base: 'http://host', name: 'm', version: null });
  assert.deepEqual(parseMirrorModelUrl('http://[::1]:8470/m:1'), { base: 'http://[::1]:8470', name: 'm', version: 1 });
  const bad: Array<[string, RegExp]> = [
    ['qwen3', /does not start with http:\/\//],
    ['127.0.0.1:8470/qwen3', /does not start with http:\/\//],
    ['ftp://host/qwen3', /only http:\/\/ and https:\/\//],
    ['http://host:8470', /names no model/],
    ['http://host:8470/', /names no model/],
    ['http://host:8470/org/qwen3', /path must be \/NAME or \/NAME:VERSION/],
    ['http://host:8470/qwen3/', /path must be/],
    ['http://user:pw@host:8470/qwen3', /pass --token/],
    ['http://host:8470/qwen3?rev=2', /query/],
    ['http://host:8470/qwen3#x', /fragment/],
    ['http://host:8470/Qwen3', /not a model name/],
    ['http://host:8470/..', /not a model name/],
    ['http://host:8470/%2e%2e', /not a model name/],
    ['http://host:8470/qwen3:0', /version "0" is not a positive integer/],
    ['http://host:8470/qwen3:v2', /version "v2" is not/],
    ['http://host:8470/qwen3:1:2', /version "1:2" is not/],
    ['http://host:99999/qwen3', /not a valid host/],
    ['http:///qwen3', /no host/],
  ];
  for (const [url, re] of bad) {
    assert.throws(() => parseMirrorModelUrl(url), (e: unknown) => e instanceof UserError && re.test(e.message) && /http:\/\/HOST:PORT\/NAME/.test(e.hint ?? ''), url);
  }
  assert.equal(parseMirrorBaseUrl('http://h:1/'), 'http://h:1');
  assert.throws(() => parseMirrorBaseUrl('http://h:1/qwen3'), /has a path/);
  await assert.rejects(pullModel(vaultLayout(freshHome()), 'nope'), /not a mirror URL/);
});

test('unreachable mirrors, other servers and unknown models get clear messages', async () => {
  const home = freshHome();
  // A port nothing listens on.
  const dead = createServer();
  await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
  const port = (dead.address() as AddressInfo).port;
  await new Promise<void>((r) => dead.close(() => r()));
  await assert.rejects(pull(home, `http://127.0.0.1:${port}/alpha`), (e: unknown) =>
    e instanceof UserError && /cannot reach the mirror at http:\/\/127\.0\.0\.1:\d+: connection refused/.test(e.message) && /distillery mirror/.test(e.hint ?? ''));
  // Some other HTTP server.
  const other = createServer((req, res) => {
    res.statusCode = 404;
    res.end('not found');
  });
  await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
  try {
    await assert.rejects(pull(home, `http://127.0.0.1:${(other.address() as AddressInfo).port}/alpha`), /is not a Distillery mirror with the vault API \(404/);
  } finally {
    await new Promise<void>((r) => other.close(() => r()));
  }
  await assert.rejects(pull(home, `${M.url}/nope`), (e: unknown) =>
    e instanceof UserError && /has no model nope/.test(e.message) && /models there: alpha, alpha-ssd, beta/.test(e.hint ?? ''));
  await assert.rejects(pull(home, `${M.url}/alpha:7`), /has no model alpha:7 \(alpha has no version "7"/);
  assert.equal(existsSync(join(home, 'models')), false);
});

test('a damaged blob in this vault is replaced by the pulled copy when the model is renumbered', async () => {
  // The store already has the blob but with the wrong size: it is downloaded again (and so repaired).
  const home = freshHome();
  const r1: PullResult = await pull(home, `${M.url}/beta`);
  assert.equal(r1.model.ref, 'beta:1');
  const w = beta.files.find((f) => f.path === 'model.safetensors')!;
  const p = blobPath(vaultLayout(home), w.sha256);
  chmodSync(p, 0o644);
  writeFileSync(p, 'broken');
  const r2 = await pull(home, `${M.url}/beta`, { as: 'beta-copy' });
  assert.equal(r2.blobsDownloaded, 1);
  assert.equal((await verifyVault(undefined, undefined, home)).ok, true);
});
