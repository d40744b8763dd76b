import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../../src/core/errors.js';
import { Rng } from '../../src/core/rng.js';
import { arr, encodeGguf, ggufSummary, kv, parseGgufHeader, readGgufHeader } from '../../src/formats/gguf.js';
import { readSafetensorsInfo } from '../../src/vault/safetensors.js';
import { parseManifest, serializeManifest, type Manifest } from '../../src/vault/manifest.js';
import { exportBundle, importBundle } from '../../src/vault/bundle.js';
import { importModel } from '../../src/vault/importer.js';
import { vaultLayout } from '../../src/vault/layout.js';
import { parseOllamaManifest } from '../../src/vault/sources/ollama.js';

/**
 * A small deterministic mutation fuzzer for the vault's parsers. Every iteration draws its own PRNG from
 * (seed, iteration), so any single iteration can be replayed alone: `bench/fuzz.ts --seed S --repro I`.
 *
 * The property checked: a parser returns a value or throws UserError. Any other exception, a call slower
 * than `slowMs`, or resident memory growing past `memLimitBytes` is a failure.
 */

// ---------------------------------------------------------------------------------------------------------
// PRNG seeds

/** The PRNG seed for one iteration of a run, so iterations replay independently. */
export function iterationSeed(seed: number, iteration: number): number {
  return mix32((mix32(seed ^ 0x9e3779b9) + Math.imul(iteration, 0x632be5ab)) >>> 0);
}

/** murmur3's finaliser: every input bit affects every output bit. */
function mix32(x: number): number {
  let h = x >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

// ---------------------------------------------------------------------------------------------------------
// Byte mutations

const INTERESTING_BYTES = [0x00, 0xff, 0x7f, 0x80, 0x01, 0x20, 0x22, 0x5c];
const INTERESTING_INTS: readonly bigint[] = [
  0n, 1n, 2n, 3n, 4n, 5n, 8n, 9n, 12n, 13n, 16n, 0x7fn, 0x80n, 0xffn, 0x100n, 0x7fffn, 0x8000n, 0xffffn, 0x10000n,
  0x7fffffffn, 0x80000000n, 0xffffffffn, 0x100000000n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n,
  2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n, 2n ** 64n - 2n, 2n ** 64n - 0x80000000n,
];

export type ByteMutation =
  | 'bitflip' | 'byte' | 'random-byte' | 'int' | 'truncate' | 'delete' | 'duplicate' | 'insert' | 'copy' | 'splice';
const BYTE_MUTATIONS: readonly ByteMutation[] = [
  'bitflip', 'byte', 'random-byte', 'int', 'int', 'int', 'truncate', 'delete', 'duplicate', 'insert', 'copy', 'splice',
];

export interface MutateOptions {
  /** Other inputs to splice with. */
  corpus?: readonly Uint8Array[];
  /** Mutations stacked per call: 1 to this many (default 4). */
  maxStack?: number;
  /** Outputs are kept under this many bytes (default 4 × input + 4096). */
  maxBytes?: number;
  /** File offsets where integer fields live, preferred for 'int' (e.g. a format's counts and lengths). */
  intOffsets?: readonly number[];
}

/** Applies 1..maxStack random byte-level mutations to a copy of `input`; returns it and what was done. */
export function mutateBytes(input: Uint8Array, rng: Rng, opts: MutateOptions = {}): { data: Uint8Array; ops: string[] } {
  let d: Uint8Array = Uint8Array.from(input);
  const ops: string[] = [];
  const maxBytes = opts.maxBytes ?? input.length * 4 + 4096;
  const n = 1 + rng.below(opts.maxStack ?? 4);
  for (let k = 0; k < n; k++) {
    const op = rng.pick(BYTE_MUTATIONS);
    const len = d.length;
    const pos = rng.below(len);
    switch (op) {
      case 'bitflip':
        if (len) d[pos]! ^= 1 << rng.below(8);
        break;
      case 'byte':
        if (len) d[pos] = rng.pick(INTERESTING_BYTES);
        break;
      case 'random-byte':
        if (len) d[pos] = rng.below(256);
        break;
      case 'int': {
        const width = rng.pick([1, 2, 4, 8, 8, 8]);
        if (len < width) break;
        const hinted = opts.intOffsets?.filter((o) => o + width <= len) ?? [];
        const at = hinted.length && rng.chance(0.5) ? rng.pick(hinted) : rng.below(len - width + 1);
        let v = rng.chance(0.15) ? BigInt(len - rng.below(Math.min(len, 64))) : rng.pick(INTERESTING_INTS);
        if (rng.chance(0.2)) v = (1n << 64n) - v; // the negative of it, in two's complement
        for (let b = 0; b < width; b++) d[at + b] = Number((v >> BigInt(8 * b)) & 0xffn);
        ops.push(`int${width * 8}@${at}=${v & ((1n << BigInt(width * 8)) - 1n)}`);
        continue;
      }
      case 'truncate':
        d = d.slice(0, pos);
        break;
      case 'delete': {
        const k2 = 1 + rng.below(Math.min(64, len - pos));
        d = concat(d.subarray(0, pos), d.subarray(pos + k2));
        break;
      }
      case 'duplicate': {
        const k2 = 1 + rng.below(Math.min(256, len - pos));
        const at = rng.below(len + 1);
        d = concat(d.subarray(0, at), d.slice(pos, pos + k2), d.subarray(at));
        break;
      }
      case 'insert': {
        const extra = Uint8Array.from({ length: 1 + rng.below(16) }, () => (rng.chance(0.5) ? rng.pick(INTERESTING_BYTES) : rng.below(256)));
        d = concat(d.subarray(0, pos), extra, d.subarray(pos));
        break;
      }
      case 'copy': {
        const k2 = 1 + rng.below(Math.min(64, len - pos));
        const at = rng.below(Math.max(1, len - k2));
        d.copyWithin(at, pos, pos + k2);
        break;
      }
      case 'splice': {
        const other = opts.corpus?.length ? rng.pick(opts.corpus) : input;
        const cut = rng.below(other.length + 1);
        d = concat(d.subarray(0, pos), other.subarray(cut));
        break;
      }
    }
    ops.push(`${op}@${pos}`);
  }
  if (d.length > maxBytes) d = d.slice(0, maxBytes);
  return { data: d, ops };
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// JSON mutations: keep the text parseable (mostly) so the checks behind JSON.parse get exercised.

const DEEP = '\u0000DEEP\u0000';
const PROTO = '\u0000PROTO\u0000';
function interestingJson(rng: Rng): unknown {
  return rng.pick<() => unknown>([
    () => null, () => true, () => false, () => 0, () => -1, () => -0.5, () => 1.5, () => 2 ** 53 + 2, () => -(2 ** 63), () => 1e308,
    () => '', () => 'x', () => '../../etc/passwd', () => '/abs', () => 'a\\b', () => 'nul\u0000', () => 'lone \ud800 surrogate',
    () => 'é'.repeat(1 + rng.below(2000)), () => '0'.repeat(64), () => 'g'.repeat(64), () => [], () => {}, () => [1, 2], () => ({ a: 1 }),
    () => DEEP, () => PROTO, () => '__proto__', () => 'constructor', () => 'toString',
  ])();
}

/** A node's location: the parent container and the key/index in it (root has no parent). */
interface Slot {
  parent: Record<string, unknown> | unknown[];
  key: string | number;
}

function slots(root: unknown): Slot[] {
  const out: Slot[] = [];
  const walk = (v: unknown, depth: number) => {
    if (depth > 32 || typeof v !== 'object' || v === null) return;
    if (Array.isArray(v)) {
      v.forEach((x, i) => { out.push({ parent: v, key: i }); walk(x, depth + 1); });
    } else {
      for (const [k, x] of Object.entries(v)) { out.push({ parent: v as Record<string, unknown>, key: k }); walk(x, depth + 1); }
    }
  };
  walk(root, 0);
  return out;
}

function get(s: Slot): unknown {
  return (s.parent as Record<string | number, unknown>)[s.key];
}
function set(s: Slot, v: unknown): void {
  Object.defineProperty(s.parent, s.key, { value: v, enumerable: true, writable: true, configurable: true });
}

/** Structure-aware mutation of JSON text: edits one or more nodes, re-serialises, sometimes adds textual tricks. */
export function mutateJsonText(text: string, rng: Rng): { text: string; ops: string[] } {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return { text, ops: ['unparseable'] };
  }
  const ops: string[] = [];
  const n = 1 + rng.below(3);
  for (let k = 0; k < n; k++) {
    const all = slots(doc);
    if (all.length === 0) {
      doc = interestingJson(rng);
      ops.push('root');
      continue;
    }
    const s = rng.pick(all);
    const cur = get(s);
    const op = rng.pick(['replace', 'replace', 'replace', 'delete', 'add', 'rename', 'wrap', 'number', 'string']);
    ops.push(`${op}:${String(s.key)}`);
    switch (op) {
      case 'replace':
        set(s, interestingJson(rng));
        break;
      case 'delete':
        if (Array.isArray(s.parent)) s.parent.splice(s.key as number, 1);
        else delete s.parent[s.key as string];
        break;
      case 'add':
        if (Array.isArray(s.parent)) s.parent.push(rng.chance(0.5) ? structuredClone(cur) : interestingJson(rng));
        else set({ parent: s.parent, key: rng.pick(['__proto__', 'extra', '', String(rng.below(10)), 'details', 'lineage']) }, interestingJson(rng));
        break;
      case 'rename':
        if (!Array.isArray(s.parent)) {
          delete s.parent[s.key as string];
          set({ parent: s.parent, key: rng.pick(['__proto__', 'constructor', '', `${String(s.key)}x`, String(s.key).toUpperCase()]) }, cur);
        }
        break;
      case 'wrap':
        set(s, rng.chance(0.5) ? [cur] : { value: cur });
        break;
      case 'number':
        set(s, typeof cur === 'number' ? rng.pick([cur + 1, -cur, cur * 2 ** 32, cur / 3, Number.MAX_SAFE_INTEGER + 2]) : rng.below(1000) - 500);
        break;
      case 'string':
        set(s, typeof cur === 'string' ? rng.pick([cur + '/..', cur.slice(1), cur.toUpperCase(), `${cur}\u0000`, cur.repeat(3)]) : String(cur));
        break;
    }
  }
  let out = JSON.stringify(doc, null, rng.chance(0.5) ? 2 : undefined) ?? 'null';
  // Deep nesting (JSON.parse copes; recursive code after it may not) and an own "__proto__" value.
  const depth = rng.pick([50, 5000, 100000]);
  out = out.split(JSON.stringify(DEEP)).join('['.repeat(depth) + ']'.repeat(depth));
  out = out.split(JSON.stringify(PROTO)).join('{"__proto__": {"polluted": 1}}');
  if (rng.chance(0.1)) {
    // A duplicate key after the first brace: JSON.parse keeps the last one.
    const i = out.indexOf('{');
    if (i >= 0) out = `${out.slice(0, i + 1)}"schema": ${JSON.stringify(interestingJson(rng)) ?? 'null'}, ${out.slice(i + 1)}`;
    ops.push('dup-key');
  }
  return { text: out, ops };
}

// ---------------------------------------------------------------------------------------------------------
// Targets

export type TargetName = 'gguf' | 'safetensors' | 'manifest' | 'ollama-manifest' | 'bundle';
export const TARGET_NAMES: readonly TargetName[] = ['gguf', 'safetensors', 'manifest', 'ollama-manifest', 'bundle'];

export interface FuzzTarget {
  name: TargetName;
  seeds: Uint8Array[];
  /** A mutated input for this iteration. */
  mutate(rng: Rng): { data: Uint8Array; ops: string[] };
  /** Runs the parser; resolves with anything, or rejects. */
  run(input: Uint8Array, iteration: number): unknown;
  close(): void;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

function ggufSeeds(): Uint8Array[] {
  const bytes = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 37 + 11) & 0xff);
  return [
    encodeGguf({
      metadata: [
        kv.string('general.architecture', 'llama'), kv.string('general.name', 'fuzz'), kv.uint32('general.file_type', 15),
        kv.uint32('llama.context_length', 2048), kv.uint64('t.u64', 2n ** 40n), kv.int8('t.i8', -1), kv.float32('t.f', 0.5),
        kv.bool('t.b', true), kv.float64('t.d', 2.5), kv.int64('t.i64', -5n), kv.uint16('t.u16', 7), kv.int16('t.i16', -7),
        kv.array('tokenizer.ggml.tokens', 'string', ['<s>', 'a', 'bc']), kv.array('tokenizer.ggml.scores', 'float32', [0, -1, 2]),
        kv.array('t.nested', 'array', [arr('uint8', [1, 2]), arr('string', ['x'])]),
        kv.string('tokenizer.chat_template', '{{ messages }}'),
      ],
      tensors: [
        { name: 'a', type: 'F32', dims: [4, 2], data: bytes(32) },
        { name: 'q', type: 'Q8_0', dims: [32], data: bytes(34) },
        { name: 'k', type: 'Q4_K', dims: [256, 1], data: bytes(144) },
      ],
    }),
    encodeGguf({ metadata: [kv.string('general.architecture', 'x')], tensors: [] }),
    encodeGguf({
      metadata: [kv.uint32('general.alignment', 64), kv.uint16('split.no', 0), kv.uint16('split.count', 2), kv.int32('split.tensors.count', 3)],
      tensors: [
        { name: 'b', type: 'BF16', dims: [2, 2, 2], data: bytes(16) },
        { name: 'c', type: 'I64', dims: [1], data: bytes(8) },
      ],
      version: 2,
    }),
  ];
}

function safetensorsFile(header: string, dataBytes: number): Uint8Array {
  const h = enc.encode(header);
  const out = new Uint8Array(8 + h.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  for (let i = 0; i < dataBytes; i++) out[8 + h.length + i] = (i * 13) & 0xff;
  return out;
}

const SAFETENSORS_HEADERS: ReadonlyArray<[string, number]> = [
  [JSON.stringify({
    __metadata__: { format: 'pt' },
    'model.embed.weight': { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] },
    'model.norm.weight': { dtype: 'BF16', shape: [4], data_offsets: [24, 32] },
    'model.ids': { dtype: 'U8', shape: [3], data_offsets: [32, 35] },
  }), 35],
  [JSON.stringify({ a: { dtype: 'F16', shape: [], data_offsets: [0, 2] }, z: { dtype: 'I64', shape: [0, 5], data_offsets: [2, 2] } }), 2],
  ['{}', 0],
];

function manifestSeeds(): Uint8Array[] {
  const d = (c: string) => c.repeat(64);
  const base: Manifest = {
    schema: 1, name: 'tiny-model', version: 3, created: '2025-01-02T03:04:05.000Z', digest: d('a'), format: 'hf-safetensors',
    architecture: 'LlamaForCausalLM', model_type: 'llama', parameters: 260000, dtype: 'float32', license: 'mit',
    details: { context_length: 512, quantization: null, chat_template: '{{ x }}' },
    source: { kind: 'local', path: '/models/tiny' },
    files: [
      { path: 'config.json', sha256: d('b'), size: 10 },
      { path: 'weights/model.safetensors', sha256: d('c'), size: 1024 },
    ],
    lineage: null,
  };
  const child: Manifest = {
    ...base, name: 'tiny-model-ssd', version: 1, format: 'gguf', details: null,
    lineage: { parent: { ref: 'tiny-model:3', digest: d('a') }, run_id: 'run-1', recipe: { kind: 'ssd', temperature: 0.7 }, evaluation: { pass1: 0.5 } },
  };
  return [base, child].map((m) => enc.encode(serializeManifest(m)));
}

/** Offsets of GGUF integer fields in a seed: the fixed counts plus every string length / count we can find. */
function ggufIntOffsets(seed: Uint8Array): number[] {
  const out = [4, 8, 16];
  const v = new DataView(seed.buffer, seed.byteOffset, seed.byteLength);
  // Heuristic: small u64 values at any offset are likely lengths, counts, dims or offsets.
  for (let i = 24; i + 8 <= seed.length; i++) if (v.getBigUint64(i, true) < 4096n && v.getUint32(i + 4, true) === 0) out.push(i);
  return out;
}

/** A real bundle of a two-model vault (small files), as the seed for bundle mutations. */
async function bundleSeed(dir: string): Promise<Uint8Array> {
  const home = join(dir, 'seed-home');
  const layout = vaultLayout(home);
  for (const [name, text] of [['a', 'first'], ['b', 'second']] as const) {
    const src = join(dir, `seed-${name}`);
    mkdirSync(src, { recursive: true });
    writeFileSync(join(src, 'config.json'), JSON.stringify({ model_type: 'llama', note: text }));
    writeFileSync(join(src, 'model.safetensors'), safetensorsFile('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8));
    await importModel(layout, src, { name });
  }
  const out = join(dir, 'seed.tar');
  await exportBundle(layout, ['a', 'b'], out);
  return readFileSync(out);
}

export async function makeTarget(name: TargetName): Promise<FuzzTarget> {
  let dir: string | undefined;
  const tmp = () => (dir ??= mkdtempSync(join(tmpdir(), 'distillery-fuzz-')));
  const close = () => { if (dir) rmSync(dir, { recursive: true, force: true }); dir = undefined; };
  switch (name) {
    case 'gguf': {
      const seeds = ggufSeeds();
      const hints = new Map(seeds.map((s) => [s, ggufIntOffsets(s)]));
      return {
        name, seeds, close,
        mutate: (rng) => {
          const seed = rng.pick(seeds);
          return mutateBytes(seed, rng, { corpus: seeds, intOffsets: hints.get(seed) });
        },
        run: (input, iteration) => {
          // Mostly the in-memory parser; every 8th input goes through the file reader with a tiny window.
          if (iteration % 8 === 0) {
            const p = join(tmp(), 'f.gguf');
            writeFileSync(p, input);
            return readGgufHeader(p, { chunkBytes: 16 + (iteration % 64) }).then(ggufSummary);
          }
          return ggufSummary(parseGgufHeader(input));
        },
      };
    }
    case 'safetensors': {
      const seeds = SAFETENSORS_HEADERS.map(([h, n]) => safetensorsFile(h, n));
      return {
        name, seeds, close,
        mutate: (rng) => {
          const i = rng.below(SAFETENSORS_HEADERS.length);
          if (rng.chance(0.5)) {
            // Mutate the header JSON and keep the length prefix right, sometimes the data size too.
            const [h, n] = SAFETENSORS_HEADERS[i]!;
            const m = mutateJsonText(h, rng);
            const extra = rng.chance(0.3) ? rng.below(64) - 32 : 0;
            return { data: safetensorsFile(m.text, Math.max(0, n + extra)), ops: [...m.ops, `data${extra >= 0 ? '+' : ''}${extra}`] };
          }
          return mutateBytes(seeds[i]!, rng, { corpus: seeds, intOffsets: [0] });
        },
        run: (input, iteration) => {
          const p = join(tmp(), `${iteration % 4}.safetensors`);
          writeFileSync(p, input);
          return readSafetensorsInfo(p, 'fuzz.safetensors');
        },
      };
    }
    case 'manifest': {
      const seeds = manifestSeeds();
      return {
        name, seeds, close,
        mutate: (rng) => {
          const seed = rng.pick(seeds);
          if (rng.chance(0.7)) {
            const m = mutateJsonText(dec.decode(seed), rng);
            return { data: enc.encode(m.text), ops: m.ops };
          }
          return mutateBytes(seed, rng, { corpus: seeds });
        },
        run: (input) => parseManifest(dec.decode(input), 'fuzz.json'),
      };
    }
    case 'ollama-manifest': {
      const layer = (t: string, c: string) => ({ mediaType: `application/vnd.ollama.image.${t}`, digest: `sha256:${c.repeat(64)}`, size: 10 });
      const seeds = [enc.encode(JSON.stringify({
        schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
        config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: `sha256:${'c'.repeat(64)}`, size: 5 },
        layers: [layer('model', 'a'), layer('template', 'b'), layer('params', 'd')],
      }))];
      return {
        name, seeds, close,
        mutate: (rng) => {
          const m = mutateJsonText(dec.decode(seeds[0]!), rng);
          return rng.chance(0.7) ? { data: enc.encode(m.text), ops: m.ops } : mutateBytes(seeds[0]!, rng, { corpus: seeds });
        },
        run: (input) => parseOllamaManifest(dec.decode(input), 'fuzz-manifest'),
      };
    }
    case 'bundle': {
      // Every input is imported into its own empty vault: it must be refused with a UserError, or import.
      const seeds = [await bundleSeed(tmp())];
      return {
        name, seeds, close,
        mutate: (rng) => mutateBytes(seeds[0]!, rng, { corpus: seeds }),
        run: async (input, iteration) => {
          const d = join(tmp(), `it-${iteration}`);
          mkdirSync(d, { recursive: true });
          try {
            writeFileSync(join(d, 'in.tar'), input);
            return await importBundle(vaultLayout(join(d, 'home')), join(d, 'in.tar'));
          } finally {
            rmSync(d, { recursive: true, force: true });
          }
        },
      };
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Runner

export interface FuzzFailure {
  target: TargetName;
  seed: number;
  iteration: number;
  kind: 'exception' | 'slow' | 'memory';
  error: string;
  /** The top frames of the exception's stack (exceptions only). */
  stack: string[];
  ops: string[];
  /** The input, base64 (for inputs up to 64 KiB; larger ones are replayed with --repro). */
  input: string | null;
}

export interface FuzzReport {
  target: TargetName;
  seed: number;
  iterations: number;
  ok: number;
  userError: number;
  failures: FuzzFailure[];
  /** Most frequent UserError messages (numbers stripped), to see which checks the fuzzer reaches. */
  messages: Map<string, number>;
  ms: number;
}

export interface FuzzOptions {
  seed: number;
  iterations: number;
  /** First iteration number (to resume or replay a range); default 0. */
  start?: number;
  /** A call slower than this is a failure ("hang"); default 2000 ms. */
  slowMs?: number;
  /** Resident memory above the starting level by more than this is a failure; default 512 MiB. */
  memLimitBytes?: number;
  /** Stop early after this many failures; default 20. */
  maxFailures?: number;
}

/** One iteration's input, for replaying a reported failure. */
export function fuzzInput(target: FuzzTarget, seed: number, iteration: number): { data: Uint8Array; ops: string[] } {
  return target.mutate(new Rng(iterationSeed(seed, iteration)));
}

export async function runFuzz(target: FuzzTarget, opts: FuzzOptions): Promise<FuzzReport> {
  const slowMs = opts.slowMs ?? 2000;
  const memLimit = opts.memLimitBytes ?? 512 * 1024 * 1024;
  const maxFailures = opts.maxFailures ?? 20;
  const start = opts.start ?? 0;
  const report: FuzzReport = {
    target: target.name, seed: opts.seed, iterations: 0, ok: 0, userError: 0, failures: [], messages: new Map(), ms: 0,
  };
  let rss0 = process.memoryUsage.rss();
  const t0 = performance.now();
  for (let it = start; it < start + opts.iterations && report.failures.length < maxFailures; it++) {
    const { data, ops } = fuzzInput(target, opts.seed, it);
    const fail = (kind: FuzzFailure['kind'], error: string, stack: string[] = []) => report.failures.push({
      target: target.name, seed: opts.seed, iteration: it, kind, error, stack, ops,
      input: data.length <= 65536 ? Buffer.from(data).toString('base64') : null,
    });
    const t = performance.now();
    try {
      await target.run(data, it);
      report.ok++;
    } catch (e) {
      if (e instanceof UserError) {
        report.userError++;
        const key = e.message.replace(/\d+/g, 'N').replace(/"[^"]*"/g, '"…"').slice(0, 140);
        report.messages.set(key, (report.messages.get(key) ?? 0) + 1);
      } else {
        const frames = e instanceof Error ? (e.stack ?? '').split('\n').filter((l) => l.trim().startsWith('at ')).slice(0, 4).map((l) => l.trim()) : [];
        fail('exception', e instanceof Error ? `${e.name}: ${e.message}` : String(e), frames);
      }
    }
    const dt = performance.now() - t;
    if (dt > slowMs) fail('slow', `took ${Math.round(dt)} ms`);
    const rss = process.memoryUsage.rss();
    if (rss - rss0 > memLimit) {
      fail('memory', `resident memory grew by ${Math.round((rss - rss0) / 2 ** 20)} MiB`);
      rss0 = rss; // report each blow-up once
    }
    report.iterations++;
  }
  report.ms = performance.now() - t0;
  return report;
}

export function describeFailure(f: FuzzFailure): string {
  return `${f.target} seed=${f.seed} iteration=${f.iteration} ${f.kind}: ${f.error.slice(0, 300)}\n` +
    (f.stack.length ? `  ${f.stack.join('\n  ')}\n` : '') + `  mutations: ${f.ops.join(' ')}\n` +
    `  replay: node dist/bench/fuzz.js --target ${f.target} --seed ${f.seed} --repro ${f.iteration}`;
}
