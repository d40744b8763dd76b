import type { Command } from 'commander';
import { EngineWorker } from '../engine/worker.js';
import { resolveSsdConfig, readRecipeFile } from '../recipes/ssd-config.js';
import { runSsd } from '../recipes/ssd.js';
import { addDecodingOptions, addSamplerOptions, decodingFromFlags, int, num, intList } from './options.js';
import { checkSamplerFlags, samplerFromFlags } from './sampler-flags.js';
import { printBeforeAfter, stderrLog } from './format.js';

export function registerSsdCommand(program: Command): void {
  const cmd = program
    .command('ssd')
    .description(
      'Simple Self-Distillation: sample once from the frozen model at a training temperature with truncation, ' +
        'drop empty/stub outputs, fine-tune on the samples, evaluate, and register the result as a new version.',
    )
    .option('--model <ref>', 'model to distil: NAME[:VERSION] from the vault, or a model folder')
    .option('--prompts <file>', 'JSONL file, one {"prompt": "..."} per line (no answers needed)')
    .option('--recipe <file>', 'JSON recipe file with any of the settings below; flags override it')
    .option('--name <name>', 'register the result under this name (default: a new version of the parent)')
    .option('--samples-per-prompt <n>', 'completions per prompt (paper: 1)', int)
    .option('--chat-template', 'wrap prompts in the model chat template when sampling and training')
    .option('--no-chat-template', 'use raw prompts (default)')
    .option('--drop-shortest <pct>', 'also drop this percentage of the shortest samples (ml-ssd uses 10)', num)
    .option('--lora-r <r>', 'train a LoRA adapter of this rank instead of full fine-tuning', int)
    .option('--lora-alpha <a>', 'LoRA alpha (default 2×r)', num)
    .option('--lr <lr>', 'peak learning rate (default 5e-6)', num)
    .option('--epochs <e>', 'epochs over the samples (default 8)', num)
    .option('--max-steps <n>', 'optimizer steps; overrides --epochs', int)
    .option('--batch-size <n>', 'examples per micro-batch (default 8)', int)
    .option('--grad-accum <n>', 'micro-batches per optimizer step (default 4)', int)
    .option('--max-seq-len <n>', 'truncate prompt+completion to this many tokens (default 4096)', int)
    .option('--checkpoint-every <n>', 'save a resumable checkpoint every n steps (default 50)', int)
    .option('--eval-tasks <file>', 'code tasks (JSONL: id, prompt, tests, entry_point) to evaluate base and result on')
    .option('--eval-n <n>', 'samples per task for evaluation (default 10)', int)
    .option('--eval-k <list>', 'pass@k values, e.g. 1,5 (default 1)', intList)
    .option('--no-retention', 'skip the retention suite (general probes run on base and result to show what the run cost elsewhere)')
    .option('--json', 'print the result as JSON on stdout')
    .option('-q, --quiet', 'no progress output');
  addDecodingOptions(cmd, '', 'training-sample');
  addDecodingOptions(cmd, 'eval', 'evaluation');
  addSamplerOptions(cmd, 'SSD training');
  cmd.addHelpText(
    'after',
    `
Defaults follow the SSD paper (T_train 1.6, top-k 20, top-p 0.8, 1 sample per prompt, full fine-tuning, lr 5e-6
cosine, batch 32, ~8 epochs; evaluation T 0.9, top-k 20, top-p 0.8). Re-running the same command resumes a killed run.

Examples:
  distillery ssd --model mymodel --prompts prompts.jsonl --eval-tasks tasks.jsonl
  distillery ssd --model ./my-hf-folder --prompts p.jsonl --name mymodel-ssd --lora-r 16 --max-steps 200
  distillery ssd --recipe recipe.json`,
  );
  cmd.action(async (opts: Record<string, unknown>) => {
    const fromFile = typeof opts.recipe === 'string' ? readRecipeFile(opts.recipe) : {};
    const flags: Record<string, unknown> = {
      model: opts.model,
      prompts: opts.prompts,
      name: opts.name,
      sampling: {
        ...decodingFromFlags(opts),
        n: opts.samplesPerPrompt,
        chat_template: opts.chatTemplate,
      },
      filter: { drop_shortest_pct: opts.dropShortest },
      train: {
        lora: opts.loraR !== undefined ? { r: opts.loraR, alpha: opts.loraAlpha ?? 2 * Number(opts.loraR) } : undefined,
        lr: opts.lr,
        epochs: opts.epochs,
        max_steps: opts.maxSteps,
        batch_size: opts.batchSize,
        grad_accum: opts.gradAccum,
        max_seq_len: opts.maxSeqLen,
        checkpoint_every: opts.checkpointEvery,
      },
    };
    if (opts.evalTasks !== undefined) {
      flags.eval = {
        tasks: opts.evalTasks,
        n: opts.evalN,
        k: opts.evalK,
        decoding: decodingFromFlags(opts, 'eval'),
      };
    }
    // --no-retention only turns it off: a recipe file's "retention" key stands otherwise.
    if (opts.retention === false) flags.retention = false;
    const cfg = resolveSsdConfig(fromFile, flags);
    const quiet = Boolean(opts.quiet);
    await EngineWorker.using(async (worker) => {
      const kind = checkSamplerFlags(opts);
      // The engine default needs nothing more; llama samples the base's GGUF export, http a server.
      const sampler = kind === 'engine' ? undefined : (await samplerFromFlags(opts, { worker, dir: '', digest: '', ref: cfg.model })).sampler;
      const result = await runSsd(cfg, { worker, sampler, log: stderrLog(quiet), quiet });
      if (opts.json) {
        process.stdout.write(JSON.stringify(result, null, 2) + '\n');
        return;
      }
      console.log(`\nSSD run ${result.run_id}: ${result.parent.ref} → ${result.model}`);
      console.log(`  samples kept ${result.filter.kept}/${result.filter.total}; ${result.train.steps} SFT steps, final loss ${result.train.final_loss.toFixed(4)}`);
      printBeforeAfter(result);
      console.log(`  run folder: ${result.run_dir}`);
    });
  });
}
