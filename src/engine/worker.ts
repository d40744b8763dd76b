import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { engineCommand } from './python.js';
import { track } from './children.js';
import { EngineError, StderrTail } from './errors.js';

export interface WorkerEvent {
  type: string;
  [field: string]: unknown;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  onEvent?: (event: WorkerEvent) => void;
  method: string;
}

export interface Health {
  ok: boolean;
  python: string;
  torch: string;
  transformers: string;
  device: string;
  cuda: boolean;
  bf16: boolean;
  [field: string]: unknown;
}

/**
 * A long-lived engine process spoken to in JSON lines over stdio (see docs/architecture.md). Requests may be
 * pipelined; each response is matched by id. If the process dies, every request in flight fails with the
 * end of its stderr, and later calls fail at once.
 */
export class EngineWorker {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly stderr = new StderrTail();
  private exited: string | undefined;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    track(child);
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      this.stderr.push(d);
      if (process.env.DISTILLERY_DEBUG) process.stderr.write(d);
    });
    createInterface({ input: child.stdout }).on('line', (line) => this.onLine(line));
    child.once('exit', (code, signal) => {
      this.exited = signal ? `signal ${signal}` : `code ${code}`;
      const err = new EngineError(
        'exit',
        `the engine worker exited (${this.exited})`,
        undefined,
        this.stderr.toString() ? `its last output:\n${this.stderr.toString()}` : undefined,
      );
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    });
    child.once('error', (e) => {
      this.exited = e.message;
    });
  }

  /** Starts a worker and waits until it answers a health check. */
  static async start(): Promise<EngineWorker> {
    const { python, env } = engineCommand();
    const child = spawn(python, ['-m', 'distillery_engine.worker'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const worker = new EngineWorker(child);
    await worker.health();
    return worker;
  }

  /** Starts a worker, runs `fn` with it, and closes it whatever happens. */
  static async using<T>(fn: (worker: EngineWorker) => Promise<T>): Promise<T> {
    const worker = await EngineWorker.start();
    try {
      return await fn(worker);
    } finally {
      await worker.close();
    }
  }

  health(): Promise<Health> {
    return this.call('health', {}) as Promise<Health>;
  }

  call(method: string, params: Record<string, unknown>, onEvent?: (e: WorkerEvent) => void): Promise<unknown> {
    if (this.exited !== undefined) {
      return Promise.reject(new EngineError('exit', `the engine worker is not running (${this.exited})`));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onEvent, method });
      this.child.stdin.write(JSON.stringify({ id, method, params }) + '\n');
    });
  }

  private onLine(line: string): void {
    let msg: { id?: number | null; result?: unknown; error?: { type: string; message: string; traceback?: string }; event?: WorkerEvent };
    try {
      msg = JSON.parse(line);
    } catch {
      this.stderr.push(`[non-protocol output] ${line}\n`);
      return;
    }
    const p = msg.id != null ? this.pending.get(msg.id) : undefined;
    if (!p) return;
    if (msg.event) {
      p.onEvent?.(msg.event);
      return;
    }
    this.pending.delete(msg.id as number);
    if (msg.error) p.reject(new EngineError(msg.error.type, msg.error.message, msg.error.traceback));
    else p.resolve(msg.result);
  }

  /** Asks the worker to exit; kills it if it has not gone within the grace period. */
  async close(graceMs = 5000): Promise<void> {
    if (this.exited !== undefined) return;
    const gone = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.call('shutdown', {}).catch(() => undefined);
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await gone;
    clearTimeout(timer);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }
}
