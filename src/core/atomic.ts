import { closeSync, fsyncSync, linkSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { open, rename, unlink, link } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';

/**
 * Crash-safe small-file writes: readers see either the old file or the complete new one, never a torn one.
 * Write a temp file next to the target (same filesystem, so rename is atomic), fsync it, rename it into
 * place, then fsync the directory so the rename itself survives a power cut.
 */

export interface AtomicWriteOptions {
  /** File mode of the final file (default 0o644). */
  mode?: number;
  /**
   * Refuse to replace an existing file: the temp file is hard-linked into place, which fails with EEXIST
   * atomically. Lets concurrent writers race for a name (e.g. the next manifest version) without a lock.
   */
  exclusive?: boolean;
}

/** A temp name beside `path`; hidden so directory listings (and model imports) skip it. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** fsync a directory so renames and new entries in it are durable. A no-op where unsupported (Windows). */
export function fsyncDirSync(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch (e) {
    if (!isUnsupportedDirSync(e)) throw e;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  let fh;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch (e) {
    if (!isUnsupportedDirSync(e)) throw e;
  } finally {
    await fh?.close();
  }
}

function isUnsupportedDirSync(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'EISDIR' || code === 'EPERM' || code === 'EINVAL' || code === 'EBADF';
}

export function writeFileAtomicSync(path: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): void {
  const tmp = tempPathFor(path);
  const fd = openSync(tmp, 'wx', opts.mode ?? 0o644);
  try {
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    unlinkQuietSync(tmp);
    throw e;
  }
  closeSync(fd);
  try {
    if (opts.exclusive) {
      linkSync(tmp, path);
      unlinkSync(tmp);
    } else {
      renameSync(tmp, path);
    }
  } catch (e) {
    unlinkQuietSync(tmp);
    throw e;
  }
  fsyncDirSync(dirname(path));
}

export async function writeFileAtomic(path: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): Promise<void> {
  const tmp = tempPathFor(path);
  const fh = await open(tmp, 'wx', opts.mode ?? 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await unlink(tmp).catch(() => {});
    throw e;
  }
  await fh.close();
  try {
    if (opts.exclusive) {
      await link(tmp, path);
      await unlink(tmp);
    } else {
      await rename(tmp, path);
    }
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw e;
  }
  await fsyncDir(dirname(path));
}

function unlinkQuietSync(p: string): void {
  try {
    unlinkSync(p);
  } catch {
    /* already gone */
  }
}
