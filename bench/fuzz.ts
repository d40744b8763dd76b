/**
 * Longer fuzzing runs of the vault's binary/JSON parsers (the CI test, test/fuzz/parsers.test.ts, runs a few
 * thousand; this runs as many as asked). Prints, per target, how many inputs parsed, how many were rejected
 * with a UserError, the failures (any other exception, a slow call, memory growth) and the throughput.
 *
 *   npm run fuzz -- --iterations 100000 --seed 7 --target all
 *   node dist/bench/fuzz.js --iterations 100000 --seed 7 --target all   (the same, without the setup check)
 *   node dist/bench/fuzz.js --target gguf --seed 7 --repro 1234      replay one iteration, print its input
 *   options: --start N (first iteration), --messages (show the most frequent UserError messages),
 *            --out DIR (write each failing input to DIR/<target>-<seed>-<iteration>.bin)
 *
 * Exit status 1 when any failure was found.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../src/core/errors.js';
import { TARGET_NAMES, describeFailure, fuzzInput, makeTarget, runFuzz, type TargetName } from '../test/fuzz/mutate.js';

interface Args {
  iterations: number;
  seed: number;
  start: number;
  targets: TargetName[];
  repro: number | null;
  messages: boolean;
  out: string | null;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { iterations: 10000, seed: 1, start: 0, targets: [...TARGET_NAMES], repro: null, messages: false, out: null };
  const int = (flag: string, v: string | undefined) => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0) throw new UserError(`${flag} needs a non-negative integer, got ${JSON.stringify(v)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const v = argv[i + 1];
    switch (f) {
      case '--iterations': a.iterations = int(f, v); i++; break;
      case '--seed': a.seed = int(f, v); i++; break;
      case '--start': a.start = int(f, v); i++; break;
      case '--repro': a.repro = int(f, v); i++; break;
      case '--out': a.out = v ?? null; i++; break;
      case '--messages': a.messages = true; break;
      case '--target':
        if (v === 'all') a.targets = [...TARGET_NAMES];
        else if (TARGET_NAMES.includes(v as TargetName)) a.targets = [v as TargetName];
        else throw new UserError(`--target must be one of ${[...TARGET_NAMES, 'all'].join(', ')}`);
        i++;
        break;
      default:
        throw new UserError(`unknown option ${f}`);
    }
  }
  return a;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (args.repro !== null) {
    const name = args.targets.length === 1 ? args.targets[0]! : (() => { throw new UserError('--repro needs one --target'); })();
    const target = await makeTarget(name);
    try {
      const { data, ops } = fuzzInput(target, args.seed, args.repro);
      console.log(`${name} seed=${args.seed} iteration=${args.repro}: ${data.length} bytes; mutations: ${ops.join(' ')}`);
      console.log(`input (base64): ${Buffer.from(data).toString('base64')}`);
      try {
        const r = await target.run(data, args.repro);
        console.log('result: ok', typeof r === 'object' && r !== null ? Object.keys(r).join(',') : r);
      } catch (e) {
        console.log(e instanceof UserError ? `result: UserError: ${e.message}` : 'result: FAILURE');
        if (!(e instanceof UserError)) console.log(e);
        return e instanceof UserError ? 0 : 1;
      }
      return 0;
    } finally {
      target.close();
    }
  }

  let failures = 0;
  console.log(`target        iterations        ok  UserError  failures     it/s`);
  for (const name of args.targets) {
    const target = await makeTarget(name);
    try {
      const r = await runFuzz(target, { seed: args.seed, iterations: args.iterations, start: args.start, maxFailures: Infinity });
      failures += r.failures.length;
      const rate = r.iterations / (r.ms / 1000);
      console.log(
        `${name.padEnd(12)}${String(r.iterations).padStart(12)}${String(r.ok).padStart(10)}${String(r.userError).padStart(11)}` +
        `${String(r.failures.length).padStart(10)}${rate.toFixed(0).padStart(9)}`,
      );
      if (args.messages) {
        for (const [m, n] of [...r.messages].sort((x, y) => y[1] - x[1]).slice(0, 25)) console.log(`    ${String(n).padStart(7)}  ${m}`);
      }
      // Failures grouped by exception and the frame that threw it; the first few in full.
      const classes = new Map<string, number>();
      for (const f of r.failures) {
        const k = `${f.kind}: ${f.error.slice(0, 100)} ${f.stack.find((l) => !l.includes('(<anonymous>)')) ?? ''}`;
        classes.set(k, (classes.get(k) ?? 0) + 1);
      }
      for (const [k, n] of classes) console.log(`  ${String(n).padStart(7)} × ${k}`);
      r.failures.forEach((f, i) => {
        if (i < 10) console.log(`  FAIL ${describeFailure(f)}`);
        if (args.out) {
          mkdirSync(args.out, { recursive: true });
          const { data } = fuzzInput(target, f.seed, f.iteration);
          writeFileSync(join(args.out, `${f.target}-${f.seed}-${f.iteration}.bin`), data);
        }
      });
    } finally {
      target.close();
    }
  }
  return failures > 0 ? 1 : 0;
}

main().then(
  (code) => { process.exitCode = code; },
  (e) => {
    console.error(e instanceof UserError ? `error: ${e.message}` : e);
    process.exitCode = 2;
  },
);
