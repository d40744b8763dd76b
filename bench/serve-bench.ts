/**
 * Serving, sampling backends and GGUF export. Part of `npm run bench` (workload `serve`); alone:
 *
 *   npm run bench -- --workloads serve [--quick] [--threads N] [--serve-model NAME] [--no-serve-engine]
 *
 * 1. Serving: one GGUF (the `qwen3-20m` model of bench/models.json, random weights, exported to f32), the same
 *    prompts, greedy decoding, a fixed max_tokens, through (a) node-llama-cpp called in-process, (b) `distillery
 *    serve` with the llama backend over HTTP (streaming; time to first token = first SSE event with text) and
 *    (c) `distillery serve` with the engine backend on the Hugging Face folder the GGUF was exported from.
 *    Sequential requests, then two clients at once (server concurrency 2, two context sequences).
 * 2. Sampling: the same SampleRequest (prompts × samples, temperature 0.8, seed 0) through EngineSampler (HF
 *    folder), LlamaSampler (the GGUF) and HttpSampler → `distillery serve` (the GGUF). Completion tokens are
 *    counted the same way for all three: a sample that finished by length has exactly max_tokens tokens; any
 *    other is counted by tokenizing its text with the model's tokenizer.
 * 3. Export: a ~100M-parameter Llama (random weights) → exportGguf to f32, f16 and q8_0, each in a child Node
 *    process of its own so its peak RSS is the export's.
 *
 * The models are built once into a temporary folder by the engine's Python (build_model_from_config, seed 0)
 * with a character tokenizer in SentencePiece form (byte fallback, 32,000 ids: specials, the 256 byte tokens,
 * the demo's alphabet, CJK filler), which the GGUF exporter accepts; nothing is downloaded.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from '@huggingface/tokenizers';
import { getLlama, LlamaLogLevel, type Llama, type LlamaContextSequence, type LlamaModel, type Token } from 'node-llama-cpp';
import { engineCommand } from '../src/engine/python.js';
import { EngineWorker } from '../src/engine/worker.js';
import type { Decoding } from '../src/engine/decoding.js';
import { exportGguf, type GgufExportType } from '../src/formats/gguf-export.js';
import { startServer } from '../src/server/http.js';
import { describeModel } from '../src/server/registry.js';
import { EngineSampler } from '../src/sampling/engine.js';
import { HttpSampler } from '../src/sampling/http.js';
import { LlamaSampler } from '../src/sampling/llama.js';
import type { Sampler, SampleRequest } from '../src/sampling/sampler.js';
import { Rng } from '../src/core/rng.js';

const THIS_FILE = fileURLToPath(import.meta.url);

export interface ServeBenchOptions {
  quick: boolean;
  /** llama.cpp threads, and torch threads (DISTILLERY_THREADS) for the engine; 0 = every available core. */
  threads: number;
  /** bench/models.json entry to serve and sample (default qwen3-20m). */
  model: string;
  /** Include the engine backend (Python) in the serving and sampling parts. */
  engine: boolean;
  /** bench/models.json */
  catalog: string;
}

interface Plan {
  prompts: number;
  promptChars: number;
  maxTokens: number;
  repeats: number;
  samplePrompts: number;
  samplesPerPrompt: number;
  sampleMaxTokens: number;
  sampleRepeats: number;
  exportRepeats: number;
}

function planFor(quick: boolean): Plan {
  return quick
    ? { prompts: 4, promptChars: 48, maxTokens: 32, repeats: 1, samplePrompts: 4, samplesPerPrompt: 2, sampleMaxTokens: 32, sampleRepeats: 1, exportRepeats: 1 }
    : { prompts: 8, promptChars: 48, maxTokens: 64, repeats: 3, samplePrompts: 8, samplesPerPrompt: 4, sampleMaxTokens: 64, sampleRepeats: 3, exportRepeats: 3 };
}

/** The ~100M-parameter model of the export benchmark (Llama, tied embeddings, 32k vocabulary). */
const EXPORT_CONFIG = {
  model_type: 'llama', hidden_size: 768, intermediate_size: 2048, num_hidden_layers: 12, num_attention_heads: 12,
  num_key_value_heads: 4, vocab_size: 32000, max_position_embeddings: 2048, tie_word_embeddings: true,
};
const DEFAULT_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789 \n#,:()=+-*/%_<>!.';
const EXPORT_TYPES: GgufExportType[] = ['f32', 'f16', 'q8_0'];
const SAMPLER_NAMES = { engine: 'EngineSampler (HF folder)', llama: 'LlamaSampler (GGUF)', http: 'HttpSampler → distillery serve (GGUF)' } as const;

// ------------------------------------------------------------------------------------------------ results

/** One request: times in ms from its start. */
interface RequestTiming {
  prompt: number;
  ttft_ms: number;
  total_ms: number;
  tokens: number;
  finish: string;
}

interface ServingRun {
  path: 'direct' | 'serve-llama' | 'serve-engine';
  concurrency: number;
  requests: RequestTiming[];
  /** Wall time of each repeat (all prompts), seconds. */
  wall_seconds: number[];
  tokens_per_repeat: number[];
  ttft_ms_median: number;
  /** completion tokens / request time, median over requests. */
  request_tokens_per_s_median: number;
  /** (tokens − 1) / (end − first token), median over requests. */
  decode_tokens_per_s_median: number;
  /** all completion tokens of a repeat / its wall time, median over repeats. */
  aggregate_tokens_per_s: number;
  loadavg_1m: number[];
  texts?: string[];
}

interface SamplingRun {
  sampler: 'engine' | 'llama' | 'http';
  name: string;
  describe: string;
  seconds: number[];
  /** The same sampler on 1 prompt × 1 sample × 1 token: start-up and model load included in every call. */
  fixed_cost_seconds: number;
  samples: number;
  tokens: number[];
  not_by_length: number[];
  tokens_per_s: number;
  samples_per_s: number;
  /** Engine only: sum of the token_ids lengths it wrote (a check on the counting). */
  engine_token_ids?: number[];
  loadavg_1m: number[];
}

interface ExportRun {
  type: GgufExportType;
  seconds: number[];
  peak_rss_bytes: number[];
  baseline_rss_bytes: number[];
  /** Peaks of process.memoryUsage() polled every 10 ms during the export. */
  peak_heap_used_bytes: number[];
  peak_array_buffers_bytes: number[];
  output_bytes: number;
  seconds_median: number;
  input_mb_per_s: number;
  loadavg_1m: number[];
}

export interface ServeBenchResult {
  plan: Plan;
  threads: number;
  cpu_count: number;
  model: { name: string; parameters: number; gguf_type: 'f32'; gguf_bytes: number; hf_bytes: number; build_seconds: number; export_seconds: number };
  decoding_serving: string;
  serving: ServingRun[];
  greedy_agreement: Record<string, string>;
  sampling: SamplingRun[];
  sampling_request: { prompts: number; samples_per_prompt: number; decoding: Decoding; llama_concurrency: number; http_concurrency: number; server_concurrency: number; engine_batch_size: number };
  export: { model: Record<string, unknown>; parameters: number; input_bytes: number; build_seconds: number; runs: ExportRun[] };
  errors: string[];
  seconds: number;
}

// ------------------------------------------------------------------------------------------------ helpers

const median = (xs: number[]): number => {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};
const load1 = (): number => Math.round(loadavg()[0]! * 100) / 100;

/** Random text over the alphabet (without the newline), seeded (mulberry32). */
function prompts(count: number, chars: number, alphabet: string, seed: number): string[] {
  const rng = new Rng(seed);
  const letters = alphabet.replace(/\n/g, '');
  return Array.from({ length: count }, () => Array.from({ length: chars }, () => letters[rng.below(letters.length)]).join(''));
}

// The model builder, run with the engine's Python: config + alphabet → a Hugging Face folder with a
// SentencePiece-style character tokenizer (byte fallback) that both transformers and the GGUF exporter read.
const BUILD_PY = String.raw`
import json, sys, time
from pathlib import Path
from distillery_engine.models import build_model_from_config, count_parameters
spec = json.loads(sys.argv[1]); out = Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
t0 = time.time()
vocab_size = spec["config"]["vocab_size"]
specials = ["<unk>", "<s>", "</s>"]
vocab = {t: i for i, t in enumerate(specials)}
for b in range(256):
    vocab["<0x%02X>" % b] = len(vocab)
for ch in ["\u2581"] + [c for c in dict.fromkeys(spec["alphabet"]) if c != " "]:
    vocab.setdefault(ch, len(vocab))
code = 0x4E00
while len(vocab) < vocab_size:
    if 0xD800 <= code <= 0xDFFF:
        code = 0xE000
    vocab.setdefault(chr(code), len(vocab))
    code += 1
if len(vocab) != vocab_size:
    raise SystemExit("vocab_size %d is smaller than the tokenizer (%d)" % (vocab_size, len(vocab)))
added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True} for i, t in enumerate(specials)]
tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
  "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
  "pre_tokenizer": None,
  "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
     "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
     "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None, "end_of_word_suffix": None,
     "fuse_unk": True, "byte_fallback": True, "ignore_merges": False, "vocab": vocab, "merges": []}}
(out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
(out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
  "unk_token": "<unk>", "pad_token": "<unk>", "add_bos_token": True, "add_eos_token": False,
  "model_max_length": spec["config"].get("max_position_embeddings", 2048), "clean_up_tokenization_spaces": False}))
config = dict(spec["config"])
config.update(bos_token_id=1, eos_token_id=2, pad_token_id=0)
model = build_model_from_config(config, seed=0)
model.save_pretrained(str(out), safe_serialization=True)
print("BUILD_RESULT " + json.dumps({"parameters": count_parameters(model), "seconds": time.time() - t0}))
`;

function buildModel(config: Record<string, unknown>, alphabet: string, out: string): Promise<{ parameters: number; seconds: number }> {
  const { python, env } = engineCommand();
  return new Promise((resolvePromise, reject) => {
    execFile(python, ['-c', BUILD_PY, JSON.stringify({ config, alphabet }), out],
      { env: { ...env, OMP_NUM_THREADS: env.OMP_NUM_THREADS ?? '1' }, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        const line = stdout.split('\n').find((l) => l.startsWith('BUILD_RESULT '));
        if (err || !line) reject(new Error(`building ${out} failed: ${err?.message ?? 'no result'}\n${stderr.slice(-2000)}`));
        else resolvePromise(JSON.parse(line.slice('BUILD_RESULT '.length)) as { parameters: number; seconds: number });
      });
  });
}

function dirBytes(dir: string, names: string[]): number {
  return names.reduce((a, n) => a + statSync(join(dir, n)).size, 0);
}

// ------------------------------------------------------------------------------------------------ 1. serving

/** node-llama-cpp in this process, set up as the server's llama child sets itself up. */
async function directLlama(ggufPath: string, threads: number, sequences: number): Promise<{ llama: Llama; model: LlamaModel; seqs: LlamaContextSequence[]; dispose(): Promise<void> }> {
  const common = { build: 'never' as const, maxThreads: threads, progressLogs: false, logLevel: LlamaLogLevel.error, logger: () => {} };
  let llama: Llama;
  try {
    llama = await getLlama({ ...common, gpu: 'auto' });
  } catch {
    llama = await getLlama({ ...common, gpu: false });
  }
  const model = await llama.loadModel({ modelPath: ggufPath });
  const context = await model.createContext({
    contextSize: { max: Math.max(16, Math.min(8192, model.trainContextSize || 8192)) }, sequences, threads,
  });
  const seqs = Array.from({ length: sequences }, () => context.getSequence());
  return {
    llama, model, seqs,
    async dispose() {
      await context.dispose();
      await model.dispose();
      await llama.dispose();
    },
  };
}

type OneRequest = (prompt: string, slot: number) => Promise<Omit<RequestTiming, 'prompt'> & { text: string }>;

/** `concurrency` clients, each taking the next prompt from the list until none is left; `repeats` times. */
async function drive(path: ServingRun['path'], concurrency: number, list: string[], repeats: number, one: OneRequest): Promise<ServingRun> {
  await one(list[0]!, 0); // warm-up (model load, first-call costs)
  const requests: RequestTiming[] = [];
  const wall: number[] = [];
  const perRepeat: number[] = [];
  const loads: number[] = [];
  let texts: string[] = [];
  for (let r = 0; r < repeats; r++) {
    let next = 0;
    let tokens = 0;
    const these: string[] = new Array<string>(list.length);
    loads.push(load1());
    const t0 = performance.now();
    await Promise.all(Array.from({ length: concurrency }, async (_, slot) => {
      while (next < list.length) {
        const i = next++;
        const res = await one(list[i]!, slot);
        tokens += res.tokens;
        these[i] = res.text;
        requests.push({ prompt: i, ttft_ms: res.ttft_ms, total_ms: res.total_ms, tokens: res.tokens, finish: res.finish });
      }
    }));
    wall.push((performance.now() - t0) / 1000);
    perRepeat.push(tokens);
    if (r === 0) texts = these;
  }
  loads.push(load1());
  return {
    path, concurrency, requests, wall_seconds: wall, tokens_per_repeat: perRepeat,
    ttft_ms_median: median(requests.map((q) => q.ttft_ms)),
    request_tokens_per_s_median: median(requests.map((q) => q.tokens / (q.total_ms / 1000))),
    decode_tokens_per_s_median: median(requests.filter((q) => q.tokens > 1).map((q) => (q.tokens - 1) / ((q.total_ms - q.ttft_ms) / 1000))),
    aggregate_tokens_per_s: median(perRepeat.map((t, i) => t / wall[i]!)),
    loadavg_1m: loads,
    texts,
  };
}

function directRequest(d: Awaited<ReturnType<typeof directLlama>>, maxTokens: number): OneRequest {
  return async (text, slot) => {
    const seq = d.seqs[slot]!;
    await seq.clearHistory();
    const t0 = performance.now();
    // As the server's llama child tokenizes a text prompt (special tokens parsed, BOS prepended).
    const ids = d.model.tokenize(text, true);
    const bos = d.model.tokens.bos;
    if (d.model.tokens.shouldPrependBosToken && bos !== null && ids[0] !== bos) ids.unshift(bos);
    let first = 0;
    const out: Token[] = [];
    let finish = 'length';
    const it = seq.evaluate(ids, { temperature: 0 });
    try {
      for await (const token of it) {
        if (first === 0) first = performance.now();
        out.push(token);
        if (d.model.isEogToken(token)) {
          finish = 'eos';
          break;
        }
        if (out.length >= maxTokens) break;
      }
    } finally {
      await it.return();
    }
    const end = performance.now();
    const text2 = d.model.detokenize(out.filter((t) => !d.model.isEogToken(t)), false, ids.slice(-8));
    return { ttft_ms: first - t0, total_ms: end - t0, tokens: out.length, finish, text: text2 };
  };
}

/** One streaming /v1/completions request; time to first token = the first SSE event carrying text. */
function httpRequest(base: string, model: string, maxTokens: number): OneRequest {
  return async (prompt) => {
    const t0 = performance.now();
    const res = await fetch(`${base}/v1/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model, prompt, max_tokens: maxTokens, temperature: 0, stream: true, stream_options: { include_usage: true } }),
    });
    if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
    const decoder = new TextDecoder();
    let buf = '';
    let first = 0;
    let text = '';
    let tokens = -1;
    let finish = '?';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let cut: number;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
        const data = JSON.parse(event.slice(6)) as {
          choices?: Array<{ text?: string; finish_reason?: string | null }>;
          usage?: { completion_tokens: number } | null;
          error?: { message?: string };
        };
        if (data.error) throw new Error(`stream error: ${data.error.message ?? JSON.stringify(data.error)}`);
        const c = data.choices?.[0];
        if (c?.text) {
          if (first === 0) first = performance.now();
          text += c.text;
        }
        if (c?.finish_reason) finish = c.finish_reason;
        if (data.usage) tokens = data.usage.completion_tokens;
      }
    }
    const end = performance.now();
    if (tokens < 0) throw new Error('the stream carried no usage');
    return { ttft_ms: (first || end) - t0, total_ms: end - t0, tokens, finish, text };
  };
}

// ------------------------------------------------------------------------------------------------ 2. sampling

interface SampleLine { completion: string; finish_reason: string; token_ids?: number[] }

function readSamples(file: string): SampleLine[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim().endsWith('}')).map((l) => JSON.parse(l) as SampleLine);
}

// ------------------------------------------------------------------------------------------------ 3. export

/**
 * This process's peak RSS: VmHWM where /proc has it. Not ru_maxrss: on Linux that survives exec, so a child
 * reports at least its parent's RSS at the time of the fork.
 */
function peakRss(): number {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    /* not Linux */
  }
  return process.resourceUsage().maxRSS * 1024;
}

/** In the child process: one export, its time and this process's peak RSS. */
async function exportChild(modelDir: string, out: string, type: GgufExportType): Promise<void> {
  const baseline = process.memoryUsage().rss;
  // Where the memory is: the V8 heap, or ArrayBuffers (tensor slices waiting for the garbage collector).
  const peak = { heap_used_bytes: 0, array_buffers_bytes: 0 };
  const poll = () => {
    const m = process.memoryUsage();
    peak.heap_used_bytes = Math.max(peak.heap_used_bytes, m.heapUsed);
    peak.array_buffers_bytes = Math.max(peak.array_buffers_bytes, m.arrayBuffers);
  };
  const timer = setInterval(poll, 10);
  const t0 = performance.now();
  const r = await exportGguf(modelDir, out, { type });
  const seconds = (performance.now() - t0) / 1000;
  clearInterval(timer);
  poll();
  process.stdout.write(`EXPORT_RESULT ${JSON.stringify({ seconds, bytes: r.bytes, parameters: r.parameters, peak_rss_bytes: peakRss(), baseline_rss_bytes: baseline, ...peak })}\n`);
}

interface ExportChildResult {
  seconds: number; bytes: number; parameters: number; peak_rss_bytes: number; baseline_rss_bytes: number;
  heap_used_bytes: number; array_buffers_bytes: number;
}

function runExportChild(modelDir: string, out: string, type: GgufExportType): Promise<ExportChildResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [THIS_FILE, '--export-child', modelDir, out, type], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr = (stderr + d).slice(-4000); });
    child.on('error', reject);
    child.on('close', (code) => {
      const line = stdout.split('\n').find((l) => l.startsWith('EXPORT_RESULT '));
      if (code !== 0 || !line) reject(new Error(`export ${type} failed (exit ${code}): ${stderr}`));
      else resolvePromise(JSON.parse(line.slice('EXPORT_RESULT '.length)));
    });
  });
}

// ------------------------------------------------------------------------------------------------ main

export async function runServeBench(opts: ServeBenchOptions, log: (s: string) => void): Promise<ServeBenchResult> {
  const started = performance.now();
  const plan = planFor(opts.quick);
  const threads = opts.threads > 0 ? opts.threads : Math.max(1, availableParallelism());
  const errors: string[] = [];
  const work = mkdtempSync(join(tmpdir(), 'distillery-serve-bench-'));
  const savedThreads = process.env.DISTILLERY_THREADS;
  if (opts.threads > 0) process.env.DISTILLERY_THREADS = String(opts.threads);
  const attempt = async <T>(what: string, fn: () => Promise<T>): Promise<T | null> => {
    try {
      return await fn();
    } catch (e) {
      const msg = `${what}: ${(e as Error)?.message ?? String(e)}`;
      errors.push(msg);
      log(`serve: FAILED ${msg}`);
      return null;
    }
  };
  try {
    const catalog = JSON.parse(readFileSync(opts.catalog, 'utf8')) as Record<string, { config: Record<string, unknown>; tokenizer?: { alphabet?: string } }>;
    const entry = catalog[opts.model];
    if (!entry) throw new Error(`unknown model ${opts.model}; bench/models.json has ${Object.keys(catalog).join(', ')}`);
    const alphabet = entry.tokenizer?.alphabet ?? DEFAULT_ALPHABET;

    // The served model: HF folder (engine) and its f32 GGUF (llama.cpp).
    const hfDir = join(work, 'hf');
    log(`serve: building ${opts.model} (engine's Python, seed 0) and exporting it to GGUF f32`);
    const built = await buildModel(entry.config, alphabet, hfDir);
    const ggufPath = join(work, 'gguf', `${opts.model}.gguf`);
    mkdirSync(join(work, 'gguf'));
    const exportStarted = performance.now();
    await exportGguf(hfDir, ggufPath, { type: 'f32' });
    const servedExportSeconds = (performance.now() - exportStarted) / 1000;
    const home = join(work, 'home');
    const tokenizer = new Tokenizer(JSON.parse(readFileSync(join(hfDir, 'tokenizer.json'), 'utf8')) as object,
      JSON.parse(readFileSync(join(hfDir, 'tokenizer_config.json'), 'utf8')) as object);

    // ---------------------------------------------------------------- 1. serving
    const list = prompts(plan.prompts, plan.promptChars, alphabet, 1);
    const serving: ServingRun[] = [];
    const record = (r: ServingRun | null) => {
      if (!r) return;
      serving.push(r);
      log(`serve: ${r.path} c=${r.concurrency}: TTFT ${r.ttft_ms_median.toFixed(1)} ms, ${r.request_tokens_per_s_median.toFixed(1)} tok/s per request, ` +
        `${r.aggregate_tokens_per_s.toFixed(1)} tok/s aggregate (load ${r.loadavg_1m.join('/')})`);
    };
    await attempt('direct', async () => {
      // One context with two sequences, as the server's llama child has with --concurrency 2.
      const d = await directLlama(ggufPath, threads, 2);
      try {
        for (const c of [1, 2]) {
          log(`serve: node-llama-cpp in-process, ${threads} threads, concurrency ${c}`);
          record(await attempt(`direct c=${c}`, () => drive('direct', c, list, plan.repeats, directRequest(d, plan.maxTokens))));
        }
      } finally {
        await d.dispose();
      }
    });
    const serveWith = async (ref: string, path: ServingRun['path']) => {
      const spec = await describeModel(ref, { home });
      const warn: string[] = [];
      const server = await startServer({ models: [spec], port: 0, concurrency: 2, threads, idleUnloadSeconds: 0, log: () => {}, warn: (l) => warn.push(l) });
      try {
        for (const c of [1, 2]) {
          log(`serve: distillery serve, ${spec.backend} backend, concurrency ${c}`);
          record(await attempt(`${path} c=${c}`, () => drive(path, c, list, plan.repeats, httpRequest(server.url, spec.id, plan.maxTokens))));
        }
      } finally {
        await server.close();
      }
    };
    await attempt('serve (llama)', () => serveWith(ggufPath, 'serve-llama'));
    if (opts.engine) await attempt('serve (engine)', () => serveWith(hfDir, 'serve-engine'));
    const agreement: Record<string, string> = {};
    const directTexts = serving.find((r) => r.path === 'direct' && r.concurrency === 1)?.texts;
    for (const r of serving) {
      if (!directTexts || r === serving.find((x) => x.path === 'direct' && x.concurrency === 1)) continue;
      const same = r.texts?.filter((t, i) => t === directTexts[i]).length ?? 0;
      agreement[`${r.path} c=${r.concurrency}`] = `${same}/${directTexts.length} greedy texts identical to node-llama-cpp direct`;
    }

    // ---------------------------------------------------------------- 2. sampling
    const sampleList = prompts(plan.samplePrompts, plan.promptChars, alphabet, 2);
    const decoding: Decoding = { temperature: 0.8, top_k: 0, top_p: 1, min_p: 0, max_tokens: plan.sampleMaxTokens, stop: [], seed: 0, chat_template: false };
    const samplingRequest = {
      prompts: plan.samplePrompts, samples_per_prompt: plan.samplesPerPrompt, decoding,
      llama_concurrency: 2, http_concurrency: 2, server_concurrency: 2, engine_batch_size: 64,
    };
    const sampling: SamplingRun[] = [];
    let callNo = 0;
    const sampleOnce = async (s: Sampler, req: Omit<SampleRequest, 'outputFile'>) => {
      const outputFile = join(work, 'samples', `${s.kind}-${callNo++}`, 'samples.jsonl');
      mkdirSync(join(outputFile, '..'), { recursive: true });
      const t0 = performance.now();
      await s.sample({ ...req, outputFile });
      return { seconds: (performance.now() - t0) / 1000, lines: readSamples(outputFile) };
    };
    const measureSampler = async (s: Sampler, name: string = SAMPLER_NAMES[s.kind]) => {
      log(`serve: sampling with ${s.describe()}`);
      const tiny = await sampleOnce(s, { prompts: sampleList.slice(0, 1), n: 1, decoding: { ...decoding, max_tokens: 1 } });
      const run: SamplingRun = {
        sampler: s.kind, name, describe: s.describe(), seconds: [], fixed_cost_seconds: tiny.seconds, samples: plan.samplePrompts * plan.samplesPerPrompt,
        tokens: [], not_by_length: [], tokens_per_s: 0, samples_per_s: 0, loadavg_1m: [],
      };
      for (let r = 0; r < plan.sampleRepeats; r++) {
        run.loadavg_1m.push(load1());
        const res = await sampleOnce(s, { prompts: sampleList, n: plan.samplesPerPrompt, decoding });
        if (res.lines.length !== run.samples) throw new Error(`${s.kind}: ${res.lines.length} samples written, expected ${run.samples}`);
        let tokens = 0;
        let other = 0;
        for (const l of res.lines) {
          if (l.finish_reason === 'length') tokens += decoding.max_tokens;
          else {
            other++;
            tokens += tokenizer.encode(l.completion, { add_special_tokens: false }).ids.length;
          }
        }
        if (s.kind === 'engine') (run.engine_token_ids ??= []).push(res.lines.reduce((a, l) => a + (l.token_ids?.length ?? 0), 0));
        run.seconds.push(res.seconds);
        run.tokens.push(tokens);
        run.not_by_length.push(other);
      }
      run.loadavg_1m.push(load1());
      const i = run.seconds.indexOf(median(run.seconds));
      const mid = i >= 0 ? i : 0;
      run.tokens_per_s = run.tokens[mid]! / median(run.seconds);
      run.samples_per_s = run.samples / median(run.seconds);
      sampling.push(run);
      log(`serve: ${name}: ${run.tokens_per_s.toFixed(1)} tok/s, ${run.samples_per_s.toFixed(2)} samples/s (fixed cost ${run.fixed_cost_seconds.toFixed(2)} s; load ${run.loadavg_1m.join('/')})`);
    };
    if (opts.engine) {
      await attempt('sampling (engine)', async () => {
        const worker = await EngineWorker.start();
        try {
          await measureSampler(new EngineSampler(worker, hfDir, { batchSize: samplingRequest.engine_batch_size }));
        } finally {
          await worker.close();
        }
      });
    }
    await attempt('sampling (llama)', () => measureSampler(new LlamaSampler(ggufPath, { home, concurrency: samplingRequest.llama_concurrency, threads })));
    if (!opts.quick) {
      // Not the default: as many sequences as llama.cpp batches at once, to see what batching gives it.
      const c = plan.samplePrompts;
      await attempt(`sampling (llama, concurrency ${c})`, () =>
        measureSampler(new LlamaSampler(ggufPath, { home, concurrency: c, threads }), `${SAMPLER_NAMES.llama}, concurrency ${c}`));
    }
    await attempt('sampling (http)', async () => {
      const spec = await describeModel(ggufPath, { home });
      const server = await startServer({ models: [spec], port: 0, concurrency: samplingRequest.server_concurrency, threads, idleUnloadSeconds: 0, log: () => {}, warn: () => {} });
      try {
        await measureSampler(new HttpSampler({ endpoint: server.url, model: spec.id, concurrency: samplingRequest.http_concurrency, retries: 0 }));
      } finally {
        await server.close();
      }
    });

    // ---------------------------------------------------------------- 3. export
    rmSync(join(work, 'samples'), { recursive: true, force: true });
    const exportDir = join(work, 'export-model');
    log('serve: building the ~100M-parameter Llama for the export benchmark');
    const exportBuilt = await buildModel(EXPORT_CONFIG, DEFAULT_ALPHABET, exportDir);
    const inputBytes = dirBytes(exportDir, ['model.safetensors']);
    await new Promise<void>((r) => spawn('cat', [join(exportDir, 'model.safetensors')], { stdio: 'ignore' }).on('close', () => r()).on('error', () => r())); // into the page cache
    const exportRuns: ExportRun[] = [];
    for (const type of EXPORT_TYPES) {
      const run: ExportRun = { type, seconds: [], peak_rss_bytes: [], baseline_rss_bytes: [], peak_heap_used_bytes: [], peak_array_buffers_bytes: [], output_bytes: 0, seconds_median: 0, input_mb_per_s: 0, loadavg_1m: [] };
      const ok = await attempt(`export ${type}`, async () => {
        for (let r = 0; r < plan.exportRepeats; r++) {
          run.loadavg_1m.push(load1());
          const out = join(work, `export-${type}.gguf`);
          const res = await runExportChild(exportDir, out, type);
          run.seconds.push(res.seconds);
          run.peak_rss_bytes.push(res.peak_rss_bytes);
          run.baseline_rss_bytes.push(res.baseline_rss_bytes);
          run.peak_heap_used_bytes.push(res.heap_used_bytes);
          run.peak_array_buffers_bytes.push(res.array_buffers_bytes);
          run.output_bytes = statSync(out).size;
          rmSync(out, { force: true });
        }
        return true;
      });
      if (!ok) continue;
      run.loadavg_1m.push(load1());
      run.seconds_median = median(run.seconds);
      run.input_mb_per_s = inputBytes / 1e6 / run.seconds_median;
      exportRuns.push(run);
      log(`serve: export ${type}: ${run.seconds_median.toFixed(2)} s, ${run.input_mb_per_s.toFixed(0)} MB/s, peak RSS ${(Math.max(...run.peak_rss_bytes) / 2 ** 20).toFixed(0)} MiB`);
    }

    return {
      plan, threads, cpu_count: availableParallelism(),
      model: { name: opts.model, parameters: built.parameters, gguf_type: 'f32', gguf_bytes: statSync(ggufPath).size, hf_bytes: dirBytes(hfDir, ['model.safetensors']),
        build_seconds: built.seconds, export_seconds: servedExportSeconds },
      decoding_serving: `greedy, max_tokens ${plan.maxTokens}, ${plan.prompts} prompts of ${plan.promptChars} characters`,
      serving, greedy_agreement: agreement, sampling, sampling_request: samplingRequest,
      export: { model: EXPORT_CONFIG, parameters: exportBuilt.parameters, input_bytes: inputBytes, build_seconds: exportBuilt.seconds, runs: exportRuns },
      errors, seconds: (performance.now() - started) / 1000,
    };
  } finally {
    if (savedThreads === undefined) delete process.env.DISTILLERY_THREADS;
    else process.env.DISTILLERY_THREADS = savedThreads;
    rmSync(work, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------------------------------------ table

function grid(header: string[], body: string[][], numeric: Set<number>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

const f1 = (v: number) => (Number.isFinite(v) ? v.toFixed(1) : '—');
const range = (xs: number[]) => (xs.length ? `${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)}` : '—');

export function serveTable(r: ServeBenchResult): string {
  const names: Record<ServingRun['path'], string> = {
    direct: 'node-llama-cpp in-process', 'serve-llama': 'distillery serve, llama backend', 'serve-engine': 'distillery serve, engine backend',
  };
  const base = (c: number) => r.serving.find((x) => x.path === 'direct' && x.concurrency === c);
  const serving = grid(
    ['path', 'clients', 'TTFT ms', 'tok/s per request', 'decode tok/s', 'aggregate tok/s', 'vs direct', 'load'],
    r.serving.map((s) => [
      names[s.path], String(s.concurrency), f1(s.ttft_ms_median), f1(s.request_tokens_per_s_median), f1(s.decode_tokens_per_s_median),
      f1(s.aggregate_tokens_per_s), base(s.concurrency) ? `${(s.aggregate_tokens_per_s / base(s.concurrency)!.aggregate_tokens_per_s).toFixed(2)}×` : '—', range(s.loadavg_1m),
    ]),
    new Set([1, 2, 3, 4, 5, 6]),
  );
  const q = r.sampling_request;
  const sampling = grid(
    ['sampler', 'tok/s', 'samples/s', 'seconds', 'fixed cost s', 'not by length', 'load'],
    r.sampling.map((s) => [s.name, f1(s.tokens_per_s), s.samples_per_s.toFixed(2), s.seconds.map((x) => x.toFixed(2)).join(' '),
      s.fixed_cost_seconds.toFixed(2), String(Math.max(0, ...s.not_by_length)), range(s.loadavg_1m)]),
    new Set([1, 2, 4, 5]),
  );
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  const exports = grid(
    ['type', 'seconds (median)', 'all', 'input MB/s', 'peak RSS', 'RSS before', 'peak ArrayBuffers', 'output'],
    r.export.runs.map((e) => [e.type, e.seconds_median.toFixed(2), e.seconds.map((x) => x.toFixed(2)).join(' '), e.input_mb_per_s.toFixed(0),
      mib(Math.max(...e.peak_rss_bytes)), mib(Math.max(...e.baseline_rss_bytes)), mib(Math.max(...e.peak_array_buffers_bytes)), `${(e.output_bytes / 1e6).toFixed(0)} MB`]),
    new Set([1, 3, 4, 5, 6, 7]),
  );
  return [
    `serving: ${r.model.name} (${r.model.parameters.toLocaleString('en-US')} parameters, GGUF f32 ${(r.model.gguf_bytes / 1e6).toFixed(0)} MB), ${r.decoding_serving}, ` +
      `medians over ${r.plan.repeats} repeat(s); ${r.threads} llama.cpp threads on ${r.cpu_count} CPUs:`,
    serving,
    ...Object.entries(r.greedy_agreement).map(([k, v]) => `  ${k}: ${v}`),
    '',
    `sampling: ${q.prompts} prompts × ${q.samples_per_prompt} samples, T=${q.decoding.temperature}, ${q.decoding.max_tokens} tokens, seed ${q.decoding.seed}; ` +
      `engine batch ${q.engine_batch_size}, llama concurrency ${q.llama_concurrency}, http concurrency ${q.http_concurrency} → serve concurrency ${q.server_concurrency}; ` +
      `median of ${r.plan.sampleRepeats}. Engine and llama calls include loading the model (fixed cost = the first, 1-prompt 1-token call; ` +
      'for http that call is the server loading it, and later calls find it loaded):',
    sampling,
    '',
    `export: Llama ${r.export.parameters.toLocaleString('en-US')} parameters, ${(r.export.input_bytes / 1e6).toFixed(0)} MB of f32 safetensors (page cache), ` +
      `one child process per export, median of ${r.plan.exportRepeats}:`,
    exports,
    ...(r.errors.length ? ['', `FAILED: ${r.errors.join('; ')}`] : []),
  ].join('\n');
}

// The export child (see runExportChild).
if (process.argv[2] === '--export-child' && process.argv[1] && resolve(process.argv[1]) === THIS_FILE) {
  exportChild(process.argv[3]!, process.argv[4]!, process.argv[5] as GgufExportType).catch((e: unknown) => {
    console.error(e instanceof Error ? e.stack : String(e));
    process.exitCode = 1;
  });
}
