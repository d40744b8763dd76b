import { createHash, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { UserError } from '../core/errors.js';
import { isLoopbackHost, printable } from '../mirror/server.js';
import {
  ApiError, badRequest, parseChatRequest, parseCompletionsRequest,
  type Prompt, type Sampling,
} from './openai-types.js';
import { ModelRegistry, type ModelSpec, type RegistryOptions, type ServedModel } from './registry.js';
import { BackendCancelled, type CompletionJob, type CompletionResult, type Delta, type FinishReason, type TokenLogprob } from './backends/types.js';
import { listen, urlHost } from '../core/listen.js';

/**
 * `distillery serve`: an OpenAI-compatible HTTP server (/v1/models, /v1/completions, /v1/chat/completions,
 * streaming over server-sent events) for vault models. Security follows the mirror's: loopback by default;
 * any other address requires an API key, checked as a Bearer token in constant time; without a key, only
 * requests addressed to a loopback name are answered (DNS-rebinding protection).
 */

export const DEFAULT_SERVE_PORT = 8471;
export const DEFAULT_SERVE_HOST = '127.0.0.1';
/** Read when no key is passed explicitly (keeps it out of `ps` output). */
export const API_KEY_ENV = 'DISTILLERY_API_KEY';
export const MIN_API_KEY_LENGTH = 16;

const MAX_BODY_BYTES = 16 * 1024 * 1024;
const MAX_CONNECTIONS = 256;

export interface ServeOptions extends Partial<Omit<RegistryOptions, 'log'>> {
  models: ModelSpec[];
  host?: string;
  port?: number;
  /** Required as "Authorization: Bearer <key>" on every request; null = none (loopback only). */
  apiKey?: string | null;
  /** Seconds without requests before a model's backend is stopped; 0 = never. */
  idleUnloadSeconds?: number;
  /** One line per request. */
  log?: (line: string) => void;
  /** Model loading, unloading, crashes. */
  warn?: (line: string) => void;
}

export interface ServeHandle {
  url: string;
  host: string;
  port: number;
  registry: ModelRegistry;
  close(): Promise<void>;
}

export function generateApiKey(): string {
  return `sk-distillery-${randomBytes(24).toString('base64url')}`;
}

export function checkServeSecurity(host: string, apiKey: string | null | undefined): void {
  if (apiKey !== null && apiKey !== undefined) {
    if (apiKey.length < MIN_API_KEY_LENGTH) throw new UserError(`the API key is too short (${apiKey.length} characters; at least ${MIN_API_KEY_LENGTH})`, 'use --generate-api-key for a random one');
    if (!/^[\x21-\x7e]+$/.test(apiKey)) throw new UserError('the API key must be printable ASCII without spaces');
  } else if (!isLoopbackHost(host)) {
    throw new UserError(
      `refusing to serve models on ${host} without an API key: anyone who can reach that address could use them`,
      `pass --api-key (or set ${API_KEY_ENV}), or --generate-api-key; or bind 127.0.0.1`,
    );
  }
}

export async function startServer(opts: ServeOptions): Promise<ServeHandle> {
  const host = opts.host ?? DEFAULT_SERVE_HOST;
  const port = opts.port ?? DEFAULT_SERVE_PORT;
  const apiKey = opts.apiKey ?? null;
  checkServeSecurity(host, apiKey);
  if (opts.models.length === 0) throw new UserError('no models to serve', 'pass --model REF (repeatable)');
  const concurrency = opts.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new UserError(`--concurrency must be a whole number ≥ 1, not ${concurrency}`);
  const idle = opts.idleUnloadSeconds ?? 600;
  if (!(idle >= 0)) throw new UserError(`--idle-unload must be ≥ 0 seconds, not ${idle}`);
  const registry = new ModelRegistry(opts.models, {
    ...opts,
    concurrency,
    idleUnloadMs: idle * 1000,
    log: opts.warn,
  });
  const state: State = {
    registry,
    log: opts.log ?? (() => {}),
    warn: opts.warn ?? (() => {}),
    keyDigest: apiKey === null ? null : createHash('sha256').update(apiKey).digest(),
    host,
  };

  const server: Server = createServer({ requestTimeout: 0, headersTimeout: 30_000 }, (req, res) => {
    void handle(req, res, state);
  });
  server.maxConnections = MAX_CONNECTIONS;
  const addr = await listen(server, host, port);
  let closed: Promise<void> | null = null;
  return {
    url: `http://${urlHost(host)}:${addr.port}`,
    host,
    port: addr.port,
    registry,
    close() {
      closed ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        await registry.close();
      })();
      return closed;
    },
  };
}

interface State {
  registry: ModelRegistry;
  log: (line: string) => void;
  warn: (line: string) => void;
  keyDigest: Buffer | null;
  host: string;
}

// ------------------------------------------------------------------------------------------------ plumbing

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = Buffer.from(JSON.stringify(body), 'utf8');
  res.statusCode = status;
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('Content-Length', String(text.length));
  res.end(text);
}

function sendError(res: ServerResponse, e: ApiError, headers: Record<string, string> = {}): void {
  sendJson(res, e.status, e.body(), headers);
}

function keyMatches(header: string | undefined, expected: Buffer): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  // Fixed-length digests: neither the key's length nor its content leaks through timing.
  const got = createHash('sha256').update(m?.[1] ?? '').digest();
  return timingSafeEqual(got, expected) && m !== null;
}

/** Without a key, only names that mean this machine: a web page cannot reach the server by DNS rebinding. */
function hostAllowed(hostHeader: string | undefined, s: State): boolean {
  if (s.keyDigest !== null || hostHeader === undefined) return true;
  if (!/^[A-Za-z0-9.\-:[\]]{1,255}$/.test(hostHeader)) return false;
  const v6 = /^\[([0-9a-fA-F:.]+)\](?::\d+)?$/.exec(hostHeader);
  const name = v6 ? v6[1]! : hostHeader.replace(/:\d+$/, '');
  return isLoopbackHost(name) || name.toLowerCase() === s.host.toLowerCase().replace(/^\[(.*)\]$/, '$1');
}

function readBody(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        failed = true;
        reject(new ApiError(413, `the request body is larger than ${MAX_BODY_BYTES / (1024 * 1024)} MiB`));
        req.resume();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (failed) return;
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') return reject(badRequest('the request body is empty; send a JSON object'));
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(badRequest(`the request body is not valid JSON: ${(e as Error).message}`));
      }
    });
    req.on('error', (e) => {
      if (!failed) reject(e);
    });
  });
}

async function handle(req: IncomingMessage, res: ServerResponse, s: State): Promise<void> {
  const started = performance.now();
  const rawUrl = req.url ?? '';
  const info = { model: '', tokens: '' };
  res.on('close', () => {
    const ms = Math.round(performance.now() - started);
    const aborted = res.writableFinished ? '' : ' aborted';
    s.log(`${req.method ?? '?'} ${printable(rawUrl, 200)} ${res.statusCode}${info.model ? ` ${printable(info.model, 100)}` : ''}${info.tokens} ${ms}ms${aborted}`);
  });
  try {
    if (!hostAllowed(req.headers.host, s)) {
      req.resume();
      throw new ApiError(403, 'this server only answers requests addressed to localhost/127.0.0.1 (protection against DNS rebinding); start it with an API key to allow other names', 'invalid_request_error', null, 'host_not_allowed');
    }
    if (s.keyDigest !== null && !keyMatches(req.headers.authorization, s.keyDigest)) {
      req.resume();
      sendError(res, new ApiError(401, 'Incorrect or missing API key: send "Authorization: Bearer <key>" (the openai client sends its apiKey / OPENAI_API_KEY)', 'invalid_request_error', null, 'invalid_api_key'), {
        'WWW-Authenticate': 'Bearer realm="distillery-serve"',
      });
      return;
    }
    const q = rawUrl.indexOf('?');
    const path = (q === -1 ? rawUrl : rawUrl.slice(0, q)).replace(/\/+$/, '') || '/';
    const method = req.method ?? '';
    const route = (allowed: string) => {
      if (method !== allowed) {
        req.resume();
        throw new ApiError(405, `${printable(method, 20)} is not allowed on ${printable(path, 200)} (use ${allowed})`);
      }
    };
    if (path === '/v1/models') {
      route('GET');
      req.resume();
      sendJson(res, 200, { object: 'list', data: s.registry.models.map(modelObject) });
      return;
    }
    if (path.startsWith('/v1/models/')) {
      route('GET');
      req.resume();
      let id: string;
      try {
        id = decodeURIComponent(path.slice('/v1/models/'.length));
      } catch {
        throw badRequest('malformed percent-encoding in the model name');
      }
      const m = s.registry.find(id);
      if (!m) throw notFound(id, s);
      sendJson(res, 200, modelObject(m));
      return;
    }
    if (path === '/health') {
      route('GET');
      req.resume();
      sendJson(res, 200, { status: 'ok' });
      return;
    }
    if (path === '/v1/completions' || path === '/v1/chat/completions') {
      route('POST');
      const body = await readBody(req);
      if (path === '/v1/completions') await completions(body, res, s, info);
      else await chat(body, res, s, info);
      return;
    }
    req.resume();
    throw new ApiError(404, `unknown request URL: ${printable(method, 20)} ${printable(path, 200)} (this server answers /v1/models, /v1/completions and /v1/chat/completions)`, 'invalid_request_error', null, 'unknown_url');
  } catch (e) {
    if (e instanceof BackendCancelled) {
      // The client went away; nobody is left to answer.
      if (!res.writableEnded) res.destroy();
      return;
    }
    const err = e instanceof ApiError ? e : new ApiError(500, `internal error: ${(e as Error)?.message ?? String(e)}`, 'server_error');
    if (!(e instanceof ApiError)) s.warn(`internal error answering ${req.method} ${printable(rawUrl, 200)}: ${(e as Error)?.stack ?? String(e)}`);
    if (res.headersSent) res.destroy();
    else sendError(res, err);
  }
}

function modelObject(m: ServedModel): Record<string, unknown> {
  return {
    id: m.spec.id,
    object: 'model',
    created: m.spec.created,
    owned_by: 'distillery',
    // Extensions (clients ignore unknown fields).
    distillery: {
      backend: m.spec.backend,
      format: m.spec.format,
      vault_ref: m.spec.vaultRef,
      aliases: m.spec.aliases,
      context_length: m.spec.contextLength,
      chat: m.spec.chat.template !== null,
      loaded: m.loaded,
    },
  };
}

function notFound(name: string, s: State): ApiError {
  const ids = s.registry.models.map((m) => m.spec.id);
  return new ApiError(404, `The model ${JSON.stringify(name)} does not exist on this server; it serves ${ids.map((i) => JSON.stringify(i)).join(', ')}`, 'invalid_request_error', 'model', 'model_not_found');
}

function lookup(name: string, s: State): ServedModel {
  const m = s.registry.find(name);
  if (!m) throw notFound(name, s);
  return m;
}

function job(prompt: CompletionJob['prompt'], sampling: Sampling, logprobs: number | null, seed: number): CompletionJob {
  return {
    prompt,
    temperature: sampling.temperature,
    topP: sampling.topP,
    topK: sampling.topK,
    minP: sampling.minP,
    seed,
    maxTokens: sampling.maxTokens,
    stop: sampling.stop,
    logprobs,
  };
}

function finishReason(f: FinishReason): 'stop' | 'length' {
  return f === 'length' ? 'length' : 'stop';
}

function usage(results: CompletionResult[]): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  const p = results.reduce((a, r) => a + r.promptTokens, 0);
  const c = results.reduce((a, r) => a + r.completionTokens, 0);
  return { prompt_tokens: p, completion_tokens: c, total_tokens: p + c };
}

/** Server-sent events, with the 200 status sent only when the first event is (errors before it are plain). */
class EventStream {
  private started = false;
  constructor(private readonly res: ServerResponse) {}

  private start(): void {
    if (this.started) return;
    this.started = true;
    this.res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
  }

  send(data: unknown): void {
    this.start();
    this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  get isStarted(): boolean {
    return this.started;
  }

  done(): void {
    this.start();
    this.res.end('data: [DONE]\n\n');
  }

  /** An error after the stream began: as an event the openai client raises as an APIError. */
  fail(e: ApiError): void {
    this.res.write(`data: ${JSON.stringify(e.body())}\n\n`);
    this.res.end();
  }
}

/** Aborted when the client goes away before the answer is complete. */
function clientGone(res: ServerResponse): AbortSignal {
  const ac = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) ac.abort();
  });
  return ac.signal;
}

function randomSeed(): number {
  return randomInt(0, 2 ** 31);
}

async function runAll(
  model: ServedModel,
  jobs: CompletionJob[],
  signal: AbortSignal,
  onDelta: ((index: number, d: Delta) => void) | null,
  onDone: ((index: number, r: CompletionResult) => void) | null,
): Promise<CompletionResult[]> {
  // One failure cancels the others: the whole request fails.
  const ac = new AbortController();
  const abort = () => ac.abort();
  signal.addEventListener('abort', abort, { once: true });
  try {
    return await Promise.all(
      jobs.map(async (j, i) => {
        try {
          const r = await model.run(j, onDelta ? (d) => onDelta(i, d) : null, ac.signal);
          onDone?.(i, r);
          return r;
        } catch (e) {
          ac.abort();
          throw e;
        }
      }),
    );
  } finally {
    signal.removeEventListener('abort', abort);
  }
}

// ------------------------------------------------------------------------------------------------ /v1/completions

function completionLogprobs(entries: TokenLogprob[], offset: number): { tokens: string[]; token_logprobs: number[]; top_logprobs: Record<string, number>[]; text_offset: number[] } {
  const out = { tokens: [] as string[], token_logprobs: [] as number[], top_logprobs: [] as Record<string, number>[], text_offset: [] as number[] };
  let at = offset;
  for (const e of entries) {
    out.tokens.push(e.token);
    out.token_logprobs.push(e.logprob);
    const top: Record<string, number> = {};
    for (const t of e.top) if (!(t.token in top)) top[t.token] = t.logprob;
    // As OpenAI's: the sampled token is always among them.
    if (!(e.token in top)) top[e.token] = e.logprob;
    out.top_logprobs.push(top);
    out.text_offset.push(at);
    at += e.token.length;
  }
  return out;
}

async function completions(body: unknown, res: ServerResponse, s: State, info: { model: string; tokens: string }): Promise<void> {
  const r = parseCompletionsRequest(body);
  const model = lookup(r.model, s);
  info.model = model.spec.id;
  const seed = r.sampling.seed ?? randomSeed();
  const jobs = r.prompts.map((p: Prompt) => job('text' in p ? { text: p.text, addSpecialTokens: r.addSpecialTokens } : { ids: p.ids }, r.sampling, r.logprobs, seed));
  const id = `cmpl-${randomBytes(12).toString('hex')}`;
  const created = Math.floor(Date.now() / 1000);
  const signal = clientGone(res);

  if (!r.stream) {
    const results = await runAll(model, jobs, signal, null, null);
    info.tokens = ` ${usage(results).completion_tokens} tokens`;
    sendJson(res, 200, {
      id, object: 'text_completion', created, model: model.spec.id, system_fingerprint: null,
      choices: results.map((x, index) => ({
        index, text: x.text, logprobs: x.logprobs ? completionLogprobs(x.logprobs, 0) : null, finish_reason: finishReason(x.finishReason),
      })),
      usage: usage(results),
    });
    return;
  }

  const stream = new EventStream(res);
  const offsets = jobs.map(() => 0);
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    stream.send({ id, object: 'text_completion', created, model: model.spec.id, system_fingerprint: null, choices, ...extra, ...(r.includeUsage ? { usage: null } : {}) });
  try {
    const results = await runAll(
      model, jobs, signal,
      (index, d) => {
        const lp = d.logprobs ? completionLogprobs(d.logprobs, offsets[index]!) : null;
        offsets[index]! += d.text.length;
        chunk([{ index, text: d.text, logprobs: lp, finish_reason: null }]);
      },
      (index, x) => chunk([{ index, text: '', logprobs: null, finish_reason: finishReason(x.finishReason) }]),
    );
    info.tokens = ` ${usage(results).completion_tokens} tokens`;
    if (r.includeUsage) stream.send({ id, object: 'text_completion', created, model: model.spec.id, system_fingerprint: null, choices: [], usage: usage(results) });
    stream.done();
  } catch (e) {
    streamFailed(e, stream, res);
  }
}

function streamFailed(e: unknown, stream: EventStream, res: ServerResponse): void {
  if (e instanceof BackendCancelled || res.destroyed) {
    if (!res.writableEnded) res.destroy();
    return;
  }
  if (!stream.isStarted) throw e;
  stream.fail(e instanceof ApiError ? e : new ApiError(500, `internal error: ${(e as Error)?.message ?? String(e)}`, 'server_error'));
}

// ------------------------------------------------------------------------------------------------ /v1/chat/completions

function chatLogprobs(entries: TokenLogprob[]): { content: unknown[]; refusal: null } {
  return {
    content: entries.map((e) => ({
      token: e.token, logprob: e.logprob, bytes: e.bytes,
      top_logprobs: e.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes })),
    })),
    refusal: null,
  };
}

async function chat(body: unknown, res: ServerResponse, s: State, info: { model: string; tokens: string }): Promise<void> {
  const r = parseChatRequest(body);
  const model = lookup(r.model, s);
  info.model = model.spec.id;
  const template = model.spec.chat.template;
  if (template === null) {
    throw badRequest(`model ${model.spec.id} cannot chat: ${model.spec.chat.reason}; use /v1/completions with a plain prompt`, 'model', 'no_chat_template');
  }
  const prompt = template.render(r.messages, r.templateKwargs);
  const seed = r.sampling.seed ?? randomSeed();
  const jobs = [job({ text: prompt, addSpecialTokens: false }, r.sampling, r.logprobs, seed)];
  const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
  const created = Math.floor(Date.now() / 1000);
  const signal = clientGone(res);

  if (!r.stream) {
    const [x] = await runAll(model, jobs, signal, null, null);
    info.tokens = ` ${x!.completionTokens} tokens`;
    sendJson(res, 200, {
      id, object: 'chat.completion', created, model: model.spec.id, system_fingerprint: null,
      choices: [{
        index: 0,
        message: { role: 'assistant', content: x!.text, refusal: null },
        logprobs: x!.logprobs ? chatLogprobs(x!.logprobs) : null,
        finish_reason: finishReason(x!.finishReason),
      }],
      usage: usage([x!]),
    });
    return;
  }

  const stream = new EventStream(res);
  let first = true;
  const chunk = (delta: Record<string, unknown>, logprobs: unknown, finish: string | null) =>
    stream.send({
      id, object: 'chat.completion.chunk', created, model: model.spec.id, system_fingerprint: null,
      choices: [{ index: 0, delta, logprobs, finish_reason: finish }],
      ...(r.includeUsage ? { usage: null } : {}),
    });
  const opening = () => {
    if (first) {
      first = false;
      chunk({ role: 'assistant', content: '' }, null, null);
    }
  };
  try {
    const [x] = await runAll(
      model, jobs, signal,
      (_i, d) => {
        opening();
        chunk({ content: d.text }, d.logprobs ? chatLogprobs(d.logprobs) : null, null);
      },
      null,
    );
    opening();
    chunk({}, null, finishReason(x!.finishReason));
    info.tokens = ` ${x!.completionTokens} tokens`;
    if (r.includeUsage) {
      stream.send({ id, object: 'chat.completion.chunk', created, model: model.spec.id, system_fingerprint: null, choices: [], usage: usage([x!]) });
    }
    stream.done();
  } catch (e) {
    streamFailed(e, stream, res);
  }
}
