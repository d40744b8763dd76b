import type { ChildProcess } from 'node:child_process';

/**
 * Every engine process we start is registered here, so that however Distillery exits (normal end, an error,
 * Ctrl-C, SIGTERM) no Python process is left running behind it.
 */
const live = new Set<ChildProcess>();
let installed = false;

function killAll(signal: NodeJS.Signals): void {
  for (const child of live) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        child.kill(signal);
      } catch {
        // already gone
      }
    }
  }
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', () => killAll('SIGKILL'));
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const code = 128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1);
    process.on(sig, () => {
      // Give children a moment to flush their checkpoints and events, then leave with the conventional code.
      killAll('SIGTERM');
      if (live.size === 0) process.exit(code);
      setTimeout(() => process.exit(code), 1500).unref();
    });
  }
}

export function track(child: ChildProcess): void {
  install();
  live.add(child);
  child.once('exit', () => {
    live.delete(child);
  });
}

export function liveChildren(): number {
  return live.size;
}
