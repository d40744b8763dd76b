import { rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../core/errors.js';
import type { VaultLayout } from './layout.js';
import {
  modelDigest, validateLineage, versionsOf, writeNewManifest,
  MANIFEST_SCHEMA, type Lineage, type Manifest, type ManifestFile, type ModelMetadata, type ModelSource,
} from './manifest.js';
import { inspectModelFolder, type FolderFile } from './model-folder.js';
import { beginPending } from './pending.js';
import { validateModelName } from './names.js';
import { indexManifest, queryByDigest, withIndex } from './index-db.js';
import { hasBlob, putBlob, sweepStaleTemps, syncBlobDir } from './store.js';
import { removeUnreferenced } from './receive.js';

/**
 * Import = check everything, copy files into the blob store, then publish the manifest. The manifest is
 * written last and atomically, so until that moment the model does not exist; if anything fails before it,
 * the blobs this import added (and nothing else uses) are removed again.
 */

export interface ImportProgress {
  bytesDone: number;
  bytesTotal: number;
  /** The file being copied (relative path). */
  file: string;
}

export interface ImportOptions {
  name: string;
  /** Overrides the license found in README.md's front matter. */
  license?: string;
  /** Where the model came from; defaults to what the source reader recorded ({kind: 'local-dir', path} for folders). */
  source?: ModelSource;
  lineage?: Lineage | null;
  onProgress?: (p: ImportProgress) => void;
}

/** Test-only fault injection: runs after each file is stored, so a test can fail an import midway. */
export interface ImportHooks {
  afterFile?: (path: string) => void | Promise<void>;
}

const MAX_VERSION_RACES = 100;

/** A model ready to import: its files on disk, what was read off them, and where it came from. */
export interface PreparedImport extends ModelMetadata {
  files: FolderFile[];
  /** Recorded unless the caller's options override it. */
  source: ModelSource;
}

/** Imports a Hugging Face model folder (see inspectModelFolder) as the next version of `opts.name`. */
export async function importModel(layout: VaultLayout, dir: string, opts: ImportOptions, hooks: ImportHooks = {}): Promise<Manifest> {
  checkImportOptions(opts);
  const info = await inspectModelFolder(dir, { license: opts.license?.trim() });
  return importPrepared(layout, { ...info, source: { kind: 'local-dir', path: info.dir } }, opts, hooks);
}

function checkImportOptions(opts: ImportOptions): { name: string; lineage: Lineage | null; license: string | undefined } {
  const name = validateModelName(opts.name);
  const lineage = opts.lineage == null ? null : validateLineage(opts.lineage, `${name}`);
  const license = opts.license === undefined ? undefined : opts.license.trim();
  if (license === '') throw new UserError('--license must not be empty');
  return { name, lineage, license };
}

/**
 * Stores the prepared files and publishes the manifest. Files whose content the source names (`sha256`, e.g.
 * Ollama's `sha256-…` blobs) are checked after copying, so a damaged source is refused, not archived.
 */
export async function importPrepared(layout: VaultLayout, info: PreparedImport, opts: ImportOptions, hooks: ImportHooks = {}): Promise<Manifest> {
  // Everything that can be checked is checked before the first write.
  const { name, lineage, license } = checkImportOptions(opts);

  sweepStaleTemps(layout);
  const pending = beginPending(layout, `import ${name}`);
  const bytesTotal = info.files.reduce((s, f) => s + f.size, 0);
  let bytesDone = 0;
  const created = new Set<string>();
  const files: ManifestFile[] = [];
  try {
    for (const f of info.files) {
      opts.onProgress?.({ bytesDone, bytesTotal, file: f.path });
      const blob = await putBlob(layout, f.abs, {
        syncDir: false,
        onBytes: (n) => {
          bytesDone += n;
          opts.onProgress?.({ bytesDone, bytesTotal, file: f.path });
        },
      });
      if (blob.created) created.add(blob.sha256);
      if (blob.size !== f.size) {
        throw new UserError(`${f.abs} changed while it was being imported (${f.size} bytes before, ${blob.size} after)`, 'import again once the folder is no longer being written');
      }
      if (f.sha256 !== undefined && blob.sha256 !== f.sha256) {
        throw new UserError(`${f.abs} is damaged: its content hashes to sha256 ${blob.sha256}, but the source names it ${f.sha256}`, 'restore the source (e.g. pull the model again) and import again');
      }
      files.push({ path: f.path, sha256: blob.sha256, size: blob.size });
      await hooks.afterFile?.(f.path);
    }
    // A concurrent import that failed may have removed a blob we deduplicated against; put it back.
    for (const [i, f] of files.entries()) {
      if (!hasBlob(layout, f.sha256)) {
        const again = await putBlob(layout, info.files[i]!.abs, { syncDir: false });
        if (again.sha256 !== f.sha256) throw new UserError(`${info.files[i]!.abs} changed while it was being imported`);
        created.add(again.sha256);
      }
    }
    await syncBlobDir(layout); // blobs durable before a manifest can point at them

    const base = {
      schema: MANIFEST_SCHEMA, name, created: new Date().toISOString(), digest: modelDigest(files),
      format: info.format, architecture: info.architecture, model_type: info.model_type,
      parameters: info.parameters, dtype: info.dtype, license: license ?? info.license, details: info.details,
      source: opts.source ?? info.source, files, lineage,
    } as const;
    // Versions are claimed by creating the manifest file exclusively; losing a race just means retrying
    // with the next number.
    for (let attempt = 0; ; attempt++) {
      const version = (versionsOf(layout, name).at(-1) ?? 0) + 1;
      const manifest: Manifest = { ...base, version };
      try {
        writeNewManifest(layout, manifest);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST' && attempt < MAX_VERSION_RACES) continue;
        throw e;
      }
      try {
        indexManifest(layout, manifest);
      } catch {
        // The manifest is the truth and already published; the index notices it is behind and rebuilds.
      }
      return manifest;
    }
  } catch (e) {
    removeUnreferenced(layout, created);
    try {
      rmdirSync(join(layout.modelsDir, name)); // only succeeds if this import left it empty
    } catch {
      /* not empty or not there */
    }
    throw e;
  } finally {
    pending.end();
  }
}

export interface RegisterOptions {
  name: string;
  lineage: Lineage;
  source?: ModelSource;
  license?: string;
  onProgress?: (p: ImportProgress) => void;
}

/** Adds a recipe's output folder as the next version of `name`, recording where it came from. */
export async function registerModel(layout: VaultLayout, dir: string, opts: RegisterOptions): Promise<Manifest> {
  if (opts.lineage == null) throw new UserError(`registering ${opts.name}: lineage is required (use importModel for models without one)`);
  const lineage = validateLineage(opts.lineage, opts.name);
  // A derived model carries its parent's license unless told otherwise (recipe outputs have no model card).
  let license = opts.license;
  if (license === undefined) {
    const parents = withIndex(layout, (db) => queryByDigest(db, lineage.parent.digest));
    license = parents.find((p) => p.license !== null)?.license ?? undefined;
  }
  return importModel(layout, dir, { ...opts, lineage, license });
}
