import { existsSync, statSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { UserError } from '../../core/errors.js';
import type { PreparedImport } from '../importer.js';
import type { VaultLayout } from '../layout.js';
import type { ModelSource } from '../manifest.js';
import { inspectModelFolder } from '../model-folder.js';
import { suggestModelName } from '../names.js';
import { locateHfCacheRevision, looksLikeHfCache } from './hf-cache.js';
import { isAdapterFolder, preparePeftAdapter } from './peft.js';

/**
 * `vault import PATH` reads whatever PATH is: a Hugging Face model folder, a Hugging Face cache (repo
 * folder, snapshot or hub root with --repo), or a PEFT adapter folder. Each reader checks everything
 * before the importer writes a byte.
 */

export type SourceKind = 'hf-folder' | 'hf-cache' | 'peft-adapter';

export interface SourceOptions {
  /** Hugging Face cache: the repo id under a hub root, and the revision (ref, commit or prefix). */
  repo?: string;
  revision?: string;
  /** Adapters: the vault model they belong to. */
  base?: string;
  license?: string;
}

export interface Prepared extends PreparedImport {
  kind: SourceKind;
  /** A valid model name derived from the source, for when --name is not given. */
  suggestedName: string | null;
  /** Things the person should know (e.g. an adapter whose base is not in the vault). */
  notes: string[];
}

export function detectSource(path: string): SourceKind {
  const abs = resolve(path);
  if (!existsSync(abs)) throw new UserError(`not found: ${abs}`);
  if (!statSync(abs).isDirectory()) {
    throw new UserError(`${abs} is a file; vault import reads folders`, 'import the folder that holds it (a Hugging Face model folder or cache)');
  }
  if (looksLikeHfCache(abs)) return 'hf-cache';
  if (isAdapterFolder(abs)) return 'peft-adapter';
  return 'hf-folder';
}

function checkOptions(kind: SourceKind, opts: SourceOptions): void {
  const allowed: Record<SourceKind, Array<keyof SourceOptions>> = {
    'hf-folder': ['license'],
    'hf-cache': ['license', 'repo', 'revision', 'base'],
    'peft-adapter': ['license', 'base'],
  };
  for (const k of ['repo', 'revision', 'base'] as const) {
    if (opts[k] !== undefined && !allowed[kind].includes(k)) throw new UserError(`--${k} does not apply to a ${kind} source`);
  }
}

export async function prepareSource(layout: VaultLayout, path: string, opts: SourceOptions = {}): Promise<Prepared> {
  const kind = detectSource(path);
  checkOptions(kind, opts);
  if (kind !== 'hf-cache') return prepareFolder(layout, path, opts, null);
  const rev = locateHfCacheRevision(path, opts);
  const p = await prepareFolder(layout, rev.dir, opts, { kind: 'hf-cache', repo_id: rev.repoId, revision: rev.commit, path: rev.repoDir });
  return { ...p, kind, suggestedName: suggestModelName(rev.repoId.split('/').at(-1) ?? '') };
}

/** A model or adapter folder; `source` overrides the folder's own (for cache snapshots). */
async function prepareFolder(layout: VaultLayout, dir: string, opts: SourceOptions, source: ModelSource | null): Promise<Prepared> {
  const notes: string[] = [];
  const suggestedName = suggestModelName(basename(resolve(dir)));
  if (isAdapterFolder(dir)) {
    const p = await preparePeftAdapter(layout, dir, opts);
    const base = p.details?.base_model;
    if (!p.baseFound) {
      notes.push(`the adapter's base model${base?.name ? ` (${base.name})` : ''} is not in the vault: import it, then import the adapter again (or pass --base REF) to link them`);
    }
    return { ...p, source: source ?? p.source, kind: 'peft-adapter', suggestedName, notes };
  }
  if (opts.base !== undefined) throw new UserError('--base applies to adapter folders (adapter_config.json) only');
  const info = await inspectModelFolder(dir, { license: opts.license });
  return { ...info, source: source ?? { kind: 'local-dir', path: info.dir }, kind: 'hf-folder', suggestedName, notes };
}
