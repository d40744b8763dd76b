import { UserError } from '../core/errors.js';
import type { Decoding } from '../engine/decoding.js';
import { drawMissing } from './samples-file.js';
import type { SampleRequest, SampleResult, Sampler } from './sampler.js';

/**
 * Sampling through any OpenAI-compatible server: `/v1/completions` for raw prompts, `/v1/chat/completions`
 * with decoding.chat_template (the server applies the model's template). One request per sample with n = 1 and
 * its own seed (decoding.seed + the sample's position), so samples are independent and a resumed run asks for
 * exactly the missing ones. top_k and min_p are sent as the extensions vLLM, SGLang, llama-server and
 * `distillery serve` accept; servers that do not know them ignore them (say so when comparing backends).
 *
 * Bounded concurrency; retries with exponential backoff on connection errors, 408, 429 and 5xx (honouring
 * Retry-After); any other 4xx fails at once with the server's message, since repeating it cannot help.
 */

export interface HttpSamplerOptions {
  /** Base URL of the API, with or without the trailing /v1 (e.g. http://127.0.0.1:8000/v1). */
  endpoint: string;
  /** The model name to send; default: the first model the server lists at /v1/models. */
  model?: string;
  /** Bearer token; default: $DISTILLERY_SAMPLER_API_KEY. */
  apiKey?: string;
  /** Requests in flight at once (default 4). */
  concurrency?: number;
  /** Attempts per sample beyond the first (default 4). */
  retries?: number;
  /** Per-request timeout in ms (default 10 minutes). */
  timeoutMs?: number;
  /** First backoff delay in ms (default 500; doubled per attempt). */
  backoffMs?: number;
}

export const SAMPLER_API_KEY_ENV = 'DISTILLERY_SAMPLER_API_KEY';

/** `http://h:p`, `http://h:p/`, `http://h:p/v1` → `http://h:p/v1`. */
export function apiBase(endpoint: string): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new UserError(`--endpoint ${JSON.stringify(endpoint)} is not a URL`, 'e.g. --endpoint http://127.0.0.1:8000/v1');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UserError(`--endpoint must be an http(s) URL, not ${url.protocol}`);
  const path = url.pathname.replace(/\/+$/, '');
  return `${url.origin}${path === '' ? '/v1' : path}`;
}

class HttpStatusError extends Error {
  constructor(readonly status: number, message: string, readonly retryAfterMs: number | null) {
    super(message);
  }
}

export class HttpSampler implements Sampler {
  readonly kind = 'http' as const;
  private readonly base: string;
  private model: string | null;
  private readonly apiKey: string | undefined;
  private readonly concurrency: number;
  private readonly retries: number;
  private readonly timeoutMs: number;
  private readonly backoffMs: number;

  constructor(opts: HttpSamplerOptions) {
    this.base = apiBase(opts.endpoint);
    this.model = opts.model ?? null;
    this.apiKey = opts.apiKey ?? process.env[SAMPLER_API_KEY_ENV] ?? undefined;
    this.concurrency = opts.concurrency ?? 4;
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1) throw new UserError(`--concurrency must be a whole number ≥ 1 (got ${opts.concurrency})`);
    this.retries = opts.retries ?? 4;
    this.timeoutMs = opts.timeoutMs ?? 600_000;
    this.backoffMs = opts.backoffMs ?? 500;
  }

  describe(): string {
    return `${this.base} model ${this.model ?? '(first listed)'}`;
  }

  identity(): Record<string, unknown> {
    return { backend: 'http', endpoint: this.base, model: this.model };
  }

  async close(): Promise<void> {}

  /** The model to ask for: the one given, else the first the server lists. */
  async resolveModel(): Promise<string> {
    if (this.model !== null) return this.model;
    const res = await this.request('GET', '/models', undefined);
    const data = (res as { data?: Array<{ id?: unknown }> }).data;
    const id = Array.isArray(data) ? data.find((m) => typeof m?.id === 'string')?.id : undefined;
    if (typeof id !== 'string') throw new UserError(`${this.base}/models lists no model`, 'pass --endpoint-model NAME');
    this.model = id;
    return id;
  }

  async sample(req: SampleRequest): Promise<SampleResult> {
    const model = await this.resolveModel();
    return drawMissing(req, { ...this.identity(), model }, this.concurrency, async (prompt, seed) => this.one(model, prompt, req.decoding, seed));
  }

  private async one(model: string, prompt: string, d: Decoding, seed: number): Promise<{ text: string; finish: string }> {
    const common = {
      model, max_tokens: d.max_tokens, temperature: d.temperature, top_p: d.top_p, seed, n: 1,
      ...(d.top_k > 0 ? { top_k: d.top_k } : {}), ...(d.min_p > 0 ? { min_p: d.min_p } : {}),
      ...(d.stop.length > 0 ? { stop: d.stop } : {}),
    };
    const body = d.chat_template ? { ...common, messages: [{ role: 'user', content: prompt }] } : { ...common, prompt };
    const res = (await this.request('POST', d.chat_template ? '/chat/completions' : '/completions', body)) as {
      choices?: Array<{ text?: unknown; message?: { content?: unknown }; finish_reason?: unknown }>;
    };
    const c = res.choices?.[0];
    const text = d.chat_template ? c?.message?.content : c?.text;
    if (typeof text !== 'string') throw new UserError(`${this.base}: the answer has no ${d.chat_template ? 'choices[0].message.content' : 'choices[0].text'}`);
    return { text, finish: typeof c?.finish_reason === 'string' ? c.finish_reason : 'unknown' };
  }

  /** One API call with retries; resolves with the parsed JSON. */
  private async request(method: 'GET' | 'POST', path: string, body: unknown): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.attempt(method, path, body);
      } catch (e) {
        const retryable = e instanceof HttpStatusError ? e.status === 408 || e.status === 429 || e.status >= 500 : !(e instanceof UserError);
        if (!retryable || attempt >= this.retries) {
          if (e instanceof UserError) throw e;
          const why = e instanceof HttpStatusError ? `HTTP ${e.status}: ${e.message}` : (e as Error).message;
          throw new UserError(`${method} ${this.base}${path} failed${attempt > 0 ? ` after ${attempt + 1} attempts` : ''}: ${why}`);
        }
        const wait = e instanceof HttpStatusError && e.retryAfterMs !== null ? e.retryAfterMs : this.backoffMs * 2 ** attempt;
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  private async attempt(method: 'GET' | 'POST', path: string, body: unknown): Promise<unknown> {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), this.timeoutMs);
    try {
      const res = await fetch(`${this.base}${path}`, {
        method,
        signal: ctrl.signal,
        headers: {
          ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
          ...(this.apiKey ? { Authorization: `Bearer ${this.apiKey}` } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      if (!res.ok) {
        const after = Number(res.headers.get('retry-after'));
        throw new HttpStatusError(res.status, errorMessage(text), Number.isFinite(after) && after >= 0 ? after * 1000 : null);
      }
      try {
        return JSON.parse(text) as unknown;
      } catch {
        throw new UserError(`${this.base}${path} did not answer JSON: ${text.slice(0, 200)}`);
      }
    } catch (e) {
      if ((e as Error).name === 'AbortError') throw new Error(`no answer within ${Math.round(this.timeoutMs / 1000)} s`);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** The message of an OpenAI-style error body ({error: {message}} or {error: "…"}), else the text. */
function errorMessage(text: string): string {
  try {
    const v = JSON.parse(text) as { error?: { message?: unknown } | string; message?: unknown };
    if (typeof v.error === 'string') return v.error;
    if (typeof v.error?.message === 'string') return v.error.message;
    if (typeof v.message === 'string') return v.message;
  } catch {
    /* not JSON */
  }
  return text.slice(0, 300) || '(empty body)';
}
