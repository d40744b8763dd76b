import { UserError } from '../core/errors.js';
import { checkDecoding, type Decoding } from '../engine/decoding.js';
import { checkPassAtK } from '../eval/run.js';
import { checkKeys, deepMerge, DEFAULT_LORA, EVAL_DEFAULT_DECODING, type LoraConfig } from './ssd-config.js';
import { BUILTIN_TEMPLATES, selectTemplates, type OnPolicyRecipe, type TemplatePair } from './onpolicy-templates.js';

export type { OnPolicyRecipe } from './onpolicy-templates.js';
export const ONPOLICY_RECIPES: readonly OnPolicyRecipe[] = ['sdft', 'opsd', 'distill'];

/** `auto`: use the tokenizer's chat template when the model folder has one, raw text otherwise. */
export type ChatSetting = 'auto' | boolean;

export interface ChatSide {
  chat_template: ChatSetting;
  /** Passed to the chat template (Qwen3-style thinking switch); null = the template's own default. */
  enable_thinking: boolean | null;
}

export type Divergence = 'forward_kl' | 'reverse_kl' | 'jsd';

export interface LossConfig {
  /**
   * forward_kl = KL(teacher‖student), reverse_kl = KL(student‖teacher), jsd = generalized JSD with mixture
   * (1-β)·student + β·teacher. null = chosen by β as GKD does: β 0 → forward KL, β 1 → reverse KL, else JSD(β).
   */
  divergence: Divergence | null;
  beta: number;
  /** Divides both sides' logits inside the loss; separate from the sampling temperature. */
  temperature: number;
  estimator: 'full' | 'topk' | 'sampled_token';
  topk: number;
  topk_support: 'teacher' | 'student';
  topk_tail: boolean;
  /** Per-entry clip τ of the divergence summands (OPSD: 0.05); null = none. */
  clip: number | null;
  /** Completion tokens at the start that carry no loss (SDFT: 3). */
  skip_tokens: number;
  reduction: 'token_mean' | 'sequence_mean';
}

export interface TeacherConfig {
  /** frozen = the starting weights; ema = exponential moving average of the student; live = the student itself. */
  kind: 'frozen' | 'ema' | 'live';
  ema_rate: number;
  ema_every: number;
}

export interface OnPolicySampling {
  /** Rollouts per prompt. */
  n: number;
  temperature: number;
  top_k: number;
  top_p: number;
  min_p: number;
  max_tokens: number;
  stop: string[];
  /** Prompts generated together (a memory knob, not a training one). */
  batch_size: number;
}

export interface OnPolicyTrain {
  /** null = full fine-tuning. */
  lora: LoraConfig | null;
  lr: number;
  min_lr: number;
  /** Fraction of optimizer steps spent in linear warmup (then the schedule's decay towards min_lr). */
  warmup_ratio: number;
  /** Decay after warmup: cosine (SDFT's code) or linear (OPSD's reproduction, TRL's default). */
  lr_schedule: 'cosine' | 'linear';
  epochs: number;
  /** Overrides epochs when set. */
  max_steps: number | null;
  /** Prompts per micro-batch (each with sampling.n rollouts). */
  batch_size: number;
  /** Micro-batches per optimizer step: prompts per step = batch_size × grad_accum. */
  grad_accum: number;
  max_grad_norm: number;
  weight_decay: number;
  betas: [number, number];
  seed: number;
  checkpoint_every: number;
  /** Steps between boundary dumps (the first and the last step are always recorded). */
  record_every: number;
}

export interface OnPolicyEval {
  tasks: string;
  n: number;
  k: number[];
  /** chat_template may be `auto` (resolved against the student model); by default it follows student_chat. */
  decoding: Omit<Decoding, 'chat_template'> & { chat_template: ChatSetting };
}

export interface OnPolicyConfig {
  /** Which recipe this configuration is for; a recipe file for another recipe is refused. */
  recipe: OnPolicyRecipe;
  model: string;
  /** distill only: the teacher model (NAME[:VERSION] or folder). sdft/opsd teach with the model itself. */
  teacher_model: string | null;
  /** Records: sdft {prompt, demonstration}; opsd {problem, solution}; distill {prompt, completion?}. */
  data: string;
  name: string | null;
  /** A built-in template pair by id; student / teacher replace a side with a custom text ({field} placeholders). */
  templates: { id: string; student: string | null; teacher: string | null };
  student_chat: ChatSide;
  teacher_chat: ChatSide;
  /** Text appended after the teacher's rendered prompt (e.g. "<think>\n"). */
  teacher_prefill: string;
  max_prompt_len: number;
  max_teacher_prompt_len: number;
  sampling: OnPolicySampling;
  loss: LossConfig;
  teacher: TeacherConfig;
  /** Fraction of steps that are on-policy (GKD λ); other steps use the record's completion, else a teacher sample. */
  lmbda: number;
  train: OnPolicyTrain;
  eval: OnPolicyEval | null;
  /** Run the retention suite (general probes, src/eval/retention) on base and result: what the run cost elsewhere. */
  retention: boolean;
}

type Json = Record<string, unknown>;
type Defaults = Omit<OnPolicyConfig, 'model' | 'data'>;

const QWEN_PROJECTIONS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

const COMMON_LOSS: LossConfig = {
  divergence: 'forward_kl',
  beta: 0.5,
  temperature: 1.0,
  estimator: 'full',
  topk: 20,
  topk_support: 'teacher',
  topk_tail: false,
  clip: null,
  skip_tokens: 0,
  reduction: 'token_mean',
};

/**
 * SDFT (docs/recipes/sdft.md): the official code's settings. Forward KL over the full vocabulary (what the
 * reported numbers used), EMA teacher with rate 0.01 every step, first 3 completion tokens skipped, one rollout
 * per prompt at T 1.0 / top-p 1.0, per-sequence mean, full fine-tuning, lr 5e-5 (README commands; main.py's
 * default is 2e-5) cosine with 10% warmup, grad-norm 1, 32 prompts per step, 2 epochs, lengths 2048 / 8192 /
 * 2048 (prompt / teacher prompt / completion).
 */
export const SDFT_DEFAULTS: Defaults = {
  recipe: 'sdft',
  teacher_model: null,
  name: null,
  templates: { id: BUILTIN_TEMPLATES.sdft[0]!.id, student: null, teacher: null },
  student_chat: { chat_template: 'auto', enable_thinking: null },
  teacher_chat: { chat_template: 'auto', enable_thinking: null },
  teacher_prefill: '',
  max_prompt_len: 2048,
  max_teacher_prompt_len: 8192,
  sampling: { n: 1, temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0, max_tokens: 2048, stop: [], batch_size: 32 },
  loss: { ...COMMON_LOSS, skip_tokens: 3, reduction: 'sequence_mean' },
  teacher: { kind: 'ema', ema_rate: 0.01, ema_every: 1 },
  lmbda: 1.0,
  train: {
    lora: null,
    lr: 5e-5,
    min_lr: 0,
    warmup_ratio: 0.1,
    lr_schedule: 'cosine',
    epochs: 2,
    max_steps: null,
    batch_size: 4,
    grad_accum: 8,
    max_grad_norm: 1.0,
    weight_decay: 0,
    betas: [0.9, 0.999],
    seed: 0,
    checkpoint_every: 50,
    record_every: 25,
  },
  eval: null,
  retention: true,
};

/**
 * OPSD (docs/recipes/opsd.md): the v3 / current-code recipe. Forward KL with per-entry clip 0.05, teacher =
 * frozen initial weights (LoRA disabled), LoRA r64/α128 on all projections, token mean, lr 5e-6, 32 prompts per
 * step, 100 steps, max completion 1024 at T 1.1 / top-p 0.95 / top-k 20, student thinking off and teacher
 * thinking on, grad-norm 0.1, a checkpoint every 25 steps.
 */
export const OPSD_DEFAULTS: Defaults = {
  recipe: 'opsd',
  teacher_model: null,
  name: null,
  templates: { id: BUILTIN_TEMPLATES.opsd[0]!.id, student: null, teacher: null },
  student_chat: { chat_template: 'auto', enable_thinking: false },
  teacher_chat: { chat_template: 'auto', enable_thinking: true },
  teacher_prefill: '',
  max_prompt_len: 2048,
  max_teacher_prompt_len: 8192,
  sampling: { n: 1, temperature: 1.1, top_k: 20, top_p: 0.95, min_p: 0, max_tokens: 1024, stop: [], batch_size: 32 },
  // The 2026-03-10 reference code divides both sides' logits by the sampling temperature inside the loss.
  loss: { ...COMMON_LOSS, clip: 0.05, temperature: 1.1 },
  teacher: { kind: 'frozen', ema_rate: 0.001, ema_every: 1 },
  lmbda: 1.0,
  train: {
    lora: { r: 64, alpha: 128, dropout: 0, target_modules: QWEN_PROJECTIONS },
    lr: 5e-6,
    min_lr: 0,
    warmup_ratio: 0,
    lr_schedule: 'linear',
    epochs: 1,
    max_steps: 100,
    batch_size: 4,
    grad_accum: 8,
    max_grad_norm: 0.1,
    weight_decay: 0,
    betas: [0.9, 0.999],
    seed: 0,
    checkpoint_every: 25,
    record_every: 25,
  },
  eval: null,
  retention: true,
};

/**
 * On-policy distillation from another model (docs/recipes/distill.md): TRL GKDTrainer's defaults. β 0.5
 * (generalized JSD), λ 0.5, temperature 0.9 for sampling and in the loss, 128 new tokens; the rest from TRL's
 * SFTConfig / TrainingArguments (lr 2e-5, batch 8, 3 epochs, grad-norm 1, no warmup; the schedule is the
 * engine's cosine rather than TRL's linear decay).
 */
export const DISTILL_DEFAULTS: Defaults = {
  recipe: 'distill',
  teacher_model: null,
  name: null,
  templates: { id: BUILTIN_TEMPLATES.distill[0]!.id, student: null, teacher: null },
  student_chat: { chat_template: 'auto', enable_thinking: null },
  teacher_chat: { chat_template: 'auto', enable_thinking: null },
  teacher_prefill: '',
  max_prompt_len: 2048,
  max_teacher_prompt_len: 2048,
  sampling: { n: 1, temperature: 0.9, top_k: 0, top_p: 1.0, min_p: 0, max_tokens: 128, stop: [], batch_size: 32 },
  loss: { ...COMMON_LOSS, divergence: null, beta: 0.5, temperature: 0.9 },
  teacher: { kind: 'frozen', ema_rate: 0.01, ema_every: 1 },
  lmbda: 0.5,
  train: {
    lora: null,
    lr: 2e-5,
    min_lr: 0,
    warmup_ratio: 0,
    lr_schedule: 'linear',
    epochs: 3,
    max_steps: null,
    batch_size: 8,
    grad_accum: 1,
    max_grad_norm: 1.0,
    weight_decay: 0,
    betas: [0.9, 0.999],
    seed: 0,
    checkpoint_every: 50,
    record_every: 25,
  },
  eval: null,
  retention: true,
};

export const ONPOLICY_DEFAULTS: Record<OnPolicyRecipe, Defaults> = {
  sdft: SDFT_DEFAULTS,
  opsd: OPSD_DEFAULTS,
  distill: DISTILL_DEFAULTS,
};

const EVAL_TEMPLATE: OnPolicyEval = { tasks: '', n: 10, k: [1], decoding: EVAL_DEFAULT_DECODING };

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function bad(msg: string, hint?: string): never {
  throw new UserError(msg, hint);
}

function positive(name: string, v: unknown, integer = false): void {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) {
    bad(`${name} must be a positive ${integer ? 'whole ' : ''}number (got ${JSON.stringify(v)})`);
  }
}

function nonNegativeInt(name: string, v: unknown): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) bad(`${name} must be a whole number ≥ 0 (got ${JSON.stringify(v)})`);
}

function inRange(name: string, v: unknown, lo: number, hi: number, loOpen: boolean, hiOpen: boolean): void {
  const ok = typeof v === 'number' && (loOpen ? v > lo : v >= lo) && (hiOpen ? v < hi : v <= hi);
  if (!ok) bad(`${name} must be in ${loOpen ? '(' : '['}${lo}, ${hi}${hiOpen ? ')' : ']'} (got ${JSON.stringify(v)})`);
}

function oneOf<T>(name: string, v: unknown, allowed: readonly T[]): void {
  if (!allowed.includes(v as T)) bad(`${name} must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')} (got ${JSON.stringify(v)})`);
}

/**
 * Every setting whose default is a number, string, boolean or list must keep that type (a recipe file's
 * "lr": "1e-5" is refused, not compared as text). Nullable settings and chat_template are checked on their own.
 */
const NULLABLE = new Set([
  'name', 'teacher_model', 'templates.student', 'templates.teacher', 'student_chat.enable_thinking', 'teacher_chat.enable_thinking',
  'loss.divergence', 'loss.clip', 'train.lora', 'train.max_steps', 'eval',
]);

function checkTypes(value: unknown, template: unknown, path: string): void {
  if (!isObject(value) || !isObject(template)) return;
  for (const [k, v] of Object.entries(value)) {
    const d = template[k];
    const where = path ? `${path}.${k}` : k;
    if (v === undefined || d === null || d === undefined || k === 'chat_template' || (v === null && NULLABLE.has(where))) continue;
    if (isObject(d)) {
      if (!isObject(v)) bad(`${where} must be an object of settings (got ${JSON.stringify(v)})`, k === 'teacher' ? 'the teacher model is "teacher_model" (--teacher); "teacher" holds kind, ema_rate, ema_every' : undefined);
      checkTypes(v, d, where);
    } else if (Array.isArray(d)) {
      if (!Array.isArray(v)) bad(`${where} must be a list (got ${JSON.stringify(v)})`);
    } else if (typeof v !== typeof d) {
      bad(`${where} must be a ${typeof d} (got ${JSON.stringify(v)})`);
    }
  }
}

function checkChat(name: string, c: ChatSide): void {
  oneOf(`${name}.chat_template`, c.chat_template, ['auto', true, false] as const);
  oneOf(`${name}.enable_thinking`, c.enable_thinking, [true, false, null] as const);
}

/** The divergence the job runs: an explicit one, or by β as GKD does (0 → forward KL, 1 → reverse KL, else JSD). */
export function resolveDivergence(loss: Pick<LossConfig, 'divergence' | 'beta'>): { divergence: Divergence; beta: number } {
  if (loss.divergence !== null) return { divergence: loss.divergence, beta: loss.beta };
  if (loss.beta === 0) return { divergence: 'forward_kl', beta: 0 };
  if (loss.beta === 1) return { divergence: 'reverse_kl', beta: 1 };
  return { divergence: 'jsd', beta: loss.beta };
}

/** Optimizer steps and warmup steps for `records` prompts. */
export function onPolicySteps(train: OnPolicyTrain, records: number): { total: number; warmup: number } {
  const perEpoch = Math.ceil(records / (train.batch_size * train.grad_accum));
  const total = train.max_steps ?? Math.max(1, Math.round(perEpoch * train.epochs));
  return { total, warmup: Math.round(total * train.warmup_ratio) };
}

/**
 * Builds the full config for `recipe`: its defaults, then the recipe file, then command-line flags; validates
 * it (messages name the setting) and checks the templates.
 */
export function resolveOnPolicyConfig(recipe: OnPolicyRecipe, fromFile: Json, fromFlags: Json): OnPolicyConfig {
  oneOf('recipe', recipe, ONPOLICY_RECIPES);
  const template = { ...ONPOLICY_DEFAULTS[recipe], model: '', data: '' } as OnPolicyConfig;
  checkKeys(fromFile, template, '');
  checkKeys(fromFlags, template, '');
  for (const src of [fromFile, fromFlags]) {
    if (src.recipe !== undefined && src.recipe !== recipe) {
      bad(`this configuration is for "${String(src.recipe)}", not "${recipe}"`, `run \`distillery ${String(src.recipe)}\` with it, or remove the "recipe" key`);
    }
  }
  let cfg = deepMerge(deepMerge(template, fromFile), fromFlags);
  checkTypes(cfg, template, '');
  cfg = { ...cfg, recipe };
  if (cfg.train.lora) cfg = { ...cfg, train: { ...cfg.train, lora: deepMerge(DEFAULT_LORA, cfg.train.lora) } };
  if (cfg.eval) {
    cfg = { ...cfg, eval: deepMerge(EVAL_TEMPLATE, cfg.eval) as OnPolicyEval };
    // Evaluation sees prompts the way the student did during training, unless told otherwise.
    const given = (src: Json): unknown => ((src.eval as Json | undefined)?.decoding as Json | undefined)?.chat_template;
    if (given(fromFile) === undefined && given(fromFlags) === undefined) {
      cfg.eval!.decoding = { ...cfg.eval!.decoding, chat_template: cfg.student_chat.chat_template };
    }
  }
  validate(cfg);
  return cfg;
}

function validate(cfg: OnPolicyConfig): void {
  const { recipe } = cfg;
  if (!cfg.model) bad('no model given', 'pass --model NAME[:VERSION] or a model folder path');
  const dataFlag = recipe === 'distill' ? '--prompts' : '--data';
  const shape = { sdft: '{"prompt", "demonstration"}', opsd: '{"problem", "solution"}', distill: '{"prompt"} (optionally "completion")' }[recipe];
  if (!cfg.data) bad(`no ${recipe === 'distill' ? 'prompts' : 'data'} given`, `pass ${dataFlag} FILE.jsonl (one ${shape} per line)`);
  if (recipe === 'distill') {
    if (!cfg.teacher_model) bad('no teacher model given', 'pass --teacher NAME[:VERSION] or a model folder path');
    if (cfg.teacher.kind !== 'frozen') bad(`teacher.kind must be "frozen" with a separate teacher model (got "${cfg.teacher.kind}")`);
  } else if (cfg.teacher_model !== null) {
    bad(`teacher_model is for \`distillery distill\`; ${recipe} is self-distillation (the model teaches itself)`);
  }
  if (cfg.name !== null && (typeof cfg.name !== 'string' || cfg.name === '')) bad('name must be a non-empty string or null');
  for (const side of ['student', 'teacher'] as const) {
    const t = cfg.templates[side];
    if (t !== null && typeof t !== 'string') bad(`templates.${side} must be a string or null`);
    if (t === '') bad(`templates.${side} is empty`);
  }
  selectTemplates(recipe, cfg.templates);
  checkChat('student_chat', cfg.student_chat);
  checkChat('teacher_chat', cfg.teacher_chat);
  if (typeof cfg.teacher_prefill !== 'string') bad('teacher_prefill must be a string');
  positive('max_prompt_len', cfg.max_prompt_len, true);
  positive('max_teacher_prompt_len', cfg.max_teacher_prompt_len, true);

  const s = cfg.sampling;
  checkDecoding({ ...s, seed: cfg.train.seed, chat_template: false }, 'sampling');
  if (!Array.isArray(s.stop) || !s.stop.every((x) => typeof x === 'string' && x !== '')) bad('sampling.stop must be a list of non-empty strings');
  positive('sampling.n', s.n, true);
  positive('sampling.batch_size', s.batch_size, true);

  const l = cfg.loss;
  oneOf('loss.divergence', l.divergence, ['forward_kl', 'reverse_kl', 'jsd', null] as const);
  inRange('loss.beta', l.beta, 0, 1, false, false);
  if (l.divergence === 'jsd' && (l.beta === 0 || l.beta === 1)) {
    bad(`loss.beta must be strictly between 0 and 1 for jsd (got ${l.beta})`, 'β 0 is forward KL and β 1 reverse KL: choose those divergences instead');
  }
  positive('loss.temperature', l.temperature);
  oneOf('loss.estimator', l.estimator, ['full', 'topk', 'sampled_token'] as const);
  positive('loss.topk', l.topk, true);
  oneOf('loss.topk_support', l.topk_support, ['teacher', 'student'] as const);
  oneOf('loss.topk_tail', l.topk_tail, [true, false] as const);
  if (l.clip !== null) positive('loss.clip', l.clip);
  nonNegativeInt('loss.skip_tokens', l.skip_tokens);
  oneOf('loss.reduction', l.reduction, ['token_mean', 'sequence_mean'] as const);
  if (l.estimator === 'sampled_token') {
    if (resolveDivergence(l).divergence !== 'reverse_kl') bad('loss.estimator "sampled_token" works with reverse KL only', 'set loss.divergence to "reverse_kl" (or loss.beta to 1)');
    if (l.clip !== null) bad('loss.clip cannot be used with the sampled_token estimator');
  }

  oneOf('teacher.kind', cfg.teacher.kind, ['frozen', 'ema', 'live'] as const);
  inRange('teacher.ema_rate', cfg.teacher.ema_rate, 0, 1, true, false);
  positive('teacher.ema_every', cfg.teacher.ema_every, true);
  inRange('lmbda', cfg.lmbda, 0, 1, false, false);

  const t = cfg.train;
  positive('train.lr', t.lr);
  if (typeof t.min_lr !== 'number' || t.min_lr < 0 || t.min_lr > t.lr) bad(`train.min_lr must be in [0, train.lr] (got ${t.min_lr})`);
  inRange('train.warmup_ratio', t.warmup_ratio, 0, 1, false, true);
  oneOf('train.lr_schedule', t.lr_schedule, ['cosine', 'linear'] as const);
  positive('train.epochs', t.epochs);
  if (t.max_steps !== null) positive('train.max_steps', t.max_steps, true);
  positive('train.batch_size', t.batch_size, true);
  positive('train.grad_accum', t.grad_accum, true);
  positive('train.max_grad_norm', t.max_grad_norm);
  if (typeof t.weight_decay !== 'number' || !(t.weight_decay >= 0)) bad(`train.weight_decay must be ≥ 0 (got ${t.weight_decay})`);
  if (!Array.isArray(t.betas) || t.betas.length !== 2 || !t.betas.every((b) => typeof b === 'number' && b >= 0 && b < 1)) {
    bad(`train.betas must be two numbers in [0, 1) (got ${JSON.stringify(t.betas)})`);
  }
  nonNegativeInt('train.seed', t.seed);
  positive('train.checkpoint_every', t.checkpoint_every, true);
  positive('train.record_every', t.record_every, true);
  if (t.lora) {
    positive('train.lora.r', t.lora.r, true);
    positive('train.lora.alpha', t.lora.alpha);
    inRange('train.lora.dropout', t.lora.dropout, 0, 1, false, true);
    const tm = t.lora.target_modules;
    if (tm !== 'all-linear' && !(Array.isArray(tm) && tm.length > 0 && tm.every((m) => typeof m === 'string' && m !== ''))) {
      bad(`train.lora.target_modules must be "all-linear" or a list of module names (got ${JSON.stringify(tm)})`);
    }
  }

  if (cfg.eval) {
    const e = cfg.eval;
    if (!e.tasks) bad('eval.tasks is empty', 'pass --eval-tasks FILE.jsonl');
    oneOf('eval.decoding.chat_template', e.decoding.chat_template, ['auto', true, false] as const);
    checkDecoding({ ...e.decoding, chat_template: false }, 'eval decoding');
    positive('eval.n', e.n, true);
    checkPassAtK(e.n, e.k);
  }
}

/** Settings of a run fixed only once the models are known. */
export interface JobContext {
  outputDir: string;
  /** Folder of the student's starting weights. */
  model: string;
  /** Folder of the separate teacher (distill), else null. */
  teacherModel: string | null;
  /** The rendered records ({student, teacher, completion?} per line). */
  data: string;
  /** chat_template `auto` resolved per side. */
  studentChat: boolean;
  teacherChat: boolean;
  /** Prompts in the data file (for the step count). */
  records: number;
}

/** The `onpolicy` engine job (docs/onpolicy-job.md) this configuration asks for. */
export function onPolicyJobSpec(cfg: OnPolicyConfig, ctx: JobContext): Record<string, unknown> & { type: 'onpolicy'; output_dir: string } {
  const { total, warmup } = onPolicySteps(cfg.train, ctx.records);
  const { divergence, beta } = resolveDivergence(cfg.loss);
  const t = cfg.train;
  // enable_thinking is a chat-template argument: without a template there is nothing to pass it to.
  const side = (enabled: boolean, c: ChatSide) => ({ enabled, enable_thinking: enabled ? c.enable_thinking : null });
  return {
    type: 'onpolicy',
    output_dir: ctx.outputDir,
    model: ctx.model,
    teacher_model: ctx.teacherModel,
    data: ctx.data,
    student_chat: side(ctx.studentChat, cfg.student_chat),
    teacher_chat: side(ctx.teacherChat, cfg.teacher_chat),
    teacher_prefill: cfg.teacher_prefill,
    max_prompt_len: cfg.max_prompt_len,
    max_teacher_prompt_len: cfg.max_teacher_prompt_len,
    sampling: { ...cfg.sampling },
    loss: { ...cfg.loss, divergence, beta },
    teacher: { ...cfg.teacher },
    lmbda: cfg.lmbda,
    lora: t.lora,
    lr: t.lr,
    min_lr: t.min_lr,
    warmup_steps: warmup,
    lr_schedule: t.lr_schedule,
    max_steps: total,
    epochs: null,
    batch_size: t.batch_size,
    grad_accum: t.grad_accum,
    max_grad_norm: t.max_grad_norm,
    weight_decay: t.weight_decay,
    betas: t.betas,
    seed: t.seed,
    checkpoint_every: t.checkpoint_every,
    record_every: t.record_every,
  };
}

/** The template pair a configuration selects (already validated by resolveOnPolicyConfig). */
export function configTemplates(cfg: OnPolicyConfig): TemplatePair {
  return selectTemplates(cfg.recipe, cfg.templates);
}
