import type { EngineWorker } from '../../engine/worker.js';
import { folderDigest } from '../../recipes/models.js';
import type { Run } from '../../runs/run.js';
import { EngineSampler } from '../../sampling/engine.js';
import { evalCacheDir } from '../run.js';
import { evaluateRetention, RETENTION_DEFAULT_DECODING, type RetentionSummary } from './index.js';

export interface RetentionBeforeAfter {
  base: RetentionSummary;
  distilled: RetentionSummary;
}

/**
 * The retention suite on a recipe's base and result, in the engine, with the suite's default decoding (greedy)
 * in the prompt format the recipe trained with (`chatTemplate`). Cached by model digest like any retention run,
 * so the base's result is shared by every run from it. This is what a recipe run's `retention` stage stores and
 * its evaluation report compares.
 */
export async function retentionBeforeAfter(opts: {
  worker: EngineWorker;
  base: { dir: string; digest: string };
  distilled: { dir: string; digest: string };
  chatTemplate: boolean;
  home?: string;
  quiet?: boolean;
}): Promise<RetentionBeforeAfter> {
  const decoding = { ...RETENTION_DEFAULT_DECODING, chat_template: opts.chatTemplate };
  const cacheDir = evalCacheDir(opts.home);
  const one = (m: { dir: string; digest: string }, label: string): Promise<RetentionSummary> =>
    evaluateRetention({ sampler: new EngineSampler(opts.worker, m.dir, { modelDigest: m.digest }), modelDigest: m.digest, decoding, cacheDir, label, quiet: opts.quiet });
  return { base: await one(opts.base, 'retention base'), distilled: await one(opts.distilled, 'retention distilled') };
}

/**
 * A recipe run's `retention` stage (resumable like every stage): the suite on base and result, logged as one
 * line. Null when the run's configuration turned it off.
 */
export async function retentionStage(
  run: Run,
  enabled: boolean,
  opts: { worker: EngineWorker; base: { dir: string; digest: string }; finalDir: string; chatTemplate: boolean; home?: string; quiet?: boolean; log: (line: string) => void },
): Promise<RetentionBeforeAfter | null> {
  if (!enabled) return null;
  const r = await run.stage('retention', async () =>
    retentionBeforeAfter({ ...opts, distilled: { dir: opts.finalDir, digest: await folderDigest(opts.finalDir) } }),
  );
  const pct = (s: RetentionSummary): string => `${(s.pass_at_k['1']!.value * 100).toFixed(1)}%`;
  opts.log(`retention (${r.base.tasks} general probes, greedy): ${pct(r.base)} → ${pct(r.distilled)}`);
  return r;
}
