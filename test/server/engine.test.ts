/**
 * `distillery serve` on the Python engine, driven with the official openai client: stories260k from the
 * vault (its known greedy text), a copy with a chat template, and a PEFT adapter on it.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { importFrom, importModel } from '../../src/vault/vault.js';
import { describeModel } from '../../src/server/registry.js';
import { serveSpecs } from '../../src/cli/serve-command.js';
import { tempDir } from '../vault/helpers.js';
import {
  chatStories, ENGINE_MISSING, GOLDEN, GOLDEN_TOKENS, makeAdapter, PROMPT, serve, specs, stories260kDir,
  STORIES_MISSING, until, type TestServer,
} from './helpers.js';

const storiesDir = stories260kDir();
const skip = storiesDir === null ? STORIES_MISSING : ENGINE_MISSING;
const ADAPTER_TOKENS = 12;

let t: TestServer;
let adapterText = '';

before(async () => {
  if (skip) return;
  const home = tempDir('distillery-serve-home-');
  await importModel(storiesDir!, { name: 'stories' }, home);
  await importModel(chatStories(storiesDir!), { name: 'chatty' }, home);
  const adapter = makeAdapter(storiesDir!, ADAPTER_TOKENS);
  adapterText = adapter.text;
  // Imported against its base, so the manifest names the vault model it runs on.
  await importFrom(adapter.dir, { name: 'stories-lora', base: 'stories' }, home);
  const models = await specs(['stories', 'chatty'], home);
  models.push(await describeModel('stories-lora', { home }));
  // The CLI's way: one --model plus an --adapter finds the base by itself.
  const viaCli = await serveSpecs(['stories'], ['stories-lora'], home);
  assert.equal(viaCli[1]!.adapterDir, models[2]!.adapterDir);
  t = await serve({ models, concurrency: 2, idleUnloadSeconds: 0 });
});

after(async () => {
  await t?.server.close();
});

test('greedy completion of stories260k equals its known text (vault reference, usage, finish_reason)', { skip, timeout: 120_000 }, async () => {
  const r = await t.client.completions.create({ model: 'stories', prompt: PROMPT, max_tokens: GOLDEN_TOKENS, temperature: 0 });
  assert.equal(r.choices[0]!.text, GOLDEN);
  assert.equal(r.choices[0]!.finish_reason, 'length');
  assert.deepEqual(r.usage, { prompt_tokens: 5, completion_tokens: GOLDEN_TOKENS, total_tokens: 5 + GOLDEN_TOKENS });
  assert.equal(r.model, 'stories');
  // The vault's NAME:VERSION selects it too.
  const again = await t.client.completions.create({ model: 'stories:1', prompt: PROMPT, max_tokens: 10, temperature: 0 });
  assert.equal(again.choices[0]!.text, GOLDEN.slice(0, again.choices[0]!.text.length));
});

test('streamed deltas concatenate to the non-streamed text (completions and chat)', { skip, timeout: 120_000 }, async () => {
  const whole = await t.client.completions.create({ model: 'stories', prompt: PROMPT, max_tokens: 40, temperature: 0.9, seed: 7 });
  const stream = await t.client.completions.create({ model: 'stories', prompt: PROMPT, max_tokens: 40, temperature: 0.9, seed: 7, stream: true });
  let text = '';
  let finish: string | null = null;
  let chunks = 0;
  for await (const c of stream) {
    text += c.choices[0]?.text ?? '';
    finish = c.choices[0]?.finish_reason ?? finish;
    chunks++;
  }
  assert.equal(text, whole.choices[0]!.text);
  assert.equal(finish, whole.choices[0]!.finish_reason);
  assert.ok(chunks > 5, `streamed in pieces (${chunks} chunks)`);

  const messages = [{ role: 'user' as const, content: 'Tell me a story.' }];
  const chat = await t.client.chat.completions.create({ model: 'chatty', messages, max_completion_tokens: 30, temperature: 0 });
  const chatStream = await t.client.chat.completions.create({ model: 'chatty', messages, max_completion_tokens: 30, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let chatText = '';
  let usage: OpenAI.CompletionUsage | null | undefined;
  for await (const c of chatStream) {
    chatText += c.choices[0]?.delta.content ?? '';
    usage = c.usage ?? usage;
  }
  assert.equal(chatText, chat.choices[0]!.message.content);
  assert.deepEqual(usage, chat.usage);
});

test('chat renders the model\'s template: same text as a completion of the rendered prompt', { skip, timeout: 120_000 }, async () => {
  const chat = await t.client.chat.completions.create({
    model: 'chatty', temperature: 0, max_tokens: 25,
    messages: [{ role: 'system', content: 'A story.' }, { role: 'user', content: 'Who is Lily?' }],
  });
  const rendered = 'A story.\nQuestion: Who is Lily?\nAnswer: Once upon a time';
  const plain = await t.client.completions.create({ model: 'chatty', prompt: rendered, max_tokens: 25, temperature: 0, add_special_tokens: false } as OpenAI.CompletionCreateParamsNonStreaming);
  assert.equal(chat.choices[0]!.message.content, plain.choices[0]!.text);
  assert.equal(chat.usage!.prompt_tokens, plain.usage!.prompt_tokens);
  assert.ok(chat.choices[0]!.message.content!.length > 0);
  await assert.rejects(t.client.chat.completions.create({ model: 'stories', messages: [{ role: 'user', content: 'x' }] }), /stories cannot chat/);
});

test('logprobs and top_logprobs: shape, sorted, chosen token present, greedy = argmax', { skip, timeout: 120_000 }, async () => {
  const r = await t.client.completions.create({ model: 'stories', prompt: PROMPT, max_tokens: 12, temperature: 0, logprobs: 5 });
  const lp = r.choices[0]!.logprobs!;
  assert.equal(lp.tokens!.length, 12);
  assert.equal(lp.tokens!.join(''), r.choices[0]!.text);
  assert.equal(lp.text_offset![0], 0);
  for (const [i, top] of lp.top_logprobs!.entries()) {
    const values = Object.values(top);
    assert.ok(values.length >= 5 && values.length <= 6);
    const best = Math.max(...values);
    assert.equal(top[lp.tokens![i]!], lp.token_logprobs![i], 'the chosen token is among the alternatives');
    assert.equal(lp.token_logprobs![i], best, 'greedy picks the most likely token');
    assert.ok(lp.token_logprobs![i]! <= 0);
  }
  assert.equal(lp.tokens![1], ' there');

  const chat = await t.client.chat.completions.create({ model: 'chatty', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 4 });
  const content = chat.choices[0]!.logprobs!.content!;
  assert.equal(content.length, 8);
  assert.equal(content.map((c) => c.token).join(''), chat.choices[0]!.message.content);
  for (const c of content) {
    const top = c.top_logprobs.map((x) => x.logprob);
    assert.equal(top.length, 4);
    assert.deepEqual(top, [...top].sort((a, b) => b - a));
    assert.equal(c.top_logprobs[0]!.token, c.token);
    assert.equal(c.top_logprobs[0]!.logprob, c.logprob);
    if (c.token.length > 0) assert.deepEqual(c.bytes, [...Buffer.from(c.token, 'utf8')]);
  }
  // Sampled (temperature > 0): log-probs are the model's own, the same as greedy reports for the same prefix.
  const hot = await t.client.completions.create({ model: 'stories', prompt: PROMPT, max_tokens: 1, temperature: 1.7, seed: 1, logprobs: 2 });
  const firstTop = lp.top_logprobs![0]!;
  const tok = hot.choices[0]!.logprobs!.tokens![0]!;
  if (tok in firstTop) assert.ok(Math.abs(hot.choices[0]!.logprobs!.token_logprobs![0]! - firstTop[tok]!) < 1e-5);
});

test('stop sequences cut the text (string or list), also when streamed', { skip, timeout: 120_000 }, async () => {
  const r = await t.client.completions.create({ model: 'stories', prompt: PROMPT, max_tokens: 60, temperature: 0, stop: ['xyz', ' girl named'] });
  assert.equal(r.choices[0]!.text, ', there was a little');
  assert.equal(r.choices[0]!.finish_reason, 'stop');
  const one = await t.client.completions.create({ model: 'stories', prompt: PROMPT, max_tokens: 60, temperature: 0, stop: '.' });
  assert.equal(one.choices[0]!.text, GOLDEN.slice(0, GOLDEN.indexOf('.')));
  const stream = await t.client.completions.create({ model: 'stories', prompt: PROMPT, max_tokens: 60, temperature: 0, stop: ['ball'], stream: true });
  const pieces: string[] = [];
  for await (const c of stream) pieces.push(c.choices[0]?.text ?? '');
  assert.equal(pieces.join(''), GOLDEN.slice(0, GOLDEN.indexOf('ball')));
});

test('a seed reproduces a sample at temperature > 0; another seed differs', { skip, timeout: 120_000 }, async () => {
  const ask = (seed: number) => t.client.completions.create({ model: 'stories', prompt: PROMPT, max_tokens: 30, temperature: 1.0, top_p: 0.95, top_k: 50, seed } as OpenAI.CompletionCreateParamsNonStreaming).then((r) => r.choices[0]!.text);
  const a = await ask(42);
  assert.equal(await ask(42), a);
  const others = await Promise.all([ask(43), ask(44)]);
  assert.ok(others.some((o) => o !== a), 'different seeds give different samples');
});

test('max_tokens / max_completion_tokens end with finish_reason "length"', { skip, timeout: 120_000 }, async () => {
  const r = await t.client.completions.create({ model: 'stories', prompt: PROMPT, max_tokens: 3, temperature: 0 });
  assert.equal(r.choices[0]!.text, ', there was');
  assert.equal(r.choices[0]!.finish_reason, 'length');
  assert.equal(r.usage!.completion_tokens, 3);
  const c = await t.client.chat.completions.create({ model: 'chatty', messages: [{ role: 'user', content: 'Hi' }], max_completion_tokens: 4, temperature: 0 });
  assert.equal(c.choices[0]!.finish_reason, 'length');
  assert.equal(c.usage!.completion_tokens, 4);
});

test('N parallel requests within the concurrency limit all complete with the right text', { skip, timeout: 120_000 }, async () => {
  const texts = await Promise.all(
    Array.from({ length: 4 }, () => t.client.completions.create({ model: 'stories', prompt: PROMPT, max_tokens: 20, temperature: 0 }).then((r) => r.choices[0]!.text)),
  );
  for (const x of texts) assert.equal(x, GOLDEN.slice(0, x.length));
  assert.equal(new Set(texts).size, 1);
});

test('a PEFT adapter is served on its base model and changes its output', { skip, timeout: 120_000 }, async () => {
  const r = await t.client.completions.create({ model: 'stories-lora', prompt: PROMPT, max_tokens: ADAPTER_TOKENS, temperature: 0 });
  assert.equal(r.choices[0]!.text, adapterText, 'the same greedy text as transformers + peft');
  assert.notEqual(r.choices[0]!.text, GOLDEN.slice(0, r.choices[0]!.text.length));
});

test('killing the engine worker mid-request fails that request with a 500; the next request restarts it', { skip, timeout: 120_000 }, async () => {
  const model = t.server.registry.find('stories')!;
  const pid = model.backend!.pid!;
  const starts = model.starts;
  const inFlight = t.client.completions.create({ model: 'stories', prompt: PROMPT, max_tokens: 400, temperature: 1, seed: 3 });
  await until(() => model.running === 1, 10_000, 'the request to reach the worker');
  process.kill(pid, 'SIGKILL');
  await assert.rejects(inFlight, (e: unknown) => {
    assert.ok(e instanceof OpenAI.APIError);
    assert.equal(e.status, 500);
    assert.match(e.message, /model stories: the Python engine process serving it crashed \(signal SIGKILL\)/);
    return true;
  });
  // The server is still up, and the next request is answered by a new worker.
  const r = await t.client.completions.create({ model: 'stories', prompt: PROMPT, max_tokens: 5, temperature: 0 });
  assert.equal(r.choices[0]!.text, ', there was a little');
  assert.equal(model.starts, starts + 1);
  assert.notEqual(model.backend!.pid, pid);
});
