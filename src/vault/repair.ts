import { resolve } from 'node:path';
import { UserError } from '../core/errors.js';
import { sha256File } from '../core/hash.js';
import { BundleError, readBundleBlobs, readBundleIndex } from './bundle.js';
import { blobPath, manifestPath, type VaultLayout } from './layout.js';
import { beginPending } from './pending.js';
import {
  BlobNotOnMirrorError, downloadBlob, isMirrorUrl, MirrorClient, MirrorContentError, MirrorInterruptedError, parseMirrorBaseUrl,
} from './pull.js';
import { receiveBlob } from './receive.js';
import { syncBlobDir } from './store.js';
import { verifyVault, type BlobProblem, type DamagedBlob, type VerifyReport } from './verify.js';

/**
 * `distillery vault repair --from BUNDLE|URL [REF]`: finds damaged or missing blobs the way `vault verify`
 * does, and restores each from a good copy: a bundle (streamed once, taking only the blobs needed) or another
 * Distillery's mirror (`/.distillery/v1/blobs/<sha256>`). Every restored blob is hashed while it is written,
 * fsynced and renamed over the damaged one (readers see the old file or the new one), then hashed again from
 * the store. Manifests are never touched: a blob is found by the sha256 the manifest already names.
 */

export interface RepairProgress {
  phase: 'verify' | 'restore' | 'recheck';
  bytesDone: number;
  bytesTotal: number;
}

export interface RepairOptions {
  /** A bundle file, or a mirror's address (http://HOST:PORT). */
  from: string;
  /** One model (NAME or NAME:VERSION); default every model. */
  ref?: string;
  /** Mirror token; default $DISTILLERY_MIRROR_TOKEN. */
  token?: string;
  onProgress?: (p: RepairProgress) => void;
}

export interface RepairBlob {
  sha256: string;
  size: number;
  problem: BlobProblem;
  /** The model files stored in this blob (`model` is NAME:VERSION). */
  usedBy: Array<{ model: string; path: string }>;
}

export interface UnrepairedBlob extends RepairBlob {
  /** Why it could not be restored, e.g. "not in the bundle". */
  reason: string;
}

export interface RepairReport {
  /** True when nothing is left damaged (no blob, no unreadable manifest). */
  ok: boolean;
  source: { kind: 'bundle' | 'mirror'; location: string };
  /** What verify looked at. */
  checked: { models: number; blobs: number; bytes: number };
  repaired: RepairBlob[];
  stillDamaged: UnrepairedBlob[];
  /** The models that had damage, with the files restored and those still damaged. */
  models: Array<{ ref: string; ok: boolean; repairedFiles: string[]; damagedFiles: string[] }>;
  /** Manifests verify could not read or whose digest is wrong: repair never writes manifests. */
  badManifests: VerifyReport['badManifests'];
  bytesRestored: number;
  seconds: number;
}

const elapsed = (start: bigint): number => Number(process.hrtime.bigint() - start) / 1e9;

class SourceCopyDamaged extends Error {}

export async function repairVault(layout: VaultLayout, opts: RepairOptions): Promise<RepairReport> {
  const start = process.hrtime.bigint();
  const progress = (phase: RepairProgress['phase'], bytesDone: number, bytesTotal: number) => opts.onProgress?.({ phase, bytesDone, bytesTotal });

  // Check the source before the long verify: a wrong path, address or token fails in a second.
  let client: MirrorClient | null = null;
  let source: RepairReport['source'];
  if (isMirrorUrl(opts.from)) {
    const base = parseMirrorBaseUrl(opts.from);
    client = MirrorClient.connect(base, opts.token);
    source = { kind: 'mirror', location: base };
    const res = await client.get('/.distillery/v1/models');
    if (res.statusCode !== 200) client.checkSpeaksApi(res, '/.distillery/v1/models');
    res.resume();
  } else {
    if (opts.token !== undefined) throw new UserError('--token is for a mirror URL; a bundle needs none');
    await readBundleIndex(opts.from); // refuses what is not a bundle (reads only its index)
    source = { kind: 'bundle', location: resolve(opts.from) };
  }

  try {
    const verify = await verifyVault(layout, opts.ref, (p) => progress('verify', p.bytesDone, p.bytesTotal));
    const repaired: RepairBlob[] = [];
    const stillDamaged: UnrepairedBlob[] = [];
    let bytesRestored = 0;
    const asBlob = (d: DamagedBlob): RepairBlob => ({ sha256: d.sha256, size: d.expectedSize, problem: d.problem, usedBy: d.usedBy });

    if (verify.damaged.length > 0) {
      const pending = beginPending(layout, `repair from ${source.location}`);
      try {
        const total = verify.damaged.reduce((s, d) => s + d.expectedSize, 0);
        if (client !== null) {
          let done = 0;
          for (const d of verify.damaged) {
            const usedBy = d.usedBy.map((u) => `${u.model} ${u.path}`).join(', ');
            try {
              const got = await downloadBlob(client, layout, d.sha256, d.expectedSize, {
                usedBy, onBytes: (n) => progress('restore', done + n, total),
              });
              repaired.push(asBlob(d));
              bytesRestored += got.bytes;
            } catch (e) {
              if (e instanceof BlobNotOnMirrorError) stillDamaged.push({ ...asBlob(d), reason: 'not on the mirror' });
              else if (e instanceof MirrorContentError) stillDamaged.push({ ...asBlob(d), reason: `the mirror's copy is not good: ${e.message}` });
              else if (e instanceof MirrorInterruptedError) stillDamaged.push({ ...asBlob(d), reason: `${e.message}; run the repair again to resume` });
              else if (e instanceof UserError) stillDamaged.push({ ...asBlob(d), reason: e.message });
              else throw e;
            }
            done += d.expectedSize;
            progress('restore', done, total);
          }
        } else {
          const byHash = new Map(verify.damaged.map((d) => [d.sha256, d]));
          const handled = new Set<string>();
          try {
            await readBundleBlobs(source.location, new Set(byHash.keys()), async (b, feed) => {
              const d = byHash.get(b.sha256)!;
              handled.add(b.sha256);
              if (b.size !== d.expectedSize) {
                await feed(async () => {});
                stillDamaged.push({ ...asBlob(d), reason: `the bundle holds it with ${b.size} bytes, the manifest says ${d.expectedSize}` });
                return;
              }
              try {
                const got = await receiveBlob(layout, d.sha256, d.expectedSize, feed, {
                  mismatch: ({ actualSha256 }) => new SourceCopyDamaged(`the bundle's copy is damaged too (sha256 ${actualSha256})`),
                });
                repaired.push(asBlob(d));
                bytesRestored += got.bytes;
              } catch (e) {
                if (!(e instanceof SourceCopyDamaged)) throw e;
                stillDamaged.push({ ...asBlob(d), reason: e.message });
              }
            }, { onProgress: (p) => progress('restore', p.bytesDone, p.bytesTotal) });
          } catch (e) {
            // A bundle damaged further on: keep what was restored, report the rest with the reason.
            if (!(e instanceof BundleError)) throw e;
            for (const d of verify.damaged) {
              if (!handled.has(d.sha256)) {
                handled.add(d.sha256);
                stillDamaged.push({ ...asBlob(d), reason: e.message });
              }
            }
          }
          for (const d of verify.damaged) if (!handled.has(d.sha256)) stillDamaged.push({ ...asBlob(d), reason: 'not in the bundle' });
        }
        await syncBlobDir(layout);

        // Hash every restored blob again, from the store.
        const recheckTotal = repaired.reduce((s, b) => s + b.size, 0);
        let rechecked = 0;
        for (const b of [...repaired]) {
          let why: string | null = null;
          try {
            const h = await sha256File(blobPath(layout, b.sha256), (n) => progress('recheck', (rechecked += n), recheckTotal));
            if (h.sha256 !== b.sha256 || h.size !== b.size) why = `still wrong after it was restored (sha256 ${h.sha256}, ${h.size} bytes): the disk may be failing`;
          } catch (e) {
            why = `unreadable after it was restored (${(e as Error).message})`;
          }
          if (why !== null) {
            repaired.splice(repaired.indexOf(b), 1);
            stillDamaged.push({ ...b, reason: why });
          }
        }
      } finally {
        pending.end();
      }
    }

    const fixed = new Map<string, string[]>();
    const broken = new Map<string, string[]>();
    for (const b of repaired) for (const u of b.usedBy) fixed.set(u.model, [...(fixed.get(u.model) ?? []), u.path]);
    for (const b of stillDamaged) for (const u of b.usedBy) broken.set(u.model, [...(broken.get(u.model) ?? []), u.path]);
    const badManifest = new Set(verify.badManifests.map((b) => b.path));
    const models = verify.models
      .filter((m) => !m.ok)
      .map((m) => {
        const at = m.ref.lastIndexOf(':');
        const manifestBad = badManifest.has(manifestPath(layout, m.ref.slice(0, at), Number(m.ref.slice(at + 1))));
        const damagedFiles = (broken.get(m.ref) ?? []).sort();
        return { ref: m.ref, ok: damagedFiles.length === 0 && !manifestBad, repairedFiles: (fixed.get(m.ref) ?? []).sort(), damagedFiles };
      });
    return {
      ok: stillDamaged.length === 0 && verify.badManifests.length === 0,
      source,
      checked: { models: verify.models.length, blobs: verify.blobs, bytes: verify.bytes },
      repaired,
      stillDamaged,
      models,
      badManifests: verify.badManifests,
      bytesRestored,
      seconds: elapsed(start),
    };
  } finally {
    client?.close();
  }
}
