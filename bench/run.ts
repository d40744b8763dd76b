/**
 * `npm run bench`: engine sampling and training throughput on the benchmark models (bench/models.json), side
 * by side with Hugging Face `generate` (sampling) and TRL's SFTTrainer (training), same inputs, same device.
 *
 *   npm run bench                          full run (docs/benchmarks.md has the method and the figures)
 *   npm run bench -- --quick               a short smoke run (fewer repeats and steps)
 *   npm run bench -- --threads 1           torch CPU threads per process (default: torch's own default)
 *   npm run bench -- --models qwen3-20m    a subset of bench/models.json
 *   npm run bench -- --no-trl              skip the TRL side (no extra Python packages needed)
 *   npm run bench -- --workloads onpolicy  a subset of the workloads: sample, train, onpolicy, vault, serve
 *   npm run bench -- --vault-size-mb 1024  size of the vault workload's weight file (bench/vault-bench.ts)
 *   npm run bench -- --workloads serve     serving, sampling backends and GGUF export (bench/serve-bench.ts)
 *
 * The `onpolicy` workload times optimizer steps of the engine's onpolicy job against TRL's SDFTTrainer
 * (bench/bench_onpolicy.py; bench/gpu-onpolicy runs the same comparison at Qwen3-0.6B size on a GPU).
 *
 * Each measurement is its own Python process (bench/bench.py with the engine's interpreter), so one cannot
 * disturb the next and its memory figures are its own. TRL and the packages it needs beyond the engine's venv
 * are installed into bench/.pydeps (pinned in bench/requirements-trl.txt) and put on PYTHONPATH only for the
 * TRL runs. The table goes to stdout; everything, raw timings included, to bench/results/<timestamp>.json.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runServeBench, serveTable } from './serve-bench.js';
import { runVaultBench, vaultTable } from './vault-bench.js';

// dist/bench/run.js → the package root
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BENCH = join(ROOT, 'bench');
const PYDEPS = join(BENCH, '.pydeps');
// The TRL packages go into a folder named site-packages on purpose: `datasets` fingerprints its transforms
// with dill, and dill pickles a module *by value* (and fails on pyarrow types) when its file path is not under
// sys.prefix or a "site-packages" folder.
const PYDEPS_SITE = join(PYDEPS, 'site-packages');
const TRL_REQUIREMENTS = join(BENCH, 'requirements-trl.txt');

interface Options {
  quick: boolean;
  models: string[] | null;
  threads: number;
  device: string | null;
  dtype: string | null;
  trl: boolean;
  keep: boolean;
  workloads: Set<Workload>;
  onpolicyTeachers: string[];
  vaultSizeMb: number | null;
  serveModel: string;
  serveEngine: boolean;
}

type Workload = 'sample' | 'train' | 'onpolicy' | 'vault' | 'serve';
const WORKLOADS: Workload[] = ['sample', 'train', 'onpolicy', 'vault', 'serve'];

interface Plan {
  sampleWarmup: number;
  sampleRepeats: number;
  maxTokens: number;
  batches: number[];
  stopVariant: boolean;
  trainWarmupSteps: number;
  trainSteps: number;
  trainBatch: number;
  seqLen: number;
  trlNll: boolean;
  onpolicyBatch: number;
  onpolicyTokens: number;
  onpolicyPromptLen: number;
  onpolicyContextLen: number;
  onpolicyWarmupSteps: number;
  onpolicySteps: number;
  onpolicyLr: number;
}

type Result = Record<string, unknown> & { kind?: string; impl?: string; tokens_per_s?: number; peak_memory_bytes?: number };

interface Measurement {
  model: string;
  label: string;
  args: string[];
  trl: boolean;
  results: Result[];
  error?: string;
  seconds?: number;
}

const USAGE = `usage: npm run bench -- [--quick] [--models a,b] [--workloads a,b] [--threads N] [--device D] [--dtype T] [--no-trl] [--keep]

  --quick        short run: 1 warm-up + 1 timed sampling call, 1 + 2 training steps, no diagnostic variants
  --models a,b   models from bench/models.json (default: all)
  --workloads a,b  sample, train, onpolicy, vault, serve (default: all)
  --vault-size-mb N  the vault workload's file size (default 1024; 256 with --quick)
  --serve-model M    the serve workload's model from bench/models.json (default qwen3-20m)
  --no-serve-engine  the serve workload without the Python engine (llama.cpp and HTTP only)
  --onpolicy-teacher frozen,ema  teacher kinds for the onpolicy workload (default: frozen)
  --threads N    torch CPU threads in every benchmark process, and llama.cpp threads in the serve workload
                 (default: DISTILLERY_THREADS, else torch's default / every core for llama.cpp)
  --device D     auto (default) | cpu | cuda | cuda:N
  --dtype T      auto (default) | float32 | bfloat16
  --no-trl       skip the TRL side (and its package install)
  --keep         keep the temporary work folder (models, data, training outputs, logs)`;

function parseArgs(argv: string[]): Options {
  // DISTILLERY_THREADS is the product's own thread setting (src/engine/python.ts); --threads overrides it.
  const envThreads = Number(process.env.DISTILLERY_THREADS ?? '');
  const opts: Options = {
    quick: false, models: null, threads: Number.isInteger(envThreads) && envThreads > 0 ? envThreads : 0,
    device: null, dtype: null, trl: true, keep: false, workloads: new Set(WORKLOADS), onpolicyTeachers: ['frozen'],
    vaultSizeMb: null, serveModel: 'qwen3-20m', serveEngine: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    switch (arg) {
      case '--quick': opts.quick = true; break;
      case '--models': opts.models = value().split(',').filter(Boolean); break;
      case '--workloads': {
        const picked = value().split(',').filter(Boolean);
        for (const w of picked) if (!(WORKLOADS as string[]).includes(w)) throw new Error(`unknown workload ${w}; expected ${WORKLOADS.join(', ')}`);
        opts.workloads = new Set(picked as Workload[]);
        break;
      }
      case '--onpolicy-teacher': {
        const picked = value().split(',').filter(Boolean);
        for (const t of picked) if (t !== 'frozen' && t !== 'ema') throw new Error(`unknown teacher ${t}; expected frozen or ema`);
        opts.onpolicyTeachers = picked;
        break;
      }
      case '--vault-size-mb': {
        const n = Number(value());
        if (!Number.isInteger(n) || n < 1) throw new Error('--vault-size-mb must be a positive integer');
        opts.vaultSizeMb = n;
        break;
      }
      case '--serve-model': opts.serveModel = value(); break;
      case '--no-serve-engine': opts.serveEngine = false; break;
      case '--threads': {
        const n = Number(value());
        if (!Number.isInteger(n) || n < 0) throw new Error('--threads must be a non-negative integer');
        opts.threads = n;
        break;
      }
      case '--device': opts.device = value(); break;
      case '--dtype': opts.dtype = value(); break;
      case '--no-trl': opts.trl = false; break;
      case '--keep': opts.keep = true; break;
      case '-h': case '--help': console.log(USAGE); process.exit(0);
      default: throw new Error(`unknown option ${arg}\n${USAGE}`);
    }
  }
  return opts;
}

function planFor(opts: Options): Plan {
  // On-policy step: 8 prompts × 1 rollout of exactly 64 tokens; student prompt 32 tokens, teacher prompt
  // 32 + 2 + 64 = 98 tokens (the student prompt, "\n\n", a 64-character demonstration).
  const onpolicy = { onpolicyBatch: 8, onpolicyTokens: 64, onpolicyPromptLen: 32, onpolicyContextLen: 64, onpolicyLr: 1e-5 };
  return opts.quick
    ? { sampleWarmup: 1, sampleRepeats: 1, maxTokens: 64, batches: [1, 32], stopVariant: false,
        trainWarmupSteps: 1, trainSteps: 2, trainBatch: 16, seqLen: 128, trlNll: false,
        ...onpolicy, onpolicyWarmupSteps: 1, onpolicySteps: 2 }
    : { sampleWarmup: 1, sampleRepeats: 5, maxTokens: 64, batches: [1, 32], stopVariant: true,
        trainWarmupSteps: 2, trainSteps: 8, trainBatch: 16, seqLen: 128, trlNll: true,
        ...onpolicy, onpolicyWarmupSteps: 2, onpolicySteps: 6 };
}

function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

function python(): string {
  const py = process.env.DISTILLERY_PYTHON || join(ROOT, 'engine', '.venv', 'bin', 'python');
  if (!process.env.DISTILLERY_PYTHON && !existsSync(py)) {
    throw new Error(`the engine's Python is missing (${py}); run \`npm run setup\` or set DISTILLERY_PYTHON`);
  }
  return py;
}

interface Run { code: number | null; stdout: string; stderrTail: string }

/** Run a command; stdout is collected, stderr goes to `logFile` (and its tail is kept for error messages). */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, logFile: string): Promise<Run> {
  return new Promise((resolvePromise, reject) => {
    const log = createWriteStream(logFile, { flags: 'a' });
    log.write(`$ ${cmd} ${args.join(' ')}\n`);
    const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let tail = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk; log.write(chunk); });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      log.write(chunk);
      tail = (tail + chunk).slice(-4000);
    });
    child.on('error', reject);
    child.on('close', (code) => log.end(() => resolvePromise({ code, stdout, stderrTail: tail })));
  });
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Install the pinned TRL packages into bench/.pydeps unless the requirements file is unchanged since. */
async function ensureTrlDeps(py: string, logFile: string): Promise<void> {
  const stampFile = join(PYDEPS, '.stamp');
  const stamp = sha256(readFileSync(TRL_REQUIREMENTS, 'utf8'));
  const installed = existsSync(join(PYDEPS_SITE, 'trl')) && existsSync(stampFile) && readFileSync(stampFile, 'utf8').trim() === stamp;
  if (installed) return;
  log(`installing the TRL side's packages into bench/.pydeps (${TRL_REQUIREMENTS.slice(ROOT.length + 1)})`);
  rmSync(PYDEPS, { recursive: true, force: true });
  const env = {
    ...process.env,
    // No retries by default: on a machine with a local index an unreachable public index must fail fast.
    PIP_RETRIES: process.env.PIP_RETRIES ?? '0',
    PIP_DEFAULT_TIMEOUT: process.env.PIP_DEFAULT_TIMEOUT ?? '5',
    PIP_DISABLE_PIP_VERSION_CHECK: '1',
  };
  const res = await run(py, ['-m', 'pip', 'install', '--quiet', '--no-deps', '--target', PYDEPS_SITE, '-r', TRL_REQUIREMENTS], env, logFile);
  if (res.code !== 0) {
    throw new Error(`could not install the TRL packages (pip exit ${res.code}):\n${res.stderrTail}\n` +
      'pass --no-trl to benchmark the engine alone');
  }
  writeFileSync(stampFile, `${stamp}\n`);
}

function pythonEnv(work: string, trl: boolean, threads: number): NodeJS.ProcessEnv {
  const engine = join(ROOT, 'engine');
  const paths = trl ? [PYDEPS_SITE, engine] : [engine];
  return {
    ...process.env,
    // As the product does for DISTILLERY_THREADS; bench.py also calls torch.set_num_threads.
    ...(threads ? { OMP_NUM_THREADS: String(threads), MKL_NUM_THREADS: String(threads) } : {}),
    PYTHONPATH: [...paths, ...(process.env.PYTHONPATH ? [process.env.PYTHONPATH] : [])].join(':'),
    PYTHONUNBUFFERED: '1',
    PYTHONDONTWRITEBYTECODE: '1',
    HF_HUB_OFFLINE: '1',
    HF_DATASETS_OFFLINE: '1',
    TRANSFORMERS_OFFLINE: '1',
    HF_HOME: join(work, 'hf-home'),
    TOKENIZERS_PARALLELISM: 'false',
  };
}

function parseResults(stdout: string): Result[] {
  return stdout
    .split('\n')
    .filter((line) => line.startsWith('BENCH_RESULT '))
    .map((line) => JSON.parse(line.slice('BENCH_RESULT '.length)) as Result);
}

// ------------------------------------------------------------------------------------------------ table

const MiB = 1024 * 1024;

function fmtRate(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return '—';
  return v >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(1);
}

function fmtMem(v: number | undefined): string {
  return v === undefined ? '—' : `${Math.round(v / MiB).toLocaleString('en-US')} MiB`;
}

interface Row {
  model: string;
  workload: string;
  reference: string;
  ours?: Result;
  ref?: Result;
  ratio?: number;
}

function find(all: Measurement[], model: string, kind: string, impl: string, batch?: number, teacher?: string): Result | undefined {
  for (const m of all) {
    if (m.model !== model) continue;
    for (const r of m.results) {
      if (r.kind === kind && r.impl === impl && (batch === undefined || r.batch === batch) &&
        (teacher === undefined || r.teacher === teacher)) return r;
    }
  }
  return undefined;
}

function summaryRows(all: Measurement[], models: string[], plan: Plan, opts: Options): Row[] {
  const rows: Row[] = [];
  const add = (model: string, workload: string, reference: string, ours?: Result, ref?: Result): void => {
    const ratio = ours?.tokens_per_s !== undefined && ref?.tokens_per_s ? ours.tokens_per_s / ref.tokens_per_s : undefined;
    rows.push({ model, workload, reference, ours, ref, ratio });
  };
  for (const model of models) {
    if (opts.workloads.has('sample')) {
      for (const b of plan.batches) {
        add(model, `sample bs=${b}, ${plan.maxTokens} new tokens`, 'HF generate',
          find(all, model, 'sample', 'engine', b), find(all, model, 'sample', 'hf', b));
      }
    }
    if (opts.workloads.has('sample') && plan.stopVariant) {
      const b = Math.max(...plan.batches);
      add(model, `sample bs=${b} + stop-string check`, 'HF generate (no stop)',
        find(all, model, 'sample', 'engine-stop', b), find(all, model, 'sample', 'hf', b));
    }
    if (opts.workloads.has('train')) {
      const train = `train bs=${plan.trainBatch}×${plan.seqLen}, full FT`;
      add(model, train, 'TRL SFTTrainer', find(all, model, 'train', 'engine'), find(all, model, 'train', 'trl'));
      if (plan.trlNll) {
        add(model, train, 'TRL, loss_type=nll', find(all, model, 'train', 'engine'), find(all, model, 'train', 'trl-nll'));
      }
    }
    if (opts.workloads.has('onpolicy')) {
      for (const teacher of opts.onpolicyTeachers) {
        add(model, `on-policy step ${plan.onpolicyBatch}×${plan.onpolicyTokens}, ${teacher} teacher`, 'TRL SDFTTrainer',
          find(all, model, 'onpolicy', 'ours', undefined, teacher), find(all, model, 'onpolicy', 'trl', undefined, teacher));
      }
    }
  }
  return rows;
}

/** The on-policy steps in detail: median step, its rollout part and the rest, peak and peak over the baseline. */
function onpolicyTable(all: Measurement[], models: string[], opts: Options): string {
  const header = ['model', 'teacher', 'implementation', 'step s', 'rollout s', 'rest s', 'tok/s', 'peak', 'peak − baseline', 'ours/TRL'];
  const body: string[][] = [];
  const sec = (v: unknown): string => (typeof v === 'number' ? v.toFixed(3) : '—');
  for (const model of models) {
    for (const teacher of opts.onpolicyTeachers) {
      const ours = find(all, model, 'onpolicy', 'ours', undefined, teacher);
      const ref = find(all, model, 'onpolicy', 'trl', undefined, teacher);
      for (const [name, r] of [['engine onpolicy job', ours], ['TRL SDFTTrainer', ref]] as const) {
        if (!r) continue;
        const ratio = name === 'engine onpolicy job' && ours?.tokens_per_s && ref?.tokens_per_s
          ? `${(ours.tokens_per_s / ref.tokens_per_s).toFixed(2)}×` : '';
        body.push([model, teacher, name, sec(r.step_seconds_median), sec(r.rollout_seconds_median), sec(r.train_seconds_median),
          fmtRate(r.tokens_per_s), fmtMem(r.peak_memory_bytes), fmtMem(r.peak_memory_delta_bytes as number | undefined), ratio]);
      }
    }
  }
  if (!body.length) return '';
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const numeric = new Set([3, 4, 5, 6, 7, 8, 9]);
  const line = (cells: string[]): string =>
    cells.map((c, i) => (numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

function table(rows: Row[]): string {
  const header = ['model', 'workload', 'engine tok/s', 'reference', 'ref tok/s', 'engine/ref', 'engine peak', 'ref peak'];
  const body = rows.map((r) => [
    r.model, r.workload, fmtRate(r.ours?.tokens_per_s), r.reference, fmtRate(r.ref?.tokens_per_s),
    r.ratio === undefined ? '—' : `${r.ratio.toFixed(2)}×`, fmtMem(r.ours?.peak_memory_bytes), fmtMem(r.ref?.peak_memory_bytes),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const numeric = new Set([2, 4, 5, 6, 7]);
  const line = (cells: string[]): string =>
    cells.map((c, i) => (numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

// ------------------------------------------------------------------------------------------------ main

async function main(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  // The vault workload needs no Python: run it first, and alone when it is the only one asked for.
  const vault = opts.workloads.has('vault')
    ? await runVaultBench({ sizeMb: opts.vaultSizeMb ?? (opts.quick ? 256 : 1024), repeats: opts.quick ? 1 : 3 }, log)
    : null;
  if (vault && opts.workloads.size === 1) {
    const resultsDir = join(BENCH, 'results');
    mkdirSync(resultsDir, { recursive: true });
    const outFile = join(resultsDir, `${new Date().toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-')}-vault.json`);
    writeFileSync(outFile, `${JSON.stringify({ command: `npm run bench -- ${process.argv.slice(2).join(' ')}`, loadavg: loadavg(), vault }, null, 2)}\n`);
    console.log(`\n${vaultTable(vault)}\n\nresults: ${outFile.slice(ROOT.length + 1)}`);
    return 0;
  }
  // The serve workload (node-llama-cpp, the server, the samplers, GGUF export) runs in this process and its
  // children; it needs the engine's Python only to build its models (and for its engine-backend rows).
  const serveStarted = new Date();
  const serve = opts.workloads.has('serve')
    ? await runServeBench({ quick: opts.quick, threads: opts.threads, model: opts.serveModel, engine: opts.serveEngine,
      catalog: join(BENCH, 'models.json') }, log)
    : null;
  if (serve && opts.workloads.size === 1) {
    const resultsDir = join(BENCH, 'results');
    mkdirSync(resultsDir, { recursive: true });
    const outFile = join(resultsDir, `${serveStarted.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-')}-serve.json`);
    writeFileSync(outFile, `${JSON.stringify({ command: `npm run bench -- ${process.argv.slice(2).join(' ')}`, started: serveStarted.toISOString(),
      loadavg: loadavg(), serve }, null, 2)}\n`);
    console.log(`\n${serveTable(serve)}\n\nresults: ${outFile.slice(ROOT.length + 1)} (${serve.seconds.toFixed(0)} s)`);
    return serve.errors.length ? 1 : 0;
  }
  const plan = planFor(opts);
  const py = python();
  const started = new Date();
  const stampName = started.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
  const resultsDir = join(BENCH, 'results');
  mkdirSync(resultsDir, { recursive: true });
  const logFile = join(resultsDir, `${stampName}.log`);
  const work = mkdtempSync(join(tmpdir(), 'distillery-bench-'));
  const catalog = JSON.parse(readFileSync(join(BENCH, 'models.json'), 'utf8')) as Record<string, unknown>;
  const models = opts.models ?? Object.keys(catalog);
  for (const m of models) if (!(m in catalog)) throw new Error(`unknown model ${m}; bench/models.json has ${Object.keys(catalog).join(', ')}`);

  if (opts.trl) await ensureTrlDeps(py, logFile);

  const common = [
    ...(opts.device ? ['--device', opts.device] : []),
    ...(opts.dtype ? ['--dtype', opts.dtype] : []),
    ...(opts.threads ? ['--threads', String(opts.threads)] : []),
  ];
  const script = join(BENCH, 'bench.py');
  const onpolicyScript = join(BENCH, 'bench_onpolicy.py');
  const step = async (model: string, label: string, args: string[], trl = false, file = script): Promise<Measurement> => {
    const t0 = Date.now();
    log(`${model}: ${label} …`);
    const res = await run(py, [file, ...common, ...args], pythonEnv(work, trl, opts.threads), logFile);
    const m: Measurement = { model, label, args, trl, results: parseResults(res.stdout), seconds: (Date.now() - t0) / 1000 };
    if (res.code !== 0 || m.results.length === 0) {
      m.error = `exit ${res.code}: ${res.stderrTail.trim().split('\n').slice(-6).join('\n')}`;
      log(`${model}: ${label} FAILED (${m.error})`);
    } else {
      const rates = m.results.filter((r) => r.tokens_per_s !== undefined)
        .map((r) => `${r.impl} ${fmtRate(r.tokens_per_s)}`).join(', ');
      log(`${model}: ${label} done in ${m.seconds!.toFixed(0)} s${rates ? ` (tok/s: ${rates})` : ''}`);
    }
    return m;
  };

  const info = await step('-', 'environment', ['info']);
  const host = info.results[0] ?? {};
  log(`device ${String(host.device)}${host.gpu ? ` (${String(host.gpu)})` : ''}, torch ${String(host.torch)}, ` +
    `transformers ${String(host.transformers)}, ${String(host.threads)} torch threads, load average ${loadavg()[0]!.toFixed(2)}`);

  const measurements: Measurement[] = [info];
  const meta: Record<string, Result> = {};
  for (const model of models) {
    const dir = join(work, model);
    if (opts.workloads.has('onpolicy')) {
      const odir = join(work, `${model}-onpolicy`);
      const prep = await step(model, 'on-policy: prepare model and prompts', ['prepare', '--model', model,
        '--models', join(BENCH, 'models.json'), '--work', odir, '--prompt-len', String(plan.onpolicyPromptLen),
        '--context-len', String(plan.onpolicyContextLen), '--max-tokens', String(plan.onpolicyTokens),
        '--prompts', String(plan.onpolicyBatch * (plan.onpolicyWarmupSteps + plan.onpolicySteps))], false, onpolicyScript);
      measurements.push(prep);
      if (!prep.error) {
        meta[model] = prep.results[0]!;
        for (const teacher of opts.onpolicyTeachers) {
          const args = ['step', '--work', odir, '--batch', String(plan.onpolicyBatch), '--max-tokens', String(plan.onpolicyTokens),
            '--warmup-steps', String(plan.onpolicyWarmupSteps), '--steps', String(plan.onpolicySteps),
            '--lr', String(plan.onpolicyLr), '--teacher', teacher];
          measurements.push(await step(model, `on-policy step: engine onpolicy job, ${teacher} teacher`, [...args, '--impl', 'ours'], false, onpolicyScript));
          if (opts.trl) {
            measurements.push(await step(model, `on-policy step: TRL SDFTTrainer, ${teacher} teacher`, [...args, '--impl', 'trl'], true, onpolicyScript));
          }
        }
      }
    }
    if (!opts.workloads.has('sample') && !opts.workloads.has('train')) continue;
    const examples = Math.max(256, plan.trainBatch * (plan.trainWarmupSteps + plan.trainSteps));
    const prep = await step(model, 'prepare model and data', ['prepare', '--model', model, '--models', join(BENCH, 'models.json'),
      '--work', dir, '--seq-len', String(plan.seqLen), '--prompt-len', String(plan.seqLen / 2),
      '--prompts', String(Math.max(...plan.batches)), '--examples', String(examples)]);
    measurements.push(prep);
    if (prep.error) continue;
    meta[model] = prep.results[0]!;
    for (const b of opts.workloads.has('sample') ? plan.batches : []) {
      const impls = ['engine', ...(plan.stopVariant && b === Math.max(...plan.batches) ? ['engine-stop'] : []), 'hf'];
      measurements.push(await step(model, `sampling bs=${b} (${impls.join(', ')}, interleaved)`, ['sample', '--work', dir,
        '--impl', impls.join(','), '--batch', String(b), '--max-tokens', String(plan.maxTokens),
        '--warmup', String(plan.sampleWarmup), '--repeats', String(plan.sampleRepeats)]));
    }
    const trainArgs = ['--work', dir, '--batch', String(plan.trainBatch), '--warmup-steps', String(plan.trainWarmupSteps),
      '--steps', String(plan.trainSteps)];
    if (!opts.workloads.has('train')) continue;
    measurements.push(await step(model, 'training: engine train job', ['train', '--impl', 'engine', ...trainArgs]));
    if (opts.trl) {
      measurements.push(await step(model, 'training: TRL SFTTrainer', ['train', '--impl', 'trl', ...trainArgs], true));
      if (plan.trlNll) {
        measurements.push(await step(model, 'training: TRL SFTTrainer, loss_type=nll', ['train', '--impl', 'trl-nll', ...trainArgs], true));
      }
    }
  }

  const rows = summaryRows(measurements, models, plan, opts);
  const finished = new Date();
  const report = {
    started: started.toISOString(),
    finished: finished.toISOString(),
    seconds: (finished.getTime() - started.getTime()) / 1000,
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    options: { ...opts, workloads: [...opts.workloads] },
    plan,
    host,
    vault,
    serve,
    models: meta,
    summary: rows.map((r) => ({
      model: r.model, workload: r.workload, reference: r.reference,
      engine_tokens_per_s: r.ours?.tokens_per_s ?? null, reference_tokens_per_s: r.ref?.tokens_per_s ?? null,
      ratio: r.ratio ?? null, engine_peak_memory_bytes: r.ours?.peak_memory_bytes ?? null,
      reference_peak_memory_bytes: r.ref?.peak_memory_bytes ?? null,
    })),
    measurements,
  };
  const outFile = join(resultsDir, `${stampName}.json`);
  writeFileSync(outFile, `${JSON.stringify(report, null, 2)}\n`);

  console.log('');
  for (const [name, m] of Object.entries(meta)) {
    console.log(`${name}: ${String(m.model_type)}, ${Number(m.parameters).toLocaleString('en-US')} parameters, vocab ${String(m.vocab_size)}`);
  }
  console.log(`device: ${String(host.device)}${host.gpu ? ` (${String(host.gpu)})` : ''}, ${String(host.threads)} torch threads; ` +
    'tokens/s are medians (sampling: generated tokens per call; training: batch×seq tokens per optimizer step); ' +
    `peak = ${host.device === 'cpu' ? 'highest RSS' : 'torch.cuda.max_memory_allocated'} during the timed part\n`);
  console.log(table(rows));
  const onpolicy = opts.workloads.has('onpolicy') ? onpolicyTable(measurements, models, opts) : '';
  if (onpolicy) {
    console.log(`\non-policy steps (${plan.onpolicyBatch} prompts × 1 rollout of exactly ${plan.onpolicyTokens} tokens, ` +
      `full-vocabulary forward KL; medians of ${plan.onpolicySteps} steps after ${plan.onpolicyWarmupSteps} warm-up; ` +
      'tok/s = rollout tokens per step / step time; baseline = memory after imports, before the model loads):\n');
    console.log(onpolicy);
  }
  if (vault) console.log(`\n${vaultTable(vault)}`);
  if (serve) console.log(`\n${serveTable(serve)}`);
  const loads = measurements.flatMap((m) => m.results.flatMap((r) => (Array.isArray(r.loadavg_1m) ? (r.loadavg_1m as number[]) : [])));
  if (loads.length) {
    console.log(`\n1-minute load average during the timed parts: ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)} ` +
      `on ${String(host.cpu_count)} CPUs${Math.max(...loads) > Number(host.cpu_count) ? ' (other work was running: expect noise)' : ''}`);
  }
  console.log(`\nresults: ${outFile.slice(ROOT.length + 1)}  (log: ${logFile.slice(ROOT.length + 1)}; ${report.seconds.toFixed(0)} s)`);
  if (opts.keep) console.log(`work folder kept: ${work}`);
  else rmSync(work, { recursive: true, force: true });

  const failed = measurements.filter((m) => m.error);
  if (serve?.errors.length) console.error(`\nserve workload: ${serve.errors.length} part(s) failed: ${serve.errors.join('; ')}`);
  if (failed.length || serve?.errors.length) {
    console.error(`\n${failed.length} measurement(s) failed: ${failed.map((m) => `${m.model} ${m.label}`).join('; ')} (see the log)`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    console.error(`bench: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
