import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { randomBytes } from 'node:crypto';
import { runMany, runProgram, sandboxInfo, sandboxLevel } from '../../src/eval/sandbox.js';
import { processesWith, TEMP_DIR_PROGRAM } from './sandbox-helpers.js';

const info = sandboxInfo();
const hasPython = info.python !== null;

/** The sandbox's temp dir, which the test programs print first. */
function cwdOf(stdout: string): string {
  const dir = stdout.split('\n')[0]!;
  assert.match(dir, /distillery-sbx-/);
  return dir;
}

test('sandbox level describes what is active', { skip: !hasPython && 'no python3' }, (t) => {
  const level = sandboxLevel();
  t.diagnostic(`sandbox: ${level}`);
  if (info.notes.length) t.diagnostic(`probe notes: ${info.notes.join('; ')}`);
  assert.match(level, /^process group \+ /);
  assert.match(level, /rlimits \(cpu 10s, as 1 GiB, fsize 16 MiB, nofile 64/);
  assert.match(sandboxLevel({ cpuSeconds: 3, memoryBytes: 512 * 1024 ** 2 }), /cpu 3s, as 512 MiB/);
  assert.match(level, info.networkNamespace ? /network namespace/ : /NO network isolation/);
});

test('a passing program passes, a failing assert fails', { skip: !hasPython && 'no python3' }, async () => {
  const ok = await runProgram('def f(x):\n    return x + 1\n\nassert f(1) == 2\nprint("fine")\n');
  assert.equal(ok.status, 'pass', ok.stderr + ok.note);
  assert.equal(ok.exitCode, 0);
  assert.equal(ok.stdout, 'fine\n');
  const bad = await runProgram('def f(x):\n    return x\n\nassert f(1) == 2\n');
  assert.equal(bad.status, 'fail');
  assert.equal(bad.exitCode, 1);
  assert.match(bad.stderr, /AssertionError/);
  assert.match(bad.stderr, /program\.py", line 4/);
  assert.doesNotMatch(bad.stderr, /run_program/); // the launcher's frame is not shown
  const syntax = await runProgram('def f(:\n');
  assert.equal(syntax.status, 'fail');
  assert.match(syntax.stderr, /SyntaxError/);
});

test('exiting before the end is a failure, not a pass', { skip: !hasPython && 'no python3' }, async () => {
  const exit0 = await runProgram('import sys\nsys.exit(0)\nassert False\n');
  assert.equal(exit0.status, 'fail');
  assert.match(exit0.note ?? '', /SystemExit\(0\)/);
  const quit = await runProgram('exit()\nassert False\n');
  assert.equal(quit.status, 'fail');
  const hard = await runProgram('import os\nos._exit(0)\nassert False\n');
  assert.equal(hard.status, 'fail');
  assert.match(hard.note ?? '', /os\._exit/);
});

test('an infinite loop times out within the bound and leaves no process behind', { skip: !hasPython && 'no python3' }, async () => {
  const marker = `distillery-test-${randomBytes(6).toString('hex')}`;
  const program = [
    'import os, subprocess, sys',
    'print(os.getcwd(), flush=True)',
    // a child that forks a sleeping grandchild, then the program spins
    `subprocess.Popen([sys.executable, '-c', 'import os, time\\nif os.fork() == 0:\\n    time.sleep(300)\\ntime.sleep(300)', '${marker}'])`,
    'while True:',
    '    pass',
  ].join('\n');
  const r = await runProgram(program, { wallMs: 1500 });
  assert.equal(r.status, 'timeout', `${r.status} ${r.note} ${r.stderr}`);
  assert.match(r.note ?? '', /wall time/);
  assert.ok(r.durationMs >= 1400 && r.durationMs < 4000, `took ${r.durationMs} ms`);
  const dir = cwdOf(r.stdout);
  assert.deepEqual(processesWith(marker), [], 'child or grandchild still running');
  assert.deepEqual(processesWith(dir), [], 'the program is still running');
  assert.equal(existsSync(dir), false, 'temp dir left behind');
});

test('the CPU limit ends a busy loop with status timeout', { skip: !hasPython && 'no python3' }, async () => {
  const r = await runProgram('while True:\n    pass\n', { cpuSeconds: 1, wallMs: 10_000 });
  assert.equal(r.status, 'timeout');
  assert.equal(r.signal, 'SIGXCPU');
  assert.ok(r.durationMs < 5000, `took ${r.durationMs} ms`);
});

test('background processes are killed when the program ends', { skip: !hasPython && 'no python3' }, async () => {
  const marker = `distillery-test-${randomBytes(6).toString('hex')}`;
  const r = await runProgram(
    `import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '${marker}'])\n`,
  );
  assert.equal(r.status, 'pass', r.stderr);
  assert.ok(r.durationMs < 3000, `took ${r.durationMs} ms`);
  assert.deepEqual(processesWith(marker), []);
});

test('a process that leaves the process group is still killed (PID namespace)', async (t) => {
  if (!hasPython || !info.pidNamespace) {
    t.skip('no PID namespace here: a process that calls setsid() can outlive the sandbox (see docs/sandbox.md)');
    return;
  }
  const marker = `distillery-test-${randomBytes(6).toString('hex')}`;
  const r = await runProgram(
    `import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '${marker}'], start_new_session=True)\n`,
  );
  assert.equal(r.status, 'pass', r.stderr);
  assert.deepEqual(processesWith(marker), []);
});

test('a memory bomb is reported as memory', { skip: !hasPython && 'no python3' }, async () => {
  const big = await runProgram('x = bytearray(4 * 1024 ** 3)\n');
  assert.equal(big.status, 'memory', `${big.status} ${big.note} ${big.stderr}`);
  assert.match(big.stderr, /MemoryError/);
  const list = await runProgram('x = [0] * (10 ** 9)\n', { memoryBytes: 256 * 1024 ** 2 });
  assert.equal(list.status, 'memory');
  // A program that catches MemoryError itself and goes on to pass is a pass.
  const caught = await runProgram('try:\n    x = bytearray(4 * 1024 ** 3)\nexcept MemoryError:\n    pass\n');
  assert.equal(caught.status, 'pass');
});

test('no network: a connection to a local open port fails inside the sandbox', { skip: !hasPython && 'no python3' }, async (t) => {
  const server: Server = createServer((s) => s.end('hello\n'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  try {
    const program = [
      'import socket',
      'try:',
      `    s = socket.create_connection(("127.0.0.1", ${port}), timeout=3)`,
      '    print("CONNECTED", s.recv(16))',
      'except OSError as e:',
      '    print("BLOCKED", e)',
      '    raise',
    ].join('\n');
    // Control: the same program outside the sandbox does connect, so the check below means something.
    // (Asynchronously: the server answers from this process's event loop.)
    const control = await promisify(execFile)(info.python ?? 'python3', ['-c', program], { encoding: 'utf8', timeout: 10_000 });
    assert.match(control.stdout, /CONNECTED/, control.stderr);
    const r = await runProgram(program);
    if (!info.networkNamespace) {
      t.skip(`no network namespace here (${sandboxLevel()}); the sandbox does not block the network`);
      return;
    }
    assert.equal(r.status, 'fail');
    assert.match(r.stdout, /BLOCKED/);
    assert.doesNotMatch(r.stdout, /CONNECTED/);
  } finally {
    server.close();
  }
});

test('writes go to the temp dir, which is removed afterwards', { skip: !hasPython && 'no python3' }, async () => {
  const r = await runProgram(TEMP_DIR_PROGRAM);
  assert.equal(r.status, 'pass', r.stderr);
  const dir = cwdOf(r.stdout);
  assert.equal(existsSync(dir), false);
  assert.equal(r.note, undefined);
});

test('the environment is scrubbed: secrets in Distillery\'s environment are not visible', { skip: !hasPython && 'no python3' }, async (t) => {
  const secret = `sk-fake-${randomBytes(8).toString('hex')}`;
  process.env.DISTILLERY_TEST_FAKE_SECRET = secret;
  try {
    const r = await runProgram(
      [
        'import os',
        'print(sorted(os.environ))',
        'print(dict(os.environ))',
        'try:',
        `    print(open("/proc/${process.pid}/environ", "rb").read())`,
        'except OSError as e:',
        '    print("no access to the runner environ:", e)',
      ].join('\n'),
    );
    assert.equal(r.status, 'pass', r.stderr);
    assert.equal(r.stdout.split('\n')[0], "['HOME', 'LANG', 'LC_ALL', 'PATH', 'PYTHONHASHSEED', 'PYTHONIOENCODING', 'TMPDIR']");
    if (info.dropUid === null && !info.privateProc) {
      t.skip('same uid and shared /proc: the runner\'s /proc/PID/environ is readable (see docs/sandbox.md)');
      return;
    }
    assert.ok(!r.stdout.includes(secret), 'the secret leaked');
  } finally {
    delete process.env.DISTILLERY_TEST_FAKE_SECRET;
  }
});

test('huge output is capped, keeping the head and the tail', { skip: !hasPython && 'no python3' }, async () => {
  const r = await runProgram('import sys\nprint("FIRST")\nfor i in range(200000):\n    print("x" * 40)\nprint("LAST")\nsys.stderr.write("e" * 1000000)\n', { outputBytes: 10_000 });
  assert.equal(r.status, 'pass', r.note);
  assert.equal(r.stdoutTruncated, true);
  assert.equal(r.stderrTruncated, true);
  assert.ok(r.stdout.length < 10_200, String(r.stdout.length));
  assert.ok(r.stdout.startsWith('FIRST\n'));
  assert.ok(r.stdout.endsWith('LAST\n'));
  assert.match(r.stdout, /\[\.\.\. \d+ bytes omitted \.\.\.\]/);
  // A program that writes without end is stopped at the file-size limit.
  const flood = await runProgram('while True:\n    print("y" * 1000)\n', { fileSizeBytes: 1024 ** 2 });
  assert.equal(flood.status, 'fail');
  assert.match(flood.note ?? '', /wrote more than 1 MiB/);
});

test('file size and open-file limits apply', { skip: !hasPython && 'no python3' }, async () => {
  const big = await runProgram('open("big", "wb").write(b"0" * (2 * 1024 ** 2))\n', { fileSizeBytes: 1024 ** 2 });
  assert.equal(big.status, 'fail');
  assert.match(big.stderr, /File too large/);
  const files = await runProgram('fs = [open("f%d" % i, "w") for i in range(100)]\n', { openFiles: 32 });
  assert.equal(files.status, 'fail');
  assert.match(files.stderr, /Too many open files/);
});

test('runMany keeps order and bounds concurrency', { skip: !hasPython && 'no python3' }, async () => {
  const programs = Array.from({ length: 6 }, (_, i) => `print(${i})\nassert ${i} != 3\n`);
  const seen: number[] = [];
  const results = await runMany(programs, { concurrency: 2 }, (done) => seen.push(done));
  assert.deepEqual(results.map((r) => r.stdout.trim()), ['0', '1', '2', '3', '4', '5']);
  assert.deepEqual(results.map((r) => r.status), ['pass', 'pass', 'pass', 'fail', 'pass', 'pass']);
  assert.deepEqual(seen, [1, 2, 3, 4, 5, 6]);
});
