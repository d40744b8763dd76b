import type { Command } from 'commander';
import { EngineWorker } from '../engine/worker.js';
import { checkDecoding, describeDecoding, type Decoding } from '../engine/decoding.js';
import { evaluateModel, evalCacheDir, checkPassAtK } from '../eval/run.js';
import { loadTasks } from '../eval/tasks.js';
import { EVAL_DEFAULT_DECODING } from '../recipes/ssd-config.js';
import { takeModel } from '../recipes/models.js';
import { addDecodingOptions, addSamplerOptions, decodingFromFlags, int, intList } from './options.js';
import { samplerFromFlags } from './sampler-flags.js';
import { UserError } from '../core/errors.js';
import { formatPassAt } from './format.js';

export function registerEvalCommand(program: Command): void {
  const cmd = program
    .command('eval')
    .description('Evaluate a model on code tasks: n samples per task, run in a sandbox, pass@k with bootstrap confidence intervals.')
    .option('--model <ref>', 'NAME[:VERSION] from the vault, or a model folder (with --sampler http: a label for the server\'s model)')
    .requiredOption('--tasks <file>', 'JSONL, one {"id", "prompt", "tests", "entry_point"} per line')
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
  distillery eval --sampler http --endpoint http://127.0.0.1:8000/v1 --tasks tasks.jsonl --n 10   (a vLLM server)`,
  );
  cmd.action(async (opts: Record<string, unknown>) => {
    const decoding = checkDecoding({
      ...EVAL_DEFAULT_DECODING,
      ...decodingFromFlags(opts),
      chat_template: Boolean(opts.chatTemplate),
    } as Decoding);
    const n = opts.n as number;
    const ks = opts.k as number[];
    checkPassAtK(n, ks);
    const tasks = await loadTasks(opts.tasks as string);
    const viaHttp = opts.sampler === 'http';
    if (!viaHttp && opts.model === undefined) throw new UserError('--model is required (or --sampler http --endpoint URL to evaluate what a server serves)');
    const evaluate = async (worker: EngineWorker | undefined) => {
      // Over HTTP the weights are the server's: no engine starts, and --model only labels the result.
      const model = worker ? await takeModel(opts.model as string) : { ref: (opts.model as string | undefined) ?? '', dir: '', digest: '' };
      const { sampler, identity } = await samplerFromFlags(opts, worker ? { worker, dir: model.dir, digest: model.digest, ref: model.ref } : null);
      if (!worker && model.ref === '') model.ref = sampler.describe();
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
        process.stdout.write(JSON.stringify({ model: model.ref, ...summary }, null, 2) + '\n');
        return;
      }
      console.log(`\n${model.ref}: ${summary.tasks} tasks × ${n} samples, ${describeDecoding(decoding)}`);
      for (const [k, v] of Object.entries(summary.pass_at_k)) console.log(`  pass@${k}: ${formatPassAt(v)}`);
      console.log(`  outcomes: ${Object.entries(summary.status_counts).map(([s, c]) => `${s} ${c}`).join(', ')}`);
      console.log(`  sandbox: ${summary.sandbox}`);
    };
    if (viaHttp) await evaluate(undefined);
    else await EngineWorker.using(evaluate);
  });
}
