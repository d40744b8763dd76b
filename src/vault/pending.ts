import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomicSync } from '../core/atomic.js';
import type { VaultLayout } from './layout.js';

/**
 * In-flight markers: anything that stores blobs before publishing the manifest that refers to them (folder
 * imports, bundle imports, pulls) holds a marker in `pending/` while it works. `vault gc` removes nothing
 * while a live marker exists (and checks again before every deletion), so it cannot delete a blob that an
 * import is about to publish. A marker whose process is gone is stale: it protects nothing and gc removes it.
 */

export interface PendingMarker {
  pid: number;
  /** ms since the epoch when the work began. */
  started: number;
  label: string;
}

export interface PendingHandle {
  end(): void;
}

export function pendingDir(layout: VaultLayout): string {
  return join(layout.home, 'pending');
}

/** Registers in-flight work; call `end()` when its manifests are published (or it failed). */
export function beginPending(layout: VaultLayout, label: string): PendingHandle {
  const dir = pendingDir(layout);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${process.pid}-${randomBytes(6).toString('hex')}.json`);
  // A second's margin: filesystem mtimes can be coarser than Date.now().
  const marker: PendingMarker = { pid: process.pid, started: Date.now() - 1000, label };
  // Atomic, so a concurrent gc never reads a half-written marker and sweeps it as stale.
  writeFileAtomicSync(file, JSON.stringify(marker) + '\n');
  return {
    end: () => {
      try {
        unlinkSync(file);
      } catch {
        /* already gone */
      }
    },
  };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

/** Live markers; stale ones (dead process, unreadable file) are deleted when `sweep` is set. */
export function livePending(layout: VaultLayout, sweep = false): PendingMarker[] {
  const dir = pendingDir(layout);
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json'));
  } catch {
    return [];
  }
  const live: PendingMarker[] = [];
  for (const n of names) {
    const file = join(dir, n);
    let m: PendingMarker | null = null;
    try {
      const v = JSON.parse(readFileSync(file, 'utf8')) as Partial<PendingMarker>;
      if (Number.isSafeInteger(v.pid) && typeof v.started === 'number') m = v as PendingMarker;
    } catch {
      /* a marker torn by a crash mid-write */
    }
    if (m && isAlive(m.pid)) live.push(m);
    else if (sweep) {
      try {
        unlinkSync(file);
      } catch {
        /* raced with its owner or another sweeper */
      }
    }
  }
  return live;
}
