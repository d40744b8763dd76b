import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../core/paths.js';
import { UserError } from '../core/errors.js';

/** How to start the Python engine: the interpreter and the environment it needs. */
export interface EngineCommand {
  python: string;
  env: NodeJS.ProcessEnv;
}

/**
 * The engine interpreter is `DISTILLERY_PYTHON` when set, else the pinned venv that `npm run setup` creates
 * in engine/.venv. PYTHONPATH points at engine/ so `-m distillery_engine.*` resolves to this checkout.
 */
export function engineCommand(): EngineCommand {
  const root = packageRoot();
  const python = process.env.DISTILLERY_PYTHON || join(root, 'engine', '.venv', 'bin', 'python');
  if (!process.env.DISTILLERY_PYTHON && !existsSync(python)) {
    throw new UserError(
      `the Python engine is not installed (${python} is missing)`,
      'run `npm run setup` in the Distillery folder, or set DISTILLERY_PYTHON to an interpreter with the engine requirements',
    );
  }
  const enginePath = join(root, 'engine');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PYTHONPATH: process.env.PYTHONPATH ? `${enginePath}:${process.env.PYTHONPATH}` : enginePath,
    PYTHONUNBUFFERED: '1',
    // Offline by construction: no code path may reach a model hub.
    HF_HUB_OFFLINE: '1',
    TRANSFORMERS_OFFLINE: '1',
    TOKENIZERS_PARALLELISM: 'false',
  };
  // CPU threads for torch: its default (one per core) is fastest on an idle machine; on a busy one, fewer
  // threads avoid OpenMP spinning against other processes (DISTILLERY_THREADS=1).
  const threads = threadsSetting();
  if (threads !== null) {
    env.OMP_NUM_THREADS = String(threads);
    env.MKL_NUM_THREADS = String(threads);
  }
  return { python, env };
}

/**
 * DISTILLERY_THREADS, the CPU threads every backend uses (torch in the engine, llama.cpp), or null when unset
 * (each backend then uses every core). On a busy machine fewer threads avoid spinning against other processes.
 */
export function threadsSetting(): number | null {
  const threads = process.env.DISTILLERY_THREADS;
  if (!threads) return null;
  if (!/^[1-9][0-9]*$/.test(threads)) throw new UserError(`DISTILLERY_THREADS must be a whole number ≥ 1 (got "${threads}")`);
  return Number(threads);
}
