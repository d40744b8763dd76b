import { createHash } from 'node:crypto';
import { existsSync, readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomicSync } from '../core/atomic.js';
import { UserError } from '../core/errors.js';
import { distilleryHome } from '../core/paths.js';
import { startProgress } from '../core/progress.js';
import { readSamples } from '../engine/job.js';
import type { EngineWorker } from '../engine/worker.js';
import { EngineSampler } from '../sampling/engine.js';
import type { Sampler } from '../sampling/sampler.js';
import type { Decoding } from '../engine/decoding.js';
import { shortHash } from '../runs/run.js';
import { HARNESS_VERSION } from './version.js';
import type { CodeTask, CompletionFormat } from './tasks.js';
import { promptFor } from './formats/index.js';
import { scoreCompletions, type ScoreResult } from './score.js';

/** Where generations and summaries are cached, shared by every command that evaluates. */
export function evalCacheDir(home: string = distilleryHome()): string {
  return join(home, 'cache', 'eval');
}

/** pass@k is defined for 1 ≤ k ≤ n. */
export function checkPassAtK(n: number, ks: readonly number[]): void {
  if (!Number.isInteger(n) || n < 1) throw new UserError(`samples per task must be a whole number ≥ 1 (got ${n})`);
  for (const k of ks) {
    if (!Number.isInteger(k) || k < 1 || k > n) throw new UserError(`pass@k needs 1 ≤ k ≤ n (got k=${k}, n=${n})`);
  }
}

export interface EvalRequest {
  /** What generates the samples; default: the engine (`worker`) on `modelDir`. */
  sampler?: Sampler;
  worker?: EngineWorker;
  /** Folder of the model to evaluate (Hugging Face layout). */
  modelDir: string;
  /** Identifies the model's weights (vault digest); part of the generation cache key. */
  modelDigest: string;
  tasks: CodeTask[];
  decoding: Decoding;
  /** Samples per task. */
  n: number;
  /** k values of pass@k to report (each ≤ n). */
  k: number[];
  /** Where generations are cached by (model, tasks, decoding, n). */
  cacheDir: string;
  label?: string;
  quiet?: boolean;
  batchSize?: number;
}

export interface EvalSummary {
  model_digest: string;
  decoding: Decoding;
  n: number;
  tasks: number;
  pass_at_k: Record<string, { value: number; ci: [number, number] }>;
  status_counts: Record<string, number>;
  sandbox: string;
  /** Per task: samples, passes, and each sample's sandbox status in sample order (the paired tests use them). */
  per_task: { id: string; n: number; correct: number; outcomes: string[] }[];
  /** The evaluation harness that produced this (stats and report code read it). */
  harness_version: string;
  suite: 'code';
  /** base (the model continues the prompt) or chat (an instruction; the code is extracted), as retention names them. */
  prompt_format: 'base' | 'chat';
  seconds: { generate: number; execute: number };
}

function tasksDigest(tasks: CodeTask[]): string {
  const h = createHash('sha256');
  for (const t of tasks) h.update(JSON.stringify([t.id, t.prompt, t.tests, t.entry_point])).update('\n');
  return h.digest('hex').slice(0, 16);
}

/**
 * Generates n completions per task through the engine (cached and resumable: a sample job's output is kept
 * by its key) and runs them in the sandbox. The same decoding object must be used for every model compared.
 */
export async function evaluateModel(req: EvalRequest): Promise<EvalSummary> {
  const key = shortHash({ model: req.modelDigest, tasks: tasksDigest(req.tasks), decoding: req.decoding, n: req.n }, 16);
  const dir = join(req.cacheDir, key);
  const summaryFile = join(dir, 'summary.json');
  if (existsSync(summaryFile)) {
    const cached = JSON.parse(readFileSync(summaryFile, 'utf8')) as EvalSummary;
    // A summary from another harness version is scored again (the samples themselves stay cached).
    if (cached.harness_version === HARNESS_VERSION && req.k.every((k) => String(k) in cached.pass_at_k)) return cached;
  }
  mkdirSync(dir, { recursive: true });
  const label = req.label ?? 'evaluate';
  const genStart = Date.now();
  const total = req.tasks.length * req.n;
  const bar = startProgress(`${label}: generate`, { total, unit: 'samples', quiet: req.quiet });
  if (!req.sampler && !req.worker) throw new Error('evaluateModel needs a sampler or an engine worker');
  const sampler = req.sampler ?? new EngineSampler(req.worker!, req.modelDir, { batchSize: req.batchSize });
  // A chat model gets each format's chat prompt (an instruction asking for the code) and its answer's code is
  // extracted; a base model continues the prompt. The exact texts sent are kept beside the samples.
  const mode: CompletionFormat = req.decoding.chat_template ? 'chat' : 'continuation';
  const prompts = req.tasks.map((t) => promptFor(t, mode));
  writeFileAtomicSync(join(dir, 'prompts.jsonl'), req.tasks.map((t, i) => JSON.stringify({ id: t.id, prompt: prompts[i] })).join('\n') + '\n');
  await sampler.sample({
    prompts,
    n: req.n,
    decoding: req.decoding,
    outputFile: join(dir, 'samples.jsonl'),
    onProgress: (done) => bar.update(done),
  });
  bar.done(`${total} samples`);
  const genSeconds = (Date.now() - genStart) / 1000;

  const completions = new Map<string, string[]>(req.tasks.map((t) => [t.id, []]));
  for (const s of readSamples(join(dir, 'samples.jsonl'))) {
    const task = req.tasks[s.prompt_index];
    if (task) completions.get(task.id)![s.sample_index] = s.completion;
  }

  const execStart = Date.now();
  const ebar = startProgress(`${label}: execute`, { total, unit: 'programs', quiet: req.quiet });
  const scored: ScoreResult = await scoreCompletions(req.tasks, completions, { k: req.k, format: mode }, (done) => ebar.update(done));
  ebar.done(`${total} programs`);
  const summary: EvalSummary = {
    model_digest: req.modelDigest,
    decoding: req.decoding,
    n: req.n,
    tasks: req.tasks.length,
    pass_at_k: Object.fromEntries(
      Object.entries(scored.passAtK).map(([k, v]) => [k, { value: v.value, ci: v.ci }]),
    ),
    status_counts: scored.statusCounts,
    sandbox: scored.sandbox,
    per_task: scored.perTask.map((t) => ({ id: t.id, n: t.n, correct: t.correct, outcomes: t.outcomes })),
    harness_version: HARNESS_VERSION,
    suite: 'code',
    prompt_format: mode === 'chat' ? 'chat' : 'base',
    seconds: { generate: genSeconds, execute: (Date.now() - execStart) / 1000 },
  };
  writeFileAtomicSync(summaryFile, JSON.stringify(summary, null, 2) + '\n');
  return summary;
}

/** A recipe's evaluation: its base model and its result scored on the same tasks with the identical request. */
export async function evaluateBeforeAfter(
  common: Omit<EvalRequest, 'modelDir' | 'modelDigest' | 'label'>,
  base: { dir: string; digest: string },
  result: { dir: string; digest: string },
): Promise<{ base: EvalSummary; distilled: EvalSummary }> {
  const baseEval = await evaluateModel({ ...common, modelDir: base.dir, modelDigest: base.digest, label: 'evaluate base' });
  const distilled = await evaluateModel({ ...common, modelDir: result.dir, modelDigest: result.digest, label: 'evaluate distilled' });
  return { base: baseEval, distilled };
}
