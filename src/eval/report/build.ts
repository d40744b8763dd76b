/**
 * Comparison reports: collects evaluation results for recipe runs, vault models (or model folders) and summary
 * files, pairs the ones that can be compared (same decoding, shared tasks), and computes the paired statistics
 * (stats.ts) for each pair. The result is plain JSON; render.ts turns it into a terminal table and HTML.
 *
 * Where results come from:
 * - a run id (a folder under $DISTILLERY_HOME/runs): its `evaluate` stage result `{base, distilled}` (code tasks)
 *   and its `retention` stage `{base, distilled}`, whichever it has; base and distilled are compared;
 * - `NAME[:VERSION]` or a model folder: every cached evaluation in the eval cache (evalCacheDir()) whose
 *   model_digest is the model's digest — code evaluations and retention runs alike;
 * - a `.json` file: an evaluation summary as `distillery eval --json` prints it or the cache stores it.
 * Models given directly (not runs) are compared with the first one given.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { UserError } from '../../core/errors.js';
import { distilleryHome } from '../../core/paths.js';
import type { Decoding } from '../../engine/decoding.js';
import { takeModel } from '../../recipes/models.js';
import { canonicalJson, runsRoot, type RunRecord } from '../../runs/run.js';
import { evalCacheDir } from '../run.js';
import { comparePaired, passAtKEstimate, avgAtN, type Estimate, type PairedComparison, type TaskResult } from '../stats.js';
import { HARNESS_VERSION } from '../version.js';

export type Suite = 'code' | 'retention' | 'qa';

/** What any stored evaluation summary looks like, as far as reports need it. */
export interface StoredSummary {
  suite?: Suite;
  model_digest: string;
  decoding: Decoding;
  n: number;
  tasks: number;
  pass_at_k: Record<string, Estimate>;
  per_task: (TaskResult & { kind?: string })[];
  harness_version?: string;
  prompt_format?: string;
  seed?: number;
  sandbox?: string;
}

export interface EvaluationEntry {
  suite: Suite;
  /** Where it was read from (a file, or "run RUN_ID stage evaluate"). */
  source: string;
  model_digest: string;
  harness_version: string;
  decoding: Decoding;
  prompt_format: string;
  seed: number;
  n: number;
  tasks: number;
  pass_at_k: Record<string, Estimate>;
  avg_at_n: Estimate;
  /** Avg@n per task difficulty, when the tasks carry one. */
  by_difficulty?: Record<string, Estimate & { tasks: number }>;
  /** Avg@n per probe kind (retention). */
  by_kind?: Record<string, Estimate & { tasks: number }>;
  sandbox?: string;
  per_task: (TaskResult & { kind?: string })[];
}

export interface ReportModel {
  label: string;
  source: 'run' | 'vault' | 'folder' | 'file';
  ref: string | null;
  run_id: string | null;
  digest: string;
  evaluations: EvaluationEntry[];
}

export interface ReportComparison {
  suite: Suite;
  /** Labels of the two models: A is the baseline (before), B the candidate (after). */
  a: string;
  b: string;
  decoding: Decoding;
  prompt_format: string;
  seed: number;
  n: number;
  /** One paired comparison per k of pass@k present in both results. */
  by_k: PairedComparison[];
  /** Per-task pass rates (correct / n) before and after, on the shared tasks. */
  per_task: { id: string; difficulty?: string | number; kind?: string; a: number; b: number }[];
  /** Pass rate by difficulty (or probe kind for retention), before and after, on the shared tasks. */
  groups: { by: 'difficulty' | 'kind'; rows: { group: string; tasks: number; a: number; b: number; diff: number }[] } | null;
  /** The pass@1 verdict line. */
  verdict: string;
}

export interface Report {
  harness_version: string;
  generated_at: string;
  models: ReportModel[];
  comparisons: ReportComparison[];
  /** Pairs that could not be compared, and why. */
  notes: string[];
}

export interface ReportOptions {
  home?: string;
  /** Bootstrap seed and resamples for every interval (defaults as in stats.ts). */
  seed?: number;
  resamples?: number;
  /** Fixed timestamp (tests). */
  now?: Date;
}

function groupBy(tasks: readonly (TaskResult & { kind?: string })[], pick: (t: TaskResult & { kind?: string }) => string | undefined): Record<string, Estimate & { tasks: number }> | undefined {
  const groups = new Map<string, TaskResult[]>();
  for (const t of tasks) {
    const g = pick(t);
    if (g === undefined) return undefined; // only when every task has one
    groups.set(g, [...(groups.get(g) ?? []), t]);
  }
  if (groups.size === 0) return undefined;
  return Object.fromEntries([...groups].sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true })).map(([g, ts]) => [g, { ...avgAtN(ts), tasks: ts.length }]));
}

function checkSummary(v: unknown, where: string): StoredSummary {
  const s = v as StoredSummary;
  if (!s || typeof s !== 'object' || typeof s.model_digest !== 'string' || !Array.isArray(s.per_task) || !s.pass_at_k || !s.decoding) {
    throw new UserError(`${where} is not an evaluation summary (it needs model_digest, decoding, pass_at_k and per_task)`);
  }
  for (const t of s.per_task) {
    if (typeof t?.id !== 'string' || !Number.isInteger(t.n) || !Number.isInteger(t.correct) || t.n < 1 || t.correct < 0 || t.correct > t.n) {
      throw new UserError(`${where}: a per-task record is malformed (${JSON.stringify(t).slice(0, 120)})`);
    }
  }
  return s;
}

/** A stored summary as a report entry: records what it was made with (older summaries lack some fields). */
export function toEntry(s: StoredSummary, source: string): EvaluationEntry {
  const suite: Suite = s.suite === 'retention' || s.suite === 'qa' ? s.suite : 'code';
  const per = s.per_task.map((t) => ({ ...t }));
  const entry: EvaluationEntry = {
    suite,
    source,
    model_digest: s.model_digest,
    harness_version: s.harness_version ?? 'unrecorded (before distillery-eval/2)',
    decoding: s.decoding,
    prompt_format: s.prompt_format ?? (s.decoding.chat_template ? 'chat' : 'base'),
    seed: s.seed ?? s.decoding.seed,
    n: s.n,
    tasks: s.tasks,
    pass_at_k: s.pass_at_k,
    avg_at_n: avgAtN(per),
    per_task: per,
  };
  const byDiff = groupBy(per, (t) => (t.difficulty === undefined ? undefined : String(t.difficulty)));
  if (byDiff) entry.by_difficulty = byDiff;
  if (suite !== 'code') {
    const byKind = groupBy(per, (t) => t.kind);
    if (byKind) entry.by_kind = byKind;
  }
  if (s.sandbox) entry.sandbox = s.sandbox;
  return entry;
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UserError(`cannot read ${file}: ${(e as Error).message}`);
  }
}

/** Every cached summary in the eval cache for a digest, newest first. */
export function cachedEvaluations(digest: string, cacheDir: string): EvaluationEntry[] {
  if (!existsSync(cacheDir)) return [];
  const found: { entry: EvaluationEntry; mtime: number }[] = [];
  for (const d of readdirSync(cacheDir)) {
    const file = join(cacheDir, d, 'summary.json');
    if (!existsSync(file)) continue;
    let v: unknown;
    try {
      v = JSON.parse(readFileSync(file, 'utf8'));
    } catch {
      continue; // a half-written or foreign file is not this model's evaluation
    }
    if ((v as StoredSummary)?.model_digest !== digest) continue;
    found.push({ entry: toEntry(checkSummary(v, file), file), mtime: statSync(file).mtimeMs });
  }
  return found.sort((a, b) => b.mtime - a.mtime).map((f) => f.entry);
}

interface RunModels {
  base: ReportModel;
  distilled: ReportModel;
}

function loadRun(id: string, home: string): RunModels {
  const record = readJson(join(runsRoot(home), id, 'run.json')) as RunRecord;
  // A run's before/after pairs: code evaluation (`evaluate`) and the retention suite (`retention`).
  const pairs = (['evaluate', 'retention'] as const).flatMap((stage) => {
    const st = record.stages?.[stage];
    const r = st?.status === 'done' ? (st.result as { base?: unknown; distilled?: unknown } | null) : null;
    if (!r?.base || !r.distilled) return [];
    const where = `run ${id} stage ${stage}`;
    return [{ where, base: checkSummary(r.base, `${where} (base)`), distilled: checkSummary(r.distilled, `${where} (distilled)`) }];
  });
  if (pairs.length === 0) {
    throw new UserError(
      `run ${id} has no finished evaluation`,
      'a run evaluates base and distilled when given evaluation tasks (e.g. `distillery ssd … --eval-tasks FILE`) and runs the retention suite unless told --no-retention; re-run it, or evaluate its model with `distillery eval`',
    );
  }
  const cfg = record.config as { model?: unknown } | undefined;
  const baseRef = typeof cfg?.model === 'string' ? cfg.model : null;
  const reg = record.stages?.register?.status === 'done' ? (record.stages.register.result as { ref?: unknown } | undefined) : undefined;
  const distRef = typeof reg?.ref === 'string' ? reg.ref : null;
  const side = (which: 'base' | 'distilled', ref: string | null): ReportModel => ({
    label: `${id} ${which}${ref ? ` (${ref})` : ''}`,
    source: 'run',
    ref,
    run_id: id,
    digest: pairs[0]![which].model_digest,
    evaluations: pairs.map((p) => toEntry(p[which], `${p.where} (${which})`)),
  });
  return { base: side('base', baseRef), distilled: side('distilled', distRef) };
}

const sameSettings = (a: EvaluationEntry, b: EvaluationEntry): boolean =>
  a.suite === b.suite && canonicalJson(a.decoding) === canonicalJson(b.decoding) && a.prompt_format === b.prompt_format && (a.suite === 'code' || a.seed === b.seed);

function sharedTasks(a: EvaluationEntry, b: EvaluationEntry): number {
  const ids = new Set(a.per_task.map((t) => t.id));
  return b.per_task.filter((t) => ids.has(t.id)).length;
}

function compareEntries(a: ReportModel, ea: EvaluationEntry, b: ReportModel, eb: EvaluationEntry, opts: ReportOptions): ReportComparison {
  const ks = Object.keys(ea.pass_at_k).filter((k) => k in eb.pass_at_k).map(Number).filter((k) => Number.isInteger(k) && k >= 1).sort((x, y) => x - y);
  if (ks.length === 0) ks.push(1);
  const bopts = { ...(opts.seed !== undefined ? { seed: opts.seed } : {}), ...(opts.resamples !== undefined ? { resamples: opts.resamples } : {}) };
  const maxN = Math.min(...ea.per_task.map((t) => t.n), ...eb.per_task.map((t) => t.n));
  const byK = ks.filter((k) => k <= maxN).map((k) => comparePaired(ea.per_task, eb.per_task, { ...bopts, k, labels: [a.label, b.label] }));
  const bById = new Map(eb.per_task.map((t) => [t.id, t]));
  const perTask: ReportComparison['per_task'] = [];
  for (const t of ea.per_task) {
    const u = bById.get(t.id);
    if (!u) continue;
    const row: ReportComparison['per_task'][number] = { id: t.id, a: t.correct / t.n, b: u.correct / u.n };
    if (t.difficulty !== undefined) row.difficulty = t.difficulty;
    if (t.kind !== undefined) row.kind = t.kind;
    perTask.push(row);
  }
  const by: 'difficulty' | 'kind' | null = perTask.length > 0 && perTask.every((t) => t.kind !== undefined) && ea.suite !== 'code'
    ? 'kind'
    : perTask.length > 0 && perTask.every((t) => t.difficulty !== undefined) ? 'difficulty' : null;
  let groups: ReportComparison['groups'] = null;
  if (by) {
    const m = new Map<string, { a: number; b: number; tasks: number }>();
    for (const t of perTask) {
      const g = String(by === 'kind' ? t.kind : t.difficulty);
      const cur = m.get(g) ?? { a: 0, b: 0, tasks: 0 };
      m.set(g, { a: cur.a + t.a, b: cur.b + t.b, tasks: cur.tasks + 1 });
    }
    groups = {
      by,
      rows: [...m].sort(([x], [y]) => x.localeCompare(y, 'en', { numeric: true })).map(([group, v]) => ({ group, tasks: v.tasks, a: v.a / v.tasks, b: v.b / v.tasks, diff: (v.b - v.a) / v.tasks })),
    };
  }
  return {
    suite: ea.suite,
    a: a.label,
    b: b.label,
    decoding: ea.decoding,
    prompt_format: ea.prompt_format,
    seed: ea.seed,
    n: Math.min(ea.n, eb.n),
    by_k: byK,
    per_task: perTask,
    groups,
    verdict: byK[0]?.verdict ?? 'not compared',
  };
}

/** Compares the two models on every suite and setting they were both evaluated with. */
function comparePair(a: ReportModel, b: ReportModel, opts: ReportOptions, notes: string[]): ReportComparison[] {
  const out: ReportComparison[] = [];
  for (const suite of ['code', 'retention', 'qa'] as const) {
    const as = a.evaluations.filter((e) => e.suite === suite);
    const bs = b.evaluations.filter((e) => e.suite === suite);
    if (as.length === 0 || bs.length === 0) {
      if (as.length + bs.length > 0) notes.push(`${suite}: only ${as.length ? a.label : b.label} has ${suite === 'code' ? 'a code evaluation' : `a ${suite} evaluation`}, so ${a.label} and ${b.label} are not compared on it`);
      continue;
    }
    // One comparison per distinct setting both were evaluated with (e.g. each temperature of a grid): for each,
    // the pair of evaluations sharing the most tasks (the newest on a tie, as the cache lists newest first).
    const best = new Map<string, { ea: EvaluationEntry; eb: EvaluationEntry; shared: number }>();
    for (const ea of as) {
      for (const eb of bs) {
        if (!sameSettings(ea, eb)) continue;
        const shared = sharedTasks(ea, eb);
        const key = canonicalJson([ea.decoding, ea.prompt_format, suite === 'code' ? null : ea.seed]);
        const cur = best.get(key);
        if (shared > 0 && (!cur || shared > cur.shared)) best.set(key, { ea, eb, shared });
      }
    }
    if (best.size === 0) {
      notes.push(`${suite}: ${a.label} and ${b.label} have no evaluations with the same decoding, prompt format and tasks, so they are not compared (evaluate both with identical settings)`);
      continue;
    }
    for (const { ea, eb } of best.values()) out.push(compareEntries(a, ea, b, eb, opts));
  }
  return out;
}

/** Resolves each argument (run id, summary file, vault ref or model folder) and builds the report. */
export async function buildReport(items: readonly string[], opts: ReportOptions = {}): Promise<Report> {
  if (items.length === 0) throw new UserError('nothing to report on', 'give one or more run ids, vault models (NAME[:VERSION]) or evaluation summary files');
  const home = opts.home ?? distilleryHome();
  const cacheDir = evalCacheDir(home);
  const models: ReportModel[] = [];
  const pairs: [ReportModel, ReportModel][] = [];
  const direct: ReportModel[] = [];
  const missing: string[] = [];
  for (const item of items) {
    if (existsSync(join(runsRoot(home), item, 'run.json'))) {
      const r = loadRun(item, home);
      models.push(r.base, r.distilled);
      pairs.push([r.base, r.distilled]);
      continue;
    }
    if (item.endsWith('.json') && existsSync(item) && statSync(item).isFile()) {
      const s = checkSummary(readJson(item), item);
      const m: ReportModel = { label: basename(item, '.json'), source: 'file', ref: null, run_id: null, digest: s.model_digest, evaluations: [toEntry(s, item)] };
      models.push(m);
      direct.push(m);
      continue;
    }
    let handle;
    try {
      handle = await takeModel(item, home);
    } catch (e) {
      throw new UserError(
        `${item} is not a run, an evaluation summary file or a model: ${(e as Error).message}`,
        `runs are folders under ${runsRoot(home)}; models are NAME[:VERSION] from the vault or a model folder`,
      );
    }
    const evaluations = cachedEvaluations(handle.digest, cacheDir);
    if (evaluations.length === 0) {
      missing.push(`${item} (digest ${handle.digest.slice(0, 12)})`);
      continue;
    }
    const m: ReportModel = { label: handle.ref, source: handle.name ? 'vault' : 'folder', ref: handle.ref, run_id: null, digest: handle.digest, evaluations };
    models.push(m);
    direct.push(m);
  }
  if (missing.length > 0) {
    throw new UserError(
      `no cached evaluation for ${missing.join(', ')}`,
      `evaluate first, e.g. \`distillery eval --model ${items.find((i) => missing[0]!.startsWith(i)) ?? 'MODEL'} --tasks TASKS.jsonl\` ` +
        `(or \`--suite retention\`); results are kept in ${cacheDir} and found by model digest`,
    );
  }
  for (const m of direct.slice(1)) pairs.push([direct[0]!, m]);
  const notes: string[] = [];
  const comparisons = pairs.flatMap(([a, b]) => comparePair(a, b, opts, notes));
  if (models.length === 1 && pairs.length === 0) notes.push('one model only: nothing to compare (give a second model or a run)');
  return { harness_version: HARNESS_VERSION, generated_at: (opts.now ?? new Date()).toISOString(), models, comparisons, notes };
}

/** pass@k of a stored per-task list (for charts of entries without a stored value). */
export function entryPassAtK(e: EvaluationEntry, k: number): Estimate {
  return e.pass_at_k[String(k)] ?? passAtKEstimate(e.per_task, k);
}
