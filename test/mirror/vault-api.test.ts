import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startMirror, type MirrorHandle } from '../../src/mirror/server.js';
import { blobPath, manifestPath, vaultLayout } from '../../src/vault/layout.js';
import { modelSize, type Manifest } from '../../src/vault/manifest.js';
import { putBlob } from '../../src/vault/store.js';
import { twoModels, noise } from '../vault/bundle-helpers.js';
import { freshHome, tempDir } from '../vault/helpers.js';
import { rawRequest, sha256 } from './helpers.js';

/**
 * The native Distillery API of the mirror (/.distillery/v1/), which `vault pull` and `vault repair` use:
 * model list, exact manifest bytes, blobs (Range, ETag) only when a manifest uses them, and no way out of
 * the vault through the path.
 */

const TOKEN = 'a-token-of-some-length';
let home = '';
let alpha: Manifest;
let beta: Manifest;
let orphan = '';
let A: MirrorHandle;
let T: MirrorHandle;
const warnings: string[] = [];

before(async () => {
  home = freshHome();
  [alpha, beta] = await twoModels(home, 100_000);
  // A blob no manifest uses (what an interrupted import leaves behind): never served.
  const f = join(tempDir(), 'orphan.bin');
  writeFileSync(f, noise(5000, 3));
  orphan = (await putBlob(vaultLayout(home), f)).sha256;
  A = await startMirror({ home, port: 0, warn: (l) => warnings.push(l) });
  T = await startMirror({ home, port: 0, token: TOKEN });
});

after(async () => {
  await Promise.all([A?.close(), T?.close()]);
});

const V1 = '/.distillery/v1';

test('GET /.distillery/v1/models lists every manifest', async () => {
  const r = await rawRequest(A.url, `${V1}/models`);
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-distillery-api'], '1');
  assert.match(String(r.headers['content-type']), /^application\/json/);
  assert.deepEqual(JSON.parse(r.body.toString()), [alpha, beta].map((m) => ({ name: m.name, version: m.version, digest: m.digest, format: m.format, size: modelSize(m) })));
  assert.equal((await rawRequest(A.url, `${V1}/models/`)).status, 200);
});

test('GET /.distillery/v1/models/NAME[/VERSION] sends the manifest bytes as stored, with the digest', async () => {
  const stored = readFileSync(manifestPath(vaultLayout(home), 'alpha', 1));
  for (const path of [`${V1}/models/alpha`, `${V1}/models/alpha/1`]) {
    const r = await rawRequest(A.url, path);
    assert.equal(r.status, 200, path);
    assert.deepEqual(r.body, stored, 'byte for byte');
    assert.equal(r.headers['x-distillery-digest'], alpha.digest);
    assert.match(String(r.headers['content-type']), /^application\/json/);
    assert.equal(r.headers.etag, `"${sha256(stored)}"`);
  }
  const head = await rawRequest(A.url, `${V1}/models/beta`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.body.length, 0);
  assert.equal(head.headers['x-distillery-digest'], beta.digest);

  for (const [path, re] of [
    [`${V1}/models/alpha/2`, /alpha has no version "2" \(versions: 1\)/],
    [`${V1}/models/alpha/01`, /no version/],
    [`${V1}/models/nope`, /no model named "nope"/],
    [`${V1}/models/ALPHA`, /no model named/],
  ] as const) {
    const r = await rawRequest(A.url, path);
    assert.equal(r.status, 404, path);
    assert.equal(r.headers['x-distillery-api'], '1', 'a 404 from the API says so: the client tells it from a wrong address');
    assert.match(JSON.parse(r.body.toString()).error, re);
  }
});

test('GET/HEAD /.distillery/v1/blobs/SHA256: used blobs with Range and ETag; orphans never', async () => {
  const f = alpha.files.find((x) => x.path === 'weights-extra.bin')!;
  const bytes = readFileSync(blobPath(vaultLayout(home), f.sha256));
  const full = await rawRequest(A.url, `${V1}/blobs/${f.sha256}`);
  assert.equal(full.status, 200);
  assert.deepEqual(full.body, bytes);
  assert.equal(full.headers.etag, `"${f.sha256}"`);
  assert.equal(full.headers['accept-ranges'], 'bytes');
  assert.equal(full.headers['content-length'], String(f.size));

  const part = await rawRequest(A.url, `${V1}/blobs/${f.sha256}`, { headers: { Range: 'bytes=1000-' } });
  assert.equal(part.status, 206);
  assert.equal(part.headers['content-range'], `bytes 1000-${f.size - 1}/${f.size}`);
  assert.deepEqual(part.body, bytes.subarray(1000));
  const past = await rawRequest(A.url, `${V1}/blobs/${f.sha256}`, { headers: { Range: `bytes=${f.size}-` } });
  assert.equal(past.status, 416);

  const head = await rawRequest(A.url, `${V1}/blobs/${f.sha256}`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers['content-length'], String(f.size));
  assert.equal(head.body.length, 0);

  // A blob shared by both models is served (it is in a manifest) ...
  const shared = beta.files.find((x) => x.path === 'config.json')!;
  assert.equal((await rawRequest(A.url, `${V1}/blobs/${shared.sha256}`)).status, 200);
  // ... an orphan is not, though it is in blobs/sha256.
  const o = await rawRequest(A.url, `${V1}/blobs/${orphan}`);
  assert.equal(o.status, 404);
  assert.match(JSON.parse(o.body.toString()).error, /not part of any model/);
  assert.equal((await rawRequest(A.url, `${V1}/blobs/${orphan}`, { method: 'HEAD' })).status, 404);
  // Names must be exactly 64 lowercase hex digits.
  assert.equal((await rawRequest(A.url, `${V1}/blobs/${f.sha256.toUpperCase()}`)).status, 400);
  assert.equal((await rawRequest(A.url, `${V1}/blobs/${f.sha256.slice(1)}`)).status, 400);
});

test('traversal and malformed paths under /.distillery/ are all 4xx and never leak a file', async () => {
  const sha = alpha.files[0]!.sha256;
  const paths = [
    `${V1}/blobs/..%2f..%2fdistillery.db`,
    `${V1}/blobs/..%2F..%2Fdistillery.db`,
    `${V1}/blobs/../../distillery.db`,
    `${V1}/blobs/%2e%2e/%2e%2e/distillery.db`,
    `${V1}/blobs/..`,
    `${V1}/blobs/${sha}/..`,
    `${V1}/blobs/${sha}%2f..%2f..%2fdistillery.db`,
    `${V1}/blobs/${sha}%00`,
    `${V1}/blobs/..%5c..%5cdistillery.db`,
    `${V1}/blobs/`,
    `${V1}/blobs`,
    `${V1}/models/..%2fx`,
    `${V1}/models/..`,
    `${V1}/models/%2e%2e%2fmodels%2falpha`,
    `${V1}/models/alpha/..%2f..%2fbeta%2f1`,
    `${V1}/models/alpha/..`,
    `${V1}/models/alpha/1.json`,
    `${V1}/models/alpha/1/x`,
    `${V1}/models/alpha%00`,
    `${V1}/models/%2fetc%2fpasswd`,
    `${V1}/../../distillery.db`,
    `${V1}/%2e%2e/%2e%2e/distillery.db`,
    `${V1}/`,
    `${V1}`,
    '/.distillery/v2/models',
    '/.distillery',
    '/.distillery/..%2fdistillery.db',
    `${V1}/models/%zz`,
  ];
  const secret = readFileSync(join(home, 'distillery.db'));
  for (const path of paths) {
    const r = await rawRequest(A.url, path);
    assert.ok(r.status >= 400 && r.status < 500, `${path}: ${r.status}`);
    assert.ok(!r.body.includes(secret.subarray(0, 16)), `${path} leaked the database`);
    assert.ok(!r.body.toString('latin1').includes('SQLite format'), path);
  }
  assert.deepEqual(warnings, [], 'no internal errors');
});

test('the API sits behind the token, other methods are refused, damage is a 500', async () => {
  assert.equal((await rawRequest(T.url, `${V1}/models`)).status, 401);
  assert.equal((await rawRequest(T.url, `${V1}/blobs/${alpha.files[0]!.sha256}`)).status, 401);
  const ok = await rawRequest(T.url, `${V1}/models`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(ok.status, 200);
  assert.equal((await rawRequest(A.url, `${V1}/models`, { method: 'POST' })).status, 405);
  assert.equal((await rawRequest(A.url, `${V1}/models/alpha`, { method: 'DELETE' })).status, 405);

  // A blob of the wrong size is never sent as if it were whole.
  const home2 = freshHome();
  const [a2] = await twoModels(home2);
  const f = a2.files.find((x) => x.path === 'model.safetensors')!;
  const p = blobPath(vaultLayout(home2), f.sha256);
  chmodSync(p, 0o644);
  writeFileSync(p, 'short');
  const warned: string[] = [];
  const M = await startMirror({ home: home2, port: 0, warn: (l) => warned.push(l) });
  try {
    const r = await rawRequest(M.url, `${V1}/blobs/${f.sha256}`);
    assert.equal(r.status, 500);
    assert.equal(r.headers['x-distillery-api'], '1');
    assert.match(JSON.parse(r.body.toString()).error, /alpha:1 model\.safetensors cannot be served: .* 5 bytes where the manifest says/);
    assert.equal(warned.length, 1);
  } finally {
    await M.close();
  }
});

test('the Hugging Face routes are unaffected', async () => {
  const r = await rawRequest(A.url, '/api/models/alpha');
  assert.equal(r.status, 200);
  assert.equal(JSON.parse(r.body.toString()).id, 'alpha');
  assert.equal((await rawRequest(A.url, '/alpha/resolve/main/config.json')).status, 200);
});
