import { threadsSetting } from '../../engine/python.js';
import { fork, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { track } from '../../engine/children.js';
import { StderrTail } from '../../engine/errors.js';
import {
  BackendCancelled, BackendCrashed, BackendRequestError,
  type Backend, type CompletionJob, type CompletionResult, type Delta,
} from './types.js';
import type { ChildMessage, ParentMessage } from './llama-protocol.js';

/**
 * GGUF models, served by node-llama-cpp in a child process of their own (llama-child.ts): a malformed file
 * or an internal llama.cpp error can abort the process, which must not take the server with it.
 */

export interface LlamaBackendOptions {
  ggufPath: string;
  /** Most tokens per sequence (capped by the model's trained context). */
  contextSize: number;
  /** Concurrent requests: one context sequence each. */
  sequences: number;
  vocabSize: number | null;
  /** Threads for llama.cpp (default: DISTILLERY_THREADS, else the machine's available parallelism). */
  threads?: number;
  gpu?: 'auto' | false;
  /** Lines from the child's stderr (llama.cpp warnings). */
  log?: (line: string) => void;
}

interface Pending {
  resolve: (r: CompletionResult) => void;
  reject: (e: Error) => void;
  onDelta: ((d: Delta) => void) | null;
}

const CHILD = fileURLToPath(new URL('./llama-child.js', import.meta.url));
const LOAD_TIMEOUT_MS = 10 * 60_000;

export class LlamaBackend implements Backend {
  readonly kind = 'llama';
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private exited: string | null = null;
  private closing = false;
  private readonly crashListeners: Array<(why: string) => void> = [];

  private constructor(
    private readonly child: ChildProcess,
    private readonly stderr: StderrTail,
    readonly contextLength: number,
    readonly device: string,
  ) {
    child.on('message', (m: ChildMessage) => this.onMessage(m));
    child.once('exit', (code, signal) => {
      this.exited = signal ? `signal ${signal}` : `code ${code}`;
      const why = `the llama.cpp process exited (${this.exited})`;
      const err = new BackendCrashed(why, this.stderr.toString() || undefined);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
      if (!this.closing) for (const l of this.crashListeners) l(why);
    });
  }

  static async start(opts: LlamaBackendOptions): Promise<LlamaBackend> {
    const threads = opts.threads ?? threadsSetting() ?? Math.max(1, availableParallelism());
    const stderr = new StderrTail();
    const child = fork(CHILD, [], {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      serialization: 'json',
      // Not the parent's flags (e.g. the test runner's); a loader such as tsx is kept so sources run too.
      execArgv: process.execArgv.filter((a, i, all) => /^--(import|loader|require|experimental-loader)/.test(a) || /^--(import|loader|require|experimental-loader)$/.test(all[i - 1] ?? '')),
    });
    track(child);
    const onOutput = (d: Buffer) => {
      const text = d.toString('utf8');
      stderr.push(text);
      for (const line of text.split('\n')) if (line.trim()) opts.log?.(line);
    };
    child.stdout?.on('data', onOutput);
    child.stderr?.on('data', onOutput);

    const loaded = await new Promise<{ contextSize: number; gpu: string | false; threads: number }>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`llama.cpp did not load ${opts.ggufPath} within ${LOAD_TIMEOUT_MS / 1000} s`));
      }, LOAD_TIMEOUT_MS);
      const done = () => {
        clearTimeout(timer);
        child.off('message', onMessage);
        child.off('exit', onExit);
      };
      const onMessage = (m: ChildMessage) => {
        if (m.type === 'loaded') {
          done();
          resolve(m);
        } else if (m.type === 'load-error') {
          done();
          child.kill('SIGKILL');
          reject(new Error(`llama.cpp could not load ${opts.ggufPath}: ${m.message}`));
        }
      };
      const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
        done();
        const tail = stderr.toString();
        reject(new Error(`llama.cpp exited (${signal ? `signal ${signal}` : `code ${code}`}) while loading ${opts.ggufPath}${tail ? `; its last output:\n${tail}` : ''}`));
      };
      child.on('message', onMessage);
      child.once('exit', onExit);
      const load: ParentMessage = {
        type: 'load', modelPath: opts.ggufPath, contextSize: opts.contextSize, sequences: opts.sequences,
        threads, vocabSize: opts.vocabSize, gpu: opts.gpu ?? 'auto',
      };
      child.send(load);
    });
    return new LlamaBackend(child, stderr, loaded.contextSize, `${loaded.gpu === false ? 'cpu' : loaded.gpu}, ${loaded.threads} threads, ${loaded.contextSize} tokens per sequence`);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  onCrash(listener: (why: string) => void): void {
    this.crashListeners.push(listener);
  }

  private onMessage(m: ChildMessage): void {
    if (m.type !== 'delta' && m.type !== 'done' && m.type !== 'error') return;
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.type === 'delta') {
      p.onDelta?.(m.delta);
      return;
    }
    this.pending.delete(m.id);
    if (m.type === 'done') p.resolve(m.result);
    else if (m.kind === 'cancelled') p.reject(new BackendCancelled());
    else if (m.kind === 'request') p.reject(new BackendRequestError(m.message));
    else p.reject(new Error(`llama.cpp failed: ${m.message}`));
  }

  complete(job: CompletionJob, onDelta: ((d: Delta) => void) | null, signal: AbortSignal): Promise<CompletionResult> {
    if (signal.aborted) return Promise.reject(new BackendCancelled());
    if (this.exited !== null) return Promise.reject(new BackendCrashed(`the llama.cpp process is not running (${this.exited})`, undefined, true));
    const id = this.nextId++;
    return new Promise<CompletionResult>((resolve, reject) => {
      const onAbort = () => this.post({ type: 'cancel', id });
      signal.addEventListener('abort', onAbort, { once: true });
      const settle = <T>(f: (v: T) => void) => (v: T) => {
        signal.removeEventListener('abort', onAbort);
        f(v);
      };
      this.pending.set(id, { resolve: settle(resolve), reject: settle(reject), onDelta });
      this.post({ type: 'complete', id, job, stream: onDelta !== null });
    });
  }

  private post(m: ParentMessage): void {
    if (this.exited !== null || !this.child.connected) return;
    try {
      this.child.send(m);
    } catch {
      // the exit handler fails what is pending
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.exited !== null) return;
    const gone = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.post({ type: 'shutdown' });
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await gone;
    clearTimeout(timer);
  }
}
