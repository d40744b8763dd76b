/**
 * The refresh demo's settings ('full' = the demo, 'fast' = tests). docs/demo-design.md has the measurements
 * behind them and the commands that reproduce them.
 */
import type { Decoding } from '../engine/decoding.js';
import { REFRESH_STOP } from './refresh-suite.js';
import type { SuiteSize } from './suite.js';

export interface RefreshPlan {
  /** Bumped when the plan changes meaning, so cached base models are not reused across versions. */
  version: number;
  seed: number;
  size: SuiteSize;
  model: Record<string, unknown> & { hidden_size: number; num_hidden_layers: number };
  baseTrain: Record<string, unknown> & { max_steps: number };
  /** SDFT: steps, prompts per step, lr; everything else is the recipe's default (docs/recipes/sdft.md). */
  sdft: { max_steps: number; batch_size: number; lr: number; max_tokens: number; seed: number };
  /** Plain SFT on the same demonstrations, with the same steps, batch and lr: the baseline. */
  sft: Record<string, unknown> & { max_steps: number; batch_size: number; lr: number };
  /** The one decoding every model is evaluated with. */
  evalDecoding: Decoding;
  evalN: number;
}

/** A Llama over the suite's pieces (vocab_size and special ids come from the tokenizer). */
const model = {
  model_type: 'llama',
  hidden_size: 96,
  intermediate_size: 256,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 4,
  // the teacher's prompt (template + question + demonstration, ~50 pieces) plus a completion must fit
  max_position_embeddings: 256,
  tie_word_embeddings: true,
  // Embeddings are frozen during base training (below), so their random initial values must be large enough to
  // carry signal: std 0.1 ≈ 1/sqrt(hidden) gives rows of norm ≈ 1 (the default 0.02 trains much worse).
  initializer_range: 0.1,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
};

const decoding = (temperature: number): Decoding => ({
  temperature,
  top_k: 0,
  top_p: 1,
  min_p: 0,
  max_tokens: 32,
  stop: [...REFRESH_STOP],
  seed: 1234,
  chat_template: false,
});

export function refreshPlan(size: SuiteSize): RefreshPlan {
  const full = size === 'full';
  const baseSteps = full ? 1200 : 30;
  const sdftSteps = full ? 120 : 3;
  return {
    version: 2,
    seed: 0,
    size,
    model,
    baseTrain: {
      max_steps: baseSteps,
      batch_size: full ? 32 : 8,
      lr: 3e-3,
      min_lr: 0,
      warmup_steps: full ? 50 : 5,
      max_seq_len: 160,
      weight_decay: 0,
      betas: [0.9, 0.95],
      max_grad_norm: 1.0,
      loss_on: 'all',
      // Names are interchangeable in most of the corpus, so trained embeddings of them converge to one direction
      // and the model can no longer tell them apart, let alone copy one from its context (measured: pairwise
      // cosine 0.98, teacher 0% v2; frozen: teacher 50% and up). docs/demo-design.md.
      freeze_embeddings: true,
      seed: 0,
      grad_accum: 1,
      checkpoint_every: 100,
    },
    sdft: { max_steps: sdftSteps, batch_size: full ? 32 : 8, lr: 1e-4, max_tokens: 32, seed: 0 },
    sft: {
      max_steps: sdftSteps,
      batch_size: full ? 32 : 8,
      lr: 1e-4,
      min_lr: 0,
      warmup_steps: Math.round(sdftSteps * 0.1),
      max_seq_len: 160,
      weight_decay: 0,
      betas: [0.9, 0.999],
      max_grad_norm: 1.0,
      loss_on: 'completion',
      seed: 0,
      grad_accum: 1,
      checkpoint_every: 50,
    },
    evalDecoding: decoding(0.5),
    evalN: full ? 4 : 1,
  };
}
