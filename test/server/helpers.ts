/** Fixtures for the `distillery serve` tests: models in a temp vault, a GGUF exported from stories260k, a server. */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI from 'openai';
import { packageRoot } from '../../src/core/paths.js';
import { engineCommand } from '../../src/engine/python.js';
import { exportGguf } from '../../src/formats/gguf-export.js';
import { describeModel, type ModelSpec } from '../../src/server/registry.js';
import { startServer, type ServeHandle, type ServeOptions } from '../../src/server/http.js';
import { tempDir } from '../vault/helpers.js';

export { STORIES_MISSING, stories260kDir } from '../vault/helpers.js';
export { ENGINE_MISSING } from '../helpers/env.js';

export const PROMPT = 'Once upon a time';
/** stories260k's greedy continuation of PROMPT (57 tokens; see ../shared/models/stories260k/README.md). */
export const GOLDEN =
  ', there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.';
export const GOLDEN_TOKENS = 57;

/**
 * A chat template for stories260k (which has none): the conversation as plain text, ending where a story
 * begins. No special tokens, so every tokenizer reads the rendered text the same way.
 */
export const TEST_CHAT_TEMPLATE =
  "{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}\n{% elif m.role == 'user' %}Question: {{ m.content }}\n{% else %}Answer: {{ m.content }}\n{% endif %}{% endfor %}" +
  '{% if add_generation_prompt %}Answer: Once upon a time{% endif %}';

/** A copy of stories260k with TEST_CHAT_TEMPLATE in its tokenizer_config.json. */
export function chatStories(stories: string): string {
  const dir = join(tempDir('distillery-serve-'), 'chatty');
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(stories)) if (f !== 'SHA256SUMS' && f !== 'README.md') copyFileSync(join(stories, f), join(dir, f));
  const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  config.chat_template = TEST_CHAT_TEMPLATE;
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config, null, 2));
  return dir;
}

/** A folder holding `model.gguf` exported (f32) from a Hugging Face model folder. */
export async function ggufFolder(modelDir: string, name: string): Promise<string> {
  const dir = join(tempDir('distillery-serve-gguf-'), name);
  mkdirSync(dir, { recursive: true });
  await exportGguf(modelDir, join(dir, `${name}.gguf`), { type: 'f32' });
  return dir;
}

/** A random-B LoRA adapter on `base` (made by the engine's Python), and transformers' greedy text with it. */
export function makeAdapter(base: string, maxTokens: number): { dir: string; text: string; tokens: number } {
  const root = tempDir('distillery-serve-lora-');
  const dir = join(root, 'lora');
  const { python, env } = engineCommand();
  execFileSync(python, [join(packageRoot(), 'test', 'server', 'fixtures', 'make_adapter.py'), base, dir, PROMPT, String(maxTokens)], {
    env: { ...env, OMP_NUM_THREADS: '1' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const expected = JSON.parse(readFileSync(join(root, 'adapter-expected.json'), 'utf8')) as { text: string; tokens: number };
  return { dir, ...expected };
}

export async function specs(refs: string[], home: string): Promise<ModelSpec[]> {
  const out: ModelSpec[] = [];
  for (const r of refs) out.push(await describeModel(r, { home }));
  return out;
}

export interface TestServer {
  server: ServeHandle;
  client: OpenAI;
  logs: string[];
}

/** A server on a free loopback port and an openai client for it (no retries: each failure must show). */
export async function serve(opts: ServeOptions, apiKey = 'none'): Promise<TestServer> {
  const logs: string[] = [];
  const server = await startServer({
    port: 0,
    threads: 1,
    log: (l) => logs.push(l),
    warn: (l) => logs.push(l),
    ...opts,
  });
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey, maxRetries: 0, timeout: 120_000 });
  return { server, client, logs };
}

/** Waits until `cond()` holds (polling), or fails after `ms`. */
export async function until(cond: () => boolean, ms = 30_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Whether a process is still running. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
