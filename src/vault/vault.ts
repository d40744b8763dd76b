/**
 * The vault's public API. Every function takes the Distillery home as its last argument (default:
 * DISTILLERY_HOME or ~/.distillery), so callers and tests can point it anywhere.
 */
import { distilleryHome } from '../core/paths.js';
import { vaultLayout } from './layout.js';
import { importModel as importInto, registerModel as registerInto, type ImportOptions, type RegisterOptions } from './importer.js';
import { lookupManifest, resolveModel as resolveIn, type ResolvedModel } from './refs.js';
import { verifyVault as verifyIn, type VerifyProgress, type VerifyReport } from './verify.js';
import { queryByDigest, queryModels, rebuildIndex as rebuildIn, withIndex, type ModelRow, type RebuildResult } from './index-db.js';
import { materializeView } from './views.js';
import type { Manifest } from './manifest.js';
import { importPrepared } from './importer.js';
import { detectSource, prepareSource, type SourceKind, type SourceOptions } from './sources/prepare.js';
import { listOllamaModels, ollamaDisplayName } from './sources/ollama.js';
import { collectGarbage as gcIn, type GcReport } from './gc.js';
import { lineageTree as treeIn, type TreeNode } from './tree.js';
import { UserError } from '../core/errors.js';
import { validateModelName } from './names.js';

export type { ImportOptions, ImportProgress, RegisterOptions } from './importer.js';
export type { ResolvedModel, ParsedRef } from './refs.js';
export type { VerifyProgress, VerifyReport, DamagedBlob, BlobProblem } from './verify.js';
export type { ModelRow, RebuildResult } from './index-db.js';
export type { Manifest, ManifestFile, Lineage, ModelSource, ModelFormat } from './manifest.js';
export { MANIFEST_SCHEMA, modelDigest, modelSize, modelRefString } from './manifest.js';
export { validateModelName, isValidModelName } from './names.js';
export { inspectModelFolder, type ModelFolderInfo } from './model-folder.js';
export { vaultLayout, type VaultLayout } from './layout.js';
export type { GcReport } from './gc.js';
export type { TreeNode } from './tree.js';
export type { SourceKind, SourceOptions } from './sources/prepare.js';

export interface ImportFromOptions extends SourceOptions, Omit<ImportOptions, 'name'> {
  /** Defaults to a name derived from the source (the repo or folder name). */
  name?: string;
}

/**
 * Imports whatever `path` is (Hugging Face model folder or cache, PEFT adapter folder) as the next version of
 * a model. Returns the manifest, the kind of source read, and notes for the person importing.
 */
export async function importFrom(path: string, opts: ImportFromOptions, home: string = distilleryHome()): Promise<{ manifest: Manifest; kind: SourceKind; notes: string[] }> {
  const layout = vaultLayout(home);
  if (opts.name !== undefined) validateModelName(opts.name); // a typo'd name fails before any reading
  const prepared = await prepareSource(layout, path, opts);
  const name = opts.name ?? prepared.suggestedName;
  if (name === null) throw new UserError(`cannot derive a model name from ${path}`, 'pass --name NAME');
  const manifest = await importPrepared(layout, prepared, { ...opts, name });
  return { manifest, kind: prepared.kind, notes: prepared.notes };
}

/** Imports every model of an Ollama models folder (each under its own derived name). */
export async function importAllOllama(path: string, opts: Omit<ImportFromOptions, 'name' | 'model'>, home: string = distilleryHome()): Promise<Array<{ manifest: Manifest; kind: SourceKind; notes: string[] }>> {
  if (detectSource(path) !== 'ollama') throw new UserError(`--all imports every model of an Ollama models folder; ${path} is not one`);
  const out = [];
  for (const m of listOllamaModels(path)) out.push(await importFrom(path, { ...opts, model: ollamaDisplayName(m) }, home));
  return out;
}

/** Removes blobs no model uses (see gc.ts); `dryRun` only reports. */
export function collectGarbage(opts: { dryRun?: boolean } = {}, home: string = distilleryHome()): GcReport {
  return gcIn(vaultLayout(home), opts);
}

/** The lineage forest, or the tree containing `ref`. */
export function lineageTree(ref?: string, home: string = distilleryHome()): TreeNode[] {
  return treeIn(vaultLayout(home), ref);
}

/** Imports a Hugging Face model folder as the next version of `opts.name`. Returns its manifest. */
export function importModel(dir: string, opts: ImportOptions, home: string = distilleryHome()): Promise<Manifest> {
  return importInto(vaultLayout(home), dir, opts);
}

/** Registers a recipe's output folder with its lineage (the parent's license is inherited by default). */
export function registerModel(dir: string, opts: RegisterOptions, home: string = distilleryHome()): Promise<Manifest> {
  return registerInto(vaultLayout(home), dir, opts);
}

/** `NAME`, `NAME:VERSION` or a folder path → a folder the engine can load (a view of symlinks for vault models). */
export function resolveModel(ref: string, home: string = distilleryHome()): Promise<ResolvedModel> {
  return resolveIn(ref, vaultLayout(home));
}

/** The manifest of a vault reference (`NAME` or `NAME:VERSION`), without building a view. */
export function getManifest(ref: string, home: string = distilleryHome()): Manifest {
  return lookupManifest(ref, vaultLayout(home));
}

/** The view folder of a manifest, built or repaired on demand. */
export function modelView(manifest: Manifest, home: string = distilleryHome()): string {
  return materializeView(vaultLayout(home), manifest);
}

/** All models (every version), or the versions of one name, from the index. */
export function listModels(name?: string, home: string = distilleryHome()): ModelRow[] {
  return withIndex(vaultLayout(home), (db) => queryModels(db, name));
}

/** Models whose content digest is `digest` (lineage parents are recorded by digest). */
export function findModelsByDigest(digest: string, home: string = distilleryHome()): ModelRow[] {
  return withIndex(vaultLayout(home), (db) => queryByDigest(db, digest));
}

/** Re-hashes every blob of the selected model (or all models) and reports what is damaged. */
export function verifyVault(ref?: string, onProgress?: (p: VerifyProgress) => void, home: string = distilleryHome()): Promise<VerifyReport> {
  return verifyIn(vaultLayout(home), ref, onProgress);
}

/** Recreates the SQLite index from the manifests. */
export function rebuildIndex(home: string = distilleryHome()): RebuildResult {
  return rebuildIn(vaultLayout(home));
}
