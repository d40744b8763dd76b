import { readFileSync } from 'node:fs';
import { UserError } from '../core/errors.js';
import { checkDecoding, type Decoding } from '../engine/decoding.js';
import { DEFAULT_FILTER, type FilterConfig } from './ssd-filter.js';
import { checkPassAtK } from '../eval/run.js';

export interface LoraConfig {
  r: number;
  alpha: number;
  dropout: number;
  target_modules: string[] | 'all-linear';
}

export interface TrainConfig {
  /** Full fine-tuning (the paper) or LoRA. */
  lora: LoraConfig | null;
  lr: number;
  min_lr: number;
  /** Fraction of optimizer steps spent in linear warmup. */
  warmup_ratio: number;
  epochs: number;
  /** Overrides epochs when set. */
  max_steps: number | null;
  batch_size: number;
  grad_accum: number;
  max_grad_norm: number;
  weight_decay: number;
  betas: [number, number];
  max_seq_len: number;
  seed: number;
  checkpoint_every: number;
}

export interface EvalConfig {
  /** Code tasks (JSONL: id, prompt, tests, entry_point). */
  tasks: string;
  n: number;
  k: number[];
  decoding: Decoding;
}

export interface SsdConfig {
  model: string;
  prompts: string;
  /** Name the distilled model is registered under; default: the parent's name (a new version of it). */
  name: string | null;
  sampling: Decoding & { n: number };
  filter: FilterConfig;
  train: TrainConfig;
  eval: EvalConfig | null;
  /** Run the retention suite (general probes, src/eval/retention) on base and result: what the run cost elsewhere. */
  retention: boolean;
}

/**
 * Defaults follow the SSD paper and its released pipeline (docs/recipes/ssd.md has the sources):
 * T_train 1.6 with top-k 20 / top-p 0.8 (Qwen3-30B-A3B-Instruct model card; ml-ssd's config uses 1.5),
 * one sample per prompt, full fine-tuning with AdamW (β 0.9/0.95, weight decay 0.1), cosine from 5e-6 to
 * 1e-6 with 10% warmup, global batch 32, ≈8 epochs (2,500 iterations over ~10K samples).
 * Evaluation: T 0.9, top-k 20, top-p 0.8 (the model card's evaluation setting).
 */
export const SSD_DEFAULTS: Omit<SsdConfig, 'model' | 'prompts'> = {
  name: null,
  sampling: {
    n: 1,
    temperature: 1.6,
    top_k: 20,
    top_p: 0.8,
    min_p: 0,
    max_tokens: 2048,
    stop: [],
    seed: 0,
    chat_template: false,
  },
  filter: DEFAULT_FILTER,
  train: {
    lora: null,
    lr: 5e-6,
    min_lr: 1e-6,
    warmup_ratio: 0.1,
    epochs: 8,
    max_steps: null,
    batch_size: 8,
    grad_accum: 4,
    max_grad_norm: 1.0,
    weight_decay: 0.1,
    betas: [0.9, 0.95],
    max_seq_len: 4096,
    seed: 0,
    checkpoint_every: 50,
  },
  eval: null,
  retention: true,
};

export const EVAL_DEFAULT_DECODING: Decoding = {
  temperature: 0.9,
  top_k: 20,
  top_p: 0.8,
  min_p: 0,
  max_tokens: 2048,
  stop: [],
  seed: 1234,
  chat_template: false,
};

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep merge where `over` wins; arrays and scalars replace. Unknown keys are refused by the caller. */
export function deepMerge<T>(base: T, over: unknown): T {
  if (!isObject(over) || !isObject(base)) return (over === undefined ? base : over) as T;
  const out: Json = { ...(base as Json) };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    out[k] = k in out && isObject(out[k]) && isObject(v) ? deepMerge(out[k], v) : v;
  }
  return out as T;
}

/** Refuses keys the template does not have, naming the full path, so typos in recipe files are caught. */
export function checkKeys(value: unknown, template: unknown, path: string): void {
  if (!isObject(value) || !isObject(template)) return;
  for (const k of Object.keys(value)) {
    if (!(k in template)) {
      throw new UserError(`unknown setting "${path ? path + '.' : ''}${k}"`, `known settings here: ${Object.keys(template).join(', ')}`);
    }
    // Nullable sections (lora, eval) are checked against their full shape.
    const sub = template[k] ?? (k === 'lora' ? DEFAULT_LORA : k === 'eval' ? EVAL_TEMPLATE : undefined);
    checkKeys(value[k], sub, path ? `${path}.${k}` : k);
  }
}

export const DEFAULT_LORA: LoraConfig = { r: 16, alpha: 32, dropout: 0, target_modules: 'all-linear' };
const EVAL_TEMPLATE: EvalConfig = { tasks: '', n: 10, k: [1], decoding: EVAL_DEFAULT_DECODING };

export function readRecipeFile(path: string): Json {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new UserError(`cannot read recipe file ${path}: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (!isObject(v)) throw new Error('the top level must be an object');
    return v;
  } catch (e) {
    throw new UserError(`recipe file ${path} is not valid JSON: ${(e as Error).message}`);
  }
}

function positive(name: string, v: number, integer = false): void {
  if (!Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) {
    throw new UserError(`${name} must be a positive ${integer ? 'whole ' : ''}number (got ${v})`);
  }
}

/** Builds the full config: defaults, then the recipe file, then command-line flags; and validates it. */
export function resolveSsdConfig(fromFile: Json, fromFlags: Json): SsdConfig {
  const template = { ...SSD_DEFAULTS, model: '', prompts: '' };
  checkKeys(fromFile, template, '');
  checkKeys(fromFlags, template, '');
  let cfg = deepMerge(deepMerge(template as SsdConfig, fromFile), fromFlags);
  if (cfg.train.lora) cfg = { ...cfg, train: { ...cfg.train, lora: deepMerge(DEFAULT_LORA, cfg.train.lora) } };
  if (cfg.eval) {
    cfg = { ...cfg, eval: deepMerge(EVAL_TEMPLATE, cfg.eval) };
    // Evaluation sees prompts the way sampling and training did, unless told otherwise.
    const given = (src: Json): unknown => ((src.eval as Json | undefined)?.decoding as Json | undefined)?.chat_template;
    if (given(fromFile) === undefined && given(fromFlags) === undefined) {
      cfg.eval!.decoding = { ...cfg.eval!.decoding, chat_template: cfg.sampling.chat_template };
    }
  }
  if (!cfg.model) throw new UserError('no model given', 'pass --model NAME[:VERSION] or a model folder path');
  if (!cfg.prompts) throw new UserError('no prompts given', 'pass --prompts FILE.jsonl (one {"prompt": ...} per line)');
  checkDecoding(cfg.sampling, 'sampling');
  positive('sampling.n', cfg.sampling.n, true);
  const t = cfg.train;
  positive('train.lr', t.lr);
  positive('train.batch_size', t.batch_size, true);
  positive('train.grad_accum', t.grad_accum, true);
  positive('train.epochs', t.epochs);
  positive('train.max_seq_len', t.max_seq_len, true);
  if (t.max_steps !== null) positive('train.max_steps', t.max_steps, true);
  if (!(t.warmup_ratio >= 0 && t.warmup_ratio < 1)) throw new UserError(`train.warmup_ratio must be in [0, 1) (got ${t.warmup_ratio})`);
  if (!(cfg.filter.drop_shortest_pct >= 0 && cfg.filter.drop_shortest_pct < 100)) {
    throw new UserError(`filter.drop_shortest_pct must be in [0, 100) (got ${cfg.filter.drop_shortest_pct})`);
  }
  if (cfg.eval) {
    if (!cfg.eval.tasks) throw new UserError('eval.tasks is empty', 'pass --eval-tasks FILE.jsonl');
    checkDecoding(cfg.eval.decoding, 'eval decoding');
    positive('eval.n', cfg.eval.n, true);
    checkPassAtK(cfg.eval.n, cfg.eval.k);
  }
  return cfg;
}
