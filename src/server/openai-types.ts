/**
 * The OpenAI-compatible request bodies `distillery serve` accepts, checked field by field into plain internal
 * requests, and the error shape every failure is answered with ({"error": {message, type, param, code}}).
 *
 * Fields Distillery cannot honour are refused when set to anything but their neutral value (n > 1, echo,
 * logit_bias, penalties, tools, JSON response formats…), so a client never silently gets something other
 * than what it asked for. Unknown fields are ignored, as OpenAI's own clients send new ones over time.
 */

export type ApiErrorType = 'invalid_request_error' | 'authentication_error' | 'not_found_error' | 'server_error';

/** An error answered to the client as OpenAI answers it. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ApiErrorType = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export function badRequest(message: string, param: string | null = null, code: string | null = null): ApiError {
  return new ApiError(400, message, 'invalid_request_error', param, code);
}

/** Most alternatives per token (OpenAI's limit for top_logprobs and for the completions `logprobs`). */
export const MAX_TOP_LOGPROBS = 20;
export const MAX_STOP_SEQUENCES = 16;
export const MAX_PROMPTS = 64;

/** Decoding options of one request, with OpenAI's defaults filled in. */
export interface Sampling {
  temperature: number;
  topP: number;
  /** 0 = off (an extension; OpenAI has none). */
  topK: number;
  /** 0 = off (an extension). */
  minP: number;
  /** null: a fresh random seed per request. */
  seed: number | null;
  /** null: until the end of the model's context (or an end-of-sequence token). */
  maxTokens: number | null;
  stop: string[];
}

export type Prompt = { text: string } | { ids: number[] };

export interface CompletionsRequest {
  model: string;
  prompts: Prompt[];
  /** Extension (as in vLLM): false tokenizes text prompts without the BOS/special tokens the tokenizer adds. */
  addSpecialTokens: boolean;
  sampling: Sampling;
  /** null: no log-probs; k: each token's log-prob plus its k most likely alternatives. */
  logprobs: number | null;
  stream: boolean;
  includeUsage: boolean;
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
  name?: string;
}

export interface ChatRequest {
  model: string;
  messages: ChatMessage[];
  /** Extra variables for the chat template (an extension, as in vLLM: e.g. {"enable_thinking": false}). */
  templateKwargs: Record<string, unknown>;
  sampling: Sampling;
  /** null: no log-probs; k (from top_logprobs, 0 when absent): alternatives per token. */
  logprobs: number | null;
  stream: boolean;
  includeUsage: boolean;
}

type Body = Record<string, unknown>;

function isObject(v: unknown): v is Body {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${String(v)}`;
}

/** The body of a request, which must be a JSON object. */
export function requireObject(body: unknown): Body {
  if (!isObject(body)) throw badRequest(`the request body must be a JSON object, not ${describe(body)}`);
  return body;
}

function present(body: Body, key: string): boolean {
  return body[key] !== undefined && body[key] !== null;
}

function number(body: Body, key: string, def: number, min: number, max: number, openMin = false): number {
  if (!present(body, key)) return def;
  const v = body[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw badRequest(`${key} must be a number, not ${describe(v)}`, key);
  if ((openMin ? v <= min : v < min) || v > max) {
    throw badRequest(`${key} must be ${openMin ? 'greater than' : 'at least'} ${min} and at most ${max}, not ${v}`, key);
  }
  return v;
}

function integer(body: Body, key: string, min: number, max: number): number | null {
  if (!present(body, key)) return null;
  const v = body[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw badRequest(`${key} must be a whole number, not ${describe(v)}`, key);
  if (v < min || v > max) throw badRequest(`${key} must be from ${min} to ${max}, not ${v}`, key);
  return v;
}

function bool(body: Body, key: string): boolean {
  if (!present(body, key)) return false;
  const v = body[key];
  if (typeof v !== 'boolean') throw badRequest(`${key} must be true or false, not ${describe(v)}`, key);
  return v;
}

function modelField(body: Body): string {
  const m = body.model;
  if (typeof m !== 'string' || m.length === 0) {
    throw badRequest(m === undefined ? 'you must provide a model parameter (GET /v1/models lists them)' : `model must be a non-empty string, not ${describe(m)}`, 'model');
  }
  return m;
}

/** Refuses options that are set to something Distillery cannot do. */
function refuseUnsupported(body: Body, chat: boolean): void {
  const n = body.n;
  if (present(body, 'n') && n !== 1) {
    throw badRequest(`only n=1 is supported (got ${describe(n)}); send separate requests (with different seeds) for more samples`, 'n', 'unsupported_value');
  }
  for (const key of ['presence_penalty', 'frequency_penalty']) {
    if (present(body, key) && body[key] !== 0) throw badRequest(`${key} is not supported (only 0)`, key, 'unsupported_parameter');
  }
  if (present(body, 'logit_bias') && !(isObject(body.logit_bias) && Object.keys(body.logit_bias).length === 0)) {
    throw badRequest('logit_bias is not supported', 'logit_bias', 'unsupported_parameter');
  }
  if (chat) {
    for (const key of ['tools', 'functions']) {
      if (present(body, key) && !(Array.isArray(body[key]) && (body[key] as unknown[]).length === 0)) {
        throw badRequest(`${key} (tool calling) is not supported`, key, 'unsupported_parameter');
      }
    }
    for (const key of ['tool_choice', 'function_call']) {
      if (present(body, key) && body[key] !== 'none' && body[key] !== 'auto') throw badRequest(`${key} is not supported`, key, 'unsupported_parameter');
    }
    const rf = body.response_format;
    if (present(body, 'response_format') && !(isObject(rf) && rf.type === 'text')) {
      throw badRequest('response_format is not supported (only {"type": "text"})', 'response_format', 'unsupported_parameter');
    }
    if (present(body, 'audio')) throw badRequest('audio output is not supported', 'audio', 'unsupported_parameter');
    const mod = body.modalities;
    if (present(body, 'modalities') && !(Array.isArray(mod) && mod.every((m) => m === 'text'))) {
      throw badRequest('only the "text" modality is supported', 'modalities', 'unsupported_parameter');
    }
  } else {
    if (present(body, 'best_of') && body.best_of !== 1) throw badRequest('best_of is not supported (only 1)', 'best_of', 'unsupported_value');
    if (bool(body, 'echo')) throw badRequest('echo is not supported', 'echo', 'unsupported_parameter');
    if (present(body, 'suffix') && body.suffix !== '') throw badRequest('suffix is not supported', 'suffix', 'unsupported_parameter');
  }
}

function stopField(body: Body): string[] {
  if (!present(body, 'stop')) return [];
  const v = body.stop;
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || !list.every((s) => typeof s === 'string')) {
    throw badRequest(`stop must be a string or a list of strings, not ${describe(v)}`, 'stop');
  }
  if (list.length > MAX_STOP_SEQUENCES) throw badRequest(`at most ${MAX_STOP_SEQUENCES} stop sequences are allowed (got ${list.length})`, 'stop');
  if (list.some((s) => s.length === 0)) throw badRequest('stop sequences must not be empty strings', 'stop');
  return [...new Set(list as string[])];
}

function samplingFields(body: Body, chat: boolean): Sampling {
  const maxTokens = integer(body, 'max_tokens', 1, 2 ** 31 - 1);
  const maxCompletion = chat ? integer(body, 'max_completion_tokens', 1, 2 ** 31 - 1) : null;
  let topK = integer(body, 'top_k', -1, 2 ** 31 - 1) ?? 0;
  if (topK === -1) topK = 0; // -1 is the usual "off" in other servers
  return {
    temperature: number(body, 'temperature', 1, 0, 2),
    topP: number(body, 'top_p', 1, 0, 1, true),
    topK,
    minP: number(body, 'min_p', 0, 0, 1),
    seed: integer(body, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
    // OpenAI's completions endpoint stops after 16 tokens unless told otherwise; chat runs to the end.
    maxTokens: maxCompletion ?? maxTokens ?? (chat ? null : 16),
    stop: stopField(body),
  };
}

function streamFields(body: Body): { stream: boolean; includeUsage: boolean } {
  const stream = bool(body, 'stream');
  let includeUsage = false;
  if (present(body, 'stream_options')) {
    const so = body.stream_options;
    if (!isObject(so)) throw badRequest('stream_options must be an object', 'stream_options');
    if (!stream) throw badRequest('stream_options is only allowed when stream is true', 'stream_options');
    if (present(so, 'include_usage')) {
      if (typeof so.include_usage !== 'boolean') throw badRequest('stream_options.include_usage must be true or false', 'stream_options.include_usage');
      includeUsage = so.include_usage;
    }
  }
  return { stream, includeUsage };
}

function isTokenList(v: unknown): v is number[] {
  return Array.isArray(v) && v.length > 0 && v.every((t) => typeof t === 'number' && Number.isSafeInteger(t) && t >= 0);
}

function promptField(body: Body): Prompt[] {
  const p = body.prompt;
  if (p === undefined || p === null) throw badRequest('you must provide a prompt', 'prompt');
  let prompts: Prompt[];
  if (typeof p === 'string') prompts = [{ text: p }];
  else if (isTokenList(p)) prompts = [{ ids: p }];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string')) prompts = (p as string[]).map((text) => ({ text }));
  else if (Array.isArray(p) && p.length > 0 && p.every(isTokenList)) prompts = (p as number[][]).map((ids) => ({ ids }));
  else throw badRequest('prompt must be a string, a list of strings, a list of token ids or a list of such lists (none empty)', 'prompt');
  if (prompts.length > MAX_PROMPTS) throw badRequest(`at most ${MAX_PROMPTS} prompts per request (got ${prompts.length})`, 'prompt');
  if (prompts.some((x) => 'text' in x && x.text.length === 0)) throw badRequest('a prompt must not be empty', 'prompt');
  return prompts;
}

export function parseCompletionsRequest(raw: unknown): CompletionsRequest {
  const body = requireObject(raw);
  const model = modelField(body);
  refuseUnsupported(body, false);
  const prompts = promptField(body);
  if (present(body, 'logprobs') && typeof body.logprobs === 'boolean') {
    throw badRequest('logprobs must be a whole number (how many alternatives per token, 0-20) on /v1/completions', 'logprobs');
  }
  const logprobs = integer(body, 'logprobs', 0, MAX_TOP_LOGPROBS);
  const addSpecialTokens = present(body, 'add_special_tokens') ? bool(body, 'add_special_tokens') : true;
  return { model, prompts, addSpecialTokens, sampling: samplingFields(body, false), logprobs, ...streamFields(body) };
}

function messageContent(content: unknown, index: number, role: string): string {
  const param = `messages[${index}].content`;
  if (typeof content === 'string') return content;
  if (content === null || content === undefined) {
    if (role === 'assistant') return '';
    throw badRequest(`${param} is required`, param);
  }
  if (!Array.isArray(content)) throw badRequest(`${param} must be a string or a list of content parts`, param);
  return content
    .map((part, j) => {
      if (!isObject(part) || part.type !== 'text' || typeof part.text !== 'string') {
        const type = isObject(part) && typeof part.type === 'string' ? part.type : 'unknown';
        throw badRequest(`${param}[${j}] must be a text part ({"type": "text", "text": …}); ${JSON.stringify(type)} parts are not supported`, `${param}[${j}]`);
      }
      return part.text;
    })
    .join('');
}

function messagesField(body: Body): ChatMessage[] {
  const ms = body.messages;
  if (!Array.isArray(ms) || ms.length === 0) throw badRequest('messages must be a non-empty list', 'messages');
  return ms.map((m, i) => {
    if (!isObject(m)) throw badRequest(`messages[${i}] must be an object`, `messages[${i}]`);
    const role = m.role;
    if (role === 'tool' || role === 'function') throw badRequest(`messages[${i}]: ${role} messages are not supported (no tool calling)`, `messages[${i}].role`);
    if (role !== 'system' && role !== 'user' && role !== 'assistant' && role !== 'developer') {
      throw badRequest(`messages[${i}].role must be one of system, developer, user, assistant (not ${describe(role)})`, `messages[${i}].role`);
    }
    if (present(m, 'tool_calls') && !(Array.isArray(m.tool_calls) && m.tool_calls.length === 0)) {
      throw badRequest(`messages[${i}].tool_calls: tool calling is not supported`, `messages[${i}].tool_calls`);
    }
    const out: ChatMessage = { role: role === 'developer' ? 'system' : role, content: messageContent(m.content, i, role) };
    if (typeof m.name === 'string') out.name = m.name;
    return out;
  });
}

export function parseChatRequest(raw: unknown): ChatRequest {
  const body = requireObject(raw);
  const model = modelField(body);
  refuseUnsupported(body, true);
  const messages = messagesField(body);
  const wantLogprobs = bool(body, 'logprobs');
  const top = integer(body, 'top_logprobs', 0, MAX_TOP_LOGPROBS);
  if (top !== null && !wantLogprobs) throw badRequest('top_logprobs requires logprobs to be true', 'top_logprobs');
  let templateKwargs: Record<string, unknown> = {};
  if (present(body, 'chat_template_kwargs')) {
    if (!isObject(body.chat_template_kwargs)) throw badRequest('chat_template_kwargs must be an object', 'chat_template_kwargs');
    templateKwargs = body.chat_template_kwargs;
  }
  return {
    model, messages, templateKwargs, sampling: samplingFields(body, true), logprobs: wantLogprobs ? (top ?? 0) : null, ...streamFields(body),
  };
}
