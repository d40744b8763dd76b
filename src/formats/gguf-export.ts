import { existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { showValue, UserError } from '../core/errors.js';
import { kv, readGgufHeader, writeGgufStream, type GgufKV, type GgufTensorDecl } from './gguf.js';
import { encodeAs, type GgmlOutType } from './quantize.js';
import { listStoredTensors, checkReadableDtype, rowsOf, TensorReader, type StoredTensor } from './safetensors-read.js';
import { readHfTokenizer, tokenizerMetadata, type GgufTokenizer } from './hf-tokenizer-to-gguf.js';
import { readJsonObject } from '../core/json-file.js';

/**
 * Hugging Face model folder (config.json, safetensors, tokenizer.json) → a GGUF file llama.cpp runs.
 *
 * Streaming: the header is written first, then each tensor is read from its safetensors file a slice of rows
 * at a time, converted to float32, permuted where llama.cpp's layout differs, encoded (F32, F16 or Q8_0)
 * and written; no more than one slice of one tensor is in memory.
 *
 * Conventions follow llama.cpp's convert_hf_to_gguf.py: llama.cpp tensor names; 1-D tensors, norms and
 * biases stay F32; a Q8_0 export stores 2-D weights whose rows are not a multiple of 32 as F16; the `llama`
 * architecture rotates interleaved pairs while Hugging Face Llama rotates halves, so q/k projection rows are
 * permuted per head (k with the key/value head count). Qwen2/Qwen3 use the same rotation as Hugging Face and
 * need no permutation.
 */

export const GGUF_EXPORT_TYPES = ['f32', 'f16', 'q8_0'] as const;
export type GgufExportType = (typeof GGUF_EXPORT_TYPES)[number];

/** llama.cpp's general.file_type for each export type (LLAMA_FTYPE_ALL_F32, MOSTLY_F16, MOSTLY_Q8_0). */
const FILE_TYPE: Record<GgufExportType, number> = { f32: 0, f16: 1, q8_0: 7 };

export type GgufArch = 'llama' | 'qwen2' | 'qwen3';

/** config.json `architectures[0]` → llama.cpp architecture. */
export const SUPPORTED_ARCHITECTURES: Readonly<Record<string, GgufArch>> = {
  LlamaForCausalLM: 'llama',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
};

export interface ExportProgress {
  /** Bytes of source tensor data read so far. */
  bytesDone: number;
  bytesTotal: number;
  /** The tensor being converted (llama.cpp name). */
  tensor: string;
}

export interface GgufExportOptions {
  type?: GgufExportType;
  /** general.name (default: the folder's name). */
  name?: string;
  /** general.license, when known. */
  license?: string | null;
  onProgress?: (p: ExportProgress) => void;
}

export interface GgufExportResult {
  path: string;
  architecture: GgufArch;
  type: GgufExportType;
  tensors: number;
  parameters: number;
  bytes: number;
  tokenizer: { model: string; pre: string; tokens: number };
  /** Tensors by the ggml type they were stored as, e.g. {F32: 11, Q8_0: 14, F16: 5}. */
  tensorTypes: Record<string, number>;
  notes: string[];
}

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

export interface RopeScaling {
  type: 'none' | 'linear' | 'llama3' | 'yarn';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalContext: number | null;
}

/** The model's shape and settings, read from config.json. */
export interface ModelHparams {
  arch: GgufArch;
  hfArchitecture: string;
  nEmbd: number;
  nLayer: number;
  nFf: number;
  nHead: number;
  nHeadKv: number;
  headDim: number;
  rmsEps: number;
  ropeTheta: number;
  rope: RopeScaling;
  contextLength: number;
  vocabSize: number;
  tiedEmbeddings: boolean;
}

/** Reads and checks config.json of a model folder for GGUF export. */
export function readModelHparams(dir: string): ModelHparams {
  const path = join(dir, 'config.json');
  if (!existsSync(path)) throw new UserError(`${path} is missing: not a Hugging Face model folder`);
  const c = readJsonObject(path);
  const archs = Array.isArray(c.architectures) ? c.architectures : [];
  const hfArch = typeof archs[0] === 'string' ? archs[0] : null;
  const arch = hfArch !== null ? SUPPORTED_ARCHITECTURES[hfArch] : undefined;
  if (arch === undefined) {
    throw new UserError(
      `cannot export ${dir} to GGUF: architecture ${hfArch === null ? `(none named; model_type ${showValue(c.model_type)})` : hfArch} is not supported`,
      `supported architectures: ${Object.keys(SUPPORTED_ARCHITECTURES).join(', ')}`,
    );
  }
  const bad = (why: string) => new UserError(`cannot export ${dir} to GGUF: config.json ${why}`);
  const int = (key: string, fallback?: number): number => {
    const v = c[key] ?? fallback;
    if (!Number.isSafeInteger(v) || (v as number) <= 0) throw bad(`${key} is ${showValue(v)}, expected a positive integer`);
    return v as number;
  };
  const nEmbd = int('hidden_size');
  const nHead = int('num_attention_heads');
  const nHeadKv = int('num_key_value_heads', nHead);
  const headDim = c.head_dim == null ? nEmbd / nHead : int('head_dim');
  if (!Number.isSafeInteger(headDim) || headDim % 2 !== 0) throw bad(`gives a head size of ${headDim}, which is not an even integer`);
  if (nHead % nHeadKv !== 0) throw bad(`num_attention_heads ${nHead} is not a multiple of num_key_value_heads ${nHeadKv}`);
  const act = c.hidden_act ?? c.hidden_activation ?? 'silu';
  if (act !== 'silu') throw bad(`hidden_act is ${showValue(act)}; llama.cpp's ${arch} uses silu`);
  if (c.mlp_bias === true) throw bad('has mlp_bias: MLP biases are not supported by this export');
  if (c.use_sliding_window === true) throw bad('enables sliding-window attention, which this export does not support');
  const rmsEps = typeof c.rms_norm_eps === 'number' ? c.rms_norm_eps : 1e-6;

  // transformers ≥ 5 writes rope_parameters {rope_type, rope_theta, …}; older configs rope_theta + rope_scaling.
  const rp = isObj(c.rope_parameters) ? c.rope_parameters : isObj(c.rope_scaling) ? c.rope_scaling : null;
  const theta = typeof c.rope_theta === 'number' ? c.rope_theta : typeof rp?.rope_theta === 'number' ? rp.rope_theta : 10000;
  const ropeType = String(rp?.rope_type ?? rp?.type ?? 'default');
  const num = (v: unknown, d: number) => (typeof v === 'number' ? v : d);
  const rope: RopeScaling = {
    type: 'none', factor: num(rp?.factor, 1), lowFreqFactor: num(rp?.low_freq_factor, 1), highFreqFactor: num(rp?.high_freq_factor, 4),
    originalContext: typeof rp?.original_max_position_embeddings === 'number' ? rp.original_max_position_embeddings : null,
  };
  if (ropeType === 'linear' || ropeType === 'llama3' || ropeType === 'yarn') rope.type = ropeType;
  else if (ropeType !== 'default') throw bad(`uses rope scaling ${showValue(ropeType)}; supported: default, linear, llama3, yarn`);
  if (rope.type === 'llama3' && rope.originalContext === null) rope.originalContext = 8192;
  if (rope.type === 'yarn' && rope.originalContext === null) throw bad('uses yarn rope scaling without original_max_position_embeddings');

  return {
    arch, hfArchitecture: hfArch!, nEmbd, nLayer: int('num_hidden_layers'), nFf: int('intermediate_size'), nHead, nHeadKv, headDim,
    rmsEps, ropeTheta: theta, rope, contextLength: int('max_position_embeddings', 2048), vocabSize: int('vocab_size'),
    tiedEmbeddings: c.tie_word_embeddings === true,
  };
}

const LAYER_MAP: Readonly<Record<string, string>> = {
  'input_layernorm.weight': 'attn_norm.weight',
  'self_attn.q_proj.weight': 'attn_q.weight',
  'self_attn.k_proj.weight': 'attn_k.weight',
  'self_attn.v_proj.weight': 'attn_v.weight',
  'self_attn.o_proj.weight': 'attn_output.weight',
  'self_attn.q_proj.bias': 'attn_q.bias',
  'self_attn.k_proj.bias': 'attn_k.bias',
  'self_attn.v_proj.bias': 'attn_v.bias',
  'self_attn.o_proj.bias': 'attn_output.bias',
  'self_attn.q_norm.weight': 'attn_q_norm.weight',
  'self_attn.k_norm.weight': 'attn_k_norm.weight',
  'post_attention_layernorm.weight': 'ffn_norm.weight',
  'mlp.gate_proj.weight': 'ffn_gate.weight',
  'mlp.up_proj.weight': 'ffn_up.weight',
  'mlp.down_proj.weight': 'ffn_down.weight',
};
const GLOBAL_MAP: Readonly<Record<string, string>> = {
  'model.embed_tokens.weight': 'token_embd.weight',
  'model.norm.weight': 'output_norm.weight',
  'lm_head.weight': 'output.weight',
};

/** A Hugging Face tensor name → llama.cpp's (e.g. model.layers.3.mlp.up_proj.weight → blk.3.ffn_up.weight), or null. */
export function ggufTensorName(hfName: string): string | null {
  const g = GLOBAL_MAP[hfName];
  if (g) return g;
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hfName);
  const rest = m ? LAYER_MAP[m[2]!] : undefined;
  return m && rest ? `blk.${Number(m[1])}.${rest}` : null;
}

/** Which tensors each architecture has (per layer; `?` = optional). */
function expectedLayerTensors(hp: ModelHparams): { required: string[]; optional: string[] } {
  const required = ['attn_norm.weight', 'attn_q.weight', 'attn_k.weight', 'attn_v.weight', 'attn_output.weight', 'ffn_norm.weight', 'ffn_gate.weight', 'ffn_up.weight', 'ffn_down.weight'];
  const optional: string[] = [];
  if (hp.arch === 'qwen2') required.push('attn_q.bias', 'attn_k.bias', 'attn_v.bias');
  if (hp.arch === 'qwen3') required.push('attn_q_norm.weight', 'attn_k_norm.weight');
  if (hp.arch === 'llama') optional.push('attn_q.bias', 'attn_k.bias', 'attn_v.bias', 'attn_output.bias');
  return { required, optional };
}

/**
 * The permutation llama.cpp's `llama` architecture needs on q/k projection rows (and biases): within each
 * head of `headDim` rows, row 2j+i of the result is row i·headDim/2+j of the input (i ∈ {0,1}). `x` holds whole
 * heads of `rowLength`-element rows.
 */
export function permuteHeads(x: Float32Array, rowLength: number, headDim: number): Float32Array {
  const rows = x.length / rowLength;
  if (!Number.isInteger(rows) || rows % headDim !== 0) throw new Error(`permuteHeads: ${rows} rows is not a whole number of ${headDim}-row heads`);
  const out = new Float32Array(x.length);
  const half = headDim / 2;
  for (let h = 0; h < rows / headDim; h++) {
    const base = h * headDim;
    for (let j = 0; j < half; j++) {
      for (let i = 0; i < 2; i++) {
        const src = (base + i * half + j) * rowLength;
        out.set(x.subarray(src, src + rowLength), (base + 2 * j + i) * rowLength);
      }
    }
  }
  return out;
}

/** For the `llama` architecture: the head size to permute this tensor's rows by, or null (no permutation). */
export function permutationFor(ggufName: string, hp: ModelHparams): number | null {
  if (hp.arch !== 'llama') return null;
  return /^blk\.\d+\.attn_[qk]\.(weight|bias)$/.test(ggufName) ? hp.headDim : null;
}

/** The ggml type a tensor is stored as, as llama.cpp's converter chooses it. */
export function storedType(ggufName: string, shape: readonly number[], type: GgufExportType): GgmlOutType {
  if (type === 'f32' || shape.length < 2 || !ggufName.endsWith('.weight') || ggufName.endsWith('_norm.weight')) return 'F32';
  if (type === 'f16') return 'F16';
  return shape[shape.length - 1]! % 32 === 0 ? 'Q8_0' : 'F16';
}

/** llama 3 rope scaling as llama.cpp takes it: a per-frequency factor tensor (rope_freqs.weight). */
function llama3RopeFactors(hp: ModelHparams): Float32Array {
  const { factor, lowFreqFactor, highFreqFactor } = hp.rope;
  const old = hp.rope.originalContext!;
  const lowWavelen = old / lowFreqFactor;
  const highWavelen = old / highFreqFactor;
  const out = new Float32Array(hp.headDim / 2);
  for (let i = 0; i < out.length; i++) {
    const freq = Math.fround(1 / Math.fround(hp.ropeTheta ** Math.fround((2 * i) / hp.headDim)));
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = factor;
    else {
      const smooth = (old / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      out[i] = 1 / ((1 - smooth) / factor + smooth);
    }
  }
  return out;
}

export function modelMetadata(hp: ModelHparams, name: string, fileType: number | null): GgufKV[] {
  const a = hp.arch;
  const out: GgufKV[] = [
    kv.string('general.architecture', a),
    kv.string('general.type', 'model'),
    kv.string('general.name', name),
  ];
  if (fileType !== null) out.push(kv.uint32('general.file_type', fileType), kv.uint32('general.quantization_version', 2));
  out.push(
    kv.uint32(`${a}.vocab_size`, hp.vocabSize),
    kv.uint32(`${a}.context_length`, hp.contextLength),
    kv.uint32(`${a}.embedding_length`, hp.nEmbd),
    kv.uint32(`${a}.block_count`, hp.nLayer),
    // Without feed_forward_length llama.cpp aborts the process while loading.
    kv.uint32(`${a}.feed_forward_length`, hp.nFf),
    kv.uint32(`${a}.attention.head_count`, hp.nHead),
    kv.uint32(`${a}.attention.head_count_kv`, hp.nHeadKv),
    kv.uint32(`${a}.attention.key_length`, hp.headDim),
    kv.uint32(`${a}.attention.value_length`, hp.headDim),
    kv.uint32(`${a}.rope.dimension_count`, hp.headDim),
    kv.float32(`${a}.rope.freq_base`, hp.ropeTheta),
    kv.float32(`${a}.attention.layer_norm_rms_epsilon`, hp.rmsEps),
  );
  if (hp.rope.type === 'linear' || hp.rope.type === 'yarn') {
    out.push(kv.string(`${a}.rope.scaling.type`, hp.rope.type), kv.float32(`${a}.rope.scaling.factor`, hp.rope.factor));
    if (hp.rope.type === 'yarn') out.push(kv.uint32(`${a}.rope.scaling.original_context_length`, hp.rope.originalContext!));
  }
  return out;
}

interface PlannedTensor extends GgufTensorDecl {
  type: GgmlOutType;
  /** Where the data comes from: a stored tensor, or values computed here (rope factors). */
  source: StoredTensor | Float32Array;
  permuteHeadDim: number | null;
}

/** Source elements per slice read (16 MB of float32). */
const SLICE_ELEMENTS = 4 * 1024 * 1024;

/** Reads, converts and writes one tensor slice by slice. */
export async function streamTensor(
  reader: TensorReader, t: PlannedTensor, write: (b: Uint8Array) => Promise<void>, onRead: (bytes: number) => void,
): Promise<void> {
  if (t.source instanceof Float32Array) {
    await write(encodeAs(t.type, t.source));
    return;
  }
  const src = t.source;
  const { rows, rowLength } = rowsOf(src);
  if (t.permuteHeadDim !== null && src.shape.length === 1) {
    // A bias: its elements are the rows being permuted.
    const x = await reader.readAll(src);
    onRead(src.bytes);
    await write(encodeAs(t.type, permuteHeads(x, 1, t.permuteHeadDim)));
    return;
  }
  let step = Math.max(1, Math.floor(SLICE_ELEMENTS / rowLength));
  if (t.permuteHeadDim !== null) step = Math.max(t.permuteHeadDim, step - (step % t.permuteHeadDim));
  const bytesPerRow = src.bytes / rows;
  for (let r = 0; r < rows; r += step) {
    const count = Math.min(step, rows - r);
    let x = await reader.readRows(src, r, count);
    onRead(bytesPerRow * count);
    if (t.permuteHeadDim !== null) x = permuteHeads(x, rowLength, t.permuteHeadDim);
    await write(encodeAs(t.type, x));
  }
}

/** Checks a stored tensor's shape. */
function expectShape(dir: string, t: StoredTensor, shape: number[], why: string): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new UserError(`cannot export ${dir} to GGUF: tensor ${t.name} has shape ${showValue(t.shape)}, expected ${showValue(shape)} (${why})`);
  }
}

/** Plans every tensor of the export: names, types, shapes checked against the config. */
async function planTensors(dir: string, hp: ModelHparams, type: GgufExportType): Promise<{ tensors: PlannedTensor[]; tied: boolean }> {
  const stored = await listStoredTensors(dir);
  const byGguf = new Map<string, StoredTensor>();
  const unknown: string[] = [];
  for (const t of stored.values()) {
    if (/(^|\.)rotary_emb\.inv_freq$/.test(t.name)) continue; // recomputed by every runtime
    const g = ggufTensorName(t.name);
    if (g === null) unknown.push(t.name);
    else byGguf.set(g, t);
  }
  if (unknown.length > 0) {
    throw new UserError(
      `cannot export ${dir} to GGUF: tensor(s) this ${hp.hfArchitecture} export does not know: ${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? `, … (${unknown.length} in all)` : ''}`,
      'the checkpoint may be a variant of the architecture that GGUF export does not support yet',
    );
  }
  // Tied embeddings: the output projection is the embedding; llama.cpp reuses token_embd when output is absent.
  const tied = hp.tiedEmbeddings || !byGguf.has('output.weight');
  if (tied) byGguf.delete('output.weight');

  const { required, optional } = expectedLayerTensors(hp);
  const names: string[] = ['token_embd.weight'];
  for (let i = 0; i < hp.nLayer; i++) {
    for (const n of required) names.push(`blk.${i}.${n}`);
    for (const n of optional) if (byGguf.has(`blk.${i}.${n}`)) names.push(`blk.${i}.${n}`);
  }
  names.push('output_norm.weight');
  if (!tied) names.push('output.weight');
  const missing = names.filter((n) => !byGguf.has(n));
  if (missing.length > 0) {
    throw new UserError(`cannot export ${dir} to GGUF: missing tensor(s) ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? `, … (${missing.length} in all)` : ''} (llama.cpp names) for ${hp.nLayer} ${hp.hfArchitecture} layers`);
  }
  const extra = [...byGguf.keys()].filter((n) => !names.includes(n));
  if (extra.length > 0) {
    throw new UserError(`cannot export ${dir} to GGUF: unexpected tensor(s) ${extra.slice(0, 5).map((n) => byGguf.get(n)!.name).join(', ')} (config.json says ${hp.nLayer} layers of ${hp.hfArchitecture})`);
  }

  const qRows = hp.nHead * hp.headDim;
  const kvRows = hp.nHeadKv * hp.headDim;
  const shapes: Record<string, number[]> = {
    'token_embd.weight': [hp.vocabSize, hp.nEmbd], 'output.weight': [hp.vocabSize, hp.nEmbd], 'output_norm.weight': [hp.nEmbd],
    'attn_norm.weight': [hp.nEmbd], 'ffn_norm.weight': [hp.nEmbd],
    'attn_q.weight': [qRows, hp.nEmbd], 'attn_k.weight': [kvRows, hp.nEmbd], 'attn_v.weight': [kvRows, hp.nEmbd], 'attn_output.weight': [hp.nEmbd, qRows],
    'attn_q.bias': [qRows], 'attn_k.bias': [kvRows], 'attn_v.bias': [kvRows], 'attn_output.bias': [hp.nEmbd],
    'attn_q_norm.weight': [hp.headDim], 'attn_k_norm.weight': [hp.headDim],
    'ffn_gate.weight': [hp.nFf, hp.nEmbd], 'ffn_up.weight': [hp.nFf, hp.nEmbd], 'ffn_down.weight': [hp.nEmbd, hp.nFf],
  };
  const tensors: PlannedTensor[] = [];
  if (hp.rope.type === 'llama3') {
    tensors.push({ name: 'rope_freqs.weight', type: 'F32', dims: [hp.headDim / 2], source: llama3RopeFactors(hp), permuteHeadDim: null });
  }
  for (const name of names) {
    const t = byGguf.get(name)!;
    checkReadableDtype(t);
    expectShape(dir, t, shapes[name.replace(/^blk\.\d+\./, '')]!, 'from config.json');
    tensors.push({ name, type: storedType(name, t.shape, type), dims: [...t.shape].reverse(), source: t, permuteHeadDim: permutationFor(name, hp) });
  }
  return { tensors, tied };
}

/**
 * Exports the Hugging Face model in `modelDir` to a GGUF file at `outPath` (written beside it and renamed
 * into place when complete). Throws a UserError naming what is unsupported before anything is written.
 */
export async function exportGguf(modelDir: string, outPath: string, opts: GgufExportOptions = {}): Promise<GgufExportResult> {
  const dir = resolve(modelDir);
  const type = opts.type ?? 'f16';
  if (!GGUF_EXPORT_TYPES.includes(type)) throw new UserError(`unknown GGUF export type ${showValue(type)}`, `use one of ${GGUF_EXPORT_TYPES.join(', ')}`);
  const hp = readModelHparams(dir);
  const tok: GgufTokenizer = readHfTokenizer(dir, hp.vocabSize);
  const { tensors } = await planTensors(dir, hp, type);
  const metadata = [...modelMetadata(hp, opts.name ?? basename(dir), FILE_TYPE[type]), ...tokenizerMetadata(tok)];
  if (opts.license) metadata.splice(3, 0, kv.string('general.license', opts.license));

  const bytesTotal = tensors.reduce((s, t) => s + (t.source instanceof Float32Array ? 0 : t.source.bytes), 0);
  let bytesDone = 0;
  const reader = new TensorReader();
  let written;
  try {
    written = await writeGgufStream(outPath, { metadata, tensors }, async (t, write) => {
      opts.onProgress?.({ bytesDone, bytesTotal, tensor: t.name });
      await streamTensor(reader, t, write, (n) => {
        bytesDone += n;
        opts.onProgress?.({ bytesDone, bytesTotal, tensor: t.name });
      });
    });
  } finally {
    await reader.close();
  }
  // Read back what was written: a malformed file must not reach llama.cpp, which aborts rather than fails.
  const header = await readGgufHeader(outPath);
  if (header.tensors.length !== tensors.length || header.metadata.length !== metadata.length) {
    throw new Error(`GGUF export wrote ${header.tensors.length} tensors / ${header.metadata.length} keys, planned ${tensors.length} / ${metadata.length}`);
  }
  const tensorTypes: Record<string, number> = {};
  for (const t of tensors) tensorTypes[t.type] = (tensorTypes[t.type] ?? 0) + 1;
  return {
    path: resolve(outPath),
    architecture: hp.arch,
    type,
    tensors: tensors.length,
    parameters: tensors.reduce((s, t) => s + t.dims.reduce((a, b) => a * b, 1), 0),
    bytes: written.bytes,
    tokenizer: { model: tok.model, pre: tok.pre, tokens: tok.tokens.length },
    tensorTypes,
    notes: tok.notes,
  };
}
