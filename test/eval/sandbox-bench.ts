/**
 * Throughput of the sandbox on trivial programs (a tiny function + 5 asserts), not part of the test suite:
 *
 *     node --import tsx test/eval/sandbox-bench.ts [PROGRAMS] [CONCURRENCY]
 *
 * Prints programs/s for runMany (batched) and, with --single, for the one-process-per-program path.
 */
import { runMany, runProgram, sandboxLevel } from '../../src/eval/sandbox.js';

const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const n = Number(args[0] ?? 400);
const concurrency = Number(args[1] ?? 2);
const programs = Array.from({ length: n }, (_, i) =>
  [
    `def f(x):`,
    `    return x * 2 + ${i % 7}`,
    ...Array.from({ length: 5 }, (_, j) => `assert f(${j}) == ${j} * 2 + ${i % 7}`),
    '',
  ].join('\n'),
);
console.log(sandboxLevel());
const t0 = Date.now();
const rs = await runMany(programs, { concurrency });
const s = (Date.now() - t0) / 1000;
const bad = rs.filter((r) => r.status !== 'pass');
console.log(`runMany: ${n} programs, concurrency ${concurrency}: ${s.toFixed(2)} s, ${(n / s).toFixed(1)} programs/s${bad.length ? `, ${bad.length} not passing: ${bad[0]!.status} ${bad[0]!.note}` : ''}`);
if (process.argv.includes('--single')) {
  const t1 = Date.now();
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) await runProgram(programs[next++]!);
  }));
  const s1 = (Date.now() - t1) / 1000;
  console.log(`runProgram (one process each): ${(n / s1).toFixed(1)} programs/s`);
}
