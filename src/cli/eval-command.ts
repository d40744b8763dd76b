import type { Command } from 'commander';
import { EngineWorker } from '../engine/worker.js';
import { checkDecoding, describeDecoding, type Decoding } from '../engine/decoding.js';
import { evaluateModel, evalCacheDir, checkPassAtK } from '../eval/run.js';
import { loadTaskFile, promptFor, TASK_FORMATS } from '../eval/formats/index.js';
import { describeRetention, evaluateRetention, RETENTION_DEFAULT_DECODING, type RetentionRequest } from '../eval/retention/index.js';
import { looksLikeQaFile, parseQaFile } from '../eval/qa.js';
import { readFile } from 'node:fs/promises';
import type { Sampler } from '../sampling/sampler.js';
import { checkCanonical } from '../eval/score.js';
import { sandboxLevel, limitsForConcurrency, resolveConcurrency } from '../eval/sandbox.js';
import type { TaskFormat } from '../eval/tasks.js';
import { EVAL_DEFAULT_DECODING } from '../recipes/ssd-config.js';
import { takeModel } from '../recipes/models.js';
import { addDecodingOptions, addSamplerOptions, decodingFromFlags, int, intList } from './options.js';
import { samplerFromFlags } from './sampler-flags.js';
import { UserError } from '../core/errors.js';
import { formatPassAt } from './format.js';

export function registerEvalCommand(program: Command): void {
  const cmd = program
    .command('eval')
    .description('Evaluate a model on code tasks (n samples per task, run in a sandbox, pass@k with bootstrap confidence intervals), or on the retention suite.')
    .option('--model <ref>', 'NAME[:VERSION] from the vault, or a model folder (with --sampler http: a label for the server\'s model)')
    .option('--tasks <file>', 'task JSONL: HumanEval(+), MBPP, stdin/stdout, MultiPL-E JS or {"id", "prompt", "tests", "entry_point"} (docs/eval-formats.md)')
    .option('--suite <name>', 'retention: the built-in general probes (arithmetic, facts, instruction checks) instead of --tasks, to see what a recipe cost elsewhere')
    .option('--format <name>', `task file format, detected from the first record unless given: ${[...TASK_FORMATS, 'qa'].join(', ')} (qa: {"question", "answer", "aliases"?} lines, matched, not executed)`)
    .option('--check-canonical', 'run each task\'s reference solution through the harness instead of model samples (no model needed); any failure is a harness or data bug, exit code 1')
    .option('--n <n>', 'samples per task', int, 10)
    .option('--k <list>', 'pass@k values, e.g. 1,5', intList, [1])
    .option('--chat-template', 'wrap prompts in the model chat template')
    .option('--json', 'print the result as JSON on stdout')
    .option('-q, --quiet', 'no progress output');
  addDecodingOptions(cmd, '', 'evaluation');
  addSamplerOptions(cmd, 'evaluation');
  cmd.addHelpText(
    'after',
    `
Default decoding: T=${EVAL_DEFAULT_DECODING.temperature}, top-k ${EVAL_DEFAULT_DECODING.top_k}, top-p ${EVAL_DEFAULT_DECODING.top_p}, seed ${EVAL_DEFAULT_DECODING.seed}.
The program run for each sample is the task prompt + the completion + the task's tests (see docs/sandbox.md
for what the sandbox isolates). Generations are cached, so repeating an evaluation is cheap.

Examples:
  distillery eval --model mymodel:2 --tasks tasks.jsonl --n 10 --k 1,5 --temperature 0.2 --stop '\\n\\n'
  distillery eval --sampler http --endpoint http://127.0.0.1:8000/v1 --tasks tasks.jsonl --n 10   (a vLLM server)
  distillery eval --tasks HumanEval.jsonl --check-canonical   (checks the harness and the data, no model)
  distillery eval --model mymodel:2 --suite retention            (greedy; 132 probes scored by program)`,
  );
  cmd.action(async (opts: Record<string, unknown>) => {
    if (opts.suite !== undefined) {
      if (opts.suite !== 'retention') throw new UserError(`unknown --suite ${JSON.stringify(opts.suite)}: the built-in suite is retention`);
      if (opts.tasks !== undefined || opts.checkCanonical || opts.format !== undefined) throw new UserError('--suite retention brings its own tasks: leave out --tasks, --format and --check-canonical');
      // One greedy answer per probe unless --n is given (the code default of 10 samples is not meant here).
      await runRetention({ ...opts, n: cmd.getOptionValueSource('n') === 'default' ? 1 : opts.n });
      return;
    }
    if (opts.tasks === undefined) throw new UserError('--tasks FILE is required (or --suite retention)');
    if (opts.format === 'qa' || (opts.format === undefined && (await looksLikeQaFile(opts.tasks as string)))) {
      if (opts.checkCanonical) throw new UserError('--check-canonical applies to code tasks (a question/answer set has no program to run)');
      const file = opts.tasks as string;
      const qa = { ...parseQaFile(await readFile(file, 'utf8'), file), source: file };
      await runRetention({ ...opts, n: cmd.getOptionValueSource('n') === 'default' ? 1 : opts.n }, qa);
      return;
    }
    const decoding = checkDecoding({
      ...EVAL_DEFAULT_DECODING,
      ...decodingFromFlags(opts),
      chat_template: Boolean(opts.chatTemplate),
    } as Decoding);
    const n = opts.n as number;
    const ks = opts.k as number[];
    checkPassAtK(n, ks);
    const { format, tasks } = await loadTaskFile(opts.tasks as string, opts.format as TaskFormat | undefined);
    // The isolation in force is said before anything runs (and recorded with the results).
    process.stderr.write(`sandbox: ${sandboxLevel(limitsForConcurrency(undefined, resolveConcurrency()))}\n`);
    if (opts.checkCanonical) {
      await runCheckCanonical(opts.tasks as string, format, tasks, Boolean(opts.json));
      return;
    }
    await withSampler(opts, async ({ model, sampler, identity, worker }) => {
      const summary = await evaluateModel({
        worker,
        sampler,
        modelDir: model.dir,
        modelDigest: identity,
        tasks,
        decoding,
        n,
        k: ks,
        cacheDir: evalCacheDir(),
        label: 'eval',
        quiet: Boolean(opts.quiet),
      });
      if (opts.json) {
        // The exact prompt text given to the sampler for each task (with --chat-template it is wrapped in the
        // model's chat template on the way).
        const prompts = tasks.map((t) => ({ id: t.id, prompt: promptFor(t, decoding.chat_template ? 'chat' : 'continuation') }));
        process.stdout.write(JSON.stringify({ model: model.ref, task_format: format, ...summary, prompts }, null, 2) + '\n');
        return;
      }
      console.log(`\n${model.ref}: ${summary.tasks} tasks × ${n} samples, ${describeDecoding(decoding)}`);
      for (const [k, v] of Object.entries(summary.pass_at_k)) console.log(`  pass@${k}: ${formatPassAt(v)}`);
      console.log(`  outcomes: ${Object.entries(summary.status_counts).map(([s, c]) => `${s} ${c}`).join(', ')}`);
      console.log(`  sandbox: ${summary.sandbox}`);
    });
  });
}

/**
 * Runs `fn` with the model and sampler the flags name. Over HTTP the weights are the server's: no engine
 * starts, and --model only labels the result.
 */
async function withSampler(
  opts: Record<string, unknown>,
  fn: (s: { model: { ref: string; dir: string; digest: string }; sampler: Sampler; identity: string; worker: EngineWorker | undefined }) => Promise<void>,
): Promise<void> {
  const viaHttp = opts.sampler === 'http';
  if (!viaHttp && opts.model === undefined) throw new UserError('--model is required (or --sampler http --endpoint URL to evaluate what a server serves)');
  const run = async (worker: EngineWorker | undefined) => {
    const model = worker ? await takeModel(opts.model as string) : { ref: (opts.model as string | undefined) ?? '', dir: '', digest: '' };
    const { sampler, identity } = await samplerFromFlags(opts, worker ? { worker, dir: model.dir, digest: model.digest, ref: model.ref } : null);
    if (!worker && model.ref === '') model.ref = sampler.describe();
    await fn({ model, sampler, identity, worker });
  };
  if (viaHttp) await run(undefined);
  else await EngineWorker.using(run);
}

/** --suite retention (the built-in probes) or a question/answer file: greedy by default, scored by program. */
async function runRetention(opts: Record<string, unknown>, qa?: RetentionRequest['qa']): Promise<void> {
  const decoding = checkDecoding({ ...RETENTION_DEFAULT_DECODING, ...decodingFromFlags(opts), chat_template: Boolean(opts.chatTemplate) } as Decoding);
  await withSampler(opts, async ({ model, sampler, identity }) => {
    const summary = await evaluateRetention({
      sampler, modelDigest: identity, decoding, n: opts.n as number, cacheDir: evalCacheDir(), quiet: Boolean(opts.quiet), qa,
    });
    if (opts.json) process.stdout.write(JSON.stringify({ model: model.ref, ...summary }, null, 2) + '\n');
    else console.log(describeRetention(summary, model.ref).join('\n'));
  });
}

/** --check-canonical: every task's reference solution must pass; a failure is a harness or data bug (exit 1). */
async function runCheckCanonical(file: string, format: TaskFormat, tasks: Awaited<ReturnType<typeof loadTaskFile>>['tasks'], json: boolean): Promise<void> {
  const results = await checkCanonical(tasks);
  const failed = results.filter((r) => r.status === 'failed');
  const skipped = results.filter((r) => r.status === 'skipped');
  if (json) {
    process.stdout.write(JSON.stringify({ tasks_file: file, task_format: format, sandbox: sandboxLevel(limitsForConcurrency(undefined, resolveConcurrency())), results: results.map((r) => ({ id: r.id, status: r.status, ...(r.result && r.status === 'failed' ? { sandbox_status: r.result.status, note: r.result.note ?? null, stdout: r.result.stdout.slice(-2000), stderr: r.result.stderr.slice(-2000) } : {}) })) }, null, 2) + '\n');
  } else {
    for (const r of failed) {
      const res = r.result!;
      console.log(`FAILED ${r.id}: the reference solution did not pass (${res.status}${res.note ? `: ${res.note}` : ''}) — a harness or data bug`);
      if (res.stdout.trim()) console.log(`  stdout: ${res.stdout.trim().slice(-1000).replace(/\n/g, '\n          ')}`);
      if (res.stderr.trim()) console.log(`  stderr: ${res.stderr.trim().slice(-1000).replace(/\n/g, '\n          ')}`);
    }
    const ok = results.length - failed.length - skipped.length;
    console.log(`${file} (${format}): ${ok} of ${results.length - skipped.length} reference solutions pass${skipped.length ? `; ${skipped.length} tasks have no reference solution (${skipped.slice(0, 5).map((r) => r.id).join(', ')}${skipped.length > 5 ? ', …' : ''})` : ''}`);
  }
  if (failed.length > 0) process.exitCode = 1;
}
