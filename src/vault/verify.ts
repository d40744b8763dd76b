import { statSync } from 'node:fs';
import { sha256File } from '../core/hash.js';
import { blobPath, manifestPath, type VaultLayout } from './layout.js';
import { listManifestLocations, modelDigest, modelRefString, readManifest, type Manifest } from './manifest.js';
import { lookupManifest } from './refs.js';

/**
 * Re-hashes every blob the selected models use, so silent corruption (bit rot, a stray write, a bad copy)
 * is found while a good copy may still exist elsewhere. Each blob is hashed once, however many models share
 * it, and every damaged blob is reported with the model files it breaks.
 */

export interface VerifyProgress {
  bytesDone: number;
  bytesTotal: number;
  blobsDone: number;
  blobsTotal: number;
}

export type BlobProblem = 'missing' | 'size-mismatch' | 'hash-mismatch' | 'unreadable';

export interface DamagedBlob {
  sha256: string;
  problem: BlobProblem;
  expectedSize: number;
  actualSize: number | null;
  actualSha256: string | null;
  error: string | null;
  /** The model files stored in this blob: `model` is NAME:VERSION. */
  usedBy: Array<{ model: string; path: string }>;
}

export interface VerifyReport {
  ok: boolean;
  models: Array<{ ref: string; ok: boolean; damagedFiles: string[] }>;
  blobs: number;
  bytes: number;
  seconds: number;
  bytesPerSecond: number;
  damaged: DamagedBlob[];
  /** Manifests that can't be read, or whose digest doesn't match their file list. */
  badManifests: Array<{ path: string; error: string }>;
}

export async function verifyVault(layout: VaultLayout, ref?: string, onProgress?: (p: VerifyProgress) => void): Promise<VerifyReport> {
  const manifests: Manifest[] = [];
  const badManifests: VerifyReport['badManifests'] = [];
  if (ref !== undefined) {
    manifests.push(lookupManifest(ref, layout));
  } else {
    for (const loc of listManifestLocations(layout)) {
      try {
        manifests.push(readManifest(layout, loc.name, loc.version));
      } catch (e) {
        badManifests.push({ path: manifestPath(layout, loc.name, loc.version), error: (e as Error).message });
      }
    }
  }
  const badDigest = new Set<string>();
  for (const m of manifests) {
    if (modelDigest(m.files) !== m.digest) {
      badDigest.add(modelRefString(m));
      badManifests.push({ path: manifestPath(layout, m.name, m.version), error: 'digest does not match the file list (manifest edited or damaged)' });
    }
  }

  const blobs = new Map<string, { size: number; usedBy: DamagedBlob['usedBy'] }>();
  for (const m of manifests) {
    for (const f of m.files) {
      const b = blobs.get(f.sha256) ?? { size: f.size, usedBy: [] };
      b.usedBy.push({ model: modelRefString(m), path: f.path });
      blobs.set(f.sha256, b);
    }
  }

  const bytesTotal = [...blobs.values()].reduce((s, b) => s + b.size, 0);
  const progress: VerifyProgress = { bytesDone: 0, bytesTotal, blobsDone: 0, blobsTotal: blobs.size };
  const damaged: DamagedBlob[] = [];
  const start = process.hrtime.bigint();
  let hashedBytes = 0;
  onProgress?.({ ...progress });
  // Largest first: the progress estimate settles early, and the slow part is visible from the start.
  const order = [...blobs.entries()].sort((a, b) => b[1].size - a[1].size);
  for (const [sha256, b] of order) {
    const report = (problem: BlobProblem, extra: Partial<DamagedBlob> = {}) =>
      damaged.push({ sha256, problem, expectedSize: b.size, actualSize: null, actualSha256: null, error: null, usedBy: b.usedBy, ...extra });
    const path = blobPath(layout, sha256);
    const base = progress.bytesDone;
    let size: number | null = null;
    try {
      size = statSync(path).size;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') report('missing');
      else report('unreadable', { error: (e as Error).message });
    }
    if (size !== null && size !== b.size) {
      report('size-mismatch', { actualSize: size });
    } else if (size !== null) {
      try {
        const h = await sha256File(path, (n) => {
          progress.bytesDone += n;
          hashedBytes += n;
          onProgress?.({ ...progress });
        });
        if (h.sha256 !== sha256) report('hash-mismatch', { actualSize: h.size, actualSha256: h.sha256 });
      } catch (e) {
        report('unreadable', { actualSize: size, error: (e as Error).message });
      }
    }
    // Count skipped bytes as done so the bar reaches the end even when blobs are missing.
    progress.bytesDone = base + b.size;
    progress.blobsDone++;
    onProgress?.({ ...progress });
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;

  const broken = new Map<string, string[]>();
  for (const d of damaged) for (const u of d.usedBy) broken.set(u.model, [...(broken.get(u.model) ?? []), u.path]);
  return {
    ok: damaged.length === 0 && badManifests.length === 0,
    models: manifests.map((m) => {
      const files = broken.get(modelRefString(m)) ?? [];
      return { ref: modelRefString(m), ok: files.length === 0 && !badDigest.has(modelRefString(m)), damagedFiles: files.sort() };
    }),
    blobs: blobs.size,
    bytes: hashedBytes,
    seconds,
    bytesPerSecond: seconds > 0 ? hashedBytes / seconds : 0,
    damaged,
    badManifests,
  };
}
