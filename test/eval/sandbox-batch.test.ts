/**
 * Batch mode (runBatch; runMany uses it): the hostile programs of sandbox.test.ts again, each run in the middle
 * of a batch between two ordinary programs, plus what is specific to batches — a program that kills the
 * supervisor, leftover globals and monkeypatches, timeouts, leftover processes, result order.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:net';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { runBatch, runMany, runProgram, sandboxInfo, type SandboxLimits, type SandboxResult } from '../../src/eval/sandbox.js';
import { processesWith, TEMP_DIR_PROGRAM } from './sandbox-helpers.js';

const info = sandboxInfo();
const hasPython = info.python !== null;
const skip = !hasPython && 'no python3';

const BEFORE = 'x = 1\nassert x == 1\nprint("before")\n';
// Checks that nothing of the program before it is visible: globals, monkeypatches, cwd, environment.
const AFTER = [
  'import os, builtins, sys',
  'assert "x" not in globals() and "leftover" not in globals(), sorted(globals())',
  'assert len([1, 2]) == 2 and builtins.print is print',
  'assert os.getcwd() == os.environ["HOME"] == os.environ["TMPDIR"] and "distillery-sbx-" in os.getcwd()',
  'assert sorted(os.listdir(".")) == ["program.py"], os.listdir(".")',
  'assert "LEFTOVER" not in os.environ',
  'print("after")',
].join('\n');

/** Runs `program` as the middle of a three-program batch and checks that its neighbours were unaffected. */
async function inBatch(program: string, limits?: Partial<SandboxLimits>): Promise<SandboxResult> {
  const [before, r, after] = await runBatch([BEFORE, program, AFTER], limits);
  assert.equal(before!.status, 'pass', `first program: ${before!.note} ${before!.stderr}`);
  assert.equal(before!.stdout, 'before\n');
  assert.equal(after!.status, 'pass', `last program: ${after!.note} ${after!.stderr}`);
  assert.equal(after!.stdout, 'after\n');
  return r!;
}

// Fixtures run as their own Node processes: from source under tsx, or compiled beside this file in dist/.
const fromSource = import.meta.url.endsWith('.ts');
const loader = fromSource ? ['--import', 'tsx'] : [];
function fixturePath(name: string): string {
  return fileURLToPath(new URL(`./fixtures/${name}${fromSource ? '.ts' : '.js'}`, import.meta.url));
}

test('batch: pass, fail, syntax error and tracebacks as in single mode', { skip }, async () => {
  const [ok, bad, syntax] = await runBatch(['def f(x):\n    return x + 1\n\nassert f(1) == 2\nprint("fine")\n', 'def f(x):\n    return x\n\nassert f(1) == 2\n', 'def f(:\n']);
  assert.equal(ok!.status, 'pass', ok!.stderr + ok!.note);
  assert.equal(ok!.exitCode, 0);
  assert.equal(ok!.stdout, 'fine\n');
  assert.equal(bad!.status, 'fail');
  assert.equal(bad!.exitCode, 1);
  assert.match(bad!.stderr, /AssertionError/);
  assert.match(bad!.stderr, /program\.py", line 4/);
  assert.doesNotMatch(bad!.stderr, /run_program|child|BATCH/);
  assert.equal(syntax!.status, 'fail');
  assert.match(syntax!.stderr, /SyntaxError/);
});

test('batch: exiting before the end is a failure', { skip }, async () => {
  const [exit0, quit, hard] = await runBatch(['import sys\nsys.exit(0)\nassert False\n', 'exit()\nassert False\n', 'import os\nos._exit(0)\nassert False\n']);
  assert.equal(exit0!.status, 'fail');
  assert.match(exit0!.note ?? '', /SystemExit\(0\)/);
  assert.equal(quit!.status, 'fail');
  assert.equal(hard!.status, 'fail');
  assert.match(hard!.note ?? '', /os\._exit/);
});

test('batch: globals and monkeypatches do not reach the next program', { skip }, async () => {
  const r = await inBatch(
    [
      'import builtins, os, sys, json',
      'builtins.len = None',
      'builtins.print = None',
      'leftover = 1',
      'sys.modules["json"] = None',
      'os.environ["LEFTOVER"] = "1"',
      'open("stray.txt", "w").write("x")',
      'os.chdir("/")',
    ].join('\n'),
  );
  assert.equal(r.status, 'pass', r.stderr);
});

test('batch: an infinite loop times out without delaying the others by more than its limit', { skip }, async () => {
  const marker = `distillery-test-${randomBytes(6).toString('hex')}`;
  const loop = [
    'import os, subprocess, sys',
    `subprocess.Popen([sys.executable, '-c', 'import os, time\\nif os.fork() == 0:\\n    time.sleep(300)\\ntime.sleep(300)', '${marker}'])`,
    'while True:',
    '    pass',
  ].join('\n');
  const started = Date.now();
  const rs = await runBatch(['pass\n', loop, 'pass\n', loop.replace('while True', 'while 1'), 'pass\n'], { wallMs: 1000 });
  const took = Date.now() - started;
  assert.deepEqual(rs.map((r) => r.status), ['pass', 'timeout', 'pass', 'timeout', 'pass']);
  assert.match(rs[1]!.note ?? '', /wall time/);
  for (const i of [1, 3]) assert.ok(rs[i]!.durationMs >= 950 && rs[i]!.durationMs < 2000, `program ${i} took ${rs[i]!.durationMs} ms`);
  for (const i of [0, 2, 4]) assert.ok(rs[i]!.durationMs < 1000, `program ${i} took ${rs[i]!.durationMs} ms`);
  assert.ok(took < 2 * 1000 + 2500, `the batch took ${took} ms`);
  assert.deepEqual(processesWith(marker), [], 'child or grandchild still running');
});

test('batch: the CPU limit ends a busy loop with status timeout', { skip }, async () => {
  const r = await inBatch('while True:\n    pass\n', { cpuSeconds: 1, wallMs: 10_000 });
  assert.equal(r.status, 'timeout');
  assert.equal(r.signal, 'SIGXCPU');
  assert.ok(r.durationMs < 5000, `took ${r.durationMs} ms`);
});

test('batch: background processes are killed before the next program starts', { skip }, async () => {
  const marker = `distillery-test-${randomBytes(6).toString('hex')}`;
  const spawnBg = (session: boolean) =>
    `import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import os, time\\nif os.fork() == 0:\\n    time.sleep(300)\\ntime.sleep(300)', '${marker}']${session ? ', start_new_session=True' : ''})\n`;
  // The next program looks for them itself (it can read every process's command line in /proc).
  const check = [
    'import os',
    'found = []',
    'for p in os.listdir("/proc"):',
    '    try:',
    '        cmd = open("/proc/%s/cmdline" % p, "rb").read()',
    '        state = open("/proc/%s/stat" % p).read().rsplit(") ", 1)[1][0]',
    '    except (OSError, IndexError):',
    '        continue',
    `    if b"${marker}" in cmd and state != "Z":`,
    '        found.append(p)',
    'assert not found, found',
  ].join('\n');
  const programs = [spawnBg(false), check];
  if (info.pidNamespace) programs.push(spawnBg(true), check); // setsid() escapes the group, not the namespace
  const rs = await runBatch(programs);
  assert.deepEqual(rs.map((r) => r.status), programs.map(() => 'pass'), rs.map((r) => r.stderr).join('\n'));
  assert.ok(rs[0]!.durationMs < 3000, `took ${rs[0]!.durationMs} ms`);
  assert.deepEqual(processesWith(marker), []);
});

test('batch: a fork bomb is contained and the next program runs normally', { skip }, async () => {
  const r = await inBatch('import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n', { wallMs: 1500, cpuSeconds: 2 });
  assert.ok(['timeout', 'fail', 'memory'].includes(r.status), `${r.status} ${r.note}`);
  assert.notEqual(r.status, 'pass');
});

test('batch: a memory bomb is reported as memory', { skip }, async () => {
  const big = await inBatch('x = bytearray(4 * 1024 ** 3)\n');
  assert.equal(big.status, 'memory', `${big.status} ${big.note} ${big.stderr}`);
  assert.match(big.stderr, /MemoryError/);
  const [list, caught] = await runBatch(['x = [0] * (10 ** 9)\n', 'try:\n    x = bytearray(4 * 1024 ** 3)\nexcept MemoryError:\n    pass\n'], { memoryBytes: 256 * 1024 ** 2 });
  assert.equal(list!.status, 'memory');
  assert.equal(caught!.status, 'pass');
});

test('batch: no network', { skip }, async (t) => {
  const server: Server = createServer((s) => s.end('hello\n'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  try {
    const program = ['import socket', 'try:', `    s = socket.create_connection(("127.0.0.1", ${port}), timeout=3)`, '    print("CONNECTED", s.recv(16))', 'except OSError as e:', '    print("BLOCKED", e)', '    raise'].join('\n');
    const control = await promisify(execFile)(info.python ?? 'python3', ['-c', program], { encoding: 'utf8', timeout: 10_000 });
    assert.match(control.stdout, /CONNECTED/, control.stderr);
    const r = await inBatch(program);
    if (!info.networkNamespace) {
      t.skip('no network namespace here');
      return;
    }
    assert.equal(r.status, 'fail');
    assert.match(r.stdout, /BLOCKED/);
  } finally {
    server.close();
  }
});

test('batch: each program gets its own temp dir, removed afterwards', { skip }, async () => {
  const rs = await runBatch([TEMP_DIR_PROGRAM, TEMP_DIR_PROGRAM, AFTER]);
  assert.deepEqual(rs.map((r) => r.status), ['pass', 'pass', 'pass'], rs.map((r) => r.stderr).join('\n'));
  const [d0, d1] = rs.slice(0, 2).map((r) => r.stdout.trim());
  assert.match(d0!, /distillery-sbx-/);
  assert.notEqual(d0, d1);
  for (const d of [d0!, d1!]) assert.equal(existsSync(d), false, `${d} left behind`);
  assert.equal(rs[0]!.note, undefined);
});

test('batch: the environment is scrubbed', { skip }, async () => {
  const secret = `sk-fake-${randomBytes(8).toString('hex')}`;
  process.env.DISTILLERY_TEST_FAKE_SECRET = secret;
  try {
    const r = await inBatch(['import os', 'print(sorted(os.environ))', 'print(dict(os.environ))'].join('\n'));
    assert.equal(r.status, 'pass', r.stderr);
    assert.equal(r.stdout.split('\n')[0], "['HOME', 'LANG', 'LC_ALL', 'PATH', 'PYTHONHASHSEED', 'PYTHONIOENCODING', 'TMPDIR']");
    assert.ok(!r.stdout.includes(secret), 'the secret leaked');
  } finally {
    delete process.env.DISTILLERY_TEST_FAKE_SECRET;
  }
});

test('batch: huge output is capped, and a flood is stopped', { skip }, async () => {
  const [r, flood] = await runBatch(
    ['import sys\nprint("FIRST")\nfor i in range(200000):\n    print("x" * 40)\nprint("LAST")\nsys.stderr.write("e" * 1000000)\n', 'while True:\n    print("y" * 1000)\n'],
    { outputBytes: 10_000, fileSizeBytes: 1024 ** 2 * 12 },
  );
  assert.equal(r!.status, 'pass', r!.note);
  assert.equal(r!.stdoutTruncated, true);
  assert.equal(r!.stderrTruncated, true);
  assert.ok(r!.stdout.length < 10_200, String(r!.stdout.length));
  assert.ok(r!.stdout.startsWith('FIRST\n'));
  assert.ok(r!.stdout.endsWith('LAST\n'));
  assert.match(r!.stdout, /\[\.\.\. \d+ bytes omitted \.\.\.\]/);
  assert.equal(flood!.status, 'fail');
  assert.match(flood!.note ?? '', /wrote more than 12 MiB/);
});

test('batch: file size and open-file limits apply', { skip }, async () => {
  const [big, files] = await runBatch(['open("big", "wb").write(b"0" * (2 * 1024 ** 2))\n', 'fs = [open("f%d" % i, "w") for i in range(100)]\n'], { fileSizeBytes: 1024 ** 2, openFiles: 32 });
  assert.equal(big!.status, 'fail');
  assert.match(big!.stderr, /File too large/);
  assert.equal(files!.status, 'fail');
  assert.match(files!.stderr, /Too many open files/);
});

test('batch: a program that kills its supervisor does not make the others misreport', { skip }, async () => {
  const killer = 'import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time\ntime.sleep(0.5)\n';
  const programs = ['print("before")\n', killer, 'print("after")\nassert 1 + 1 == 2\n', 'assert 1 + 1 == 3\n'];
  // Here (as PID 1 of a PID namespace the supervisor ignores the signal; without one it dies and the rest is
  // re-run one by one). Either way the others get their own outcome, and the killer the one it gets alone.
  const rs = await runBatch(programs, { wallMs: 5000 });
  const alone = await runProgram(killer, { wallMs: 5000 });
  assert.deepEqual(rs.map((r) => r.status), ['pass', alone.status, 'pass', 'fail']);
  assert.equal(rs[0]!.stdout, 'before\n');
  assert.equal(rs[2]!.stdout, 'after\n');
  // The same batch where the supervisor really dies: no namespaces (another process: the probe is cached).
  const fixture = fixturePath('batch-kill-supervisor');
  const { stdout } = await promisify(execFile)(process.execPath, [...loader, fixture], {
    env: { ...process.env, DISTILLERY_SANDBOX_NAMESPACES: 'off' },
    encoding: 'utf8',
    timeout: 30_000,
  });
  const out = JSON.parse(stdout) as { info: { pidNamespace: boolean }; results: SandboxResult[]; stats: { brokenBatches: number; rerunPrograms: number } };
  assert.equal(out.info.pidNamespace, false);
  assert.equal(out.stats.brokenBatches, 1);
  assert.equal(out.stats.rerunPrograms, 3); // the killer (in flight) and the two after it
  assert.deepEqual(out.results.map((r) => [r.status, r.stdout]), [['pass', 'before\n'], [out.results[1]!.status, ''], ['pass', 'after\n'], ['fail', '']]);
  assert.notEqual(out.results[1]!.status, 'pass');
});

test('batch: results come back in input order, onResult once per program', { skip }, async () => {
  const programs = Array.from({ length: 20 }, (_, i) => (i % 5 === 3 ? `print(${i})\nassert False\n` : i % 7 === 2 ? `import time\ntime.sleep(0.05)\nprint(${i})\n` : `print(${i})\n`));
  const seen: number[] = [];
  const rs = await runBatch(programs, undefined, (i) => seen.push(i));
  assert.deepEqual(rs.map((r) => r.stdout.trim()), programs.map((_, i) => String(i)));
  assert.deepEqual(rs.map((r) => r.status), programs.map((_, i) => (i % 5 === 3 ? 'fail' : 'pass')));
  assert.deepEqual([...seen].sort((a, b) => a - b), programs.map((_, i) => i));
  const progress: number[] = [];
  const indices: number[] = [];
  const many = await runMany(programs, { concurrency: 2, batchSize: 4 }, (done, _t, _r, i) => {
    progress.push(done);
    indices.push(i);
  });
  assert.deepEqual(many.map((r) => r.stdout.trim()), programs.map((_, i) => String(i)));
  assert.deepEqual(progress, programs.map((_, i) => i + 1));
  assert.deepEqual([...indices].sort((a, b) => a - b), programs.map((_, i) => i));
  assert.deepEqual(await runBatch([]), []);
});

test('batch: when Distillery is killed outright, the running program and its children go too', { skip }, async (t) => {
  const marker = `distillery-test-${randomBytes(6).toString('hex')}`;
  const fixture = fixturePath('batch-orphan');
  const { spawn } = await import('node:child_process');
  // A Distillery killed outright cannot remove its temp dirs: give it a TMPDIR of its own, removed here.
  const tmp = mkdtempSync(join(tmpdir(), 'distillery-test-'));
  chmodSync(tmp, 0o755);
  t.after(() => rmSync(tmp, { recursive: true, force: true }));
  const child = spawn(process.execPath, [...loader, fixture, marker], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, TMPDIR: tmp } });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (b: Buffer) => b.toString().includes('running') && resolve());
    child.on('exit', () => reject(new Error('the fixture ended early')));
  });
  const deadline = Date.now() + 5000;
  while (processesWith(marker).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.ok(processesWith(marker).length > 0, 'the background process never started');
  child.removeAllListeners('exit');
  child.kill('SIGKILL');
  while (processesWith(marker).length > 0 && Date.now() < deadline + 5000) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(processesWith(marker), [], 'the program outlived Distillery');
});
