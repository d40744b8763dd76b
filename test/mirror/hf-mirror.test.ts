import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, realpathSync, unlinkSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { packageRoot } from '../../src/core/paths.js';
import { importModel, type Manifest } from '../../src/vault/vault.js';
import { blobPath, vaultLayout } from '../../src/vault/layout.js';
import { startMirror, type MirrorHandle } from '../../src/mirror/server.js';
import { freshHome, makeFakeModel, tempDir } from '../vault/helpers.js';
import {
  HF_CLI, PY_MISSING, addGgufModel, fakeGguf, gitBlobSha1, hfEnv, makeBigFakeModel, rawRequest, run, runPython, sha256,
} from './helpers.js';

/**
 * Conformance of `distillery mirror` with the clients it claims to serve: the real huggingface_hub client
 * from engine/.venv (`hf download`, snapshot_download, hf_hub_download), and llama.cpp's documented request
 * sequence replayed with fetch (no llama.cpp binary is available here).
 */

const R = '0123456789abcdef0123456789abcdef01234567'; // the "original" HF commit of tiny:2 / Org/Tiny
const TOKEN = `hf_${'k'.repeat(40)}`;
const LLAMA_UA = 'llama-cpp/b6000';

let home = '';
let srcV1 = '';
let srcV2 = '';
let tinyV1: Manifest;
let tinyV2: Manifest;
let gguf: Manifest;
let ggufFiles: Record<string, Buffer> = {};
let A: MirrorHandle; // plain
let B: MirrorHandle; // token
let C: MirrorHandle; // tiny tree pages + a cut connection
const logA: string[] = [];
const warnA: string[] = [];
const logC: string[] = [];
let cutsLeft = 1;
const CUT_AT = 11_000_000;

const commitV1 = () => tinyV1.digest.slice(0, 40);

before(async () => {
  home = freshHome();
  srcV1 = makeBigFakeModel(join(tempDir(), 'v1'), { notes: 'version one\n', mb: 2 });
  // Over 10 MiB: huggingface_hub reads bodies in 10 MiB chunks, and only resumes (Range) past the first one.
  srcV2 = makeBigFakeModel(join(tempDir(), 'v2'), { notes: 'version two\n', mb: 12 });
  tinyV1 = await importModel(srcV1, { name: 'tiny' }, home);
  tinyV2 = await importModel(srcV2, { name: 'tiny', source: { kind: 'hf-cache', repo_id: 'Org/Tiny', revision: R } }, home);
  ggufFiles = {
    'README.md': Buffer.from('---\nlicense: mit\n---\n# tiny gguf\n'),
    'tinygguf-Q8_0.gguf': fakeGguf(300_000),
    'tinygguf-Q4_K_M.gguf': fakeGguf(200_000),
    'mmproj-tinygguf-F16.gguf': fakeGguf(50_000),
  };
  gguf = await addGgufModel(home, 'tinygguf', ggufFiles);
  A = await startMirror({ home, port: 0, log: (l) => logA.push(l), warn: (l) => warnA.push(l) });
  B = await startMirror({ home, port: 0, token: TOKEN });
  C = await startMirror({
    home, port: 0, treePageSize: 2, log: (l) => logC.push(l),
    testHooks: { cutBodyAfter: (label) => (label === 'tiny:2 model.safetensors' && cutsLeft-- > 0 ? CUT_AT : undefined) },
  });
});

after(async () => {
  await Promise.all([A?.close(), B?.close(), C?.close()]);
});

const file = (src: string, path: string) => readFileSync(join(src, ...path.split('/')));
const json = async (r: Response) => JSON.parse(await r.text()) as any;

test('model info, refs and tree listings', async () => {
  const info = await json(await fetch(`${A.url}/api/models/tiny`));
  assert.equal(info.id, 'tiny');
  assert.equal(info.sha, R);
  assert.deepEqual(info.siblings.map((s: { rfilename: string }) => s.rfilename), tinyV2.files.map((f) => f.path).sort());
  assert.equal(info.distillery.ref, 'tiny:2');

  assert.equal((await json(await fetch(`${A.url}/api/models/distillery/tiny/revision/v1`))).sha, commitV1());
  assert.equal((await json(await fetch(`${A.url}/api/models/tiny/revision/${commitV1()}`))).sha, commitV1());
  const org = await json(await fetch(`${A.url}/api/models/Org/Tiny`));
  assert.equal(org.id, 'Org/Tiny');
  assert.equal(org.sha, R);
  assert.equal((await fetch(`${A.url}/api/models/org/tiny`)).status, 200, 'repo ids are case-insensitive, as on the Hub');

  const withBlobs = await json(await fetch(`${A.url}/api/models/tiny?blobs=true`));
  const cfg = withBlobs.siblings.find((s: { rfilename: string }) => s.rfilename === 'config.json');
  assert.equal(cfg.blobId, gitBlobSha1(file(srcV2, 'config.json')));
  assert.equal(cfg.lfs, undefined);
  const st = withBlobs.siblings.find((s: { rfilename: string }) => s.rfilename === 'model.safetensors');
  assert.equal(st.lfs.sha256, sha256(file(srcV2, 'model.safetensors')));

  const refs = await json(await fetch(`${A.url}/api/models/distillery/tiny/refs`));
  assert.deepEqual(refs.branches, [{ name: 'main', ref: 'refs/heads/main', targetCommit: R }]);
  assert.deepEqual(refs.tags.map((t: { name: string; targetCommit: string }) => [t.name, t.targetCommit]), [['v1', commitV1()], ['v2', R]]);

  const treeRes = await fetch(`${A.url}/api/models/tiny/tree/main?recursive=true&expand=false`);
  assert.equal(treeRes.headers.get('link'), null);
  const tree = await json(treeRes);
  const byPath = new Map(tree.map((e: { path: string }) => [e.path, e]));
  assert.deepEqual([...byPath.keys()], ['README.md', 'config.json', 'extra', 'extra/notes.txt', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  const weights = file(srcV2, 'model.safetensors');
  const pointer = Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(weights)}\nsize ${weights.length}\n`);
  assert.deepEqual(byPath.get('model.safetensors'), {
    type: 'file', oid: gitBlobSha1(pointer), size: weights.length, lfs: { oid: sha256(weights), size: weights.length, pointerSize: pointer.length }, path: 'model.safetensors',
  });
  assert.deepEqual(byPath.get('config.json'), { type: 'file', oid: gitBlobSha1(file(srcV2, 'config.json')), size: file(srcV2, 'config.json').length, path: 'config.json' });
  assert.equal((byPath.get('extra') as { type: string }).type, 'directory');
  assert.ok(!tree.some((e: { xetHash?: string }) => 'xetHash' in e));

  const top = await json(await fetch(`${A.url}/api/models/tiny/tree/main`));
  assert.deepEqual(top.map((e: { path: string }) => e.path), ['README.md', 'config.json', 'extra', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  const sub = await json(await fetch(`${A.url}/api/models/tiny/tree/v1/extra`));
  assert.deepEqual(sub.map((e: { path: string }) => e.path), ['extra/notes.txt']);
  const missingDir = await fetch(`${A.url}/api/models/tiny/tree/main/nope`);
  assert.equal(missingDir.status, 404);
  assert.equal(missingDir.headers.get('x-error-code'), 'EntryNotFound');

  const list = await json(await fetch(`${A.url}/api/models`));
  assert.deepEqual(list.map((m: { id: string }) => m.id), ['distillery/tiny', 'distillery/tinygguf', 'Org/Tiny']);

  // Paging: every page links the next with an absolute URL; together they are the full listing.
  const paged: unknown[] = [];
  let next: string | null = `${C.url}/api/models/tiny/tree/main?recursive=true`;
  let pages = 0;
  while (next) {
    const r: Response = await fetch(next);
    paged.push(...(await json(r)));
    next = /<([^>]+)>;\s*rel="next"/.exec(r.headers.get('link') ?? '')?.[1] ?? null;
    pages++;
  }
  assert.equal(pages, 4);
  assert.deepEqual(paged, tree);
});

test('resolve: HEAD and GET carry what the Hub client needs, and no Xet headers', async () => {
  const cfgBytes = file(srcV2, 'config.json');
  const head = await fetch(`${A.url}/tiny/resolve/main/config.json`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('etag'), `"${gitBlobSha1(cfgBytes)}"`);
  assert.equal(head.headers.get('x-repo-commit'), R);
  assert.equal(head.headers.get('content-length'), String(cfgBytes.length));
  assert.equal(head.headers.get('accept-ranges'), 'bytes');
  assert.equal(head.headers.get('x-linked-etag'), null);

  const weights = file(srcV2, 'model.safetensors');
  const wh = await fetch(`${A.url}/Org/Tiny/resolve/main/model.safetensors`, { method: 'HEAD' });
  assert.equal(wh.headers.get('etag'), `"${sha256(weights)}"`);
  assert.equal(wh.headers.get('x-linked-etag'), `"${sha256(weights)}"`);
  assert.equal(wh.headers.get('x-linked-size'), String(weights.length));
  for (const r of [head, wh]) {
    assert.deepEqual([...r.headers.keys()].filter((k) => k.startsWith('x-xet') || k === 'link'), []);
  }

  assert.deepEqual(Buffer.from(await (await fetch(`${A.url}/distillery/tiny/resolve/main/model.safetensors`)).arrayBuffer()), weights);
  const notes = async (repo: string, rev: string) => {
    const r = await fetch(`${A.url}/${repo}/resolve/${rev}/extra/notes.txt`);
    return { status: r.status, text: await r.text(), commit: r.headers.get('x-repo-commit') };
  };
  assert.deepEqual(await notes('tiny', 'v1'), { status: 200, text: 'version one\n', commit: commitV1() });
  assert.deepEqual(await notes('tiny', 'main'), { status: 200, text: 'version two\n', commit: R });
  assert.deepEqual(await notes('tiny', commitV1()), { status: 200, text: 'version one\n', commit: commitV1() });
  assert.deepEqual(await notes('tiny', 'refs%2Ftags%2Fv1'), { status: 200, text: 'version one\n', commit: commitV1() });
  assert.deepEqual(await notes('tiny', 'refs%2Fheads%2Fmain'), { status: 200, text: 'version two\n', commit: R });
  assert.deepEqual(await notes('Org/Tiny', R), { status: 200, text: 'version two\n', commit: R });
  assert.equal((await notes('Org/Tiny', 'v2')).status, 200);
  assert.equal((await notes('Org/Tiny', 'v1')).status, 404, 'Org/Tiny is only tiny:2');
});

test('Range requests: single ranges, 206 and 416', async () => {
  const weights = file(srcV2, 'model.safetensors');
  const url = `${A.url}/tiny/resolve/main/model.safetensors`;
  const etag = `"${sha256(weights)}"`;
  const ranged = async (range: string, extra: Record<string, string> = {}) => {
    const r = await fetch(url, { headers: { Range: range, ...extra } });
    return { status: r.status, cr: r.headers.get('content-range'), len: r.headers.get('content-length'), body: Buffer.from(await r.arrayBuffer()) };
  };
  const size = weights.length;
  let r = await ranged('bytes=10-99');
  assert.deepEqual([r.status, r.cr, r.len], [206, `bytes 10-99/${size}`, '90']);
  assert.deepEqual(r.body, weights.subarray(10, 100));
  r = await ranged('bytes=1000-');
  assert.deepEqual([r.status, r.cr], [206, `bytes 1000-${size - 1}/${size}`]);
  assert.deepEqual(r.body, weights.subarray(1000));
  r = await ranged('bytes=-50');
  assert.deepEqual(r.body, weights.subarray(size - 50));
  r = await ranged('bytes=0-0');
  assert.deepEqual([r.status, r.body.length], [206, 1]);
  r = await ranged('bytes=10-99999999999999999');
  assert.deepEqual([r.status, r.body.length], [206, size - 10]);
  r = await ranged(`bytes=${size}-`);
  assert.deepEqual([r.status, r.cr], [416, `bytes */${size}`]);
  r = await ranged('bytes=-0');
  assert.equal(r.status, 416);
  // Ignored (the whole file): malformed, reversed, multiple ranges, a stale If-Range.
  for (const h of ['bytes=5-2', 'bytes=0-1,5-6', 'items=0-5', 'bytes=abc']) {
    r = await ranged(h);
    assert.equal(r.status, 200, h);
    assert.equal(r.body.length, size, h);
  }
  assert.equal((await ranged('bytes=0-9', { 'If-Range': '"other"' })).status, 200);
  assert.equal((await ranged('bytes=0-9', { 'If-Range': etag })).status, 206);
  const head = await fetch(url, { method: 'HEAD', headers: { Range: 'bytes=100-' } });
  assert.deepEqual([head.status, head.headers.get('content-length')], [206, String(size - 100)]);
});

test('errors carry the codes huggingface_hub maps to exceptions', async () => {
  const code = async (path: string, method = 'GET') => {
    const r = await fetch(`${A.url}${path}`, { method });
    return [r.status, r.headers.get('x-error-code'), r.headers.get('x-repo-commit')];
  };
  assert.deepEqual(await code('/api/models/nope'), [404, 'RepoNotFound', null]);
  assert.deepEqual(await code('/api/models/someone/nope/revision/main'), [404, 'RepoNotFound', null]);
  assert.deepEqual(await code('/nope/resolve/main/config.json'), [404, 'RepoNotFound', null]);
  assert.deepEqual(await code('/api/datasets/a/b'), [404, 'RepoNotFound', null]);
  assert.deepEqual(await code('/datasets/a/b/resolve/main/x'), [404, 'RepoNotFound', null]);
  assert.deepEqual(await code('/tiny/resolve/v9/config.json'), [404, 'RevisionNotFound', null]);
  assert.deepEqual(await code('/api/models/tiny/revision/nope'), [404, 'RevisionNotFound', null]);
  assert.deepEqual(await code('/tiny/resolve/main/missing.bin'), [404, 'EntryNotFound', R]);
  assert.deepEqual(await code('/tiny/resolve/main/missing.bin', 'HEAD'), [404, 'EntryNotFound', R]);
  const body = await json(await fetch(`${A.url}/tiny/resolve/v1/missing.bin`));
  assert.match(body.error, /^Entry not found: missing\.bin is not a file of tiny at v1 \(tiny:1\)/);
  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
    const r = await fetch(`${A.url}/tiny/resolve/main/config.json`, { method });
    assert.equal(r.status, 405, method);
    assert.equal(r.headers.get('allow'), 'GET, HEAD');
  }
  assert.equal((await fetch(`${A.url}/whatever`)).status, 404);
  const root = await fetch(`${A.url}/`);
  assert.match(await root.text(), /distillery\/tiny[\s\S]*Org\/Tiny[\s\S]*hf download/);
});

test('path traversal: never a file outside the manifest, always 4xx', async () => {
  writeFileSync(join(home, 'SECRET.txt'), 'TOP-SECRET-MARKER');
  const cfgSha = tinyV2.files.find((f) => f.path === 'config.json')!.sha256;
  const attempts = [
    '/tiny/resolve/main/../../../../etc/passwd',
    '/tiny/resolve/main/..%2F..%2F..%2F..%2Fetc%2Fpasswd',
    '/tiny/resolve/main/%2e%2e/%2e%2e/%2e%2e/SECRET.txt',
    '/tiny/resolve/main/%2E%2E%2F%2E%2E%2F%2E%2E%2FSECRET.txt',
    '/tiny/resolve/main/..%5c..%5c..%5cSECRET.txt',
    '/tiny/resolve/main/..\\..\\..\\SECRET.txt',
    '/tiny/resolve/main//etc/passwd',
    '/tiny/resolve/main/%2Fetc%2Fpasswd',
    `/tiny/resolve/main/${encodeURIComponent(join(home, 'SECRET.txt'))}`,
    '/tiny/resolve/main/C:%5CWindows%5Cwin.ini',
    '/tiny/resolve/main/config.json%00',
    '/tiny/resolve/main/config.json%00.txt',
    '/tiny/resolve/main/extra/../config.json',
    '/tiny/resolve/main/extra/%2e%2e/config.json',
    '/tiny/resolve/main/./config.json',
    '/tiny/resolve/main/extra/./notes.txt',
    '/tiny/resolve/main/extra//notes.txt',
    '/tiny/resolve/main/%252e%252e/%252e%252e/SECRET.txt',
    '/tiny/resolve/main/%c0%ae%c0%ae/SECRET.txt',
    '/tiny/resolve/main/%',
    '/tiny/resolve/..%2F..%2Fmodels%2Ftiny/1.json',
    '/tiny/resolve/main/../../v1/extra/notes.txt',
    '/../../SECRET.txt',
    '/%2e%2e/%2e%2e/SECRET.txt',
    '/..%2F..%2FSECRET.txt/resolve/main/config.json',
    '/tiny%2F..%2F..%2FSECRET.txt/resolve/main/config.json',
    '/api/models/tiny/tree/main/..%2F..%2F..',
    '/api/models/tiny/tree/main/%2e%2e',
    '/api/models/..%2F..%2Fmodels%2Ftiny/tree/main',
    '/api/models/tiny/revision/..%2F..',
    `/blobs/sha256/${cfgSha}`,
    '/models/tiny/1.json',
    '/SECRET.txt',
    `/tiny/resolve/main/${'a'.repeat(9000)}`,
    'http://127.0.0.1/tiny/resolve/main/config.json',
  ];
  const cfg = file(srcV2, 'config.json').toString();
  for (const path of attempts) {
    const r = await rawRequest(A.url, path);
    assert.ok(r.status >= 400 && r.status < 500, `${path} → ${r.status}`);
    const text = r.body.toString('latin1');
    assert.ok(!text.includes('TOP-SECRET-MARKER') && !text.includes('root:') && !text.includes('LlamaForCausalLM') && !text.includes('"schema"'), `${path} leaked ${text.slice(0, 200)}`);
    assert.ok(!text.includes(cfg));
  }
  // The control: the real file through the same raw client.
  const ok = await rawRequest(A.url, '/tiny/resolve/main/config.json');
  assert.equal(ok.status, 200);
  assert.equal(ok.body.toString(), cfg);
});

test('token: 401 without it, served with it; binding elsewhere needs one', async () => {
  const plain = await fetch(`${B.url}/api/models/tiny`);
  assert.equal(plain.status, 401);
  assert.match(plain.headers.get('www-authenticate') ?? '', /^Bearer/);
  assert.match((await json(plain)).error, /token is required/);
  for (const auth of [`Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(0, -1)}`, `Basic ${TOKEN}`, TOKEN, 'Bearer ']) {
    assert.equal((await fetch(`${B.url}/tiny/resolve/main/config.json`, { headers: { Authorization: auth } })).status, 401, auth);
  }
  assert.equal((await fetch(`${B.url}/tiny/resolve/main/config.json`, { method: 'HEAD' })).status, 401);
  for (const auth of [`Bearer ${TOKEN}`, `bearer ${TOKEN}`]) {
    const r = await fetch(`${B.url}/tiny/resolve/main/config.json`, { headers: { Authorization: auth } });
    assert.equal(r.status, 200);
    assert.equal(await r.text(), file(srcV2, 'config.json').toString());
  }
  await assert.rejects(startMirror({ home, host: '0.0.0.0', port: 0 }), /without a token/);
  await assert.rejects(startMirror({ home, port: 0, token: 'short' }), /too short/);
});

test('without a token only local Host names are answered (DNS rebinding)', async () => {
  const port = new URL(A.url).port;
  assert.equal((await rawRequest(A.url, '/api/models/tiny', { headers: { Host: `evil.example:${port}` } })).status, 403);
  assert.equal((await rawRequest(A.url, '/api/models/tiny', { headers: { Host: `localhost:${port}` } })).status, 200);
  assert.equal((await rawRequest(A.url, '/api/models/tiny', { headers: { Host: `127.0.0.1:${port}` } })).status, 200);
  assert.equal((await rawRequest(B.url, '/api/models/tiny', { headers: { Host: 'mirror.lan:1', Authorization: `Bearer ${TOKEN}` } })).status, 200);
});

test('damaged or missing blobs are a 500 naming the model, never wrong bytes', async () => {
  const h = freshHome();
  const m = await importModel(makeFakeModel(join(tempDir(), 'broken-src'), { tokenizer: '{"unique": "broken"}' }), { name: 'broken' }, h);
  const warns: string[] = [];
  const D = await startMirror({ home: h, port: 0, warn: (l) => warns.push(l) });
  try {
    const layout = vaultLayout(h);
    const weights = m.files.find((f) => f.path === 'model.safetensors')!;
    const wp = blobPath(layout, weights.sha256);
    chmodSync(wp, 0o644);
    writeFileSync(wp, readFileSync(wp).subarray(0, weights.size - 8));
    for (const method of ['HEAD', 'GET']) {
      const r = await fetch(`${D.url}/broken/resolve/main/model.safetensors`, { method });
      assert.equal(r.status, 500);
      assert.match(r.headers.get('x-error-message') ?? '', /broken:1 model\.safetensors cannot be served: its vault blob has \d+ bytes where the manifest says \d+; the model is damaged \(run "distillery vault verify broken:1"/);
      if (method === 'GET') assert.match((await json(r)).error, /damaged/);
    }
    assert.equal((await fetch(`${D.url}/broken/resolve/main/model.safetensors`, { headers: { Range: 'bytes=0-10' } })).status, 500);
    const tok = m.files.find((f) => f.path === 'tokenizer.json')!;
    unlinkSync(blobPath(layout, tok.sha256));
    const r = await fetch(`${D.url}/broken/resolve/main/tokenizer.json`);
    assert.equal(r.status, 500);
    assert.match((await json(r)).error, /tokenizer\.json is missing; the model is damaged/);
    const tree = await fetch(`${D.url}/api/models/broken/tree/main?recursive=true`);
    assert.equal(tree.status, 500);
    assert.match((await json(tree)).error, /broken:1 cannot be served: the vault blob of tokenizer\.json is missing/);
    assert.equal((await fetch(`${D.url}/broken/resolve/main/config.json`)).status, 200, 'healthy files of the model are still served');
    assert.ok(warns.some((w) => /damaged/.test(w)));
  } finally {
    await D.close();
  }
});

test('models named like routes ("api", "v2") are still served', async () => {
  const h = freshHome();
  const src = makeFakeModel(join(tempDir(), 'plain'));
  await importModel(src, { name: 'api' }, h);
  await importModel(src, { name: 'v2' }, h);
  const E = await startMirror({ home: h, port: 0 });
  try {
    for (const path of ['/api/resolve/main/config.json', '/v2/resolve/main/config.json', '/distillery/api/resolve/main/config.json']) {
      const r = await fetch(`${E.url}${path}`);
      assert.equal(r.status, 200, path);
      assert.equal(await r.text(), file(src, 'config.json').toString());
    }
    assert.equal((await json(await fetch(`${E.url}/api/models/api`))).id, 'api');
    assert.equal((await fetch(`${E.url}/api/models/v2/tree/main`)).status, 200);
  } finally {
    await E.close();
  }
});

test('aborted and concurrent downloads', async () => {
  const weights = file(srcV2, 'model.safetensors');
  const url = `${A.url}/tiny/resolve/main/model.safetensors`;
  await new Promise<void>((resolve, reject) => {
    const req = get(url, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', (e) => ((e as NodeJS.ErrnoException).code === 'ECONNRESET' ? resolve() : reject(e)));
  });
  for (let i = 0; i < 100 && !logA.some((l) => /model\.safetensors 200 \d+B \d+ms aborted$/.test(l)); i++) await new Promise((r) => setTimeout(r, 20));
  assert.ok(logA.some((l) => /^GET \/tiny\/resolve\/main\/model\.safetensors 200 \d+B \d+ms aborted$/.test(l)), logA.slice(-3).join('\n'));
  const bodies = await Promise.all(Array.from({ length: 6 }, (_, i) => fetch(url, i % 2 ? { headers: { Range: 'bytes=100-' } } : {}).then(async (r) => Buffer.from(await r.arrayBuffer()))));
  bodies.forEach((b, i) => assert.deepEqual(b, i % 2 ? weights.subarray(100) : weights));
  assert.ok(logA.some((l) => /^GET \/tiny\/resolve\/main\/model\.safetensors 206 \d+B \d+ms$/.test(l)));
});

test('llama.cpp -hf: refs, recursive tree, HEAD, ranged resume (the documented sequence)', async () => {
  const ep = `${A.url}/`;
  const api = (p: string) => fetch(`${ep}${p}`, { headers: { 'User-Agent': LLAMA_UA, Accept: 'application/json' } });
  const repo = 'distillery/tinygguf';
  const refs = await json(await api(`api/models/${repo}/refs`));
  const main = refs.branches.find((b: { name: string }) => b.name === 'main');
  assert.match(main.targetCommit, /^[0-9a-f]{40}$/);
  assert.equal(main.targetCommit, gguf.digest.slice(0, 40));
  const tree = (await json(await api(`api/models/${repo}/tree/${main.targetCommit}?recursive=true`))) as Array<{ type: string; path: string; oid: string; lfs?: { oid: string } }>;
  const files = tree.filter((e) => e.type === 'file');
  for (const f of files) assert.match(f.lfs?.oid ?? f.oid, /^([0-9a-f]{40}|[0-9a-f]{64})$/);
  // Default quant selection: Q4_K_M first.
  const primary = files.find((f) => /Q4_K_M[.-]/i.test(f.path) && !f.path.includes('mmproj'))!;
  assert.equal(primary.lfs?.oid, sha256(ggufFiles['tinygguf-Q4_K_M.gguf']!));
  const url = `${ep}${repo}/resolve/${main.targetCommit}/${primary.path}`;
  const head = await fetch(url, { method: 'HEAD', headers: { 'User-Agent': LLAMA_UA } });
  assert.equal(head.status, 200);
  const total = Number(head.headers.get('content-length'));
  assert.equal(total, ggufFiles['tinygguf-Q4_K_M.gguf']!.length);
  assert.notEqual(head.headers.get('accept-ranges'), 'none');
  // A first attempt that got 1234 bytes, then the resume: 206 for the rest, 200 when starting over.
  const first = Buffer.from(await (await fetch(url, { headers: { Range: 'bytes=0-1233' } })).arrayBuffer());
  const rest = await fetch(url, { headers: { Range: `bytes=${first.length}-`, 'User-Agent': LLAMA_UA } });
  assert.equal(rest.status, 206);
  assert.equal(Number(rest.headers.get('content-length')) + first.length, total);
  assert.deepEqual(Buffer.concat([first, Buffer.from(await rest.arrayBuffer())]), ggufFiles['tinygguf-Q4_K_M.gguf']);
  assert.equal((await fetch(url)).status, 200);
});

test('llama.cpp (before 2026-03): /v2/<user>/<model>/manifests/<tag> gives ggufFile', async () => {
  const manifest = (repo: string, tag: string, ua = LLAMA_UA) => fetch(`${A.url}/v2/${repo}/manifests/${tag}`, { headers: { 'User-Agent': ua, Accept: 'application/json' } });
  const latest = await json(await manifest('distillery/tinygguf', 'latest'));
  assert.equal(latest.ggufFile.rfilename, 'tinygguf-Q4_K_M.gguf');
  assert.equal(latest.ggufFile.size, ggufFiles['tinygguf-Q4_K_M.gguf']!.length);
  assert.equal(latest.mmprojFile.rfilename, 'mmproj-tinygguf-F16.gguf');
  assert.equal((await json(await manifest('distillery/tinygguf', 'q8_0'))).ggufFile.rfilename, 'tinygguf-Q8_0.gguf');
  const none = await manifest('distillery/tinygguf', 'Q2_K');
  assert.equal(none.status, 404);
  assert.match((await json(none)).error, /no GGUF file of distillery\/tinygguf matches the tag Q2_K/);
  const st = await manifest('distillery/tiny', 'latest');
  assert.equal(st.status, 404);
  assert.match((await json(st)).error, /has no GGUF files/);
  assert.equal((await manifest('distillery/nope', 'latest')).headers.get('x-error-code'), 'RepoNotFound');
  // Not llama.cpp: an Ollama pull, answered by the Ollama module with a registry manifest.
  const other = await manifest('distillery/tinygguf', 'latest', 'ollama/0.12');
  assert.equal(other.status, 200);
  assert.equal(((await other.json()) as { mediaType: string }).mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
  // Then the old client downloads /resolve/main/<ggufFile>.
  const r = await fetch(`${A.url}/distillery/tinygguf/resolve/main/${latest.ggufFile.rfilename}`);
  assert.deepEqual(Buffer.from(await r.arrayBuffer()), ggufFiles['tinygguf-Q4_K_M.gguf']);
});

// ------------------------------------------------------------------------------------------------------
// The real huggingface_hub client

/** Every file of `m` under `dir` equals the source folder's copy, byte for byte. */
function assertSameFiles(dir: string, src: string, m: Manifest): void {
  for (const f of m.files) assert.deepEqual(readFileSync(join(dir, ...f.path.split('/'))), file(src, f.path), f.path);
}

test('hf download --local-dir', { skip: PY_MISSING }, async () => {
  const out = join(tempDir(), 'tiny');
  const r = await run(HF_CLI, ['download', 'distillery/tiny', '--local-dir', out], hfEnv(A.url, join(tempDir(), 'hf')));
  assert.equal(r.code, 0, r.stderr);
  assertSameFiles(out, srcV2, tinyV2);
  // The client's own record of what it downloaded: commit and ETag per file.
  const meta = readFileSync(join(out, '.cache', 'huggingface', 'download', 'model.safetensors.metadata'), 'utf8').split('\n');
  assert.equal(meta[0], R);
  assert.equal(meta[1], tinyV2.files.find((f) => f.path === 'model.safetensors')!.sha256);
  const cfgMeta = readFileSync(join(out, '.cache', 'huggingface', 'download', 'config.json.metadata'), 'utf8').split('\n');
  assert.equal(cfgMeta[1], gitBlobSha1(file(srcV2, 'config.json')));
  // v1 into another folder.
  const out1 = join(tempDir(), 'tiny1');
  const r1 = await run(HF_CLI, ['download', 'tiny', '--revision', 'v1', '--local-dir', out1], hfEnv(A.url, join(tempDir(), 'hf')));
  assert.equal(r1.code, 0, r1.stderr);
  assertSameFiles(out1, srcV1, tinyV1);
});

test('snapshot_download / hf_hub_download: cache layout and exceptions', { skip: PY_MISSING }, async () => {
  const cache = join(tempDir(), 'hub');
  const script = `
import json, os
from huggingface_hub import snapshot_download, hf_hub_download, HfApi
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError
cache = ${JSON.stringify(cache)}
out = {}
out["org"] = snapshot_download("Org/Tiny", cache_dir=cache)
out["v1_notes"] = hf_hub_download("tiny", "extra/notes.txt", revision="v1", cache_dir=cache)
out["main_notes"] = hf_hub_download("tiny", "extra/notes.txt", cache_dir=cache)
def err(fn):
    try:
        fn()
        return None
    except Exception as e:
        return type(e).__name__ + ("/repo" if isinstance(e, RepositoryNotFoundError) else "") + ("/rev" if isinstance(e, RevisionNotFoundError) else "") + ("/entry" if isinstance(e, EntryNotFoundError) else "")
out["no_repo"] = err(lambda: snapshot_download("someone/nope", cache_dir=cache))
out["no_repo_file"] = err(lambda: hf_hub_download("nope", "config.json", cache_dir=cache))
out["no_file"] = err(lambda: hf_hub_download("tiny", "missing.bin", cache_dir=cache))
out["no_rev"] = err(lambda: hf_hub_download("tiny", "config.json", revision="v9", cache_dir=cache))
out["no_rev_snapshot"] = err(lambda: snapshot_download("tiny", revision="v9", cache_dir=cache))
api = HfApi()
info = api.model_info("distillery/tiny", files_metadata=True)
out["info"] = [info.sha, sorted(s.rfilename for s in info.siblings), [s.blob_id for s in info.siblings if s.rfilename == "config.json"][0]]
refs = api.list_repo_refs("tiny")
out["refs"] = [[b.name, b.target_commit] for b in refs.branches] + [[t.name, t.target_commit] for t in refs.tags]
out["tree"] = sorted(f.path for f in api.list_repo_tree("Org/Tiny", recursive=True))
out["models"] = [m.id for m in api.list_models()]
print(json.dumps(out))
`;
  const out = await runPython(script, hfEnv(A.url, join(tempDir(), 'hf')));
  const repoDir = join(cache, 'models--Org--Tiny');
  assert.equal(out.org, join(repoDir, 'snapshots', R));
  assert.equal(readFileSync(join(repoDir, 'refs', 'main'), 'utf8'), R);
  // snapshots/<commit>/<path> → ../../blobs/<etag>: sha256 for LFS files, git blob ids for the small ones.
  for (const f of tinyV2.files) {
    const link = join(repoDir, 'snapshots', R, ...f.path.split('/'));
    assert.ok(lstatSync(link).isSymbolicLink(), f.path);
    const etag = f.path === 'model.safetensors' ? f.sha256 : gitBlobSha1(file(srcV2, f.path));
    assert.equal(realpathSync(link), realpathSync(join(repoDir, 'blobs', etag)), f.path);
    assert.match(readlinkSync(link), /^(\.\.\/)+blobs\/[0-9a-f]+$/);
  }
  assertSameFiles(join(repoDir, 'snapshots', R), srcV2, tinyV2);
  assert.deepEqual(readdirSync(join(repoDir, 'blobs')).sort(), tinyV2.files.map((f) => (f.path === 'model.safetensors' ? f.sha256 : gitBlobSha1(file(srcV2, f.path)))).sort());

  const tinyDir = join(cache, 'models--tiny');
  assert.equal(readFileSync(out.v1_notes as string, 'utf8'), 'version one\n');
  assert.equal(readFileSync(out.main_notes as string, 'utf8'), 'version two\n');
  assert.equal(readFileSync(join(tinyDir, 'refs', 'v1'), 'utf8'), commitV1());
  assert.equal(readFileSync(join(tinyDir, 'refs', 'main'), 'utf8'), R);
  assert.ok(existsSync(join(tinyDir, '.no_exist', R, 'missing.bin')), 'EntryNotFound is cached with the commit from X-Repo-Commit');

  assert.equal(out.no_repo, 'RepositoryNotFoundError/repo');
  assert.equal(out.no_repo_file, 'RepositoryNotFoundError/repo');
  assert.equal(out.no_file, 'RemoteEntryNotFoundError/entry');
  assert.equal(out.no_rev, 'RevisionNotFoundError/rev');
  assert.equal(out.no_rev_snapshot, 'RevisionNotFoundError/rev');
  assert.deepEqual(out.info, [R, tinyV2.files.map((f) => f.path).sort(), gitBlobSha1(file(srcV2, 'config.json'))]);
  assert.deepEqual(out.refs, [['main', R], ['v1', commitV1()], ['v2', R]]);
  assert.deepEqual(out.tree, ['README.md', 'config.json', 'extra', 'extra/notes.txt', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  assert.deepEqual(out.models, ['distillery/tiny', 'distillery/tinygguf', 'Org/Tiny']);
});

test('token: the client gets a 401 without HF_TOKEN and downloads with it', { skip: PY_MISSING }, async () => {
  const cache = join(tempDir(), 'hub');
  const script = `
import json
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
cache = ${JSON.stringify(cache)}
out = {}
try:
    snapshot_download("distillery/tiny", cache_dir=cache, token=False)
    out["without"] = "ok"
except HfHubHTTPError as e:
    out["without"] = [type(e).__name__, e.response.status_code, isinstance(e, RepositoryNotFoundError)]
out["with"] = snapshot_download("distillery/tiny", cache_dir=cache)
print(json.dumps(out))
`;
  const out = await runPython(script, hfEnv(B.url, join(tempDir(), 'hf'), { HF_TOKEN: TOKEN }));
  assert.deepEqual(out.without, ['HfHubHTTPError', 401, false]);
  assertSameFiles(out.with as string, srcV2, tinyV2);
});

test('a download cut mid-file resumes with a Range request; tree pages are followed', { skip: PY_MISSING }, async () => {
  const cache = join(tempDir(), 'hub');
  const before = logC.length;
  const out = await runPython(
    `import json\nfrom huggingface_hub import snapshot_download\nprint(json.dumps({"path": snapshot_download("distillery/tiny", cache_dir=${JSON.stringify(cache)})}))`,
    hfEnv(C.url, join(tempDir(), 'hf')),
  );
  assertSameFiles(out.path as string, srcV2, tinyV2);
  const lines = logC.slice(before);
  assert.ok(lines.some((l) => /^GET \/distillery\/tiny\/resolve\/[0-9a-f]{40}\/model\.safetensors 200 11000000B \d+ms aborted$/.test(l)), lines.join('\n'));
  assert.ok(lines.some((l) => /^GET \/distillery\/tiny\/resolve\/[0-9a-f]{40}\/model\.safetensors 206 \d+B/.test(l)), lines.join('\n'));
  assert.equal(lines.filter((l) => /^GET \/api\/models\/distillery\/tiny\/tree\//.test(l)).length, 4, 'four pages of two entries');
});

// ------------------------------------------------------------------------------------------------------
// The command

test('distillery mirror: prints the URL and usage, stops cleanly on SIGTERM, refuses unsafe setups', async () => {
  const script = `
import { Command } from 'commander';
import { registerMirrorCommand } from './dist/src/cli/mirror-command.js';
const program = new Command().exitOverride();
registerMirrorCommand(program);
try { await program.parseAsync(process.argv.slice(1), { from: 'user' }); }
catch (e) { process.stderr.write('error: ' + e.message + '\\n'); process.exit(1); }
`;
  const env: NodeJS.ProcessEnv = { ...process.env, DISTILLERY_HOME: home };
  delete env.DISTILLERY_MIRROR_TOKEN;
  const start = (args: string[]) => spawn(process.execPath, ['--input-type=module', '-e', script, 'mirror', ...args], { cwd: packageRoot(), env, stdio: ['ignore', 'pipe', 'pipe'] });

  const child = start(['--port', '0']);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  for (let i = 0; i < 200 && !/Stop with Ctrl\+C/.test(stdout); i++) await new Promise((r) => setTimeout(r, 50));
  const url = /at (http:\/\/127\.0\.0\.1:\d+)/.exec(stdout)?.[1];
  assert.ok(url, stdout + stderr);
  assert.match(stdout, new RegExp(`HF_ENDPOINT=${url.replace(/\./g, '\\.')} HF_HUB_DISABLE_TELEMETRY=1 hf download distillery/tiny --local-dir \\./tiny`));
  assert.match(stdout, /MODEL_ENDPOINT=.* llama-server -hf distillery\/tinygguf/);
  assert.equal((await fetch(`${url}/api/models/tiny`)).status, 200);
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
  assert.match(stderr, /GET \/api\/models\/tiny 200 \d+B \d+ms/);
  assert.match(stderr, /SIGTERM, stopping/);

  const refuse = async (args: string[], re: RegExp) => {
    const c = start(args);
    let err = '';
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => c.on('exit', (cd) => resolve(cd)));
    assert.equal(code, 1, err);
    assert.match(err, re);
  };
  await refuse(['--port', '0', '--host', '0.0.0.0'], /refusing to serve the vault on 0\.0\.0\.0 without a token/);
  await refuse(['--port', '0', '--token', 'abc'], /too short/);
  await refuse(['--port', '0', '--token', TOKEN, '--generate-token'], /either --token or --generate-token/);
});
