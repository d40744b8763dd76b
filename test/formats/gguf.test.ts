import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../../src/core/paths.js';
import { UserError } from '../../src/core/errors.js';
import {
  GGML_TYPES, LLAMA_FILE_TYPES, arr, checkGgufSplitHeaders, encodeGguf, ggmlType, ggufKV, ggufSplitName, ggufSummary,
  groupGgufFiles, kv, parseGgufHeader, parseGgufSplitName, readGgufHeader, writeGguf,
  type GgufArray, type GgufHeader, type GgufKV, type GgufTensorSpec, type GgufValue,
} from '../../src/formats/gguf.js';

const PYTHON = join(packageRoot(), 'engine', '.venv', 'bin', 'python');
const REF_SCRIPT = join(packageRoot(), 'test', 'formats', 'fixtures', 'gguf_ref.py');
const GGUF_PY_MISSING: string | false = (() => {
  if (!existsSync(PYTHON)) return `the engine environment is not installed (${PYTHON} missing; npm run setup)`;
  const r = spawnSync(PYTHON, ['-c', 'import gguf'], { encoding: 'utf8' });
  return r.status === 0 ? false : 'the Python package gguf (gguf-py) is not installed in engine/.venv (pip install gguf==0.19.0)';
})();

function ref(...args: string[]): any {
  const r = spawnSync(PYTHON, [REF_SCRIPT, ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  assert.equal(r.status, 0, `gguf_ref.py ${args.join(' ')} failed:\n${r.stderr}`);
  return JSON.parse(r.stdout);
}

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'distillery-gguf-'));
  dirs.push(d);
  return d;
}
process.on('exit', () => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A value in the JSON convention of gguf_ref.py: 64-bit integers as strings, nested arrays as {itemType, value}. */
function jsonItems(a: GgufArray): unknown[] {
  return Array.from(a.items as ArrayLike<unknown>, (x) =>
    a.itemType === 'array' ? { itemType: (x as GgufArray).itemType, value: jsonItems(x as GgufArray) } : typeof x === 'bigint' ? String(x) : x,
  );
}
function jsonKV(m: GgufKV): Record<string, unknown> {
  if (m.type === 'array') return { key: m.key, type: 'array', itemType: m.value.itemType, value: jsonItems(m.value) };
  return { key: m.key, type: m.type, value: typeof m.value === 'bigint' ? String(m.value) : m.value };
}

function tensorBytes(file: Uint8Array, h: GgufHeader, name: string): Uint8Array {
  const t = h.tensors.find((x) => x.name === name)!;
  return file.subarray(t.fileOffset, t.fileOffset + t.bytes);
}

test('ggml type table and llama file types match gguf-py', { skip: GGUF_PY_MISSING }, () => {
  const t = ref('tables') as { ggml: Record<string, [number, number, number]>; ftypes: Record<string, string> };
  const ours = Object.fromEntries(GGML_TYPES.map((x) => [x.name, [x.blockSize, x.typeSize, x.id]]));
  assert.deepEqual(ours, t.ggml);
  for (const [id, name] of Object.entries(t.ftypes)) {
    if (name === 'GUESSED') continue;
    assert.equal(LLAMA_FILE_TYPES[Number(id)], name.replace(/^(MOSTLY|ALL)_/, ''), `file type ${id}`);
  }
});

test('reads a file written by gguf-py GGUFWriter, every value', { skip: GGUF_PY_MISSING }, async () => {
  const p = join(tempDir(), 'ref.gguf');
  const expected = ref('write', p) as { metadata: Record<string, unknown>[]; tensors: any[] };
  const h = await readGgufHeader(p, { label: 'ref.gguf' });
  assert.equal(h.version, 3);
  assert.equal(h.alignment, 32);
  assert.equal(h.dataOffset % 32, 0);
  assert.deepEqual(h.metadata.map(jsonKV), expected.metadata);
  // The reader's array representations: typed arrays for numbers, plain arrays otherwise.
  const items = (key: string) => (ggufKV(h, key)!.value as GgufArray).items;
  assert.ok(items('tokenizer.ggml.scores') instanceof Float32Array);
  assert.ok(items('tokenizer.ggml.token_type') instanceof Int32Array);
  assert.ok(items('test.arr_u64') instanceof BigUint64Array);
  assert.ok(items('test.arr_i64') instanceof BigInt64Array);
  assert.ok(Array.isArray(items('test.arr_bool')));
  assert.equal(ggufKV(h, 'test.u64')!.value, 2n ** 64n - 1n);

  const file = readFileSync(p);
  assert.deepEqual(
    h.tensors.map((t) => ({ name: t.name, type: t.typeName, dims: t.dims, sha256: sha256(tensorBytes(file, h, t.name)), bytes: t.bytes })),
    expected.tensors,
  );
  for (const t of h.tensors) assert.equal(t.fileOffset % 32, 0);
  assert.equal(h.tensors.find((t) => t.name === 'blk.0.ffn_up.weight')!.elements, 256);

  assert.deepEqual(ggufSummary(h), {
    architecture: 'llama', name: 'Tiny Test Model', parameters: 24 + 8 + 64 + 256 + 4 + 5, quantization: 'Q4_K_M',
    context_length: 4096, chat_template: '{% for m in messages %}{{ m.content }}{% endfor %}', license: 'apache-2.0', split: null,
  });

  // Reading through a tiny window (many re-reads) and parsing from memory give the same header.
  assert.deepEqual(await readGgufHeader(p, { label: 'ref.gguf', chunkBytes: 16 }), h);
  assert.deepEqual(parseGgufHeader(file, { label: 'ref.gguf' }), h);
  // A prefix holding just the header parses too when the real file size is given.
  assert.deepEqual(parseGgufHeader(file.subarray(0, h.headerBytes), { label: 'ref.gguf', fileSize: file.length }), h);
});

function sampleSpec(): { metadata: GgufKV[]; tensors: GgufTensorSpec[] } {
  const bytes = (n: number, mul: number) => Uint8Array.from({ length: n }, (_, i) => (i * mul + 3) & 0xff);
  return {
    metadata: [
      kv.string('general.architecture', 'qwen2'),
      kv.string('general.name', 'Written By Distillery'),
      kv.uint32('general.file_type', 7),
      kv.uint32('qwen2.context_length', 32768),
      kv.uint8('t.u8', 200), kv.int8('t.i8', -5), kv.uint16('t.u16', 40000), kv.int16('t.i16', -20000),
      kv.uint32('t.u32', 3000000000), kv.int32('t.i32', -7), kv.uint64('t.u64', 2n ** 63n + 11n), kv.int64('t.i64', -(2n ** 40n)),
      kv.float32('t.f32', 1.5), kv.float64('t.f64', Math.PI), kv.bool('t.bool', true), kv.string('t.str', 'ünïcödé ✓'),
      kv.string('t.empty', ''),
      kv.array('tokenizer.ggml.tokens', 'string', ['a', 'bc', '', 'δ']),
      kv.array('tokenizer.ggml.scores', 'float32', [0.5, -0.25, 2, 8]),
      // ~100 KB: the header crosses the writer's internal chunk boundaries.
      kv.array('tokenizer.ggml.merges', 'string', Array.from({ length: 6000 }, (_, i) => `m${i} ü${i % 7}`)),
      kv.array('t.arr_u16', 'uint16', [1, 65535]),
      kv.array('t.arr_i64', 'int64', [-3n, 2n ** 62n]),
      kv.array('t.arr_u64', 'uint64', [7, 2n ** 64n - 1n]),
      kv.array('t.arr_bool', 'bool', [false, true]),
      kv.array('t.arr_f64', 'float64', [0.1, 1e-300]),
      kv.array('t.nested', 'array', [arr('int32', [1, -2]), arr('int32', [3])]),
    ],
    tensors: [
      { name: 'token_embd.weight', type: 'Q8_0', dims: [64, 3], data: bytes(2 * 34 * 3, 5) },
      { name: 'blk.0.attn_norm.weight', type: 'F32', dims: [7], data: bytes(28, 1) },
      { name: 'blk.0.ffn_down.weight', type: 'Q6_K', dims: [256, 2], data: bytes(210 * 2, 3) },
      { name: 'blk.0.mxfp4', type: 'MXFP4', dims: [32, 1, 1, 2], data: bytes(17 * 2, 11) },
      { name: 'blk.0.bf16', type: 'BF16', dims: [3, 3], data: bytes(18, 13) },
    ],
  };
}

/** How gguf_ref.py `read` shows one of our values: its list of types, arrays flattened, 64-bit as strings. */
function pyView(m: GgufKV): Record<string, unknown> {
  const types: string[] = [m.type];
  const flat = (v: GgufValue): unknown[] => {
    if (v.type !== 'array') return [typeof v.value === 'bigint' ? String(v.value) : v.value];
    const a = v.value;
    return Array.from(a.items as ArrayLike<unknown>).flatMap((x) =>
      a.itemType === 'array' ? flat({ type: 'array', value: x as GgufArray }) : flat({ type: a.itemType, value: x } as GgufValue));
  };
  let v: GgufValue = m;
  while (v.type === 'array') {
    types.push(v.value.itemType);
    if (v.value.itemType !== 'array') break;
    v = { type: 'array', value: v.value.items[0] as GgufArray };
  }
  const f32 = (x: unknown) => (m.type === 'array' && types.at(-1) === 'float32' ? Math.fround(x as number) : x);
  let value: unknown = m.type === 'array' ? flat(m).map(f32) : flat(m)[0];
  if (m.type === 'float32') value = Math.fround(m.value as number);
  if (typeof value === 'bigint' || (m.type === 'uint64' || m.type === 'int64')) value = String(m.value);
  if (m.type === 'array' && (types.at(-1) === 'uint64' || types.at(-1) === 'int64')) value = (value as unknown[]).map(String);
  return { key: m.key, types, value };
}

test('a file written by writeGguf is read back by gguf-py GGUFReader', { skip: GGUF_PY_MISSING }, async () => {
  const spec = sampleSpec();
  const p = join(tempDir(), 'ours.gguf');
  const res = await writeGguf(p, { ...spec, alignment: 64 });
  const got = ref('read', p) as { alignment: number; dataOffset: number; metadata: any[]; tensors: any[] };
  assert.equal(got.alignment, 64);
  assert.equal(got.dataOffset, res.dataOffset);
  const expectedMeta = [...spec.metadata, kv.uint32('general.alignment', 64)].map(pyView);
  assert.deepEqual(got.metadata, expectedMeta);
  const h = await readGgufHeader(p);
  assert.deepEqual(got.tensors, spec.tensors.map((t) => {
    const info = h.tensors.find((x) => x.name === t.name)!;
    return {
      name: t.name, type: t.type, dims: t.dims, elements: t.dims.reduce((a, b) => a * b, 1), bytes: t.data.length,
      fileOffset: info.fileOffset, sha256: sha256(t.data),
    };
  }));
});

test('writeGguf output reads back with our reader; encodeGguf gives the same bytes', async () => {
  const spec = sampleSpec();
  const p = join(tempDir(), 'rt.gguf');
  await writeGguf(p, spec);
  const file = readFileSync(p);
  assert.deepEqual(new Uint8Array(file), new Uint8Array(encodeGguf(spec)));
  assert.deepEqual(readdirSync(join(p, '..')), ['rt.gguf']); // no temp file left behind
  const h = await readGgufHeader(p);
  assert.equal(h.alignment, 32);
  assert.deepEqual(h.metadata.map(jsonKV), spec.metadata.map((m) => {
    const j = jsonKV(m);
    // The reader returns 64-bit items as bigint and float32 rounded.
    if (m.type === 'array' && m.value.itemType === 'float32') j.value = (j.value as number[]).map(Math.fround);
    if (m.type === 'array' && m.value.itemType === 'uint64') j.value = (j.value as unknown[]).map((x) => String(x));
    return j;
  }));
  for (const t of spec.tensors) assert.equal(Buffer.compare(tensorBytes(file, h, t.name), t.data), 0, t.name);
  const s = ggufSummary(h);
  assert.equal(s.quantization, 'Q8_0');
  assert.equal(s.context_length, 32768);
  assert.equal(s.parameters, 192 + 7 + 512 + 64 + 9);
  // Without general.file_type, the type holding the most elements.
  const noFtype = parseGgufHeader(encodeGguf({ ...spec, metadata: spec.metadata.filter((m) => m.key !== 'general.file_type') }));
  assert.equal(ggufSummary(noFtype).quantization, 'Q6_K');
});

test('writer rejects bad specs with named errors', async () => {
  const t = (over: Partial<GgufTensorSpec>): GgufTensorSpec => ({ name: 'w', type: 'F32', dims: [2], data: new Uint8Array(8), ...over });
  const cases: Array<[Parameters<typeof encodeGguf>[0], string]> = [
    [{ metadata: [kv.uint8('a', 256)], tensors: [] }, 'cannot write GGUF metadata "a": 256 is not a uint8'],
    [{ metadata: [kv.uint64('a', 2 ** 53)], tensors: [] }, 'cannot write GGUF metadata "a": 9007199254740992 is not a safe integer (use a bigint)'],
    [{ metadata: [kv.int64('a', 2n ** 63n)], tensors: [] }, 'cannot write GGUF metadata "a": 9223372036854775808 is not a int64'],
    [{ metadata: [kv.array('a', 'int8', [1, 300])], tensors: [] }, 'cannot write GGUF metadata "a"[1]: 300 is not a int8'],
    [{ metadata: [kv.uint8('a', 1), kv.uint8('a', 2)], tensors: [] }, 'cannot write GGUF: duplicate metadata key "a"'],
    [{ metadata: [], tensors: [t({ type: 'Q9_9' })] }, 'cannot write GGUF tensor "w": unknown ggml type "Q9_9"'],
    [{ metadata: [], tensors: [t({ type: 'Q4_0', dims: [16] })] }, 'cannot write GGUF tensor "w": first dimension 16 is not a multiple of the Q4_0 block size 32'],
    [{ metadata: [], tensors: [t({ data: new Uint8Array(4) })] }, 'cannot write GGUF tensor "w": F32 [2] takes 8 bytes but 4 were given'],
    [{ metadata: [], tensors: [t({}), t({})] }, 'cannot write GGUF tensor "w": duplicate name'],
    [{ metadata: [], tensors: [], alignment: 48 }, 'cannot write GGUF: alignment 48 is not a power of two'],
  ];
  for (const [spec, msg] of cases) assert.throws(() => encodeGguf(spec), (e: unknown) => e instanceof UserError && e.message === msg);
  await assert.rejects(writeGguf(join(tempDir(), 'x.gguf'), cases[0]![0]), UserError);
});

test('split file names and sets', async () => {
  assert.deepEqual(parseGgufSplitName('Qwen2.5-7B-Q4_K_M-00002-of-00003.gguf'), { base: 'Qwen2.5-7B-Q4_K_M', index: 2, count: 3 });
  assert.deepEqual(parseGgufSplitName('dir/m-00001-of-00001.gguf'), { base: 'm', index: 1, count: 1 });
  for (const bad of ['m.gguf', 'm-1-of-3.gguf', 'm-00004-of-00003.gguf', 'm-00000-of-00003.gguf', 'm-00001-of-00003.bin', '-00001-of-00002.gguf']) {
    assert.equal(parseGgufSplitName(bad), null, bad);
  }
  assert.equal(ggufSplitName('m', 7, 12), 'm-00007-of-00012.gguf');

  assert.deepEqual(
    groupGgufFiles(['b-00002-of-00002.gguf', 'README.md', 'a.gguf', 'b-00001-of-00002.gguf', 'mmproj-F16.gguf']),
    [
      { base: 'a', files: ['a.gguf'], split: false },
      { base: 'b', files: ['b-00001-of-00002.gguf', 'b-00002-of-00002.gguf'], split: true },
      { base: 'mmproj-F16', files: ['mmproj-F16.gguf'], split: false },
    ],
  );
  const err = (names: string[], msg: string) =>
    assert.throws(() => groupGgufFiles(names), (e: unknown) => e instanceof UserError && e.message === msg);
  err(['m-00001-of-00003.gguf', 'm-00003-of-00003.gguf'], 'split GGUF set "m" is incomplete: 2 of 3 parts present, missing m-00002-of-00003.gguf');
  err(['m-00001-of-00002.gguf', 'm-00002-of-00003.gguf'], 'split GGUF set "m" mixes part counts: 2 and 3 (m-00002-of-00003.gguf)');

  // Headers: split.no / split.count / split.tensors.count must agree with the names.
  const dir = tempDir();
  const part = async (no: number, count: number, tensorsCount: number, names: string[]) => {
    const p = join(dir, ggufSplitName('m', no + 1, count));
    await writeGguf(p, {
      metadata: [
        ...(no === 0 ? [kv.string('general.architecture', 'llama')] : []),
        kv.uint16('split.no', no), kv.uint16('split.count', count), kv.int32('split.tensors.count', tensorsCount),
      ],
      tensors: names.map((name) => ({ name, type: 'F32', dims: [1], data: new Uint8Array(4) })),
    });
    return p;
  };
  const files = [await part(0, 3, 4, ['a', 'b']), await part(1, 3, 4, ['c']), await part(2, 3, 4, ['d'])];
  const [set] = groupGgufFiles(readdirSync(dir).map((f) => join(dir, f)));
  assert.deepEqual(set!.files, files);
  const parts = await Promise.all(set!.files.map(async (file) => ({ file, header: await readGgufHeader(file) })));
  checkGgufSplitHeaders(parts);
  assert.deepEqual(ggufSummary(parts[1]!.header).split, { no: 1, count: 3, tensors_count: 4 });
  assert.throws(() => checkGgufSplitHeaders([parts[0]!, parts[2]!, parts[1]!]), /split\.no is 2 but this is part 2 \(split\.no 1 expected\)/);
  assert.throws(() => checkGgufSplitHeaders(parts.slice(0, 2)), /split\.count is 3 but the set has 2 parts/);
  const wrongCount = await part(0, 3, 5, ['a', 'b']);
  assert.throws(
    () => checkGgufSplitHeaders([{ file: wrongCount, header: parseGgufHeader(readFileSync(wrongCount)) }, parts[1]!, parts[2]!]),
    (e: unknown) => e instanceof UserError && e.message === `${wrongCount}: split.tensors.count says 5 tensors but the 3 parts hold 4`,
  );
});

// Layout of the small file below (offsets used in the expected messages):
//   0 magic, 4 version, 8 tensor count, 16 metadata count,
//   24 key #0 length, 32 "general.architecture", 52 type, 56 string length, 64 "llama",
//   69 key #1 length, 77 "llama.context_length", 97 type, 101 u32,
//   105 tensor "w": name length, 113 "w", 114 n_dims, 118 dim, 126 type, 130 offset; 138 end of header,
//   160 data (16 bytes), 176 padding to the alignment, 192 end of file.
function small(): Buffer {
  return Buffer.from(encodeGguf({
    metadata: [kv.string('general.architecture', 'llama'), kv.uint32('llama.context_length', 2048)],
    tensors: [{ name: 'w', type: 'F32', dims: [4], data: new Uint8Array(16) }],
  }));
}

test('error messages name the file, the byte and the problem', async () => {
  const base = small();
  assert.equal(base.length, 192);
  assert.equal(parseGgufHeader(base).dataOffset, 160);
  const P = 'X.gguf is not a valid GGUF file: ';
  const patch = (f: (b: Buffer) => void) => { const b = Buffer.from(base); f(b); return b; };
  const cases: Array<[Buffer, string, Parameters<typeof parseGgufHeader>[1]?]> = [
    [Buffer.alloc(0), 'truncated: the magic at byte 0 needs 4 bytes but the file ends at byte 0'],
    [base.subarray(0, 3), 'truncated: the magic at byte 0 needs 4 bytes but the file ends at byte 3'],
    [base.subarray(0, 6), 'truncated: the version at byte 4 needs 4 bytes but the file ends at byte 6'],
    [base.subarray(0, 12), 'truncated: the tensor count at byte 8 needs 8 bytes but the file ends at byte 12'],
    [base.subarray(0, 20), 'the tensor count at byte 8 is 1, but only 4 bytes follow: too few for that many (truncated or corrupt?)'],
    [base.subarray(0, 40), 'the metadata count at byte 16 is 2, but only 16 bytes follow: too few for that many (truncated or corrupt?)'],
    [base.subarray(0, 50), 'truncated: the string at byte 24 (metadata key #0) is 20 bytes long but only 18 bytes follow'],
    [base.subarray(0, 60), 'truncated: metadata value "general.architecture" at byte 56 needs 8 bytes but the file ends at byte 60'],
    [base.subarray(0, 66), 'truncated: the string at byte 56 (metadata value "general.architecture") is 5 bytes long but only 2 bytes follow'],
    [base.subarray(0, 103), 'truncated: metadata value "llama.context_length" at byte 101 needs 4 bytes but the file ends at byte 103'],
    [base.subarray(0, 120), 'truncated: tensor info "w" at byte 118 needs 8 bytes but the file ends at byte 120'],
    [base.subarray(0, 170), 'tensor "w" (info at byte 105) extends past end of file: its data ends at byte 176 but the file is 170 bytes'],
    [patch((b) => b.write('GGUX', 0, 'latin1')), 'bad magic at byte 0: expected "GGUF", found "GGUX"'],
    [patch((b) => b.writeUInt32LE(1, 4)), 'unsupported version 1 at byte 4 (this reader handles GGUF versions 2 and 3)'],
    [patch((b) => b.writeUInt32LE(4, 4)), 'unsupported version 4 at byte 4 (this reader handles GGUF versions 2 and 3)'],
    [patch((b) => b.writeUInt32BE(3, 4)), 'big-endian GGUF (version field at byte 4) is not supported'],
    [patch((b) => b.writeBigUInt64LE(2n ** 64n - 1n, 16)), 'the metadata count at byte 16 is 18446744073709551615, but only 168 bytes follow: too few for that many (truncated or corrupt?)'],
    [patch((b) => b.writeBigUInt64LE(2n ** 40n, 8)), 'the tensor count at byte 8 is 1099511627776, but only 176 bytes follow: too few for that many (truncated or corrupt?)'],
    [patch((b) => b.writeBigUInt64LE(2n ** 63n, 24)), 'truncated: the string at byte 24 (metadata key #0) is 9223372036854775808 bytes long but only 160 bytes follow'],
    [patch((b) => b.writeBigUInt64LE(2n ** 63n, 105)), 'truncated: the string at byte 105 (tensor info #0) is 9223372036854775808 bytes long but only 79 bytes follow'],
    [patch((b) => b.writeUInt32LE(13, 52)), 'unknown value type 13 at byte 52 (metadata value "general.architecture")'],
    [patch((b) => b.writeUInt32LE(5, 114)), 'tensor "w" (info at byte 105) has 5 dimensions; ggml allows at most 4'],
    [patch((b) => b.writeBigUInt64LE(2n ** 60n, 118)), 'tensor "w" (info at byte 105) has an implausible dimension 1152921504606846976'],
    [patch((b) => b.writeBigUInt64LE(2n ** 40n, 118)), 'tensor "w" (info at byte 105) extends past end of file: its data ends at byte 4398046511264 but the file is 192 bytes'],
    [patch((b) => b.writeUInt32LE(99, 126)), 'tensor "w" (info at byte 105) has unknown ggml type 99'],
    [patch((b) => b.writeUInt32LE(2, 126)), 'tensor "w" (info at byte 105) has first dimension 4, not a multiple of the Q4_0 block size 32'],
    [patch((b) => b.writeBigUInt64LE(8n, 130)), 'tensor "w" (info at byte 105) has offset 8, not a multiple of the alignment 32'],
    [patch((b) => b.writeBigUInt64LE(2n ** 64n - 32n, 130)), 'tensor "w" (info at byte 105) extends past end of file: its data ends at byte 18446744073709551760 but the file is 192 bytes'],
    [patch((b) => b.write('llama.context_lengt\xff', 77, 'latin1')), 'the string at byte 69 (metadata key #1) is not valid UTF-8'],
    [patch((b) => b.write('general.architecture', 77, 'latin1')), 'duplicate metadata key "general.architecture" at byte 69 (first at byte 24)'],
    [base, 'the string at byte 24 (metadata key #0) is 20 bytes long, over the 4-byte limit', { maxStringBytes: 4 }],
    [base, 'the header is larger than the 100-byte limit (reading metadata value "llama.context_length" at byte 97)', { maxHeaderBytes: 100 }],
  ];
  for (const [buf, msg, opts] of cases) {
    assert.throws(() => parseGgufHeader(buf, { label: 'X.gguf', ...opts }), (e: unknown) => {
      assert.ok(e instanceof UserError, `not a UserError: ${String(e)}`);
      assert.equal(e.message, P + msg);
      return true;
    });
  }

  // Bad general.alignment values and overlapping tensors.
  const build = (metadata: GgufKV[], tensors: GgufTensorSpec[] = []) => Buffer.from(encodeGguf({ metadata, tensors }));
  // (The writer refuses bad alignments, so write another key and rename it in the bytes.)
  const withAlignment = (al: GgufKV) => {
    const b = build([{ ...al, key: 'general.alignmenX' }]);
    b.write('t', b.indexOf('general.alignmenX') + 16, 'latin1');
    return b;
  };
  const alignErr = (al: GgufKV, shown: string) => assert.throws(
    () => parseGgufHeader(withAlignment(al), { label: 'X.gguf' }),
    (e: unknown) => e instanceof UserError && e.message === `${P}general.alignment (at byte 24) must be a uint32 power of two, found ${shown}`,
  );
  alignErr(kv.uint64('general.alignment', 32n), 'uint64 32');
  alignErr(kv.uint32('general.alignment', 0), 'uint32 0');
  alignErr(kv.uint32('general.alignment', 24), 'uint32 24');
  const two = build([], [
    { name: 'a', type: 'F32', dims: [16], data: new Uint8Array(64) },
    { name: 'b', type: 'F32', dims: [8], data: new Uint8Array(32) },
  ]);
  const h = parseGgufHeader(two);
  assert.deepEqual(h.tensors.map((t) => t.offset), [0, 64]);
  // Point b's offset (the last 8 bytes of the header) at 32, inside a.
  two.writeBigUInt64LE(32n, h.headerBytes - 8);
  assert.throws(() => parseGgufHeader(two, { label: 'X.gguf' }), (e: unknown) =>
    e instanceof UserError && e.message === `${P}tensors "a" and "b" (infos at bytes 24 and 57) overlap: data bytes 0-64 and 32-64`);

  // Arrays: huge counts, nesting depth.
  const arrays = build([kv.array('a', 'uint32', [1, 2])]);
  // key "a" at 24..33, type 33, item type 37, count 41.
  arrays.writeBigUInt64LE(2n ** 62n, 41);
  assert.throws(() => parseGgufHeader(arrays, { label: 'X.gguf' }), (e: unknown) =>
    e instanceof UserError && e.message === `${P}the length of the uint32 array in metadata value "a" at byte 41 is 4611686018427387904, but only 15 bytes follow: too few for that many (truncated or corrupt?)`);
  let deep: GgufArray = arr('int8', [1]);
  for (let i = 0; i < 5; i++) deep = arr('array', [deep]);
  const deepBuf = build([{ key: 'd', type: 'array', value: deep }]);
  assert.equal(parseGgufHeader(deepBuf, { maxArrayDepth: 6 }).metadata.length, 1);
  assert.throws(() => parseGgufHeader(deepBuf, { label: 'X.gguf' }), (e: unknown) =>
    e instanceof UserError && e.message === `${P}arrays nested more than 4 deep at byte 85 (metadata value "d")`);

  // The file reader reports the same problems, reading in small steps.
  const dir = tempDir();
  writeFileSync(join(dir, 't.gguf'), base.subarray(0, 66));
  await assert.rejects(readGgufHeader(join(dir, 't.gguf'), { label: 'X.gguf', chunkBytes: 16 }), (e: unknown) =>
    e instanceof UserError && e.message === `${P}truncated: the string at byte 56 (metadata value "general.architecture") is 5 bytes long but only 2 bytes follow`);
  writeFileSync(join(dir, 'big.gguf'), base);
  await assert.rejects(readGgufHeader(join(dir, 'big.gguf'), { label: 'X.gguf', chunkBytes: 16, maxHeaderBytes: 100 }), (e: unknown) =>
    e instanceof UserError && e.message.startsWith(`${P}the header is larger than the 100-byte limit`));
  assert.equal((await readGgufHeader(join(dir, 'big.gguf'), { chunkBytes: 16 })).tensors[0]!.fileOffset, 160);
});

test('invalid UTF-8 in metadata values is replaced, not fatal', () => {
  const b = small();
  b[64] = 0xc3; // "llama" → an unfinished two-byte sequence
  const h = parseGgufHeader(b);
  assert.equal(ggufKV(h, 'general.architecture')!.value, '\ufffdlama');
  assert.equal(ggmlType('q4_k')!.typeSize, 144);
});
