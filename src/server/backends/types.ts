/**
 * What the server asks of a backend (the Python engine worker, or node-llama-cpp in a child process): one
 * completion of one prompt, streamed, with the same semantics on both.
 *
 * - The prompt is text (tokenized by the backend; `addSpecialTokens` false when a chat template already wrote
 *   the BOS and other special tokens) or token ids.
 * - Decoding: temperature 0 is greedy; otherwise temperature, then top-k, top-p, min-p, then a seeded draw.
 * - A completion ends at an end-of-generation token (`eos`), at the earliest stop string (`stop`, the stop
 *   text and what follows are cut), or after maxTokens tokens or at the end of the context (`length`).
 * - Text that could be the start of a stop string is held back until it is known not to be one, so the deltas
 *   concatenate to exactly the final text; a token ending inside a UTF-8 character adds its text with the
 *   token that completes it.
 * - Log-probs are the model's own distribution (before temperature and filtering). Each entry's `token` is the
 *   text that token added (possibly empty), so the entries' tokens concatenate to the text.
 */

export interface CompletionJob {
  prompt: { text: string; addSpecialTokens: boolean } | { ids: number[] };
  temperature: number;
  topP: number;
  topK: number;
  minP: number;
  seed: number;
  /** null: until the end of the context. */
  maxTokens: number | null;
  stop: string[];
  /** null: no log-probs; k: the chosen token's log-prob and the k most likely alternatives. */
  logprobs: number | null;
}

export interface TopLogprob {
  token: string;
  logprob: number;
  bytes: number[] | null;
}

export interface TokenLogprob extends TopLogprob {
  top: TopLogprob[];
}

export interface Delta {
  text: string;
  /** The entries of the tokens whose text this delta completes (null when log-probs were not asked for). */
  logprobs: TokenLogprob[] | null;
}

export type FinishReason = 'stop' | 'eos' | 'length';

export interface CompletionResult {
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  logprobs: TokenLogprob[] | null;
}

/** A loaded model in a process of its own. */
export interface Backend {
  /** 'engine' or 'llama', for messages. */
  readonly kind: string;
  /** The process id (tests kill it to simulate a crash). */
  readonly pid: number | undefined;
  /** The most tokens prompt + completion may hold, when known. */
  readonly contextLength: number | null;
  /** Where it runs, for the log (e.g. "cpu", "cuda:0"). */
  readonly device?: string;
  /**
   * One completion. `onDelta` (when given) receives the text as it grows. Aborting `signal` stops the
   * generation early; the promise then rejects with a BackendCancelled error. If the process dies, the
   * promise rejects with BackendCrashed.
   */
  complete(job: CompletionJob, onDelta: ((d: Delta) => void) | null, signal: AbortSignal): Promise<CompletionResult>;
  /** Called once if the process ends without close() having been called. */
  onCrash(listener: (why: string) => void): void;
  close(): Promise<void>;
}

/**
 * The backend process died; `why` says how (exit code or signal), `detail` its last output. `beforeSend`: it
 * was already gone when the request was sent, so the request never ran (and may be retried on a new one).
 */
export class BackendCrashed extends Error {
  constructor(readonly why: string, readonly detail?: string, readonly beforeSend = false) {
    super(why);
    this.name = 'BackendCrashed';
  }
}

export class BackendCancelled extends Error {
  constructor() {
    super('the request was cancelled');
    this.name = 'BackendCancelled';
  }
}

/** A failure about the request itself (e.g. a prompt longer than the context): answered as a 400. */
export class BackendRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BackendRequestError';
  }
}
