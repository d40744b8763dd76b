import { basename, dirname, join } from 'node:path';
import { writeFileAtomicSync } from '../core/atomic.js';
import { runJob } from '../engine/job.js';
import type { EngineWorker } from '../engine/worker.js';
import type { SampleRequest, SampleResult, Sampler } from './sampler.js';

/**
 * Sampling in the engine (PyTorch): the engine's `sample` job, batched, resumable by itself (it keeps its own
 * params file beside the output and refuses to mix settings). The prompts are written beside the output.
 */
export class EngineSampler implements Sampler {
  readonly kind = 'engine' as const;

  constructor(
    private readonly worker: EngineWorker,
    private readonly modelDir: string,
    private readonly opts: { adapterDir?: string; batchSize?: number; modelDigest?: string } = {},
  ) {}

  describe(): string {
    return `the engine (${this.modelDir})`;
  }

  identity(): Record<string, unknown> {
    return { backend: 'engine', model: this.opts.modelDigest ?? this.modelDir };
  }

  async close(): Promise<void> {}

  async sample(req: SampleRequest): Promise<SampleResult> {
    const start = Date.now();
    const dir = dirname(req.outputFile);
    const promptsFile = join(dir, `${basename(req.outputFile, '.jsonl')}.prompts.jsonl`);
    writeFileAtomicSync(promptsFile, req.prompts.map((prompt) => JSON.stringify({ prompt })).join('\n') + '\n');
    const total = req.prompts.length * req.n;
    let resumed: number | null = null;
    await runJob(
      this.worker,
      {
        type: 'sample', output_dir: dir, model: this.modelDir, adapter: this.opts.adapterDir ?? null, prompts: promptsFile,
        output: basename(req.outputFile), n: req.n, batch_size: this.opts.batchSize ?? 64, ...req.decoding,
      },
      (e) => {
        if (e.type !== 'progress' || typeof e.done !== 'number') return;
        resumed ??= e.done; // the job's first progress event counts what an earlier run left
        req.onProgress?.(e.done, total);
      },
    );
    return { count: total, seconds: (Date.now() - start) / 1000, resumed: resumed ?? 0 };
  }
}
