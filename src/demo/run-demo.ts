import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { distilleryHome } from '../core/paths.js';
import type { EngineWorker } from '../engine/worker.js';
import type { Decoding } from '../engine/decoding.js';
import { evaluateModel, evalCacheDir, type EvalSummary } from '../eval/run.js';
import { shortHash } from '../runs/run.js';
import { resolveSsdConfig } from '../recipes/ssd-config.js';
import { runSsd } from '../recipes/ssd.js';
import { takeModel } from '../recipes/models.js';
import { ensureDemoBase, stageTimer, writeDemoJsonl, writeDemoReport } from './pipeline.js';
import { generateSuite, type SuiteSize } from './suite.js';
import { demoPlan, type DemoPlan } from './plan.js';
import { measured, renderDemoHtml, type DemoSummary, type GridPoint } from './report.js';

export interface DemoOptions {
  size: SuiteSize;
  worker: EngineWorker;
  log: (line: string) => void;
  quiet?: boolean;
  home?: string;
}

export interface DemoOutcome {
  summary: DemoSummary;
  reportHtml: string;
  reportJson: string;
}

const BASE_NAME = 'demo-coder';

/**
 * The embedded default, end to end: generate the task suite, train a tiny base model from scratch (cached in
 * the vault by the hash of everything that determines it), evaluate it over a temperature grid, run SSD, and
 * evaluate the result with identical decoding. Every stage reuses finished work, so an interrupted demo
 * continues where it stopped.
 */
export async function runDemo(opts: DemoOptions): Promise<DemoOutcome> {
  const started = Date.now();
  const home = opts.home ?? distilleryHome();
  const plan: DemoPlan = demoPlan(opts.size);
  const { seconds: stageSeconds, timed } = stageTimer();

  // 1. The suite: deterministic, written once per (seed, size).
  const suite = generateSuite({ seed: plan.seed, size: opts.size });
  const suiteKey = shortHash({ seed: plan.seed, size: opts.size, corpus: suite.corpus.length, alphabet: suite.alphabet, v: plan.version });
  const dataDir = join(home, 'demo', `${opts.size}-${suiteKey}`);
  mkdirSync(dataDir, { recursive: true });
  const write = (file: string, rows: unknown[]): string => writeDemoJsonl(dataDir, file, rows);
  const corpusFile = write('corpus.jsonl', suite.corpus);
  const promptsFile = write('ssd-prompts.jsonl', suite.ssdPrompts);
  // The canonical solutions stay out of everything the model or the harness sees.
  const tasks = suite.evalTasks.map(({ id, prompt, tests, entry_point }) => ({ id, prompt, tests, entry_point }));
  const tasksFile = write('eval-tasks.jsonl', tasks);
  opts.log(
    `suite: ${suite.corpus.length} corpus examples, ${suite.ssdPrompts.length} SSD prompts, ${suite.evalTasks.length} held-out tasks (${dataDir})`,
  );

  // 2. The base model: trained from scratch once, then kept in the vault and reused.
  const { base, reused: baseReused, seconds: baseSeconds } = await ensureDemoBase({
    worker: opts.worker,
    home,
    dataDir,
    name: BASE_NAME,
    model: { ...plan.model },
    train: plan.baseTrain,
    tokenizer: { kind: 'char', alphabet: suite.alphabet },
    corpusFile,
    key: suiteKey,
    describe: plan.describeModel,
    description: `trained from scratch by distillery demo (${opts.size}, suite ${suiteKey})`,
    log: opts.log,
    quiet: opts.quiet,
  });
  if (!baseReused) stageSeconds['train base'] = baseSeconds;
  const cacheDir = evalCacheDir(home);
  const evalAt = (decoding: Decoding, n: number, dir: string, digest: string, label: string): Promise<EvalSummary> =>
    evaluateModel({ worker: opts.worker, modelDir: dir, modelDigest: digest, tasks, decoding, n, k: [1], cacheDir, label, quiet: opts.quiet });

  // 3. SSD with evaluation at the fixed decoding (identical for base and distilled).
  const ssdCfg = resolveSsdConfig(
    {},
    {
      model: base.ref,
      prompts: promptsFile,
      sampling: plan.ssdSampling,
      filter: plan.filter,
      train: plan.ssdTrain,
      eval: { tasks: tasksFile, n: plan.evalN, k: [1], decoding: plan.evalDecoding },
      // The demo's character-level model writes code only; English probes would measure nothing.
      retention: false,
    },
  );
  const ssd = await runSsd(ssdCfg, { worker: opts.worker, log: opts.log, quiet: opts.quiet, home });
  for (const [stage, seconds] of Object.entries(ssd.seconds)) stageSeconds[`ssd ${stage}`] = seconds;
  const distilled = await takeModel(ssd.model, home);

  // 4. The temperature grid for both models: a decoding-only gain stays visible.
  const grid = async (temps: number[], dir: string, digest: string, label: string): Promise<GridPoint[]> => {
    const points: GridPoint[] = [];
    for (const t of temps) {
      const decoding = { ...plan.evalDecoding, temperature: t };
      const e = await evalAt(decoding, t === 0 ? 1 : plan.evalN, dir, digest, `${label} T=${t}`);
      points.push({ temperature: t, decoding, ...measured(e) });
    }
    return points;
  };
  const baseGrid = await timed('grid base', () => grid(plan.grid, base.dir, base.digest, 'base grid'));
  const distilledGrid = await timed('grid distilled', () => grid(plan.distilledGrid, distilled.dir, distilled.digest, 'SSD grid'));
  const baseBest = baseGrid.reduce((a, b) => (b['pass@1'] > a['pass@1'] ? b : a));

  const ev = ssd.evaluation!;
  const summary: DemoSummary = {
    base: measured(ev.base),
    distilled: measured(ev.distilled),
    decoding: ev.base.decoding,
    base_grid: baseGrid,
    base_best: baseBest,
    distilled_grid: distilledGrid,
    model: ssd.model,
    base_model: base.ref,
    run_id: ssd.run_id,
    tasks: { eval: tasks.length, ssd_prompts: suite.ssdPrompts.length, corpus: suite.corpus.length, samples_per_task: plan.evalN },
    filter: ssd.filter,
    stage_seconds: stageSeconds,
    seconds: (Date.now() - started) / 1000,
    base_reused: baseReused,
    size: opts.size,
    sandbox: ev.base.sandbox,
  };
  return { summary, ...writeDemoReport(ssd.run_dir, summary, renderDemoHtml(summary)) };
}
