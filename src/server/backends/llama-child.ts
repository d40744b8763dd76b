import { createHash } from 'node:crypto';
import { getLlama, LlamaLogLevel, type Llama, type LlamaContext, type LlamaContextSequence, type LlamaModel, type Token } from 'node-llama-cpp';
import { Release } from '../release.js';
import type { CompletionJob, CompletionResult, Delta, TokenLogprob, TopLogprob } from './types.js';
import type { ChildMessage, LoadMessage, ParentMessage } from './llama-protocol.js';

/**
 * The node-llama-cpp process behind one GGUF model of `distillery serve` (started by llama.ts with
 * child_process.fork). llama.cpp aborts the whole process on some malformed files and internal errors; here
 * that ends this process only, and the server fails the requests in flight and starts a new one on demand.
 *
 * One context with one sequence per allowed concurrent request. Two decoding paths, same rules:
 * - without log-probs, llama.cpp's own sampler (temperature, top-k, top-p, min-p, seed) via sequence.evaluate;
 * - with log-probs, one step at a time via controlledEvaluate, reading the model's raw next-token
 *   distribution (no sampling options applied) and drawing the token here, so the reported log-probs are the
 *   model's own (as the engine reports them), not the tempered distribution.
 */

const CONTEXT_TOKENS = 8;
const LOGPROB_FLOOR = -9999;

function send(message: ChildMessage): void {
  process.send?.(message);
}

let llama: Llama | null = null;
let model: LlamaModel | null = null;
let context: LlamaContext | null = null;
const free: LlamaContextSequence[] = [];
const waiting: Array<(s: LlamaContextSequence) => void> = [];
const active = new Set<number>();
const cancelled = new Set<number>();
let vocabSize: number | null = null;

async function load(msg: LoadMessage): Promise<void> {
  vocabSize = msg.vocabSize;
  const common = {
    build: 'never' as const,
    maxThreads: msg.threads,
    progressLogs: false,
    logLevel: LlamaLogLevel.warn,
    logger: (_level: LlamaLogLevel, text: string) => process.stderr.write(text.endsWith('\n') ? text : `${text}\n`),
  };
  if (msg.gpu === 'auto') {
    try {
      llama = await getLlama({ ...common, gpu: 'auto' });
    } catch {
      llama = await getLlama({ ...common, gpu: false });
    }
  } else {
    llama = await getLlama({ ...common, gpu: false });
  }
  model = await llama.loadModel({ modelPath: msg.modelPath });
  context = await model.createContext({
    contextSize: { max: Math.max(16, Math.min(msg.contextSize, model.trainContextSize || msg.contextSize)) },
    sequences: msg.sequences,
    threads: msg.threads,
  });
  for (let i = 0; i < msg.sequences; i++) free.push(context.getSequence());
  send({ type: 'loaded', contextSize: context.contextSize, gpu: llama.gpu, threads: msg.threads });
}

function acquire(): Promise<LlamaContextSequence> {
  const s = free.pop();
  if (s) return Promise.resolve(s);
  return new Promise((resolve) => waiting.push(resolve));
}

function releaseSequence(s: LlamaContextSequence): void {
  const next = waiting.shift();
  if (next) next(s);
  else free.push(s);
}

class RequestError extends Error {}
class CancelledError extends Error {}

/** The text each new token adds, never half a character (same windows as the engine's IncrementalDecoder). */
class Decoder {
  private readonly ids: Token[];
  private prefix = 0;
  private read: number;
  /** Where the window that decoded the last token starts (alternatives are decoded in the same one). */
  private window = 0;

  constructor(private readonly m: LlamaModel, promptIds: readonly Token[]) {
    this.ids = promptIds.slice(-CONTEXT_TOKENS);
    this.read = this.ids.length;
  }

  private decode(ids: readonly Token[]): string {
    return this.m.detokenize(ids, false);
  }

  push(token: Token): string {
    this.ids.push(token);
    this.window = this.prefix;
    const before = this.decode(this.ids.slice(this.prefix, this.read));
    const after = this.decode(this.ids.slice(this.prefix));
    if (after.length > before.length && !after.endsWith('\ufffd')) {
      this.prefix = this.read;
      this.read = this.ids.length;
      return after.slice(before.length);
    }
    return '';
  }

  alternative(token: Token): string {
    const window = this.ids.slice(this.window, -1);
    const before = this.decode(window);
    const after = this.decode([...window, token]);
    return after.length > before.length ? after.slice(before.length) : '';
  }

  flush(): string {
    const before = this.decode(this.ids.slice(this.prefix, this.read));
    const after = this.decode(this.ids.slice(this.prefix));
    this.prefix = this.read = this.ids.length;
    return after.length > before.length ? after.slice(before.length) : '';
  }
}

function bytesOf(text: string): number[] | null {
  return text.length > 0 && !text.includes('\ufffd') ? [...Buffer.from(text, 'utf8')] : null;
}

/** xoshiro128** seeded from sha256 of the request's seed: a reproducible stream of uniforms in [0, 1). */
function seededUniforms(seed: number): () => number {
  const h = createHash('sha256').update(`distillery:${seed}`).digest();
  const s = new Uint32Array([h.readUInt32LE(0), h.readUInt32LE(4), h.readUInt32LE(8), h.readUInt32LE(12)]);
  const rotl = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0;
  const next = (): number => {
    const result = (rotl(Math.imul(s[1]!, 5) >>> 0, 7) * 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  };
  return () => (next() * 2 ** 21 + (next() >>> 11)) / 2 ** 53;
}

/** One draw from `probs` (sorted, most likely first) under temperature, then top-k, top-p, min-p. */
function sample(ids: readonly Token[], probs: Float64Array, job: CompletionJob, uniform: () => number): Token {
  if (job.temperature === 0) return ids[0]!;
  let n = probs.length;
  if (job.topK > 0 && job.topK < n) n = job.topK;
  const w = new Float64Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    w[i] = probs[i]! > 0 ? Math.exp(Math.log(probs[i]!) / job.temperature) : 0;
    total += w[i]!;
  }
  if (job.topP < 1) {
    let before = 0;
    for (let i = 0; i < n; i++) {
      if (before / total >= job.topP) {
        n = i;
        break;
      }
      before += w[i]!;
    }
  }
  if (job.minP > 0) {
    const threshold = job.minP * w[0]!;
    let m = 0;
    while (m < n && w[m]! >= threshold) m++;
    n = Math.max(1, m);
  }
  let kept = 0;
  for (let i = 0; i < n; i++) kept += w[i]!;
  const target = uniform() * kept;
  let cum = 0;
  for (let i = 0; i < n; i++) {
    cum += w[i]!;
    if (cum > target) return ids[i]!;
  }
  return ids[n - 1]!;
}

function promptTokens(m: LlamaModel, job: CompletionJob): Token[] {
  if ('ids' in job.prompt) {
    const vocab = vocabSize ?? Number.MAX_SAFE_INTEGER;
    const bad = job.prompt.ids.find((t) => t >= vocab);
    if (bad !== undefined) throw new RequestError(`token id ${bad} is outside the model's vocabulary (${vocab} tokens)`);
    return job.prompt.ids as Token[];
  }
  // Special-token text (e.g. "<|im_start|>") is parsed into special tokens, as Hugging Face tokenizers do.
  const ids = m.tokenize(job.prompt.text, true);
  const bos = m.tokens.bos;
  if (job.prompt.addSpecialTokens && m.tokens.shouldPrependBosToken && bos !== null && ids[0] !== bos) ids.unshift(bos);
  return ids;
}

async function complete(id: number, job: CompletionJob, stream: boolean): Promise<CompletionResult> {
  if (!model || !context) throw new Error('no model is loaded');
  const m = model;
  const prompt = promptTokens(m, job);
  if (prompt.length === 0) throw new RequestError('the prompt encodes to no tokens, so there is nothing to condition on');
  active.add(id);
  const seq = await acquire();
  try {
    await seq.clearHistory();
    const limit = seq.contextSize;
    if (prompt.length >= limit) throw new RequestError(`the prompt is ${prompt.length} tokens; the model's context here is ${limit} tokens`);
    const maxTokens = Math.min(job.maxTokens ?? Number.MAX_SAFE_INTEGER, limit - prompt.length);
    const release = new Release(job.stop, stream ? (d: Delta) => send({ type: 'delta', id, delta: d }) : null, job.logprobs !== null);
    const decoder = new Decoder(m, prompt);
    let generated = 0;
    let finish: CompletionResult['finishReason'] | null = null;
    let cut: number | null = null;

    /** Takes one generated token; returns true when the completion is over. */
    const take = (token: Token, entryFor: ((delta: string) => TokenLogprob) | null): boolean => {
      if (cancelled.has(id)) throw new CancelledError('cancelled');
      generated++;
      if (m.isEogToken(token)) {
        finish = 'eos';
        return true;
      }
      const start = release.text.length;
      const delta = decoder.push(token);
      release.add(delta, entryFor ? entryFor(delta) : null);
      cut = release.findStop(start);
      if (cut !== null) {
        finish = 'stop';
        return true;
      }
      if (generated >= maxTokens) {
        finish = 'length';
        return true;
      }
      release.step();
      return false;
    };

    if (job.logprobs === null) {
      // yieldEogToken: without it the generator just ends at end-of-generation, which would read as `length`.
      const options = job.temperature === 0
        ? { temperature: 0, yieldEogToken: true }
        : { temperature: job.temperature, topK: job.topK, topP: job.topP, minP: job.minP, seed: job.seed >>> 0, yieldEogToken: true };
      const it = seq.evaluate(prompt, options);
      try {
        for await (const token of it) if (take(token, null)) break;
      } finally {
        await it.return();
      }
    } else {
      const k = job.logprobs;
      const uniform = seededUniforms(job.seed);
      let input: Parameters<LlamaContextSequence['controlledEvaluate']>[0] = [
        ...prompt.slice(0, -1),
        [prompt[prompt.length - 1]!, { generateNext: { probabilities: true } }],
      ];
      for (;;) {
        const out = await seq.controlledEvaluate(input);
        const probs = out[input.length - 1]?.next.probabilities;
        if (!probs) throw new Error('llama.cpp returned no probabilities');
        const ids = [...probs.keys()];
        const ps = Float64Array.from(probs.values());
        const token = sample(ids, ps, job, uniform);
        const lp = (t: Token) => Math.max(Math.log(probs.get(t) ?? 0), LOGPROB_FLOOR);
        const entryFor = (delta: string): TokenLogprob => {
          const top: TopLogprob[] = ids.slice(0, k).map((t) => {
            const text = t === token ? delta : decoder.alternative(t);
            return { token: text, logprob: lp(t), bytes: bytesOf(text) };
          });
          return { token: delta, logprob: lp(token), bytes: bytesOf(delta), top };
        };
        if (take(token, entryFor)) break;
        input = [[token, { generateNext: { probabilities: true } }]];
      }
    }
    // (assigned inside take(); TypeScript does not follow that)
    finish = (finish as CompletionResult['finishReason'] | null) ?? 'length'; // null: the generator ended on its own
    cut = cut as number | null;
    if (finish !== 'stop') {
      const start = release.text.length;
      release.add(decoder.flush(), null);
      cut = release.findStop(start);
      if (cut !== null) finish = 'stop';
    }
    release.finish(cut ?? release.text.length);
    return {
      text: release.text,
      finishReason: finish,
      promptTokens: prompt.length,
      completionTokens: generated,
      logprobs: job.logprobs === null ? null : release.released,
    };
  } finally {
    active.delete(id);
    cancelled.delete(id);
    releaseSequence(seq);
  }
}

process.on('message', (raw: ParentMessage) => {
  if (raw.type === 'load') {
    load(raw).catch((e: Error) => send({ type: 'load-error', message: e?.message ?? String(e) }));
  } else if (raw.type === 'complete') {
    complete(raw.id, raw.job, raw.stream).then(
      (result) => send({ type: 'done', id: raw.id, result }),
      (e: Error) => {
        const kind = e instanceof CancelledError ? 'cancelled' : e instanceof RequestError ? 'request' : 'internal';
        send({ type: 'error', id: raw.id, kind, message: e?.message ?? String(e) });
      },
    );
  } else if (raw.type === 'cancel') {
    if (active.has(raw.id)) cancelled.add(raw.id);
  } else if (raw.type === 'shutdown') {
    void shutdown();
  }
});

// The server went away (even by SIGKILL): nothing is left to answer.
process.on('disconnect', () => process.exit(0));

async function shutdown(): Promise<void> {
  try {
    await context?.dispose();
    await model?.dispose();
    await llama?.dispose();
  } finally {
    process.exit(0);
  }
}
