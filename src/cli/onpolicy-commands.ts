import { readFileSync } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import { UserError } from '../core/errors.js';
import { EngineWorker } from '../engine/worker.js';
import { readRecipeFile } from '../recipes/ssd-config.js';
import { resolveOnPolicyConfig, ONPOLICY_DEFAULTS, type OnPolicyRecipe } from '../recipes/onpolicy-config.js';
import { BUILTIN_TEMPLATES } from '../recipes/onpolicy-templates.js';
import { planOnPolicy, runOnPolicy } from '../recipes/onpolicy.js';
import { addDecodingOptions, decodingFromFlags, int, num, intList } from './options.js';
import { printBeforeAfter, stderrLog } from './format.js';

function chatMode(value: string): 'auto' | boolean {
  if (value === 'auto') return 'auto';
  if (value === 'on' || value === 'true') return true;
  if (value === 'off' || value === 'false') return false;
  throw new InvalidArgumentError(`"${value}" is not auto, on or off.`);
}

// Commander turns a parser's null into '' (or true), so "no value" travels as the string NONE until onPolicyFlags.
const NONE = 'none';

function orNull(v: unknown): unknown {
  return v === NONE ? null : v;
}

function thinkingMode(value: string): boolean | string {
  if (value === 'default') return NONE;
  if (value === 'on' || value === 'true') return true;
  if (value === 'off' || value === 'false') return false;
  throw new InvalidArgumentError(`"${value}" is not on, off or default.`);
}

function choice<T extends string>(allowed: readonly T[]): (value: string) => T {
  return (value) => {
    if (!allowed.includes(value as T)) throw new InvalidArgumentError(`"${value}" is not one of ${allowed.join(', ')}.`);
    return value as T;
  };
}

function divergence(value: string): string {
  return value === 'auto' ? NONE : choice(['forward_kl', 'reverse_kl', 'jsd'] as const)(value);
}

function clip(value: string): number | string {
  return value === 'none' || value === 'off' ? NONE : num(value);
}

function pairOfNumbers(value: string): [number, number] {
  const parts = value.split(',').map((v) => num(v.trim()));
  if (parts.length !== 2) throw new InvalidArgumentError(`"${value}" is not two numbers like 0.9,0.999.`);
  return [parts[0]!, parts[1]!];
}

function targets(value: string): string[] | 'all-linear' {
  return value === 'all-linear' ? value : value.split(',').map((v) => v.trim()).filter((v) => v !== '');
}

/** `\n` and `\t` in flag text become newline and tab (as in --stop). */
function unescape(value: string): string {
  return value.replace(/\\n/g, '\n').replace(/\\t/g, '\t');
}

/** A template file's text; one final newline (which editors add) is dropped. */
function readTemplateFile(path: string): string {
  try {
    return readFileSync(path, 'utf8').replace(/\r?\n$/, '');
  } catch (e) {
    throw new UserError(`cannot read template file ${path}: ${(e as Error).message}`);
  }
}

const DESCRIPTIONS: Record<OnPolicyRecipe, string> = {
  sdft:
    'Self-Distillation Fine-Tuning (Shenfeld et al., 2601.19897): learn from demonstrations on-policy. The model ' +
    'samples an answer to each prompt; the same model, shown the demonstration in its prompt (an EMA of the ' +
    'student), scores every token of it, and the student is trained towards those distributions (forward KL).',
  opsd:
    'On-Policy Self-Distillation (Zhao et al., 2601.18734): the model solves each problem; the frozen initial ' +
    'model, shown the reference solution, scores every token, and a LoRA adapter is trained towards it ' +
    '(forward KL with per-entry clipping).',
  distill:
    'On-policy distillation from another model (GKD, Agarwal et al., 2306.13649): the student samples, the ' +
    'teacher scores each token on the same prompt, and the student is trained towards the teacher ' +
    '(generalized JSD by default; λ sets the on-policy share of steps).',
};

const HELP: Record<OnPolicyRecipe, string> = {
  sdft: `
Data: JSONL, one {"prompt": "...", "demonstration": "..."} per line.
Defaults follow the official SDFT code: forward KL over the full vocabulary, EMA teacher (rate 0.01 every step),
first 3 completion tokens skipped, 1 rollout per prompt at T 1.0, per-sequence mean, full fine-tuning, lr 5e-5
cosine with 10% warmup, 32 prompts per step (4×8), 2 epochs, completions up to 2048 tokens. Chat templates are
used on each side when the model has one (--chat-template auto). Teacher templates: ${BUILTIN_TEMPLATES.sdft.map((p) => p.id).join(', ')}.
Every setting also has a recipe-file key (docs/recipes/sdft.md). Re-running the same command resumes a killed run.

Examples:
  distillery sdft --model qwen2.5-7b-instruct --data tooluse.jsonl
  distillery sdft --model mymodel --data d.jsonl --divergence reverse_kl --teacher-kind frozen --lora-r 64
  distillery sdft --recipe sdft.json`,
  opsd: `
Data: JSONL, one {"problem": "...", "solution": "..."} per line.
Defaults follow the OPSD v3 recipe and current code: forward KL with per-entry clip 0.05, teacher = the frozen
initial model (LoRA disabled), LoRA r64/α128 on q,k,v,o,gate,up,down, token mean, lr 5e-6, 32 prompts per step,
100 steps, completions up to 1024 tokens at T 1.1 / top-p 0.95 / top-k 20, student thinking off and teacher thinking
on (when the model has a chat template), grad-norm 0.1, checkpoints every 25 steps.
Teacher templates: ${BUILTIN_TEMPLATES.opsd.map((p) => p.id).join(', ')} (default ${BUILTIN_TEMPLATES.opsd[0]!.id}).
Every setting also has a recipe-file key (docs/recipes/opsd.md). Re-running the same command resumes a killed run.

Examples:
  distillery opsd --model qwen3-1.7b --data openthoughts-math.jsonl
  distillery opsd --model qwen3-1.7b --data math.jsonl --teacher-prefill '<think>\\n' --template opsd-2026-03-10
  distillery opsd --recipe opsd.json`,
  distill: `
Prompts: JSONL, one {"prompt": "..."} per line; an optional "completion" is used by off-policy steps (λ < 1).
Defaults follow TRL's GKDTrainer: β 0.5 (β 0 = forward KL, 1 = reverse KL, otherwise generalized JSD), λ 0.5,
temperature 0.9 for sampling and in the loss, 128 new tokens, lr 2e-5, batch 8, 3 epochs, full fine-tuning.
The student and the teacher see the same prompt, rendered with the student's tokenizer and chat template (when it
has one); the teacher must share the student's vocabulary.
Every setting also has a recipe-file key (docs/recipes/distill.md). Re-running the same command resumes a killed run.

Examples:
  distillery distill --model qwen3-0.6b --teacher qwen3-8b --prompts prompts.jsonl
  distillery distill --model small --teacher big --prompts p.jsonl --beta 1 --lmbda 1 --max-steps 500`,
};

export function registerOnPolicyCommands(program: Command): void {
  for (const recipe of ['sdft', 'opsd', 'distill'] as const) registerOnPolicyCommand(program, recipe);
}

function registerOnPolicyCommand(program: Command, recipe: OnPolicyRecipe): void {
  const d = ONPOLICY_DEFAULTS[recipe];
  const cmd = program.command(recipe).description(DESCRIPTIONS[recipe]);
  cmd.option('--model <ref>', `model to ${recipe === 'distill' ? 'train (the student)' : 'distil'}: NAME[:VERSION] from the vault, or a model folder`);
  if (recipe === 'distill') {
    cmd.option('--teacher <ref>', 'teacher model: NAME[:VERSION] from the vault, or a model folder');
    cmd.option('--prompts <file>', 'JSONL file, one {"prompt": "..."} per line (optional "completion")');
  } else {
    cmd.option('--data <file>', recipe === 'sdft' ? 'JSONL file, one {"prompt", "demonstration"} per line' : 'JSONL file, one {"problem", "solution"} per line');
  }
  cmd
    .option('--recipe <file>', 'JSON recipe file with any of the settings below; flags override it')
    .option('--name <name>', 'register the result under this name (default: a new version of the model)');
  if (recipe !== 'distill') {
    cmd.option('--template <id>', `built-in template pair: ${BUILTIN_TEMPLATES[recipe].map((p) => p.id).join(', ')} (default ${d.templates.id})`);
  }
  cmd
    .option('--student-template <file>', 'custom student prompt template file ({field} placeholders)')
    .option('--teacher-template <file>', 'custom teacher prompt template file ({field} placeholders)')
    .option('--chat-template <mode>', 'chat template on both sides: auto (when the model has one, default), on, off', chatMode)
    .option('--student-chat-template <mode>', 'chat template for the student side: auto, on, off', chatMode)
    .option('--teacher-chat-template <mode>', 'chat template for the teacher side: auto, on, off', chatMode)
    .option('--student-thinking <mode>', `enable_thinking for the student's chat template: on, off, default (default ${fmtThinking(d.student_chat.enable_thinking)})`, thinkingMode)
    .option('--teacher-thinking <mode>', `enable_thinking for the teacher's chat template: on, off, default (default ${fmtThinking(d.teacher_chat.enable_thinking)})`, thinkingMode)
    .option('--teacher-prefill <text>', 'text appended after the teacher prompt, e.g. "<think>\\n" (\\n for newline)', unescape)
    .option('--max-prompt-len <n>', `longest student prompt in tokens (default ${d.max_prompt_len})`, int)
    .option('--max-teacher-prompt-len <n>', `longest teacher prompt in tokens (default ${d.max_teacher_prompt_len})`, int)
    .option('--samples-per-prompt <n>', `rollouts per prompt (default ${d.sampling.n})`, int)
    .option('--sample-batch-size <n>', `prompts generated together (default ${d.sampling.batch_size})`, int);
  addDecodingOptions(cmd, '', 'rollout', 'run seed: data order, rollouts and LoRA initialisation (default 0)');
  cmd
    .option('--divergence <d>', `forward_kl (KL(teacher‖student)), reverse_kl, jsd, or auto (by --beta as GKD) (default ${d.loss.divergence ?? 'auto'})`, divergence)
    .option('--beta <b>', `JSD mixture weight of the teacher; with --divergence auto: 0 forward KL, 1 reverse KL (default ${d.loss.beta})`, num)
    .option('--loss-temperature <t>', `temperature dividing both sides' logits in the loss (default ${d.loss.temperature})`, num)
    .option('--estimator <e>', `full (all vocabulary), topk, sampled_token (reverse KL only) (default ${d.loss.estimator})`, choice(['full', 'topk', 'sampled_token'] as const))
    .option('--loss-topk <k>', `vocabulary entries for the topk estimator (default ${d.loss.topk})`, int)
    .option('--loss-topk-support <side>', `whose top-k: teacher or student (default ${d.loss.topk_support})`, choice(['teacher', 'student'] as const))
    .option('--loss-topk-tail', 'add a bucket for the probability outside the top-k')
    .option('--no-loss-topk-tail', 'renormalise over the top-k only (default)')
    .option('--clip <tau>', `per-entry clip of the divergence summands, or none (default ${d.loss.clip ?? 'none'})`, clip)
    .option('--skip-tokens <n>', `completion tokens at the start without loss (default ${d.loss.skip_tokens})`, int)
    .option('--reduction <r>', `token_mean or sequence_mean (default ${d.loss.reduction})`, choice(['token_mean', 'sequence_mean'] as const));
  if (recipe !== 'distill') {
    cmd
      .option('--teacher-kind <kind>', `frozen (starting weights), ema, live (default ${d.teacher.kind})`, choice(['frozen', 'ema', 'live'] as const))
      .option('--ema-rate <r>', `EMA teacher: φ ← r·θ + (1−r)·φ (default ${d.teacher.ema_rate})`, num)
      .option('--ema-every <n>', `EMA teacher: update every n steps (default ${d.teacher.ema_every})`, int);
  }
  cmd
    .option('--lmbda <l>', `fraction of on-policy steps (GKD λ; default ${d.lmbda})`, num)
    .option('--lora-r <r>', `LoRA rank (default ${d.train.lora ? d.train.lora.r : 'none: full fine-tuning'})`, int)
    .option('--lora-alpha <a>', 'LoRA alpha (default 2×r)', num)
    .option('--lora-dropout <p>', 'LoRA dropout (default 0)', num)
    .option('--lora-targets <list>', `modules to adapt, comma-separated, or all-linear (default ${d.train.lora ? fmtTargets(d.train.lora.target_modules) : 'all-linear'})`, targets)
    .option('--no-lora', 'full fine-tuning instead of LoRA')
    .option('--lr <lr>', `peak learning rate (default ${d.train.lr})`, num)
    .option('--min-lr <lr>', `learning rate at the end of the decay (default ${d.train.min_lr})`, num)
    .option('--warmup-ratio <r>', `share of steps in linear warmup (default ${d.train.warmup_ratio})`, num)
    .option('--lr-schedule <kind>', `decay after warmup: cosine or linear (default ${d.train.lr_schedule})`)
    .option('--epochs <e>', `epochs over the records (default ${d.train.epochs})`, num)
    .option('--max-steps <n>', `optimizer steps; overrides --epochs (default ${d.train.max_steps ?? 'from epochs'})`, int)
    .option('--batch-size <n>', `prompts per micro-batch (default ${d.train.batch_size})`, int)
    .option('--grad-accum <n>', `micro-batches per optimizer step (default ${d.train.grad_accum})`, int)
    .option('--max-grad-norm <n>', `gradient clipping norm (default ${d.train.max_grad_norm})`, num)
    .option('--weight-decay <w>', `AdamW weight decay (default ${d.train.weight_decay})`, num)
    .option('--adam-betas <b1,b2>', `AdamW betas (default ${d.train.betas.join(',')})`, pairOfNumbers)
    .option('--checkpoint-every <n>', `save a resumable checkpoint every n steps (default ${d.train.checkpoint_every})`, int)
    .option('--record-every <n>', `dump prompt/completion boundary tokens every n steps (default ${d.train.record_every})`, int)
    .option('--eval-tasks <file>', 'code tasks (JSONL: id, prompt, tests, entry_point) to evaluate base and result on')
    .option('--eval-n <n>', 'samples per task for evaluation (default 10)', int)
    .option('--eval-k <list>', 'pass@k values, e.g. 1,5 (default 1)', intList)
    .option('--no-retention', 'skip the retention suite (general probes run on base and result to show what the run cost elsewhere)')
    .option('--eval-chat-template <mode>', 'chat template for evaluation: auto, on, off (default: as the student side)', chatMode);
  addDecodingOptions(cmd, 'eval', 'evaluation');
  cmd
    .option('--json', 'print the result as JSON on stdout')
    .option('-q, --quiet', 'no progress output');
  cmd.addHelpText('after', HELP[recipe]);
  cmd.action(async (opts: Record<string, unknown>) => {
    const fromFile = typeof opts.recipe === 'string' ? readRecipeFile(opts.recipe) : {};
    const flags = onPolicyFlags(recipe, opts);
    const cfg = resolveOnPolicyConfig(recipe, fromFile, flags);
    const quiet = Boolean(opts.quiet);
    const plan = await planOnPolicy(cfg);
    await EngineWorker.using(async (worker) => {
      const result = await runOnPolicy(cfg, { worker, log: stderrLog(quiet), quiet }, plan);
      if (opts.json) {
        process.stdout.write(JSON.stringify(result, null, 2) + '\n');
        return;
      }
      const from = result.teacher ? ` (teacher ${result.teacher.ref})` : '';
      console.log(`\n${recipe.toUpperCase()} run ${result.run_id}: ${result.parent.ref} → ${result.model}${from}`);
      const kl = result.train.mean_kl_first !== null && result.train.mean_kl_last !== null
        ? `; mean KL ${result.train.mean_kl_first.toFixed(4)} → ${result.train.mean_kl_last.toFixed(4)}`
        : '';
      console.log(`  ${result.train.steps} steps, final loss ${result.train.final_loss.toFixed(4)}${kl}; templates ${result.templates}`);
      printBeforeAfter(result);
      console.log(`  run folder: ${result.run_dir}`);
    });
  });
}

function fmtThinking(v: boolean | null): string {
  return v === null ? 'default' : v ? 'on' : 'off';
}

function fmtTargets(t: string[] | 'all-linear'): string {
  return Array.isArray(t) ? t.join(',') : t;
}

/** Commander's parsed options → the recipe-file shape (only what was given; undefined is dropped by the merge). */
export function onPolicyFlags(recipe: OnPolicyRecipe, opts: Record<string, unknown>): Record<string, unknown> {
  const decoding = decodingFromFlags(opts);
  const seed = decoding.seed;
  delete decoding.seed;
  const both = opts.chatTemplate;
  let lora: unknown;
  if (opts.lora === false) lora = null;
  else if ([opts.loraR, opts.loraAlpha, opts.loraDropout, opts.loraTargets].some((v) => v !== undefined)) {
    lora = {
      r: opts.loraR,
      alpha: opts.loraAlpha ?? (opts.loraR !== undefined ? 2 * Number(opts.loraR) : undefined),
      dropout: opts.loraDropout,
      target_modules: opts.loraTargets,
    };
  }
  const flags: Record<string, unknown> = {
    model: opts.model,
    teacher_model: recipe === 'distill' ? opts.teacher : undefined,
    data: recipe === 'distill' ? opts.prompts : opts.data,
    name: opts.name,
    templates: {
      id: opts.template,
      student: typeof opts.studentTemplate === 'string' ? readTemplateFile(opts.studentTemplate) : undefined,
      teacher: typeof opts.teacherTemplate === 'string' ? readTemplateFile(opts.teacherTemplate) : undefined,
    },
    student_chat: { chat_template: opts.studentChatTemplate ?? both, enable_thinking: orNull(opts.studentThinking) },
    teacher_chat: { chat_template: opts.teacherChatTemplate ?? both, enable_thinking: orNull(opts.teacherThinking) },
    teacher_prefill: opts.teacherPrefill,
    max_prompt_len: opts.maxPromptLen,
    max_teacher_prompt_len: opts.maxTeacherPromptLen,
    sampling: { ...decoding, n: opts.samplesPerPrompt, batch_size: opts.sampleBatchSize },
    loss: {
      divergence: orNull(opts.divergence),
      beta: opts.beta,
      temperature: opts.lossTemperature,
      estimator: opts.estimator,
      topk: opts.lossTopk,
      topk_support: opts.lossTopkSupport,
      topk_tail: opts.lossTopkTail,
      clip: orNull(opts.clip),
      skip_tokens: opts.skipTokens,
      reduction: opts.reduction,
    },
    teacher: { kind: opts.teacherKind, ema_rate: opts.emaRate, ema_every: opts.emaEvery },
    lmbda: opts.lmbda,
    train: {
      lora,
      lr: opts.lr,
      min_lr: opts.minLr,
      warmup_ratio: opts.warmupRatio,
      lr_schedule: opts.lrSchedule,
      epochs: opts.epochs,
      max_steps: opts.maxSteps,
      batch_size: opts.batchSize,
      grad_accum: opts.gradAccum,
      max_grad_norm: opts.maxGradNorm,
      weight_decay: opts.weightDecay,
      betas: opts.adamBetas,
      seed,
      checkpoint_every: opts.checkpointEvery,
      record_every: opts.recordEvery,
    },
  };
  if (opts.evalTasks !== undefined) {
    flags.eval = {
      tasks: opts.evalTasks,
      n: opts.evalN,
      k: opts.evalK,
      decoding: { ...decodingFromFlags(opts, 'eval'), chat_template: opts.evalChatTemplate },
    };
  }
  // --no-retention only turns it off: a recipe file's "retention" key stands otherwise.
  if (opts.retention === false) flags.retention = false;
  return flags;
}
