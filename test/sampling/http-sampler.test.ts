import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../../src/core/errors.js';
import type { Decoding } from '../../src/engine/decoding.js';
import { apiBase, HttpSampler } from '../../src/sampling/http.js';
import { tempDir } from '../vault/helpers.js';

/**
 * The HTTP sampler against a scripted OpenAI-compatible server: what it sends, bounded concurrency, retries
 * (503, 429 with Retry-After, a dropped connection), fail-fast on other 4xx, resume after an interruption and
 * refusal to mix settings. (tests under test/server drive it against `distillery serve` itself.)
 */

const DECODING: Decoding = { temperature: 0.7, top_k: 20, top_p: 0.9, min_p: 0, max_tokens: 16, stop: ['\n\n'], seed: 5, chat_template: false };

interface Fake {
  url: string;
  bodies: Array<Record<string, unknown>>;
  maxInFlight: number;
  close(): Promise<void>;
}

/** `script(body, callNumber)` returns [status, json, headers?] or 'drop' to cut the connection. */
async function fakeServer(script: (body: Record<string, unknown>, call: number, path: string) => [number, unknown, Record<string, string>?] | 'drop'): Promise<Fake> {
  const bodies: Array<Record<string, unknown>> = [];
  let inFlight = 0;
  let calls = 0;
  const fake: Fake = { url: '', bodies, maxInFlight: 0, close: async () => {} };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let raw = '';
    req.on('data', (d: Buffer) => (raw += d.toString()));
    req.on('end', () => {
      const body = raw ? (JSON.parse(raw) as Record<string, unknown>) : {};
      if (req.url === '/v1/models') {
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify({ object: 'list', data: [{ id: 'fake-model' }, { id: 'other' }] }));
        return;
      }
      bodies.push(body);
      inFlight++;
      fake.maxInFlight = Math.max(fake.maxInFlight, inFlight);
      const answer = script(body, calls++, req.url ?? '');
      setTimeout(() => {
        inFlight--;
        if (answer === 'drop') {
          res.socket?.destroy();
          return;
        }
        const [status, json, headers = {}] = answer;
        res.statusCode = status;
        for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify(json));
      }, 5);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  fake.close = () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); });
  return fake;
}

const completion = (text: string, finish = 'stop') => ({ choices: [{ index: 0, text, finish_reason: finish }] });
const records = (file: string) => readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);

test('apiBase accepts the usual spellings of an endpoint', () => {
  assert.equal(apiBase('http://127.0.0.1:8000'), 'http://127.0.0.1:8000/v1');
  assert.equal(apiBase('http://127.0.0.1:8000/'), 'http://127.0.0.1:8000/v1');
  assert.equal(apiBase('http://127.0.0.1:8000/v1/'), 'http://127.0.0.1:8000/v1');
  assert.equal(apiBase('http://localhost:11434/v1'), 'http://localhost:11434/v1');
  assert.throws(() => apiBase('localhost:8000'), /not a URL|must be an http/);
  assert.throws(() => apiBase('ftp://x/v1'), /must be an http\(s\) URL/);
});

test('one request per sample, with its own seed and the decoding; sorted output; concurrency bounded', async () => {
  const fake = await fakeServer((b) => [200, completion(`${String(b.prompt)}#${String(b.seed)}`, b.seed === 6 ? 'length' : 'stop')]);
  try {
    const out = join(tempDir(), 'samples.jsonl');
    const sampler = new HttpSampler({ endpoint: fake.url, concurrency: 3 });
    let last = 0;
    const r = await sampler.sample({ prompts: ['a', 'b', 'c'], n: 2, decoding: DECODING, outputFile: out, onProgress: (d) => (last = d) });
    assert.deepEqual([r.count, r.resumed, last], [6, 0, 6]);
    assert.ok(fake.maxInFlight <= 3 && fake.maxInFlight >= 2, `in flight at most 3 (saw ${fake.maxInFlight})`);
    assert.deepEqual(fake.bodies.map((b) => b.model), Array(6).fill('fake-model'), 'the first listed model');
    const first = fake.bodies.find((b) => b.seed === 5)!;
    assert.deepEqual(first, { model: 'fake-model', max_tokens: 16, temperature: 0.7, top_p: 0.9, seed: 5, n: 1, top_k: 20, stop: ['\n\n'], prompt: 'a' });
    assert.deepEqual(records(out), [
      { prompt_index: 0, sample_index: 0, completion: 'a#5', finish_reason: 'stop' },
      { prompt_index: 0, sample_index: 1, completion: 'a#6', finish_reason: 'length' },
      { prompt_index: 1, sample_index: 0, completion: 'b#7', finish_reason: 'stop' },
      { prompt_index: 1, sample_index: 1, completion: 'b#8', finish_reason: 'stop' },
      { prompt_index: 2, sample_index: 0, completion: 'c#9', finish_reason: 'stop' },
      { prompt_index: 2, sample_index: 1, completion: 'c#10', finish_reason: 'stop' },
    ]);
  } finally {
    await fake.close();
  }
});

test('chat_template sends one user turn to /v1/chat/completions', async () => {
  const fake = await fakeServer((b, _c, path) => [200, { choices: [{ message: { role: 'assistant', content: `${path} ${JSON.stringify(b.messages)}` }, finish_reason: 'stop' }] }]);
  try {
    const out = join(tempDir(), 'chat.jsonl');
    await new HttpSampler({ endpoint: `${fake.url}/v1`, model: 'other' }).sample({ prompts: ['hi'], n: 1, decoding: { ...DECODING, chat_template: true }, outputFile: out });
    assert.equal(records(out)[0]!.completion, '/v1/chat/completions [{"role":"user","content":"hi"}]');
    assert.equal(fake.bodies[0]!.model, 'other');
  } finally {
    await fake.close();
  }
});

test('retries 503, 429 (Retry-After) and dropped connections; other 4xx fail at once with the server message', async () => {
  const flaky = await fakeServer((b, call) => (call === 0 ? [503, { error: { message: 'busy' } }] : call === 1 ? [429, { error: 'slow down' }, { 'Retry-After': '0' }] : call === 2 ? 'drop' : [200, completion('ok')]));
  try {
    const out = join(tempDir(), 's.jsonl');
    await new HttpSampler({ endpoint: flaky.url, backoffMs: 1, concurrency: 1 }).sample({ prompts: ['x'], n: 1, decoding: DECODING, outputFile: out });
    assert.equal(records(out)[0]!.completion, 'ok');
    assert.equal(flaky.bodies.length, 4);
  } finally {
    await flaky.close();
  }
  const bad = await fakeServer(() => [400, { error: { message: 'top_k is not supported' } }]);
  try {
    await assert.rejects(
      new HttpSampler({ endpoint: bad.url, backoffMs: 1 }).sample({ prompts: ['x'], n: 1, decoding: DECODING, outputFile: join(tempDir(), 's.jsonl') }),
      (e: unknown) => e instanceof UserError && /POST http:.*\/v1\/completions failed: HTTP 400: top_k is not supported/.test(e.message),
    );
    assert.equal(bad.bodies.length, 1, 'no retry of a 400');
  } finally {
    await bad.close();
  }
  const down = await fakeServer(() => [503, { error: 'down' }]);
  try {
    await assert.rejects(
      new HttpSampler({ endpoint: down.url, backoffMs: 1, retries: 2 }).sample({ prompts: ['x'], n: 1, decoding: DECODING, outputFile: join(tempDir(), 's.jsonl') }),
      /failed after 3 attempts: HTTP 503: down/,
    );
  } finally {
    await down.close();
  }
});

test('an interrupted run resumes with only the missing samples; other settings are refused', async () => {
  let failAfter = 3;
  const fake = await fakeServer((b) => (failAfter-- > 0 ? [200, completion(`s${String(b.seed)}`)] : [400, { error: 'stop here' }]));
  try {
    const out = join(tempDir(), 'samples.jsonl');
    const sampler = new HttpSampler({ endpoint: fake.url, concurrency: 1 });
    const req = { prompts: ['a', 'b', 'c'], n: 2, decoding: DECODING, outputFile: out };
    await assert.rejects(sampler.sample(req), /stop here/);
    assert.equal(records(out).length, 3);
    writeFileSync(out, readFileSync(out, 'utf8') + '{"prompt_index": 2, "sampl'); // torn by a kill
    failAfter = 100;
    fake.bodies.length = 0;
    const r = await sampler.sample(req);
    assert.deepEqual([r.count, r.resumed], [6, 3]);
    assert.deepEqual(fake.bodies.map((b) => b.seed), [8, 9, 10], 'only the missing three');
    assert.deepEqual(records(out).map((x) => x.completion), ['s5', 's6', 's7', 's8', 's9', 's10']);
    await assert.rejects(sampler.sample({ ...req, decoding: { ...DECODING, temperature: 1 } }), (e: unknown) => e instanceof UserError && /holds samples made with other settings .*decoding/.test(e.message));
  } finally {
    await fake.close();
  }
});
