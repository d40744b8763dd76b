import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fsyncDir } from '../core/atomic.js';
import { UserError } from '../core/errors.js';
import { sha256Hex } from '../core/hash.js';
import { distilleryVersion } from '../core/paths.js';
import { blobPath, manifestPath, type VaultLayout } from './layout.js';
import { modelDigest, modelRefString, modelSize, parseManifest, type Manifest } from './manifest.js';
import { validateModelName } from './names.js';
import { beginPending, livePending } from './pending.js';
import { lookupManifest } from './refs.js';
import { sweepStaleTemps, syncBlobDir } from './store.js';
import {
  planReceived, publishReceived, receiveBlob, receivedResult, removeUnreferenced, storedSize, sweepDeadTemps,
  type BlobFeed, type ReceivedModel, type ReceivedStatus,
} from './receive.js';
import {
  blobMember, BLOCK, BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, END_OF_ARCHIVE, expectedMembers, INDEX_MEMBER,
  manifestMember, MAX_INDEX_BYTES, MAX_MANIFEST_BYTES, MAX_README_BYTES, MAX_SUMS_BYTES, memberHeader, minimalLayout,
  padded, parseBundleIndex, parseSums, README_MEMBER, serializeBundleIndex, sumsLine, SUMS_MEMBER, TarReader,
  type BundleBlobEntry, type BundleIndex, type TarEntry,
} from './bundle-format.js';

export { BundleError, type BundleIndex, type BundleModelEntry, type BundleBlobEntry } from './bundle-format.js';

/**
 * Offline bundles: one tar file holding models (manifests and every blob they use) that another vault can
 * import without a network. Export streams blobs from the store into the archive, hashing as it goes;
 * import streams the archive into the store, checking every sha256 and size against the bundle's index,
 * and publishes manifests only once every blob is verified and durable. Format: docs/bundles.md.
 */

const CHUNK = 4 << 20;

export interface BundleProgress {
  /** Bytes of the archive written (export) or read (import) so far, and the archive's size. */
  bytesDone: number;
  bytesTotal: number;
  /** The member being written or read. */
  member: string;
}

export interface ExportBundleOptions {
  onProgress?: (p: BundleProgress) => void;
  /** Replace an existing file at the output path (default: refuse). */
  force?: boolean;
}

/** Test-only knobs. */
export interface ExportBundleHooks {
  chunkSize?: number;
  /** Give every member a pax size header, as members of 8 GiB or more get. */
  forcePax?: boolean;
}

export interface ExportBundleResult {
  path: string;
  models: Array<{ ref: string; digest: string; bytes: number }>;
  blobs: number;
  /** Sum of the blob sizes, and the archive's size. */
  contentBytes: number;
  archiveBytes: number;
  seconds: number;
  bytesPerSecond: number;
}

export type BundleModelStatus = ReceivedStatus;

export type ImportedBundleModel = ReceivedModel;

export interface ImportBundleOptions {
  onProgress?: (p: BundleProgress) => void;
  /** Import under this name (the bundle must hold a single model name). */
  as?: string;
}

/** Test-only fault injection and knobs. */
export interface ImportBundleHooks {
  chunkSize?: number;
  /** Skip the up-front "is the file long enough" check, so truncation is met while streaming. */
  skipSizeCheck?: boolean;
  /** After each blob member is handled (stored or skipped); `i` counts from 0. */
  afterBlob?: (sha256: string, i: number) => void | Promise<void>;
  /** After each chunk of a blob is written to its temp file. */
  afterChunk?: (sha256: string, bytes: number) => void | Promise<void>;
}

export interface ImportBundleResult {
  bundle: string;
  models: ImportedBundleModel[];
  /** Blobs written by this import, and blobs the store already had (skipped in the stream). */
  blobsStored: number;
  blobsReused: number;
  bytesStored: number;
  archiveBytes: number;
  seconds: number;
  bytesPerSecond: number;
}

function formatSize(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (i < units.length - 1 && v >= 999.5) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${n} B` : `${v < 9.95 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

const elapsed = (start: bigint): number => Number(process.hrtime.bigint() - start) / 1e9;

async function readFull(fh: FileHandle, buf: Buffer, length: number, position: number): Promise<number> {
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

async function writeFull(fh: FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
}

// ---------------------------------------------------------------------------------------------- export

interface ExportModel {
  manifest: Manifest;
  bytes: Buffer;
}

function renderReadme(index: BundleIndex, manifests: Manifest[]): string {
  const lines = [
    'Distillery model bundle',
    '=======================',
    '',
    'This file is a Distillery bundle: language models together with every file they consist of and the',
    'sha256 of each, packed as a plain POSIX tar archive. Nothing in it is compressed or encrypted.',
    '',
    `Created ${index.created} by Distillery ${index.distillery_version}.`,
    '',
    `Models (${manifests.length}):`,
  ];
  for (const m of manifests) {
    const facts = [m.architecture ?? 'unknown architecture', m.dtype, formatSize(modelSize(m)), `${m.files.length} file(s)`, `license ${m.license ?? 'unknown'}`];
    lines.push(`  ${modelRefString(m)}  ${facts.filter(Boolean).join(', ')}`);
    lines.push(`    digest ${m.digest}`);
    if (m.lineage) lines.push(`    derived from ${m.lineage.parent.ref} (${m.lineage.parent.digest.slice(0, 12)}) by run ${m.lineage.run_id}`);
  }
  const total = index.blobs.reduce((s, b) => s + b.size, 0);
  lines.push(
    '',
    `${index.blobs.length} unique file(s), ${formatSize(total)} in all.`,
    '',
    'Add the models to a Distillery vault (every checksum is verified before anything is added):',
    '  distillery vault import-bundle THIS-FILE',
    '',
    'Check or unpack it without Distillery:',
    '  tar tf THIS-FILE            list the members',
    '  tar xf THIS-FILE            unpack into the current folder',
    '  sha256sum -c SHA256SUMS     after unpacking: every line must say OK',
    '',
    'Members, in order: distillery-bundle.json (the index: models and blobs, machine-readable), this',
    'README.txt, SHA256SUMS, models/NAME/VERSION.json (one manifest per model: each file\'s path, sha256',
    'and size), blobs/sha256/HEX (each file\'s content, named by its sha256, stored once even when several',
    'models use it). To rebuild a model folder by hand, copy blobs/sha256/<sha256> to <path> for every',
    'entry in "files" of its manifest.',
    '',
  );
  return lines.join('\n');
}

/**
 * Writes the models named by `refs` (NAME or NAME:VERSION) and all their blobs to one tar file at
 * `outPath`. The archive is written to `outPath.tmp-…` and renamed into place when complete; any failure
 * (a blob missing, the wrong size, or hashing to something else) removes it.
 */
export async function exportBundle(
  layout: VaultLayout,
  refs: string[],
  outPath: string,
  opts: ExportBundleOptions = {},
  hooks: ExportBundleHooks = {},
): Promise<ExportBundleResult> {
  const start = process.hrtime.bigint();
  if (refs.length === 0) throw new UserError('name at least one model to export', 'e.g. distillery vault export NAME -o NAME.tar');
  const out = resolve(outPath);

  const models: ExportModel[] = [];
  const seen = new Set<string>();
  for (const ref of refs) {
    const found = lookupManifest(ref, layout);
    const key = modelRefString(found);
    if (seen.has(key)) continue;
    seen.add(key);
    const path = manifestPath(layout, found.name, found.version);
    const bytes = readFileSync(path);
    const m = parseManifest(bytes.toString('utf8'), path);
    if (m.name !== found.name || m.version !== found.version) throw new UserError(`${path} changed while it was being exported`);
    if (modelDigest(m.files) !== m.digest) {
      throw new UserError(`cannot export ${key}: its manifest is damaged (the digest does not match its file list)`, `run "distillery vault verify ${key}" for details`);
    }
    if (bytes.length > MAX_MANIFEST_BYTES) throw new UserError(`cannot export ${key}: its manifest is larger than ${MAX_MANIFEST_BYTES} bytes`);
    models.push({ manifest: m, bytes });
  }

  // Blobs in order of first use, each once; every one must be in the store with its recorded size.
  const blobs = new Map<string, { size: number; usedBy: string[] }>();
  for (const { manifest: m } of models) {
    for (const f of m.files) {
      const b = blobs.get(f.sha256);
      const use = `${modelRefString(m)} ${f.path}`;
      if (b && b.size !== f.size) throw new UserError(`cannot export: blob ${f.sha256} is recorded with two sizes (${b.size} and ${f.size}, in ${b.usedBy[0]} and ${use})`, 'run "distillery vault verify"');
      if (b) b.usedBy.push(use);
      else blobs.set(f.sha256, { size: f.size, usedBy: [use] });
    }
  }
  const blobProblem = (sha256: string, what: string) => {
    const used = blobs.get(sha256)!.usedBy;
    const refsOf = [...new Set(used.map((u) => u.split(' ')[0]!))];
    return new UserError(
      `cannot export ${refsOf.join(', ')}: blob ${sha256} ${what} (used by ${used.join(', ')})`,
      `run "distillery vault verify" for details; re-import the model from a good copy to repair it`,
    );
  };
  for (const [sha256, b] of blobs) {
    let size: number;
    try {
      size = statSync(blobPath(layout, sha256)).size;
    } catch {
      throw blobProblem(sha256, 'is missing from the store');
    }
    if (size !== b.size) throw blobProblem(sha256, `has the wrong size (${size} bytes, expected ${b.size})`);
  }

  if (existsSync(out)) {
    if (statSync(out).isDirectory()) throw new UserError(`${outPath} is a folder`, 'give the bundle file\'s name, e.g. -o model.tar');
    if (!opts.force) throw new UserError(`${outPath} already exists`, 'choose another name, delete it, or pass --force to replace it');
  }
  if (!existsSync(dirname(out))) throw new UserError(`cannot write ${outPath}: folder ${dirname(out)} does not exist`);

  const created = new Date();
  const mtime = Math.floor(created.getTime() / 1000);
  const index: BundleIndex = {
    format: BUNDLE_FORMAT,
    format_version: BUNDLE_FORMAT_VERSION,
    created: created.toISOString(),
    distillery_version: distilleryVersion(),
    models: models.map(({ manifest: m, bytes }) => ({
      name: m.name, version: m.version, digest: m.digest, manifest: manifestMember(m.name, m.version),
      manifest_sha256: sha256Hex(bytes), manifest_size: bytes.length, files: m.files.length, bytes: modelSize(m),
    })),
    blobs: [...blobs].map(([sha256, b]) => ({ sha256, size: b.size })),
  };
  const indexBytes = Buffer.from(serializeBundleIndex(index), 'utf8');
  const readme = Buffer.from(renderReadme(index, models.map((m) => m.manifest)), 'utf8');
  const sums = Buffer.from(
    [
      sumsLine(sha256Hex(indexBytes), INDEX_MEMBER),
      sumsLine(sha256Hex(readme), README_MEMBER),
      ...index.models.map((m) => sumsLine(m.manifest_sha256, m.manifest)),
      ...index.blobs.map((b) => sumsLine(b.sha256, blobMember(b.sha256))),
    ].join(''),
    'utf8',
  );

  const small: Array<[string, Buffer]> = [
    [INDEX_MEMBER, indexBytes],
    [README_MEMBER, readme],
    [SUMS_MEMBER, sums],
    ...models.map((m): [string, Buffer] => [manifestMember(m.manifest.name, m.manifest.version), m.bytes]),
  ];
  const header = (name: string, size: number) => memberHeader(name, size, mtime, hooks.forcePax);
  const archiveBytes =
    small.reduce((s, [name, data]) => s + header(name, data.length).length + padded(data.length), 0) +
    index.blobs.reduce((s, b) => s + header(blobMember(b.sha256), b.size).length + padded(b.size), 0) +
    END_OF_ARCHIVE.length;

  const tmp = `${out}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fh = await open(tmp, 'wx', 0o644);
  let done = 0;
  const progress = (member: string) => opts.onProgress?.({ bytesDone: done, bytesTotal: archiveBytes, member });
  const put = async (buf: Buffer, member: string) => {
    await writeFull(fh, buf);
    done += buf.length;
    progress(member);
  };
  const chunkSize = hooks.chunkSize ?? CHUNK;
  const bufs = [Buffer.allocUnsafe(chunkSize), Buffer.allocUnsafe(chunkSize)] as const;
  try {
    for (const [name, data] of small) {
      await put(header(name, data.length), name);
      await put(data, name);
      await put(Buffer.alloc(padded(data.length) - data.length), name);
    }
    for (const b of index.blobs) {
      const name = blobMember(b.sha256);
      await put(header(name, b.size), name);
      const src = await open(blobPath(layout, b.sha256), 'r');
      const hash = createHash('sha256');
      try {
        // Two buffers: the next chunk is read while the previous one is written.
        let pos = 0;
        let which = 0;
        let writing: Promise<void> = Promise.resolve();
        while (pos < b.size) {
          const buf = bufs[which]!;
          which ^= 1;
          const want = Math.min(b.size - pos, buf.length);
          const n = await readFull(src, buf, want, pos);
          if (n < want) throw blobProblem(b.sha256, `shrank while it was being exported (${pos + n} bytes, expected ${b.size})`);
          pos += n;
          hash.update(buf.subarray(0, n));
          await writing;
          writing = put(buf.subarray(0, n), name);
          // Awaited on the next round; until then a failure must not count as unhandled.
          writing.catch(() => {});
        }
        await writing;
      } finally {
        await src.close();
      }
      const actual = hash.digest('hex');
      if (actual !== b.sha256) throw blobProblem(b.sha256, `is damaged: its content hashes to ${actual}`);
      await put(Buffer.alloc(padded(b.size) - b.size), name);
    }
    await put(END_OF_ARCHIVE, '');
    await fh.sync();
    await fh.close();
    await rename(tmp, out);
    await fsyncDir(dirname(out));
  } catch (e) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw e;
  }
  const seconds = elapsed(start);
  return {
    path: out,
    models: models.map(({ manifest: m }) => ({ ref: modelRefString(m), digest: m.digest, bytes: modelSize(m) })),
    blobs: index.blobs.length,
    contentBytes: index.blobs.reduce((s, b) => s + b.size, 0),
    archiveBytes,
    seconds,
    bytesPerSecond: seconds > 0 ? archiveBytes / seconds : 0,
  };
}

// ---------------------------------------------------------------------------------------------- import

async function openBundle(path: string, label: string): Promise<FileHandle> {
  try {
    const st = statSync(path);
    if (st.isDirectory()) throw new UserError(`${label} is a folder, not a bundle file`, 'bundles are single files made by "distillery vault export"');
    return await open(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new UserError(`bundle not found: ${label}`);
    throw e;
  }
}

/** Checks members against the sequence the index dictates: right name, in order, each once. */
class MemberSequence {
  private i = 0;
  private readonly seen = new Set<string>();
  private expected: string[] = [INDEX_MEMBER];

  constructor(private readonly reader: TarReader) {}

  setIndex(index: BundleIndex): void {
    this.expected = expectedMembers(index);
  }

  /** The next member, which must be the one expected next. */
  async next(): Promise<TarEntry> {
    const want = this.expected[this.i]!;
    const e = await this.reader.next();
    if (e === null && this.i === 0) throw this.reader.fail('not a Distillery bundle (an empty tar archive)');
    if (e === null) {
      const missing = this.expected.slice(this.i);
      throw this.reader.fail(
        `bundle is incomplete: the archive ends without ${missing.length === 1 ? 'member' : `${missing.length} members:`} ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', …' : ''}`,
      );
    }
    if (e.name !== want) {
      if (this.i === 0) throw this.reader.fail(`not a Distillery bundle (a tar archive whose first member is ${JSON.stringify(e.name)}, not ${INDEX_MEMBER})`);
      if (this.seen.has(e.name)) throw this.reader.fail(`bundle is damaged: duplicate member ${JSON.stringify(e.name)} at byte ${e.headerOffset}`);
      if (this.expected.includes(e.name)) throw this.reader.fail(`bundle is damaged: member ${want} is missing (found ${e.name} in its place, at byte ${e.headerOffset})`);
      throw this.reader.fail(`bundle is damaged: unexpected member ${JSON.stringify(e.name)} at byte ${e.headerOffset} (expected ${want})`);
    }
    this.seen.add(e.name);
    this.i++;
    return e;
  }

  /** The end-of-archive marker must follow the last expected member. */
  async end(): Promise<void> {
    const e = await this.reader.next();
    if (e !== null) {
      const what = this.seen.has(e.name) ? 'duplicate' : 'unexpected';
      throw this.reader.fail(`bundle is damaged: ${what} member ${JSON.stringify(e.name)} at byte ${e.headerOffset} (after the last blob)`);
    }
  }
}

/** Reads and checks distillery-bundle.json, the first member. */
async function readIndex(reader: TarReader, seq: MemberSequence, label: string): Promise<{ index: BundleIndex; bytes: Buffer }> {
  const e = await seq.next();
  const bytes = await reader.readAll(e, MAX_INDEX_BYTES);
  const index = parseBundleIndex(bytes.toString('utf8'), label);
  seq.setIndex(index);
  return { index, bytes };
}

/** The index of a bundle (only its first member is read), for listing what a bundle holds. */
export async function readBundleIndex(path: string): Promise<BundleIndex> {
  const fh = await openBundle(resolve(path), path);
  try {
    const reader = new TarReader(fh, path, BLOCK);
    return (await readIndex(reader, new MemberSequence(reader), path)).index;
  } finally {
    await fh.close();
  }
}

/**
 * Hands the blobs of a bundle that `wanted` names to `take`, one at a time as the archive is streamed (for
 * `vault repair`). The index, README, SHA256SUMS and member order are checked as an import checks them;
 * manifests and other blobs are skipped without being read, and reading stops once every wanted blob the
 * bundle holds was handed over. `take` must consume the whole feed and check the content (receiveBlob
 * does); a content mismatch it reports after the feed ended leaves the reader at the next member.
 */
export async function readBundleBlobs(
  bundlePath: string,
  wanted: ReadonlySet<string>,
  take: (blob: BundleBlobEntry, feed: BlobFeed) => Promise<void>,
  opts: { onProgress?: (p: BundleProgress) => void; chunkSize?: number } = {},
): Promise<BundleIndex> {
  const label = bundlePath;
  const fh = await openBundle(resolve(bundlePath), label);
  try {
    const fileSize = (await fh.stat()).size;
    const reader = new TarReader(fh, label, opts.chunkSize ?? CHUNK);
    const seq = new MemberSequence(reader);
    const progress = (member: string) => opts.onProgress?.({ bytesDone: reader.pos, bytesTotal: fileSize, member });
    const { index, bytes: indexBytes } = await readIndex(reader, seq, label);
    const readme = await reader.readAll(await seq.next(), MAX_README_BYTES);
    const sumsText = (await reader.readAll(await seq.next(), MAX_SUMS_BYTES)).toString('utf8');
    checkSums(reader, index, parseSums(sumsText), sha256Hex(indexBytes), sha256Hex(readme));
    progress(SUMS_MEMBER);
    const left = new Set(index.blobs.filter((b) => wanted.has(b.sha256)).map((b) => b.sha256));
    if (left.size === 0) return index;
    for (let i = 0; i < index.models.length; i++) {
      const e = await seq.next();
      await reader.skip(e, fileSize);
    }
    for (const b of index.blobs) {
      const e = await seq.next();
      if (e.size !== b.size) throw reader.fail(`bundle is damaged: ${e.name} is ${e.size} bytes, but the index says ${b.size}`);
      if (left.has(b.sha256)) {
        await take(b, (consume) => reader.stream(e, (chunk) => {
          const r = consume(chunk);
          progress(e.name);
          return r;
        }));
        left.delete(b.sha256);
        if (left.size === 0) break;
      } else {
        await reader.skip(e, fileSize);
      }
      progress(e.name);
    }
    return index;
  } finally {
    await fh.close();
  }
}

/**
 * Imports every model of a bundle. Nothing becomes visible until the whole archive has been read and every
 * blob verified and fsynced; then the manifests are published. On any failure no manifest is published and
 * the blobs this import added are removed again. An import that was killed can simply be run again: blobs
 * already in the store are skipped (the stream is read past them).
 */
export async function importBundle(
  layout: VaultLayout,
  bundlePath: string,
  opts: ImportBundleOptions = {},
  hooks: ImportBundleHooks = {},
): Promise<ImportBundleResult> {
  const start = process.hrtime.bigint();
  const label = bundlePath;
  const abs = resolve(bundlePath);
  const as = opts.as === undefined ? undefined : validateModelName(opts.as);
  const fh = await openBundle(abs, label);
  try {
    const fileSize = (await fh.stat()).size;
    const reader = new TarReader(fh, label, hooks.chunkSize ?? CHUNK);
    const seq = new MemberSequence(reader);
    const progress = (member: string) => opts.onProgress?.({ bytesDone: reader.pos, bytesTotal: fileSize, member });

    const { index, bytes: indexBytes } = await readIndex(reader, seq, label);
    const names = [...new Set(index.models.map((m) => m.name))];
    if (as !== undefined && names.length > 1) {
      throw new UserError(`--as needs a bundle of one model name; ${label} holds ${names.join(', ')}`);
    }
    const readme = await reader.readAll(await seq.next(), MAX_README_BYTES);
    const sumsText = (await reader.readAll(await seq.next(), MAX_SUMS_BYTES)).toString('utf8');
    checkSums(reader, index, parseSums(sumsText), sha256Hex(indexBytes), sha256Hex(readme));
    progress(SUMS_MEMBER);

    // Truncation shows in the file's size already: refuse before writing anything. (A file that is too short
    // but ends in an end-of-archive marker is a complete archive that lacks members: streaming names them.)
    if (!hooks.skipSizeCheck) {
      const lay = minimalLayout(index, reader.pos);
      if (fileSize < lay.total && !(await endsWithMarker(fh, fileSize))) {
        const inside = lay.members.find((m) => fileSize < m.end);
        throw reader.truncated(inside ? `inside ${inside.name}` : 'inside the end-of-archive marker', fileSize);
      }
    }

    const plan = planReceived(layout, index.models, as);
    if (plan.every((p) => p.action === 'present')) {
      const seconds = elapsed(start);
      return {
        bundle: abs, models: plan.map((p) => receivedResult(p, p.presentAs!, 'present')), blobsStored: 0, blobsReused: 0,
        bytesStored: 0, archiveBytes: reader.pos, seconds, bytesPerSecond: seconds > 0 ? reader.pos / seconds : 0,
      };
    }

    sweepStaleTemps(layout);
    sweepDeadTemps(layout);
    livePending(layout, true); // drops markers of imports that were killed (they protect nothing)
    const pending = beginPending(layout, `import-bundle ${abs}`);
    const created = new Set<string>();
    try {
      // Manifests: exact bytes as the index records them, consistent with themselves and with the blob list.
      const manifests: Array<{ manifest: Manifest; bytes: Buffer }> = [];
      const usedBy = new Map<string, string[]>();
      const blobSizes = new Map(index.blobs.map((b) => [b.sha256, b.size]));
      for (const entry of index.models) {
        const e = await seq.next();
        if (e.size !== entry.manifest_size) throw reader.fail(`bundle is damaged: ${e.name} is ${e.size} bytes, but the index says ${entry.manifest_size}`);
        const bytes = await reader.readAll(e, MAX_MANIFEST_BYTES);
        const actual = sha256Hex(bytes);
        if (actual !== entry.manifest_sha256) {
          throw reader.fail(`bundle is damaged: manifest ${e.name} does not match the index (sha256 ${actual}, the index says ${entry.manifest_sha256}): it was changed or corrupted`);
        }
        const m = parseManifest(bytes.toString('utf8'), `${label}: ${e.name}`);
        const ref = `${entry.name}:${entry.version}`;
        if (m.name !== entry.name || m.version !== entry.version || m.digest !== entry.digest) {
          throw reader.fail(`bundle is damaged: manifest ${e.name} says ${modelRefString(m)} with digest ${m.digest}, but the index says ${ref} with ${entry.digest}`);
        }
        if (modelDigest(m.files) !== m.digest) throw reader.fail(`bundle is damaged: manifest ${e.name}: its digest does not match its file list (manifest edited or corrupted)`);
        for (const f of m.files) {
          const size = blobSizes.get(f.sha256);
          if (size === undefined) throw reader.fail(`bundle is damaged: ${ref} file ${f.path} (blob ${f.sha256}) is not in the bundle's blob list`);
          if (size !== f.size) throw reader.fail(`bundle is damaged: ${ref} file ${f.path} is ${f.size} bytes, but the index lists blob ${f.sha256} as ${size}`);
          usedBy.set(f.sha256, [...(usedBy.get(f.sha256) ?? []), `${ref} ${f.path}`]);
        }
        manifests.push({ manifest: m, bytes });
        progress(e.name);
      }
      for (const b of index.blobs) {
        if (!usedBy.has(b.sha256)) throw reader.fail(`bundle is damaged: the index lists blob ${b.sha256}, which no model uses`);
      }

      await mkdir(layout.blobTmpDir, { recursive: true });
      await mkdir(layout.blobsDir, { recursive: true });
      let blobsStored = 0;
      let blobsReused = 0;
      let bytesStored = 0;
      for (const [i, b] of index.blobs.entries()) {
        const e = await seq.next();
        if (e.size !== b.size) throw reader.fail(`bundle is damaged: ${e.name} is ${e.size} bytes, but the index says ${b.size}`);
        if (storedSize(layout, b.sha256) === b.size) {
          // Content-addressed: a stored blob of the right size is this content (verify checks the bytes).
          await reader.skip(e, fileSize);
          blobsReused++;
        } else {
          if (await storeBlob(layout, reader, e, b.sha256, usedBy.get(b.sha256)!, hooks, () => progress(e.name))) created.add(b.sha256);
          blobsStored++;
          bytesStored += b.size;
        }
        progress(e.name);
        await hooks.afterBlob?.(b.sha256, i);
      }
      await seq.end();
      await reader.checkTrailer();
      progress('');
      await syncBlobDir(layout); // blobs durable before any manifest can point at them

      for (const b of index.blobs) {
        if (storedSize(layout, b.sha256) !== b.size) {
          throw new UserError(`blob ${b.sha256} disappeared from the store during the import (a concurrent "vault gc" or failed import removed it)`, 'run the import again: it resumes where it stopped');
        }
      }

      const results: ImportedBundleModel[] = [];
      for (const [i, p] of plan.entries()) {
        results.push(publishReceived(layout, p, manifests[i]!, (m) => ({ kind: 'bundle', path: abs, original: `${m.name}:${m.version}`, original_source: m.source })));
      }
      const seconds = elapsed(start);
      return {
        bundle: abs, models: results, blobsStored, blobsReused, bytesStored, archiveBytes: reader.pos, seconds,
        bytesPerSecond: seconds > 0 ? reader.pos / seconds : 0,
      };
    } catch (e) {
      removeUnreferenced(layout, created);
      throw e;
    } finally {
      pending.end();
    }
  } finally {
    await fh.close();
  }
}

async function endsWithMarker(fh: FileHandle, fileSize: number): Promise<boolean> {
  if (fileSize < 2 * BLOCK || fileSize % BLOCK !== 0) return false;
  const tail = Buffer.alloc(2 * BLOCK);
  return (await readFull(fh, tail, tail.length, fileSize - tail.length)) === tail.length && tail.every((x) => x === 0);
}

/** SHA256SUMS must list exactly the members, in order, with the hashes the index (or the member) gives. */
function checkSums(reader: TarReader, index: BundleIndex, sums: Array<[string, string]> | null, indexSha: string, readmeSha: string): void {
  if (sums === null) throw reader.fail(`bundle is damaged: ${SUMS_MEMBER} is not in sha256sum format`);
  const expected: Array<[string, string]> = [
    [INDEX_MEMBER, indexSha],
    [README_MEMBER, readmeSha],
    ...index.models.map((m): [string, string] => [m.manifest, m.manifest_sha256]),
    ...index.blobs.map((b): [string, string] => [blobMember(b.sha256), b.sha256]),
  ];
  for (const [i, [member, sha]] of expected.entries()) {
    const line = sums[i];
    if (!line || line[0] !== member) throw reader.fail(`bundle is damaged: ${SUMS_MEMBER} does not list ${member} where expected (line ${i + 1})`);
    if (line[1] !== sha) {
      const what = member === INDEX_MEMBER ? 'the index (distillery-bundle.json) was changed or corrupted' : member === README_MEMBER ? 'README.txt was changed or corrupted' : `${SUMS_MEMBER} and the index disagree`;
      throw reader.fail(`bundle is damaged: ${member} does not match its line in ${SUMS_MEMBER}: ${what}`);
    }
  }
  if (sums.length !== expected.length) throw reader.fail(`bundle is damaged: ${SUMS_MEMBER} lists ${sums.length} members, the bundle has ${expected.length}`);
}

/**
 * Streams one blob member into blobs/tmp while hashing, checks it, fsyncs and renames it into the store.
 * Returns whether the blob was new to the store.
 */
async function storeBlob(
  layout: VaultLayout,
  reader: TarReader,
  e: TarEntry,
  sha256: string,
  usedBy: string[],
  hooks: ImportBundleHooks,
  onChunk: () => void,
): Promise<boolean> {
  const r = await receiveBlob(layout, sha256, e.size, (consume) => reader.stream(e, consume), {
    onChunk: async (written) => {
      onChunk();
      await hooks.afterChunk?.(sha256, written);
    },
    mismatch: ({ actualSha256 }) =>
      reader.fail(`bundle is damaged: blob ${sha256} has sha256 ${actualSha256}: its content was changed or corrupted (it holds ${usedBy.join(', ')})`),
  });
  return r.created;
}
