import type { Decoding } from '../engine/decoding.js';
import type { FilterConfig } from '../recipes/ssd-filter.js';
import type { TrainConfig } from '../recipes/ssd-config.js';
import { demoConfig, type DemoConfig, type DemoModelConfig } from './config.js';
import type { SuiteSize } from './suite.js';

/** The demo's settings in the shapes the engine jobs and the SSD recipe take (derived from config.ts). */
export interface DemoPlan {
  /** Bumped when the plan changes meaning, so cached base models are not reused across versions. */
  version: number;
  seed: number;
  model: DemoModelConfig;
  describeModel: string;
  baseTrain: Record<string, unknown> & { max_steps: number };
  ssdSampling: Decoding & { n: number };
  filter: FilterConfig;
  ssdTrain: TrainConfig;
  evalN: number;
  evalDecoding: Decoding;
  grid: number[];
  /** The distilled model is scored greedily and at the evaluation temperature (the full grid costs time). */
  distilledGrid: number[];
}

function approxParams(m: DemoModelConfig): number {
  const h = m.hidden_size;
  const kv = (h / m.num_attention_heads) * m.num_key_value_heads;
  const perLayer = h * h * 2 + h * kv * 2 + 3 * h * m.intermediate_size + 2 * h;
  return m.vocab_size * h * (m.tie_word_embeddings ? 1 : 2) + m.num_hidden_layers * perLayer + h;
}

export function demoPlan(size: SuiteSize): DemoPlan {
  const c: DemoConfig = demoConfig(size);
  const s = c.ssdTrain;
  const decoding = (d: DemoConfig['evalDecode']): Decoding => ({
    temperature: d.temperature,
    top_k: d.top_k,
    top_p: d.top_p,
    min_p: d.min_p,
    max_tokens: d.max_tokens,
    stop: d.stop,
    seed: d.seed,
    chat_template: false,
  });
  return {
    version: 1,
    seed: c.suiteSeed,
    model: c.model,
    describeModel: `${Math.round(approxParams(c.model) / 1000)}k-parameter character-level Llama (${c.model.num_hidden_layers} layers, hidden ${c.model.hidden_size})`,
    baseTrain: { ...c.baseTrain, grad_accum: 1, checkpoint_every: 100 },
    ssdSampling: { ...decoding(c.ssdSample), n: c.ssdSample.n },
    filter: { min_chars: c.ssdFilter.dropEmpty ? 1 : 0, drop_stubs: true, drop_shortest_pct: c.ssdFilter.dropShortestShare * 100 },
    ssdTrain: {
      lora: null,
      lr: s.lr,
      min_lr: s.min_lr,
      warmup_ratio: s.warmup_steps / s.max_steps,
      epochs: 1,
      max_steps: s.max_steps,
      batch_size: s.batch_size,
      grad_accum: 1,
      max_grad_norm: s.max_grad_norm,
      weight_decay: s.weight_decay,
      betas: s.betas,
      max_seq_len: s.max_seq_len,
      seed: s.seed,
      checkpoint_every: 50,
    },
    evalN: c.evalDecode.n,
    evalDecoding: decoding(c.evalDecode),
    grid: c.baseTemperatureGrid,
    distilledGrid: [...new Set([0, c.evalDecode.temperature])],
  };
}
