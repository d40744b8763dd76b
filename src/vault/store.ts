import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, statSync, unlinkSync, readdirSync } from 'node:fs';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { chmod, mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir } from '../core/atomic.js';
import { blobPath, type VaultLayout } from './layout.js';

/**
 * The content-addressed blob store: `blobs/sha256/<hex>`, each file stored once however many models use it.
 * A blob appears under its final name only complete and fsynced (temp → fsync → rename), and read-only so
 * that a stray write through a view symlink cannot silently change an archived model.
 */

const COPY_CHUNK = 4 << 20;

export interface StoredBlob {
  sha256: string;
  size: number;
  /** True when this call added the blob; false when identical content was already stored. */
  created: boolean;
}

/**
 * Copies `src` into the store, hashing while copying (one read of the source, never all in memory).
 * The copy is made even when the content turns out to be stored already (the hash is only known at the end);
 * it then simply replaces the stored file with identical bytes.
 */
export interface PutBlobOptions {
  onBytes?: (n: number) => void;
  /** fsync blobs/sha256 after the rename (default true). Importers storing many files pass false and call
   *  syncBlobDir() once before publishing the manifest that refers to them. */
  syncDir?: boolean;
}

export async function putBlob(layout: VaultLayout, src: string, opts: PutBlobOptions = {}): Promise<StoredBlob> {
  const { onBytes, syncDir = true } = opts;
  await mkdir(layout.blobTmpDir, { recursive: true });
  await mkdir(layout.blobsDir, { recursive: true });
  const tmp = join(layout.blobTmpDir, `${process.pid}-${randomBytes(8).toString('hex')}`);
  const hash = createHash('sha256');
  let size = 0;
  try {
    // A stream pipeline overlaps reading, hashing and writing (about twice the speed of a read-await-write
    // loop on one disk); buffers are bounded by the high-water marks, so memory stays flat for any size.
    await pipeline(
      createReadStream(src, { highWaterMark: COPY_CHUNK }),
      new Transform({
        transform(chunk: Buffer, _enc, done) {
          hash.update(chunk);
          size += chunk.length;
          onBytes?.(chunk.length);
          done(null, chunk);
        },
      }),
      createWriteStream(tmp, { flags: 'wx', mode: 0o600, highWaterMark: COPY_CHUNK }),
    );
    // fsync applies to the file, whichever descriptor asks.
    const fh = await open(tmp, 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    const sha256 = hash.digest('hex');
    const final = blobPath(layout, sha256);
    const existed = await stat(final).then(() => true, () => false);
    // Even when the blob exists we install the fresh copy: it costs a rename, not a copy, and it heals a
    // stored blob that went bad (so re-importing a good copy repairs what `verify` reported).
    await chmod(tmp, 0o444);
    await rename(tmp, final);
    if (syncDir) await fsyncDir(layout.blobsDir);
    return { sha256, size, created: !existed };
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw e;
  }
}

/**
 * Deletes temp files an interrupted import left in blobs/tmp. Only files untouched for `maxAgeMs` go, so a
 * concurrent import that is still writing (its file's mtime keeps moving) is never disturbed.
 */
export function sweepStaleTemps(layout: VaultLayout, maxAgeMs = 24 * 3600 * 1000): void {
  let names: string[];
  try {
    names = readdirSync(layout.blobTmpDir);
  } catch {
    return;
  }
  const cutoff = Date.now() - maxAgeMs;
  for (const n of names) {
    const p = join(layout.blobTmpDir, n);
    try {
      if (statSync(p).mtimeMs < cutoff) unlinkSync(p);
    } catch {
      /* raced with another sweeper or the writer finished */
    }
  }
}

/** Makes the renames of earlier putBlob(…, {syncDir: false}) calls durable. */
export function syncBlobDir(layout: VaultLayout): Promise<void> {
  return fsyncDir(layout.blobsDir);
}

export function hasBlob(layout: VaultLayout, sha256: string): boolean {
  return existsSync(blobPath(layout, sha256));
}

export function blobSize(layout: VaultLayout, sha256: string): number | null {
  try {
    return statSync(blobPath(layout, sha256)).size;
  } catch {
    return null;
  }
}

/** Removes a blob (used to undo a failed import). Unlinking needs only the directory to be writable. */
export function removeBlob(layout: VaultLayout, sha256: string): void {
  try {
    unlinkSync(blobPath(layout, sha256));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

/** Every stored blob's hash (temp files live elsewhere, so everything here is a finished blob). */
export function listBlobs(layout: VaultLayout): string[] {
  try {
    return readdirSync(layout.blobsDir).filter((f) => /^[0-9a-f]{64}$/.test(f));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}
