/**
 * Vault throughput against `sha256sum` on the same file: import (read + hash + write a copy + fsync) and
 * verify (read + hash), on one large weight file. Part of `npm run bench` (workload `vault`); alone:
 *
 *   npm run bench -- --workloads vault [--vault-size-mb 1024] [--quick]
 *
 * The file is read once before timing, so every side reads it from the page cache (the machine has far more
 * RAM than the file): what is compared is the hashing and copying, not the disk's cold-read speed. Each side
 * runs `repeats` times; medians are reported. Imports go into a fresh home each time, so the blob is written.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { importModel, verifyVault } from '../src/vault/vault.js';

export interface VaultBenchOptions {
  sizeMb: number;
  repeats: number;
}

export interface VaultBenchResult {
  size_bytes: number;
  repeats: number;
  sha256sum_seconds: number[];
  /** `openssl dgst -sha256` on the same file (null when openssl is absent): the same SHA-256 code Node uses. */
  openssl_seconds: number[] | null;
  openssl_mb_per_s: number | null;
  import_seconds: number[];
  verify_seconds: number[];
  sha256sum_mb_per_s: number;
  import_mb_per_s: number;
  verify_mb_per_s: number;
  import_vs_sha256sum: number;
  verify_vs_sha256sum: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/** A model folder whose weights are one F32 tensor of `bytes` random bytes (written in 16 MiB chunks). */
function makeModel(dir: string, bytes: number): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ architectures: ['LlamaForCausalLM'], model_type: 'llama' }));
  const n = Math.floor(bytes / 4);
  let header = Buffer.from(JSON.stringify({ weight: { dtype: 'F32', shape: [n], data_offsets: [0, n * 4] } }));
  header = Buffer.concat([header, Buffer.alloc((8 - (header.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  const path = join(dir, 'model.safetensors');
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, Buffer.concat([len, header]));
    const chunk = 16 << 20;
    for (let left = n * 4; left > 0; left -= chunk) writeSync(fd, randomBytes(Math.min(chunk, left)));
  } finally {
    closeSync(fd);
  }
  return path;
}

async function timed(fn: () => unknown): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

export async function runVaultBench(opts: VaultBenchOptions, log: (s: string) => void): Promise<VaultBenchResult> {
  const work = mkdtempSync(join(tmpdir(), 'distillery-vault-bench-'));
  try {
    const src = join(work, 'model');
    log(`vault: writing a ${opts.sizeMb} MB weight file`);
    const weights = makeModel(src, opts.sizeMb * 1e6);
    const size = statSync(weights).size;
    spawnSync('cat', [weights], { stdio: 'ignore' }); // into the page cache
    const sha = spawnSync('sha256sum', ['--version']);
    if (sha.status !== 0) throw new Error('sha256sum is not available: the vault benchmark compares against it');
    const r = { sha: [] as number[], ssl: [] as number[], imp: [] as number[], ver: [] as number[] };
    const haveOpenssl = spawnSync('openssl', ['version']).status === 0;
    for (let i = 0; i < opts.repeats; i++) {
      r.sha.push(await timed(() => {
        const res = spawnSync('sha256sum', [weights]);
        if (res.status !== 0) throw new Error(`sha256sum failed: ${res.stderr.toString()}`);
      }));
      if (haveOpenssl) {
        r.ssl.push(await timed(() => {
          const res = spawnSync('openssl', ['dgst', '-sha256', weights]);
          if (res.status !== 0) throw new Error(`openssl failed: ${res.stderr.toString()}`);
        }));
      }
      const home = join(work, `home-${i}`);
      r.imp.push(await timed(() => importModel(src, { name: 'bench' }, home)));
      r.ver.push(await timed(async () => {
        const rep = await verifyVault(undefined, undefined, home);
        if (!rep.ok) throw new Error('verify found damage in a fresh import');
      }));
      rmSync(home, { recursive: true, force: true });
      log(`vault: repeat ${i + 1}/${opts.repeats}: sha256sum ${r.sha.at(-1)!.toFixed(2)} s, import ${r.imp.at(-1)!.toFixed(2)} s, verify ${r.ver.at(-1)!.toFixed(2)} s`);
    }
    const rate = (s: number[]) => size / 1e6 / median(s);
    return {
      size_bytes: size, repeats: opts.repeats,
      sha256sum_seconds: r.sha, openssl_seconds: haveOpenssl ? r.ssl : null, openssl_mb_per_s: haveOpenssl ? rate(r.ssl) : null,
      import_seconds: r.imp, verify_seconds: r.ver,
      sha256sum_mb_per_s: rate(r.sha), import_mb_per_s: rate(r.imp), verify_mb_per_s: rate(r.ver),
      import_vs_sha256sum: rate(r.imp) / rate(r.sha), verify_vs_sha256sum: rate(r.ver) / rate(r.sha),
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

export function vaultTable(v: VaultBenchResult): string {
  const row = (what: string, mbs: number, ratio: number | null) =>
    `${what.padEnd(34)} ${mbs.toFixed(0).padStart(6)} MB/s${ratio === null ? '' : `   ${(100 * ratio).toFixed(0)}% of sha256sum`}`;
  return [
    `vault, one ${(v.size_bytes / 1e6).toFixed(0)} MB file from the page cache, medians of ${v.repeats}:`,
    row('sha256sum (read + hash)', v.sha256sum_mb_per_s, null),
    ...(v.openssl_mb_per_s === null ? [] : [row('openssl dgst -sha256 (read + hash)', v.openssl_mb_per_s, v.openssl_mb_per_s / v.sha256sum_mb_per_s)]),
    row('vault import (read + hash + copy)', v.import_mb_per_s, v.import_vs_sha256sum),
    row('vault verify (read + hash)', v.verify_mb_per_s, v.verify_vs_sha256sum),
  ].join('\n');
}
