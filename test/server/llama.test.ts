/**
 * `distillery serve` on the llama.cpp backend (node-llama-cpp in a child process), driven with the official
 * openai client: GGUF files made by the exporter from stories260k (one plain, one with a chat template).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { importFrom } from '../../src/vault/vault.js';
import { tempDir } from '../vault/helpers.js';
import {
  alive, chatStories, ENGINE_MISSING, GOLDEN, GOLDEN_TOKENS, ggufFolder, PROMPT, serve, specs, stories260kDir,
  STORIES_MISSING, until, type TestServer,
} from './helpers.js';

const storiesDir = stories260kDir();
const skip = storiesDir === null ? STORIES_MISSING : false;

let t: TestServer;
let home = '';
let chattyDir = '';

before(async () => {
  if (skip) return;
  home = tempDir('distillery-serve-home-');
  chattyDir = chatStories(storiesDir!);
  await importFrom(await ggufFolder(storiesDir!, 'stories'), { name: 'stories-gguf' }, home);
  await importFrom(await ggufFolder(chattyDir, 'chatty'), { name: 'chatty-gguf' }, home);
  const models = await specs(['stories-gguf', 'chatty-gguf'], home);
  assert.deepEqual(models.map((m) => [m.backend, m.format, m.contextLength, m.chat.template !== null]), [['llama', 'gguf', 512, false], ['llama', 'gguf', 512, true]]);
  t = await serve({ models, concurrency: 2, idleUnloadSeconds: 0 });
});

after(async () => {
  await t?.server.close();
});

test('a GGUF exported from stories260k gives its known greedy text through the openai client', { skip, timeout: 120_000 }, async () => {
  const r = await t.client.completions.create({ model: 'stories-gguf', prompt: PROMPT, max_tokens: GOLDEN_TOKENS, temperature: 0 });
  assert.equal(r.choices[0]!.text, GOLDEN);
  assert.equal(r.choices[0]!.finish_reason, 'length');
  assert.deepEqual(r.usage, { prompt_tokens: 5, completion_tokens: GOLDEN_TOKENS, total_tokens: 5 + GOLDEN_TOKENS });
  // Token-id prompts (BOS included by the caller) give the same.
  const ids = await t.client.completions.create({ model: 'stories-gguf', prompt: [1, 403, 407, 261, 378], max_tokens: 10, temperature: 0 });
  assert.equal(ids.choices[0]!.text, GOLDEN.slice(0, ids.choices[0]!.text.length));
  await assert.rejects(t.client.completions.create({ model: 'stories-gguf', prompt: [1, 99999], max_tokens: 2 }), (e: unknown) => {
    assert.ok(e instanceof OpenAI.BadRequestError);
    assert.match(e.message, /outside the model's vocabulary/);
    return true;
  });
});

test('streaming equals the non-streamed text (llama.cpp sampler and chat)', { skip, timeout: 120_000 }, async () => {
  const whole = await t.client.completions.create({ model: 'stories-gguf', prompt: PROMPT, max_tokens: 40, temperature: 0.9, seed: 7 });
  const stream = await t.client.completions.create({ model: 'stories-gguf', prompt: PROMPT, max_tokens: 40, temperature: 0.9, seed: 7, stream: true });
  let text = '';
  for await (const c of stream) text += c.choices[0]?.text ?? '';
  assert.equal(text, whole.choices[0]!.text);

  const messages = [{ role: 'user' as const, content: 'Tell me a story.' }];
  const chat = await t.client.chat.completions.create({ model: 'chatty-gguf', messages, max_tokens: 30, temperature: 0 });
  const chatStream = await t.client.chat.completions.create({ model: 'chatty-gguf', messages, max_tokens: 30, temperature: 0, stream: true });
  let chatText = '';
  for await (const c of chatStream) chatText += c.choices[0]?.delta.content ?? '';
  assert.equal(chatText, chat.choices[0]!.message.content);
  assert.ok(chatText.length > 0);
});

test('logprobs: sorted alternatives, chosen token present, greedy = argmax; sampling with log-probs is seeded', { skip, timeout: 120_000 }, async () => {
  const r = await t.client.chat.completions.create({ model: 'chatty-gguf', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 10, temperature: 0, logprobs: true, top_logprobs: 3 });
  const content = r.choices[0]!.logprobs!.content!;
  assert.equal(content.length, 10);
  assert.equal(content.map((c) => c.token).join(''), r.choices[0]!.message.content);
  for (const c of content) {
    const values = c.top_logprobs.map((x) => x.logprob);
    assert.deepEqual(values, [...values].sort((a, b) => b - a));
    assert.equal(c.top_logprobs[0]!.token, c.token);
    assert.equal(c.top_logprobs[0]!.logprob, c.logprob);
  }
  const c = await t.client.completions.create({ model: 'stories-gguf', prompt: PROMPT, max_tokens: 6, temperature: 0, logprobs: 2 });
  const lp = c.choices[0]!.logprobs!;
  assert.deepEqual(lp.tokens, [',', ' there', ' was', ' a', ' little', ' g']);
  assert.deepEqual(Object.keys(lp.top_logprobs![1]!), [' there', ' in']);
  // With log-probs at temperature > 0, the token is drawn here from the raw distribution: reproducible by seed.
  const ask = (seed: number) => t.client.completions.create({ model: 'stories-gguf', prompt: PROMPT, max_tokens: 25, temperature: 1, seed, logprobs: 1 }).then((x) => x.choices[0]!);
  const a = await ask(5);
  assert.equal((await ask(5)).text, a.text);
  assert.equal(a.logprobs!.tokens!.join(''), a.text);
  const others = await Promise.all([ask(6), ask(8)]);
  assert.ok(others.some((o) => o.text !== a.text));
});

test('stop sequences, max_tokens and seeds on the llama.cpp sampler', { skip, timeout: 120_000 }, async () => {
  const r = await t.client.completions.create({ model: 'stories-gguf', prompt: PROMPT, max_tokens: 60, temperature: 0, stop: ['xyz', ' girl named'] });
  assert.equal(r.choices[0]!.text, ', there was a little');
  assert.equal(r.choices[0]!.finish_reason, 'stop');
  const stream = await t.client.completions.create({ model: 'stories-gguf', prompt: PROMPT, max_tokens: 60, temperature: 0, stop: 'ball', stream: true });
  let text = '';
  for await (const ch of stream) text += ch.choices[0]?.text ?? '';
  assert.equal(text, GOLDEN.slice(0, GOLDEN.indexOf('ball')));
  const short = await t.client.completions.create({ model: 'stories-gguf', prompt: PROMPT, max_tokens: 3, temperature: 0 });
  assert.equal(short.choices[0]!.text, ', there was');
  assert.equal(short.choices[0]!.finish_reason, 'length');
  const ask = (seed: number) => t.client.completions.create({ model: 'stories-gguf', prompt: PROMPT, max_tokens: 30, temperature: 1, seed }).then((x) => x.choices[0]!.text);
  const a = await ask(42);
  assert.equal(await ask(42), a);
  assert.ok((await Promise.all([ask(43), ask(44)])).some((o) => o !== a));
});

test('parallel requests within the concurrency limit all complete', { skip, timeout: 120_000 }, async () => {
  const texts = await Promise.all(
    Array.from({ length: 5 }, () => t.client.completions.create({ model: 'stories-gguf', prompt: PROMPT, max_tokens: 30, temperature: 0 }).then((r) => r.choices[0]!.text)),
  );
  assert.equal(new Set(texts).size, 1);
  assert.equal(texts[0], GOLDEN.slice(0, texts[0]!.length));
});

test('killing the llama.cpp process mid-request fails that request with a 500; the server stays up and restarts it', { skip, timeout: 120_000 }, async () => {
  const model = t.server.registry.find('stories-gguf')!;
  const pid = model.backend!.pid!;
  const inFlight = t.client.completions.create({ model: 'stories-gguf', prompt: PROMPT, max_tokens: 400, temperature: 1, seed: 1 });
  await until(() => model.running === 1, 10_000, 'the request to reach llama.cpp');
  process.kill(pid, 'SIGKILL');
  await assert.rejects(inFlight, (e: unknown) => {
    assert.ok(e instanceof OpenAI.APIError);
    assert.equal(e.status, 500);
    assert.match(e.message, /model stories-gguf: the llama\.cpp process serving it crashed \(signal SIGKILL\)/);
    return true;
  });
  // Other models were not affected, and the next request gets a fresh process.
  assert.equal(t.server.registry.find('chatty-gguf')!.loaded, true);
  const r = await t.client.completions.create({ model: 'stories-gguf', prompt: PROMPT, max_tokens: 5, temperature: 0 });
  assert.equal(r.choices[0]!.text, ', there was a little');
  assert.notEqual(model.backend!.pid, pid);
});

test('idle unload ends the llama.cpp process; a later request loads the model again', { skip, timeout: 120_000 }, async () => {
  const s = await serve({ models: await specs(['stories-gguf'], home), idleUnloadSeconds: 0.5 });
  try {
    await s.client.completions.create({ model: 'stories-gguf', prompt: PROMPT, max_tokens: 2, temperature: 0 });
    const model = s.server.registry.find('stories-gguf')!;
    const pid = model.backend!.pid!;
    await until(() => !model.loaded, 10_000, 'the idle unload');
    await until(() => !alive(pid), 10_000, 'the process to exit');
    const r = await s.client.completions.create({ model: 'stories-gguf', prompt: PROMPT, max_tokens: 2, temperature: 0 });
    assert.equal(r.choices[0]!.text, ', there');
    assert.equal(model.starts, 2);
  } finally {
    await s.server.close();
  }
});

test('the same chat through both backends: same text, close log-probs', { skip: skip || ENGINE_MISSING, timeout: 120_000 }, async () => {
  const s = await serve({ models: await specs([chattyDir], home) });
  try {
    const messages = [{ role: 'system' as const, content: 'A story.' }, { role: 'user' as const, content: 'Who is Lily?' }];
    const ask = (client: OpenAI, model: string) => client.chat.completions.create({ model, messages, max_tokens: 20, temperature: 0, logprobs: true, top_logprobs: 2 });
    const [engine, llama] = await Promise.all([ask(s.client, chattyDir), ask(t.client, 'chatty-gguf')]);
    assert.equal(llama.choices[0]!.message.content, engine.choices[0]!.message.content);
    assert.equal(llama.usage!.prompt_tokens, engine.usage!.prompt_tokens);
    const a = engine.choices[0]!.logprobs!.content!;
    const b = llama.choices[0]!.logprobs!.content!;
    assert.deepEqual(b.map((x) => x.token), a.map((x) => x.token));
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]!.logprob - b[i]!.logprob) < 1e-3, `token ${i}: ${a[i]!.logprob} vs ${b[i]!.logprob}`);
  } finally {
    await s.server.close();
  }
});
