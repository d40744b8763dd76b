import { readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../core/errors.js';
import { blobPath, manifestPath, viewPath, type VaultLayout } from './layout.js';
import { listManifestLocations, readManifest } from './manifest.js';
import { livePending } from './pending.js';
import { listBlobs, removeBlob, sweepStaleTemps } from './store.js';

/**
 * `vault gc`: removes blobs no manifest uses (left by deleted models or interrupted imports), temp files of
 * dead imports, and views whose manifest is gone. It refuses to guess: if any manifest cannot be read, the
 * blobs it may use are unknown and nothing is removed. While an import is in flight (a live marker in
 * pending/, see pending.ts) nothing is removed either, and the check is repeated before every deletion; an
 * import that raced a deletion anyway puts the blob back before publishing (importer.ts).
 */

export interface GcReport {
  dryRun: boolean;
  /** Unreferenced blobs removed (or, in a dry run, that would be). */
  removed: Array<{ sha256: string; size: number }>;
  bytes: number;
  /** Blobs still in use. */
  kept: number;
  /** Temp files and orphan views removed. */
  tempsRemoved: number;
  viewsRemoved: number;
  /** Set when in-flight imports stopped the collection (nothing, or only part, was removed). */
  blockedBy: string[];
}

export function collectGarbage(layout: VaultLayout, opts: { dryRun?: boolean } = {}): GcReport {
  const dryRun = opts.dryRun ?? false;
  const referenced = new Set<string>();
  const locations = listManifestLocations(layout);
  for (const loc of locations) {
    try {
      for (const f of readManifest(layout, loc.name, loc.version).files) referenced.add(f.sha256);
    } catch (e) {
      throw new UserError(
        `cannot collect garbage: ${manifestPath(layout, loc.name, loc.version)} is unreadable (${(e as Error).message})`,
        'its blobs cannot be told apart from garbage; run "distillery vault verify" and restore or remove that manifest first',
      );
    }
  }
  const report: GcReport = { dryRun, removed: [], bytes: 0, kept: 0, tempsRemoved: 0, viewsRemoved: 0, blockedBy: [] };
  const inFlight = () => livePending(layout, !dryRun).map((m) => `${m.label} (pid ${m.pid})`);
  report.blockedBy = inFlight();

  for (const sha256 of listBlobs(layout)) {
    if (referenced.has(sha256)) {
      report.kept++;
      continue;
    }
    let size = 0;
    try {
      size = statSync(blobPath(layout, sha256)).size;
    } catch {
      continue; // removed meanwhile
    }
    if (!dryRun) {
      if (report.blockedBy.length > 0) break;
      const now = inFlight();
      if (now.length > 0) {
        report.blockedBy = now;
        break;
      }
      removeBlob(layout, sha256);
    }
    report.removed.push({ sha256, size });
    report.bytes += size;
  }
  if (!dryRun && report.blockedBy.length === 0) {
    report.tempsRemoved = countRemoved(layout.blobTmpDir, () => sweepStaleTemps(layout, 3600 * 1000));
    report.viewsRemoved = removeOrphanViews(layout, new Set(locations.map((l) => `${l.name}/${l.version}`)));
  }
  return report;
}

function countRemoved(dir: string, sweep: () => void): number {
  const count = () => {
    try {
      return readdirSync(dir).length;
    } catch {
      return 0;
    }
  };
  const before = count();
  sweep();
  return before - count();
}

/** Views are derived data: one whose manifest no longer exists is removed (it would point at freed blobs). */
function removeOrphanViews(layout: VaultLayout, live: Set<string>): number {
  let removed = 0;
  let names: string[];
  try {
    names = readdirSync(layout.viewsDir);
  } catch {
    return 0;
  }
  for (const name of names) {
    let versions: string[];
    try {
      versions = readdirSync(join(layout.viewsDir, name));
    } catch {
      continue;
    }
    for (const v of versions) {
      if (!/^[1-9][0-9]*$/.test(v) || live.has(`${name}/${v}`)) continue;
      rmSync(viewPath(layout, name, Number(v)), { recursive: true, force: true });
      removed++;
    }
  }
  return removed;
}
