import { copyFileSync, readFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { writeFileAtomicSync } from '../core/atomic.js';
import { UserError } from '../core/errors.js';
import { parseJsonlObjects } from '../core/jsonl.js';
import { startProgress } from '../core/progress.js';
import { runJob, readSamples } from '../engine/job.js';
import { EngineSampler } from '../sampling/engine.js';
import type { Sampler } from '../sampling/sampler.js';
import type { EngineWorker } from '../engine/worker.js';
import { evaluateBeforeAfter, evalCacheDir, type EvalSummary } from '../eval/run.js';
import { loadTasks } from '../eval/tasks.js';
import { Run } from '../runs/run.js';
import { filterSamples, type FilterStats } from './ssd-filter.js';
import type { SsdConfig } from './ssd-config.js';
import { takeModel, registerDistilled, outputName, folderDigest, type ModelHandle } from './models.js';
import { attachRunReport } from '../eval/report/run-report.js';
import { retentionStage, type RetentionBeforeAfter } from '../eval/retention/before-after.js';

export interface SsdResult {
  run_id: string;
  run_dir: string;
  resumed: boolean;
  parent: { ref: string; digest: string };
  model: string;
  filter: FilterStats;
  train: { steps: number; final_loss: number; seconds: number };
  evaluation: { base: EvalSummary; distilled: EvalSummary } | null;
  retention: RetentionBeforeAfter | null;
  seconds: Record<string, number>;
}

export interface SsdHooks {
  worker: EngineWorker;
  /** What draws the SSD samples; default: the engine on the base model. (Evaluation always uses the engine:
   *  the distilled model exists only locally.) */
  sampler?: Sampler;
  log: (line: string) => void;
  quiet?: boolean;
  home?: string;
}

/** Reads a prompts JSONL file: one {"prompt": string} per line; errors name the line. */
export function readPrompts(path: string): { prompt: string }[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new UserError(`cannot read prompts file ${path}: ${(e as Error).message}`);
  }
  const out = parseJsonlObjects(text, path).map(({ rec, where }) => {
    if (typeof rec.prompt !== 'string' || rec.prompt.length === 0) {
      throw new UserError(`${where}: each line needs a non-empty string field "prompt"`);
    }
    return { prompt: rec.prompt };
  });
  if (out.length === 0) throw new UserError(`${path} holds no prompts`);
  return out;
}

function steps(cfg: SsdConfig, examples: number): { total: number; warmup: number } {
  const perEpoch = Math.ceil(examples / (cfg.train.batch_size * cfg.train.grad_accum));
  const total = cfg.train.max_steps ?? Math.max(1, Math.round(perEpoch * cfg.train.epochs));
  return { total, warmup: Math.round(total * cfg.train.warmup_ratio) };
}

/**
 * SSD as the paper describes it: (1) sample once from the frozen base at T_train with truncation,
 * (2) drop empty and stub outputs, (3) plain SFT on completion tokens, (4) evaluate with its own decoding,
 * (5) register the result with its lineage. Each stage is resumable; re-running the same command continues.
 */
export async function runSsd(cfg: SsdConfig, hooks: SsdHooks): Promise<SsdResult> {
  const base: ModelHandle = await takeModel(cfg.model, hooks.home);
  const name = outputName(cfg.name, base);
  const prompts = readPrompts(cfg.prompts);
  const tasks = cfg.eval ? await loadTasks(cfg.eval.tasks) : null;
  // The run is keyed by the resolved parent (its digest), not the ref text, so "m" and "m:1" share a run.
  const sampler = hooks.sampler ?? new EngineSampler(hooks.worker, base.dir);
  const runKey = {
    ...cfg, model: base.digest, prompts: resolve(cfg.prompts), promptsCount: prompts.length,
    // Samples from a server are a different run from the engine's (the run key keeps them apart).
    ...(sampler.kind === 'engine' ? {} : { sampler: sampler.identity() }),
  };
  const { run, resumed } = Run.openOrCreate('ssd', runKey, hooks.home);
  hooks.log(`${resumed ? 'resuming' : 'starting'} run ${run.id} (${run.dir})`);
  writeFileAtomicSync(run.path('recipe.json'), JSON.stringify(cfg, null, 2) + '\n');
  if (!existsSync(run.path('prompts.jsonl'))) copyFileSync(cfg.prompts, run.path('prompts.jsonl'));

  // Stage 1: sample once from the frozen base.
  await run.stage('sample', async (dir) => {
    const total = prompts.length * cfg.sampling.n;
    hooks.log(
      `sample: ${total} completions from the frozen base at T=${cfg.sampling.temperature}, top-k ${cfg.sampling.top_k}, ` +
        `top-p ${cfg.sampling.top_p}; chat template ${cfg.sampling.chat_template ? 'on' : 'off'}`,
    );
    if (sampler.kind !== 'engine') hooks.log(`sample: through ${sampler.describe()} (it must serve ${base.ref})`);
    const bar = startProgress('sample', { total, unit: 'samples', quiet: hooks.quiet });
    const { n, ...decoding } = cfg.sampling;
    const done = await sampler.sample({
      prompts: prompts.map((p) => p.prompt), n, decoding, outputFile: join(dir, 'samples.jsonl'), onProgress: (d) => bar.update(d),
    });
    bar.done(`${total} samples`);
    return { count: done.count, seconds: done.seconds };
  });

  // Stage 2: filter (no execution, no correctness check: SSD uses the model's raw samples).
  const filterStats = await run.stage('filter', async (dir) => {
    const samples = readSamples(run.path('sample', 'samples.jsonl'));
    const { kept, stats } = filterSamples(samples, cfg.filter);
    if (kept.length === 0) throw new UserError('every sample was filtered out (empty or stub); nothing to train on');
    const lines = kept.map((s) => JSON.stringify({ prompt: prompts[s.prompt_index]!.prompt, completion: s.completion }));
    writeFileAtomicSync(join(dir, 'train.jsonl'), lines.join('\n') + '\n');
    hooks.log(`filter: kept ${stats.kept} of ${stats.total} (empty ${stats.empty}, stub ${stats.stub}, shortest ${stats.shortest})`);
    return stats;
  });

  // Stage 3: SFT on the samples, completion tokens only.
  const train = await run.stage('train', async (dir) => {
    const { total, warmup } = steps(cfg, filterStats.kept);
    const t = cfg.train;
    hooks.log(`train: ${total} steps (${t.lora ? `LoRA r${t.lora.r}` : 'full fine-tuning'}, lr ${t.lr}, batch ${t.batch_size}×${t.grad_accum})`);
    const bar = startProgress('train', { total, unit: 'steps', quiet: hooks.quiet });
    const done = await runJob(
      hooks.worker,
      {
        type: 'train',
        output_dir: dir,
        model: base.dir,
        init: null,
        data: run.path('filter', 'train.jsonl'),
        loss_on: 'completion',
        chat_template: cfg.sampling.chat_template,
        max_seq_len: t.max_seq_len,
        lora: t.lora,
        lr: t.lr,
        min_lr: t.min_lr,
        warmup_steps: warmup,
        max_steps: total,
        epochs: null,
        batch_size: t.batch_size,
        grad_accum: t.grad_accum,
        max_grad_norm: t.max_grad_norm,
        weight_decay: t.weight_decay,
        betas: t.betas,
        seed: t.seed,
        checkpoint_every: t.checkpoint_every,
      },
      (e) => {
        if (e.type === 'progress' && typeof e.step === 'number') {
          bar.update(e.step, typeof e.loss === 'number' ? `loss ${e.loss.toFixed(4)}` : undefined);
        }
      },
    );
    bar.done(`final loss ${Number(done.final_loss).toFixed(4)}`);
    return { steps: Number(done.steps), final_loss: Number(done.final_loss), seconds: Number(done.seconds), final_dir: String(done.final_dir) };
  });

  // Stage 4: evaluate base and distilled with the identical decoding object.
  let evaluation: SsdResult['evaluation'] = null;
  if (cfg.eval && tasks) {
    const ev = cfg.eval;
    evaluation = await run.stage('evaluate', async () =>
      evaluateBeforeAfter(
        { worker: hooks.worker, tasks, decoding: ev.decoding, n: ev.n, k: ev.k, quiet: hooks.quiet, cacheDir: evalCacheDir(hooks.home) },
        base,
        { dir: train.final_dir, digest: await folderDigest(train.final_dir) },
      ),
    );
  }

  // Stage 5: the retention suite on base and result (what the run cost elsewhere).
  const retention = await retentionStage(run, cfg.retention, {
    worker: hooks.worker, base, finalDir: train.final_dir, chatTemplate: cfg.sampling.chat_template, home: hooks.home, quiet: hooks.quiet, log: hooks.log,
  });

  // Stage 6: register as a new model version with its lineage.
  const registered = await run.stage('register', async () => {
    const ref = await registerDistilled(train.final_dir, {
      name,
      parent: base,
      runId: run.id,
      recipe: { name: 'ssd', config: cfg },
      evaluation,
      home: hooks.home,
    });
    hooks.log(`registered ${ref}`);
    return { ref };
  });
  // The run's evaluation, compared with paired tests, beside it (what `distillery report RUN` shows).
  if (evaluation || retention) hooks.log(`evaluation report: ${await attachRunReport(run.id, run.dir, hooks.home)}`);
  run.finish();

  const seconds = run.stageSeconds();
  return {
    run_id: run.id,
    run_dir: run.dir,
    resumed,
    parent: { ref: base.ref, digest: base.digest },
    model: registered.ref,
    filter: filterStats,
    train: { steps: train.steps, final_loss: train.final_loss, seconds: train.seconds },
    evaluation,
    retention,
    seconds,
  };
}
