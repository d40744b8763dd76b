import { UserError } from '../core/errors.js';
import { distilleryHome } from '../core/paths.js';
import { describeModel, DEFAULT_LLAMA_CONTEXT } from '../server/registry.js';
import { LlamaBackend } from '../server/backends/llama.js';
import { BackendCrashed } from '../server/backends/types.js';
import { anyMissing, drawMissing } from './samples-file.js';
import type { SampleRequest, SampleResult, Sampler } from './sampler.js';

/**
 * Sampling with llama.cpp (node-llama-cpp, in a child process so a crash cannot take the caller down) from a
 * GGUF model in the vault: the same backend `distillery serve` uses, driven directly. `concurrency` samples
 * run at once, each in its own context sequence; each sample has its own seed (decoding.seed + position),
 * so a resumed run draws exactly the missing ones. Chat templates come from the GGUF file.
 */

export interface LlamaSamplerOptions {
  home?: string;
  /** Sequences decoded at once (default 2). */
  concurrency?: number;
  /** llama.cpp threads (default: every available core). */
  threads?: number;
  contextSize?: number;
}

export class LlamaSampler implements Sampler {
  readonly kind = 'llama' as const;
  private digest: string | null = null;

  constructor(private readonly ref: string, private readonly opts: LlamaSamplerOptions = {}) {}

  describe(): string {
    return `llama.cpp (${this.ref})`;
  }

  identity(): Record<string, unknown> {
    return { backend: 'llama', model: this.digest ?? this.ref };
  }

  async close(): Promise<void> {}

  async sample(req: SampleRequest): Promise<SampleResult> {
    const spec = await describeModel(this.ref, { home: this.opts.home ?? distilleryHome() });
    if (spec.backend !== 'llama' || !spec.ggufPath) {
      throw new UserError(`--sampler llama runs GGUF models; ${this.ref} is ${spec.format}`, `export it first: distillery export ${this.ref} --format gguf`);
    }
    if (req.decoding.chat_template && spec.chat.template === null) throw new UserError(`${this.ref} has no usable chat template: ${spec.chat.reason}`);
    this.digest = spec.vaultRef ?? spec.ggufPath;
    const concurrency = Math.max(1, this.opts.concurrency ?? 2);
    // The model loads only when something is left to draw.
    const backend = !anyMissing(req) ? null : await LlamaBackend.start({
      ggufPath: spec.ggufPath,
      contextSize: Math.min(this.opts.contextSize ?? DEFAULT_LLAMA_CONTEXT, spec.contextLength ?? DEFAULT_LLAMA_CONTEXT),
      sequences: concurrency,
      vocabSize: spec.vocabSize ?? null,
      threads: this.opts.threads,
    });
    const d = req.decoding;
    const prompt = (text: string) =>
      d.chat_template ? { text: spec.chat.template!.render([{ role: 'user', content: text }]), addSpecialTokens: false } : { text, addSpecialTokens: true };
    const signal = new AbortController().signal;
    try {
      return await drawMissing(req, this.identity(), concurrency, async (text, seed) => {
        const r = await backend!.complete({
          prompt: prompt(text), temperature: d.temperature, topP: d.top_p, topK: d.top_k, minP: d.min_p,
          seed, maxTokens: d.max_tokens, stop: d.stop, logprobs: null,
        }, null, signal).catch((e: unknown) => {
          // A crash of llama.cpp ends the sampling with a message; what was drawn stays for a resume.
          throw e instanceof BackendCrashed ? new UserError(`llama.cpp stopped while sampling ${this.ref}: ${e.why}`, 'run the same command again to resume') : e;
        });
        return { text: r.text, finish: r.finishReason };
      });
    } finally {
      await backend?.close();
    }
  }
}
