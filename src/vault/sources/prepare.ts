import { existsSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { UserError } from '../../core/errors.js';
import type { PreparedImport } from '../importer.js';
import type { VaultLayout } from '../layout.js';
import type { ModelSource } from '../manifest.js';
import { inspectModelFolder } from '../model-folder.js';
import { suggestModelName } from '../names.js';
import { locateHfCacheRevision, looksLikeHfCache } from './hf-cache.js';
import { isAdapterFolder, preparePeftAdapter } from './peft.js';
import { ggufSetsIn, prepareGgufFile, prepareGgufFolder } from './gguf-source.js';
import { isOllamaModelsFolder, listOllamaModels, ollamaDisplayName, prepareOllamaModel } from './ollama.js';

/**
 * `vault import PATH` reads whatever PATH is: a Hugging Face model folder, a Hugging Face cache (repo
 * folder, snapshot or hub root with --repo), or a PEFT adapter folder. Each reader checks everything
 * before the importer writes a byte.
 */

export type SourceKind = 'hf-folder' | 'hf-cache' | 'peft-adapter' | 'gguf' | 'ollama';

export interface SourceOptions {
  /** Hugging Face cache: the repo id under a hub root, and the revision (ref, commit or prefix). */
  repo?: string;
  revision?: string;
  /** Adapters: the vault model they belong to. */
  base?: string;
  /** A folder of GGUF files: which model (file name or split-set name). */
  file?: string;
  /** An Ollama models folder: which model (MODEL[:TAG]). */
  model?: string;
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
    if (abs.toLowerCase().endsWith('.gguf')) return 'gguf';
    throw new UserError(`${abs} is a file, and not a .gguf file`, 'import a GGUF file, or the folder that holds a model (Hugging Face folder or cache, adapter, Ollama models folder)');
  }
  if (isOllamaModelsFolder(abs)) return 'ollama';
  if (looksLikeHfCache(abs)) return 'hf-cache';
  return folderKind(abs);
}

/** What a plain folder holds: an adapter, a Hugging Face model, or (no config.json) GGUF files. */
function folderKind(dir: string): SourceKind {
  if (isAdapterFolder(dir)) return 'peft-adapter';
  if (!existsSync(join(dir, 'config.json')) && ggufSetsIn(dir).length > 0) return 'gguf';
  return 'hf-folder';
}

function checkOptions(kind: SourceKind, opts: SourceOptions): void {
  // hf-cache resolves to a folder of another kind, so it accepts what those accept.
  const allowed: Record<SourceKind, Array<keyof SourceOptions>> = {
    'hf-folder': [],
    'hf-cache': ['repo', 'revision', 'base', 'file'],
    'peft-adapter': ['base'],
    gguf: ['file'],
    ollama: ['model'],
  };
  for (const k of ['repo', 'revision', 'base', 'file', 'model'] as const) {
    if (opts[k] !== undefined && !allowed[kind].includes(k)) throw new UserError(`--${k} does not apply to ${describeKind(kind)}`);
  }
}

export function describeKind(kind: SourceKind): string {
  return {
    'hf-folder': 'a Hugging Face model folder',
    'hf-cache': 'a Hugging Face cache',
    'peft-adapter': 'a PEFT adapter folder',
    gguf: 'GGUF files',
    ollama: 'an Ollama models folder',
  }[kind];
}

export async function prepareSource(layout: VaultLayout, path: string, opts: SourceOptions = {}): Promise<Prepared> {
  const kind = detectSource(path);
  checkOptions(kind, opts);
  const notes: string[] = [];
  switch (kind) {
    case 'ollama': {
      const models = listOllamaModels(path);
      const model = opts.model ?? (models.length === 1 ? ollamaDisplayName(models[0]!) : undefined);
      if (model === undefined) {
        throw new UserError(
          `${resolve(path)} is an Ollama models folder with ${models.length} model(s); choose one with --model, or import every one with --all`,
          models.length > 0 ? `models there: ${models.map(ollamaDisplayName).join(', ')}` : undefined,
        );
      }
      const p = await prepareOllamaModel(path, model, opts);
      return { ...p, kind, suggestedName: p.suggested, notes };
    }
    case 'gguf': {
      const p = statSync(path).isDirectory() ? await prepareGgufFolder(path, opts) : await prepareGgufFile(path, opts);
      return { ...p, kind, suggestedName: suggestModelName(p.suggested), notes };
    }
    case 'hf-cache': {
      const rev = locateHfCacheRevision(path, opts);
      const source = { kind: 'hf-cache', repo_id: rev.repoId, revision: rev.commit, path: rev.repoDir };
      const repoName = suggestModelName(rev.repoId.split('/').at(-1) ?? '');
      if (folderKind(rev.dir) === 'gguf') {
        const p = await prepareGgufFolder(rev.dir, opts);
        return { ...p, source: { ...source, file: p.source.file }, kind, suggestedName: suggestModelName(p.suggested) ?? repoName, notes };
      }
      if (opts.file !== undefined) throw new UserError('--file applies to folders of GGUF files only');
      const p = await prepareFolder(layout, rev.dir, opts, source);
      return { ...p, kind, suggestedName: repoName };
    }
    default:
      return prepareFolder(layout, path, opts, null);
  }
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
