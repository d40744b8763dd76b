import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensorsInfo } from '../../src/vault/safetensors.js';
import { putBlob, sweepStaleTemps } from '../../src/vault/store.js';
import { vaultLayout } from '../../src/vault/layout.js';
import { readmeLicense } from '../../src/vault/model-folder.js';
import { sha256File, sha256Hex } from '../../src/core/hash.js';
import { writeFileAtomicSync, writeFileAtomic } from '../../src/core/atomic.js';
import { tempDir, writeSafetensors } from './helpers.js';

test('safetensors header: tensors, parameters, sizes', async () => {
  const p = join(tempDir(), 'm.safetensors');
  writeSafetensors(p, { a: { shape: [2, 3] }, b: { shape: [] }, c: { shape: [0, 4] } }, { format: 'pt' });
  const info = await readSafetensorsInfo(p);
  assert.equal(info.parameters, 6 + 1 + 0);
  assert.deepEqual(info.tensors.map((t) => [t.name, t.begin, t.end]), [['a', 0, 24], ['b', 24, 28], ['c', 28, 28]]);
  assert.equal(info.fileSize, statSync(p).size);
  assert.equal(info.headerEnd + info.dataSize, info.fileSize);
  assert.deepEqual(info.metadata, { format: 'pt' });
});

test('safetensors problems are named', async () => {
  const dir = tempDir();
  const write = (name: string, header: unknown, data = 0, rawLen?: bigint) => {
    const h = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(rawLen ?? BigInt(h.length));
    writeFileSync(join(dir, name), Buffer.concat([len, h, Buffer.alloc(data)]));
    return join(dir, name);
  };
  const cases: Array<[string, RegExp]> = [
    [(writeFileSync(join(dir, 'tiny'), 'abc'), join(dir, 'tiny')), /too short/],
    [write('huge-len', {}, 0, 1n << 40n), /implausible/],
    [write('short-header', {}, 0, 100n), /truncated: the header needs 108 bytes/],
    [write('bad-json', '{"a": '), /header is not valid JSON/],
    [write('array', '[1,2]'), /not a JSON object/],
    [write('no-dtype', { a: { shape: [1], data_offsets: [0, 4] } }, 4), /has no dtype/],
    [write('bad-shape', { a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4), /invalid shape/],
    [write('bad-offsets', { a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, 4), /invalid data_offsets/],
    [write('past-end', { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8), /truncated: tensor "a" ends at data byte 16 but only 8/],
    [write('trailing', { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 9), /header \(\d+\) \+ tensor data \(4\)/],
    [write('wrong-size', { a: { dtype: 'BF16', shape: [4], data_offsets: [0, 4] } }, 4), /should take 8 bytes/],
  ];
  for (const [p, re] of cases) {
    await assert.rejects(readSafetensorsInfo(p, 'X.safetensors'), (e: unknown) => {
      assert.match((e as Error).message, /^X\.safetensors is not a valid safetensors file: /);
      assert.match((e as Error).message, re, p);
      return true;
    });
  }
  // Unknown (future) dtypes are accepted as long as offsets are in bounds.
  const fut = write('future', { a: { dtype: 'F8_NEW', shape: [3], data_offsets: [0, 5] } }, 5);
  assert.equal((await readSafetensorsInfo(fut)).parameters, 3);
});

test('putBlob: streamed copy + hash, read-only, stored once, no temp left', async () => {
  const home = join(tempDir(), 'home');
  const layout = vaultLayout(home);
  const src = join(tempDir(), 'big.bin');
  // Several read chunks (1 MiB each) so the streaming path is exercised.
  const data = Buffer.alloc(3 * (1 << 20) + 17);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
  writeFileSync(src, data);
  let progress = 0;
  const a = await putBlob(layout, src, { onBytes: (n) => (progress += n) });
  assert.equal(a.sha256, sha256Hex(data));
  assert.equal(a.size, data.length);
  assert.equal(a.created, true);
  assert.equal(progress, data.length);
  const b = await putBlob(layout, src);
  assert.equal(b.created, false);
  assert.deepEqual(readdirSync(layout.blobsDir), [a.sha256]);
  assert.deepEqual(readdirSync(layout.blobTmpDir), []);
  assert.equal(statSync(join(layout.blobsDir, a.sha256)).mode & 0o777, 0o444);
  assert.deepEqual(await sha256File(join(layout.blobsDir, a.sha256)), { sha256: a.sha256, size: data.length });

  // Leftovers of an interrupted import are swept once stale; fresh temp files are left alone.
  writeFileSync(join(layout.blobTmpDir, 'stale'), 'x');
  utimesSync(join(layout.blobTmpDir, 'stale'), new Date(0), new Date(0));
  writeFileSync(join(layout.blobTmpDir, 'fresh'), 'x');
  sweepStaleTemps(layout);
  assert.deepEqual(readdirSync(layout.blobTmpDir), ['fresh']);
});

test('atomic writes replace whole files and leave no temp files; exclusive refuses to overwrite', async () => {
  const dir = tempDir();
  const p = join(dir, 'x.json');
  writeFileAtomicSync(p, 'one');
  writeFileAtomicSync(p, 'two');
  assert.equal(readFileSync(p, 'utf8'), 'two');
  await writeFileAtomic(p, Buffer.from('three'));
  assert.equal(readFileSync(p, 'utf8'), 'three');
  assert.throws(() => writeFileAtomicSync(p, 'four', { exclusive: true }), /EEXIST/);
  await assert.rejects(writeFileAtomic(p, 'four', { exclusive: true }), /EEXIST/);
  assert.equal(readFileSync(p, 'utf8'), 'three');
  writeFileAtomicSync(join(dir, 'ro'), 'r', { mode: 0o444 });
  assert.equal(statSync(join(dir, 'ro')).mode & 0o777, 0o444);
  assert.deepEqual(readdirSync(dir).sort(), ['ro', 'x.json']);
});

test('README front matter license', () => {
  const dir = tempDir();
  const lic = (text: string) => {
    writeFileSync(join(dir, 'README.md'), text);
    return readmeLicense(join(dir, 'README.md'));
  };
  assert.equal(lic('---\nlanguage: en\nlicense: "llama3.1"\n---\n# x'), 'llama3.1');
  assert.equal(lic('---\r\nlicense: apache-2.0\r\n---\r\n'), 'apache-2.0');
  assert.equal(lic('# Title\n---\nlicense: mit\n---\n'), null);
  assert.equal(lic('no front matter'), null);
  assert.equal(readmeLicense(undefined), null);
});
