/**
 * Hostile JavaScript programs in the sandbox (node): each is contained and reported with the right status, and
 * the harness survives and goes on running other programs. Also stdin for Python and JavaScript programs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBatch, runMany, runProgram, sandboxInfo, sandboxLevel, type ProgramSpec } from '../../src/eval/sandbox.js';

const info = sandboxInfo();
const noPython = info.python === null && 'no python3';
const LIMITS = { cpuSeconds: 3, wallMs: 8000, memoryBytes: 512 * 1024 ** 2 };
const js = (code: string, stdin?: string): ProgramSpec => ({ code, language: 'javascript', ...(stdin !== undefined ? { stdin } : {}) });

function leftover(marker: string): string[] {
  const out = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.includes(marker) && !l.includes('ps -eo'));
}

test('the level line names the node used for JavaScript and its memory limits', { skip: noPython }, () => {
  assert.match(sandboxLevel(), /; javascript: \S+ \(as 2 GiB, heap 768 MiB\)$/);
});

test('stdin reaches Python and JavaScript programs, single and batched', { skip: noPython, timeout: 60_000 }, async () => {
  const programs = [
    { code: 'import sys\ndata = sys.stdin.read()\nprint(len(data), data.split()[-1])\n', stdin: 'a b\nc d\n' },
    js("const s = require('node:fs').readFileSync(0, 'utf8'); console.log(s.trim().split('\\n').reverse().join(','));", '1\n2\n3\n'),
    'import sys\nprint(repr(sys.stdin.read()))\n', // no stdin given: /dev/null
    js("console.log(JSON.stringify(require('node:fs').readFileSync(0, 'utf8')))"),
  ];
  const want = ['8 d\n', '3,2,1\n', "''\n", '""\n'];
  for (const r of await runBatch(programs, LIMITS)) assert.equal(r.status, 'pass', r.stderr);
  assert.deepEqual((await runBatch(programs, LIMITS)).map((r) => r.stdout), want);
  for (let i = 0; i < programs.length; i++) {
    const r = await runProgram(programs[i]!, LIMITS);
    assert.equal(r.stdout, want[i], r.stderr);
  }
});

test('JS pass/fail rules: throw and node:assert fail, console.assert fails, early exit fails, rejection fails', { skip: noPython, timeout: 60_000 }, async () => {
  const cases: [ProgramSpec, string, RegExp?][] = [
    [js("const assert = require('node:assert'); assert.deepEqual([1, 2], [1, 2]); console.log('ok')"), 'pass'],
    [js("const assert = require('node:assert'); assert.strictEqual(1, 2)"), 'fail', /AssertionError/],
    [js("throw new Error('boom')"), 'fail', /boom/],
    [js("console.assert(1 === 2, 'one is not two')"), 'fail', /console\.assert failed: one is not two/],
    [js('process.exit(0); console.log("never")'), 'fail', /exited before its end/],
    [js("Promise.reject(new Error('async boom'))"), 'fail', /async boom/],
    [js('syntax error here'), 'fail', /SyntaxError/],
  ];
  const rs = await runMany(cases.map((c) => c[0]), { concurrency: 2, limits: LIMITS });
  rs.forEach((r, i) => {
    assert.equal(r.status, cases[i]![1], `case ${i}: ${r.note} ${r.stderr}`);
    if (cases[i]![2]) assert.match(r.stderr + (r.note ?? ''), cases[i]![2]!, `case ${i}`);
  });
});

test('hostile JavaScript programs are contained and reported, and the harness survives', { skip: noPython, timeout: 180_000 }, async (t) => {
  const marker = `4242.${process.pid}`;
  const outside = mkdtempSync(join(tmpdir(), 'distillery-js-outside-'));
  const secretDir = mkdtempSync(join(tmpdir(), 'distillery-js-home-'));
  chmodSync(secretDir, 0o700);
  writeFileSync(join(secretDir, 'secret.txt'), 'TOKEN', { mode: 0o600 });
  const server = createServer((s) => s.destroy());
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const port = (server.address() as { port: number }).port;
  let connections = 0;
  server.on('connection', () => connections++);
  try {
    const programs: [string, ProgramSpec, (r: Awaited<ReturnType<typeof runProgram>>) => void][] = [
      ['infinite loop', js('for (;;) {}'), (r) => assert.equal(r.status, 'timeout')],
      ['memory bomb', js('const a = []; for (;;) a.push(new Array(1e6).fill(1));'), (r) => assert.equal(r.status, 'memory')],
      ['buffer bomb', js('const a = []; for (;;) a.push(Buffer.alloc(64 * 1024 * 1024, 1));'), (r) => assert.equal(r.status, 'memory')],
      [
        'fork bomb',
        js(`const cp = require('node:child_process'); for (;;) { try { cp.spawn('/bin/sleep', ['${marker}'], { stdio: 'ignore' }); } catch (e) {} }`),
        (r) => assert.ok(r.status === 'timeout' || r.status === 'fail' || r.status === 'memory', r.status),
      ],
      [
        'write outside the temp dir',
        js(`require('node:fs').writeFileSync(${JSON.stringify(join(outside, 'pwned.txt'))}, 'x'); console.log('wrote')`),
        (r) => {
          if (info.dropUid !== null) assert.equal(r.status, 'fail', 'as nobody the write is refused');
        },
      ],
      [
        'read the home dir',
        js(`console.log(require('node:fs').readFileSync(${JSON.stringify(join(secretDir, 'secret.txt'))}, 'utf8'))`),
        (r) => {
          if (info.dropUid !== null) {
            assert.equal(r.status, 'fail');
            assert.doesNotMatch(r.stdout, /TOKEN/);
          }
        },
      ],
      [
        'open a socket',
        js(`const s = require('node:net').connect(${port}, '127.0.0.1'); s.on('connect', () => { console.log('connected'); process.exit(0); }); s.on('error', (e) => { throw e; });`),
        (r) => {
          if (info.networkNamespace) {
            assert.equal(r.status, 'fail');
            assert.doesNotMatch(r.stdout, /connected/);
          }
        },
      ],
      [
        'kill the parent',
        js(`for (const p of [process.ppid, ${process.pid}]) { try { process.kill(p, 'SIGKILL'); } catch (e) {} } try { process.kill(-1, 'SIGKILL'); } catch (e) {} setTimeout(() => {}, 200);`),
        () => {},
      ],
      ['huge output', js("const s = 'x'.repeat(65536); for (;;) process.stdout.write(s);"), (r) => {
        // Killed at the output cap (fail), or out of memory first when node queues writes to a full pipe faster
        // than they drain: either way contained, and never a pass.
        assert.ok(r.status === 'fail' || r.status === 'timeout' || r.status === 'memory', r.status);
        assert.ok(r.stdout.length <= 64 * 1024 + 100);
      }],
      ['a good program after them all', js("console.log('still here')"), (r) => assert.equal(r.stdout, 'still here\n')],
    ];
    const batched = await runMany(programs.map((p) => p[1]), { concurrency: 2, limits: LIMITS, batchSize: programs.length });
    batched.forEach((r, i) => {
      t.diagnostic(`batch: ${programs[i]![0]}: ${r.status}${r.note ? ` (${r.note})` : ''}`);
      programs[i]![2](r);
    });
    for (const name of ['infinite loop', 'fork bomb', 'kill the parent', 'huge output', 'a good program after them all']) {
      const p = programs.find((x) => x[0] === name)!;
      const r = await runProgram(p[1], LIMITS);
      t.diagnostic(`single: ${name}: ${r.status}${r.note ? ` (${r.note})` : ''}`);
      p[2](r);
    }
    if (info.dropUid !== null) assert.equal(existsSync(join(outside, 'pwned.txt')), false);
    if (info.networkNamespace) assert.equal(connections, 0);
    // Nothing the fork bomb started is still running (the batch kills its namespace / process groups).
    await new Promise((res) => setTimeout(res, 300));
    assert.deepEqual(leftover(marker), []);
  } finally {
    server.close();
    rmSync(outside, { recursive: true, force: true });
    rmSync(secretDir, { recursive: true, force: true });
  }
});
