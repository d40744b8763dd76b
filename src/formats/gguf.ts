import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { endianness } from 'node:os';
import { UserError } from '../core/errors.js';
import { fsyncDir, tempPathFor } from '../core/atomic.js';

/**
 * GGUF (llama.cpp's model file), versions 2 and 3, little-endian.
 *
 * Layout: magic "GGUF", u32 version, u64 tensor count, u64 metadata count, the metadata key/values, one
 * info record per tensor (name, dims, ggml type, offset), padding to the alignment, then the tensor data;
 * each tensor's offset is relative to the start of that data section. Strings are a u64 byte length and
 * UTF-8 bytes (no terminator); arrays are a u32 item type, a u64 count and the items.
 *
 * The reader looks at the header only, with bounded positional reads, so a 100 GB file costs a few reads.
 * Every length and count is checked against the bytes left in the file before anything is allocated, and
 * every problem is a UserError naming the file and the byte offset.
 */

export const GGUF_MAGIC = 'GGUF';
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml tensors have at most this many dimensions. */
export const GGML_MAX_DIMS = 4;

// ---------------------------------------------------------------------------------------------------------
// Metadata value types

export type GgufNumberType = 'uint8' | 'int8' | 'uint16' | 'int16' | 'uint32' | 'int32' | 'float32' | 'float64';
export type GgufBigIntType = 'uint64' | 'int64';
export type GgufValueType = GgufNumberType | GgufBigIntType | 'bool' | 'string' | 'array';

/** On-disk ids of the value types (gguf_type). */
export const GGUF_VALUE_TYPE_IDS: Readonly<Record<GgufValueType, number>> = {
  uint8: 0, int8: 1, uint16: 2, int16: 3, uint32: 4, int32: 5, float32: 6, bool: 7, string: 8, array: 9,
  uint64: 10, int64: 11, float64: 12,
};
const VALUE_TYPE_BY_ID: readonly GgufValueType[] = [
  'uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'float32', 'bool', 'string', 'array', 'uint64', 'int64', 'float64',
];
const NUMBER_SIZE: Readonly<Record<GgufNumberType | GgufBigIntType, number>> = {
  uint8: 1, int8: 1, uint16: 2, int16: 2, uint32: 4, int32: 4, float32: 4, float64: 8, uint64: 8, int64: 8,
};

/**
 * An array value. What the reader returns: typed arrays for numeric items (Uint8Array … Float64Array,
 * BigUint64Array / BigInt64Array for the 64-bit integers), plain arrays for bool, string and nested arrays.
 * The writer accepts any array-like (numbers are accepted for 64-bit items when they are safe integers).
 */
export type GgufArray =
  | { itemType: GgufNumberType; items: ArrayLike<number> }
  | { itemType: GgufBigIntType; items: ArrayLike<bigint | number> }
  | { itemType: 'bool'; items: ArrayLike<boolean> }
  | { itemType: 'string'; items: ArrayLike<string> }
  | { itemType: 'array'; items: ArrayLike<GgufArray> };

/** A typed value. The reader returns 64-bit integers as bigint; the writer also takes safe-integer numbers. */
export type GgufValue =
  | { type: GgufNumberType; value: number }
  | { type: GgufBigIntType; value: bigint | number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'array'; value: GgufArray };

export type GgufKV = GgufValue & { key: string };

/** Constructors for typed key/values: `kv.uint32('llama.context_length', 4096)`, `kv.array(k, 'string', [...])`. */
export const kv = {
  uint8: (key: string, value: number): GgufKV => ({ key, type: 'uint8', value }),
  int8: (key: string, value: number): GgufKV => ({ key, type: 'int8', value }),
  uint16: (key: string, value: number): GgufKV => ({ key, type: 'uint16', value }),
  int16: (key: string, value: number): GgufKV => ({ key, type: 'int16', value }),
  uint32: (key: string, value: number): GgufKV => ({ key, type: 'uint32', value }),
  int32: (key: string, value: number): GgufKV => ({ key, type: 'int32', value }),
  uint64: (key: string, value: bigint | number): GgufKV => ({ key, type: 'uint64', value }),
  int64: (key: string, value: bigint | number): GgufKV => ({ key, type: 'int64', value }),
  float32: (key: string, value: number): GgufKV => ({ key, type: 'float32', value }),
  float64: (key: string, value: number): GgufKV => ({ key, type: 'float64', value }),
  bool: (key: string, value: boolean): GgufKV => ({ key, type: 'bool', value }),
  string: (key: string, value: string): GgufKV => ({ key, type: 'string', value }),
  array: (key: string, itemType: GgufValueType, items: ArrayLike<unknown>): GgufKV =>
    ({ key, type: 'array', value: arr(itemType, items) }),
};

/** An array value (for nesting: `arr('array', [arr('int32', [1, 2]), arr('int32', [3])])`). */
export function arr(itemType: GgufValueType, items: ArrayLike<unknown>): GgufArray {
  return { itemType, items } as GgufArray;
}

// ---------------------------------------------------------------------------------------------------------
// ggml tensor types and llama.cpp file types

export interface GgmlTypeInfo {
  id: number;
  name: string;
  /** Elements per block. */
  blockSize: number;
  /** Bytes per block. */
  typeSize: number;
}

const QK_K = 256;
/** ggml_type ids with their block layout, as in gguf-py's GGML_QUANT_SIZES (gguf 0.19.0) and ggml's type_traits. */
export const GGML_TYPES: readonly GgmlTypeInfo[] = ([
  ['F32', 0, 1, 4],
  ['F16', 1, 1, 2],
  ['Q4_0', 2, 32, 2 + 16],
  ['Q4_1', 3, 32, 2 + 2 + 16],
  ['Q5_0', 6, 32, 2 + 4 + 16],
  ['Q5_1', 7, 32, 2 + 2 + 4 + 16],
  ['Q8_0', 8, 32, 2 + 32],
  ['Q8_1', 9, 32, 4 + 4 + 32],
  ['Q2_K', 10, QK_K, 2 + 2 + QK_K / 16 + QK_K / 4],
  ['Q3_K', 11, QK_K, 2 + QK_K / 4 + QK_K / 8 + 12],
  ['Q4_K', 12, QK_K, 2 + 2 + QK_K / 2 + 12],
  ['Q5_K', 13, QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12],
  ['Q6_K', 14, QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16],
  ['Q8_K', 15, QK_K, 4 + QK_K + QK_K / 8],
  ['IQ2_XXS', 16, QK_K, 2 + QK_K / 4],
  ['IQ2_XS', 17, QK_K, 2 + QK_K / 4 + QK_K / 32],
  ['IQ3_XXS', 18, QK_K, 2 + QK_K / 4 + QK_K / 8],
  ['IQ1_S', 19, QK_K, 2 + QK_K / 8 + QK_K / 16],
  ['IQ4_NL', 20, 32, 2 + 16],
  ['IQ3_S', 21, QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4],
  ['IQ2_S', 22, QK_K, 2 + QK_K / 4 + QK_K / 16],
  ['IQ4_XS', 23, QK_K, 2 + 2 + QK_K / 2 + QK_K / 64],
  ['I8', 24, 1, 1],
  ['I16', 25, 1, 2],
  ['I32', 26, 1, 4],
  ['I64', 27, 1, 8],
  ['F64', 28, 1, 8],
  ['IQ1_M', 29, QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32],
  ['BF16', 30, 1, 2],
  ['TQ1_0', 34, QK_K, 2 + 4 * 13],
  ['TQ2_0', 35, QK_K, 2 + 64],
  ['MXFP4', 39, 32, 1 + 16],
  ['NVFP4', 40, 64, 4 + 32],
  ['Q1_0', 41, 128, 2 + 16],
] as const).map(([name, id, blockSize, typeSize]) => ({ id, name, blockSize, typeSize }));

const GGML_TYPE_BY_ID = new Map(GGML_TYPES.map((t) => [t.id, t]));
const GGML_TYPE_BY_NAME = new Map(GGML_TYPES.map((t) => [t.name, t]));

/** The ggml type with this id or name (case-insensitive), or undefined. */
export function ggmlType(idOrName: number | string): GgmlTypeInfo | undefined {
  return typeof idOrName === 'number' ? GGML_TYPE_BY_ID.get(idOrName) : GGML_TYPE_BY_NAME.get(idOrName.toUpperCase());
}

/** Bytes taken by a tensor of this type and shape (dims in GGUF order: dims[0] varies fastest). */
export function ggmlTensorBytes(type: GgmlTypeInfo, dims: readonly number[]): number {
  const ne0 = dims[0] ?? 1;
  let n = (ne0 / type.blockSize) * type.typeSize;
  for (let i = 1; i < dims.length; i++) n *= dims[i]!;
  return n;
}

/** llama_ftype (general.file_type) → the name llama.cpp's quantize tool uses, without MOSTLY_/ALL_. */
export const LLAMA_FILE_TYPES: Readonly<Record<number, string>> = {
  0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 4: 'Q4_1_SOME_F16', 7: 'Q8_0', 8: 'Q5_0', 9: 'Q5_1', 10: 'Q2_K',
  11: 'Q3_K_S', 12: 'Q3_K_M', 13: 'Q3_K_L', 14: 'Q4_K_S', 15: 'Q4_K_M', 16: 'Q5_K_S', 17: 'Q5_K_M', 18: 'Q6_K',
  19: 'IQ2_XXS', 20: 'IQ2_XS', 21: 'Q2_K_S', 22: 'IQ3_XS', 23: 'IQ3_XXS', 24: 'IQ1_S', 25: 'IQ4_NL', 26: 'IQ3_S',
  27: 'IQ3_M', 28: 'IQ2_S', 29: 'IQ2_M', 30: 'IQ4_XS', 31: 'IQ1_M', 32: 'BF16', 33: 'Q4_0_4_4', 34: 'Q4_0_4_8',
  35: 'Q4_0_8_8', 36: 'TQ1_0', 37: 'TQ2_0', 38: 'MXFP4_MOE', 39: 'NVFP4', 40: 'Q1_0',
};
/** The bit llama.cpp sets on a file type it guessed rather than read. */
const LLAMA_FTYPE_GUESSED = 1024;

// ---------------------------------------------------------------------------------------------------------
// Header

export interface GgufTensorInfo {
  name: string;
  /** GGUF order: dims[0] is the fastest-varying (ggml ne[0]); numpy/torch shapes are the reverse. */
  dims: number[];
  /** ggml_type id. */
  type: number;
  typeName: string;
  /** Offset of the data within the data section (a multiple of the alignment). */
  offset: number;
  /** Offset of the data within the file (header.dataOffset + offset). */
  fileOffset: number;
  elements: number;
  bytes: number;
}

export interface GgufHeader {
  version: number;
  metadata: GgufKV[];
  tensors: GgufTensorInfo[];
  alignment: number;
  /** Where the data section starts: the end of the tensor infos rounded up to the alignment. */
  dataOffset: number;
  /** Bytes of magic, counts, metadata and tensor infos (before the padding). */
  headerBytes: number;
  fileSize: number;
}

export interface GgufReadOptions {
  /** How the file is named in errors (default: the path, or "GGUF data" for buffers). */
  label?: string;
  /** Largest header (metadata + tensor infos) accepted; default 256 MiB. */
  maxHeaderBytes?: number;
  /** Longest single string accepted; default 16 MiB. */
  maxStringBytes?: number;
  /** Deepest array nesting accepted; default 4. */
  maxArrayDepth?: number;
  /** readGgufHeader: size of the first read (later reads grow as needed); default 1 MiB. */
  chunkBytes?: number;
}

const DEFAULT_MAX_HEADER = 256 * 1024 * 1024;
const DEFAULT_MAX_STRING = 16 * 1024 * 1024;
const DEFAULT_MAX_DEPTH = 4;
const DEFAULT_CHUNK = 1024 * 1024;
/** Fewest bytes a metadata entry can take: key length (8) + type (4) + a 1-byte value. */
const MIN_KV_BYTES = 13;
/** Fewest bytes a tensor info can take: name length (8) + n_dims (4) + type (4) + offset (8). */
const MIN_TENSOR_INFO_BYTES = 24;
const LITTLE_ENDIAN_HOST = endianness() === 'LE';

/** Thrown inside the parser when the window of the file read so far is too short; never escapes. */
class NeedMore {
  constructor(readonly end: number) {}
}

const utf8Strict = new TextDecoder('utf-8', { fatal: true });
const utf8Lenient = new TextDecoder('utf-8');

/**
 * A read position over a window of the file (or over a whole buffer). Reads past the window but inside
 * the file throw NeedMore, which the async driver answers by reading more and retrying the current step.
 */
class Cursor {
  buf: Uint8Array = new Uint8Array(0);
  view = new DataView(this.buf.buffer);
  /** File offset of buf[0]. */
  base = 0;
  pos = 0;
  /** What is being read, for error messages. */
  what = 'the header';

  constructor(
    readonly label: string,
    readonly size: number,
    readonly maxEnd: number,
    readonly maxString: number,
    readonly maxDepth: number,
    readonly growable: boolean,
  ) {}

  setWindow(buf: Uint8Array, base: number): void {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.base = base;
  }

  fail(why: string): UserError {
    return new UserError(`${this.label} is not a valid GGUF file: ${why}`);
  }

  remaining(): number {
    return this.size - this.pos;
  }

  /** Consumes n bytes and returns the window index of the first. */
  take(n: number): number {
    const end = this.pos + n;
    if (end > this.size) {
      throw this.fail(`truncated: ${this.what} at byte ${this.pos} needs ${n} bytes but the file ends at byte ${this.size}`);
    }
    if (end > this.maxEnd) {
      throw this.fail(`the header is larger than the ${this.maxEnd}-byte limit (reading ${this.what} at byte ${this.pos})`);
    }
    if (end > this.base + this.buf.length) {
      if (this.growable) throw new NeedMore(end);
      throw this.fail(`the header continues past the ${this.base + this.buf.length} bytes given (reading ${this.what} at byte ${this.pos})`);
    }
    const i = this.pos - this.base;
    this.pos = end;
    return i;
  }

  u8(): number {
    return this.buf[this.take(1)]!;
  }
  u32(): number {
    return this.view.getUint32(this.take(4), true);
  }
  u64(): bigint {
    return this.view.getBigUint64(this.take(8), true);
  }

  /** A u64 length or count, checked to fit in the rest of the file given `minItemBytes` per item. */
  count(kind: string, minItemBytes: number): number {
    const at = this.pos;
    const n = this.u64();
    const need = n * BigInt(minItemBytes);
    if (need > BigInt(this.remaining())) {
      throw this.fail(`${kind} at byte ${at} is ${n}, but only ${this.remaining()} bytes follow: too few for that many (truncated or corrupt?)`);
    }
    if (need > BigInt(this.maxEnd - this.pos)) {
      throw this.fail(`the header is larger than the ${this.maxEnd}-byte limit (${kind} at byte ${at} is ${n})`);
    }
    return Number(n);
  }

  string(strict: boolean): string {
    const at = this.pos;
    const n = this.u64();
    if (n > BigInt(this.remaining())) {
      throw this.fail(`truncated: the string at byte ${at} (${this.what}) is ${n} bytes long but only ${this.remaining()} bytes follow`);
    }
    if (n > BigInt(this.maxString)) {
      throw this.fail(`the string at byte ${at} (${this.what}) is ${n} bytes long, over the ${this.maxString}-byte limit`);
    }
    const len = Number(n);
    const i = this.take(len);
    const bytes = this.buf.subarray(i, i + len);
    if (!strict) return utf8Lenient.decode(bytes);
    try {
      return utf8Strict.decode(bytes);
    } catch {
      throw this.fail(`the string at byte ${at} (${this.what}) is not valid UTF-8`);
    }
  }
}

function readValue(cur: Cursor, typeId: number, depth: number): GgufValue {
  const type = VALUE_TYPE_BY_ID[typeId];
  if (type === undefined) throw cur.fail(`unknown value type ${typeId} at byte ${cur.pos - 4} (${cur.what})`);
  const v = cur.view;
  switch (type) {
    case 'uint8': return { type, value: v.getUint8(cur.take(1)) };
    case 'int8': return { type, value: v.getInt8(cur.take(1)) };
    case 'uint16': return { type, value: v.getUint16(cur.take(2), true) };
    case 'int16': return { type, value: v.getInt16(cur.take(2), true) };
    case 'uint32': return { type, value: v.getUint32(cur.take(4), true) };
    case 'int32': return { type, value: v.getInt32(cur.take(4), true) };
    case 'float32': return { type, value: v.getFloat32(cur.take(4), true) };
    case 'float64': return { type, value: v.getFloat64(cur.take(8), true) };
    case 'uint64': return { type, value: v.getBigUint64(cur.take(8), true) };
    case 'int64': return { type, value: v.getBigInt64(cur.take(8), true) };
    case 'bool': return { type, value: v.getUint8(cur.take(1)) !== 0 };
    case 'string': return { type, value: cur.string(false) };
    case 'array': return { type, value: readArray(cur, depth + 1) };
  }
}

function readArray(cur: Cursor, depth: number): GgufArray {
  const at = cur.pos;
  if (depth > cur.maxDepth) throw cur.fail(`arrays nested more than ${cur.maxDepth} deep at byte ${at} (${cur.what})`);
  const typeId = cur.u32();
  const itemType = VALUE_TYPE_BY_ID[typeId];
  if (itemType === undefined) throw cur.fail(`unknown array item type ${typeId} at byte ${at} (${cur.what})`);
  const minBytes = itemType === 'string' ? 8 : itemType === 'array' ? 12 : itemType === 'bool' ? 1 : NUMBER_SIZE[itemType];
  const n = cur.count(`the length of the ${itemType} array in ${cur.what}`, minBytes);
  switch (itemType) {
    case 'bool': {
      const i = cur.take(n);
      const items = new Array<boolean>(n);
      for (let k = 0; k < n; k++) items[k] = cur.buf[i + k] !== 0;
      return { itemType, items };
    }
    case 'string': {
      // Grown item by item: memory follows the bytes actually read, never the claimed count.
      const items: string[] = [];
      for (let k = 0; k < n; k++) items.push(cur.string(false));
      return { itemType, items };
    }
    case 'array': {
      const items: GgufArray[] = [];
      for (let k = 0; k < n; k++) items.push(readArray(cur, depth + 1));
      return { itemType, items };
    }
    default: {
      const size = NUMBER_SIZE[itemType];
      const i = cur.take(n * size);
      return { itemType, items: numericItems(itemType, cur.buf, i, n) } as GgufArray;
    }
  }
}

function numericItems(type: GgufNumberType | GgufBigIntType, buf: Uint8Array, i: number, n: number): ArrayLike<number> | ArrayLike<bigint> {
  const size = NUMBER_SIZE[type];
  // A copy into a fresh ArrayBuffer at offset 0 (so aligned), which the typed array can view directly.
  // (Not buf.slice(): on a Buffer that is a view into Node's shared pool.)
  const copy = new Uint8Array(n * size);
  copy.set(buf.subarray(i, i + n * size));
  if (LITTLE_ENDIAN_HOST) {
    switch (type) {
      case 'uint8': return copy;
      case 'int8': return new Int8Array(copy.buffer, 0, n);
      case 'uint16': return new Uint16Array(copy.buffer, 0, n);
      case 'int16': return new Int16Array(copy.buffer, 0, n);
      case 'uint32': return new Uint32Array(copy.buffer, 0, n);
      case 'int32': return new Int32Array(copy.buffer, 0, n);
      case 'float32': return new Float32Array(copy.buffer, 0, n);
      case 'float64': return new Float64Array(copy.buffer, 0, n);
      case 'uint64': return new BigUint64Array(copy.buffer, 0, n);
      case 'int64': return new BigInt64Array(copy.buffer, 0, n);
    }
  }
  const v = new DataView(copy.buffer);
  const fill = <T extends { [k: number]: number | bigint }>(out: T, get: (o: number) => number | bigint): T => {
    for (let k = 0; k < n; k++) out[k] = get(k * size);
    return out;
  };
  switch (type) {
    case 'uint8': return copy;
    case 'int8': return new Int8Array(copy.buffer, 0, n);
    case 'uint16': return fill(new Uint16Array(n), (o) => v.getUint16(o, true));
    case 'int16': return fill(new Int16Array(n), (o) => v.getInt16(o, true));
    case 'uint32': return fill(new Uint32Array(n), (o) => v.getUint32(o, true));
    case 'int32': return fill(new Int32Array(n), (o) => v.getInt32(o, true));
    case 'float32': return fill(new Float32Array(n), (o) => v.getFloat32(o, true));
    case 'float64': return fill(new Float64Array(n), (o) => v.getFloat64(o, true));
    case 'uint64': return fill(new BigUint64Array(n), (o) => v.getBigUint64(o, true));
    case 'int64': return fill(new BigInt64Array(n), (o) => v.getBigInt64(o, true));
  }
}

interface RawTensorInfo {
  at: number;
  name: string;
  dims: number[];
  type: GgmlTypeInfo;
  offset: bigint;
}

/** One parser step; retried from its start (after reading more of the file) when it runs off the window. */
function* step<T>(cur: Cursor, fn: () => T): Generator<number, T> {
  for (;;) {
    const start = cur.pos;
    try {
      return fn();
    } catch (e) {
      if (!(e instanceof NeedMore)) throw e;
      cur.pos = start;
      yield e.end;
    }
  }
}

/** The whole header parse; yields the file offset it needs read up to whenever the window runs short. */
function* parse(cur: Cursor): Generator<number, GgufHeader> {
  const version = yield* step(cur, () => {
    cur.what = 'the magic';
    const m = cur.take(4);
    const magic = String.fromCharCode(...cur.buf.subarray(m, m + 4));
    if (magic !== GGUF_MAGIC) {
      throw cur.fail(`bad magic at byte 0: expected "GGUF", found ${JSON.stringify(magic)}`);
    }
    cur.what = 'the version';
    const ver = cur.u32();
    if (ver !== 2 && ver !== 3) {
      const swapped = ((ver & 0xff) << 24 | (ver & 0xff00) << 8 | (ver >>> 8) & 0xff00 | ver >>> 24) >>> 0;
      if ((ver & 0xffff) === 0 && (swapped === 2 || swapped === 3)) {
        throw cur.fail(`big-endian GGUF (version field at byte 4) is not supported`);
      }
      throw cur.fail(`unsupported version ${ver} at byte 4 (this reader handles GGUF versions 2 and 3)`);
    }
    return ver;
  });

  const [tensorCount, kvCount] = yield* step(cur, () => {
    cur.what = 'the tensor count';
    const t = cur.count('the tensor count', MIN_TENSOR_INFO_BYTES);
    cur.what = 'the metadata count';
    const k = cur.count('the metadata count', MIN_KV_BYTES);
    return [t, k] as const;
  });

  const metadata: GgufKV[] = [];
  const keys = new Map<string, number>();
  for (let i = 0; i < kvCount; i++) {
    const entry = yield* step(cur, () => {
      const at = cur.pos;
      cur.what = `metadata key #${i}`;
      const key = cur.string(true);
      const prev = keys.get(key);
      if (prev !== undefined) throw cur.fail(`duplicate metadata key ${JSON.stringify(key)} at byte ${at} (first at byte ${prev})`);
      cur.what = `metadata value ${JSON.stringify(key)}`;
      const value = readValue(cur, cur.u32(), 0);
      return { at, kv: { key, ...value } as GgufKV };
    });
    keys.set(entry.kv.key, entry.at);
    metadata.push(entry.kv);
  }

  const raw: RawTensorInfo[] = [];
  const names = new Map<string, number>();
  for (let i = 0; i < tensorCount; i++) {
    const info = yield* step(cur, () => {
      const at = cur.pos;
      cur.what = `tensor info #${i}`;
      const name = cur.string(true);
      const prev = names.get(name);
      if (prev !== undefined) throw cur.fail(`duplicate tensor name ${JSON.stringify(name)} at byte ${at} (first at byte ${prev})`);
      cur.what = `tensor info ${JSON.stringify(name)}`;
      const nDims = cur.u32();
      if (nDims > GGML_MAX_DIMS) throw cur.fail(`tensor ${JSON.stringify(name)} (info at byte ${at}) has ${nDims} dimensions; ggml allows at most ${GGML_MAX_DIMS}`);
      const dims: number[] = [];
      for (let d = 0; d < nDims; d++) {
        const n = cur.u64();
        if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw cur.fail(`tensor ${JSON.stringify(name)} (info at byte ${at}) has an implausible dimension ${n}`);
        dims.push(Number(n));
      }
      const typeId = cur.u32();
      const type = GGML_TYPE_BY_ID.get(typeId);
      if (!type) throw cur.fail(`tensor ${JSON.stringify(name)} (info at byte ${at}) has unknown ggml type ${typeId}`);
      const offset = cur.u64();
      return { at, name, dims, type, offset };
    });
    names.set(info.name, info.at);
    raw.push(info);
  }
  const headerBytes = cur.pos;
  return finish(cur, version, metadata, keys, raw, headerBytes);
}

function finish(
  cur: Cursor, version: number, metadata: GgufKV[], keyOffsets: Map<string, number>, raw: RawTensorInfo[], headerBytes: number,
): GgufHeader {
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const al = metadata.find((m) => m.key === 'general.alignment');
  if (al) {
    if (al.type !== 'uint32' || al.value === 0 || (al.value & (al.value - 1)) !== 0) {
      throw cur.fail(`general.alignment (at byte ${keyOffsets.get(al.key)}) must be a uint32 power of two, found ${describe(al)}`);
    }
    alignment = al.value;
  }
  const dataOffset = Math.ceil(headerBytes / alignment) * alignment;
  const size = BigInt(cur.size);
  const tensors: GgufTensorInfo[] = [];
  const infoAt = new Map<string, number>();
  for (const t of raw) {
    infoAt.set(t.name, t.at);
    const what = `tensor ${JSON.stringify(t.name)} (info at byte ${t.at})`;
    if (t.offset % BigInt(alignment) !== 0n) {
      throw cur.fail(`${what} has offset ${t.offset}, not a multiple of the alignment ${alignment}`);
    }
    const ne0 = t.dims[0] ?? 1;
    if (ne0 % t.type.blockSize !== 0) {
      throw cur.fail(`${what} has first dimension ${ne0}, not a multiple of the ${t.type.name} block size ${t.type.blockSize}`);
    }
    let elements = 1n;
    for (const d of t.dims) elements *= BigInt(d);
    const bytes = elements / BigInt(t.type.blockSize) * BigInt(t.type.typeSize);
    const end = BigInt(dataOffset) + t.offset + bytes;
    if (end > size) {
      throw cur.fail(`${what} extends past end of file: its data ends at byte ${end} but the file is ${cur.size} bytes`);
    }
    const offset = Number(t.offset);
    tensors.push({
      name: t.name, dims: t.dims, type: t.type.id, typeName: t.type.name, offset, fileOffset: dataOffset + offset,
      elements: Number(elements), bytes: Number(bytes),
    });
  }
  const byOffset = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byOffset.length; i++) {
    const a = byOffset[i - 1]!;
    const b = byOffset[i]!;
    if (b.offset < a.offset + a.bytes) {
      throw cur.fail(`tensors ${JSON.stringify(a.name)} and ${JSON.stringify(b.name)} (infos at bytes ${infoAt.get(a.name)} and ${infoAt.get(b.name)}) overlap: data bytes ${a.offset}-${a.offset + a.bytes} and ${b.offset}-${b.offset + b.bytes}`);
    }
  }
  return { version, metadata, tensors, alignment, dataOffset, headerBytes, fileSize: cur.size };
}

function describe(v: GgufValue): string {
  if (v.type === 'array') return `an array of ${v.value.items.length} ${v.value.itemType}`;
  return `${v.type} ${typeof v.value === 'string' ? JSON.stringify(v.value) : String(v.value)}`;
}

function cursorFor(label: string, size: number, opts: GgufReadOptions, growable: boolean): Cursor {
  return new Cursor(
    label, size, opts.maxHeaderBytes ?? DEFAULT_MAX_HEADER, opts.maxStringBytes ?? DEFAULT_MAX_STRING,
    opts.maxArrayDepth ?? DEFAULT_MAX_DEPTH, growable,
  );
}

/**
 * Parses a GGUF header from memory. `buf` holds the file from its start; `fileSize` (default buf.length)
 * is the whole file's size, against which tensor extents are checked, so a header prefix can be parsed.
 */
export function parseGgufHeader(buf: Uint8Array, opts: GgufReadOptions & { fileSize?: number } = {}): GgufHeader {
  const cur = cursorFor(opts.label ?? 'GGUF data', Math.max(opts.fileSize ?? buf.length, buf.length), opts, false);
  cur.setWindow(buf, 0);
  const r = parse(cur).next();
  if (!r.done) throw new Error('GGUF parser asked for more data from a fixed buffer'); // take() throws instead
  return r.value;
}

/** Reads and checks the header of the GGUF file at `path`, reading only the header's bytes. */
export async function readGgufHeader(path: string, opts: GgufReadOptions = {}): Promise<GgufHeader> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const cur = cursorFor(opts.label ?? path, size, opts, true);
    const chunk = Math.max(16, opts.chunkBytes ?? DEFAULT_CHUNK);
    await fill(fh, cur, 0, Math.min(size, chunk));
    const gen = parse(cur);
    for (;;) {
      const r = gen.next();
      if (r.done) return r.value;
      // Keep the current step's bytes, read at least what it needs and grow geometrically so that a step
      // retried after each read costs O(its size) overall.
      const start = cur.pos;
      const want = Math.max(r.value, cur.base + cur.buf.length + Math.max(chunk, cur.buf.length));
      await fill(fh, cur, start, Math.min(size, cur.maxEnd, want));
    }
  } finally {
    await fh.close();
  }
}

async function fill(fh: FileHandle, cur: Cursor, start: number, end: number): Promise<void> {
  const buf = new Uint8Array(end - start);
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, start + off);
    if (bytesRead === 0) {
      throw cur.fail(`truncated: the file ended at byte ${start + off} while being read (it shrank?)`);
    }
    off += bytesRead;
  }
  cur.setWindow(buf, start);
}

// ---------------------------------------------------------------------------------------------------------
// Reading values back out

/** The metadata entry for `key`, or undefined. */
export function ggufKV(header: Pick<GgufHeader, 'metadata'>, key: string): GgufKV | undefined {
  return header.metadata.find((m) => m.key === key);
}

/** The string value of `key`; null when absent or not a string. */
export function ggufString(header: Pick<GgufHeader, 'metadata'>, key: string): string | null {
  const e = ggufKV(header, key);
  return e?.type === 'string' ? e.value : null;
}

/** The integer value of `key` (any integer type) as a number; null when absent, not an integer or unsafe. */
export function ggufInteger(header: Pick<GgufHeader, 'metadata'>, key: string): number | null {
  const e = ggufKV(header, key);
  if (!e || e.type === 'string' || e.type === 'array' || e.type === 'bool' || e.type === 'float32' || e.type === 'float64') return null;
  const n = Number(e.value);
  return Number.isSafeInteger(n) ? n : null;
}

export interface GgufSummary {
  architecture: string | null;
  name: string | null;
  /** Sum of tensor element counts in this file (for a split set, add up the parts). */
  parameters: number;
  /** From general.file_type (e.g. "Q4_K_M"), else the tensor type holding the most elements. */
  quantization: string | null;
  context_length: number | null;
  chat_template: string | null;
  license: string | null;
  split: { no: number; count: number; tensors_count: number | null } | null;
}

export function ggufSummary(header: GgufHeader): GgufSummary {
  const architecture = ggufString(header, 'general.architecture');
  const parameters = header.tensors.reduce((s, t) => s + t.elements, 0);
  let quantization: string | null = null;
  const ftype = ggufInteger(header, 'general.file_type');
  if (ftype !== null && ftype >= 0 && ftype <= 0xffffffff) quantization = LLAMA_FILE_TYPES[ftype & ~LLAMA_FTYPE_GUESSED] ?? null;
  if (quantization === null) {
    const byType = new Map<string, number>();
    for (const t of header.tensors) byType.set(t.typeName, (byType.get(t.typeName) ?? 0) + t.elements);
    let best = -1;
    for (const [name, n] of byType) if (n > best) [quantization, best] = [name, n];
  }
  const splitCount = ggufInteger(header, 'split.count');
  return {
    architecture,
    name: ggufString(header, 'general.name'),
    parameters,
    quantization,
    context_length: architecture === null ? null : ggufInteger(header, `${architecture}.context_length`),
    chat_template: ggufString(header, 'tokenizer.chat_template'),
    license: ggufString(header, 'general.license'),
    split: splitCount === null
      ? null
      : { no: ggufInteger(header, 'split.no') ?? 0, count: splitCount, tensors_count: ggufInteger(header, 'split.tensors.count') },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Split files: NAME-00001-of-00003.gguf (llama.cpp's gguf-split naming; numbers are 1-based)

export interface GgufSplitName {
  base: string;
  /** 1-based. */
  index: number;
  count: number;
}

const SPLIT_RE = /^(.+)-(\d{5,})-of-(\d{5,})\.gguf$/;

/** The parts of a split file name (a path's last component is used), or null for any other name. */
export function parseGgufSplitName(fileName: string): GgufSplitName | null {
  const m = SPLIT_RE.exec(basename(fileName));
  if (!m) return null;
  const index = Number(m[2]);
  const count = Number(m[3]);
  if (index < 1 || count < 1 || index > count) return null;
  return { base: m[1]!, index, count };
}

export function ggufSplitName(base: string, index: number, count: number): string {
  return `${base}-${String(index).padStart(5, '0')}-of-${String(count).padStart(5, '0')}.gguf`;
}

export interface GgufFileSet {
  /** The model's name: the file name without .gguf, or a split set's common prefix. */
  base: string;
  /** Files in load order (the first holds the metadata); one for an unsplit model. */
  files: string[];
  split: boolean;
}

/**
 * Groups file names (or paths) ending in .gguf into models: single files, and split sets in order.
 * Other names are ignored. Throws a UserError for an incomplete or inconsistent split set.
 */
export function groupGgufFiles(fileNames: readonly string[]): GgufFileSet[] {
  const singles: GgufFileSet[] = [];
  const sets = new Map<string, { count: number; parts: Map<number, string>; dir: string }>();
  for (const f of fileNames) {
    if (!basename(f).toLowerCase().endsWith('.gguf')) continue;
    const s = parseGgufSplitName(f);
    if (!s) {
      singles.push({ base: basename(f).replace(/\.gguf$/i, ''), files: [f], split: false });
      continue;
    }
    const key = `${dirname(f)}\0${s.base}`;
    let set = sets.get(key);
    if (!set) sets.set(key, (set = { count: s.count, parts: new Map(), dir: dirname(f) }));
    if (set.count !== s.count) {
      throw new UserError(`split GGUF set ${JSON.stringify(s.base)} mixes part counts: ${set.count} and ${s.count} (${basename(f)})`);
    }
    const dup = set.parts.get(s.index);
    if (dup !== undefined) throw new UserError(`split GGUF set ${JSON.stringify(s.base)} has part ${s.index} twice: ${dup} and ${f}`);
    set.parts.set(s.index, f);
  }
  const out = [...singles];
  for (const [key, set] of sets) {
    const base = key.slice(key.indexOf('\0') + 1);
    const missing: string[] = [];
    for (let i = 1; i <= set.count; i++) if (!set.parts.has(i)) missing.push(ggufSplitName(base, i, set.count));
    if (missing.length > 0) {
      const shown = missing.slice(0, 5).join(', ') + (missing.length > 5 ? `, … (${missing.length} in all)` : '');
      throw new UserError(`split GGUF set ${JSON.stringify(base)} is incomplete: ${set.parts.size} of ${set.count} parts present, missing ${shown}`);
    }
    out.push({ base, files: [...set.parts.entries()].sort((a, b) => a[0] - b[0]).map(([, f]) => f), split: true });
  }
  return out.sort((a, b) => (a.base < b.base ? -1 : a.base > b.base ? 1 : 0));
}

/**
 * Checks a split set's headers agree with their names: split.no / split.count in every part, and the
 * first part's split.tensors.count equal to the tensors actually present. `parts` are in load order.
 */
export function checkGgufSplitHeaders(parts: readonly { file: string; header: GgufHeader }[]): void {
  const count = parts.length;
  let tensors = 0;
  parts.forEach(({ file, header }, i) => {
    const s = ggufSummary(header).split;
    if (count === 1 && s === null) return;
    if (s === null) throw new UserError(`${file}: part ${i + 1} of a split GGUF set has no split.count metadata`);
    if (s.count !== count) throw new UserError(`${file}: split.count is ${s.count} but the set has ${count} parts`);
    if (s.no !== i) throw new UserError(`${file}: split.no is ${s.no} but this is part ${i + 1} (split.no ${i} expected)`);
    tensors += header.tensors.length;
  });
  const declared = parts[0] ? ggufSummary(parts[0].header).split?.tensors_count ?? null : null;
  if (declared !== null && declared !== tensors) {
    throw new UserError(`${parts[0]!.file}: split.tensors.count says ${declared} tensors but the ${count} parts hold ${tensors}`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Writer

/** A tensor of a GGUF file being written, without its data (see writeGgufStream). */
export interface GgufTensorDecl {
  name: string;
  /** ggml type name ("F32", "Q4_K", …) or id. */
  type: string | number;
  /** GGUF order: dims[0] varies fastest (the reverse of a numpy/torch shape). */
  dims: number[];
}

export interface GgufTensorSpec {
  name: string;
  /** ggml type name ("F32", "Q4_K", …) or id. */
  type: string | number;
  /** GGUF order: dims[0] varies fastest (the reverse of a numpy/torch shape). */
  dims: number[];
  /** Exactly the tensor's bytes (ggmlTensorBytes), already in ggml's layout. */
  data: Uint8Array;
}

export interface GgufWriteSpec {
  metadata: GgufKV[];
  tensors: GgufTensorSpec[];
  /** Data alignment; default general.alignment from metadata, else 32. Added to metadata when not 32. */
  alignment?: number;
  /** 3 (default) or 2; the layouts are the same. */
  version?: 2 | 3;
}

class ByteWriter {
  private chunks: Uint8Array[] = [];
  private cur = new Uint8Array(4096);
  private view = new DataView(this.cur.buffer);
  private n = 0;
  length = 0;

  private room(k: number): number {
    if (this.n + k > this.cur.length) {
      this.chunks.push(this.cur.subarray(0, this.n));
      this.cur = new Uint8Array(Math.max(65536, k));
      this.view = new DataView(this.cur.buffer);
      this.n = 0;
    }
    const at = this.n;
    this.n += k;
    this.length += k;
    return at;
  }
  // room() may start a new chunk (and view), so it must run before this.view is read.
  u8(v: number): void { const at = this.room(1); this.view.setUint8(at, v); }
  i8(v: number): void { const at = this.room(1); this.view.setInt8(at, v); }
  u16(v: number): void { const at = this.room(2); this.view.setUint16(at, v, true); }
  i16(v: number): void { const at = this.room(2); this.view.setInt16(at, v, true); }
  u32(v: number): void { const at = this.room(4); this.view.setUint32(at, v, true); }
  i32(v: number): void { const at = this.room(4); this.view.setInt32(at, v, true); }
  f32(v: number): void { const at = this.room(4); this.view.setFloat32(at, v, true); }
  f64(v: number): void { const at = this.room(8); this.view.setFloat64(at, v, true); }
  u64(v: bigint): void { const at = this.room(8); this.view.setBigUint64(at, v, true); }
  i64(v: bigint): void { const at = this.room(8); this.view.setBigInt64(at, v, true); }
  bytes(b: Uint8Array): void { const at = this.room(b.length); this.cur.set(b, at); }
  string(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(BigInt(b.length));
    this.bytes(b);
  }
  zeros(k: number): void { this.room(k); this.cur.fill(0, this.n - k, this.n); }
  finish(): Uint8Array {
    return Buffer.concat([...this.chunks, this.cur.subarray(0, this.n)]);
  }
}

const INT_RANGES: Record<string, [number, number]> = {
  uint8: [0, 0xff], int8: [-0x80, 0x7f], uint16: [0, 0xffff], int16: [-0x8000, 0x7fff],
  uint32: [0, 0xffffffff], int32: [-0x80000000, 0x7fffffff],
};

function writeScalar(w: ByteWriter, type: GgufValueType, value: unknown, where: string): void {
  const bad = (why: string) => new UserError(`cannot write GGUF ${where}: ${why}`);
  switch (type) {
    case 'uint8': case 'int8': case 'uint16': case 'int16': case 'uint32': case 'int32': {
      const [lo, hi] = INT_RANGES[type]!;
      if (typeof value !== 'number' || !Number.isInteger(value) || value < lo || value > hi) {
        throw bad(`${String(value)} is not a ${type}`);
      }
      if (type === 'uint8') w.u8(value);
      else if (type === 'int8') w.i8(value);
      else if (type === 'uint16') w.u16(value);
      else if (type === 'int16') w.i16(value);
      else if (type === 'uint32') w.u32(value);
      else w.i32(value);
      return;
    }
    case 'float32': case 'float64':
      if (typeof value !== 'number') throw bad(`${String(value)} is not a number`);
      if (type === 'float32') w.f32(value); else w.f64(value);
      return;
    case 'uint64': case 'int64': {
      if (typeof value === 'number' && !Number.isSafeInteger(value)) throw bad(`${value} is not a safe integer (use a bigint)`);
      if (typeof value !== 'bigint' && typeof value !== 'number') throw bad(`${String(value)} is not an integer`);
      const b = BigInt(value);
      if (type === 'uint64' ? b < 0n || b >= 1n << 64n : b < -(1n << 63n) || b >= 1n << 63n) throw bad(`${b} is not a ${type}`);
      if (type === 'uint64') w.u64(b); else w.i64(b);
      return;
    }
    case 'bool':
      if (typeof value !== 'boolean') throw bad(`${String(value)} is not a boolean`);
      w.u8(value ? 1 : 0);
      return;
    case 'string':
      if (typeof value !== 'string') throw bad(`${String(value)} is not a string`);
      w.string(value);
      return;
    case 'array': {
      const a = value as GgufArray;
      if (typeof a !== 'object' || a === null || !(a.itemType in GGUF_VALUE_TYPE_IDS) || a.items == null) {
        throw bad('an array value must be {itemType, items}');
      }
      w.u32(GGUF_VALUE_TYPE_IDS[a.itemType]);
      w.u64(BigInt(a.items.length));
      for (let i = 0; i < a.items.length; i++) writeScalar(w, a.itemType, a.items[i], `${where}[${i}]`);
      return;
    }
    default:
      throw bad(`unknown value type ${JSON.stringify(type)}`);
  }
}

interface PlannedTensor<T extends GgufTensorDecl = GgufTensorSpec> {
  spec: T;
  offset: number;
  bytes: number;
}

/** Encodes the header (through the padding before the data) and plans where each tensor's data goes. */
function planGguf<T extends GgufTensorDecl>(spec: { metadata: GgufKV[]; tensors: T[]; alignment?: number; version?: 2 | 3 }): { header: Uint8Array; tensors: PlannedTensor<T>[]; alignment: number } {
  const metadata = [...spec.metadata];
  const keys = new Set<string>();
  for (const m of metadata) {
    if (keys.has(m.key)) throw new UserError(`cannot write GGUF: duplicate metadata key ${JSON.stringify(m.key)}`);
    keys.add(m.key);
  }
  const al = metadata.find((m) => m.key === 'general.alignment');
  let alignment = spec.alignment ?? (al?.type === 'uint32' ? al.value : GGUF_DEFAULT_ALIGNMENT);
  if (!Number.isSafeInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0 || alignment > 0x80000000) {
    throw new UserError(`cannot write GGUF: alignment ${alignment} is not a power of two`);
  }
  if (al && (al.type !== 'uint32' || al.value !== alignment)) {
    throw new UserError(`cannot write GGUF: general.alignment (${describe(al)}) disagrees with alignment ${alignment}`);
  }
  if (!al && alignment !== GGUF_DEFAULT_ALIGNMENT) metadata.push(kv.uint32('general.alignment', alignment));

  const w = new ByteWriter();
  w.bytes(Buffer.from(GGUF_MAGIC, 'latin1'));
  w.u32(spec.version ?? 3);
  w.u64(BigInt(spec.tensors.length));
  w.u64(BigInt(metadata.length));
  for (const m of metadata) {
    w.string(m.key);
    if (!(m.type in GGUF_VALUE_TYPE_IDS)) throw new UserError(`cannot write GGUF metadata ${JSON.stringify(m.key)}: unknown type ${JSON.stringify(m.type)}`);
    w.u32(GGUF_VALUE_TYPE_IDS[m.type]);
    writeScalar(w, m.type, m.value, `metadata ${JSON.stringify(m.key)}`);
  }
  const planned: PlannedTensor<T>[] = [];
  const names = new Set<string>();
  let offset = 0;
  for (const t of spec.tensors) {
    const where = `cannot write GGUF tensor ${JSON.stringify(t.name)}`;
    if (names.has(t.name)) throw new UserError(`${where}: duplicate name`);
    names.add(t.name);
    const type = ggmlType(t.type);
    if (!type) throw new UserError(`${where}: unknown ggml type ${JSON.stringify(t.type)}`);
    if (t.dims.length < 1 || t.dims.length > GGML_MAX_DIMS || !t.dims.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new UserError(`${where}: dims ${JSON.stringify(t.dims)} must be 1 to ${GGML_MAX_DIMS} non-negative integers`);
    }
    if (t.dims[0]! % type.blockSize !== 0) {
      throw new UserError(`${where}: first dimension ${t.dims[0]} is not a multiple of the ${type.name} block size ${type.blockSize}`);
    }
    const bytes = ggmlTensorBytes(type, t.dims);
    const data = (t as Partial<GgufTensorSpec>).data;
    if (data !== undefined && data.length !== bytes) throw new UserError(`${where}: ${type.name} ${JSON.stringify(t.dims)} takes ${bytes} bytes but ${data.length} were given`);
    w.string(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(BigInt(d));
    w.u32(type.id);
    w.u64(BigInt(offset));
    planned.push({ spec: t, offset, bytes });
    offset += Math.ceil(bytes / alignment) * alignment;
  }
  w.zeros((alignment - (w.length % alignment)) % alignment);
  return { header: w.finish(), tensors: planned, alignment };
}

/** The whole GGUF file in memory (for tests and small files; writeGguf streams). */
export function encodeGguf(spec: GgufWriteSpec): Uint8Array {
  const { header, tensors, alignment } = planGguf(spec);
  const parts: Uint8Array[] = [header];
  for (const t of tensors) {
    parts.push(t.spec.data);
    const pad = (alignment - (t.bytes % alignment)) % alignment;
    if (pad) parts.push(new Uint8Array(pad));
  }
  return Buffer.concat(parts);
}

/**
 * Writes a GGUF file that llama.cpp and gguf-py load: the header, then each tensor's data padded to the
 * alignment. Written to a temp file beside `path` and renamed into place, so `path` is never half-written.
 */
export async function writeGguf(path: string, spec: GgufWriteSpec): Promise<{ bytes: number; dataOffset: number }> {
  const { header, tensors, alignment } = planGguf(spec);
  const tmp = tempPathFor(path);
  const fh = await open(tmp, 'wx', 0o644);
  let done = false;
  try {
    let pos = 0;
    const write = async (b: Uint8Array) => {
      let off = 0;
      while (off < b.length) {
        const { bytesWritten } = await fh.write(b, off, b.length - off, pos + off);
        off += bytesWritten;
      }
      pos += b.length;
    };
    await write(header);
    const zeros = new Uint8Array(alignment);
    for (const t of tensors) {
      await write(t.spec.data);
      const pad = (alignment - (t.bytes % alignment)) % alignment;
      if (pad) await write(zeros.subarray(0, pad));
    }
    await fh.sync();
    await fh.close();
    await rename(tmp, path);
    done = true;
    await fsyncDir(dirname(path));
    return { bytes: pos, dataOffset: header.length };
  } finally {
    if (!done) {
      await fh.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
    }
  }
}

export interface GgufStreamSpec<T extends GgufTensorDecl = GgufTensorDecl> {
  metadata: GgufKV[];
  /** Written in this order; each one's data comes from `produce`. */
  tensors: T[];
  alignment?: number;
  version?: 2 | 3;
}

/** Buffered writes of at least this many bytes each. */
const STREAM_BUFFER = 4 * 1024 * 1024;

/**
 * Writes a GGUF file whose tensor data is produced one tensor at a time, so a model larger than memory can be
 * written: `produce(tensor, write)` is called for each tensor in order and must pass exactly that tensor's
 * bytes (ggmlTensorBytes) to `write`, in as many chunks as it likes. Like writeGguf, the file is written
 * beside `path` and renamed into place only when complete.
 */
export async function writeGgufStream<T extends GgufTensorDecl>(
  path: string,
  spec: GgufStreamSpec<T>,
  produce: (tensor: T, write: (chunk: Uint8Array) => Promise<void>) => Promise<void>,
): Promise<{ bytes: number; dataOffset: number }> {
  const { header, tensors, alignment } = planGguf(spec);
  const tmp = tempPathFor(path);
  const fh = await open(tmp, 'wx', 0o644);
  let done = false;
  try {
    let pos = 0;
    let buf: Uint8Array = new Uint8Array(STREAM_BUFFER);
    let fill = 0;
    const flush = async () => {
      let off = 0;
      while (off < fill) {
        const { bytesWritten } = await fh.write(buf, off, fill - off, pos + off);
        off += bytesWritten;
      }
      pos += fill;
      fill = 0;
    };
    const put = async (b: Uint8Array) => {
      if (fill + b.length > buf.length) await flush();
      if (b.length >= buf.length) {
        // Large chunks go straight to the file (the buffer is empty after the flush above).
        const saved = buf;
        buf = b;
        fill = b.length;
        await flush();
        buf = saved;
        return;
      }
      buf.set(b, fill);
      fill += b.length;
    };
    await put(header);
    const zeros = new Uint8Array(alignment);
    for (const t of tensors) {
      let got = 0;
      await produce(t.spec, async (chunk) => {
        got += chunk.length;
        if (got > t.bytes) throw new Error(`GGUF tensor ${JSON.stringify(t.spec.name)}: more than its ${t.bytes} bytes were written`);
        await put(chunk);
      });
      if (got !== t.bytes) throw new Error(`GGUF tensor ${JSON.stringify(t.spec.name)}: ${got} of its ${t.bytes} bytes were written`);
      const pad = (alignment - (t.bytes % alignment)) % alignment;
      if (pad) await put(zeros.subarray(0, pad));
    }
    await flush();
    await fh.sync();
    await fh.close();
    await rename(tmp, path);
    done = true;
    await fsyncDir(dirname(path));
    return { bytes: pos, dataOffset: header.length };
  } finally {
    if (!done) {
      await fh.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
    }
  }
}
