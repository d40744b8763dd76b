import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomicSync } from '../core/atomic.js';
import { parseJsonlObjects } from '../core/jsonl.js';
import type { EngineWorker } from './worker.js';

/** One event of a job, as written to its events.jsonl and streamed by the worker. */
export interface JobEvent {
  time?: string;
  type: 'start' | 'progress' | 'log' | 'checkpoint' | 'done' | 'error' | string;
  [field: string]: unknown;
}

export interface JobSpec {
  type: 'train' | 'sample' | string;
  output_dir: string;
  [field: string]: unknown;
}

/**
 * Runs an engine job inside a worker (no interpreter start-up per job) and resolves with its `done` summary.
 * The spec is also saved as job.json in the job's folder, so the same job can be re-run by hand with
 * `python -m distillery_engine.jobs job.json` (or under torchrun). Jobs resume from their own checkpoints and
 * partial outputs, so calling this again after an interruption continues where the job stopped.
 */
export async function runJob(
  worker: EngineWorker,
  spec: JobSpec,
  onEvent?: (event: JobEvent) => void,
): Promise<JobEvent> {
  mkdirSync(spec.output_dir, { recursive: true });
  writeFileAtomicSync(join(spec.output_dir, 'job.json'), JSON.stringify(spec, null, 2) + '\n');
  const result = await worker.call('run_job', { job: spec }, (e) => onEvent?.(e as JobEvent));
  return result as JobEvent;
}

/** One line of a `sample` job's output. */
export interface SampleRecord {
  prompt_index: number;
  sample_index: number;
  completion: string;
  token_ids: number[];
  finish_reason: 'stop' | 'eos' | 'length';
}

/** Reads a finished `sample` job's output file. */
export function readSamples(file: string): SampleRecord[] {
  return parseJsonlObjects(readFileSync(file, 'utf8'), file).map(({ rec }) => rec as unknown as SampleRecord);
}
