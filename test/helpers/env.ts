import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../../src/core/paths.js';

/** The tiny real model shared beside the repository; tests that need it skip where it is absent. */
export const STORIES = join(packageRoot(), '..', 'shared', 'models', 'stories260k');
export const STORIES_MISSING = existsSync(join(STORIES, 'config.json'))
  ? false
  : `stories260k not found at ${STORIES} (it lives in ../shared beside the repository)`;

export const ENGINE_MISSING = existsSync(join(packageRoot(), 'engine', '.venv', 'bin', 'python')) || process.env.DISTILLERY_PYTHON
  ? false
  : 'the engine environment is not installed (npm run setup)';

export const CLI = join(packageRoot(), 'bin', 'distillery.js');

export function tempHome(prefix = 'distillery-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}
