import { randomUUID } from 'node:crypto';
import { EngineWorker, type WorkerEvent } from '../../engine/worker.js';
import { EngineError } from '../../engine/errors.js';
import {
  BackendCancelled, BackendCrashed, BackendRequestError,
  type Backend, type CompletionJob, type CompletionResult, type Delta, type FinishReason, type TokenLogprob,
} from './types.js';

/**
 * Hugging Face models and PEFT adapters, served by the Python engine worker (`complete` requests over its
 * JSON-lines protocol; see engine/distillery_engine/worker.py). One worker process per served model: the
 * worker holds one model, and a crash takes down only that model's requests. The worker answers requests one
 * at a time, in order; requests sent while one runs wait in its stdin.
 */

/** Passed as max_tokens when the request sets none: the engine stops at the model's context length first. */
const UNBOUNDED_TOKENS = 1_000_000;

export interface EngineBackendOptions {
  /** The model folder (for an adapter: its base model's folder). */
  modelDir: string;
  /** A PEFT adapter folder applied on top. */
  adapterDir?: string;
  contextLength: number | null;
}

interface RawResult {
  text: string;
  finish_reason: FinishReason;
  prompt_tokens: number;
  completion_tokens: number;
  logprobs: TokenLogprob[] | null;
}

export class EngineBackend implements Backend {
  readonly kind = 'engine';
  private crashed: string | null = null;
  private closing = false;
  private readonly crashListeners: Array<(why: string) => void> = [];

  private constructor(private readonly worker: EngineWorker, readonly contextLength: number | null, readonly device: string) {}

  static async start(opts: EngineBackendOptions): Promise<EngineBackend> {
    const worker = await EngineWorker.start();
    let loaded: { device?: unknown; dtype?: unknown };
    try {
      loaded = (await worker.call('load', { model: opts.modelDir, ...(opts.adapterDir ? { adapter: opts.adapterDir } : {}) })) as typeof loaded;
    } catch (e) {
      await worker.close().catch(() => undefined);
      throw e;
    }
    return new EngineBackend(worker, opts.contextLength, `${String(loaded.device ?? '?')}, ${String(loaded.dtype ?? '?')}`);
  }

  get pid(): number | undefined {
    return this.worker.pid;
  }

  onCrash(listener: (why: string) => void): void {
    this.crashListeners.push(listener);
  }

  async complete(job: CompletionJob, onDelta: ((d: Delta) => void) | null, signal: AbortSignal): Promise<CompletionResult> {
    if (signal.aborted) throw new BackendCancelled();
    const key = randomUUID();
    const params: Record<string, unknown> = {
      ...('text' in job.prompt ? { prompt: job.prompt.text, add_special_tokens: job.prompt.addSpecialTokens } : { prompt_ids: job.prompt.ids }),
      temperature: job.temperature,
      top_p: job.topP,
      top_k: job.topK,
      min_p: job.minP,
      seed: job.seed,
      max_tokens: job.maxTokens ?? UNBOUNDED_TOKENS,
      stop: job.stop,
      logprobs: job.logprobs,
      stream: onDelta !== null,
      cancel_key: key,
    };
    const onEvent = onDelta
      ? (e: WorkerEvent) => {
          if (e.type === 'delta') onDelta({ text: String(e.text ?? ''), logprobs: (e.logprobs as TokenLogprob[] | null) ?? null });
        }
      : undefined;
    const onAbort = () => {
      this.worker.call('cancel', { key }).catch(() => undefined);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      const r = (await this.worker.call('complete', params, onEvent)) as RawResult;
      return {
        text: r.text,
        finishReason: r.finish_reason,
        promptTokens: r.prompt_tokens,
        completionTokens: r.completion_tokens,
        logprobs: r.logprobs ?? null,
      };
    } catch (e) {
      throw this.translate(e);
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  private translate(e: unknown): Error {
    if (!(e instanceof EngineError)) return e instanceof Error ? e : new Error(String(e));
    if (e.errorType === 'Cancelled') return new BackendCancelled();
    if (e.errorType === 'exit') {
      const why = e.engineMessage;
      if (this.crashed === null && !this.closing) {
        this.crashed = why;
        for (const l of this.crashListeners) l(why);
      }
      // "not running": it had already died (while idle) before this request was sent.
      return new BackendCrashed(why, e.hint, why.startsWith('the engine worker is not running'));
    }
    if (e.errorType === 'ValueError') return new BackendRequestError(e.engineMessage);
    return new Error(`the engine failed: ${e.errorType}: ${e.engineMessage}`);
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.worker.close(3000);
  }
}
