import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

/** 1 MiB reads: large enough that syscalls don't dominate when hashing multi-gigabyte weight files. */
export const HASH_CHUNK = 1 << 20;

const SHA256_HEX = /^[0-9a-f]{64}$/;

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export function isSha256Hex(s: unknown): s is string {
  return typeof s === 'string' && SHA256_HEX.test(s);
}

export interface FileHash {
  sha256: string;
  size: number;
}

/**
 * Streams a file through sha256 (never holding it in memory). `onBytes` gets the size of each chunk so
 * callers can report throughput across many files.
 */
export async function sha256File(path: string, onBytes?: (n: number) => void): Promise<FileHash> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: HASH_CHUNK })) {
    const buf = chunk as Buffer;
    hash.update(buf);
    size += buf.length;
    onBytes?.(buf.length);
  }
  return { sha256: hash.digest('hex'), size };
}
