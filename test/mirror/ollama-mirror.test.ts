import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { kv } from '../../src/formats/gguf.js';
import { startMirror, type MirrorHandle } from '../../src/mirror/server.js';
import { templateFor } from '../../src/formats/chat-families.js';
import { importFrom, type Manifest } from '../../src/vault/vault.js';
import { freshHome, tempDir } from '../vault/helpers.js';
import { makeOllamaFolder, writeTinyGguf } from '../vault/source-fixtures.js';

/**
 * The Ollama registry pull API, driven by a client that performs the documented `ollama pull` sequence
 * (../shared/research/model-distribution.md, D3; no Ollama binary is available here): manifest GET with the
 * Docker Accept header, HEAD for each blob's size, a GET whose answer must carry a Location header (the
 * quirk), ranged GETs of parts against that location without checking for 206, a final sha256 check, and the
 * raw manifest bytes written under manifests/<host>/<ns>/<model>/<tag>. The pulled folder is then imported
 * back into a fresh vault with the Ollama importer: the round trip must reproduce the model.
 */

const MANIFEST_TYPE = 'application/vnd.docker.distribution.manifest.v2+json';
const UA = 'ollama/0.12.6 (amd64 linux) Go/go1.24.4';
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

interface Pulled {
  raw: Buffer;
  manifest: { config: { digest: string }; layers: Array<{ mediaType: string; digest: string; size: number }> };
  rangeRequests: number;
}

/**
 * `ollama pull --insecure HOST:PORT/NS/MODEL:TAG` into `modelsDir`. Ollama splits blobs into parts of
 * size/16 clamped to 100 MB–1 GB; the fixtures are small, so `partSize` (default: that rule) is lowered to
 * exercise several parts.
 */
async function ollamaPull(base: string, ns: string, model: string, tag: string, modelsDir: string, partSize?: number): Promise<Pulled> {
  const mres = await fetch(`${base}/v2/${ns}/${model}/manifests/${tag}`, { headers: { Accept: MANIFEST_TYPE, 'User-Agent': UA } });
  if (mres.status === 404) throw new Error('pull model manifest: file does not exist');
  assert.equal(mres.status, 200);
  const raw = Buffer.from(await mres.arrayBuffer());
  const manifest = JSON.parse(raw.toString('utf8')) as Pulled['manifest'];
  let rangeRequests = 0;
  for (const layer of [manifest.config as { digest: string; size?: number }, ...manifest.layers]) {
    const url = `${base}/v2/${ns}/${model}/blobs/${layer.digest}`;
    const head = await fetch(url, { method: 'HEAD', headers: { 'User-Agent': UA } });
    assert.equal(head.status, 200, `HEAD ${layer.digest}`);
    const size = Number(head.headers.get('content-length'));
    const direct = await fetch(url, { redirect: 'manual', headers: { 'User-Agent': UA } });
    const location = direct.headers.get('location');
    await direct.body?.cancel();
    assert.ok(direct.status === 200 || direct.status === 307, `GET ${layer.digest}: ${direct.status}`);
    if (!location) throw new Error('http: no Location header in response');
    const part = partSize ?? Math.min(1e9, Math.max(100e6, Math.ceil(size / 16)));
    const chunks: Buffer[] = [];
    for (let start = 0; start < size; start += part) {
      const end = Math.min(size, start + part) - 1;
      // No auth header and no status check on the direct URL, as in Ollama's downloader.
      const r = await fetch(location, { headers: { Range: `bytes=${start}-${end}` } });
      rangeRequests++;
      chunks.push(Buffer.from(await r.arrayBuffer()));
    }
    const data = Buffer.concat(chunks);
    const hex = layer.digest.slice('sha256:'.length);
    if (sha256(data) !== hex) throw new Error(`digest mismatch, file must be downloaded again: ${layer.digest}`);
    mkdirSync(join(modelsDir, 'blobs'), { recursive: true });
    writeFileSync(join(modelsDir, 'blobs', `sha256-${hex}`), data);
  }
  const file = join(modelsDir, 'manifests', new URL(base).host, ns, model, tag);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, raw);
  return { raw, manifest, rangeRequests };
}

let home = '';
let mirror: MirrorHandle;
let fromOllama: Manifest;
let chatml: Manifest;
let origin = '';

before(async () => {
  home = freshHome();
  origin = join(tempDir(), 'ollama-models');
  await makeOllamaFolder(origin, 'tiny', '8b');
  fromOllama = (await importFrom(origin, {}, home)).manifest;
  const gguf = join(tempDir(), 'chat.gguf');
  await writeTinyGguf(gguf, [kv.string('tokenizer.chat_template', "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"), kv.string('general.license', 'apache-2.0')]);
  chatml = (await importFrom(gguf, { name: 'chatty' }, home)).manifest;
  mirror = await startMirror({ home, port: 0 });
});
after(() => mirror.close());

test('an Ollama import is served back byte for byte under its original name, and imports again', async () => {
  const dest = join(tempDir(), 'pulled');
  const pulled = await ollamaPull(mirror.url, 'library', 'tiny', '8b', dest, 100);
  assert.ok(pulled.rangeRequests > 3, 'the model layer came in several ranged parts');
  const original = readFileSync(join(origin, 'manifests', 'registry.ollama.ai', 'library', 'tiny', '8b'));
  assert.deepEqual(pulled.raw, original, 'the exact manifest bytes Ollama wrote');
  for (const l of pulled.manifest.layers) {
    const hex = l.digest.slice(7);
    assert.deepEqual(readFileSync(join(dest, 'blobs', `sha256-${hex}`)), readFileSync(join(origin, 'blobs', `sha256-${hex}`)));
  }
  const again = (await importFrom(dest, { model: `${new URL(mirror.url).host}/library/tiny:8b` }, freshHome())).manifest;
  assert.equal(again.digest, fromOllama.digest, 'the round trip reproduces the vault model');
});

test('a vault GGUF model gets a generated manifest: model, template, params and licence layers', async () => {
  const dest = join(tempDir(), 'pulled-chatty');
  const pulled = await ollamaPull(mirror.url, 'distillery', 'chatty', 'latest', dest);
  const kinds = pulled.manifest.layers.map((l) => l.mediaType.replace('application/vnd.ollama.image.', ''));
  assert.deepEqual(kinds, ['model', 'template', 'params', 'license']);
  const weights = chatml.files.find((f) => f.path.endsWith('.gguf'))!;
  assert.equal(pulled.manifest.layers[0]!.digest, `sha256:${weights.sha256}`);
  const text = (kind: string) => readFileSync(join(dest, 'blobs', `sha256-${pulled.manifest.layers[kinds.indexOf(kind)]!.digest.slice(7)}`), 'utf8');
  assert.equal(text('template'), templateFor('<|im_start|>')!.template);
  assert.deepEqual(JSON.parse(text('params')), { stop: ['<|im_start|>', '<|im_end|>'] });
  assert.equal(text('license'), 'apache-2.0\n');
  const config = JSON.parse(readFileSync(join(dest, 'blobs', `sha256-${pulled.manifest.config.digest.slice(7)}`), 'utf8')) as Record<string, unknown>;
  assert.equal(config.model_format, 'gguf');
  assert.equal(config.file_type, 'F32');
  // The same model by version tag and under library/; the pulled folder imports as the same weights.
  const byVersion = await ollamaPull(mirror.url, 'library', 'chatty', 'v1', join(tempDir(), 'v1'));
  assert.deepEqual(byVersion.raw, pulled.raw);
  const back = (await importFrom(dest, { model: `${new URL(mirror.url).host}/distillery/chatty:latest` }, freshHome())).manifest;
  assert.equal(back.files.find((f) => f.path === 'model.gguf')?.sha256, weights.sha256);
  assert.equal(back.details?.chat_template, chatml.details?.chat_template);
});

test('registry errors: unknown model, tag, blob and digest; HEAD sizes; Range; the Location header', async () => {
  await assert.rejects(ollamaPull(mirror.url, 'library', 'nope', 'latest', tempDir()), /file does not exist/);
  await assert.rejects(ollamaPull(mirror.url, 'distillery', 'chatty', 'v9', tempDir()), /file does not exist/);
  const unknown = await fetch(`${mirror.url}/v2/library/tiny/manifests/latest`);
  assert.equal(unknown.status, 404);
  assert.equal(unknown.headers.get('x-error-code'), 'MANIFEST_UNKNOWN');
  // A blob of another model is not served under this one's name.
  const other = chatml.files[0]!.sha256;
  const wrong = await fetch(`${mirror.url}/v2/library/tiny/blobs/sha256:${other}`);
  assert.equal(wrong.status, 404);
  assert.equal(wrong.headers.get('x-error-code'), 'BLOB_UNKNOWN');
  assert.equal((await fetch(`${mirror.url}/v2/library/tiny/blobs/sha256:xyz`)).status, 400);
  assert.equal((await fetch(`${mirror.url}/v2/library/tiny/blobs/..%2f..%2fdistillery.db`)).status, 400);

  const weights = fromOllama.files.find((f) => f.path === 'model.gguf')!;
  const url = `${mirror.url}/v2/library/tiny/blobs/sha256:${weights.sha256}`;
  const head = await fetch(url, { method: 'HEAD' });
  assert.equal(head.headers.get('content-length'), String(weights.size));
  const full = await fetch(url);
  assert.equal(full.headers.get('location'), url, 'a 200 carries a Location header (Ollama reads the direct URL from it)');
  await full.body?.cancel();
  const part = await fetch(url, { headers: { Range: 'bytes=4-11' } });
  assert.equal(part.status, 206);
  assert.equal(part.headers.get('content-range'), `bytes 4-11/${weights.size}`);
  assert.equal((await part.arrayBuffer()).byteLength, 8);
  const beyond = await fetch(url, { headers: { Range: `bytes=${weights.size}-` } });
  assert.equal(beyond.status, 416);
});

test('templates: known chat-template families map to Ollama templates; unknown ones send none', () => {
  assert.equal(templateFor('<|start_header_id|>')?.family, 'llama3');
  assert.equal(templateFor('<start_of_turn>')?.family, 'gemma');
  assert.equal(templateFor('[INST]')?.family, 'mistral');
  assert.equal(templateFor('{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}'), null);
  assert.equal(templateFor(null), null);
});
