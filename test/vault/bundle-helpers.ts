/** Fixtures for the bundle tests: models that share blobs, a tiny independent tar reader, vault snapshots. */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { importModel, listModels } from '../../src/vault/vault.js';
import type { Manifest } from '../../src/vault/manifest.js';
import { END_OF_ARCHIVE, memberHeader, padded } from '../../src/vault/bundle-format.js';
import { listTree, makeFakeModel, tempDir } from './helpers.js';

export const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Deterministic pseudo-random bytes (xorshift), so a large blob has no runs a filesystem could skip. */
export function noise(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  let x = seed | 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeInt32LE(x | 0, i);
  }
  return b;
}

/**
 * Two models that share config.json, tokenizer.json, README.md and extra/notes.txt (same content), with
 * different weights; alpha also has an empty file; `big` adds a file of that many bytes to the first so blobs span many chunks.
 */
export async function twoModels(home: string, big = 0): Promise<[Manifest, Manifest]> {
  const a = makeFakeModel(join(tempDir(), 'alpha'));
  writeFileSync(join(a, 'empty.txt'), ''); // a zero-length member
  if (big > 0) writeFileSync(join(a, 'weights-extra.bin'), noise(big, 7));
  const b = makeFakeModel(join(tempDir(), 'beta'), { tensors: { w: { shape: [6, 6] } } });
  const ma = await importModel(a, { name: 'alpha', license: 'mit' }, home);
  const mb = await importModel(b, { name: 'beta' }, home);
  return [ma, mb];
}

export interface RawMember {
  name: string;
  type: string;
  size: number;
  headerOffset: number;
  dataOffset: number;
  data: Buffer;
}

/** Reads a plain ustar archive (no pax), independently of the code under test. */
export function readTar(file: string): { members: RawMember[]; end: number } {
  const buf = readFileSync(file);
  const members: RawMember[] = [];
  let pos = 0;
  while (pos + 512 <= buf.length) {
    const h = buf.subarray(pos, pos + 512);
    if (h.every((x) => x === 0)) return { members, end: pos };
    const name = h.toString('utf8', 0, 100).replace(/\0.*$/s, '');
    const size = parseInt(h.toString('latin1', 124, 136).replace(/\0.*$/s, ''), 8);
    const type = String.fromCharCode(h[156]!);
    members.push({ name, type, size, headerOffset: pos, dataOffset: pos + 512, data: buf.subarray(pos + 512, pos + 512 + size) });
    pos += 512 + padded(size);
  }
  throw new Error(`${file}: no end-of-archive marker`);
}

/** Writes members as a tar file with the writer under test's header code (for hand-made bad bundles). */
export function writeTar(file: string, members: Array<{ name: string; data: Buffer }>): string {
  const parts: Buffer[] = [];
  for (const m of members) {
    parts.push(memberHeader(m.name, m.data.length, 0), m.data, Buffer.alloc(padded(m.data.length) - m.data.length));
  }
  parts.push(END_OF_ARCHIVE);
  writeFileSync(file, Buffer.concat(parts));
  return file;
}

/** A copy of `src` with the byte at `offset` inverted. */
export function flipped(src: string, offset: number, dst: string): string {
  const b = Buffer.from(readFileSync(src));
  b[offset] = b[offset]! ^ 0xff;
  writeFileSync(dst, b);
  return dst;
}

/** A copy of the first `length` bytes of `src`. */
export function truncated(src: string, length: number, dst: string): string {
  writeFileSync(dst, readFileSync(src).subarray(0, length));
  return dst;
}

function filesIn(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

/**
 * What "the vault is unchanged" means after a refused import: the same manifests (names, versions, sizes)
 * and the same blobs in blobs/sha256, no file left in blobs/tmp, no pending marker left, and the index
 * listing the same models. Empty directories a refused import may create (blobs/tmp, pending) don't count.
 */
export function vaultState(home: string): { manifests: string[]; blobs: string[]; temps: string[]; pending: string[]; models: string[] } {
  return {
    manifests: listTree(join(home, 'models')),
    blobs: listTree(join(home, 'blobs', 'sha256')),
    temps: filesIn(join(home, 'blobs', 'tmp')),
    pending: filesIn(join(home, 'pending')),
    models: existsSync(home) ? listModels(undefined, home).map((r) => `${r.name}:${r.version}:${r.digest}`) : [],
  };
}

/** Manifest files of a home as {"name/version.json": bytes}. */
export function manifestFiles(home: string): Record<string, string> {
  const out: Record<string, string> = {};
  const root = join(home, 'models');
  for (const name of filesIn(root)) for (const f of filesIn(join(root, name))) out[`${name}/${f}`] = readFileSync(join(root, name, f), 'utf8');
  return out;
}
