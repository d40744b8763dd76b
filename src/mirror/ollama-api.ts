import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { blobPath } from '../vault/layout.js';
import { modelRefString, type Manifest, type ManifestFile } from '../vault/manifest.js';
import type { CatalogVersion } from './resolve.js';
import { pickGguf } from './hf-api.js';
import { templateFor } from '../formats/chat-families.js';
import { isGgufWeightsPath } from '../formats/handoff.js';
import { parseRange, printable, sendBody, sendError, type MirrorContext, type MirrorRequest, type ProtocolModule } from './server.js';

/**
 * The Ollama registry pull API (Docker distribution v2 shapes), as `ollama pull --insecure HOST:PORT/NS/MODEL:TAG`
 * uses it (see docs/mirror.md):
 *
 *   GET|HEAD /v2/{ns}/{model}/manifests/{tag}        the manifest (config + layers)
 *   GET|HEAD /v2/{ns}/{model}/blobs/sha256:{hex}     a layer; Range honoured (206)
 *
 * Which models: a model imported from Ollama is served under its original namespace, name and tag, from the
 * exact manifest bytes and layers Ollama wrote (so digests match the registry it came from). Any GGUF model
 * in the vault is also served as `distillery/NAME:latest` (or `:vN`, `:Q4_K_M` for one quantization of a GGUF
 * repo, and under `library/NAME` too), with a manifest
 * generated here: the GGUF file as the model layer, plus template, stop parameters and licence layers derived
 * from the GGUF metadata where the chat template is of a family this file knows (see `templateFor`).
 *
 * Ollama's client needs a `Location` header on the 200 answer to a blob GET (it reads the direct download URL
 * from it, then fetches parts with Range), so every blob answer carries one pointing at itself.
 */

export const ollamaModule: ProtocolModule = { name: 'ollama', handle };

const MANIFEST_TYPE = 'application/vnd.docker.distribution.manifest.v2+json';
const CONFIG_TYPE = 'application/vnd.docker.container.image.v1+json';
const LAYER = (kind: string) => `application/vnd.ollama.image.${kind}`;
const NAME_NAMESPACES = new Set(['distillery', 'library']);

interface Layer {
  mediaType: string;
  digest: string;
  size: number;
}

/** Where a blob's bytes come from: a vault file, or bytes generated with the manifest. */
type BlobSource = { kind: 'vault'; file: ManifestFile } | { kind: 'bytes'; data: Buffer };

interface Served {
  manifestBytes: Buffer;
  blobs: Map<string, BlobSource>;
  version: CatalogVersion;
}

async function handle(req: MirrorRequest, res: ServerResponse, ctx: MirrorContext): Promise<boolean> {
  const seg = req.segments;
  if (seg[0] !== 'v2' || seg.length !== 5 || (seg[3] !== 'manifests' && seg[3] !== 'blobs')) return false;
  const [, ns, model, what, ref] = seg as [string, string, string, string, string];
  if (what === 'manifests') {
    const served = lookup(ctx, ns, model, ref);
    if (!served) {
      notFound(req, res, 'MANIFEST_UNKNOWN', `no model ${printable(`${ns}/${model}:${ref}`, 200)} in this mirror`);
      return true;
    }
    sendBytes(req, res, served.manifestBytes, { 'Content-Type': MANIFEST_TYPE, 'Docker-Content-Digest': `sha256:${sha256(served.manifestBytes)}` });
    return true;
  }
  const digest = /^sha256:([0-9a-f]{64})$/.exec(ref)?.[1];
  if (digest === undefined) {
    notFound(req, res, 'DIGEST_INVALID', `bad blob digest ${printable(ref, 100)} (sha256:<64 hex> expected)`, 400);
    return true;
  }
  // A blob is served only as part of a model that lists it (any tag of that name).
  const source = servedBlobs(ctx, ns, model).get(digest);
  if (!source) {
    notFound(req, res, 'BLOB_UNKNOWN', `blob sha256:${digest} is not a layer of ${printable(`${ns}/${model}`, 200)}`);
    return true;
  }
  const location = { Location: `${ctx.baseUrl}${req.rawPath}`, 'Docker-Content-Digest': `sha256:${digest}` };
  if (source.kind === 'bytes') {
    sendBytes(req, res, source.data, { 'Content-Type': 'application/octet-stream', ...location });
    return true;
  }
  const v = source.version;
  await ctx.serveBlob(req, res, {
    sha256: digest, size: source.file.size, headers: location, etag: `"${digest}"`,
    label: `${modelRefString(v.manifest)} ${source.file.path}`, ref: modelRefString(v.manifest),
  });
  return true;
}

function notFound(req: MirrorRequest, res: ServerResponse, code: string, message: string, status = 404): void {
  // The registry's error shape, plus the mirror's usual {error} for people reading it with curl.
  sendError(req, res, status, message, { 'Docker-Distribution-API-Version': 'registry/2.0', 'X-Error-Code': code });
}

/** The model a pull names: an Ollama import under its original name, else a vault GGUF model by name. */
function lookup(ctx: MirrorContext, ns: string, model: string, tag: string): Served | null {
  const catalog = ctx.catalog();
  const imported = [...catalog.byName.values()].flat().filter((v) => isOllamaImport(v.manifest, ns, model, tag));
  const latestImport = imported.sort((a, b) => (a.manifest.created < b.manifest.created ? -1 : 1)).at(-1);
  if (latestImport) return fromImport(ctx, latestImport);
  if (!NAME_NAMESPACES.has(ns)) return null;
  const versions = catalog.byName.get(model.toLowerCase());
  if (!versions) return null;
  // latest, vN, or a quantization tag picking one GGUF of a multi-quant repo (as llama.cpp's -hf does).
  const byVersion = versions.find((x) => `v${x.manifest.version}` === tag);
  if (byVersion) return generated(byVersion, 'latest');
  return generated(versions.at(-1)!, tag);
}

function servedBlobs(ctx: MirrorContext, ns: string, model: string): Map<string, BlobSource & { version: CatalogVersion }> {
  const out = new Map<string, BlobSource & { version: CatalogVersion }>();
  const catalog = ctx.catalog();
  const add = (s: Served | null) => {
    if (s) for (const [d, b] of s.blobs) out.set(d, { ...b, version: s.version });
  };
  for (const v of [...catalog.byName.values()].flat()) {
    const src = v.manifest.source;
    if (src.kind === 'ollama' && src.namespace === ns && src.model === model) add(fromImport(ctx, v));
  }
  if (NAME_NAMESPACES.has(ns)) {
    for (const v of catalog.byName.get(model.toLowerCase()) ?? []) {
      for (const f of v.manifest.files) if (isGgufWeightsPath(f.path)) add(generated(v, f.path));
    }
  }
  return out;
}

function isOllamaImport(m: Manifest, ns: string, model: string, tag: string): boolean {
  const s = m.source;
  return s.kind === 'ollama' && s.namespace === ns && s.model === model && s.tag === tag && m.files.some((f) => f.path === 'ollama/manifest.json');
}

/** An Ollama import: its own manifest bytes; every layer it names is a file of the vault model. */
function fromImport(ctx: MirrorContext, v: CatalogVersion): Served | null {
  const entry = v.manifest.files.find((f) => f.path === 'ollama/manifest.json');
  if (!entry) return null;
  let bytes: Buffer;
  try {
    bytes = readFileSync(blobPath(ctx.layout, entry.sha256));
  } catch {
    ctx.warn(`${modelRefString(v.manifest)}: its Ollama manifest blob is unreadable; run "distillery vault verify ${modelRefString(v.manifest)}"`);
    return null;
  }
  const byDigest = new Map(v.manifest.files.map((f) => [f.sha256, f]));
  const blobs = new Map<string, BlobSource>();
  try {
    const parsed = JSON.parse(bytes.toString('utf8')) as { config: Layer; layers: Layer[] };
    for (const l of [parsed.config, ...parsed.layers]) {
      const hex = l.digest.slice('sha256:'.length);
      const file = byDigest.get(hex);
      if (file) blobs.set(hex, { kind: 'vault', file });
    }
  } catch {
    return null;
  }
  return { manifestBytes: bytes, blobs, version: v };
}

/**
 * The GGUF file a tag names in a vault GGUF model: `latest` picks as llama.cpp does (Q4_K_M first), another tag
 * a quantization (`Q8_0`), a file path itself (used to list blobs). Split sets are not an Ollama layer.
 */
function ggufWeights(m: Manifest, tag: string): ManifestFile | null {
  if (m.format !== 'gguf') return null;
  const models = m.files.filter((f) => isGgufWeightsPath(f.path));
  const f = models.find((x) => x.path === tag) ?? (models.length === 1 && tag === 'latest' ? models[0] : pickGguf(models, tag));
  return f && !/-\d{5}-of-\d{5}\.gguf$/.test(f.path) ? f : null;
}

/** A manifest built for a vault GGUF model: model layer, then template / params / licence where known. */
function generated(v: CatalogVersion, tag: string): Served | null {
  const m = v.manifest;
  const weights = ggufWeights(m, tag);
  if (!weights) return null;
  const blobs = new Map<string, BlobSource>([[weights.sha256, { kind: 'vault', file: weights }]]);
  const layers: Layer[] = [{ mediaType: LAYER('model'), digest: `sha256:${weights.sha256}`, size: weights.size }];
  const addText = (kind: string, text: string) => {
    const data = Buffer.from(text, 'utf8');
    const hex = sha256(data);
    blobs.set(hex, { kind: 'bytes', data });
    layers.push({ mediaType: LAYER(kind), digest: `sha256:${hex}`, size: data.length });
  };
  const family = templateFor(m.details?.chat_template ?? null);
  if (family) {
    addText('template', family.template);
    addText('params', JSON.stringify({ stop: family.stop }));
  }
  if (m.license) addText('license', `${m.license}\n`);
  const config = Buffer.from(JSON.stringify({
    model_format: 'gguf', model_family: m.architecture ?? '', model_families: m.architecture ? [m.architecture] : [],
    model_type: m.parameters === null ? '' : sizeLabel(m.parameters), file_type: m.details?.quantization ?? '',
    architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
  }));
  const configHex = sha256(config);
  blobs.set(configHex, { kind: 'bytes', data: config });
  const manifest = { schemaVersion: 2, mediaType: MANIFEST_TYPE, config: { mediaType: CONFIG_TYPE, digest: `sha256:${configHex}`, size: config.length }, layers };
  return { manifestBytes: Buffer.from(JSON.stringify(manifest)), blobs, version: v };
}

/** 7615616512 → "7.6B", as Ollama labels model sizes. */
function sizeLabel(n: number): string {
  const units: Array<[number, string]> = [[1e12, 'T'], [1e9, 'B'], [1e6, 'M'], [1e3, 'K']];
  for (const [d, u] of units) if (n >= d) return `${(n / d).toFixed(n / d < 10 ? 1 : 0)}${u}`;
  return String(n);
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Small in-memory bodies (manifests, generated layers), with the same Range handling as vault blobs. */
function sendBytes(req: MirrorRequest, res: ServerResponse, data: Buffer, headers: Record<string, string>): void {
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
  res.setHeader('Accept-Ranges', 'bytes');
  const range = parseRange(req.headers.range, data.length);
  if (range.kind === 'unsatisfiable') {
    sendError(req, res, 416, `range ${printable(req.headers.range ?? '', 100)} is outside the blob (${data.length} bytes)`, { 'Content-Range': `bytes */${data.length}` });
    return;
  }
  if (range.kind !== 'range') {
    sendBody(req, res, 200, data, {});
    return;
  }
  const body = data.subarray(range.start, range.end + 1);
  sendBody(req, res, 206, body, { 'Content-Range': `bytes ${range.start}-${range.end}/${data.length}` });
}
