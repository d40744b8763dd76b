import { UserError } from '../core/errors.js';
import { sha256Hex } from '../core/hash.js';
import type { EngineWorker } from '../engine/worker.js';
import { EngineSampler } from '../sampling/engine.js';
import { HttpSampler } from '../sampling/http.js';
import { LlamaSampler } from '../sampling/llama.js';
import { SAMPLER_KINDS, type Sampler, type SamplerKind } from '../sampling/sampler.js';
import { getManifest, listModels } from '../vault/vault.js';

/**
 * The sampler the flags of addSamplerOptions ask for, and the identity its samples are cached under: the
 * vault digest for the engine; for an HTTP server (whose weights Distillery cannot see) the endpoint and
 * model name, so its samples are never mixed with a local model's.
 */
/** Checks the sampler flags alone (before any work starts); returns the backend asked for. */
export function checkSamplerFlags(opts: Record<string, unknown>): SamplerKind {
  const kind = (opts.sampler as string | undefined) ?? 'engine';
  if (!(SAMPLER_KINDS as readonly string[]).includes(kind)) throw new UserError(`unknown --sampler ${JSON.stringify(kind)}: use ${SAMPLER_KINDS.join(', ')}`);
  const httpOnly = ['endpoint', 'endpointModel'].filter((k) => opts[k] !== undefined);
  if (kind !== 'http' && httpOnly.length > 0) throw new UserError(`--${httpOnly.map(kebab).join(', --')} applies to --sampler http only`);
  if (kind === 'engine' && opts.concurrency !== undefined) throw new UserError('--concurrency applies to --sampler http and llama');
  if (kind !== 'llama' && opts.gguf !== undefined) throw new UserError('--gguf applies to --sampler llama only');
  if (kind === 'http' && opts.endpoint === undefined) throw new UserError('--sampler http needs --endpoint URL', 'e.g. --endpoint http://127.0.0.1:8000/v1');
  return kind as SamplerKind;
}

/**
 * The GGUF model llama.cpp samples for a vault model: the model itself when it is GGUF, else `explicit`, else
 * its newest GGUF export (a vault model whose lineage parent is it, made by `distillery export`).
 */
export function ggufFor(ref: string, explicit: string | undefined, home?: string): string {
  if (explicit !== undefined) return explicit;
  const m = getManifest(ref, home);
  if (m.format === 'gguf') return ref;
  const exports = listModels(undefined, home).filter((r) => r.format === 'gguf' && r.parent_digest === m.digest);
  const newest = exports.sort((a, b) => (a.created < b.created ? -1 : 1)).at(-1);
  if (!newest) throw new UserError(`--sampler llama needs a GGUF of ${ref}, and the vault has none`, `make one: distillery export ${ref} --type f16 (or pass --gguf REF)`);
  return `${newest.name}:${newest.version}`;
}

export async function samplerFromFlags(
  opts: Record<string, unknown>,
  local: { worker: EngineWorker; dir: string; digest: string; ref: string } | null,
): Promise<{ sampler: Sampler; identity: string }> {
  const kind = checkSamplerFlags(opts);
  if (kind === 'engine') {
    if (local === null) throw new Error('the engine sampler needs a local model');
    return { sampler: new EngineSampler(local.worker, local.dir), identity: local.digest };
  }
  if (kind === 'llama') {
    if (local === null) throw new Error('the llama sampler needs a vault model');
    const gguf = ggufFor(local.ref, opts.gguf as string | undefined);
    const digest = getManifest(gguf).digest;
    // The GGUF's own digest: its results belong to that vault model (report finds them under it).
    return { sampler: new LlamaSampler(gguf, { concurrency: opts.concurrency as number | undefined }), identity: digest };
  }
  const sampler = new HttpSampler({ endpoint: opts.endpoint as string, model: opts.endpointModel as string | undefined, concurrency: opts.concurrency as number | undefined });
  const model = await sampler.resolveModel();
  return { sampler, identity: `http:${sha256Hex(JSON.stringify({ ...sampler.identity(), model }))}` };
}

function kebab(k: string): string {
  return k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}
