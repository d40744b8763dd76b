import type { CompletionJob, CompletionResult, Delta } from './types.js';

/** Messages between the server and its node-llama-cpp child process (over the IPC channel, as JSON). */

export interface LoadMessage {
  type: 'load';
  modelPath: string;
  /** Most tokens per sequence (the context is capped at the model's trained length). */
  contextSize: number;
  sequences: number;
  threads: number;
  /** Token ids at or above this are refused (llama.cpp aborts on them). */
  vocabSize: number | null;
  /** 'auto'': a GPU build where one is present, else the CPU build; false: CPU only. */
  gpu: 'auto' | false;
}

export type ParentMessage =
  | LoadMessage
  | { type: 'complete'; id: number; job: CompletionJob; stream: boolean }
  | { type: 'cancel'; id: number }
  | { type: 'shutdown' };

export type ChildMessage =
  | { type: 'loaded'; contextSize: number; gpu: string | false; threads: number }
  | { type: 'load-error'; message: string }
  | { type: 'delta'; id: number; delta: Delta }
  | { type: 'done'; id: number; result: CompletionResult }
  | { type: 'error'; id: number; kind: 'request' | 'cancelled' | 'internal'; message: string };
