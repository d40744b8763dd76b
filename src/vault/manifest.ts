import { readdirSync, readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { showValue, UserError } from '../core/errors.js';
import { isSha256Hex, sha256Hex } from '../core/hash.js';
import { writeFileAtomicSync } from '../core/atomic.js';
import { isValidModelName } from './names.js';
import { manifestPath, type VaultLayout } from './layout.js';

/**
 * Manifests (`models/<name>/<version>.json`) are the truth about what a model is; the SQLite index and the
 * views are derived from them and can be thrown away.
 */

export const MANIFEST_SCHEMA = 1;

export type ModelFormat = 'hf-safetensors' | 'hf-pytorch' | 'gguf' | 'peft-adapter';
export const MODEL_FORMATS: readonly ModelFormat[] = ['hf-safetensors', 'hf-pytorch', 'gguf', 'peft-adapter'];

/** Format-specific facts read at import (what `vault list/show` and the mirror need without opening files). */
export interface ModelDetails {
  /** The context length the model was built for (config.json max_position_embeddings, GGUF <arch>.context_length). */
  context_length?: number | null;
  /** GGUF: the weights' file type, e.g. "Q4_K_M" or "F16". */
  quantization?: string | null;
  /** The chat template (tokenizer_config.json or tokenizer.chat_template in GGUF). */
  chat_template?: string | null;
  /** Adapters: the base model named in adapter_config.json and the vault model it matched, if any. */
  base_model?: { name: string | null; ref: string | null; digest: string | null } | null;
}

export interface ManifestFile {
  /** Relative path inside the model folder, '/'-separated on every OS. */
  path: string;
  sha256: string;
  size: number;
}

export interface ModelSource {
  kind: string;
  path?: string;
  [key: string]: unknown;
}

export interface Lineage {
  parent: { ref: string; digest: string };
  run_id: string;
  recipe: Record<string, unknown>;
  evaluation: Record<string, unknown>;
}

/** What is read off a model folder itself (config, weight headers, README); stored in its manifest. */
export interface ModelMetadata {
  format: ModelFormat;
  architecture: string | null;
  model_type: string | null;
  parameters: number | null;
  dtype: string | null;
  license: string | null;
  details: ModelDetails | null;
}

export interface Manifest extends ModelMetadata {
  schema: 1;
  name: string;
  version: number;
  created: string;
  digest: string;
  source: ModelSource;
  files: ManifestFile[];
  lineage: Lineage | null;
}

/** Byte order of the UTF-8 paths, so every implementation (TS, Python) sorts the same way. */
export function comparePaths(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** The model's identity: sha256 of `path\tsha256\n` lines sorted by path. Independent of names/versions. */
export function modelDigest(files: readonly Pick<ManifestFile, 'path' | 'sha256'>[]): string {
  const lines = [...files].sort((a, b) => comparePaths(a.path, b.path)).map((f) => `${f.path}\t${f.sha256}\n`);
  return sha256Hex(lines.join(''));
}

export function modelSize(m: Pick<Manifest, 'files'>): number {
  return m.files.reduce((s, f) => s + f.size, 0);
}

export function modelRefString(m: Pick<Manifest, 'name' | 'version'>): string {
  return `${m.name}:${m.version}`;
}

/** A manifest path must stay inside the model folder: views are built from these paths. */
export function isSafeRelativePath(p: string): boolean {
  if (p.length === 0 || p.startsWith('/') || p.includes('\\') || p.includes('\0')) return false;
  return p.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..');
}

export function validateLineage(l: unknown, where: string): Lineage {
  const bad = (why: string) => new UserError(`${where}: invalid lineage: ${why}`);
  if (!isObject(l)) throw bad('expected an object');
  const parent = l.parent;
  if (!isObject(parent) || typeof parent.ref !== 'string' || !isSha256Hex(parent.digest)) {
    throw bad('parent must be {ref: string, digest: 64 hex characters}');
  }
  if (typeof l.run_id !== 'string' || l.run_id.length === 0) throw bad('run_id must be a non-empty string');
  if (!isObject(l.recipe)) throw bad('recipe must be an object');
  if (!isObject(l.evaluation)) throw bad('evaluation must be an object');
  return l as unknown as Lineage;
}

/** Parses and checks a manifest; `where` (usually its path) prefixes every error. */
export function parseManifest(text: string, where: string): Manifest {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${where}: manifest is not valid JSON (${(e as Error).message})`);
  }
  const bad = (why: string) => new UserError(`${where}: invalid manifest: ${why}`);
  if (!isObject(m)) throw bad('expected a JSON object');
  if (m.schema !== MANIFEST_SCHEMA) throw bad(`unsupported schema ${showValue(m.schema)} (this Distillery reads schema ${MANIFEST_SCHEMA})`);
  if (typeof m.name !== 'string' || !isValidModelName(m.name)) throw bad('bad name');
  if (!Number.isSafeInteger(m.version) || (m.version as number) < 1) throw bad('version must be an integer ≥ 1');
  if (typeof m.created !== 'string') throw bad('created must be a string');
  if (!isSha256Hex(m.digest)) throw bad('digest must be 64 hex characters');
  if (!MODEL_FORMATS.includes(m.format as ModelFormat)) throw bad(`unknown format ${showValue(m.format)}`);
  if (!Array.isArray(m.files) || m.files.length === 0) throw bad('files must be a non-empty list');
  for (const f of m.files as unknown[]) {
    if (!isObject(f) || typeof f.path !== 'string' || !isSafeRelativePath(f.path) || !isSha256Hex(f.sha256) || !Number.isSafeInteger(f.size) || (f.size as number) < 0) {
      throw bad(`bad file entry ${showValue(f)}`);
    }
  }
  if (!isObject(m.source) || typeof m.source.kind !== 'string') throw bad('source must be {kind, ...}');
  for (const k of ['architecture', 'model_type', 'dtype', 'license'] as const) {
    if (m[k] !== null && typeof m[k] !== 'string') throw bad(`${k} must be a string or null`);
  }
  if (m.parameters !== null && !Number.isSafeInteger(m.parameters)) throw bad('parameters must be an integer or null');
  if (m.lineage !== null) validateLineage(m.lineage, where);
  // Manifests written before `details` existed simply have none.
  if (m.details === undefined) m.details = null;
  if (m.details !== null && !isObject(m.details)) throw bad('details must be an object or null');
  return m as unknown as Manifest;
}

export function readManifest(layout: VaultLayout, name: string, version: number): Manifest {
  const path = manifestPath(layout, name, version);
  const m = parseManifest(readFileSync(path, 'utf8'), path);
  if (m.name !== name || m.version !== version) {
    throw new UserError(`${path}: manifest says ${m.name}:${m.version}, but its location says ${name}:${version}`);
  }
  return m;
}

/** Stable, readable JSON: the key order of the Manifest interface, two-space indent, trailing newline. */
export function serializeManifest(m: Manifest): string {
  const ordered: Manifest = {
    schema: m.schema, name: m.name, version: m.version, created: m.created, digest: m.digest, format: m.format,
    architecture: m.architecture, model_type: m.model_type, parameters: m.parameters, dtype: m.dtype,
    license: m.license, details: m.details, source: m.source, files: m.files, lineage: m.lineage,
  };
  return JSON.stringify(ordered, null, 2) + '\n';
}

/**
 * Writes a new manifest, never replacing one: fails with EEXIST when that version already exists, which
 * lets concurrent imports of the same name race for version numbers safely.
 */
export function writeNewManifest(layout: VaultLayout, m: Manifest): string {
  const path = manifestPath(layout, m.name, m.version);
  mkdirSync(join(layout.modelsDir, m.name), { recursive: true });
  writeFileAtomicSync(path, serializeManifest(m), { mode: 0o444, exclusive: true });
  return path;
}

export interface ManifestLocation {
  name: string;
  version: number;
}

/** Which manifests exist, by directory listing alone (no parsing). */
export function listManifestLocations(layout: VaultLayout): ManifestLocation[] {
  const out: ManifestLocation[] = [];
  for (const name of readdirOrEmpty(layout.modelsDir)) {
    if (!isValidModelName(name)) continue;
    for (const file of readdirOrEmpty(join(layout.modelsDir, name))) {
      const m = /^([1-9][0-9]*)\.json$/.exec(file);
      if (m) out.push({ name, version: Number(m[1]) });
    }
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.version - b.version));
}

export function versionsOf(layout: VaultLayout, name: string): number[] {
  return readdirOrEmpty(join(layout.modelsDir, name))
    .map((f) => /^([1-9][0-9]*)\.json$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

function readdirOrEmpty(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
    throw e;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
