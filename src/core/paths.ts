import { homedir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The Distillery home: vault, runs and caches. `DISTILLERY_HOME` overrides the default `~/.distillery`. */
export function distilleryHome(): string {
  return process.env.DISTILLERY_HOME && process.env.DISTILLERY_HOME.length > 0
    ? process.env.DISTILLERY_HOME
    : join(homedir(), '.distillery');
}

/** The package root (the folder holding package.json), found from this compiled file's location. */
export function packageRoot(): string {
  // dist/src/core/paths.js -> up three levels
  return dirname(dirname(dirname(dirname(fileURLToPath(import.meta.url)))));
}
