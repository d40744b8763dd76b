import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomicSync } from '../core/atomic.js';
import { distilleryHome } from '../core/paths.js';
import { startProgress } from '../core/progress.js';
import { runJob } from '../engine/job.js';
import type { EngineWorker } from '../engine/worker.js';
import { pairedBootstrapDiff } from '../eval/bootstrap.js';
import { evaluateModel, evalCacheDir, type EvalSummary } from '../eval/run.js';
import type { CodeTask } from '../eval/tasks.js';
import { shortHash } from '../runs/run.js';
import { folderDigest, takeModel, type ModelHandle } from '../recipes/models.js';
import { resolveOnPolicyConfig } from '../recipes/onpolicy-config.js';
import { runOnPolicy } from '../recipes/onpolicy.js';
import { ensureDemoBase, stageTimer, writeDemoJsonl, writeDemoReport } from './pipeline.js';
import { refreshPlan } from './refresh-config.js';
import { renderRefreshHtml, type RefreshSummary, type PairedDiff } from './refresh-report.js';
import { generateRefreshSuite } from './refresh-suite.js';
import { measured } from './report.js';
import type { SuiteSize } from './suite.js';

export interface RefreshDemoOptions {
  size: SuiteSize;
  worker: EngineWorker;
  log: (line: string) => void;
  quiet?: boolean;
  home?: string;
}

const BASE_NAME = 'refresh-coder';
const BOOTSTRAP = { resamples: 2000, seed: 7 };

/** Per-task pass rates, in the order of `tasks` (evaluations of the same tasks pair up by id). */
function rates(e: EvalSummary, tasks: readonly CodeTask[]): number[] {
  const byId = new Map(e.per_task.map((t) => [t.id, t.correct / t.n]));
  return tasks.map((t) => byId.get(t.id)!);
}

function paired(after: EvalSummary, before: EvalSummary, tasks: readonly CodeTask[]): PairedDiff {
  const d = pairedBootstrapDiff(rates(after, tasks), rates(before, tasks), BOOTSTRAP);
  return { diff: d.meanDiff, ci: d.ci };
}

/**
 * The stale-model refresh, end to end: a tiny base model learns code against library v1; the library changes
 * (v2); SDFT teaches v2 usage from demonstrations (the teacher is the model itself with the demonstration in its
 * prompt). Plain SFT on the same demonstrations is the baseline. Every model is scored with one decoding on
 * held-out v2 tasks (the new skill) and on unrelated tasks (retention: what was forgotten). Every stage reuses
 * finished work, so an interrupted demo continues where it stopped.
 */
export async function runRefreshDemo(opts: RefreshDemoOptions): Promise<{ summary: RefreshSummary; reportHtml: string; reportJson: string }> {
  const started = Date.now();
  const home = opts.home ?? distilleryHome();
  const plan = refreshPlan(opts.size);
  const { seconds: stageSeconds, timed } = stageTimer();

  // 1. The suite.
  const suite = generateRefreshSuite({ seed: plan.seed, size: opts.size });
  // The suite's whole content: its data files are written once per key and reused, so any change must show here.
  const suiteKey = shortHash({ scenario: 'refresh', seed: plan.seed, size: opts.size, suite, v: plan.version });
  const dataDir = join(home, 'demo', `refresh-${opts.size}-${suiteKey}`);
  mkdirSync(dataDir, { recursive: true });
  const write = (file: string, rows: readonly unknown[]): string => writeDemoJsonl(dataDir, file, rows);
  const corpusFile = write('corpus.jsonl', suite.corpus);
  const sdftFile = write('sdft.jsonl', suite.sdftData);
  const sftFile = write('sft.jsonl', suite.sdftData.map((r) => ({ prompt: r.prompt, completion: r.demonstration })));
  const strip = (t: CodeTask): CodeTask => ({ id: t.id, prompt: t.prompt, tests: t.tests, entry_point: t.entry_point });
  const v2Tasks = suite.v2Tasks.map(strip);
  const retentionTasks = suite.retentionTasks.map(strip);
  for (const [file, text] of [['lib_v1.py', suite.libV1], ['lib_v2.py', suite.libV2], ['CHANGELOG.md', suite.changelog]] as const) {
    writeFileAtomicSync(join(dataDir, file), text);
  }
  opts.log(
    `suite: ${suite.corpus.length} corpus documents (library v1), ${suite.sdftData.length} v2 demonstrations, ` +
      `${v2Tasks.length} held-out v2 tasks, ${retentionTasks.length} retention tasks (${dataDir})`,
  );

  // 2. The base model (knows v1 only), cached in the vault.
  const { base, reused: baseReused, seconds: baseSeconds } = await ensureDemoBase({
    worker: opts.worker,
    home,
    dataDir,
    name: BASE_NAME,
    model: plan.model,
    train: plan.baseTrain,
    tokenizer: { kind: 'pieces', pieces: suite.pieces, pattern: suite.pattern },
    corpusFile,
    key: suiteKey,
    describe: `word-level Llama (${suite.pieces.length} pieces, ${plan.model.num_hidden_layers} layers, hidden ${plan.model.hidden_size})`,
    description: `trained from scratch on library-v1 code by distillery demo --scenario refresh (${opts.size}, suite ${suiteKey})`,
    log: opts.log,
    quiet: opts.quiet,
  });
  if (!baseReused) stageSeconds['train base'] = baseSeconds;

  // 3. SDFT on the v2 demonstrations: the recipe's defaults, scaled to the demo (steps, batch, lr, lengths).
  const sdftCfg = resolveOnPolicyConfig('sdft', {}, {
    model: base.ref,
    data: sdftFile,
    sampling: { max_tokens: plan.sdft.max_tokens, stop: suite.stop },
    max_prompt_len: 256,
    max_teacher_prompt_len: 256,
    train: { max_steps: plan.sdft.max_steps, batch_size: plan.sdft.batch_size, grad_accum: 1, lr: plan.sdft.lr, seed: plan.sdft.seed },
    // The recipe skips the first 3 completion tokens (openings like "Based on the example" in answers hundreds
    // of tokens long); here a whole answer is ~14 tokens and the 3rd is the function name in `return name(...)`.
    loss: { skip_tokens: 0 },
    // The demo measures retention on its own unrelated tasks (below); its tiny model writes no English.
    retention: false,
  });
  const sdft = await timed('sdft', () => runOnPolicy(sdftCfg, { worker: opts.worker, log: opts.log, quiet: opts.quiet, home }));
  const sdftModel = await takeModel(sdft.model, home);

  // 4. The baseline: plain SFT on the same demonstrations (same steps, batch and lr).
  const sftKey = shortHash({ base: base.digest, data: suiteKey, train: plan.sft });
  const sftModel: ModelHandle = await timed('sft baseline', async () => {
    const bar = startProgress('sft baseline', { total: plan.sft.max_steps, unit: 'steps', quiet: opts.quiet });
    const done = await runJob(
      opts.worker,
      { type: 'train', output_dir: join(dataDir, `sft-${sftKey}`), model: base.dir, data: sftFile, chat_template: false, lora: null, epochs: null, ...plan.sft },
      (e) => e.type === 'progress' && typeof e.step === 'number' && bar.update(e.step),
    );
    bar.done(`final loss ${Number(done.final_loss).toFixed(4)}`);
    const dir = String(done.final_dir);
    return { ref: dir, dir, digest: await folderDigest(dir), name: `${BASE_NAME}-sft` };
  });

  // 5. Every model, one decoding, both task sets.
  const cacheDir = evalCacheDir(home);
  const evalOn = (m: ModelHandle, tasks: CodeTask[], label: string): Promise<EvalSummary> =>
    evaluateModel({ worker: opts.worker, modelDir: m.dir, modelDigest: m.digest, tasks, decoding: plan.evalDecoding, n: plan.evalN, k: [1], cacheDir, label, quiet: opts.quiet });
  const ev = await timed('evaluate', async () => ({
    baseV2: await evalOn(base, v2Tasks, 'base v2'),
    sdftV2: await evalOn(sdftModel, v2Tasks, 'SDFT v2'),
    sftV2: await evalOn(sftModel, v2Tasks, 'SFT v2'),
    baseKeep: await evalOn(base, retentionTasks, 'base retention'),
    sdftKeep: await evalOn(sdftModel, retentionTasks, 'SDFT retention'),
    sftKeep: await evalOn(sftModel, retentionTasks, 'SFT retention'),
  }));

  const summary: RefreshSummary = {
    scenario: 'refresh',
    base: measured(ev.baseV2),
    distilled: measured(ev.sdftV2),
    retention: {
      base: measured(ev.baseKeep),
      distilled: measured(ev.sdftKeep),
      change: paired(ev.sdftKeep, ev.baseKeep, retentionTasks),
    },
    sft_baseline: {
      v2: measured(ev.sftV2),
      retention: measured(ev.sftKeep),
      retention_change: paired(ev.sftKeep, ev.baseKeep, retentionTasks),
    },
    sdft_vs_sft: {
      v2: paired(ev.sdftV2, ev.sftV2, v2Tasks),
      retention: paired(ev.sdftKeep, ev.sftKeep, retentionTasks),
    },
    v2_gain: paired(ev.sdftV2, ev.baseV2, v2Tasks),
    decoding: plan.evalDecoding,
    model: sdft.model,
    base_model: base.ref,
    run_id: sdft.run_id,
    train: { sdft: sdft.train, sft_steps: plan.sft.max_steps },
    tasks: { v2: v2Tasks.length, retention: retentionTasks.length, demonstrations: suite.sdftData.length, corpus: suite.corpus.length, samples_per_task: plan.evalN },
    changelog: suite.changelog,
    stage_seconds: stageSeconds,
    seconds: (Date.now() - started) / 1000,
    base_reused: baseReused,
    size: opts.size,
    sandbox: ev.baseV2.sandbox,
  };
  return { summary, ...writeDemoReport(sdft.run_dir, summary, renderRefreshHtml(summary)) };
}
