import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  resolveOnPolicyConfig, resolveDivergence, onPolicyJobSpec, onPolicySteps, configTemplates,
} from '../../src/recipes/onpolicy-config.js';
import {
  BUILTIN_TEMPLATES, renderTemplate, renderPair, selectTemplates, placeholders, SDFT_TEACHER_CODE,
} from '../../src/recipes/onpolicy-templates.js';
import { parseOnPolicyRecords, renderRecords, hasChatTemplate } from '../../src/recipes/onpolicy.js';
import { onPolicyFlags } from '../../src/cli/onpolicy-commands.js';
import { buildProgram } from '../../src/cli/main.js';

const sdft = { model: 'm', data: 'd.jsonl' };
const distill = { model: 'm', data: 'p.jsonl', teacher_model: 't' };

test('sdft defaults follow the official code', () => {
  const c = resolveOnPolicyConfig('sdft', sdft, {});
  assert.equal(c.recipe, 'sdft');
  assert.equal(c.loss.divergence, 'forward_kl');
  assert.equal(c.loss.estimator, 'full');
  assert.equal(c.loss.skip_tokens, 3);
  assert.equal(c.loss.reduction, 'sequence_mean');
  assert.equal(c.loss.clip, null);
  assert.deepEqual(c.teacher, { kind: 'ema', ema_rate: 0.01, ema_every: 1 });
  assert.equal(c.sampling.n, 1);
  assert.equal(c.sampling.temperature, 1.0);
  assert.equal(c.sampling.top_p, 1.0);
  assert.equal(c.sampling.top_k, 0);
  assert.equal(c.sampling.max_tokens, 2048);
  assert.equal(c.max_prompt_len, 2048);
  assert.equal(c.max_teacher_prompt_len, 8192);
  assert.equal(c.train.lora, null);
  assert.equal(c.train.lr, 5e-5);
  assert.equal(c.train.warmup_ratio, 0.1);
  assert.equal(c.train.max_grad_norm, 1);
  assert.equal(c.train.epochs, 2);
  assert.equal(c.train.batch_size * c.train.grad_accum, 32);
  assert.deepEqual(c.student_chat, { chat_template: 'auto', enable_thinking: null });
  assert.equal(c.templates.id, 'sdft-paper-code');
  assert.equal(c.lmbda, 1);
});

test('opsd defaults follow the v3 recipe', () => {
  const c = resolveOnPolicyConfig('opsd', sdft, {});
  assert.equal(c.loss.divergence, 'forward_kl');
  assert.equal(c.loss.clip, 0.05);
  assert.equal(c.loss.reduction, 'token_mean');
  assert.equal(c.teacher.kind, 'frozen');
  assert.deepEqual(c.train.lora, { r: 64, alpha: 128, dropout: 0, target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] });
  assert.equal(c.train.lr, 5e-6);
  assert.equal(c.train.batch_size * c.train.grad_accum, 32);
  assert.equal(c.train.max_steps, 100);
  assert.equal(c.train.max_grad_norm, 0.1);
  assert.equal(c.train.checkpoint_every, 25);
  assert.deepEqual(
    [c.sampling.temperature, c.sampling.top_p, c.sampling.top_k, c.sampling.max_tokens],
    [1.1, 0.95, 20, 1024],
  );
  assert.equal(c.student_chat.enable_thinking, false);
  assert.equal(c.teacher_chat.enable_thinking, true);
  assert.equal(c.teacher_prefill, '');
  assert.equal(c.templates.id, 'opsd-c181e5b');
});

test('distill defaults follow TRL GKD; the teacher model is required', () => {
  const c = resolveOnPolicyConfig('distill', distill, {});
  assert.equal(c.loss.beta, 0.5);
  assert.equal(c.loss.divergence, null);
  assert.equal(c.loss.temperature, 0.9);
  assert.equal(c.sampling.temperature, 0.9);
  assert.equal(c.sampling.max_tokens, 128);
  assert.equal(c.lmbda, 0.5);
  assert.equal(c.teacher_model, 't');
  assert.throws(() => resolveOnPolicyConfig('distill', { model: 'm', data: 'p' }, {}), /no teacher model given/);
  assert.throws(() => resolveOnPolicyConfig('sdft', { ...sdft, teacher_model: 't' }, {}), /teacher_model is for `distillery distill`/);
  assert.throws(() => resolveOnPolicyConfig('distill', distill, { teacher: { kind: 'ema' } }), /teacher.kind must be "frozen"/);
});

test('β maps to the divergence as in GKD: 0 forward, 1 reverse, otherwise JSD', () => {
  assert.deepEqual(resolveDivergence({ divergence: null, beta: 0 }), { divergence: 'forward_kl', beta: 0 });
  assert.deepEqual(resolveDivergence({ divergence: null, beta: 1 }), { divergence: 'reverse_kl', beta: 1 });
  assert.deepEqual(resolveDivergence({ divergence: null, beta: 0.3 }), { divergence: 'jsd', beta: 0.3 });
  assert.deepEqual(resolveDivergence({ divergence: 'reverse_kl', beta: 0.3 }), { divergence: 'reverse_kl', beta: 0.3 });
  const c = resolveOnPolicyConfig('distill', distill, { loss: { beta: 1 } });
  const spec = onPolicyJobSpec(c, { outputDir: 'o', model: 'M', teacherModel: 'T', data: 'D', studentChat: false, teacherChat: false, records: 10 });
  assert.equal((spec.loss as { divergence: string }).divergence, 'reverse_kl');
  assert.throws(() => resolveOnPolicyConfig('sdft', sdft, { loss: { divergence: 'jsd', beta: 0 } }), /strictly between 0 and 1 for jsd/);
  assert.throws(() => resolveOnPolicyConfig('sdft', sdft, { loss: { beta: 1.5 } }), /loss.beta must be in \[0, 1\]/);
  assert.throws(() => resolveOnPolicyConfig('sdft', sdft, { loss: { estimator: 'sampled_token' } }), /reverse KL only/);
  assert.doesNotThrow(() => resolveOnPolicyConfig('sdft', sdft, { loss: { estimator: 'sampled_token', divergence: 'reverse_kl' } }));
});

test('flags override the recipe file, which overrides the defaults; sections merge deeply', () => {
  const c = resolveOnPolicyConfig(
    'opsd',
    { ...sdft, train: { lr: 1e-5, lora: { r: 8 } }, sampling: { temperature: 1.0 }, loss: { clip: null } },
    { train: { lr: 2e-5 }, sampling: { top_k: 5 } },
  );
  assert.equal(c.train.lr, 2e-5);
  assert.equal(c.train.lora?.r, 8);
  assert.equal(c.train.lora?.alpha, 128, 'the rest of the default LoRA section stays');
  assert.equal(c.sampling.temperature, 1.0);
  assert.equal(c.sampling.top_k, 5);
  assert.equal(c.sampling.top_p, 0.95);
  assert.equal(c.loss.clip, null);
  const full = resolveOnPolicyConfig('opsd', sdft, { train: { lora: null, max_steps: null } });
  assert.equal(full.train.lora, null);
  assert.equal(full.train.max_steps, null);
  const withLora = resolveOnPolicyConfig('sdft', sdft, { train: { lora: { r: 4 } } });
  assert.deepEqual(withLora.train.lora, { r: 4, alpha: 32, dropout: 0, target_modules: 'all-linear' });
});

test('unknown keys and wrong types are refused, naming them', () => {
  assert.throws(() => resolveOnPolicyConfig('sdft', { ...sdft, loss: { divergance: 'jsd' } }, {}), /unknown setting "loss.divergance"/);
  assert.throws(() => resolveOnPolicyConfig('sdft', { ...sdft, train: { lora: { rank: 4 } } }, {}), /unknown setting "train.lora.rank"/);
  assert.throws(() => resolveOnPolicyConfig('sdft', { ...sdft, prompts: 'x' }, {}), /unknown setting "prompts"/);
  assert.throws(() => resolveOnPolicyConfig('sdft', { ...sdft, train: { lr: '1e-5' } }, {}), /train.lr must be a number/);
  assert.throws(() => resolveOnPolicyConfig('distill', { ...distill, teacher: 'big' }, {}), /teacher must be an object[\s\S]*/);
  assert.throws(() => resolveOnPolicyConfig('sdft', { ...sdft, recipe: 'opsd' }, {}), /for "opsd", not "sdft"/);
  assert.doesNotThrow(() => resolveOnPolicyConfig('sdft', { ...sdft, recipe: 'sdft' }, {}));
});

test('bad values are named', () => {
  assert.throws(() => resolveOnPolicyConfig('sdft', {}, {}), /no model given/);
  assert.throws(() => resolveOnPolicyConfig('sdft', { model: 'm' }, {}), /no data given[\s\S]*/);
  assert.throws(() => resolveOnPolicyConfig('distill', { model: 'm', teacher_model: 't' }, {}), /no prompts given/);
  assert.throws(() => resolveOnPolicyConfig('sdft', sdft, { sampling: { top_p: 0 } }), /sampling: top-p must be in \(0, 1\]/);
  assert.throws(() => resolveOnPolicyConfig('sdft', sdft, { lmbda: 2 }), /lmbda must be in \[0, 1\]/);
  assert.throws(() => resolveOnPolicyConfig('sdft', sdft, { teacher: { ema_rate: 0 } }), /teacher.ema_rate must be in \(0, 1\]/);
  assert.throws(() => resolveOnPolicyConfig('sdft', sdft, { student_chat: { chat_template: 'yes' } }), /student_chat.chat_template must be one of/);
  assert.throws(() => resolveOnPolicyConfig('sdft', sdft, { train: { min_lr: 1 } }), /train.min_lr must be in \[0, train.lr\]/);
  assert.throws(() => resolveOnPolicyConfig('sdft', sdft, { loss: { skip_tokens: -1 } }), /loss.skip_tokens must be a whole number ≥ 0/);
  assert.throws(() => resolveOnPolicyConfig('sdft', sdft, { eval: { tasks: 't', n: 2, k: [5] } }), /1 ≤ k ≤ n/);
  assert.throws(() => resolveOnPolicyConfig('opsd', sdft, { templates: { id: 'opsd-v9' } }), /unknown opsd template "opsd-v9"/);
});

test('evaluation follows the student chat setting unless set', () => {
  const a = resolveOnPolicyConfig('sdft', sdft, { eval: { tasks: 't.jsonl' } });
  assert.equal(a.eval?.decoding.chat_template, 'auto');
  assert.equal(a.eval?.decoding.temperature, 0.9);
  const b = resolveOnPolicyConfig('sdft', sdft, { student_chat: { chat_template: false }, eval: { tasks: 't.jsonl' } });
  assert.equal(b.eval?.decoding.chat_template, false);
  const c = resolveOnPolicyConfig('sdft', sdft, { eval: { tasks: 't.jsonl', decoding: { chat_template: true } } });
  assert.equal(c.eval?.decoding.chat_template, true);
});

test('the job spec follows docs/onpolicy-job.md', () => {
  const c = resolveOnPolicyConfig('opsd', sdft, { teacher_prefill: '<think>\n' });
  const spec = onPolicyJobSpec(c, { outputDir: '/o', model: '/m', teacherModel: null, data: '/d.jsonl', studentChat: true, teacherChat: true, records: 1000 });
  assert.equal(spec.type, 'onpolicy');
  assert.equal(spec.teacher_model, null);
  assert.deepEqual(spec.student_chat, { enabled: true, enable_thinking: false });
  assert.deepEqual(spec.teacher_chat, { enabled: true, enable_thinking: true });
  assert.equal(spec.teacher_prefill, '<think>\n');
  assert.deepEqual(spec.sampling, { n: 1, temperature: 1.1, top_k: 20, top_p: 0.95, min_p: 0, max_tokens: 1024, stop: [], batch_size: 32 });
  assert.deepEqual(spec.loss, {
    divergence: 'forward_kl', beta: 0.5, temperature: 1.1, estimator: 'full', topk: 20, topk_support: 'teacher', topk_tail: false,
    clip: 0.05, skip_tokens: 0, reduction: 'token_mean',
  });
  assert.deepEqual(spec.teacher, { kind: 'frozen', ema_rate: 0.001, ema_every: 1 });
  assert.equal(spec.max_steps, 100);
  assert.equal(spec.epochs, null);
  assert.equal(spec.warmup_steps, 0);
  assert.equal(spec.max_grad_norm, 0.1);
  assert.equal(spec.checkpoint_every, 25);
  assert.equal(spec.record_every, 25);
  assert.equal(spec.lr_schedule, 'linear'); // OPSD's v3 reproduction decays linearly
  const keys = ['type', 'output_dir', 'model', 'teacher_model', 'data', 'student_chat', 'teacher_chat', 'teacher_prefill', 'max_prompt_len',
    'max_teacher_prompt_len', 'sampling', 'loss', 'teacher', 'lmbda', 'lora', 'lr', 'min_lr', 'warmup_steps', 'lr_schedule', 'max_steps', 'epochs',
    'batch_size', 'grad_accum', 'max_grad_norm', 'weight_decay', 'betas', 'seed', 'checkpoint_every', 'record_every'];
  assert.deepEqual(Object.keys(spec).sort(), keys.sort());
  // Without a chat template, enable_thinking has nothing to apply to.
  const raw = onPolicyJobSpec(c, { outputDir: '/o', model: '/m', teacherModel: null, data: '/d', studentChat: false, teacherChat: false, records: 3 });
  assert.deepEqual(raw.student_chat, { enabled: false, enable_thinking: null });
  assert.deepEqual(raw.teacher_chat, { enabled: false, enable_thinking: null });
});

test('steps and warmup from epochs: SDFT 2 epochs of 100 prompts at 32 per step, 10% warmup', () => {
  const c = resolveOnPolicyConfig('sdft', sdft, {});
  assert.deepEqual(onPolicySteps(c.train, 100), { total: 8, warmup: 1 });
  const spec = onPolicyJobSpec(c, { outputDir: 'o', model: 'm', teacherModel: null, data: 'd', studentChat: false, teacherChat: false, records: 1000 });
  assert.equal(spec.max_steps, 64);
  assert.equal(spec.warmup_steps, 6);
  assert.deepEqual(onPolicySteps({ ...c.train, max_steps: 3 }, 1000), { total: 3, warmup: 0 });
});

// ---------------------------------------------------------------------------------------------------------
// Templates

test('templates render byte-exact', () => {
  const sd = selectTemplates('sdft', { id: 'sdft-paper-code', student: null, teacher: null });
  assert.deepEqual(renderPair(sd, { prompt: 'What is 2+2?', demonstration: 'It is 4.' }), {
    student: 'What is 2+2?',
    teacher:
      '\nWhat is 2+2?\n\nThis is an example for a response to the question:\nIt is 4.\n\n' +
      'Now answer with a response of your own, including the thinking process.',
  });
  const paper = selectTemplates('sdft', { id: 'sdft-paper-text', student: null, teacher: null });
  assert.ok(renderPair(paper, { prompt: 'q', demonstration: 'a' }).teacher.endsWith('including the thinking process:'));

  const op = selectTemplates('opsd', { id: 'opsd-c181e5b', student: null, teacher: null });
  const r = renderPair(op, { problem: 'Find x.', solution: 'x = 1' });
  assert.equal(r.student, 'Find x.'.replace(/^/, 'Problem: ') + '\n\nPlease reason step by step, and put your final answer within \\boxed{}.');
  assert.equal(
    r.teacher,
    'Problem: Find x.\n\nHere is a reference solution to this problem:\n=== Reference Solution Begin ===\nx = 1\n=== Reference Solution End ===\n\n\n' +
      'After reading the reference solution above, make sure you truly understand the reasoning behind each step \u2014 do not copy or ' +
      "paraphrase it. Now, using your own words and independent reasoning, derive the same final answer to the problem above. Think step " +
      "by step, explore different approaches, and don't be afraid to backtrack or reconsider if something doesn't work out:\n\n" +
      'Please reason step by step, and put your final answer within \\boxed{}.',
  );
  const old = renderPair(selectTemplates('opsd', { id: 'opsd-2026-03-10', student: null, teacher: null }), { problem: 'P', solution: 'S' });
  assert.equal(
    old.teacher,
    'P\n\nHere is a reference solution to this problem:\nS\n\n\nAfter understanding the reference solution and the rationale behind each ' +
      'step, now articulate your own step-by-step reasoning that derives the same final answer to the problem below:\n\n' +
      'Please reason step by step, and put your final answer within \\boxed{}.',
  );
  const v1 = renderPair(selectTemplates('opsd', { id: 'opsd-paper-v1', student: null, teacher: null }), { problem: 'P', solution: 'S' });
  assert.deepEqual(v1, {
    student: 'Problem: P\nAnswer:',
    teacher: 'Problem: P\nHere is a reference solution:\nS\nAfter understanding the reference solution, please try to solve this problem using your own approach below:\nAnswer:',
  });
  const di = renderPair(BUILTIN_TEMPLATES.distill[0]!, { prompt: 'Once upon' });
  assert.deepEqual(di, { student: 'Once upon', teacher: 'Once upon' });
});

test('substitution is a single pass; $$ and {{ }} escape; record text is never re-expanded', () => {
  assert.deepEqual(placeholders(SDFT_TEACHER_CODE), ['orig_content', 'output_text']);
  const t = renderTemplate(SDFT_TEACHER_CODE, { prompt: 'costs $output_text', demonstration: '{prompt} $$' });
  assert.ok(t.includes('\ncosts $output_text\n'));
  assert.ok(t.includes('\n{prompt} $$\n'));
  assert.equal(renderTemplate({ id: 'x', syntax: 'dollar', text: '$$5 ${orig_content}s', source: '' }, { prompt: 'apple' }), '$5 apples');
  assert.equal(renderTemplate({ id: 'x', syntax: 'brace', text: '{{a}} {prompt} \\boxed{}', source: '' }, { prompt: 'p' }), '{a} p \\boxed{}');
});

test('custom templates: recorded id, unknown placeholders refused', () => {
  const c = resolveOnPolicyConfig('opsd', { ...sdft, templates: { teacher: '{problem}\nRef: {solution}\n' } }, {});
  const pair = configTemplates(c);
  assert.equal(pair.id, 'opsd-c181e5b+custom-teacher');
  assert.equal(renderPair(pair, { problem: 'P', solution: 'S' }).teacher, 'P\nRef: S\n');
  const both = selectTemplates('sdft', { id: 'sdft-paper-code', student: 'Q: {prompt}', teacher: '{prompt} / {demonstration}' });
  assert.equal(both.id, 'custom');
  assert.throws(
    () => resolveOnPolicyConfig('opsd', { ...sdft, templates: { teacher: '{problem} {answer} {x}' } }, {}),
    /templates.teacher: unknown placeholders \{answer\}, \{x\}/,
  );
  assert.throws(() => resolveOnPolicyConfig('distill', { ...distill, templates: { teacher: '{prompt} {demonstration}' } }, {}), /unknown placeholder \{demonstration\}/);
});

// ---------------------------------------------------------------------------------------------------------
// Records

test('records are read per recipe; errors name the line and the field', () => {
  const sd = parseOnPolicyRecords('sdft', '{"prompt":"q","demonstration":"a","id":7}\n\n{"prompt":"q2","demonstration":"a2"}\n', 'd.jsonl');
  assert.deepEqual(sd.map((r) => r.fields), [{ prompt: 'q', demonstration: 'a' }, { prompt: 'q2', demonstration: 'a2' }]);
  assert.throws(() => parseOnPolicyRecords('sdft', '{"prompt":"q","demonstration":"a"}\n{"prompt":"q"}\n', 'd.jsonl'), /d.jsonl:2: field "demonstration" must be a non-empty string \(it is missing\)/);
  assert.throws(() => parseOnPolicyRecords('opsd', '{"problem":"p","solution":""}', 'o.jsonl'), /o.jsonl:1: field "solution" must be a non-empty string \(it is empty\)/);
  assert.throws(() => parseOnPolicyRecords('opsd', '{"problem":3,"solution":"s"}', 'o.jsonl'), /o.jsonl:1: field "problem" .*got number/);
  assert.throws(() => parseOnPolicyRecords('distill', '{"prompt":"p"}\nnot json\n', 'p.jsonl'), /p.jsonl:2: not valid JSON/);
  assert.throws(() => parseOnPolicyRecords('distill', '{"prompt":"p","completion":5}', 'p.jsonl'), /p.jsonl:1: field "completion", when given, must be a non-empty string/);
  assert.throws(() => parseOnPolicyRecords('distill', '\n\n', 'p.jsonl'), /holds no records/);
  const di = parseOnPolicyRecords('distill', '{"prompt":"p","completion":"c"}\n{"prompt":"p2"}', 'p.jsonl');
  assert.deepEqual(renderRecords(BUILTIN_TEMPLATES.distill[0]!, di), [
    { student: 'p', teacher: 'p', completion: 'c' },
    { student: 'p2', teacher: 'p2' },
  ]);
});

test('chat template detection looks at tokenizer_config.json and chat_template.jinja', () => {
  const dir = mkdtempSync(join(tmpdir(), 'onpolicy-chat-'));
  try {
    assert.equal(hasChatTemplate(dir), false);
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>' }));
    assert.equal(hasChatTemplate(dir), false);
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: '{{ messages }}' }));
    assert.equal(hasChatTemplate(dir), true);
    writeFileSync(join(dir, 'tokenizer_config.json'), '{}');
    writeFileSync(join(dir, 'chat_template.jinja'), '{{ messages }}');
    assert.equal(hasChatTemplate(dir), true);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------------------
// Command-line flags

function flagsOf(recipe: 'sdft' | 'opsd' | 'distill', argv: string[]): Record<string, unknown> {
  const program = buildProgram();
  const cmd = program.commands.find((c) => c.name() === recipe)!;
  cmd.action(() => {});
  program.parse([recipe, ...argv], { from: 'user' });
  return onPolicyFlags(recipe, cmd.opts());
}

test('every flag lands on its recipe-file key', () => {
  const f = flagsOf('opsd', [
    '--model', 'm', '--data', 'd.jsonl', '--template', 'opsd-paper-v1', '--chat-template', 'off', '--teacher-chat-template', 'on',
    '--student-thinking', 'default', '--teacher-prefill', '<think>\\n', '--temperature', '0.7', '--seed', '5', '--stop', '\\n\\n',
    '--samples-per-prompt', '2', '--sample-batch-size', '4', '--divergence', 'auto', '--beta', '1', '--loss-temperature', '1',
    '--estimator', 'topk', '--loss-topk', '50', '--loss-topk-support', 'student', '--loss-topk-tail', '--clip', 'none', '--skip-tokens', '2',
    '--reduction', 'sequence_mean', '--teacher-kind', 'ema', '--ema-rate', '0.05', '--ema-every', '2', '--lmbda', '0.8',
    '--lora-r', '8', '--lora-targets', 'q_proj,v_proj', '--lr', '1e-4', '--min-lr', '1e-6', '--warmup-ratio', '0.05', '--max-steps', '7',
    '--batch-size', '2', '--grad-accum', '3', '--max-grad-norm', '0.5', '--weight-decay', '0.01', '--adam-betas', '0.9,0.95',
    '--checkpoint-every', '3', '--record-every', '2', '--max-prompt-len', '100', '--max-teacher-prompt-len', '200',
  ]);
  const c = resolveOnPolicyConfig('opsd', {}, f);
  assert.equal(c.templates.id, 'opsd-paper-v1');
  assert.deepEqual(c.student_chat, { chat_template: false, enable_thinking: null });
  assert.deepEqual(c.teacher_chat, { chat_template: true, enable_thinking: true });
  assert.equal(c.teacher_prefill, '<think>\n');
  assert.deepEqual(c.sampling, { n: 2, temperature: 0.7, top_k: 20, top_p: 0.95, min_p: 0, max_tokens: 1024, stop: ['\n\n'], batch_size: 4 });
  assert.deepEqual(c.loss, {
    divergence: null, beta: 1, temperature: 1, estimator: 'topk', topk: 50, topk_support: 'student', topk_tail: true, clip: null,
    skip_tokens: 2, reduction: 'sequence_mean',
  });
  assert.deepEqual(c.teacher, { kind: 'ema', ema_rate: 0.05, ema_every: 2 });
  assert.equal(c.lmbda, 0.8);
  assert.deepEqual(c.train.lora, { r: 8, alpha: 16, dropout: 0, target_modules: ['q_proj', 'v_proj'] });
  assert.equal(c.train.seed, 5);
  assert.deepEqual(
    [c.train.lr, c.train.min_lr, c.train.warmup_ratio, c.train.max_steps, c.train.batch_size, c.train.grad_accum, c.train.max_grad_norm, c.train.weight_decay],
    [1e-4, 1e-6, 0.05, 7, 2, 3, 0.5, 0.01],
  );
  assert.deepEqual(c.train.betas, [0.9, 0.95]);
  assert.equal(c.train.checkpoint_every, 3);
  assert.equal(c.train.record_every, 2);
  assert.equal(c.max_prompt_len, 100);
  assert.equal(c.max_teacher_prompt_len, 200);

  const full = resolveOnPolicyConfig('opsd', {}, flagsOf('opsd', ['--model', 'm', '--data', 'd', '--no-lora']));
  assert.equal(full.train.lora, null);
  const d = resolveOnPolicyConfig('distill', {}, flagsOf('distill', ['--model', 'm', '--teacher', 't', '--prompts', 'p.jsonl', '--eval-tasks', 'x.jsonl', '--eval-chat-template', 'off']));
  assert.equal(d.teacher_model, 't');
  assert.equal(d.data, 'p.jsonl');
  assert.equal(d.eval?.decoding.chat_template, false);
});

test('template files are read exactly, less one final newline', () => {
  const dir = mkdtempSync(join(tmpdir(), 'onpolicy-tpl-'));
  try {
    const file = join(dir, 't.txt');
    writeFileSync(file, '\n{prompt}\n\nDemo:\n{demonstration}\n\n');
    const c = resolveOnPolicyConfig('sdft', {}, flagsOf('sdft', ['--model', 'm', '--data', 'd', '--teacher-template', file]));
    assert.equal(c.templates.teacher, '\n{prompt}\n\nDemo:\n{demonstration}\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a resolved configuration (a run's recipe.json) is itself a valid recipe file", () => {
  for (const [recipe, base] of [['sdft', sdft], ['opsd', sdft], ['distill', distill]] as const) {
    const c = resolveOnPolicyConfig(recipe, base, { eval: { tasks: 't.jsonl' } });
    const again = resolveOnPolicyConfig(recipe, JSON.parse(JSON.stringify(c)), {});
    assert.deepEqual(again, c);
  }
});
