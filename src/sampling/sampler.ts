import type { Decoding } from '../engine/decoding.js';

/**
 * One way to draw samples, whatever runs the model: the engine (PyTorch), llama.cpp (GGUF, through
 * node-llama-cpp) or any OpenAI-compatible HTTP server (vLLM, SGLang, llama-server, Ollama, LM Studio,
 * `distillery serve`). SSD's sampling stage and evaluation take a Sampler, so a user with a fast inference
 * server can use it.
 *
 * Every backend writes the same file the engine's sample job writes: JSONL records
 * `{prompt_index, sample_index, completion, finish_reason}` (plus `token_ids` where the backend has them),
 * appended as samples finish. A re-run on the same file skips the (prompt, sample) pairs already written, so
 * an interrupted sampling resumes; the backend and decoding it was made with are recorded beside it and a
 * re-run with other settings is refused.
 */

export type SamplerKind = 'engine' | 'llama' | 'http';
export const SAMPLER_KINDS: readonly SamplerKind[] = ['engine', 'llama', 'http'];

export interface SampleRequest {
  /** Prompt texts, in order (prompt_index is the position). With decoding.chat_template each is one user turn. */
  prompts: string[];
  /** Samples per prompt. */
  n: number;
  decoding: Decoding;
  /** The samples.jsonl to write (appended to; resumed when it exists). */
  outputFile: string;
  onProgress?: (done: number, total: number) => void;
}

export interface SampleResult {
  count: number;
  seconds: number;
  /** Pairs found already written by an earlier, interrupted run. */
  resumed: number;
}

export interface Sampler {
  kind: SamplerKind;
  /** What runs the samples, for logs and run records ("http://127.0.0.1:8000/v1 model qwen3"). */
  describe(): string;
  /** What identifies the model being sampled, so resumed files are never mixed across models. */
  identity(): Record<string, unknown>;
  sample(req: SampleRequest): Promise<SampleResult>;
  close(): Promise<void>;
}
