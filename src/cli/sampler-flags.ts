import { UserError } from '../core/errors.js';
import { sha256Hex } from '../core/hash.js';
import type { EngineWorker } from '../engine/worker.js';
import { EngineSampler } from '../sampling/engine.js';
import { HttpSampler } from '../sampling/http.js';
import type { Sampler } from '../sampling/sampler.js';

/**
 * The sampler the flags of addSamplerOptions ask for, and the identity its samples are cached under: the
 * vault digest for the engine; for an HTTP server (whose weights Distillery cannot see) the endpoint and
 * model name, so its samples are never mixed with a local model's.
 */
/** Checks the sampler flags alone (before any work starts); returns the backend asked for. */
export function checkSamplerFlags(opts: Record<string, unknown>): 'engine' | 'http' {
  const kind = (opts.sampler as string | undefined) ?? 'engine';
  if (kind !== 'engine' && kind !== 'http') throw new UserError(`unknown --sampler ${JSON.stringify(kind)}: use engine or http`);
  const httpOnly = ['endpoint', 'endpointModel', 'concurrency'].filter((k) => opts[k] !== undefined);
  if (kind === 'engine' && httpOnly.length > 0) throw new UserError(`--${httpOnly.map(kebab).join(', --')} applies to --sampler http only`);
  if (kind === 'http' && opts.endpoint === undefined) throw new UserError('--sampler http needs --endpoint URL', 'e.g. --endpoint http://127.0.0.1:8000/v1');
  return kind;
}

export async function samplerFromFlags(
  opts: Record<string, unknown>,
  local: { worker: EngineWorker; dir: string; digest: string } | null,
): Promise<{ sampler: Sampler; identity: string }> {
  if (checkSamplerFlags(opts) === 'engine') {
    if (local === null) throw new Error('the engine sampler needs a local model');
    return { sampler: new EngineSampler(local.worker, local.dir), identity: local.digest };
  }
  const sampler = new HttpSampler({ endpoint: opts.endpoint as string, model: opts.endpointModel as string | undefined, concurrency: opts.concurrency as number | undefined });
  const model = await sampler.resolveModel();
  return { sampler, identity: `http:${sha256Hex(JSON.stringify({ ...sampler.identity(), model }))}` };
}

function kebab(k: string): string {
  return k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}
