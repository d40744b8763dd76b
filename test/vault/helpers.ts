/** Shared fixtures for the vault tests: throwaway homes, hand-written safetensors, fake HF folders. */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, lstatSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after } from 'node:test';
import { packageRoot } from '../../src/core/paths.js';

const made: string[] = [];
after(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

/** A fresh temp folder, removed when the test file ends. */
export function tempDir(prefix = 'distillery-vault-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  made.push(d);
  return d;
}

/** A DISTILLERY_HOME path that does not exist yet (the vault must create what it needs). */
export function freshHome(): string {
  return join(tempDir(), 'home');
}

export interface FakeTensor {
  shape: number[];
  values?: number[];
}

/** Writes an F32 safetensors file by hand: u64 LE header length, JSON header, then the raw data. */
export function writeSafetensors(path: string, tensors: Record<string, FakeTensor>, metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const data = Buffer.alloc(numel * 4);
    for (let i = 0; i < numel; i++) data.writeFloatLE(t.values?.[i] ?? (i % 7) * 0.25 - 0.5, i * 4);
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + data.length] };
    chunks.push(data);
    offset += data.length;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  // The format pads the header with spaces to an 8-byte boundary; do the same to exercise it.
  const pad = (8 - (json.length % 8)) % 8;
  json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, Buffer.concat([len, json, ...chunks]));
}

export const FAKE_TENSORS: Record<string, FakeTensor> = {
  'model.embed_tokens.weight': { shape: [16, 8] },
  'model.norm.weight': { shape: [8] },
  'lm_head.weight': { shape: [16, 8] },
};
export const FAKE_PARAMETERS = 16 * 8 + 8 + 16 * 8;

export interface FakeModelOptions {
  readme?: string | null;
  tokenizer?: string;
  tensors?: Record<string, FakeTensor>;
}

/**
 * A small Hugging Face folder: config, weights, tokenizer, a model card, a file in a subfolder, plus junk
 * the importer must skip.
 */
export function makeFakeModel(dir: string, opts: FakeModelOptions = {}): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 8, vocab_size: 16, torch_dtype: 'float32' }, null, 2));
  writeSafetensors(join(dir, 'model.safetensors'), opts.tensors ?? FAKE_TENSORS, { format: 'pt' });
  writeFileSync(join(dir, 'tokenizer.json'), opts.tokenizer ?? '{"version": "1.0", "model": {"type": "BPE"}}');
  if (opts.readme !== null) writeFileSync(join(dir, 'README.md'), opts.readme ?? '---\nlicense: apache-2.0\ntags: [test]\n---\n# fake model\n');
  mkdirSync(join(dir, 'extra'), { recursive: true });
  writeFileSync(join(dir, 'extra', 'notes.txt'), 'kept with its relative path\n');
  writeFileSync(join(dir, '.DS_Store'), 'junk');
  mkdirSync(join(dir, '.cache', 'huggingface'), { recursive: true });
  writeFileSync(join(dir, '.cache', 'huggingface', 'download.lock'), 'junk');
  mkdirSync(join(dir, '__pycache__'), { recursive: true });
  writeFileSync(join(dir, '__pycache__', 'x.cpython-311.pyc'), 'junk');
  return dir;
}

/** Every entry under `root` as "path size" (files) or "path/" (folders), sorted; [] if root is absent. */
export function listTree(root: string): string[] {
  if (!existsSync(root)) return [];
  const out: string[] = [];
  const walk = (abs: string, rel: string) => {
    for (const name of readdirSync(abs)) {
      const a = join(abs, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(a);
      if (st.isDirectory()) {
        out.push(`${r}/`);
        walk(a, r);
      } else out.push(`${r} ${st.size}`);
    }
  };
  walk(root, '');
  return out.sort();
}

/**
 * ../shared/models/stories260k beside the package. packageRoot() is computed for the compiled layout
 * (dist/src/core), so when tests run from source (tsx) the folder is also looked for from this file.
 */
export function stories260kDir(): string | null {
  const candidates = [join(packageRoot(), '..', 'shared', 'models', 'stories260k')];
  let d = dirname(fileURLToPath(import.meta.url));
  while (dirname(d) !== d && !existsSync(join(d, 'package.json'))) d = dirname(d);
  candidates.push(join(d, '..', 'shared', 'models', 'stories260k'));
  return candidates.find((c) => existsSync(join(c, 'config.json'))) ?? null;
}

export const STORIES_MISSING = 'stories260k not found at ../shared/models/stories260k (only present in the development checkout)';
