import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The Distillery home: vault, runs and caches. `DISTILLERY_HOME` overrides the default `~/.distillery`. */
export function distilleryHome(): string {
  return process.env.DISTILLERY_HOME && process.env.DISTILLERY_HOME.length > 0
    ? process.env.DISTILLERY_HOME
    : join(homedir(), '.distillery');
}

let root: string | undefined;

/**
 * The package root (the folder holding package.json and engine/), found by walking up from this file, so it
 * is the same whether the code runs compiled from dist/ or from source under tsx.
 */
export function packageRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!(existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'engine')))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find the Distillery package root above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
  root = dir;
  return root;
}

/** This Distillery's version (package.json), recorded in bundles, exports and run records. */
export function distilleryVersion(): string {
  try {
    const v = (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version?: unknown }).version;
    return typeof v === 'string' ? v : 'unknown';
  } catch {
    return 'unknown';
  }
}
