import { open } from 'node:fs/promises';
import { showValue, UserError } from '../core/errors.js';

/**
 * Reads and checks a safetensors header without touching the tensor data, so a 10 GB shard costs one
 * small read. Layout: 8-byte little-endian header length N, N bytes of JSON, then the data buffer that
 * every tensor's `data_offsets` (relative to the buffer) points into.
 */

/** The format's own limit on the header; anything bigger is a corrupt length field, not a real header. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** Bits per element. Sub-byte types are packed, so their byte sizes are not checked. */
const DTYPE_BITS: Record<string, number> = {
  BOOL: 8, U8: 8, I8: 8, F8_E5M2: 8, F8_E4M3: 8, F8_E8M0: 8,
  I16: 16, U16: 16, F16: 16, BF16: 16,
  I32: 32, U32: 32, F32: 32,
  I64: 64, U64: 64, F64: 64, C64: 64,
  F4: 4, F6_E2M3: 6, F6_E3M2: 6,
};

/** safetensors dtype → the name torch / config.json use, so manifests read like `torch_dtype`. */
const TORCH_DTYPE: Record<string, string> = {
  BOOL: 'bool', U8: 'uint8', I8: 'int8', I16: 'int16', U16: 'uint16', I32: 'int32', U32: 'uint32',
  I64: 'int64', U64: 'uint64', F16: 'float16', BF16: 'bfloat16', F32: 'float32', F64: 'float64',
  F8_E5M2: 'float8_e5m2', F8_E4M3: 'float8_e4m3fn', F8_E8M0: 'float8_e8m0fnu', C64: 'complex64',
};

export function torchDtypeName(dtype: string): string {
  return TORCH_DTYPE[dtype] ?? dtype.toLowerCase();
}

export interface SafetensorsTensor {
  name: string;
  dtype: string;
  shape: number[];
  /** Offsets into the data buffer (after the header). */
  begin: number;
  end: number;
}

export interface SafetensorsInfo {
  /** Bytes before the data buffer: 8 + header length. */
  headerEnd: number;
  dataSize: number;
  fileSize: number;
  tensors: SafetensorsTensor[];
  /** Sum of element counts over all tensors. */
  parameters: number;
  /** Element count per safetensors dtype. */
  elementsByDtype: Record<string, number>;
  metadata: Record<string, string> | null;
}

/** Reads `path`'s header and checks it against the file size. Errors name the file as `label`. */
export async function readSafetensorsInfo(path: string, label: string = path): Promise<SafetensorsInfo> {
  const bad = (why: string) => new UserError(`${label} is not a valid safetensors file: ${why}`);
  const fh = await open(path, 'r');
  try {
    const fileSize = (await fh.stat()).size;
    if (fileSize < 8) throw bad(`it is ${fileSize} bytes long, too short for the 8-byte header length (truncated?)`);
    const lenBuf = Buffer.alloc(8);
    await readExactly(fh, lenBuf, 0);
    const headerLen = lenBuf.readBigUInt64LE(0);
    if (headerLen > BigInt(MAX_HEADER_BYTES)) throw bad(`header length ${headerLen} is implausible (corrupt file?)`);
    const n = Number(headerLen);
    if (8 + n > fileSize) {
      throw bad(`truncated: the header needs ${8 + n} bytes but the file has ${fileSize}`);
    }
    const headerBuf = Buffer.alloc(n);
    await readExactly(fh, headerBuf, 8);
    let header: unknown;
    try {
      header = JSON.parse(headerBuf.toString('utf8'));
    } catch (e) {
      throw bad(`the header is not valid JSON (${(e as Error).message})`);
    }
    if (!isPlainObject(header)) throw bad('the header is not a JSON object');

    const headerEnd = 8 + n;
    const available = fileSize - headerEnd;
    const tensors: SafetensorsTensor[] = [];
    // No prototype: dtype strings come from the file ("__proto__" must be just another unknown key).
    const elementsByDtype: Record<string, number> = Object.create(null) as Record<string, number>;
    let metadata: Record<string, string> | null = null;
    let dataSize = 0;
    let parameters = 0;
    for (const [name, entry] of Object.entries(header)) {
      if (name === '__metadata__') {
        if (isPlainObject(entry)) metadata = entry as Record<string, string>;
        continue;
      }
      if (!isPlainObject(entry)) throw bad(`tensor ${JSON.stringify(name)} has no description`);
      const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
      if (typeof dtype !== 'string') throw bad(`tensor ${JSON.stringify(name)} has no dtype`);
      if (!Array.isArray(shape) || !shape.every(isNonNegativeInt)) {
        throw bad(`tensor ${JSON.stringify(name)} has an invalid shape ${showValue(shape)}`);
      }
      if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInt) || offsets[0]! > offsets[1]!) {
        throw bad(`tensor ${JSON.stringify(name)} has invalid data_offsets ${showValue(offsets)}`);
      }
      const [begin, end] = offsets as [number, number];
      if (end > available) {
        throw bad(`truncated: tensor ${JSON.stringify(name)} ends at data byte ${end} but only ${available} data bytes are present`);
      }
      const numel = (shape as number[]).reduce((a, b) => a * b, 1);
      const bits = DTYPE_BITS[dtype];
      if (bits !== undefined && bits % 8 === 0 && end - begin !== (numel * bits) / 8) {
        throw bad(`tensor ${JSON.stringify(name)} (${dtype} ${showValue(shape)}) should take ${(numel * bits) / 8} bytes but its data_offsets span ${end - begin}`);
      }
      tensors.push({ name, dtype, shape: shape as number[], begin, end });
      parameters += numel;
      elementsByDtype[dtype] = (elementsByDtype[dtype] ?? 0) + numel;
      dataSize = Math.max(dataSize, end);
    }
    if (fileSize !== headerEnd + dataSize) {
      throw bad(`the file is ${fileSize} bytes but header (${headerEnd}) + tensor data (${dataSize}) make ${headerEnd + dataSize}`);
    }
    return { headerEnd, dataSize, fileSize, tensors, parameters, elementsByDtype, metadata };
  } finally {
    await fh.close();
  }
}

async function readExactly(fh: import('node:fs/promises').FileHandle, buf: Buffer, position: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, position + off);
    if (bytesRead === 0) throw new Error('unexpected end of file');
    off += bytesRead;
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNonNegativeInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}
