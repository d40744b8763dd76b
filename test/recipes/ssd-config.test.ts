import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveSsdConfig, SSD_DEFAULTS } from '../../src/recipes/ssd-config.js';

const base = { model: 'm', prompts: 'p.jsonl' };

test('defaults follow the paper and flags override the recipe file', () => {
  const cfg = resolveSsdConfig({ ...base, sampling: { temperature: 1.5 }, train: { lr: 1e-5 } }, { train: { lr: 2e-5 } });
  assert.equal(cfg.sampling.temperature, 1.5);
  assert.equal(cfg.sampling.top_k, 20);
  assert.equal(cfg.sampling.top_p, 0.8);
  assert.equal(cfg.sampling.n, 1);
  assert.equal(cfg.train.lr, 2e-5);
  assert.equal(cfg.train.batch_size * cfg.train.grad_accum, 32);
  assert.equal(cfg.train.lora, null);
  assert.equal(cfg.eval, null);
  assert.deepEqual(SSD_DEFAULTS.train.betas, [0.9, 0.95]);
});

test('unknown keys are refused with their full path', () => {
  assert.throws(() => resolveSsdConfig({ ...base, sampling: { temprature: 1 } }, {}), /unknown setting "sampling.temprature"/);
  assert.throws(() => resolveSsdConfig({ ...base, train: { lora: { rank: 4 } } }, {}), /unknown setting "train.lora.rank"/);
});

test('lora and eval sections are completed from their defaults', () => {
  const cfg = resolveSsdConfig(base, { train: { lora: { r: 4 } }, eval: { tasks: 't.jsonl', n: 4, k: [1, 2] } });
  assert.deepEqual(cfg.train.lora, { r: 4, alpha: 32, dropout: 0, target_modules: 'all-linear' });
  assert.equal(cfg.eval?.decoding.temperature, 0.9);
  assert.deepEqual(cfg.eval?.k, [1, 2]);
});

test('bad values are named', () => {
  assert.throws(() => resolveSsdConfig({}, {}), /no model given/);
  assert.throws(() => resolveSsdConfig({ model: 'm' }, {}), /no prompts given/);
  assert.throws(() => resolveSsdConfig(base, { sampling: { top_p: 0 } }), /top-p must be in \(0, 1\]/);
  assert.throws(() => resolveSsdConfig(base, { sampling: { temperature: -1 } }), /temperature must be ≥ 0/);
  assert.throws(() => resolveSsdConfig(base, { train: { batch_size: 0 } }), /train.batch_size must be a positive/);
  assert.throws(() => resolveSsdConfig(base, { eval: { tasks: 't', n: 2, k: [5] } }), /1 ≤ k ≤ n/);
});

test('evaluation uses the chat template setting of sampling unless set on its own', () => {
  const on = resolveSsdConfig(base, { sampling: { chat_template: true }, eval: { tasks: 't.jsonl' } });
  assert.equal(on.eval?.decoding.chat_template, true);
  const off = resolveSsdConfig(base, { sampling: { chat_template: true }, eval: { tasks: 't.jsonl', decoding: { chat_template: false } } });
  assert.equal(off.eval?.decoding.chat_template, false);
});
