import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdirSync, readdirSync, statSync, unlinkSync } from 'node:fs';
import { chmod, mkdir, open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fsyncDir, writeFileAtomicSync } from '../core/atomic.js';
import { blobPath, manifestPath, type VaultLayout } from './layout.js';
import { listManifestLocations, readManifest, versionsOf, writeNewManifest, type Manifest, type ModelSource } from './manifest.js';
import { indexManifest } from './index-db.js';
import { removeBlob } from './store.js';

/**
 * What every way of receiving models from another vault shares (bundle import, `vault pull`, `vault repair`):
 * storing a blob from a byte stream with its hash checked, deciding what each received model becomes in this
 * vault (present / same version / next version), publishing its manifest, and undoing the blobs a failed
 * transfer added. Folder imports (importer.ts) share removeUnreferenced.
 */

// ---------------------------------------------------------------------------------------------- blobs

/** A stored blob's size, or null when it is not in the store. */
export function storedSize(layout: VaultLayout, sha256: string): number | null {
  try {
    return statSync(blobPath(layout, sha256)).size;
  } catch {
    return null;
  }
}

/** Removes blobs a failed transfer or import added, unless some published manifest uses them (an unreadable manifest keeps them all). */
export function removeUnreferenced(layout: VaultLayout, blobs: Set<string>): void {
  if (blobs.size === 0) return;
  const referenced = new Set<string>();
  for (const loc of listManifestLocations(layout)) {
    try {
      for (const f of readManifest(layout, loc.name, loc.version).files) referenced.add(f.sha256);
    } catch {
      return; // An unreadable manifest might use them: keep the blobs rather than risk deleting data.
    }
  }
  for (const sha256 of blobs) if (!referenced.has(sha256)) removeBlob(layout, sha256);
}

/**
 * Temp files in blobs/tmp are named `<pid>-<random>` by their writer; those whose process is gone (an
 * import killed mid-blob) can never be finished, so they go now rather than after sweepStaleTemps' day.
 * Other names (a pull's resumable `pull-<sha256>.part`) are left alone.
 */
export function sweepDeadTemps(layout: VaultLayout): void {
  let names: string[];
  try {
    names = readdirSync(layout.blobTmpDir);
  } catch {
    return;
  }
  for (const n of names) {
    const m = /^([1-9][0-9]*)-/.exec(n);
    if (!m || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') continue;
      try {
        unlinkSync(join(layout.blobTmpDir, n));
      } catch {
        /* raced with another sweeper */
      }
    }
  }
}

/** The stream of a blob's bytes ended before `expected` bytes (a cut connection): the temp file may be resumed. */
export class IncompleteBlobError extends Error {
  constructor(readonly received: number, readonly expected: number) {
    super(`the data ended after ${received} of ${expected} bytes`);
    this.name = 'IncompleteBlobError';
  }
}

/** Hands a blob's bytes to `consume`, chunk by chunk, awaiting each (each chunk is valid only until then). */
export type BlobFeed = (consume: (chunk: Buffer) => Promise<void>) => Promise<void>;

export interface ReceiveBlobOptions {
  /** The temp file; default blobs/tmp/<pid>-<random>, created exclusively. */
  tmp?: string;
  /** Continue `tmp` as it is: its bytes are hashed first and count towards the size (else it starts empty). */
  resume?: boolean;
  /** On a failure other than a content mismatch, leave `tmp` in place so a later attempt can resume it. */
  keepPartial?: boolean;
  /** After each chunk is written: bytes in the temp file so far, and this chunk's length. */
  onChunk?: (written: number, chunk: number) => void | Promise<void>;
  /** The error for content that is not the blob: more bytes than `size`, or a different sha256. */
  mismatch: (m: { actualSha256: string | null; size: number }) => Error;
  /** fsync blobs/sha256 after the rename (default false: callers storing many blobs sync once, see syncBlobDir). */
  syncDir?: boolean;
}

export interface ReceivedBlob {
  /** True when the blob was not in the store before (false: an existing, maybe damaged, copy was replaced). */
  created: boolean;
  /** Bytes written by this call (a resumed temp file's earlier bytes not included). */
  bytes: number;
  /** Bytes that were already in the temp file when resuming. */
  resumedFrom: number;
}

async function writeFull(fh: FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
}

/**
 * Streams one blob into blobs/tmp while hashing it, checks its size and sha256, fsyncs it and renames it to
 * blobs/sha256/<hex>, atomically replacing whatever was there (so a damaged stored copy is repaired in one
 * step; readers see the old file or the new one). Memory stays flat whatever the size: only the chunks in
 * flight are held.
 */
export async function receiveBlob(layout: VaultLayout, sha256: string, size: number, feed: BlobFeed, opts: ReceiveBlobOptions): Promise<ReceivedBlob> {
  await mkdir(layout.blobTmpDir, { recursive: true });
  await mkdir(layout.blobsDir, { recursive: true });
  const tmp = opts.tmp ?? join(layout.blobTmpDir, `${process.pid}-${randomBytes(8).toString('hex')}`);
  const hash = createHash('sha256');
  let resumedFrom = 0;
  if (opts.resume) {
    // Hash what an earlier attempt stored; the new bytes are appended to it.
    try {
      for await (const chunk of createReadStream(tmp, { highWaterMark: 4 << 20 })) {
        hash.update(chunk as Buffer);
        resumedFrom += (chunk as Buffer).length;
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  let out: FileHandle;
  if (opts.resume) out = await open(tmp, 'a', 0o600);
  else out = await open(tmp, opts.tmp === undefined ? 'wx' : 'w', 0o600);
  let written = resumedFrom;
  let closed = false;
  let bad = false;
  try {
    if (written > size) {
      bad = true;
      throw opts.mismatch({ actualSha256: null, size: written });
    }
    await feed(async (chunk) => {
      if (written + chunk.length > size) {
        bad = true;
        throw opts.mismatch({ actualSha256: null, size: written + chunk.length });
      }
      hash.update(chunk);
      await writeFull(out, chunk);
      written += chunk.length;
      await opts.onChunk?.(written, chunk.length);
    });
    if (written < size) throw new IncompleteBlobError(written, size);
    const actual = hash.digest('hex');
    if (actual !== sha256) {
      bad = true;
      throw opts.mismatch({ actualSha256: actual, size: written });
    }
    await out.sync();
    await out.close();
    closed = true;
    const final = blobPath(layout, sha256);
    const existed = await stat(final).then(() => true, () => false);
    await chmod(tmp, 0o444);
    await rename(tmp, final);
    if (opts.syncDir) await fsyncDir(layout.blobsDir);
    return { created: !existed, bytes: written - resumedFrom, resumedFrom };
  } catch (err) {
    if (!closed) await out.close().catch(() => {});
    if (bad || !opts.keepPartial) await unlink(tmp).catch(() => {});
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------- models

export type ReceivedStatus =
  /** Added under its own name and version, manifest byte for byte. */
  | 'imported'
  /** Added under another version (the name held other content) or another name (`as`). */
  | 'renumbered'
  /** The vault already holds this content under the target name. */
  | 'present';

export interface ReceivedModel {
  /** NAME:VERSION where it came from. */
  original: string;
  /** NAME:VERSION in this vault (for 'present': the version that already holds it). */
  ref: string;
  digest: string;
  status: ReceivedStatus;
  bytes: number;
}

/** A model being received, as its sender describes it. */
export interface IncomingModel {
  name: string;
  version: number;
  digest: string;
  /** Total size of its files (for display). */
  bytes: number;
}

export interface PlannedModel<E extends IncomingModel = IncomingModel> {
  entry: E;
  target: string;
  /** 'present': already in the vault as `presentAs`; 'keep': same version number; 'next': the next free one. */
  action: 'present' | 'keep' | 'next';
  presentAs?: number;
}

/** Versions of `name` whose content digest is `digest` (unreadable manifests are skipped). */
export function versionsWithDigest(layout: VaultLayout, name: string, digest: string): number[] {
  const out: number[] = [];
  for (const v of versionsOf(layout, name)) {
    try {
      if (readManifest(layout, name, v).digest === digest) out.push(v);
    } catch {
      /* verify reports unreadable manifests */
    }
  }
  return out;
}

/**
 * What happens to each model: present (the target name already holds this digest), keep its version
 * (the target name is new to this vault), or become the next version of a name that holds other content.
 */
export function planReceived<E extends IncomingModel>(layout: VaultLayout, entries: readonly E[], as: string | undefined): PlannedModel<E>[] {
  const existing = new Map<string, boolean>();
  return entries.map((entry) => {
    const target = as ?? entry.name;
    if (!existing.has(target)) existing.set(target, versionsOf(layout, target).length > 0);
    const same = versionsWithDigest(layout, target, entry.digest);
    if (same.length > 0) return { entry, target, action: 'present', presentAs: same[0]! };
    return { entry, target, action: existing.get(target) ? 'next' : 'keep' };
  });
}

export function receivedResult(p: PlannedModel, version: number, status: ReceivedStatus): ReceivedModel {
  return {
    original: `${p.entry.name}:${p.entry.version}`, ref: `${p.target}:${version}`, digest: p.entry.digest, status,
    bytes: p.entry.bytes,
  };
}

const MAX_VERSION_RACES = 100;

/**
 * Publishes one received model's manifest and indexes it. Under its own name and version (the name is new
 * here) the sender's exact bytes are written; otherwise (the next version of a name holding other content,
 * or another name) the manifest keeps lineage, metadata and `created`, and records `source(original)`.
 * Versions are claimed by exclusive create, so concurrent receivers race safely; one that finds the same
 * content published meanwhile reports it as present.
 */
export function publishReceived(
  layout: VaultLayout,
  p: PlannedModel,
  src: { manifest: Manifest; bytes: Buffer },
  source: (original: Manifest) => ModelSource,
): ReceivedModel {
  if (p.action === 'present') return receivedResult(p, p.presentAs!, 'present');
  const index = (m: Manifest) => {
    try {
      indexManifest(layout, m);
    } catch {
      // The manifest is the truth and already published; the index notices it is behind and rebuilds.
    }
  };
  if (p.action === 'keep' && p.target === src.manifest.name) {
    const path = manifestPath(layout, p.target, src.manifest.version);
    mkdirSync(dirname(path), { recursive: true });
    try {
      writeFileAtomicSync(path, src.bytes, { mode: 0o444, exclusive: true });
      index(src.manifest);
      return receivedResult(p, src.manifest.version, 'imported');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      // Someone published this version meanwhile: maybe the same content (a concurrent transfer of it).
    }
  }
  for (let attempt = 0; ; attempt++) {
    const same = versionsWithDigest(layout, p.target, p.entry.digest);
    if (same.length > 0) return receivedResult(p, same[0]!, 'present');
    const keep = p.action === 'keep' && attempt === 0;
    const version = keep ? src.manifest.version : (versionsOf(layout, p.target).at(-1) ?? 0) + 1;
    const m: Manifest = { ...src.manifest, name: p.target, version, source: source(src.manifest) };
    try {
      writeNewManifest(layout, m);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST' && attempt < MAX_VERSION_RACES) continue;
      throw e;
    }
    index(m);
    return receivedResult(p, version, 'renumbered');
  }
}
