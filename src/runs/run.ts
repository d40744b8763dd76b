import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomicSync } from '../core/atomic.js';
import { distilleryHome } from '../core/paths.js';
import { UserError } from '../core/errors.js';

export type StageStatus = 'pending' | 'running' | 'done';

export interface StageRecord {
  status: StageStatus;
  started?: string;
  finished?: string;
  seconds?: number;
  /** Attempts so far; more than one means the stage was resumed after an interruption. */
  attempts: number;
  result?: unknown;
}

export interface RunRecord {
  schema: 1;
  id: string;
  recipe: string;
  created: string;
  config: unknown;
  stages: Record<string, StageRecord>;
  status: 'running' | 'done';
}

/** Stable JSON (sorted keys) so that equal configs hash equally. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function shortHash(value: unknown, length = 10): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex').slice(0, length);
}

export function runsRoot(home = distilleryHome()): string {
  return join(home, 'runs');
}

/**
 * A run is a folder under runs/ named by its recipe and a hash of its full configuration: the same command
 * finds the same folder again, which is how an interrupted run resumes. Each stage records its status and
 * result in run.json; a finished stage is never redone.
 */
export class Run {
  private constructor(
    readonly dir: string,
    private record: RunRecord,
  ) {}

  static openOrCreate(recipe: string, config: unknown, home = distilleryHome()): { run: Run; resumed: boolean } {
    const id = `${recipe}-${shortHash(config)}`;
    const dir = join(runsRoot(home), id);
    const file = join(dir, 'run.json');
    if (existsSync(file)) {
      let record: RunRecord;
      try {
        record = JSON.parse(readFileSync(file, 'utf8')) as RunRecord;
      } catch (e) {
        throw new UserError(`run record ${file} is unreadable (${(e as Error).message})`, 'move the folder away to start afresh');
      }
      return { run: new Run(dir, record), resumed: true };
    }
    mkdirSync(dir, { recursive: true });
    const record: RunRecord = { schema: 1, id, recipe, created: new Date().toISOString(), config, stages: {}, status: 'running' };
    const run = new Run(dir, record);
    run.save();
    return { run, resumed: false };
  }

  static load(id: string, home = distilleryHome()): Run {
    const dir = join(runsRoot(home), id);
    const file = join(dir, 'run.json');
    if (!existsSync(file)) throw new UserError(`no run ${id} in ${runsRoot(home)}`);
    return new Run(dir, JSON.parse(readFileSync(file, 'utf8')) as RunRecord);
  }

  get id(): string {
    return this.record.id;
  }

  get status(): RunRecord['status'] {
    return this.record.status;
  }

  get stages(): Readonly<Record<string, StageRecord>> {
    return this.record.stages;
  }

  /** Seconds spent in each stage so far (0 for a stage without a recorded time). */
  stageSeconds(): Record<string, number> {
    return Object.fromEntries(Object.entries(this.record.stages).map(([name, s]) => [name, s.seconds ?? 0]));
  }

  path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  stageResult<T>(name: string): T | undefined {
    const s = this.record.stages[name];
    return s?.status === 'done' ? (s.result as T) : undefined;
  }

  /** Runs `fn` unless the stage already finished, in which case its recorded result is returned. */
  async stage<T>(name: string, fn: (dir: string) => Promise<T>): Promise<T> {
    const existing = this.record.stages[name];
    if (existing?.status === 'done') return existing.result as T;
    const dir = this.path(name);
    mkdirSync(dir, { recursive: true });
    const started = Date.now();
    this.record.stages[name] = {
      status: 'running',
      started: new Date(started).toISOString(),
      attempts: (existing?.attempts ?? 0) + 1,
    };
    this.save();
    const result = await fn(dir);
    const rec = this.record.stages[name]!;
    rec.status = 'done';
    rec.finished = new Date().toISOString();
    rec.seconds = (Date.now() - started) / 1000;
    rec.result = result;
    this.save();
    return result;
  }

  finish(): void {
    this.record.status = 'done';
    this.save();
  }

  toJSON(): RunRecord {
    return this.record;
  }

  private save(): void {
    writeFileAtomicSync(join(this.dir, 'run.json'), JSON.stringify(this.record, null, 2) + '\n');
  }
}
