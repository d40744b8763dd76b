/** Helpers shared by the sandbox tests (sandbox.test.ts, sandbox-batch.test.ts). */
import { readdirSync, readFileSync } from 'node:fs';

/** Pids of live processes whose command line contains `needle`. */
export function processesWith(needle: string): number[] {
  const found: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      const state = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]?.[0];
      if (cmd.includes(needle) && state !== 'Z') found.push(Number(p));
    } catch {
      // exited while we looked
    }
  }
  return found;
}

/**
 * Prints its cwd, writes files there (one in a directory it then makes unreadable) and checks that the cwd is
 * HOME and the temp dir: the sandbox must give it a fresh temp dir and remove all of it afterwards.
 */
export const TEMP_DIR_PROGRAM = [
  'import os, tempfile',
  'print(os.getcwd())',
  'open("out.txt", "w").write("data")',
  'os.makedirs("a/b")',
  'open("a/b/c.txt", "w").write("x")',
  'os.chmod("a", 0)',
  'assert os.environ["HOME"] == os.getcwd() == tempfile.gettempdir()',
].join('\n');
