/**
 * The HTTP sampler (src/sampling/http.ts) against `distillery serve` itself: the samples file it writes holds
 * the same greedy text the openai client gets, seeded sampling is reproducible, and an interrupted file
 * resumes with only the missing samples.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { packageRoot } from '../../src/core/paths.js';
import { join } from 'node:path';
import type { Decoding } from '../../src/engine/decoding.js';
import { HttpSampler } from '../../src/sampling/http.js';
import { importFrom, importModel } from '../../src/vault/vault.js';
import { LlamaSampler } from '../../src/sampling/llama.js';
import { ggufFor } from '../../src/cli/sampler-flags.js';
import { exportToVault } from '../../src/cli/export-command.js';
import { tempDir } from '../vault/helpers.js';
import { GOLDEN, GOLDEN_TOKENS, ggufFolder, PROMPT, serve, specs, stories260kDir, STORIES_MISSING, type TestServer } from './helpers.js';

const storiesDir = stories260kDir();
const skip = storiesDir === null ? STORIES_MISSING : false;
let t: TestServer;

before(async () => {
  if (skip) return;
  const home = tempDir('distillery-serve-home-');
  await importFrom(await ggufFolder(storiesDir!, 'stories'), { name: 'stories-gguf' }, home);
  t = await serve({ models: await specs(['stories-gguf'], home), concurrency: 2, idleUnloadSeconds: 0 });
});
after(async () => {
  await t?.server.close();
});

const greedy: Decoding = { temperature: 0, top_k: 0, top_p: 1, min_p: 0, max_tokens: GOLDEN_TOKENS, stop: [], seed: 0, chat_template: false };
const lines = (f: string) => readFileSync(f, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { prompt_index: number; sample_index: number; completion: string });

test('greedy samples through distillery serve equal the known text; seeded samples repeat; resume asks only for the rest', { skip, timeout: 120_000 }, async () => {
  const sampler = new HttpSampler({ endpoint: t.server.url, concurrency: 2 });
  assert.equal(await sampler.resolveModel(), 'stories-gguf');
  const out = join(tempDir(), 'greedy.jsonl');
  const r = await sampler.sample({ prompts: [PROMPT, PROMPT], n: 1, decoding: greedy, outputFile: out });
  assert.equal(r.count, 2);
  assert.deepEqual(lines(out).map((l) => l.completion), [GOLDEN, GOLDEN]);

  const warm: Decoding = { ...greedy, temperature: 0.9, top_k: 40, top_p: 0.95, max_tokens: 24, seed: 11 };
  const a = join(tempDir(), 'a.jsonl');
  const b = join(tempDir(), 'b.jsonl');
  await sampler.sample({ prompts: [PROMPT], n: 3, decoding: warm, outputFile: a });
  await sampler.sample({ prompts: [PROMPT], n: 3, decoding: warm, outputFile: b });
  assert.deepEqual(lines(a), lines(b), 'the same seeds give the same samples');
  assert.ok(new Set(lines(a).map((l) => l.completion)).size > 1, 'each sample has its own seed');

  // Keep the first sample only, as if the run had been killed: the rerun draws the other two, identically.
  writeFileSync(b, readFileSync(b, 'utf8').split('\n')[0] + '\n');
  const resumed = await sampler.sample({ prompts: [PROMPT], n: 3, decoding: warm, outputFile: b });
  assert.equal(resumed.resumed, 1);
  assert.deepEqual(lines(b), lines(a));
});

test('the llama.cpp sampler on a vault GGUF: greedy text; --sampler llama finds the newest GGUF export of a model', { skip, timeout: 120_000 }, async () => {
  const home = tempDir('distillery-llama-sampler-');
  await importModel(storiesDir!, { name: 'stories' }, home);
  await assert.rejects(async () => ggufFor('stories', undefined, home), /needs a GGUF of stories, and the vault has none/);
  await exportToVault('stories', { type: 'f32' }, home);
  const gguf = ggufFor('stories', undefined, home);
  assert.equal(gguf, 'stories-gguf-f32:1');
  assert.equal(ggufFor('stories-gguf-f32', undefined, home), 'stories-gguf-f32', 'a GGUF model samples itself');
  const out = join(tempDir(), 'llama.jsonl');
  const r = await new LlamaSampler(gguf, { home, threads: 1 }).sample({ prompts: [PROMPT, PROMPT], n: 1, decoding: greedy, outputFile: out });
  assert.deepEqual([r.count, r.resumed], [2, 0]);
  assert.deepEqual(lines(out).map((l) => l.completion), [GOLDEN, GOLDEN]);
  const again = await new LlamaSampler(gguf, { home }).sample({ prompts: [PROMPT, PROMPT], n: 1, decoding: greedy, outputFile: out });
  assert.equal(again.resumed, 2, 'nothing left to draw: the model is not even loaded');
});

test('eval --suite retention through the llama.cpp sampler, then distillery report on the model', { skip, timeout: 180_000 }, async () => {
  const home = tempDir('distillery-retention-cli-');
  const env = { ...process.env, DISTILLERY_HOME: home, DISTILLERY_THREADS: '1' };
  const bin = join(packageRoot(), 'bin', 'distillery.js');
  const run = (args: string[]) => spawnSync(process.execPath, [bin, ...args], { env, encoding: 'utf8', timeout: 150_000 });
  assert.equal(run(['vault', 'import', storiesDir!, '--name', 'stories']).status, 0);
  assert.equal(run(['export', 'stories', '--type', 'f32', '-q']).status, 0);
  const r = run(['eval', '--model', 'stories', '--sampler', 'llama', '--suite', 'retention', '--json', '-q']);
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout) as { tasks: number; n: number; prompt_format: string; harness_version: string; licence?: string; license?: string };
  assert.deepEqual([summary.tasks, summary.n, summary.prompt_format], [132, 1, 'base']);
  assert.match(summary.harness_version, /^distillery-eval\//);
  assert.match(run(['eval', '--model', 'stories', '--suite', 'retention', '--tasks', 'x.jsonl']).stderr, /--suite retention brings its own tasks/);
  const out = join(tempDir(), 'report.html');
  const rep = run(['report', 'stories-gguf-f32', '-o', out, '--json', '-']);
  assert.equal(rep.status, 0, rep.stderr);
  assert.match(readFileSync(out, 'utf8'), /<td>stories-gguf-f32:1<\/td><td>retention<\/td>/);
});
