/**
 * Scoring: run every completion of every task in the sandbox, then pass@k per task and over tasks, with a
 * bootstrap interval over tasks. Nothing is dropped silently: a task without completions, a missing
 * completion, a completion for an unknown task or k > n is an error, and every program's outcome is counted.
 */
import { UserError } from '../core/errors.js';
import { bootstrapMeanCI, type BootstrapOptions } from './bootstrap.js';
import { passAtK } from './passk.js';
import { limitsForConcurrency, resolveConcurrency, runMany, sandboxInfo, sandboxLevel, SANDBOX_STATUSES, type SandboxLimits, type SandboxResult, type SandboxStatus } from './sandbox.js';
import type { Program } from './sandbox.js';
import { canonicalChecks, checksFor, type Check } from './formats/index.js';
import { stdoutMatches } from './formats/compare.js';
import type { CodeTask, CompletionFormat } from './tasks.js';

export interface ScoreOptions {
  /** k values of pass@k (each 1 ≤ k ≤ n for every task). */
  k: number[];
  limits?: Partial<SandboxLimits>;
  /** Programs run at once (default: the number of CPU cores). */
  concurrency?: number;
  /** How completions become programs (default 'continuation': prompt + completion). */
  format?: CompletionFormat;
  /** Bootstrap settings for the intervals (default 2000 resamples, 95 %, seed 0). */
  bootstrap?: BootstrapOptions;
}

export interface TaskScore {
  id: string;
  /** Completions run. */
  n: number;
  /** Completions that passed. */
  correct: number;
  /** Unbiased pass@k for this task, by k. */
  passAtK: Record<number, number>;
  /** Sandbox status of each completion, in completion order. */
  outcomes: SandboxStatus[];
  /** The first completion that did not pass, to see why (stderr's last 1000 characters). */
  firstFailure?: { index: number; status: SandboxStatus; note?: string; stderrTail: string };
}

export interface ScoreResult {
  perTask: TaskScore[];
  /** Mean over tasks of per-task pass@k, with a percentile bootstrap interval over tasks. */
  passAtK: Record<number, { value: number; ci: [number, number] }>;
  /** Programs scored in total (copies included). */
  n: number;
  /** Distinct programs actually executed: identical programs run once and share their outcome. */
  executed: number;
  tasks: number;
  /** What isolation the programs ran under (sandboxLevel()). */
  sandbox: string;
  statusCounts: Record<SandboxStatus, number>;
}

function checkInputs(tasks: readonly CodeTask[], completions: ReadonlyMap<string, readonly string[]>, ks: number[]): void {
  if (tasks.length === 0) throw new UserError('nothing to score: the task list is empty');
  if (ks.length === 0) throw new UserError('no k given for pass@k');
  for (const k of ks) if (!Number.isInteger(k) || k < 1) throw new UserError(`pass@k needs whole k ≥ 1, got ${k}`);
  const ids = new Set<string>();
  for (const t of tasks) {
    if (ids.has(t.id)) throw new UserError(`task id ${JSON.stringify(t.id)} appears twice`);
    ids.add(t.id);
    const list = completions.get(t.id);
    if (!list || list.length === 0) throw new UserError(`task ${JSON.stringify(t.id)} has no completions`);
    for (let i = 0; i < list.length; i++) {
      if (typeof list[i] !== 'string') throw new UserError(`task ${JSON.stringify(t.id)}: completion ${i} is missing`);
    }
    const kMax = Math.max(...ks);
    if (list.length < kMax) {
      throw new UserError(`task ${JSON.stringify(t.id)} has ${list.length} completions, fewer than k=${kMax}`, 'pass@k needs at least k samples per task');
    }
  }
  for (const id of completions.keys()) {
    if (!ids.has(id)) throw new UserError(`completions given for unknown task ${JSON.stringify(id)}`);
  }
}

/** Runs and scores completions; `onProgress(done, total)` is called after each program. */
export async function scoreCompletions(
  tasks: readonly CodeTask[],
  completions: ReadonlyMap<string, readonly string[]>,
  opts: ScoreOptions,
  onProgress?: (done: number, total: number) => void,
): Promise<ScoreResult> {
  const ks = [...new Set(opts.k)].sort((a, b) => a - b);
  checkInputs(tasks, completions, ks);
  const info = sandboxInfo();
  if (!info.python) {
    throw new UserError(`the code sandbox cannot run: ${info.notes.join('; ')}`, 'install python3, or point DISTILLERY_SANDBOX_PYTHON at an interpreter');
  }

  // Each completion becomes one or more checks (stdin/stdout tasks: one run per test case); it passes when
  // every check passes.
  const checks: Check[][] = [];
  const owner: { task: number; index: number }[] = [];
  tasks.forEach((task, t) => {
    completions.get(task.id)!.forEach((c, index) => {
      checks.push(checksFor(task, c, opts.format));
      owner.push({ task: t, index });
    });
  });
  const concurrency = resolveConcurrency(opts.concurrency);
  const limits = limitsForConcurrency(opts.limits, concurrency);
  const { outcomes: results, executed } = await runChecks(checks, concurrency, limits, onProgress);
  const statusCounts = Object.fromEntries(SANDBOX_STATUSES.map((s) => [s, 0])) as Record<SandboxStatus, number>;
  const byTask: SandboxResult[][] = tasks.map(() => []);
  results.forEach((r, i) => {
    statusCounts[r.status]++;
    byTask[owner[i]!.task]!.push(r);
  });
  if (statusCounts.error === results.length) {
    throw new UserError(`every program failed to run in the sandbox (status 'error'): ${results[0]?.note ?? 'no detail'}`);
  }

  const perTask: TaskScore[] = tasks.map((task, t) => {
    const rs = byTask[t]!;
    const correct = rs.filter((r) => r.status === 'pass').length;
    const score: TaskScore = {
      id: task.id,
      n: rs.length,
      correct,
      passAtK: Object.fromEntries(ks.map((k) => [k, passAtK(rs.length, correct, k)])),
      outcomes: rs.map((r) => r.status),
    };
    const fi = rs.findIndex((r) => r.status !== 'pass');
    if (fi >= 0) {
      const r = rs[fi]!;
      score.firstFailure = { index: fi, status: r.status, ...(r.note ? { note: r.note } : {}), stderrTail: r.stderr.slice(-1000) };
    }
    return score;
  });

  const passAtKSummary: ScoreResult['passAtK'] = {};
  for (const k of ks) {
    const { mean, ci } = bootstrapMeanCI(perTask.map((p) => p.passAtK[k]!), opts.bootstrap);
    passAtKSummary[k] = { value: mean, ci };
  }
  return {
    perTask,
    passAtK: passAtKSummary,
    n: results.length,
    executed,
    tasks: tasks.length,
    sandbox: sandboxLevel(limits),
    statusCounts,
  };
}

/**
 * Runs groups of checks (one group per completion) and gives each group one outcome: the first check that did
 * not pass (a run that passed but printed the wrong stdout is a `fail` with a "wrong answer" note), else the
 * last check's result. Identical programs (the same completion of the same task, which sampling at low
 * temperature produces often) run once and share their outcome: programs are deterministic (PYTHONHASHSEED is
 * fixed), so a copy would get the same result; a flaky program gets one outcome for all its copies.
 * `onProgress(done, total)` counts checks, copies included.
 */
export async function runChecks(
  groups: readonly (readonly Check[])[],
  concurrency: number,
  limits: SandboxLimits,
  onProgress?: (done: number, total: number) => void,
): Promise<{ outcomes: SandboxResult[]; executed: number }> {
  const unique: Program[] = [];
  const uniqueOf = new Map<string, number>();
  const copies: number[] = [];
  const slots = groups.map((g) =>
    g.map((c) => {
      const key = typeof c.program === 'string' ? c.program : JSON.stringify(c.program);
      let u = uniqueOf.get(key);
      if (u === undefined) {
        u = unique.length;
        uniqueOf.set(key, u);
        unique.push(c.program);
        copies.push(0);
      }
      copies[u]!++;
      return u;
    }),
  );
  const total = slots.reduce((a, g) => a + g.length, 0);
  let done = 0;
  const results = await runMany(unique, { concurrency, limits }, (_done, _total, _last, u) => {
    for (let c = 0; c < copies[u]!; c++) onProgress?.(++done, total);
  });
  const outcomes = groups.map((g, gi) => {
    let last: SandboxResult | undefined;
    for (let i = 0; i < g.length; i++) {
      const r = results[slots[gi]![i]!]!;
      const label = g[i]!.label ? ` (${g[i]!.label})` : '';
      if (r.status !== 'pass') return label ? { ...r, note: `${r.note ? r.note + ' ' : ''}${label.trim()}` } : r;
      const expected = g[i]!.expectedStdout;
      if (expected !== undefined && !stdoutMatches(r.stdout, expected)) {
        return { ...r, status: 'fail' as const, note: `wrong answer${label}: expected ${clip(expected)}, got ${clip(r.stdout)}` };
      }
      last = r;
    }
    if (!last) throw new Error('a completion produced no checks');
    return last;
  });
  return { outcomes, executed: unique.length };
}

function clip(s: string): string {
  return JSON.stringify(s.length > 200 ? s.slice(0, 200) + '…' : s);
}

export interface CanonicalResult {
  id: string;
  /** ok: the reference passed; failed: it did not (a harness or data bug); skipped: the task has no reference. */
  status: 'ok' | 'failed' | 'skipped';
  result?: SandboxResult;
}

/**
 * Runs each task's reference solution through the harness exactly as a model's completion would run
 * (--check-canonical). Any failure is a bug in the harness or in the data, never the model's.
 */
export async function checkCanonical(
  tasks: readonly CodeTask[],
  opts: { concurrency?: number; limits?: Partial<SandboxLimits> } = {},
  onProgress?: (done: number, total: number) => void,
): Promise<CanonicalResult[]> {
  const info = sandboxInfo();
  if (!info.python) {
    throw new UserError(`the code sandbox cannot run: ${info.notes.join('; ')}`, 'install python3, or point DISTILLERY_SANDBOX_PYTHON at an interpreter');
  }
  const withRef = tasks.map((t) => ({ task: t, checks: canonicalChecks(t) }));
  const runnable = withRef.filter((x) => x.checks !== undefined);
  const concurrency = resolveConcurrency(opts.concurrency);
  const limits = limitsForConcurrency(opts.limits, concurrency);
  const { outcomes } = runnable.length ? await runChecks(runnable.map((x) => x.checks!), concurrency, limits, onProgress) : { outcomes: [] };
  const byId = new Map(runnable.map((x, i) => [x.task.id, outcomes[i]!]));
  return tasks.map((t) => {
    const r = byId.get(t.id);
    if (!r) return { id: t.id, status: 'skipped' as const };
    return { id: t.id, status: r.status === 'pass' ? ('ok' as const) : ('failed' as const), result: r };
  });
}
