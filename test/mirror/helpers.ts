/** Fixtures for the mirror tests: models in a temp vault, raw HTTP requests, the engine's Python client. */
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { packageRoot } from '../../src/core/paths.js';
import { vaultLayout } from '../../src/vault/layout.js';
import { modelDigest, writeNewManifest, type Manifest, type ManifestFile } from '../../src/vault/manifest.js';
import { putBlob } from '../../src/vault/store.js';
import { makeFakeModel, tempDir } from '../vault/helpers.js';

export const VENV_BIN = join(packageRoot(), 'engine', '.venv', 'bin');
export const HF_CLI = join(VENV_BIN, 'hf');
export const PYTHON = join(VENV_BIN, 'python');
export const PY_MISSING = existsSync(PYTHON) && existsSync(HF_CLI)
  ? false
  : 'engine/.venv with huggingface_hub is not installed (npm run setup): the real-client conformance checks are skipped';

/** A fake HF model folder whose safetensors file is about `mb` MB (the F32 tensors are filled with a pattern). */
export function makeBigFakeModel(dir: string, opts: { notes?: string; mb?: number } = {}): string {
  const cols = 256;
  const rows = Math.max(1, Math.round(((opts.mb ?? 3) * 1e6) / 2 / 4 / cols));
  makeFakeModel(dir, {
    tensors: {
      'model.embed_tokens.weight': { shape: [rows, cols] },
      'model.norm.weight': { shape: [cols] },
      'lm_head.weight': { shape: [rows, cols] },
    },
  });
  if (opts.notes !== undefined) writeFileSync(join(dir, 'extra', 'notes.txt'), opts.notes);
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ model_max_length: 2048, chat_template: '{{ messages }}' }));
  return dir;
}

/**
 * Adds a GGUF model to the vault by writing its blobs and manifest directly (the mirror only needs the
 * manifest and blobs; the bytes need not be a loadable GGUF).
 */
export async function addGgufModel(home: string, name: string, files: Record<string, Buffer>): Promise<Manifest> {
  const layout = vaultLayout(home);
  const src = tempDir('distillery-gguf-');
  const entries: ManifestFile[] = [];
  for (const [path, bytes] of Object.entries(files)) {
    const abs = join(src, ...path.split('/'));
    mkdirSync(join(abs, '..'), { recursive: true });
    writeFileSync(abs, bytes);
    const blob = await putBlob(layout, abs);
    entries.push({ path, sha256: blob.sha256, size: blob.size });
  }
  const manifest: Manifest = {
    schema: 1, name, version: 1, created: new Date().toISOString(), digest: modelDigest(entries), format: 'gguf',
    architecture: 'llama', model_type: 'llama', parameters: 1000, dtype: null, license: 'mit',
    details: { context_length: 2048, quantization: 'Q4_K_M', chat_template: '{{ messages }}' },
    source: { kind: 'local-dir', path: src }, files: entries, lineage: null,
  };
  writeNewManifest(layout, manifest);
  return manifest;
}

export function fakeGguf(bytes: number): Buffer {
  return Buffer.concat([Buffer.from('GGUF\x03\x00\x00\x00', 'latin1'), randomBytes(bytes)]);
}

export function gitBlobSha1(data: Buffer): string {
  return createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** An HTTP request with the path sent exactly as given (fetch would normalise `..` and `%2e%2e` first). */
export function rawRequest(base: string, path: string, opts: { method?: string; headers?: Record<string, string> } = {}): Promise<RawResponse> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, method: opts.method ?? 'GET', path, headers: opts.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** The environment for the Python client: a fresh HF_HOME, this mirror as the endpoint, nothing inherited that redirects it. */
export function hfEnv(endpoint: string, hfHome: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) {
    if (/^(HF_|HUGGINGFACE_)/.test(k)) delete env[k];
  }
  return {
    ...env, HF_ENDPOINT: endpoint, HF_HOME: hfHome, HF_HUB_DISABLE_TELEMETRY: '1', HF_HUB_DISABLE_UPDATE_CHECK: '1',
    HF_HUB_DISABLE_PROGRESS_BARS: '1', ...extra,
  };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program without blocking the event loop (the mirror under test lives in this process). */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 120_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? ((err as unknown as { code: number }).code) : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** Runs a Python script with the engine's interpreter; the script prints one JSON object last. */
export async function runPython(script: string, env: NodeJS.ProcessEnv): Promise<Record<string, unknown>> {
  const r = await run(PYTHON, ['-c', script], env);
  const last = r.stdout.trim().split('\n').pop() ?? '';
  if (r.code !== 0 || !last.startsWith('{')) throw new Error(`python failed (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  return JSON.parse(last) as Record<string, unknown>;
}
