/** Steps every demo scenario shares: data files, the cached base model, stage timing, the report files. */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomicSync } from '../core/atomic.js';
import { startProgress } from '../core/progress.js';
import { runJob } from '../engine/job.js';
import type { EngineWorker } from '../engine/worker.js';
import { shortHash } from '../runs/run.js';
import { takeModel, importBase, type ModelHandle } from '../recipes/models.js';

/** Times named stages: `timed(name, fn)` runs fn and adds its wall time to `seconds[name]`. */
export function stageTimer(): { seconds: Record<string, number>; timed: <T>(name: string, fn: () => Promise<T>) => Promise<T> } {
  const seconds: Record<string, number> = {};
  const timed = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = Date.now();
    const r = await fn();
    seconds[name] = (seconds[name] ?? 0) + (Date.now() - t0) / 1000;
    return r;
  };
  return { seconds, timed };
}

/** Writes `rows` as JSON lines into the demo's data folder unless the file is already there (the suite is
 * deterministic, so an existing file holds the same rows); returns its path. */
export function writeDemoJsonl(dataDir: string, file: string, rows: readonly unknown[]): string {
  const p = join(dataDir, file);
  if (!existsSync(p)) writeFileAtomicSync(p, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return p;
}

export interface DemoBaseRequest {
  worker: EngineWorker;
  home: string;
  /** The demo's data folder: the corpus lives here, and so do the training run and its cache marker. */
  dataDir: string;
  /** Vault name the base is archived under. */
  name: string;
  /** Kwargs of the engine's build_model_from_config. */
  model: Record<string, unknown>;
  /** Train job settings (max_steps, batch_size, lr, ...). */
  train: Record<string, unknown> & { max_steps: number };
  /** The engine's tokenizer spec for a from-scratch model: {kind: 'char', alphabet} or {kind: 'pieces', pieces, pattern}. */
  tokenizer: { kind: 'char'; alphabet: string } | { kind: 'pieces'; pieces: string[]; pattern: string };
  corpusFile: string;
  /** Everything else that determines the base (suite identity), for the cache key. */
  key: unknown;
  describe: string;
  description: string;
  log: (line: string) => void;
  quiet?: boolean;
}

/**
 * A demo's base model: trained from scratch on its corpus once, archived in the vault, and reused by later runs
 * (keyed by the hash of everything that determines it). A marker whose model is gone from the vault (deleted by
 * hand) means training again; an interrupted training resumes from its checkpoints.
 */
export async function ensureDemoBase(req: DemoBaseRequest): Promise<{ base: ModelHandle; reused: boolean; seconds: number }> {
  const baseKey = shortHash({ suiteKey: req.key, model: req.model, train: req.train });
  const marker = join(req.dataDir, `base-${baseKey}.json`);
  const existing = existsSync(marker) ? (JSON.parse(readFileSync(marker, 'utf8')) as { ref: string }) : null;
  const cached = existing ? await takeModel(existing.ref, req.home).catch(() => null) : null;
  if (cached) {
    req.log(`base model: reusing ${cached.ref} from the vault`);
    return { base: cached, reused: true, seconds: 0 };
  }
  const started = Date.now();
  const t = req.train;
  req.log(`base model: training a ${req.describe} from scratch (${t.max_steps} steps)`);
  const bar = startProgress('train base', { total: t.max_steps, unit: 'steps', quiet: req.quiet });
  const done = await runJob(
    req.worker,
    {
      type: 'train',
      output_dir: join(req.dataDir, `base-${baseKey}`),
      model: null,
      init: { config: req.model, tokenizer: req.tokenizer },
      data: req.corpusFile,
      chat_template: false,
      lora: null,
      epochs: null,
      ...t,
    },
    (e) =>
      e.type === 'progress' &&
      typeof e.step === 'number' &&
      bar.update(e.step, typeof e.loss === 'number' ? `loss ${e.loss.toFixed(3)}` : undefined),
  );
  bar.done(`final loss ${Number(done.final_loss).toFixed(4)}`);
  const ref = await importBase(String(done.final_dir), req.name, { kind: 'distillery-demo', description: req.description }, req.home);
  writeFileAtomicSync(marker, JSON.stringify({ ref }) + '\n');
  return { base: await takeModel(ref, req.home), reused: false, seconds: (Date.now() - started) / 1000 };
}

/** Writes a demo's HTML report and JSON summary into its run folder; returns their paths. */
export function writeDemoReport(runDir: string, summary: unknown, html: string): { reportHtml: string; reportJson: string } {
  const reportHtml = join(runDir, 'report.html');
  const reportJson = join(runDir, 'report.json');
  writeFileAtomicSync(reportHtml, html);
  writeFileAtomicSync(reportJson, JSON.stringify(summary, null, 2) + '\n');
  return { reportHtml, reportJson };
}
