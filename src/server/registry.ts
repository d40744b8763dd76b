import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { homedir } from 'node:os';
import { UserError } from '../core/errors.js';
import { groupGgufFiles, ggufInteger, ggufKV, ggufString, readGgufHeader } from '../formats/gguf.js';
import { resolveModel } from '../vault/vault.js';
import type { Manifest } from '../vault/manifest.js';
import { ggufChatTemplate, hfChatTemplate, type TemplateLookup } from './chat.js';
import { ApiError } from './openai-types.js';
import { EngineBackend } from './backends/engine.js';
import { LlamaBackend } from './backends/llama.js';
import {
  BackendCancelled, BackendCrashed, BackendRequestError,
  type Backend, type CompletionJob, type CompletionResult, type Delta,
} from './backends/types.js';
import { readJsonObjectOrNull } from '../core/json-file.js';

/**
 * The models `distillery serve` answers for: what each one is (found once, at start-up, so a wrong reference
 * fails before the server listens), and its backend process, started on first use, stopped after an idle
 * period, restarted after a crash. Each model has its own queue: at most `concurrency` requests run on its
 * backend at once; later ones wait, up to a bound, and are refused beyond it.
 */

/** Per-sequence context for GGUF models when the file's trained context is longer (memory grows with it). */
export const DEFAULT_LLAMA_CONTEXT = 8192;
/** Requests waiting per model beyond the running ones, before new ones are refused with 503. */
export const MAX_QUEUED = 256;

export interface ModelSpec {
  /** The reference as given on the command line: what clients send as `model`. */
  id: string;
  /** Other names that select it (the vault's NAME and NAME:VERSION). */
  aliases: string[];
  backend: 'engine' | 'llama';
  /** The vault format, or what the folder looks like for a path. */
  format: string;
  /** engine: the model folder (for an adapter, its base model's). */
  modelDir?: string;
  /** engine: the PEFT adapter folder. */
  adapterDir?: string;
  /** llama: the GGUF file (the first part of a split set). */
  ggufPath?: string;
  vocabSize?: number | null;
  /** Prompt + completion tokens the model was built for, when known. */
  contextLength: number | null;
  chat: TemplateLookup;
  /** The vault manifest's `name:version`, when it came from the vault. */
  vaultRef: string | null;
  /** Unix seconds, for /v1/models (`created`). */
  created: number;
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** config.json's context length (max_position_embeddings, also inside text_config for multimodal configs). */
function hfContextLength(dir: string): number | null {
  const config = readJsonObjectOrNull(join(dir, 'config.json'));
  for (const c of [config, config?.text_config as Record<string, unknown> | undefined]) {
    for (const key of ['max_position_embeddings', 'n_positions', 'max_sequence_length', 'seq_length']) {
      const v = c?.[key];
      if (typeof v === 'number' && Number.isInteger(v) && v > 0) return v;
    }
  }
  return null;
}

async function ggufSpec(id: string, path: string, base: Omit<ModelSpec, 'backend' | 'format' | 'contextLength' | 'chat'>): Promise<ModelSpec> {
  // Reading the header first checks the file's structure in TypeScript (llama.cpp may abort on a bad one).
  const header = await readGgufHeader(path);
  const arch = ggufString(header, 'general.architecture');
  if (arch === null) throw new UserError(`${id}: ${path} has no general.architecture; llama.cpp cannot run it`);
  if (ggufString(header, 'general.type') === 'adapter') {
    throw new UserError(`${id}: ${basename(path)} is a LoRA adapter, not a model`, 'serve the base model; GGUF adapters are not served yet');
  }
  const tokens = ggufKV(header, 'tokenizer.ggml.tokens');
  const vocabSize = tokens?.type === 'array' ? (tokens.value.items as ArrayLike<unknown>).length : null;
  return {
    ...base, id, backend: 'llama', format: 'gguf', ggufPath: path, vocabSize,
    contextLength: ggufInteger(header, `${arch}.context_length`),
    chat: await ggufChatTemplate(path),
  };
}

function ggufIn(dir: string, files: string[], id: string): string {
  const sets = groupGgufFiles(files);
  if (sets.length === 0) throw new UserError(`${id}: no .gguf file in ${dir}`);
  if (sets.length > 1) {
    throw new UserError(`${id} holds ${sets.length} GGUF models (${sets.map((s) => s.base).join(', ')})`, 'serve one of them by its file path');
  }
  return join(dir, sets[0]!.files[0]!);
}

function detectFormat(dir: string): string {
  if (existsSync(join(dir, 'adapter_config.json'))) return 'peft-adapter';
  if (existsSync(join(dir, 'config.json'))) return 'hf-safetensors';
  if (readdirSync(dir).some((f) => f.toLowerCase().endsWith('.gguf'))) return 'gguf';
  return 'unknown';
}

export interface DescribeOptions {
  home: string;
  /** The base model for an adapter whose manifest names none in the vault. */
  fallbackBase?: string;
}

/**
 * What `ref` is and how it will run: a vault reference (NAME, NAME:VERSION) or a path to a model folder or a
 * .gguf file. GGUF → llama; Hugging Face folders → engine; PEFT adapters → engine, on their base model.
 */
export async function describeModel(ref: string, opts: DescribeOptions): Promise<ModelSpec> {
  const created = Math.floor(Date.now() / 1000);
  const expanded = /^~(\/|$)/.test(ref) ? homedir() + ref.slice(1) : ref;
  if (ref.toLowerCase().endsWith('.gguf') && isFile(expanded)) {
    return ggufSpec(ref, resolve(expanded), { id: ref, aliases: [], vaultRef: null, created });
  }
  const resolved = await resolveModel(ref, opts.home);
  const manifest: Manifest | null = resolved.kind === 'vault' ? resolved.manifest : null;
  const dir = resolved.dir;
  const vaultRef = manifest ? `${manifest.name}:${manifest.version}` : null;
  const aliases = manifest ? [manifest.name, vaultRef!].filter((a) => a !== ref) : [];
  const base = { id: ref, aliases, vaultRef, created: manifest ? Math.floor(Date.parse(manifest.created) / 1000) || created : created };
  const format = manifest?.format ?? detectFormat(dir);

  if (format === 'gguf') {
    const files = manifest ? manifest.files.map((f) => f.path) : readdirSync(dir);
    return ggufSpec(ref, ggufIn(dir, files, ref), base);
  }
  if (format === 'hf-safetensors' || format === 'hf-pytorch') {
    return { ...base, backend: 'engine', format, modelDir: dir, contextLength: hfContextLength(dir), chat: hfChatTemplate(dir) };
  }
  if (format === 'peft-adapter') {
    const baseRef = manifest?.details?.base_model?.ref ?? opts.fallbackBase ?? null;
    if (baseRef === null) {
      const named = manifest?.details?.base_model?.name ?? (readJsonObjectOrNull(join(dir, 'adapter_config.json'))?.base_model_name_or_path as string | undefined);
      throw new UserError(
        `${ref} is a PEFT adapter whose base model is not in the vault${named ? ` (it names ${named})` : ''}`,
        `serve it as --adapter ${ref} together with exactly one --model BASE (a Hugging Face model in the vault)`,
      );
    }
    const baseSpec = await describeModel(baseRef, { home: opts.home });
    if (baseSpec.backend !== 'engine' || !baseSpec.modelDir || baseSpec.adapterDir) {
      throw new UserError(`${ref}: its base model ${baseRef} is ${baseSpec.format}; PEFT adapters run on the engine, which needs a Hugging Face base model`);
    }
    const own = hfChatTemplate(dir);
    return {
      ...base, backend: 'engine', format, modelDir: baseSpec.modelDir, adapterDir: dir,
      contextLength: baseSpec.contextLength, chat: own.template ? own : baseSpec.chat,
    };
  }
  throw new UserError(`${ref} (${dir}) is not a model Distillery can serve: no config.json, adapter_config.json or .gguf file`);
}

// ------------------------------------------------------------------------------------------------ registry

export interface RegistryOptions {
  /** Requests run at once per model (engine: pipelined to its worker; llama: context sequences). */
  concurrency: number;
  /** Stop a model's backend after this long without requests; 0 = never. */
  idleUnloadMs: number;
  maxQueued?: number;
  /** GGUF: per-sequence context cap. */
  llamaContext?: number;
  /** GGUF: llama.cpp threads (default: available parallelism). */
  threads?: number;
  log?: (line: string) => void;
  /** Tests: start backends some other way. */
  startBackend?: (spec: ModelSpec) => Promise<Backend>;
}

export class ServedModel {
  backend: Backend | null = null;
  private starting: Promise<Backend> | null = null;
  running = 0;
  private readonly queue: Array<{ go: () => void; fail: (e: Error) => void }> = [];
  private idleTimer: NodeJS.Timeout | null = null;
  /** Times a backend was started (tests look at it). */
  starts = 0;

  constructor(readonly spec: ModelSpec, private readonly opts: RegistryOptions) {}

  get loaded(): boolean {
    return this.backend !== null;
  }

  get queued(): number {
    return this.queue.length;
  }

  private log(line: string): void {
    this.opts.log?.(`model ${this.spec.id}: ${line}`);
  }

  private acquire(signal: AbortSignal): Promise<void> {
    if (this.running < this.opts.concurrency) {
      this.running++;
      return Promise.resolve();
    }
    if (this.queue.length >= (this.opts.maxQueued ?? MAX_QUEUED)) {
      return Promise.reject(new ApiError(503, `model ${this.spec.id} is busy: ${this.running} requests running and ${this.queue.length} waiting; try again later`, 'server_error', null, 'overloaded'));
    }
    return new Promise<void>((resolve, reject) => {
      const item = {
        go: () => {
          signal.removeEventListener('abort', onAbort);
          this.running++;
          resolve();
        },
        fail: reject,
      };
      const onAbort = () => {
        const i = this.queue.indexOf(item);
        if (i >= 0) this.queue.splice(i, 1);
        reject(new BackendCancelled());
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.queue.push(item);
    });
  }

  private releaseSlot(): void {
    this.running--;
    const next = this.queue.shift();
    if (next) next.go();
    else if (this.running === 0) this.armIdle();
  }

  private armIdle(): void {
    this.clearIdle();
    if (this.opts.idleUnloadMs <= 0 || this.backend === null) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      if (this.running > 0 || this.queue.length > 0 || this.backend === null) return;
      const b = this.backend;
      this.backend = null;
      this.log(`unloaded after ${Math.round(this.opts.idleUnloadMs / 1000)} s without requests`);
      void b.close().catch(() => undefined);
    }, this.opts.idleUnloadMs);
    this.idleTimer.unref();
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  private startBackend(): Promise<Backend> {
    const spec = this.spec;
    if (this.opts.startBackend) return this.opts.startBackend(spec);
    if (spec.backend === 'engine') {
      return EngineBackend.start({ modelDir: spec.modelDir!, adapterDir: spec.adapterDir, contextLength: spec.contextLength });
    }
    return LlamaBackend.start({
      ggufPath: spec.ggufPath!,
      contextSize: Math.min(spec.contextLength ?? DEFAULT_LLAMA_CONTEXT, this.opts.llamaContext ?? DEFAULT_LLAMA_CONTEXT),
      sequences: this.opts.concurrency,
      vocabSize: spec.vocabSize ?? null,
      threads: this.opts.threads,
      log: (line) => this.log(`llama.cpp: ${line}`),
    });
  }

  private ensureBackend(): Promise<Backend> {
    if (this.backend) return Promise.resolve(this.backend);
    if (this.starting) return this.starting;
    const started = Date.now();
    this.log(`loading (${this.spec.backend === 'engine' ? 'Python engine' : 'llama.cpp'})`);
    this.starts++;
    this.starting = this.startBackend().then(
      (b) => {
        this.starting = null;
        this.backend = b;
        b.onCrash((why) => {
          this.log(`backend crashed: ${why}`);
          if (this.backend === b) this.backend = null;
        });
        this.log(`loaded in ${((Date.now() - started) / 1000).toFixed(1)} s${b.device ? ` on ${b.device}` : ''} (pid ${b.pid ?? '?'})`);
        return b;
      },
      (e: Error) => {
        this.starting = null;
        this.log(`failed to load: ${e.message}`);
        throw new ApiError(500, `model ${this.spec.id} could not be loaded: ${e.message}`, 'server_error', null, 'model_load_failed');
      },
    );
    return this.starting;
  }

  /** One completion, queued behind the model's running requests. */
  async run(job: CompletionJob, onDelta: ((d: Delta) => void) | null, signal: AbortSignal): Promise<CompletionResult> {
    await this.acquire(signal);
    this.clearIdle();
    try {
      for (let attempt = 0; ; attempt++) {
        const backend = await this.ensureBackend();
        try {
          return await backend.complete(job, onDelta, signal);
        } catch (e) {
          if (e instanceof BackendCrashed) {
            if (this.backend === backend) this.backend = null;
            // Died while idle: this request never reached it, so it may run on a fresh one.
            if (e.beforeSend && attempt === 0) continue;
            this.log(`backend crashed while answering: ${e.why}${e.detail ? `\n${e.detail}` : ''}`);
            throw new ApiError(
              500,
              `model ${this.spec.id}: the ${backend.kind === 'engine' ? 'Python engine' : 'llama.cpp'} process serving it crashed (${/\(([^()]*)\)\s*$/.exec(e.why)?.[1] ?? e.why}) while answering this request; the next request starts it again`,
              'server_error', null, 'backend_crashed',
            );
          }
          if (e instanceof BackendRequestError) throw new ApiError(400, e.message, 'invalid_request_error', null, /context/.test(e.message) ? 'context_length_exceeded' : null);
          throw e;
        }
      }
    } finally {
      this.releaseSlot();
    }
  }

  async unload(): Promise<void> {
    this.clearIdle();
    const b = this.backend;
    this.backend = null;
    const starting = this.starting;
    if (b) await b.close().catch(() => undefined);
    if (starting) await starting.then((s) => s.close(), () => undefined).catch(() => undefined);
    for (const q of this.queue.splice(0)) q.fail(new ApiError(503, 'the server is shutting down', 'server_error'));
  }
}

export class ModelRegistry {
  readonly models: ServedModel[];

  constructor(specs: ModelSpec[], opts: RegistryOptions) {
    const ids = new Set<string>();
    for (const s of specs) {
      if (ids.has(s.id)) throw new UserError(`model ${s.id} is given twice`);
      ids.add(s.id);
    }
    this.models = specs.map((s) => new ServedModel(s, opts));
  }

  /** The model a request names: its id, else an alias that only one model has. */
  find(name: string): ServedModel | undefined {
    const exact = this.models.find((m) => m.spec.id === name);
    if (exact) return exact;
    const byAlias = this.models.filter((m) => m.spec.aliases.includes(name));
    return byAlias.length === 1 ? byAlias[0] : undefined;
  }

  async close(): Promise<void> {
    await Promise.all(this.models.map((m) => m.unload()));
  }
}
