import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/core/paths.js';
import { CLI, ENGINE_MISSING, STORIES, STORIES_MISSING, tempHome } from '../helpers/env.js';

/**
 * `distillery sdft | opsd | distill` end to end through the engine's onpolicy job: on stories260k (a real
 * Llama without a chat template) and on tiny Qwen3 models built from a config with a chat template that knows
 * enable_thinking. A few steps, a few tokens; plus a kill during training and a resume.
 */
const skip = STORIES_MISSING || ENGINE_MISSING;
const PYTHON = process.env.DISTILLERY_PYTHON ?? join(packageRoot(), 'engine', '.venv', 'bin', 'python');

// A chat template in the Qwen3 manner: an empty think block when enable_thinking is false.
const CHAT_TEMPLATE =
  '{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}' +
  '{% if add_generation_prompt %}<|assistant|>\n' +
  '{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}';

const BUILD = `
import json, string, sys
from distillery_engine.models import build_char_tokenizer, build_model_from_config, load_tokenizer, save_model
template = sys.argv[1]
for out, seed in zip(sys.argv[2::2], sys.argv[3::2]):
    build_char_tokenizer(string.ascii_letters + string.digits + string.punctuation + " \\n", out)
    tok = load_tokenizer(out)
    tok.chat_template = template
    config = {"model_type": "qwen3", "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
              "max_position_embeddings": 1024, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3,
              "tie_word_embeddings": False}
    save_model(build_model_from_config(config, seed=int(seed)), tok, out)
`;

let home = '';
let env: NodeJS.ProcessEnv = {};

function cli(args: string[], timeout = 120_000): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8', timeout });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function ok(args: string[]): Record<string, any> {
  const r = cli([...args, '--json']);
  assert.equal(r.status, 0, `distillery ${args.join(' ')}\n${r.stderr}`);
  return JSON.parse(r.stdout);
}

function jsonl(file: string): Record<string, any>[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}

function writeJsonl(name: string, rows: object[]): string {
  const file = join(home, name);
  writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}

const TINY_TRAIN = ['--max-steps', '2', '--max-tokens', '6', '--batch-size', '2', '--grad-accum', '1', '--sample-batch-size', '4', '--lr', '1e-3'];
// The retention suite is exercised once (the Qwen3 SDFT run); elsewhere it would only add minutes.
const TINY = [...TINY_TRAIN, '--no-retention'];

before(() => {
  if (skip) return;
  home = tempHome();
  env = { ...process.env, DISTILLERY_HOME: home, OMP_NUM_THREADS: '1' };
  assert.equal(cli(['vault', 'import', STORIES, '--name', 'stories']).status, 0);
  const models = [['qwen-student', '1'], ['qwen-teacher', '2']] as const;
  const b = spawnSync(PYTHON, ['-c', BUILD, CHAT_TEMPLATE, ...models.flatMap(([name, seed]) => [join(home, name), seed])], {
    env: { ...env, PYTHONPATH: join(packageRoot(), 'engine') },
    encoding: 'utf8',
  });
  assert.equal(b.status, 0, b.stderr);
  for (const [name] of models) {
    const imp = cli(['vault', 'import', join(home, name), '--name', name]);
    assert.equal(imp.status, 0, imp.stderr);
  }
  writeJsonl('sdft.jsonl', [
    { prompt: 'Once upon a time', demonstration: 'there was a cat.' },
    { prompt: 'The little dog', demonstration: 'ran home fast.' },
    { prompt: 'Lily and Tom', demonstration: 'played with a ball.' },
  ]);
  writeJsonl('opsd.jsonl', [
    { problem: 'What is 2+3?', solution: '2+3=5. The answer is 5.' },
    { problem: 'What is 4*2?', solution: '4*2=8. The answer is 8.' },
  ]);
  writeJsonl('prompts.jsonl', [{ prompt: 'Once upon a time' }, { prompt: 'The cat', completion: 'sat on the mat.' }, { prompt: 'One day' }]);
});

after(() => {
  if (home) rmSync(home, { recursive: true, force: true });
});

/**
 * Runs the command, SIGKILLs it once training has written a checkpoint, and runs it again; returns the second
 * run's result, or the first's when it finished before the kill landed.
 */
async function killAndResume(args: string[]): Promise<{ result: Record<string, any>; resumed: boolean }> {
  const argv = [CLI, ...args, '--json'];
  const before = new Set(existsSync(join(home, 'runs')) ? readdirSync(join(home, 'runs')) : []);
  const first = spawn(process.execPath, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  first.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  first.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise((r) => first.once('exit', r));
  const deadline = Date.now() + 90_000;
  let runDir: string | undefined;
  while (Date.now() < deadline && first.exitCode === null) {
    await new Promise((r) => setTimeout(r, 100));
    const fresh = (existsSync(join(home, 'runs')) ? readdirSync(join(home, 'runs')) : []).filter((r) => !before.has(r));
    runDir = fresh[0] ? join(home, 'runs', fresh[0]) : undefined;
    const events = runDir ? join(runDir, 'train', 'events.jsonl') : '';
    if (events && existsSync(events) && readFileSync(events, 'utf8').includes('"checkpoint"')) break;
  }
  if (first.exitCode === null) first.kill('SIGKILL');
  await exited;
  if (first.exitCode === 0) return { result: JSON.parse(stdout), resumed: false };
  assert.ok(runDir, `no run folder appeared:\n${stderr}`);
  assert.equal(JSON.parse(readFileSync(join(runDir, 'run.json'), 'utf8')).stages.train.status, 'running', 'killed during training');
  const second = spawnSync(process.execPath, argv, { env, encoding: 'utf8', timeout: 90_000 });
  assert.equal(second.status, 0, second.stderr);
  return { result: JSON.parse(second.stdout), resumed: true };
}

test('sdft, opsd (killed and resumed) and distill on stories260k (no chat template)', { skip, timeout: 180_000 }, async (t) => {
  const s = ok(['sdft', '--model', 'stories', '--data', join(home, 'sdft.jsonl'), ...TINY]);
  assert.equal(s.model, 'stories:2');
  assert.equal(s.train.steps, 2);
  assert.deepEqual(s.chat, { student: false, teacher: false });
  assert.ok(Number.isFinite(s.train.final_loss));
  const runDir: string = s.run_dir;
  const templates = JSON.parse(readFileSync(join(runDir, 'templates.json'), 'utf8'));
  assert.equal(templates.id, 'sdft-paper-code');
  assert.ok(templates.teacher.text.startsWith('\n$orig_content\n'));
  const boundaries = jsonl(join(runDir, 'train', 'boundaries.jsonl'));
  assert.deepEqual(boundaries.map((b) => b.step), [1, 2]);
  const first = boundaries[0]!;
  const i = first.record_line - 1;
  assert.equal(
    first.teacher.prompt_text,
    `\n${['Once upon a time', 'The little dog', 'Lily and Tom'][i]}\n\nThis is an example for a response to the question:\n` +
      `${['there was a cat.', 'ran home fast.', 'played with a ball.'][i]}\n\nNow answer with a response of your own, including the thinking process.`,
  );
  assert.deepEqual(first.student.completion_head_ids, first.teacher.completion_head_ids, 'one rollout, scored on both sides');
  const job = JSON.parse(readFileSync(join(runDir, 'train', 'job.json'), 'utf8'));
  assert.equal(job.teacher.kind, 'ema');
  assert.equal(job.loss.skip_tokens, 3);
  const show = JSON.parse(cli(['vault', 'show', 'stories:2', '--json']).stdout);
  assert.equal(show.lineage.recipe.name, 'sdft');
  assert.equal(show.lineage.run_id, s.run_id);
  assert.equal(show.lineage.parent.ref, 'stories:1');
  assert.equal(show.lineage.recipe.templates.id, 'sdft-paper-code');

  // OPSD's default LoRA targets (q,k,v,o,gate,up,down) exist in a Llama; the frozen teacher is the adapter-free
  // model. Killed after its first checkpoint and run again, it resumes and completes.
  const { result: o, resumed } = await killAndResume(['opsd', '--model', 'stories:1', '--data', join(home, 'opsd.jsonl'),
    '--name', 'stories-opsd', '--lora-r', '4', '--max-steps', '10', '--max-tokens', '12', '--batch-size', '2', '--grad-accum', '1',
    '--checkpoint-every', '2', '--lr', '1e-3']);
  assert.equal(o.model, 'stories-opsd:1');
  assert.equal(o.templates, 'opsd-c181e5b');
  assert.equal(o.train.steps, 10);
  const ojob = JSON.parse(readFileSync(join(o.run_dir, 'train', 'job.json'), 'utf8'));
  assert.equal(ojob.loss.clip, 0.05);
  assert.equal(ojob.lora.r, 4);
  assert.deepEqual(ojob.student_chat, { enabled: false, enable_thinking: null });
  assert.ok(existsSync(join(o.run_dir, 'train', 'adapter')));
  const ometrics = jsonl(join(o.run_dir, 'train', 'metrics.jsonl'));
  assert.deepEqual(ometrics.map((m) => m.step), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.ok(ometrics.every((m) => typeof m.clip_fraction === 'number'));
  t.diagnostic(resumed ? 'opsd was killed after a checkpoint and resumed' : 'opsd finished before the kill: resume not exercised');
  if (resumed) {
    assert.equal(o.resumed, true);
    assert.match(readFileSync(join(o.run_dir, 'train', 'events.jsonl'), 'utf8'), /resumed from/);
    const record = JSON.parse(readFileSync(join(o.run_dir, 'run.json'), 'utf8'));
    assert.equal(record.stages.train.attempts, 2);
    assert.equal(record.stages.prepare.attempts, 1, 'prepare was not redone');
  }

  // Distillation from another model: the SDFT result teaches the base. λ 0.5: some steps off-policy.
  const d = ok(['distill', '--model', 'stories:1', '--teacher', 'stories:2', '--prompts', join(home, 'prompts.jsonl'), '--name', 'stories-gkd', ...TINY]);
  assert.equal(d.model, 'stories-gkd:1');
  assert.equal(d.teacher.ref, 'stories:2');
  const djob = JSON.parse(readFileSync(join(d.run_dir, 'train', 'job.json'), 'utf8'));
  assert.deepEqual([djob.loss.divergence, djob.loss.beta, djob.lmbda], ['jsd', 0.5, 0.5]);
  assert.ok(existsSync(join(djob.teacher_model, 'config.json')), 'the teacher is a model folder');
  assert.notEqual(djob.teacher_model, djob.model);
  const dshow = JSON.parse(cli(['vault', 'show', 'stories-gkd:1', '--json']).stdout);
  assert.equal(dshow.lineage.recipe.teacher.digest, d.teacher.digest);
});

test('sdft, opsd and distill on a tiny Qwen3 with a chat template (auto on, thinking flags, prefill)', { skip, timeout: 120_000 }, () => {
  const s = ok(['sdft', '--model', 'qwen-student', '--data', join(home, 'sdft.jsonl'), ...TINY_TRAIN]);
  assert.deepEqual(s.chat, { student: true, teacher: true });
  // The retention suite ran on base and result, in the student's (chat) prompt format, and is in the run's report.
  assert.equal(s.retention.base.suite, 'retention');
  assert.equal(s.retention.base.prompt_format, 'chat');
  assert.equal(s.retention.base.tasks, s.retention.distilled.tasks);
  assert.notEqual(s.retention.base.model_digest, s.retention.distilled.model_digest);
  const run = JSON.parse(readFileSync(join(s.run_dir, 'run.json'), 'utf8'));
  assert.equal(run.stages.retention.status, 'done');
  const report = JSON.parse(readFileSync(join(s.run_dir, 'evaluation-report.json'), 'utf8'));
  assert.deepEqual(report.comparisons.map((c: { suite: string }) => c.suite), ['retention']);
  const sb = jsonl(join(s.run_dir, 'train', 'boundaries.jsonl'))[0]!;
  assert.match(sb.student.prompt_text, /^<\|user\|>\n.*\n<\|assistant\|>\n$/s);
  assert.match(sb.teacher.prompt_text, /^<\|user\|>\n\n.*This is an example for a response to the question:\n/s);

  const o = ok(['opsd', '--model', 'qwen-student', '--data', join(home, 'opsd.jsonl'), '--name', 'qwen-opsd',
    '--teacher-prefill', '<think>\\n', '--lora-r', '4', ...TINY]);
  const ob = jsonl(join(o.run_dir, 'train', 'boundaries.jsonl'))[0]!;
  // Student: thinking off (the template writes an empty think block); teacher: thinking on, then the prefill.
  assert.match(ob.student.prompt_text, /^<\|user\|>\nProblem: What is .*\\boxed\{\}\.\n<\|assistant\|>\n<think>\n\n<\/think>\n\n$/s);
  assert.match(ob.teacher.prompt_text, /=== Reference Solution Begin ===\n.*\n<\|assistant\|>\n<think>\n$/s);
  assert.deepEqual(ob.student.completion_head_ids, ob.teacher.completion_head_ids);
  const templates = JSON.parse(readFileSync(join(o.run_dir, 'templates.json'), 'utf8'));
  assert.equal(templates.student.enable_thinking, false);
  assert.equal(templates.teacher.enable_thinking, true);
  assert.equal(templates.teacher.prefill, '<think>\n');

  // Chat template forced off on the teacher side only.
  const d = ok(['distill', '--model', 'qwen-student', '--teacher', 'qwen-teacher', '--prompts', join(home, 'prompts.jsonl'),
    '--teacher-chat-template', 'off', '--beta', '0', '--lmbda', '1', ...TINY]);
  assert.deepEqual(d.chat, { student: true, teacher: false });
  assert.equal(d.model, 'qwen-student:3', 'after the sdft result qwen-student:2');
  const db = jsonl(join(d.run_dir, 'train', 'boundaries.jsonl'))[0]!;
  assert.equal(db.teacher.prompt_text, ['Once upon a time', 'The cat', 'One day'][db.record_line - 1]);
  const djob = JSON.parse(readFileSync(join(d.run_dir, 'train', 'job.json'), 'utf8'));
  assert.equal(djob.loss.divergence, 'forward_kl');
});

test('errors before any work: bad records name the line; a template with an unknown placeholder', { skip, timeout: 60_000 }, () => {
  const bad = writeJsonl('bad.jsonl', [{ problem: 'p', solution: 's' }, { problem: 'p2' }]);
  const r = cli(['opsd', '--model', 'stories', '--data', bad, ...TINY]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /bad\.jsonl:2: field "solution" must be a non-empty string/);
  const tpl = join(home, 'tpl.txt');
  writeFileSync(tpl, '{problem}\n{answer}\n');
  const t = cli(['opsd', '--model', 'stories', '--data', join(home, 'opsd.jsonl'), '--teacher-template', tpl]);
  assert.equal(t.status, 1);
  assert.match(t.stderr, /templates.teacher: unknown placeholder \{answer\}/);
  const c = cli(['sdft', '--model', 'stories', '--data', join(home, 'sdft.jsonl'), '--chat-template', 'on', ...TINY]);
  assert.equal(c.status, 1);
  assert.match(c.stderr, /chat_template is on but the model .* has no chat template/);
});
