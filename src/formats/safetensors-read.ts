import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { showValue, UserError } from '../core/errors.js';
import { readSafetensorsInfo } from '../vault/safetensors.js';
import { bf16ToF32Array, f16ToF32Array, f32FromBytes } from './quantize.js';

/**
 * Reading tensor data out of a Hugging Face model's safetensors files (one file, or shards named by
 * model.safetensors.index.json), a slice of rows at a time, converted to float32. Nothing is mapped or held
 * beyond the rows asked for, so a model larger than memory can be streamed tensor by tensor.
 */

/** Input dtypes the export reads (converted to float32). */
export const READABLE_DTYPES = ['F32', 'F16', 'BF16'] as const;
const DTYPE_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2 };

export interface StoredTensor {
  name: string;
  dtype: string;
  /** PyTorch order: shape[0] is the slowest-varying (rows). */
  shape: number[];
  file: string;
  /** Absolute byte offset of the data in `file`. */
  offset: number;
  bytes: number;
}

/** Rows (shape[0]) and the elements per row (the rest of the shape); a 1-D tensor is one row. */
export function rowsOf(t: Pick<StoredTensor, 'shape'>): { rows: number; rowLength: number } {
  if (t.shape.length <= 1) return { rows: 1, rowLength: t.shape[0] ?? 1 };
  return { rows: t.shape[0]!, rowLength: t.shape.slice(1).reduce((a, b) => a * b, 1) };
}

/** The safetensors files that make up the model in `dir`: the index's shards, else every top-level *.safetensors. */
export function safetensorsFilesOf(dir: string): string[] {
  const index = ['model.safetensors.index.json', 'adapter_model.safetensors.index.json'].map((f) => join(dir, f)).find((f) => existsSync(f));
  if (index) {
    let weightMap: unknown;
    try {
      weightMap = (JSON.parse(readFileSync(index, 'utf8')) as { weight_map?: unknown }).weight_map;
    } catch (e) {
      throw new UserError(`${index} is not valid JSON: ${(e as Error).message}`);
    }
    if (typeof weightMap !== 'object' || weightMap === null) throw new UserError(`${index} has no weight_map`);
    const shards = [...new Set(Object.values(weightMap as Record<string, unknown>))];
    for (const s of shards) {
      if (typeof s !== 'string' || s.includes('/') || s.includes('\\')) throw new UserError(`${index} names an invalid shard ${showValue(s)}`);
      if (!existsSync(join(dir, s))) throw new UserError(`${index} names shard ${s}, which is not in the folder (incomplete download?)`);
    }
    return (shards as string[]).sort().map((s) => join(dir, s));
  }
  const files = readdirSync(dir).filter((f) => f.endsWith('.safetensors') && !f.startsWith('.')).sort();
  if (files.length === 0) {
    const bins = readdirSync(dir).filter((f) => /^(pytorch_model|adapter_model).*\.bin$/.test(f));
    throw new UserError(
      `${dir} has no safetensors weights${bins.length > 0 ? ` (only PyTorch pickles: ${bins.join(', ')})` : ''}`,
      bins.length > 0 ? 'GGUF export reads safetensors only: re-save the model with save_pretrained(safe_serialization=True)' : undefined,
    );
  }
  return files.map((f) => join(dir, f));
}

/** Every tensor of the model in `dir`, by name. A name in two files is an error. */
export async function listStoredTensors(dir: string): Promise<Map<string, StoredTensor>> {
  const out = new Map<string, StoredTensor>();
  for (const file of safetensorsFilesOf(dir)) {
    const info = await readSafetensorsInfo(file);
    for (const t of info.tensors) {
      if (out.has(t.name)) throw new UserError(`tensor ${t.name} appears in both ${out.get(t.name)!.file} and ${file}`);
      out.set(t.name, { name: t.name, dtype: t.dtype, shape: t.shape, file, offset: info.headerEnd + t.begin, bytes: t.end - t.begin });
    }
  }
  return out;
}

export function checkReadableDtype(t: StoredTensor): void {
  if (!(t.dtype in DTYPE_BYTES)) {
    throw new UserError(
      `tensor ${t.name} in ${t.file} has dtype ${t.dtype}, which GGUF export cannot read`,
      `supported weight dtypes: ${READABLE_DTYPES.join(', ')} (dequantize or convert the model to one of them first)`,
    );
  }
}

/** Open file handles, shared across reads of one export and closed together. */
export class TensorReader {
  private handles = new Map<string, Promise<FileHandle>>();

  private handle(file: string): Promise<FileHandle> {
    let h = this.handles.get(file);
    if (!h) {
      h = open(file, 'r');
      this.handles.set(file, h);
    }
    return h;
  }

  /** Rows [start, start + count) of `t` as float32. */
  async readRows(t: StoredTensor, start: number, count: number): Promise<Float32Array> {
    checkReadableDtype(t);
    const { rows, rowLength } = rowsOf(t);
    if (start < 0 || count < 0 || start + count > rows) throw new Error(`rows ${start}+${count} out of range for ${t.name} (${rows} rows)`);
    const size = DTYPE_BYTES[t.dtype]!;
    const bytes = count * rowLength * size;
    const buf = new Uint8Array(bytes);
    const fh = await this.handle(t.file);
    const position = t.offset + start * rowLength * size;
    let off = 0;
    while (off < bytes) {
      const { bytesRead } = await fh.read(buf, off, bytes - off, position + off);
      if (bytesRead === 0) throw new UserError(`${t.file} ended while reading tensor ${t.name} (truncated or changed during export?)`);
      off += bytesRead;
    }
    if (t.dtype === 'F32') return f32FromBytes(buf);
    if (t.dtype === 'F16') return f16ToF32Array(buf);
    return bf16ToF32Array(buf);
  }

  /** The whole tensor as float32 (for small tensors: norms, biases, LoRA factors). */
  async readAll(t: StoredTensor): Promise<Float32Array> {
    return this.readRows(t, 0, rowsOf(t).rows);
  }

  async close(): Promise<void> {
    const hs = [...this.handles.values()];
    this.handles.clear();
    for (const h of hs) await (await h).close().catch(() => undefined);
  }
}
