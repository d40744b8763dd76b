import { existsSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, resolve, sep } from 'node:path';
import { UserError } from '../core/errors.js';
import { blobPath, type VaultLayout } from './layout.js';
import { readManifest, versionsOf, listManifestLocations, type Manifest } from './manifest.js';
import { isValidModelName } from './names.js';
import { materializeView } from './views.js';

/**
 * Model references: `NAME`, `NAME:VERSION` (latest when omitted) or a path to a model folder.
 * Names can't contain '/' or ':' or start with '.', so those forms never collide with paths.
 */

export type ParsedRef =
  | { kind: 'path'; path: string }
  | { kind: 'name'; name: string; version: number | null };

export type ResolvedModel =
  | { kind: 'vault'; manifest: Manifest; dir: string }
  | { kind: 'path'; dir: string };

function looksLikePath(ref: string): boolean {
  return ref.includes('/') || ref.includes(sep) || ref.startsWith('.') || ref.startsWith('~') || isAbsolute(ref);
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Syntax only, plus one check: a bare word that is not in the vault but is an existing folder is a path.
 * (A bare word that is both a vault name and a folder in the working directory means the vault model:
 * typing a name should not change meaning with the current directory.)
 */
export function parseModelRef(ref: string, layout: VaultLayout): ParsedRef {
  if (ref.length === 0) throw new UserError('empty model reference', 'use NAME, NAME:VERSION or a path to a model folder');
  if (looksLikePath(ref)) return { kind: 'path', path: ref };
  const m = /^([^:]+)(?::(.*))?$/.exec(ref);
  const name = m?.[1] ?? ref;
  const versionText = m?.[2];
  if (versionText === undefined) {
    if (!(isValidModelName(name) && versionsOf(layout, name).length > 0) && isDir(ref)) return { kind: 'path', path: ref };
    return { kind: 'name', name, version: null };
  }
  if (!/^[1-9][0-9]*$/.test(versionText)) {
    throw new UserError(`invalid model reference ${JSON.stringify(ref)}: the version after ':' must be a whole number from 1`);
  }
  return { kind: 'name', name, version: Number(versionText) };
}

/** Edit distance, for "did you mean" suggestions. */
function levenshtein(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

export function closeNames(name: string, names: readonly string[], max = 5): string[] {
  const limit = Math.max(2, Math.floor(name.length / 3));
  const distance = (n: string): number => {
    if (n.includes(name) || name.includes(n)) return 0;
    // A typo in the name's start ("storys" for "stories260k") counts as close too, ranked a little lower.
    const prefix = Math.min(...[-1, 0, 1].map((k) => levenshtein(name, n.slice(0, name.length + k))));
    return Math.min(levenshtein(name, n), prefix + 0.5);
  };
  return names
    .map((n) => ({ n, d: distance(n) }))
    .filter((x) => x.d <= limit + 0.5)
    .sort((a, b) => a.d - b.d || (a.n < b.n ? -1 : 1))
    .slice(0, max)
    .map((x) => x.n);
}

/** The manifest a vault reference names (no view is built). Paths are refused. */
export function lookupManifest(ref: string, layout: VaultLayout): Manifest {
  const parsed = parseModelRef(ref, layout);
  if (parsed.kind === 'path') throw new UserError(`${ref} is a folder path, not a vault model`, 'use NAME or NAME:VERSION (see "distillery vault list")');
  return manifestFor(parsed.name, parsed.version, layout);
}

function manifestFor(name: string, version: number | null, layout: VaultLayout): Manifest {
  const versions = isValidModelName(name) ? versionsOf(layout, name) : [];
  if (versions.length === 0) {
    const names = [...new Set(listManifestLocations(layout).map((l) => l.name))];
    const close = closeNames(name, names);
    throw new UserError(
      `no model named ${JSON.stringify(name)} in the vault (${layout.home})`,
      close.length > 0
        ? `did you mean ${close.join(', ')}?`
        : names.length > 0
          ? 'run "distillery vault list" to see the models'
          : 'the vault is empty; add a model with "distillery vault import DIR --name NAME"',
    );
  }
  const v = version ?? versions[versions.length - 1]!;
  if (!versions.includes(v)) {
    throw new UserError(`${name} has no version ${v}`, `versions: ${versions.join(', ')}`);
  }
  return readManifest(layout, name, v);
}

/** Files of `m` whose blobs are gone (a cheap existence check; `verify` does the full re-hash). */
export function missingBlobs(layout: VaultLayout, m: Manifest): string[] {
  return m.files.filter((f) => !existsSync(blobPath(layout, f.sha256))).map((f) => f.path);
}

/** Resolves a reference to a folder the engine can load: a vault view, or the given path. */
export async function resolveModel(ref: string, layout: VaultLayout): Promise<ResolvedModel> {
  const parsed = parseModelRef(ref, layout);
  if (parsed.kind === 'path') {
    const dir = resolve(/^~(\/|$)/.test(parsed.path) ? homedir() + parsed.path.slice(1) : parsed.path);
    if (!isDir(dir)) throw new UserError(`model folder not found: ${dir}`);
    return { kind: 'path', dir };
  }
  const manifest = manifestFor(parsed.name, parsed.version, layout);
  const missing = missingBlobs(layout, manifest);
  if (missing.length > 0) {
    const ref = `${manifest.name}:${manifest.version}`;
    throw new UserError(
      `${ref} is damaged: ${missing.length} file(s) missing from the blob store (${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', …' : ''})`,
      `run "distillery vault verify ${ref}" for details; re-import the model to restore it`,
    );
  }
  return { kind: 'vault', manifest, dir: materializeView(layout, manifest) };
}
