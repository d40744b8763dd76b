import { existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { showValue, UserError } from '../core/errors.js';
import { kv, readGgufHeader, writeGgufStream, type GgufKV } from './gguf.js';
import { encodeAs } from './quantize.js';
import { listStoredTensors, checkReadableDtype, TensorReader, type StoredTensor } from './safetensors-read.js';
import { ggufTensorName, permutationFor, permuteHeads, readModelHparams, type GgufArch } from './gguf-export.js';
import { readJsonObject } from '../core/json-file.js';

/**
 * A PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) → a GGUF LoRA adapter llama.cpp
 * loads on top of the base model's GGUF (llama.cpp's convert_lora_to_gguf.py conventions):
 * `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, and for each adapted weight
 * `<llama.cpp name>.lora_a` (PyTorch [r, in], GGUF dims [in, r]) and `.lora_b` ([out, r], dims [r, out]).
 * llama.cpp scales by alpha / r with r read off each tensor, as PEFT does. For the `llama` architecture the
 * rows of lora_b of q/k are permuted like the base's q/k weights, since B·A adds to those rows.
 */

export const GGUF_LORA_TYPES = ['f32', 'f16'] as const;
export type GgufLoraType = (typeof GGUF_LORA_TYPES)[number];

export interface GgufLoraOptions {
  type?: GgufLoraType;
  name?: string;
  onProgress?: (p: { bytesDone: number; bytesTotal: number; tensor: string }) => void;
}

export interface GgufLoraResult {
  path: string;
  architecture: GgufArch;
  type: GgufLoraType;
  /** Adapted weights (each has an A and a B tensor). */
  modules: number;
  rank: number;
  alpha: number;
  bytes: number;
}

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const isEmpty = (v: unknown) => v == null || (isObj(v) && Object.keys(v).length === 0) || (Array.isArray(v) && v.length === 0);

function readAdapterConfig(dir: string): Json {
  const path = join(dir, 'adapter_config.json');
  if (!existsSync(path)) throw new UserError(`${path} is missing: not a PEFT adapter folder`);
  return readJsonObject(path);
}

interface LoraPair {
  gguf: string;
  a: StoredTensor;
  b: StoredTensor;
  permuteHeadDim: number | null;
}

export async function exportGgufLora(adapterDir: string, baseDir: string, outPath: string, opts: GgufLoraOptions = {}): Promise<GgufLoraResult> {
  const dir = resolve(adapterDir);
  const type = opts.type ?? 'f32';
  if (!GGUF_LORA_TYPES.includes(type)) throw new UserError(`unknown GGUF adapter type ${showValue(type)}`, `use one of ${GGUF_LORA_TYPES.join(', ')}`);
  const cfg = readAdapterConfig(dir);
  const bad = (why: string, hint?: string) => new UserError(`cannot export the adapter ${dir} to GGUF: ${why}`, hint);
  if (cfg.peft_type !== 'LORA') throw bad(`its peft_type is ${showValue(cfg.peft_type)}; only LORA adapters export to GGUF`);
  if (cfg.use_dora === true) throw bad('it is a DoRA adapter (use_dora), which llama.cpp does not support');
  if (cfg.bias !== undefined && cfg.bias !== 'none') throw bad(`it trains biases (bias = ${showValue(cfg.bias)}), which a GGUF LoRA cannot hold`);
  if (cfg.lora_bias === true) throw bad('it has LoRA biases (lora_bias), which a GGUF LoRA cannot hold');
  if (cfg.fan_in_fan_out === true) throw bad('fan_in_fan_out adapters (GPT-2 Conv1D layers) are not supported');
  if (!isEmpty(cfg.modules_to_save)) throw bad(`it also saves full modules (${showValue(cfg.modules_to_save)}), which a GGUF LoRA cannot hold`);
  if (!isEmpty(cfg.alpha_pattern)) throw bad('it sets a per-module alpha (alpha_pattern); a GGUF LoRA has a single alpha');
  const r = cfg.r;
  const alpha = cfg.lora_alpha;
  if (!Number.isSafeInteger(r) || (r as number) <= 0) throw bad(`r is ${showValue(r)}`);
  if (typeof alpha !== 'number' || !(alpha > 0)) throw bad(`lora_alpha is ${showValue(alpha)}`);
  let ggufAlpha = alpha;
  if (cfg.use_rslora === true) {
    // rsLoRA scales by alpha/√r; llama.cpp by alpha/r: scale alpha by √r (exact only for a single rank).
    if (!isEmpty(cfg.rank_pattern)) throw bad('it combines rsLoRA with per-module ranks (rank_pattern), which a single GGUF alpha cannot express');
    ggufAlpha = alpha * Math.sqrt(r as number);
  }

  const hp = readModelHparams(baseDir);
  const base = await listStoredTensors(resolve(baseDir));
  const baseTied = hp.tiedEmbeddings || !base.has('lm_head.weight');
  const stored = await listStoredTensors(dir);
  const groups = new Map<string, { a?: StoredTensor; b?: StoredTensor }>();
  for (const t of stored.values()) {
    const m = /^base_model\.model\.(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$/.exec(t.name);
    if (!m) {
      if (/lora_embedding_[AB]/.test(t.name)) throw bad(`it adapts an embedding (${t.name}), which this export does not support`);
      if (/lora_magnitude_vector/.test(t.name)) throw bad(`it is a DoRA adapter (${t.name})`);
      throw bad(`unexpected tensor ${t.name}`);
    }
    const module = m[1]!;
    const g = groups.get(module) ?? {};
    if (m[2] === 'A') g.a = t;
    else g.b = t;
    groups.set(module, g);
  }
  if (groups.size === 0) throw bad('it has no LoRA weights');

  const pairs: LoraPair[] = [];
  for (const [module, g] of groups) {
    if (!g.a || !g.b) throw bad(`${module} has lora_${g.a ? 'B' : 'A'} missing`);
    const baseName = `${module}.weight`;
    const gguf = ggufTensorName(baseName);
    if (gguf === null || (gguf === 'output.weight' && baseTied) || gguf === 'token_embd.weight') {
      throw bad(`it adapts ${module}, which the GGUF base model has no separate weight for`, 'supported: attention and MLP projections (q/k/v/o_proj, gate/up/down_proj) and an untied lm_head');
    }
    const bt = base.get(baseName);
    if (!bt || bt.shape.length !== 2) throw bad(`its base model ${baseDir} has no 2-D weight ${baseName}`, 'is this the adapter\'s base model?');
    checkReadableDtype(g.a);
    checkReadableDtype(g.b);
    const [out, inn] = bt.shape as [number, number];
    const ra = g.a.shape[0];
    if (g.a.shape.length !== 2 || g.b.shape.length !== 2 || g.a.shape[1] !== inn || g.b.shape[0] !== out || g.b.shape[1] !== ra) {
      throw bad(`${module}: lora_A ${showValue(g.a.shape)} and lora_B ${showValue(g.b.shape)} do not fit the base weight ${showValue(bt.shape)}`, 'is this the adapter\'s base model?');
    }
    pairs.push({ gguf, a: g.a, b: g.b, permuteHeadDim: permutationFor(gguf, hp) });
  }
  const order = (n: string) => {
    const m = /^blk\.(\d+)\.(.*)$/.exec(n);
    return m ? [Number(m[1]), m[2]!] as const : [Infinity, n] as const;
  };
  pairs.sort((x, y) => {
    const [lx, nx] = order(x.gguf);
    const [ly, ny] = order(y.gguf);
    return lx - ly || (nx < ny ? -1 : nx > ny ? 1 : 0);
  });

  const ggType = type === 'f16' ? 'F16' : 'F32';
  const metadata: GgufKV[] = [
    kv.string('general.architecture', hp.arch),
    kv.string('general.type', 'adapter'),
    kv.string('general.name', opts.name ?? basename(dir)),
    kv.uint32('general.file_type', type === 'f16' ? 1 : 0),
    kv.uint32('general.quantization_version', 2),
    kv.string('adapter.type', 'lora'),
    kv.float32('adapter.lora.alpha', ggufAlpha),
  ];
  const tensors = pairs.flatMap((p) => [
    { name: `${p.gguf}.lora_a`, type: ggType, dims: [...p.a.shape].reverse(), src: p.a, permuteHeadDim: null as number | null },
    { name: `${p.gguf}.lora_b`, type: ggType, dims: [...p.b.shape].reverse(), src: p.b, permuteHeadDim: p.permuteHeadDim },
  ]);
  const bytesTotal = tensors.reduce((s, t) => s + t.src.bytes, 0);
  let bytesDone = 0;
  const reader = new TensorReader();
  let written;
  try {
    written = await writeGgufStream(outPath, { metadata, tensors }, async (t, write) => {
      let x = await reader.readAll(t.src);
      // lora_b is [out, r]: its rows are the base weight's output rows, permuted per head like q/k.
      if (t.permuteHeadDim !== null) x = permuteHeads(x, t.src.shape[1]!, t.permuteHeadDim);
      await write(encodeAs(ggType, x));
      bytesDone += t.src.bytes;
      opts.onProgress?.({ bytesDone, bytesTotal, tensor: t.name });
    });
  } finally {
    await reader.close();
  }
  const header = await readGgufHeader(outPath);
  if (header.tensors.length !== tensors.length) throw new Error(`GGUF adapter export wrote ${header.tensors.length} tensors, planned ${tensors.length}`);
  return { path: resolve(outPath), architecture: hp.arch, type, modules: pairs.length, rank: r as number, alpha: ggufAlpha, bytes: written.bytes };
}
