import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { showValue, UserError } from '../../core/errors.js';
import { sha256Hex } from '../../core/hash.js';
import type { PreparedImport } from '../importer.js';
import type { FolderFile } from '../model-folder.js';
import { suggestModelName } from '../names.js';
import { ggufMetadata } from './gguf-source.js';

/**
 * An Ollama models folder (`$OLLAMA_MODELS`, default ~/.ollama/models): `manifests/<host>/<namespace>/<model>/<tag>`
 * (Docker-style JSON: a config blob and typed layers) and `blobs/sha256-<hex>`. A model becomes one vault
 * model: the weights layer as `model.gguf`, and everything Ollama needs to run it again under `ollama/` (the
 * raw manifest, the config, template, system prompt, params, licence, adapters, projector), so it can be
 * served back to Ollama byte for byte. Every blob is checked against the digest its manifest names.
 */

const DEFAULT_HOST = 'registry.ollama.ai';
const DEFAULT_NAMESPACE = 'library';
const MEDIA_PREFIX = 'application/vnd.ollama.image.';

export interface OllamaModelName {
  host: string;
  namespace: string;
  model: string;
  tag: string;
}

export function isOllamaModelsFolder(dir: string): boolean {
  return existsSync(join(dir, 'manifests')) && existsSync(join(dir, 'blobs'));
}

/** `qwen3`, `qwen3:8b`, `library/qwen3:8b`, `host/ns/model:tag` → its four parts (Ollama's defaults fill in). */
export function parseOllamaName(name: string): OllamaModelName {
  const m = /^(?:(?:([^/]+)\/)?([^/:]+)\/)?([^/:]+)(?::([^/:]+))?$/.exec(name);
  if (!m) throw new UserError(`invalid Ollama model name ${JSON.stringify(name)}`, 'use MODEL, MODEL:TAG, NAMESPACE/MODEL:TAG or HOST/NAMESPACE/MODEL:TAG');
  return { host: m[1] ?? DEFAULT_HOST, namespace: m[2] ?? DEFAULT_NAMESPACE, model: m[3]!, tag: m[4] ?? 'latest' };
}

/** How a model is usually written: the defaults left out (`qwen3:8b`, `hf.co/user/repo:Q4_K_M`). */
export function ollamaDisplayName(n: OllamaModelName): string {
  const prefix = n.host === DEFAULT_HOST ? (n.namespace === DEFAULT_NAMESPACE ? '' : `${n.namespace}/`) : `${n.host}/${n.namespace}/`;
  return `${prefix}${n.model}:${n.tag}`;
}

/** Every model:tag in the folder. */
export function listOllamaModels(root: string): OllamaModelName[] {
  const out: OllamaModelName[] = [];
  const dirs = (p: string) => {
    try {
      return readdirSync(p).filter((n) => !n.startsWith('.') && statSync(join(p, n)).isDirectory());
    } catch {
      return [];
    }
  };
  const base = join(root, 'manifests');
  for (const host of dirs(base)) {
    for (const namespace of dirs(join(base, host))) {
      for (const model of dirs(join(base, host, namespace))) {
        for (const tag of readdirSync(join(base, host, namespace, model))) {
          if (!tag.startsWith('.') && statSync(join(base, host, namespace, model, tag)).isFile()) out.push({ host, namespace, model, tag });
        }
      }
    }
  }
  return out.sort((a, b) => (ollamaDisplayName(a) < ollamaDisplayName(b) ? -1 : 1));
}

interface Layer {
  mediaType: string;
  digest: string;
  size: number;
}

function parseDigest(d: unknown, where: string): string {
  const m = typeof d === 'string' ? /^sha256:([0-9a-f]{64})$/.exec(d) : null;
  if (!m) throw new UserError(`${where}: bad digest ${showValue(d)} (expected sha256:<64 hex>)`);
  return m[1]!;
}

/** Reads and checks an Ollama manifest; `where` names it in errors. */
export function parseOllamaManifest(text: string, where: string): { config: Layer; layers: Layer[] } {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${where}: not valid JSON (${(e as Error).message})`);
  }
  const obj = v as { schemaVersion?: unknown; config?: unknown; layers?: unknown };
  if (typeof v !== 'object' || v === null || obj.schemaVersion !== 2) throw new UserError(`${where}: not an Ollama manifest (schemaVersion 2 expected)`);
  const layer = (l: unknown, what: string): Layer => {
    const x = l as Partial<Layer>;
    if (typeof l !== 'object' || l === null || typeof x.mediaType !== 'string' || !Number.isSafeInteger(x.size) || (x.size as number) < 0) {
      throw new UserError(`${where}: ${what} must be {mediaType, digest, size}`);
    }
    parseDigest(x.digest, `${where}: ${what}`);
    return x as Layer;
  };
  if (!Array.isArray(obj.layers)) throw new UserError(`${where}: layers must be a list`);
  return { config: layer(obj.config, 'config'), layers: obj.layers.map((l, i) => layer(l, `layer ${i + 1}`)) };
}

/** Vault file names for the layers: the weights as model.gguf, the rest under ollama/ by kind. */
function layerPath(kind: string, seen: Map<string, number>): string {
  const n = (seen.get(kind) ?? 0) + 1;
  seen.set(kind, n);
  const suffix = n > 1 ? `-${n}` : '';
  if (kind === 'model') return `model${suffix}.gguf`;
  if (kind === 'adapter' || kind === 'projector' || kind === 'draft') return `ollama/${kind}${suffix}.gguf`;
  return `ollama/${kind}${suffix}`;
}

export async function prepareOllamaModel(root: string, model: string, opts: { license?: string } = {}): Promise<PreparedImport & { suggested: string | null; display: string }> {
  const abs = resolve(root);
  const name = parseOllamaName(model);
  const manifestFile = join(abs, 'manifests', name.host, name.namespace, name.model, name.tag);
  if (!existsSync(manifestFile)) {
    const have = listOllamaModels(abs).map(ollamaDisplayName);
    throw new UserError(`${ollamaDisplayName(name)} is not in the Ollama models folder ${abs}`, have.length > 0 ? `models there: ${have.join(', ')}` : 'the folder holds no models');
  }
  const raw = readFileSync(manifestFile, 'utf8');
  const { config, layers } = parseOllamaManifest(raw, manifestFile);
  const blob = (l: Layer, what: string): FolderFile & { sha256: string } => {
    const sha256 = parseDigest(l.digest, what);
    const p = join(abs, 'blobs', `sha256-${sha256}`);
    let size: number;
    try {
      size = statSync(p).size;
    } catch {
      throw new UserError(`${ollamaDisplayName(name)}: blob ${l.digest} (${what}) is missing from ${join(abs, 'blobs')}`, 'pull the model again with ollama, then import');
    }
    if (size !== l.size) throw new UserError(`${ollamaDisplayName(name)}: blob ${l.digest} (${what}) has ${size} bytes, the manifest says ${l.size}`);
    return { path: '', abs: p, size, sha256 };
  };
  const seen = new Map<string, number>();
  const files: FolderFile[] = [];
  let weights: string | null = null;
  for (const l of layers) {
    const kind = l.mediaType.startsWith(MEDIA_PREFIX) ? l.mediaType.slice(MEDIA_PREFIX.length) : null;
    if (kind === null || !/^[a-z0-9._-]+$/.test(kind)) throw new UserError(`${manifestFile}: unknown layer type ${JSON.stringify(l.mediaType)}`);
    if (kind === 'tensor') throw new UserError(`${ollamaDisplayName(name)} is stored as safetensors tensor layers, which Distillery does not import from Ollama yet`);
    const f = { ...blob(l, kind), path: layerPath(kind, seen) };
    if (kind === 'model' && weights === null) weights = f.abs;
    files.push(f);
  }
  if (weights === null) throw new UserError(`${ollamaDisplayName(name)} has no model layer (application/vnd.ollama.image.model)`);
  files.push({ ...blob(config, 'config'), path: 'ollama/config.json' });
  // The manifest's own bytes, so the mirror can serve exactly what Ollama wrote (Ollama names a manifest by
  // the sha256 of these bytes).
  files.push({ path: 'ollama/manifest.json', abs: manifestFile, size: Buffer.byteLength(raw), sha256: sha256Hex(raw) });

  const meta = await ggufMetadata([weights], opts.license);
  // Ollama keeps licences as text layers; the first line usually names the licence.
  const licenseLayer = files.find((f) => f.path === 'ollama/license');
  if (meta.license === null && licenseLayer && licenseLayer.size < 1 << 20) {
    const first = readFileSync(licenseLayer.abs, 'utf8').split('\n').map((l) => l.trim()).find((l) => l.length > 0);
    if (first) meta.license = first.length > 100 ? `${first.slice(0, 99)}…` : first;
  }
  const display = ollamaDisplayName(name);
  return {
    ...meta,
    files,
    source: { kind: 'ollama', path: abs, host: name.host, namespace: name.namespace, model: name.model, tag: name.tag },
    suggested: suggestModelName(name.tag === 'latest' ? name.model : `${name.model}-${name.tag}`),
    display,
  };
}
