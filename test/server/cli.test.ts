/**
 * `distillery serve` as a command: flags, the start banner, an answered request, a clean stop on SIGTERM,
 * and the refusals (no model, a public address without a key). Runs registerServeCommand in a child process
 * (the same code path main.ts uses once the command is registered there).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import OpenAI from 'openai';
import { packageRoot } from '../../src/core/paths.js';
import { importFrom } from '../../src/vault/vault.js';
import { tempDir } from '../vault/helpers.js';
import { GOLDEN, ggufFolder, PROMPT, stories260kDir, STORIES_MISSING } from './helpers.js';

const storiesDir = stories260kDir();

/** A script that registers the serve command on a fresh program and runs it with the given arguments. */
function harness(): string {
  const mod = pathToFileURL(join(packageRoot(), 'dist', 'src', 'cli', 'serve-command.js')).href;
  return [
    "import { Command } from 'commander';",
    `import { registerServeCommand } from ${JSON.stringify(mod)};`,
    'const program = new Command().exitOverride();',
    'registerServeCommand(program);',
    'try { await program.parseAsync(process.argv.slice(1), { from: "user" }); }',
    'catch (e) { process.stderr.write(`error: ${e.message}\\n`); process.exit(1); }',
  ].join('\n');
}

function run(args: string[], env: NodeJS.ProcessEnv) {
  return spawnSync(process.execPath, ['--input-type=module', '-e', harness(), '--', ...args], { env, encoding: 'utf8', cwd: packageRoot(), timeout: 60_000 });
}

test('serve refuses to start without a model or on a public address without a key', () => {
  const env = { ...process.env, DISTILLERY_HOME: tempDir('distillery-serve-cli-'), DISTILLERY_API_KEY: '' };
  const none = run(['serve'], env);
  assert.equal(none.status, 1);
  assert.match(none.stderr, /nothing to serve/);
  const open = run(['serve', '--model', 'x', '--host', '0.0.0.0'], env);
  assert.equal(open.status, 1);
  assert.match(open.stderr, /refusing to serve models on 0\.0\.0\.0 without an API key/);
});

test('`distillery serve --model` answers the openai client and stops on SIGTERM', { skip: storiesDir === null ? STORIES_MISSING : false, timeout: 120_000 }, async () => {
  const home = tempDir('distillery-serve-cli-');
  await importFrom(await ggufFolder(storiesDir!, 'stories'), { name: 'stories-gguf' }, home);
  const key = 'sk-test-cli-0123456789';
  const child = spawn(process.execPath, ['--input-type=module', '-e', harness(), '--', 'serve', '--model', 'stories-gguf', '--port', '0', '--idle-unload', '30', '--concurrency', '2'], {
    env: { ...process.env, DISTILLERY_HOME: home, DISTILLERY_API_KEY: key },
    cwd: packageRoot(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no banner; stderr: ${stderr}`)), 30_000);
      const check = () => {
        const m = /at (http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(stdout);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      };
      child.stdout.on('data', check);
      void exited.then(() => reject(new Error(`serve exited early: ${stderr}`)));
    });
    assert.match(stdout, /stories-gguf {2}\(gguf, llama\.cpp, completions only\)/);
    assert.match(stdout, /Every request needs the API key/);
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
    const r = await client.completions.create({ model: 'stories-gguf', prompt: PROMPT, max_tokens: 8, temperature: 0 });
    assert.equal(r.choices[0]!.text, GOLDEN.slice(0, r.choices[0]!.text.length));
    await assert.rejects(new OpenAI({ baseURL: `${url}/v1`, apiKey: 'sk-not-the-key-0000', maxRetries: 0 }).models.list(), OpenAI.AuthenticationError);
    assert.match(stderr, /POST \/v1\/completions 200 stories-gguf 8 tokens/);
  } finally {
    child.kill('SIGTERM');
  }
  const code = await exited;
  assert.ok(code === 0 || code === 143, `exit code ${code}; stderr: ${stderr}`);
  assert.match(stderr, /SIGTERM, stopping/);
});
