import { InvalidArgumentError, type Command } from 'commander';

/** Option parsers that fail with a message naming the flag's expectation. */
export function num(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`"${value}" is not a number.`);
  return n;
}

export function int(value: string): number {
  const n = num(value);
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`"${value}" is not a whole number.`);
  return n;
}

export function intList(value: string): number[] {
  return value.split(',').map((v) => int(v.trim()));
}

export function collect(value: string, previous: string[] | undefined): string[] {
  // JSON-style escapes let a stop sequence hold a newline: --stop '\n\n'
  const unescaped = value.replace(/\\n/g, '\n').replace(/\\t/g, '\t');
  return [...(previous ?? []), unescaped];
}

/** Decoding flags shared by every command that samples; `prefix` distinguishes e.g. --eval-temperature. */
export function addDecodingOptions(cmd: Command, prefix = '', what = 'sampling', seedHelp = `${what} seed`): Command {
  const p = prefix ? `${prefix}-` : '';
  return cmd
    .option(`--${p}temperature <t>`, `${what} temperature (0 = greedy)`, num)
    .option(`--${p}top-k <k>`, `${what} top-k (0 = off)`, int)
    .option(`--${p}top-p <p>`, `${what} top-p (1 = off)`, num)
    .option(`--${p}min-p <p>`, `${what} min-p (0 = off)`, num)
    .option(`--${p}max-tokens <n>`, `${what}: most tokens per completion`, int)
    .option(`--${p}stop <text>`, `${what}: stop sequence (repeatable; \\n for newline)`, collect)
    .option(`--${p}seed <n>`, seedHelp, int);
}

/** Reads the decoding flags added by addDecodingOptions back into engine field names (only those given). */
export function decodingFromFlags(opts: Record<string, unknown>, prefix = ''): Record<string, unknown> {
  const key = (name: string): string => (prefix ? prefix + name[0]!.toUpperCase() + name.slice(1) : name);
  const out: Record<string, unknown> = {
    temperature: opts[key('temperature')],
    top_k: opts[key('topK')],
    top_p: opts[key('topP')],
    min_p: opts[key('minP')],
    max_tokens: opts[key('maxTokens')],
    stop: opts[key('stop')],
    seed: opts[key('seed')],
  };
  for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];
  return out;
}

/** Sampler flags shared by the commands that generate (eval, ssd); see src/sampling. */
export function addSamplerOptions(cmd: Command, what: string): Command {
  return cmd
    .option('--sampler <backend>', `what generates the ${what} samples: engine (default), llama (llama.cpp on the model's GGUF export) or http (any OpenAI-compatible server)`)
    .option('--gguf <ref>', 'llama sampler: the GGUF model to sample (default: the model itself if GGUF, else its newest GGUF export)')
    .option('--endpoint <url>', 'http sampler: the server, e.g. http://127.0.0.1:8000/v1 (vLLM, SGLang, llama-server, Ollama, LM Studio, distillery serve)')
    .option('--endpoint-model <name>', 'http sampler: the model name to request (default: the first the server lists)')
    .option('--concurrency <n>', 'http sampler: requests in flight (default 4); llama: sequences decoded at once (default 2)', int);
}
