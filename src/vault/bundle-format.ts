import type { FileHandle } from 'node:fs/promises';
import { showValue, UserError } from '../core/errors.js';
import { isSha256Hex } from '../core/hash.js';
import { isValidModelName } from './names.js';

/**
 * The bundle's container: POSIX tar (ustar), written and read here so that a bundle stays inspectable with
 * plain `tar tf` and needs nothing beyond Node. Only what bundles use is supported: regular files, names of
 * at most 100 bytes, and a pax extended header ('x') carrying `size` for members of 8 GiB or more. The reader
 * is deliberately strict (header checksums, magic, member types, end-of-archive marker) because everything it
 * accepts ends up in the vault. Docs: docs/bundles.md.
 */

export const BLOCK = 512;
export const INDEX_MEMBER = 'distillery-bundle.json';
export const README_MEMBER = 'README.txt';
export const SUMS_MEMBER = 'SHA256SUMS';
export const BUNDLE_FORMAT = 'distillery-bundle';
export const BUNDLE_FORMAT_VERSION = 1;

/** Largest size the 11 octal digits of a ustar size field can hold (8 GiB - 1). */
export const USTAR_MAX_SIZE = 0o77777777777;

/** Limits for the members that are read into memory (everything but blobs). */
export const MAX_INDEX_BYTES = 64 << 20;
export const MAX_README_BYTES = 1 << 20;
export const MAX_SUMS_BYTES = 64 << 20;
export const MAX_MANIFEST_BYTES = 64 << 20;

export const blobMember = (sha256: string): string => `blobs/sha256/${sha256}`;
export const manifestMember = (name: string, version: number): string => `models/${name}/${version}.json`;

/** Rounds up to whole 512-byte blocks. */
export function padded(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}

// ---------------------------------------------------------------------------------------------- writing

function putString(buf: Buffer, offset: number, length: number, s: string): void {
  const b = Buffer.from(s, 'utf8');
  if (b.length > length) throw new Error(`tar field too long: ${s}`);
  b.copy(buf, offset);
}

/** `digits` octal digits, zero-padded, then a NUL (the ustar convention for numeric fields). */
function putOctal(buf: Buffer, offset: number, length: number, value: number): void {
  const s = value.toString(8).padStart(length - 1, '0');
  if (s.length > length - 1) throw new Error(`tar numeric field overflow: ${value}`);
  putString(buf, offset, length, s + '\0');
}

function ustarHeader(name: string, size: number, mtime: number, typeflag: string): Buffer {
  const h = Buffer.alloc(BLOCK);
  putString(h, 0, 100, name);
  putOctal(h, 100, 8, 0o644);
  putOctal(h, 108, 8, 0); // uid
  putOctal(h, 116, 8, 0); // gid
  putOctal(h, 124, 12, size);
  putOctal(h, 136, 12, mtime);
  h.write(typeflag, 156, 'latin1');
  h.write('ustar\0', 257, 'latin1');
  h.write('00', 263, 'latin1');
  // uname, gname, devmajor, devminor, prefix: empty. Checksum: computed with its own field as spaces.
  h.fill(0x20, 148, 156);
  putString(h, 148, 8, checksumOf(h).toString(8).padStart(6, '0') + '\0 ');
  return h;
}

/** One pax record: "<len> <key>=<value>\n", where <len> counts the whole record including itself. */
export function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLen = Buffer.byteLength(body, 'utf8');
  let len = bodyLen + 1;
  while (String(len).length + bodyLen !== len) len = String(len).length + bodyLen;
  return `${len}${body}`;
}

/**
 * The header block(s) of one regular-file member. Members of 8 GiB or more (or any member, with `forcePax`,
 * which tests use to exercise the pax path on small files) get a pax extended header carrying the size,
 * and their ustar size field is 0.
 */
export function memberHeader(name: string, size: number, mtime: number, forcePax = false): Buffer {
  if (Buffer.byteLength(name, 'utf8') > 100) throw new Error(`member name longer than 100 bytes: ${name}`);
  if (size <= USTAR_MAX_SIZE && !forcePax) return ustarHeader(name, size, mtime, '0');
  const pax = Buffer.from(paxRecord('size', String(size)), 'utf8');
  const paxName = `PaxHeaders/${name}`.slice(0, 100);
  return Buffer.concat([
    ustarHeader(paxName, pax.length, mtime, 'x'),
    pax,
    Buffer.alloc(padded(pax.length) - pax.length),
    ustarHeader(name, size <= USTAR_MAX_SIZE ? size : 0, mtime, '0'),
  ]);
}

/** Two zero blocks end a tar archive. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);

// ---------------------------------------------------------------------------------------------- reading

function checksumOf(block: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  return sum;
}

function getString(block: Buffer, offset: number, length: number): string {
  const field = block.subarray(offset, offset + length);
  const end = field.indexOf(0);
  return field.subarray(0, end === -1 ? length : end).toString('utf8');
}

/** A numeric field: octal digits (NUL/space terminated, optionally space-led), or GNU base-256. */
function getNumber(block: Buffer, offset: number, length: number): number | null {
  const field = block.subarray(offset, offset + length);
  if (field[0]! & 0x80) {
    if (field[0] !== 0x80) return null; // negative or too large for us
    let v = 0;
    for (let i = 1; i < length; i++) v = v * 256 + field[i]!;
    return Number.isSafeInteger(v) ? v : null;
  }
  const s = field.toString('latin1').replace(/\0.*$/s, '').trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) return null;
  return parseInt(s, 8);
}

export interface TarEntry {
  name: string;
  size: number;
  /** Offset of the member's first header block (its pax header, if any). */
  headerOffset: number;
  /** Offset of the member's data. */
  dataOffset: number;
}

/** Where the reader is, for error messages: the member being read (if any) and what came last. */
export interface ReaderContext {
  /** The bundle's path as the user named it. */
  label: string;
}

export class BundleError extends UserError {}

/**
 * Reads a tar file front to back with positional reads on one file handle. Headers are read a block at a
 * time; member data is handed out in chunks of `chunkSize`, reading the next chunk while the caller
 * consumes the current one (two buffers), so memory stays flat whatever the member's size.
 */
export class TarReader {
  pos = 0;
  private last: string | null = null;
  private bufs: [Buffer, Buffer];

  constructor(
    private readonly fh: FileHandle,
    private readonly label: string,
    chunkSize = 4 << 20,
  ) {
    this.bufs = [Buffer.allocUnsafe(chunkSize), Buffer.allocUnsafe(chunkSize)];
  }

  /** What was read last, for "ended after …" messages. */
  get lastMember(): string | null {
    return this.last;
  }

  fail(message: string, hint?: string): BundleError {
    return new BundleError(`${this.label}: ${message}`, hint);
  }

  truncated(where: string, at: number): BundleError {
    return this.fail(`bundle is truncated: ended ${where} at byte ${at}; the file is incomplete — copy it again`);
  }

  private async readAt(buf: Buffer, length: number, position: number): Promise<number> {
    let got = 0;
    while (got < length) {
      const { bytesRead } = await this.fh.read(buf, got, length - got, position + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return got;
  }

  private whereHeader(): string {
    return this.last === null ? 'inside the first header' : `inside the header after ${this.last}`;
  }

  /** The next header block; a file ending before it is truncated (or, at the very start, not a bundle). */
  private async block(): Promise<Buffer> {
    const b = Buffer.alloc(BLOCK);
    const n = await this.readAt(b, BLOCK, this.pos);
    if (n < BLOCK && this.last === null && this.pos === 0) {
      throw this.fail(n === 0 ? 'not a Distillery bundle (the file is empty)' : `not a Distillery bundle (${n} bytes: too short for a tar archive)`);
    }
    if (n < BLOCK) throw this.truncated(this.whereHeader(), this.pos + n);
    this.pos += BLOCK;
    return b;
  }

  private parseHeader(b: Buffer, at: number): { name: string; size: number; type: string } {
    const stored = getNumber(b, 148, 8);
    const computed = checksumOf(b);
    const isTar = b.toString('latin1', 257, 263) === 'ustar\0' && b.toString('latin1', 263, 265) === '00';
    if (!isTar) {
      if (this.last === null) throw this.fail('not a Distillery bundle (not a POSIX tar archive)', 'bundles are made by "distillery vault export"');
      throw this.fail(`bundle is damaged: no valid tar header at byte ${at} (after ${this.last})`);
    }
    // The checksum field is the one part of a header its checksum can't cover: after the digits only the
    // customary NUL/space terminators may follow, so a damaged field can't hide a changed byte.
    const field = b.subarray(148, 156).toString('latin1');
    if (!/^ *[0-7]{1,7}[\0 ][\0 ]*$/.test(field)) {
      throw this.fail(`bundle is damaged: the tar header at byte ${at} (after ${this.last ?? 'the start'}) has a bad checksum (unreadable checksum field)`);
    }
    if (stored !== computed) {
      throw this.fail(`bundle is damaged: the tar header at byte ${at} (after ${this.last ?? 'the start'}) has a bad checksum (stored ${stored ?? 'unreadable'}, computed ${computed})`);
    }
    const prefix = getString(b, 345, 155);
    const base = getString(b, 0, 100);
    const size = getNumber(b, 124, 12);
    if (size === null) throw this.fail(`bundle is damaged: the tar header at byte ${at} has an unreadable size`);
    const type = String.fromCharCode(b[156]!);
    return { name: prefix ? `${prefix}/${base}` : base, size, type };
  }

  private parsePax(data: Buffer, at: number): Map<string, string> {
    const out = new Map<string, string>();
    let i = 0;
    while (i < data.length) {
      const sp = data.indexOf(0x20, i);
      const len = sp === -1 ? NaN : Number(data.toString('latin1', i, sp));
      if (!Number.isSafeInteger(len) || len <= 0 || i + len > data.length || data[i + len - 1] !== 0x0a) {
        throw this.fail(`bundle is damaged: unreadable pax header at byte ${at}`);
      }
      const rec = data.toString('utf8', sp + 1, i + len - 1);
      const eq = rec.indexOf('=');
      if (eq <= 0) throw this.fail(`bundle is damaged: unreadable pax header at byte ${at}`);
      out.set(rec.slice(0, eq), rec.slice(eq + 1));
      i += len;
    }
    return out;
  }

  /**
   * The next member, or null at the end-of-archive marker (two zero blocks). Anything but regular files and
   * their pax headers is refused. A clean end of file without the marker is a truncation.
   */
  async next(): Promise<TarEntry | null> {
    const headerOffset = this.pos;
    let pax: Map<string, string> | null = null;
    for (;;) {
      const at = this.pos;
      const b = await this.block();
      if (b.every((x) => x === 0)) {
        if (pax) throw this.fail(`bundle is damaged: a pax header at byte ${headerOffset} is followed by the end of the archive`);
        const second = Buffer.alloc(BLOCK);
        const n = await this.readAt(second, BLOCK, this.pos);
        if (n < BLOCK) throw this.truncated(`inside the end-of-archive marker (after ${this.last ?? 'nothing'})`, this.pos + n);
        if (!second.every((x) => x === 0)) throw this.fail(`bundle is damaged: a lone zero block at byte ${at} (after ${this.last ?? 'the start'})`);
        this.pos += BLOCK;
        return null;
      }
      const h = this.parseHeader(b, at);
      if (h.type === 'x') {
        if (pax) throw this.fail(`bundle is damaged: two pax headers in a row at byte ${at}`);
        if (h.size > 1 << 20) throw this.fail(`bundle is damaged: oversized pax header at byte ${at}`);
        const data = Buffer.alloc(padded(h.size));
        const n = await this.readAt(data, data.length, this.pos);
        if (n < data.length) throw this.truncated(`inside a pax header (after ${this.last ?? 'the start'})`, this.pos + n);
        if (!data.subarray(h.size).every((x) => x === 0)) throw this.fail(`bundle is damaged: non-zero padding after the pax header at byte ${at}`);
        this.pos += data.length;
        pax = this.parsePax(data.subarray(0, h.size), at);
        continue;
      }
      if (h.type !== '0' && h.type !== '\0') {
        const kinds: Record<string, string> = { '1': 'hard link', '2': 'symbolic link', '5': 'directory', g: 'pax global header', L: 'GNU long name', K: 'GNU long link' };
        throw this.fail(`bundle is damaged: unexpected member ${JSON.stringify(h.name)} of type ${kinds[h.type] ?? JSON.stringify(h.type)} at byte ${at} (bundles hold regular files only)`);
      }
      let { name, size } = h;
      if (pax) {
        const ps = pax.get('size');
        if (ps !== undefined) {
          if (!/^[0-9]+$/.test(ps) || !Number.isSafeInteger(Number(ps))) throw this.fail(`bundle is damaged: bad pax size ${JSON.stringify(ps)} at byte ${headerOffset}`);
          size = Number(ps);
        }
        const pp = pax.get('path');
        if (pp !== undefined) name = pp;
        for (const k of pax.keys()) {
          if (k.startsWith('GNU.sparse')) throw this.fail(`bundle is damaged: sparse member ${JSON.stringify(name)} (not supported)`);
        }
      }
      this.last = name;
      return { name, size, headerOffset, dataOffset: this.pos };
    }
  }

  /** Reads a small member's data whole (at most `max` bytes) and skips its padding. */
  async readAll(e: TarEntry, max: number): Promise<Buffer> {
    if (e.size > max) throw this.fail(`bundle is damaged: member ${e.name} is ${e.size} bytes (at most ${max} expected)`);
    const data = Buffer.alloc(e.size);
    const n = await this.readAt(data, e.size, this.pos);
    if (n < e.size) throw this.truncated(`inside ${e.name}`, this.pos + n);
    this.pos += e.size;
    await this.skipPadding(e);
    return data;
  }

  /**
   * Hands the member's data to `consume` chunk by chunk (each chunk is valid only until `consume`'s promise
   * settles); the next chunk is read while the current one is consumed. Skips the padding at the end.
   */
  async stream(e: TarEntry, consume: (chunk: Buffer) => Promise<void> | void): Promise<void> {
    let left = e.size;
    let which = 0;
    const readChunk = async (): Promise<Buffer> => {
      const buf = this.bufs[which]!;
      which ^= 1;
      const want = Math.min(left, buf.length);
      const n = await this.readAt(buf, want, this.pos);
      if (n < want) throw this.truncated(`inside ${e.name}`, this.pos + n);
      this.pos += n;
      left -= n;
      return buf.subarray(0, n);
    };
    let chunk = left > 0 ? await readChunk() : null;
    while (chunk) {
      const done = consume(chunk);
      const nextChunk = left > 0 ? readChunk() : Promise.resolve(null);
      // Both must settle before the buffers are reused; a failure in either ends the member.
      const [c, n] = await Promise.allSettled([done, nextChunk]);
      if (c.status === 'rejected') throw c.reason;
      if (n.status === 'rejected') throw n.reason;
      chunk = n.value;
    }
    await this.skipPadding(e);
  }

  /** Skips a member's data without reading it (the size of the file is still checked). */
  async skip(e: TarEntry, fileSize: number): Promise<void> {
    const end = this.pos + e.size;
    if (end > fileSize) throw this.truncated(`inside ${e.name}`, fileSize);
    this.pos = end;
    await this.skipPadding(e);
  }

  private async skipPadding(e: TarEntry): Promise<void> {
    const pad = padded(e.size) - e.size;
    if (pad === 0) return;
    const b = Buffer.alloc(pad);
    const n = await this.readAt(b, pad, this.pos);
    if (n < pad) throw this.truncated(`inside ${e.name} (in its padding)`, this.pos + n);
    if (!b.every((x) => x === 0)) throw this.fail(`bundle is damaged: non-zero padding after ${e.name} (at byte ${this.pos})`);
    this.pos += pad;
  }

  /** After the end-of-archive marker only zero padding may follow (tar pads to whole records). */
  async checkTrailer(): Promise<void> {
    const buf = this.bufs[0];
    for (;;) {
      const n = await this.readAt(buf, buf.length, this.pos);
      if (n === 0) return;
      const nz = buf.subarray(0, n).findIndex((x) => x !== 0);
      if (nz !== -1) throw this.fail(`bundle is damaged: unexpected data after the end of the archive (at byte ${this.pos + nz})`);
      this.pos += n;
    }
  }
}

// ---------------------------------------------------------------------------------------------- the index

export interface BundleModelEntry {
  name: string;
  version: number;
  digest: string;
  /** The member holding the manifest: models/<name>/<version>.json. */
  manifest: string;
  manifest_sha256: string;
  manifest_size: number;
  /** Number of files and their total size. */
  files: number;
  bytes: number;
}

export interface BundleBlobEntry {
  sha256: string;
  size: number;
}

/** distillery-bundle.json, the first member. */
export interface BundleIndex {
  format: typeof BUNDLE_FORMAT;
  format_version: typeof BUNDLE_FORMAT_VERSION;
  created: string;
  distillery_version: string;
  models: BundleModelEntry[];
  /** In archive order. */
  blobs: BundleBlobEntry[];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const isSize = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** Parses and checks the index; every member name the rest of the bundle may use is derived from it. */
export function parseBundleIndex(text: string, label: string): BundleIndex {
  const bad = (why: string) => new BundleError(`${label}: bundle is damaged: ${INDEX_MEMBER} ${why}`);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw bad(`is not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(v)) throw bad('is not a JSON object');
  if (v.format !== BUNDLE_FORMAT) throw new BundleError(`${label}: not a Distillery bundle (format ${showValue(v.format)})`);
  if (v.format_version !== BUNDLE_FORMAT_VERSION) {
    throw new BundleError(
      `${label}: bundle format version ${showValue(v.format_version)} is not supported (this Distillery reads version ${BUNDLE_FORMAT_VERSION})`,
      typeof v.format_version === 'number' && v.format_version > BUNDLE_FORMAT_VERSION ? 'the bundle was made by a newer Distillery: upgrade to import it' : undefined,
    );
  }
  if (typeof v.created !== 'string') throw bad('has no "created" time');
  if (typeof v.distillery_version !== 'string') throw bad('has no "distillery_version"');
  if (!Array.isArray(v.models) || v.models.length === 0) throw bad('lists no models');
  if (!Array.isArray(v.blobs) || v.blobs.length === 0) throw bad('lists no blobs');
  const seenModels = new Set<string>();
  for (const m of v.models as unknown[]) {
    if (
      !isObject(m) || typeof m.name !== 'string' || !isValidModelName(m.name) || !Number.isSafeInteger(m.version) ||
      (m.version as number) < 1 || !isSha256Hex(m.digest) || !isSha256Hex(m.manifest_sha256) || !isSize(m.manifest_size) ||
      !isSize(m.files) || !isSize(m.bytes)
    ) {
      throw bad(`has a bad model entry ${showValue(m)}`);
    }
    if (m.manifest !== manifestMember(m.name, m.version as number)) throw bad(`names manifest ${showValue(m.manifest)} for ${m.name}:${m.version} (expected ${manifestMember(m.name, m.version as number)})`);
    const key = `${m.name}:${m.version}`;
    if (seenModels.has(key)) throw bad(`lists ${key} twice`);
    seenModels.add(key);
  }
  const seenBlobs = new Set<string>();
  for (const b of v.blobs as unknown[]) {
    if (!isObject(b) || !isSha256Hex(b.sha256) || !isSize(b.size)) throw bad(`has a bad blob entry ${showValue(b)}`);
    if (seenBlobs.has(b.sha256)) throw bad(`lists blob ${b.sha256} twice`);
    seenBlobs.add(b.sha256);
  }
  return v as unknown as BundleIndex;
}

export function serializeBundleIndex(index: BundleIndex): string {
  return JSON.stringify(index, null, 2) + '\n';
}

/** The member names of a bundle, in order, as its index dictates. */
export function expectedMembers(index: BundleIndex): string[] {
  return [INDEX_MEMBER, README_MEMBER, SUMS_MEMBER, ...index.models.map((m) => m.manifest), ...index.blobs.map((b) => blobMember(b.sha256))];
}

/**
 * The smallest file that can hold the manifests and blobs that follow SHA256SUMS (ending at `afterSums`)
 * plus the end-of-archive marker: a shorter file is certainly truncated. Pax headers only add to this, so
 * it is a lower bound for any writer. Also returns where each member ends at the earliest, for "ended
 * inside …" messages (exact for bundles without pax headers, that is without members of 8 GiB or more).
 */
export function minimalLayout(index: BundleIndex, afterSums: number): { total: number; members: Array<{ name: string; end: number }> } {
  const members: Array<{ name: string; end: number }> = [];
  let pos = afterSums;
  for (const m of index.models) members.push({ name: m.manifest, end: (pos += BLOCK + padded(m.manifest_size)) });
  for (const b of index.blobs) members.push({ name: blobMember(b.sha256), end: (pos += BLOCK + padded(b.size)) });
  return { total: pos + 2 * BLOCK, members };
}

/** SHA256SUMS lines: "<hex>  <member>\n", the format `sha256sum -c` reads. */
export function sumsLine(sha256: string, member: string): string {
  return `${sha256}  ${member}\n`;
}

/** Parses SHA256SUMS into [member, sha256] pairs in file order; null if a line is malformed. */
export function parseSums(text: string): Array<[string, string]> | null {
  if (!text.endsWith('\n')) return null;
  const out: Array<[string, string]> = [];
  for (const line of text.slice(0, -1).split('\n')) {
    const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (!m) return null;
    out.push([m[2]!, m[1]!]);
  }
  return out;
}
