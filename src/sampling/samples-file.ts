import { closeSync, existsSync, fsyncSync, openSync, readFileSync, truncateSync, writeSync } from 'node:fs';
import { UserError } from '../core/errors.js';
import { writeFileAtomicSync } from '../core/atomic.js';
import { sha256Hex } from '../core/hash.js';
import type { SampleRequest, SampleResult } from './sampler.js';

/**
 * The samples file of the backends that run in this process (HTTP, llama.cpp): records are appended and
 * fsynced as samples finish, in whatever order they finish; a re-run drops a torn last line, skips the pairs
 * already present, and when every pair is there the file is rewritten in (prompt_index, sample_index) order,
 * exactly as the engine's sample job leaves it. `<stem>.params.json` records what produced the samples; a
 * re-run with anything else is refused rather than mixing two distributions in one file.
 */

export interface SampleLine {
  prompt_index: number;
  sample_index: number;
  completion: string;
  finish_reason: string;
  token_ids?: number[];
}

export class SamplesFile {
  private fd: number | null = null;
  readonly done = new Set<string>();

  private constructor(readonly path: string) {}

  /** Opens `path` for appending after checking `params` against an earlier run's (if any). */
  static open(path: string, params: Record<string, unknown>): SamplesFile {
    const f = new SamplesFile(path);
    // Named as the engine names it (samples.jsonl → samples.params.json).
    const paramsFile = `${path.replace(/\.jsonl$/, '')}.params.json`;
    const text = JSON.stringify(params, null, 2) + '\n';
    if (existsSync(paramsFile) && existsSync(path)) {
      const before = readFileSync(paramsFile, 'utf8');
      if (before !== text) {
        throw new UserError(
          `${path} holds samples made with other settings (${paramsFile} differs: ${diffKeys(before, text)})`,
          'delete the file (and its .params.json) to start over, or sample with the same settings to resume',
        );
      }
    }
    writeFileAtomicSync(paramsFile, text);
    if (existsSync(path)) {
      const content = readFileSync(path, 'utf8');
      // A kill mid-append leaves a torn last line: cut the file back to its last complete record.
      const end = content.lastIndexOf('\n') + 1;
      if (end < content.length) truncateSync(path, Buffer.byteLength(content.slice(0, end)));
      for (const line of content.slice(0, end).split('\n')) {
        if (!line) continue;
        const r = JSON.parse(line) as SampleLine;
        f.done.add(key(r.prompt_index, r.sample_index));
      }
    }
    f.fd = openSync(path, 'a');
    return f;
  }

  has(prompt: number, sample: number): boolean {
    return this.done.has(key(prompt, sample));
  }

  append(r: SampleLine): void {
    if (this.fd === null) throw new Error('samples file is closed');
    writeSync(this.fd, JSON.stringify(r) + '\n');
    fsyncSync(this.fd);
    this.done.add(key(r.prompt_index, r.sample_index));
  }

  /** Closes the file; when complete (`total` pairs), rewrites it sorted. */
  close(total: number): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
    if (this.done.size !== total) return;
    const lines = readFileSync(this.path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as SampleLine);
    lines.sort((a, b) => a.prompt_index - b.prompt_index || a.sample_index - b.sample_index);
    writeFileAtomicSync(this.path, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  }
}

function key(p: number, s: number): string {
  return `${p}:${s}`;
}

function diffKeys(a: string, b: string): string {
  try {
    const x = JSON.parse(a) as Record<string, unknown>;
    const y = JSON.parse(b) as Record<string, unknown>;
    const keys = [...new Set([...Object.keys(x), ...Object.keys(y)])].filter((k) => JSON.stringify(x[k]) !== JSON.stringify(y[k]));
    return keys.join(', ') || 'formatting';
  } catch {
    return 'unreadable';
  }
}

/** Identifies a prompt list in params files without storing the prompts twice. */
export function promptsDigest(prompts: string[]): string {
  return sha256Hex(JSON.stringify(prompts));
}

/**
 * The loop shared by the in-process backends: opens the samples file (checking `identity` and the request
 * against an earlier run), draws every missing (prompt, sample) pair with at most `concurrency` in flight,
 * appending each as it finishes, and stops at the first failure (what was drawn stays for a resume).
 * `draw` gets the sample's own seed: decoding.seed + its position, so a resumed run draws the same samples.
 */
export async function drawMissing(
  req: SampleRequest,
  identity: Record<string, unknown>,
  concurrency: number,
  draw: (prompt: string, seed: number) => Promise<{ text: string; finish: string }>,
): Promise<SampleResult> {
  const start = Date.now();
  const total = req.prompts.length * req.n;
  const file = SamplesFile.open(req.outputFile, {
    ...identity, n: req.n, decoding: req.decoding, prompts: promptsDigest(req.prompts), prompt_count: req.prompts.length,
  });
  const resumed = file.done.size;
  const todo: Array<[number, number]> = [];
  for (let p = 0; p < req.prompts.length; p++) for (let s = 0; s < req.n; s++) if (!file.has(p, s)) todo.push([p, s]);
  let done = resumed;
  req.onProgress?.(done, total);
  let next = 0;
  const failed: { error: Error | null } = { error: null };
  const loop = async () => {
    while (failed.error === null && next < todo.length) {
      const [p, s] = todo[next++]!;
      try {
        const r = await draw(req.prompts[p]!, req.decoding.seed + p * req.n + s);
        if (failed.error !== null) return;
        file.append({ prompt_index: p, sample_index: s, completion: r.text, finish_reason: r.finish });
        req.onProgress?.(++done, total);
      } catch (e) {
        failed.error ??= e as Error;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(Math.max(1, concurrency), Math.max(1, todo.length)) }, loop));
  } finally {
    file.close(total);
  }
  if (failed.error !== null) throw failed.error;
  return { count: total, seconds: (Date.now() - start) / 1000, resumed };
}

/** Whether any pair of `req` is still missing from its samples file (without opening it for writing). */
export function anyMissing(req: SampleRequest): boolean {
  if (!existsSync(req.outputFile)) return true;
  const lines = readFileSync(req.outputFile, 'utf8').split('\n').filter((l) => l.endsWith('}'));
  return lines.length < req.prompts.length * req.n;
}
