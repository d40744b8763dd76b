import { UserError } from '../core/errors.js';

/**
 * Decoding settings, named as the engine names them. Every sample, evaluation and report records the exact
 * object, and before/after comparisons are only made between identical objects.
 */
export interface Decoding {
  temperature: number;
  top_k: number;
  top_p: number;
  min_p: number;
  max_tokens: number;
  stop: string[];
  seed: number;
  chat_template: boolean;
}

export function checkDecoding(d: Decoding, what = 'decoding'): Decoding {
  const bad = (msg: string): never => {
    throw new UserError(`${what}: ${msg}`);
  };
  if (!(d.temperature >= 0) || !Number.isFinite(d.temperature)) bad(`temperature must be ≥ 0 (got ${d.temperature})`);
  if (!Number.isInteger(d.top_k) || d.top_k < 0) bad(`top-k must be a whole number ≥ 0, 0 = off (got ${d.top_k})`);
  if (!(d.top_p > 0 && d.top_p <= 1)) bad(`top-p must be in (0, 1] (got ${d.top_p})`);
  if (!(d.min_p >= 0 && d.min_p < 1)) bad(`min-p must be in [0, 1) (got ${d.min_p})`);
  if (!Number.isInteger(d.max_tokens) || d.max_tokens < 1) bad(`max tokens must be a whole number ≥ 1 (got ${d.max_tokens})`);
  if (!Number.isInteger(d.seed) || d.seed < 0) bad(`seed must be a whole number ≥ 0 (got ${d.seed})`);
  return d;
}

/** One short line for tables and logs, e.g. "T=0.8 top-k=20 top-p=0.95 max=128 seed=0". */
export function describeDecoding(d: Decoding): string {
  const parts = [d.temperature === 0 ? 'greedy' : `T=${d.temperature}`];
  if (d.temperature !== 0) {
    if (d.top_k > 0) parts.push(`top-k=${d.top_k}`);
    if (d.top_p < 1) parts.push(`top-p=${d.top_p}`);
    if (d.min_p > 0) parts.push(`min-p=${d.min_p}`);
  }
  parts.push(`max=${d.max_tokens}`, `seed=${d.seed}`);
  if (d.chat_template) parts.push('chat');
  return parts.join(' ');
}
