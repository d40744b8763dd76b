/**
 * Sandbox throughput on trivial programs (a tiny function + 5 asserts); not part of the test suite:
 *
 *     node --import tsx test/eval/sandbox-bench.ts [PROGRAMS=1000] [CONCURRENCY=2] [ROUNDS=1]
 *
 * Each round runs the same programs through runMany twice, alternating: batch mode (the default) and one
 * sandbox process per program (batchSize 1, the pre-batch path), and prints programs/s for both.
 */
import { batchStats, runMany, sandboxLevel } from '../../src/eval/sandbox.js';

const [n = 1000, concurrency = 2, rounds = 1] = process.argv.slice(2).map(Number);
const programs = Array.from({ length: n }, (_, i) =>
  [`def f(x):`, `    return x * 2 + ${i % 7}`, ...Array.from({ length: 5 }, (_, j) => `assert f(${j}) == ${j} * 2 + ${i % 7}`), ''].join('\n'),
);
console.log(sandboxLevel());
for (let round = 0; round < rounds; round++) {
  for (const batchSize of [undefined, 1]) {
    const t0 = Date.now();
    const rs = await runMany(programs, { concurrency, ...(batchSize ? { batchSize } : {}) });
    const s = (Date.now() - t0) / 1000;
    const bad = rs.filter((r) => r.status !== 'pass');
    console.log(
      `${batchSize === 1 ? 'one process per program' : 'batch mode             '}: ${n} programs, concurrency ${concurrency}: ` +
        `${s.toFixed(2)} s, ${(n / s).toFixed(1)} programs/s${bad.length ? ` (${bad.length} did not pass: ${bad[0]!.status} ${bad[0]!.note})` : ''}`,
    );
  }
}
console.log(`batches ${batchStats.batches}, broken ${batchStats.brokenBatches}, re-run ${batchStats.rerunPrograms}`);
