import { resolve } from 'node:path';
import type { EvalSummary } from '../eval/run.js';
import { UserError } from '../core/errors.js';
import { sha256File } from '../core/hash.js';
import {
  resolveModel, registerModel, importModel, inspectModelFolder, modelDigest, modelRefString, type Lineage, type ModelSource,
} from '../vault/vault.js';

/** A model as recipes and evaluation see it: a folder the engine loads, and the digest that identifies it. */
export interface ModelHandle {
  /** `NAME:VERSION` for vault models, the absolute folder for paths. */
  ref: string;
  dir: string;
  /** sha256 of the canonical file list (the vault's model digest), also computed for plain folders. */
  digest: string;
  /** Vault name, or null for a plain folder. */
  name: string | null;
}

/** The vault's digest of a folder that is not (yet) in the vault. */
export async function folderDigest(dir: string): Promise<string> {
  const info = await inspectModelFolder(dir);
  const files = [];
  for (const f of info.files) files.push({ path: f.path, sha256: (await sha256File(f.abs)).sha256 });
  return modelDigest(files);
}

/** Resolves `NAME`, `NAME:VERSION` or a folder path. */
export async function takeModel(ref: string, home?: string): Promise<ModelHandle> {
  const r = await resolveModel(ref, home);
  if (r.kind === 'vault') {
    return { ref: modelRefString(r.manifest), dir: r.dir, digest: r.manifest.digest, name: r.manifest.name };
  }
  const dir = resolve(r.dir);
  return { ref: dir, dir, digest: await folderDigest(dir), name: null };
}

/** The name a recipe's result is registered under: the one asked for, else a new version of the parent's. */
export function outputName(requested: string | null, parent: ModelHandle): string {
  const name = requested ?? parent.name;
  if (!name) {
    throw new UserError(
      `the model ${parent.ref} is a folder, not a vault model, so the result needs a name`,
      'pass --name NAME (or import the folder first with `distillery vault import`)',
    );
  }
  return name;
}

export interface RegisterDistilled {
  name: string;
  parent: ModelHandle;
  runId: string;
  recipe: Record<string, unknown>;
  /** Base and result scored with one decoding, when the run evaluated them. */
  evaluation: { base: EvalSummary; distilled: EvalSummary } | null;
  home?: string;
}

/** Stores a recipe's output as a new vault version whose lineage names the parent, run, recipe and results. */
export async function registerDistilled(dir: string, r: RegisterDistilled): Promise<string> {
  const lineage: Lineage = {
    parent: { ref: r.parent.ref, digest: r.parent.digest },
    run_id: r.runId,
    recipe: r.recipe,
    evaluation: r.evaluation
      ? {
          decoding: r.evaluation.base.decoding,
          n: r.evaluation.base.n,
          tasks: r.evaluation.base.tasks,
          base: r.evaluation.base.pass_at_k,
          distilled: r.evaluation.distilled.pass_at_k,
        }
      : {},
  };
  const m = await registerModel(dir, { name: r.name, lineage, source: { kind: 'distillery-run', run_id: r.runId } }, r.home);
  return modelRefString(m);
}

/** Imports a model without lineage (a base model), returning its `NAME:VERSION`. */
export async function importBase(dir: string, name: string, source: ModelSource, home?: string): Promise<string> {
  const m = await importModel(dir, { name, source }, home);
  return modelRefString(m);
}
