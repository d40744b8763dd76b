import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { writeFileAtomicSync } from '../core/atomic.js';
import { UserError } from '../core/errors.js';
import { parseJsonlObjects } from '../core/jsonl.js';
import { startProgress } from '../core/progress.js';
import type { Decoding } from '../engine/decoding.js';
import { runJob } from '../engine/job.js';
import type { EngineWorker } from '../engine/worker.js';
import { evaluateBeforeAfter, evalCacheDir, type EvalSummary } from '../eval/run.js';
import { loadTasks, type CodeTask } from '../eval/tasks.js';
import { Run } from '../runs/run.js';
import { configTemplates, onPolicyJobSpec, resolveDivergence, type ChatSetting, type OnPolicyConfig, type OnPolicyRecipe } from './onpolicy-config.js';
import { renderPair, type TemplatePair } from './onpolicy-templates.js';
import { takeModel, registerDistilled, outputName, folderDigest, type ModelHandle } from './models.js';
import { attachRunReport } from '../eval/report/run-report.js';
import { retentionStage, type RetentionBeforeAfter } from '../eval/retention/before-after.js';

/** One record of a recipe's data file, as the templates see it (field name → text). */
export interface OnPolicyRecord {
  fields: Record<string, string>;
  /** distill only: a completion for off-policy steps (λ < 1). */
  completion?: string;
}

const RECORD_FIELDS: Record<OnPolicyRecipe, { required: string[]; optional: string[] }> = {
  sdft: { required: ['prompt', 'demonstration'], optional: [] },
  opsd: { required: ['problem', 'solution'], optional: [] },
  distill: { required: ['prompt'], optional: ['completion'] },
};

/** Parses a recipe's JSONL records; errors name `file:line` and the field. Other fields are ignored. */
export function parseOnPolicyRecords(recipe: OnPolicyRecipe, text: string, source: string): OnPolicyRecord[] {
  const { required, optional } = RECORD_FIELDS[recipe];
  const out = parseJsonlObjects(text, source).map(({ rec, where }) => {
    const fields: Record<string, string> = {};
    for (const f of required) {
      const v = rec[f];
      if (typeof v !== 'string' || v.length === 0) {
        const got = v === undefined ? 'it is missing' : typeof v === 'string' ? 'it is empty' : `got ${Array.isArray(v) ? 'an array' : v === null ? 'null' : typeof v}`;
        throw new UserError(
          `${where}: field "${f}" must be a non-empty string (${got})`,
          `each line of a ${recipe} data file is {${required.map((r) => `"${r}": "..."`).join(', ')}}`,
        );
      }
      fields[f] = v;
    }
    const record: OnPolicyRecord = { fields };
    for (const f of optional) {
      const v = rec[f];
      if (v === undefined || v === null) continue;
      if (typeof v !== 'string' || v.length === 0) throw new UserError(`${where}: field "${f}", when given, must be a non-empty string`);
      if (f === 'completion') record.completion = v;
    }
    return record;
  });
  if (out.length === 0) throw new UserError(`${source} holds no records`);
  return out;
}

export function readOnPolicyRecords(recipe: OnPolicyRecipe, path: string): OnPolicyRecord[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new UserError(`cannot read ${recipe === 'distill' ? 'prompts' : 'data'} file ${path}: ${(e as Error).message}`);
  }
  return parseOnPolicyRecords(recipe, text, path);
}

/** The job's data lines: each record's student and teacher prompt text (and completion, when given). */
export function renderRecords(pair: TemplatePair, records: OnPolicyRecord[]): { student: string; teacher: string; completion?: string }[] {
  return records.map((r) => ({ ...renderPair(pair, r.fields), ...(r.completion !== undefined ? { completion: r.completion } : {}) }));
}

/** Whether a model folder ships a chat template (tokenizer_config.json's chat_template, or chat_template.jinja/.json). */
export function hasChatTemplate(dir: string): boolean {
  if (existsSync(join(dir, 'chat_template.jinja'))) return true;
  for (const file of ['tokenizer_config.json', 'chat_template.json']) {
    const p = join(dir, file);
    if (!existsSync(p)) continue;
    try {
      const v = (JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>).chat_template;
      if ((typeof v === 'string' && v.trim() !== '') || (Array.isArray(v) && v.length > 0)) return true;
    } catch {
      // An unreadable file: the engine reports it when it loads the tokenizer.
    }
  }
  return false;
}

function resolveChat(setting: ChatSetting, dir: string, who: string): boolean {
  if (setting === 'auto') return hasChatTemplate(dir);
  if (setting && !hasChatTemplate(dir)) {
    throw new UserError(
      `${who}: chat_template is on but the model in ${dir} has no chat template`,
      'use --chat-template auto (the default) or off for a base model',
    );
  }
  return setting;
}

export interface OnPolicyResult {
  recipe: OnPolicyRecipe;
  run_id: string;
  run_dir: string;
  resumed: boolean;
  parent: { ref: string; digest: string };
  teacher: { ref: string; digest: string } | null;
  model: string;
  templates: string;
  chat: { student: boolean; teacher: boolean };
  train: { steps: number; final_loss: number; mean_kl_first: number | null; mean_kl_last: number | null; seconds: number };
  /** The job's boundary dumps (prompt/completion token ids on each side). */
  boundaries: string;
  evaluation: { base: EvalSummary; distilled: EvalSummary } | null;
  retention: RetentionBeforeAfter | null;
  seconds: Record<string, number>;
}

export interface OnPolicyHooks {
  worker: EngineWorker;
  log: (line: string) => void;
  quiet?: boolean;
  home?: string;
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** What a run needs that can be checked before the engine starts: models, records, templates, chat switches. */
export interface OnPolicyPlan {
  base: ModelHandle;
  teacher: ModelHandle | null;
  name: string;
  pair: TemplatePair;
  records: OnPolicyRecord[];
  tasks: CodeTask[] | null;
  studentChat: boolean;
  teacherChat: boolean;
}

/** Resolves and checks everything a run reads, so bad input fails before any engine work. */
export async function planOnPolicy(cfg: OnPolicyConfig, home?: string): Promise<OnPolicyPlan> {
  const base = await takeModel(cfg.model, home);
  const teacher = cfg.teacher_model ? await takeModel(cfg.teacher_model, home) : null;
  const name = outputName(cfg.name, base);
  const pair = configTemplates(cfg);
  const records = readOnPolicyRecords(cfg.recipe, cfg.data);
  renderRecords(pair, records);
  const tasks = cfg.eval ? await loadTasks(cfg.eval.tasks) : null;
  const studentChat = resolveChat(cfg.student_chat.chat_template, base.dir, 'student');
  // The engine renders both sides with the student's tokenizer (a separate teacher must share its vocabulary),
  // so the teacher side's chat template is the student's too.
  const teacherChat = resolveChat(cfg.teacher_chat.chat_template, base.dir, 'teacher');
  return { base, teacher, name, pair, records, tasks, studentChat, teacherChat };
}

/**
 * SDFT, OPSD and on-policy distillation from another model (GKD), one pipeline: (1) prepare: render each
 * record into the student's and the teacher's prompt with versioned templates, (2) train: the engine's
 * `onpolicy` job samples from the current student and trains it towards the teacher's per-token
 * distributions, (3) evaluate base and result with one decoding (optional), (4) register the result with its
 * lineage. Each stage is resumable; re-running the same command continues.
 */
export async function runOnPolicy(cfg: OnPolicyConfig, hooks: OnPolicyHooks, planned?: OnPolicyPlan): Promise<OnPolicyResult> {
  const plan = planned ?? (await planOnPolicy(cfg, hooks.home));
  const { base, teacher, name, pair, records, tasks } = plan;
  // Keyed by resolved models (digests), so "m" and "m:1" share a run.
  const runKey = {
    ...cfg,
    model: base.digest,
    teacher_model: teacher?.digest ?? null,
    data: resolve(cfg.data),
    // The content too: an edited data file is a new run, not a resume of the old one.
    dataSha256: createHash('sha256').update(readFileSync(cfg.data)).digest('hex'),
    recordsCount: records.length,
  };
  const { run, resumed } = Run.openOrCreate(cfg.recipe, runKey, hooks.home);
  hooks.log(`${resumed ? 'resuming' : 'starting'} ${cfg.recipe} run ${run.id} (${run.dir})`);
  writeFileAtomicSync(run.path('recipe.json'), JSON.stringify(cfg, null, 2) + '\n');
  if (!existsSync(run.path('records.jsonl'))) copyFileSync(cfg.data, run.path('records.jsonl'));

  // Stage 1: render the prompts, resolve the chat-template switches, record the exact templates.
  const prepared = await run.stage('prepare', async (dir) => {
    const { studentChat, teacherChat } = plan;
    const lines = renderRecords(pair, records).map((r) => JSON.stringify(r));
    writeFileAtomicSync(join(dir, 'data.jsonl'), lines.join('\n') + '\n');
    const templates = {
      recipe: cfg.recipe,
      id: pair.id,
      student: { ...pair.student, chat_template: studentChat, enable_thinking: studentChat ? cfg.student_chat.enable_thinking : null },
      teacher: {
        ...pair.teacher,
        chat_template: teacherChat,
        enable_thinking: teacherChat ? cfg.teacher_chat.enable_thinking : null,
        prefill: cfg.teacher_prefill,
      },
    };
    writeFileAtomicSync(run.path('templates.json'), JSON.stringify(templates, null, 2) + '\n');
    hooks.log(
      `prepare: ${records.length} records with templates ${pair.id}; chat template: student ${studentChat ? 'on' : 'off'}, ` +
        `teacher ${teacherChat ? 'on' : 'off'}`,
    );
    return { records: records.length, templates: pair.id, student_chat: studentChat, teacher_chat: teacherChat };
  });

  // Stage 2: the engine's on-policy job.
  const train = await run.stage('train', async (dir) => {
    const spec = onPolicyJobSpec(cfg, {
      outputDir: dir,
      model: base.dir,
      teacherModel: teacher?.dir ?? null,
      data: run.path('prepare', 'data.jsonl'),
      studentChat: prepared.student_chat,
      teacherChat: prepared.teacher_chat,
      records: prepared.records,
    });
    const total = Number(spec.max_steps);
    const t = cfg.train;
    const { divergence, beta } = resolveDivergence(cfg.loss);
    hooks.log(
      `train: ${total} steps (${t.lora ? `LoRA r${t.lora.r}` : 'full fine-tuning'}, lr ${t.lr}, ${t.batch_size}×${t.grad_accum} prompts per step), ` +
        `${divergence}${divergence === 'jsd' ? ` β=${beta}` : ''}, teacher ${teacher ? teacher.ref : cfg.teacher.kind}` +
        `${cfg.lmbda < 1 ? `, λ=${cfg.lmbda}` : ''}`,
    );
    const bar = startProgress('train', { total, unit: 'steps', quiet: hooks.quiet });
    const done = await runJob(hooks.worker, spec, (e) => {
      if (e.type === 'progress' && typeof e.step === 'number') {
        const parts: string[] = [];
        if (typeof e.loss === 'number') parts.push(`loss ${e.loss.toFixed(4)}`);
        if (typeof e.kl === 'number') parts.push(`kl ${e.kl.toFixed(4)}`);
        if (typeof e.clip_fraction === 'number' && cfg.loss.clip !== null) parts.push(`clip ${(e.clip_fraction * 100).toFixed(1)}%`);
        bar.update(e.step, parts.join(' ') || undefined);
      }
    });
    bar.done(`final loss ${Number(done.final_loss).toFixed(4)}`);
    return {
      steps: Number(done.steps),
      final_loss: Number(done.final_loss),
      mean_kl_first: num(done.mean_kl_first),
      mean_kl_last: num(done.mean_kl_last),
      seconds: Number(done.seconds),
      final_dir: String(done.final_dir),
      adapter_dir: typeof done.adapter_dir === 'string' ? done.adapter_dir : null,
    };
  });

  // Stage 3: evaluate base and result with the identical decoding object.
  let evaluation: OnPolicyResult['evaluation'] = null;
  if (cfg.eval && tasks) {
    const ev = cfg.eval;
    const decoding: Decoding = {
      ...ev.decoding,
      chat_template: ev.decoding.chat_template === 'auto' ? hasChatTemplate(base.dir) : ev.decoding.chat_template,
    };
    evaluation = await run.stage('evaluate', async () =>
      evaluateBeforeAfter(
        { worker: hooks.worker, tasks, decoding, n: ev.n, k: ev.k, quiet: hooks.quiet, cacheDir: evalCacheDir(hooks.home) },
        base,
        { dir: train.final_dir, digest: await folderDigest(train.final_dir) },
      ),
    );
  }

  // Stage 4: the retention suite on base and result, in the student's prompt format (what the run cost elsewhere).
  const retention = await retentionStage(run, cfg.retention, {
    worker: hooks.worker, base, finalDir: train.final_dir, chatTemplate: prepared.student_chat, home: hooks.home, quiet: hooks.quiet, log: hooks.log,
  });

  // Stage 5: register as a new version with its lineage.
  const registered = await run.stage('register', async () => {
    const ref = await registerDistilled(train.final_dir, {
      name,
      parent: base,
      runId: run.id,
      recipe: {
        name: cfg.recipe,
        config: cfg,
        templates: { id: pair.id, student: pair.student.text, teacher: pair.teacher.text },
        chat: { student: prepared.student_chat, teacher: prepared.teacher_chat },
        teacher: teacher ? { ref: teacher.ref, digest: teacher.digest } : null,
      },
      evaluation,
      home: hooks.home,
    });
    hooks.log(`registered ${ref}`);
    return { ref };
  });
  // The run's evaluation, compared with paired tests, beside it (what `distillery report RUN` shows).
  if (evaluation || retention) hooks.log(`evaluation report: ${await attachRunReport(run.id, run.dir, hooks.home)}`);
  run.finish();

  const seconds = run.stageSeconds();
  return {
    recipe: cfg.recipe,
    run_id: run.id,
    run_dir: run.dir,
    resumed,
    parent: { ref: base.ref, digest: base.digest },
    teacher: teacher ? { ref: teacher.ref, digest: teacher.digest } : null,
    model: registered.ref,
    templates: pair.id,
    chat: { student: prepared.student_chat, teacher: prepared.teacher_chat },
    train: {
      steps: train.steps,
      final_loss: train.final_loss,
      mean_kl_first: train.mean_kl_first,
      mean_kl_last: train.mean_kl_last,
      seconds: train.seconds,
    },
    boundaries: run.path('train', 'boundaries.jsonl'),
    evaluation,
    retention,
    seconds,
  };
}
