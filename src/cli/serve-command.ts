import type { Command } from 'commander';
import { UserError } from '../core/errors.js';
import { distilleryHome } from '../core/paths.js';
import { isLoopbackHost } from '../mirror/server.js';
import { describeModel, DEFAULT_LLAMA_CONTEXT, type ModelSpec } from '../server/registry.js';
import { API_KEY_ENV, DEFAULT_SERVE_HOST, DEFAULT_SERVE_PORT, checkServeSecurity, generateApiKey, startServer } from '../server/http.js';
import { int, num } from './options.js';
import { untilStopped } from '../core/listen.js';

/** `distillery serve`: an OpenAI-compatible server for vault models. See docs/serving.md. */

interface ServeFlags {
  model?: string[];
  adapter?: string[];
  port: number;
  host: string;
  apiKey?: string;
  generateApiKey?: boolean;
  concurrency: number;
  idleUnload: number;
  contextSize: number;
  quiet?: boolean;
}

/** Repeatable flag without collect()'s \n unescaping (model references are taken literally). */
function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

export const DEFAULT_IDLE_UNLOAD_SECONDS = 600;

/** The served models, in order: --model refs, then --adapter refs (each on its base model). */
export async function serveSpecs(models: string[], adapters: string[], home: string): Promise<ModelSpec[]> {
  const specs: ModelSpec[] = [];
  for (const ref of models) specs.push(await describeModel(ref, { home }));
  const hfBases = specs.filter((s) => s.backend === 'engine' && !s.adapterDir);
  for (const ref of adapters) {
    const spec = await describeModel(ref, { home, fallbackBase: hfBases.length === 1 ? hfBases[0]!.id : undefined });
    if (!spec.adapterDir) throw new UserError(`--adapter ${ref} is not a PEFT adapter (it is ${spec.format})`, 'pass models with --model');
    specs.push(spec);
  }
  return specs;
}

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description(
      'Serve vault models over an OpenAI-compatible HTTP API (/v1/models, /v1/completions, /v1/chat/completions, ' +
        'with streaming and log-probs). GGUF models run in llama.cpp (node-llama-cpp), Hugging Face models and ' +
        'PEFT adapters in the Python engine; each in a process of its own, loaded on first use.',
    )
    .option('--model <ref>', 'a model to serve: NAME, NAME:VERSION or a path (repeatable); clients select it by this name', collect)
    .option('--adapter <ref>', 'a PEFT adapter to serve on its base model (the vault model it was imported against, or the one --model) (repeatable)', collect)
    .option('--port <port>', 'port to listen on (0 = any free port)', int, DEFAULT_SERVE_PORT)
    .option('--host <host>', 'address to bind; anything but a loopback address requires an API key', DEFAULT_SERVE_HOST)
    .option('--api-key <key>', `require "Authorization: Bearer <key>" on every request (default: $${API_KEY_ENV})`)
    .option('--generate-api-key', 'require a freshly generated random API key, printed at start')
    .option('--concurrency <n>', 'requests answered at once per model; more wait in a queue', int, 1)
    .option('--idle-unload <seconds>', 'stop a model\'s process after this long without requests (0 = never)', num, DEFAULT_IDLE_UNLOAD_SECONDS)
    .option('--context-size <tokens>', 'GGUF models: most tokens per request (capped by the model\'s trained context)', int, DEFAULT_LLAMA_CONTEXT)
    .option('--quiet', 'do not log each request to stderr')
    .addHelpText(
      'after',
      `
Examples:
  distillery serve --model qwen3-0.6b
  curl http://127.0.0.1:${DEFAULT_SERVE_PORT}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "qwen3-0.6b", "messages": [{"role": "user", "content": "Hello"}]}'
  OPENAI_BASE_URL=http://127.0.0.1:${DEFAULT_SERVE_PORT}/v1 OPENAI_API_KEY=none python my_client.py
  ${API_KEY_ENV}=… distillery serve --model my-model --host 0.0.0.0`,
    )
    .action(async (flags: ServeFlags) => {
      if (!Number.isInteger(flags.port) || flags.port < 0 || flags.port > 65535) throw new UserError(`--port must be 0-65535, not ${flags.port}`);
      if (flags.apiKey !== undefined && flags.generateApiKey) throw new UserError('use either --api-key or --generate-api-key, not both');
      if (flags.concurrency < 1) throw new UserError(`--concurrency must be at least 1, not ${flags.concurrency}`);
      if (!(flags.idleUnload >= 0)) throw new UserError(`--idle-unload must be 0 or more seconds, not ${flags.idleUnload}`);
      if (flags.contextSize < 16) throw new UserError(`--context-size must be at least 16 tokens, not ${flags.contextSize}`);
      const models = flags.model ?? [];
      const adapters = flags.adapter ?? [];
      if (models.length + adapters.length === 0) throw new UserError('nothing to serve', 'pass --model REF (repeatable); "distillery vault list" shows the models');
      const envKey = process.env[API_KEY_ENV];
      const apiKey = flags.generateApiKey ? generateApiKey() : flags.apiKey ?? (envKey && envKey.length > 0 ? envKey : null);

      checkServeSecurity(flags.host, apiKey); // before the models are looked at: the cheaper mistake first
      const home = distilleryHome();
      const specs = await serveSpecs(models, adapters, home);
      const warn = (line: string) => process.stderr.write(`serve: ${line}\n`);
      const server = await startServer({
        models: specs,
        host: flags.host,
        port: flags.port,
        apiKey,
        concurrency: flags.concurrency,
        idleUnloadSeconds: flags.idleUnload,
        llamaContext: flags.contextSize,
        log: flags.quiet ? undefined : (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`),
        warn,
      });
      const lines = [`Distillery serving ${specs.length} model${specs.length === 1 ? '' : 's'} at ${server.url}/v1 (OpenAI-compatible)`];
      for (const s of specs) {
        const how = s.backend === 'llama' ? 'llama.cpp' : s.adapterDir ? 'Python engine, adapter on its base' : 'Python engine';
        lines.push(`  ${s.id}  (${s.format}, ${how}${s.chat.template ? ', chat' : ', completions only'})`);
      }
      if (flags.host === '0.0.0.0' || flags.host === '::' || flags.host === '[::]') lines.push(`  listening on every interface: clients use this machine's address instead of ${flags.host}`);
      else if (!isLoopbackHost(flags.host)) lines.push(`  reachable by anyone who can reach ${flags.host}; every request needs the API key`);
      if (flags.generateApiKey && apiKey) lines.push('', `API key: ${apiKey}`);
      else if (apiKey) lines.push('', 'Every request needs the API key (Authorization: Bearer <key>).');
      lines.push(
        '',
        'Use it with:',
        `  OpenAI(base_url="${server.url}/v1", api_key="${apiKey ? '<key>' : 'none'}")`,
        `  curl ${server.url}/v1/models${apiKey ? ' -H "Authorization: Bearer <key>"' : ''}`,
        '',
        'Models load on first use. Stop with Ctrl+C.',
        '',
      );
      process.stdout.write(lines.join('\n'));

      await untilStopped('serve');
      await server.close();
    });
}
