/**
 * Python shared by LAUNCHER_SOURCE and BATCH_SOURCE (placed at the top of both): setting the rlimits and dropping
 * the uid, running a program in a given `__main__` namespace with the pass/fail rules, flushing its output and
 * printing its traceback. Each piece of this logic exists only here; the scripts differ in how they get the
 * program and report.
 */
/**
 * The JavaScript runner, run as `node --max-old-space-size=N -e JS_RUNNER_SOURCE PROGRAM_PATH` in place of the
 * sandboxed child (after its limits are set). It makes `console.assert` throw (Node's only prints, so a failed
 * `console.assert` would otherwise pass), loads the program as a CommonJS module (`require`, so MultiPL-E's
 * `const assert = require('node:assert')` works), and marks the end: an exit with code 0 before the program's
 * top level has run to its end (`process.exit(0)` in the middle) becomes exit code 97, a failure — the same
 * rule as `sys.exit()` in Python. An uncaught exception (a thrown AssertionError) exits with 1, and so does an
 * unhandled promise rejection (Node ≥ 15).
 */
export const JS_RUNNER_SOURCE = `'use strict';
const assert = require('node:assert');
const file = process.argv[1];
console.assert = function (value, ...message) {
  if (!value) throw new assert.AssertionError({ message: 'console.assert failed' + (message.length ? ': ' + message.map(String).join(' ') : ''), actual: value, expected: true, operator: '==' });
};
let finished = false;
process.on('exit', (code) => {
  if (code === 0 && !finished) {
    try { process.stderr.write('the program exited before its end, so the tests did not all run\\n'); } catch {}
    process.exitCode = 97;
  }
});
require(file);
finished = true;
`;

const COMMON_SOURCE = String.raw`
import os, sys, resource as R, builtins

JS_RUNNER = ${JSON.stringify(JS_RUNNER_SOURCE)}

def exec_node(path, node, heap_mb):
    # Replaces this (child) process with node running the program through JS_RUNNER; its exit status is the
    # outcome (0 = pass). Only returns by raising OSError when node cannot be executed.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(node, [node, '--max-old-space-size=%d' % heap_mb, '--no-warnings', '-e', JS_RUNNER, path], dict(os.environ))

def open_stdin(stdin_path):
    # The program's stdin: the given file (the task's input), else /dev/null.
    fd = os.open(stdin_path if stdin_path else os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)

def limit(res, soft, hard):
    if soft < 0:
        return
    cur = R.getrlimit(res)[1]
    if cur != R.RLIM_INFINITY:
        hard = min(hard, cur)
        soft = min(soft, hard)
    R.setrlimit(res, (soft, hard))

def confine(cpu, mem, fsize, nofile, nproc, uid):
    # The rlimits (soft = hard; CPU: hard = soft + 1 s so SIGXCPU comes first; -1 leaves one as it is), core
    # dumps off, then, when uid >= 0, RLIMIT_NPROC and the uid/gid drop with no supplementary groups.
    limit(R.RLIMIT_CORE, 0, 0)
    limit(R.RLIMIT_CPU, cpu, cpu + 1)
    limit(R.RLIMIT_AS, mem, mem)
    limit(R.RLIMIT_FSIZE, fsize, fsize)
    limit(R.RLIMIT_NOFILE, nofile, nofile)
    if uid >= 0:
        limit(R.RLIMIT_NPROC, nproc, nproc)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

def run_child(prepare, tell):
    # The end of a sandboxed child: prepare() sets it up and returns (path, namespace, source or None to read
    # the file at path); the program then runs in that namespace, in this very frame (no extra stack depth),
    # its output is flushed, tell(outcome) reports, and the child exits. The outcome is "pass" only when the
    # program ran to its end: a SystemExit (sys.exit/exit/quit) or os._exit before the end means the tests did
    # not all run, which is a failure (as in HumanEval's harness), not a pass.
    code = 1
    outcome = 'exception'
    try:
        path, g, source = prepare()
        try:
            if source is None:
                with open(path, 'rb') as f:
                    source = f.read()
            exec(compile(source, path, 'exec'), g)
            outcome = 'pass'
            code = 0
        except MemoryError:
            outcome = 'memory'
            g.clear()
            show_traceback()
        except SystemExit as e:
            outcome = 'exit ' + repr(e.code).replace('\n', ' ')[:100]
        except BaseException:
            show_traceback()
    finally:
        flush_output()
        tell(outcome)
        os._exit(code)

def flush_output():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass

def show_traceback():
    try:
        import traceback
        kind, value, tb = sys.exc_info()
        # Skip run_child's own frame: the traceback starts in the program.
        traceback.print_exception(kind, value, tb.tb_next if tb is not None else None)
    except BaseException:
        try:
            os.write(2, b'(traceback unavailable)\n')
        except OSError:
            pass
`;

/**
 * The Python launcher that runs inside the sandbox, before and around the untrusted program. It is passed to
 * `python3 -s -S -B -c` (so nothing is written to disk for it) with these arguments:
 *
 *     PROGRAM_PATH CPU_SECONDS MEMORY_BYTES FILE_SIZE_BYTES OPEN_FILES PROCESSES UID [LANGUAGE STDIN_PATH NODE HEAP_MB]
 *
 * (-1 means "leave as it is"; LANGUAGE is python (default) or javascript; STDIN_PATH is a file fed to the
 * program's stdin, or "-" for /dev/null; NODE and HEAP_MB are the node binary and its --max-old-space-size,
 * used for javascript). What it does, in order:
 * 1. reads a one-line nonce from stdin (the runner writes it and keeps stdin open);
 * 2. sets the rlimits with soft = hard (CPU: hard = soft + 1 s, so SIGXCPU comes first), core dumps off;
 * 3. when UID ≥ 0 (Distillery runs as root), sets RLIMIT_NPROC and drops to that uid/gid with no
 *    supplementary groups — after which the hard limits can no longer be raised;
 * 4. forks. The child points stdin at /dev/null and executes the program in a fresh `__main__` namespace,
 *    in-process (no second interpreter start-up). It reports "pass" only when the program ran to its end: a
 *    SystemExit (sys.exit/exit/quit) or os._exit before the end means the tests did not all run, which is a
 *    failure (as in HumanEval's harness), not a pass.
 * 5. The parent (the supervisor; PID 1 when a PID namespace is in use) waits for the child and reports its
 *    exit code or signal and CPU time on fd 3, then exits. While waiting it watches stdin: end-of-file means
 *    the runner died, and it kills its whole process group so nothing outlives Distillery.
 *
 * Reports are lines "NONCE WORDS..." on fd 3 (inherited from the runner, close-on-exec here, so processes the
 * program starts do not get it). The nonce keeps a program from forging a pass by accident; it is not a
 * defence against a program written to attack the harness, which could read it from its own memory.
 */
export const LAUNCHER_SOURCE = String.raw`${COMMON_SOURCE}
import select

def main():
    prog = sys.argv[1]
    cpu, mem, fsize, nofile, nproc, uid = (int(a) for a in sys.argv[2:8])
    extra = sys.argv[8:12] + ['python', '-', '-', '0'][len(sys.argv[8:12]):]
    lang, stdin_path, node, heap_mb = extra[0], None if extra[1] == '-' else extra[1], extra[2], int(extra[3])
    nonce = os.read(0, 128).decode('ascii', 'replace').strip()
    os.set_inheritable(3, False)

    def report(text):
        try:
            os.write(3, ('%s %s\n' % (nonce, text)).encode('utf-8', 'replace'))
        except OSError:
            pass

    try:
        confine(cpu, mem, fsize, nofile, nproc, uid)
        pid = os.fork()
    except BaseException as e:
        report('setup-error ' + repr(e).replace('\n', ' ')[:300])
        os._exit(70)

    if pid == 0:
        if lang == 'javascript':
            try:
                open_stdin(stdin_path)
                exec_node(prog, node, heap_mb)
            except BaseException as e:
                report('setup-error cannot run node: ' + repr(e).replace('\n', ' ')[:300])
                os._exit(70)
        run_child(lambda: prepare_program(prog, stdin_path), lambda text: report('child ' + text))

    try:
        pfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pfd = -1
    if pfd >= 0:
        while True:
            ready = select.select([0, pfd], [], [])[0]
            if pfd in ready:
                break
            try:
                data = os.read(0, 256)
            except OSError:
                data = b''
            if not data:
                os.killpg(0, 9)
    _, status, usage = os.wait4(pid, 0)
    used = usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        report('signal %d cpu %.3f' % (sig, used))
        os._exit(128 + sig)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
    report('exit %d cpu %.3f' % (code, used))
    os._exit(code)

def prepare_program(prog, stdin_path):
    open_stdin(stdin_path)
    sys.argv = [prog]
    builtins.exit = builtins.quit = sys.exit
    return prog, {'__name__': '__main__', '__file__': prog, '__builtins__': builtins}, None

main()
`;

/** A tiny program run once at start-up under each candidate isolation to see what is really in effect. */
export const PROBE_SOURCE = String.raw`
import os, sys
uid = int(sys.argv[1])
if uid >= 0:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
def ns(kind):
    try:
        return os.readlink('/proc/self/ns/' + kind)
    except OSError:
        return '-'
procs = '-'
try:
    procs = str(len([p for p in os.listdir('/proc') if p.isdigit()]))
except OSError:
    pass
print(ns('net'), ns('pid'), ns('ipc'), os.getuid(), procs)
`;

/**
 * The batch supervisor (batch mode, see runBatch in sandbox.ts and docs/sandbox.md). Passed to
 * `python3 -s -S -B -c` under the same namespaces as LAUNCHER_SOURCE, with these arguments:
 *
 *     CPU_SECONDS MEMORY_BYTES FILE_SIZE_BYTES OPEN_FILES PROCESSES UID WALL_MS OUTPUT_BYTES
 *
 * stdin carries "NONCE\nLENGTH\n" then LENGTH bytes of a JSON array of program texts, and then stays open
 * (end-of-file means the runner died: everything is killed). The supervisor sets the per-batch rlimits (core,
 * address space, file size, open files, processes) and drops the uid exactly as the launcher does, then for
 * each program in turn:
 * 1. creates a fresh directory `pI-XXXXXXXX` (0700) in the batch directory (its cwd);
 * 2. forks a child from itself — never from an earlier child — which starts a new session, closes fd 3 and
 *    the supervisor's descriptors, points stdin at /dev/null and stdout/stderr at pipes read by the
 *    supervisor, sets RLIMIT_CPU and RLIMIT_AS, makes the directory its cwd, HOME and TMPDIR, writes the program
 *    to `program.py` there and executes it in a fresh `__main__` module (same pass/fail rules as the launcher);
 * 3. enforces the wall-time limit (SIGKILL to the child's process group), captures stdout/stderr (head and
 *    tail, `OUTPUT_BYTES` each) and kills the group when their total passes FILE_SIZE_BYTES;
 * 4. after the child ends, kills what it left behind: its process group and, when the supervisor is PID 1 of
 *    a PID namespace, every other process in the namespace (kill(-1)), reaping them all;
 * 5. removes the directory and reports one length-prefixed JSON frame "NONCE LENGTH\nJSON" on fd 3.
 * Before each program it also reports {"start": I, "pgid": PID-or-null} (the child's process group as seen by
 * the runner, null inside a PID namespace) so the runner can kill an orphaned program if the supervisor dies.
 * Children report their outcome to the supervisor on a pipe of their own, never on fd 3.
 */
export const BATCH_SOURCE = String.raw`${COMMON_SOURCE}
# traceback is loaded here, before any child's memory limit, so show_traceback need not import it under one.
import select, signal, json, time, traceback

class Capture:
    def __init__(self, cap):
        self.hc = cap // 2
        self.tc = cap - self.hc
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def push(self, b):
        self.total += len(b)
        if len(self.head) < self.hc:
            take = self.hc - len(self.head)
            self.head += b[:take]
            b = b[take:]
        if b:
            self.tail += b
            if len(self.tail) > 2 * self.tc + 65536:
                del self.tail[:len(self.tail) - self.tc]

    def result(self):
        if self.total <= self.hc + self.tc:
            return bytes(self.head + self.tail).decode('utf-8', 'replace'), False
        tail = bytes(self.tail[len(self.tail) - self.tc:]) if self.tc else b''
        omitted = self.total - len(self.head) - len(tail)
        return '%s\n[... %d bytes omitted ...]\n%s' % (bytes(self.head).decode('utf-8', 'replace'), omitted, tail.decode('utf-8', 'replace')), True

S = {}

def send(obj):
    data = json.dumps(obj).encode('ascii')
    buf = ('%s %d\n' % (S['nonce'], len(data))).encode('ascii') + data
    while buf:
        try:
            n = os.write(3, buf)
        except InterruptedError:
            continue
        except OSError:
            os._exit(75)
        buf = buf[n:]

def kill_group(pid, reaped=False):
    # The group, and the child itself in case it has not called setsid() yet (not once it is reaped: its pid
    # could have been reused).
    for f in (os.killpg,) if reaped else (os.killpg, os.kill):
        try:
            f(pid, 9)
        except OSError:
            pass

def reap_all():
    # After the child: its process group goes, and inside a PID namespace (we are PID 1) every other process
    # too; they are reaped so that nothing, not even a zombie, is carried over to the next program.
    if S['in_ns']:
        for _ in range(3):
            try:
                os.kill(-1, 9)
            except OSError:
                pass
            while True:
                try:
                    os.waitpid(-1, 0)
                except ChildProcessError:
                    break
                except InterruptedError:
                    continue
    else:
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break

def die():
    # The runner went away: take everything down with us.
    if S.get('child'):
        kill_group(S['child'])
    if S['in_ns']:
        try:
            os.kill(-1, 9)
        except OSError:
            pass
    os._exit(0)

def main():
    cpu, mem, fsize, nofile, nproc, uid, wall_ms, out_cap = (int(a) for a in sys.argv[1:9])
    # javascript programs: the node binary, its heap size and its (larger) address-space limit
    node = sys.argv[9] if len(sys.argv) > 9 else '-'
    heap_mb = int(sys.argv[10]) if len(sys.argv) > 10 else 0
    node_mem = int(sys.argv[11]) if len(sys.argv) > 11 else mem
    S['node'] = (node, heap_mb, node_mem)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.set_inheritable(3, False)
    buf = bytearray()
    while True:
        parts = bytes(buf).split(b'\n', 2)
        if len(parts) == 3 and len(parts[2]) >= int(parts[1]):
            break
        chunk = os.read(0, 1 << 16)
        if not chunk:
            os._exit(0)
        buf += chunk
    S['nonce'] = parts[0].decode('ascii', 'replace').strip()
    programs = json.loads(parts[2][:int(parts[1])].decode('utf-8'))
    del buf, parts
    S['in_ns'] = os.getpid() == 1
    try:
        # RLIMIT_CPU is set per program, in the child, and so is the final RLIMIT_AS (python: mem, node: node_mem)
        confine(-1, max(mem, node_mem), fsize, nofile, nproc, uid)
        devnull = os.open(os.devnull, os.O_RDONLY)
    except BaseException as e:
        send({'setupError': repr(e).replace('\n', ' ')[:300]})
        os._exit(70)
    base = os.getcwd()
    for i in range(len(programs)):
        src = programs[i]
        programs[i] = None
        send(run_one(i, src, base, devnull, cpu, mem, fsize, wall_ms, out_cap, programs))
    os._exit(0)

def fork_retry():
    delay = 0.01
    while True:
        try:
            return os.fork()
        except BlockingIOError:
            # RLIMIT_NPROC is shared by every sandbox of the uid: wait a little for another one's cleanup.
            if delay > 1.5:
                raise
            time.sleep(delay)
            delay *= 2

def remove_tree(d):
    try:
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)
        return None
    except OSError:
        pass
    import shutil
    def fix(func, path, exc):
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
        except OSError:
            pass
        func(path)
    for d2, subdirs, _ in os.walk(d):
        for s in subdirs:
            try:
                os.chmod(os.path.join(d2, s), 0o700)
            except OSError:
                pass
    try:
        shutil.rmtree(d, onerror=lambda f, p, e: fix(f, p, e) if os.path.lexists(p) else None)
        return None
    except OSError as e:
        return 'temp dir %s could not be removed: %s' % (d, e)

def run_one(i, src, base, devnull, cpu, mem, fsize, wall_ms, out_cap, programs):
    d = os.path.join(base, 'p%d-%s' % (i, os.urandom(4).hex()))
    res = {'i': i}
    try:
        os.mkdir(d, 0o700)
        r_out, w_out = os.pipe()
        r_err, w_err = os.pipe()
        r_rep, w_rep = os.pipe()
        pid = fork_retry()
    except BaseException as e:
        res['setupError'] = repr(e).replace('\n', ' ')[:300]
        return res
    if pid == 0:
        programs.clear()
        tell = reporter(w_rep)
        if isinstance(src, dict):
            lang, stdin_text, src = src.get('language') or 'python', src.get('stdin'), src['code']
        else:
            lang, stdin_text = 'python', None
        run_child(lambda: prepare_child(src, d, devnull, (3, r_out, r_err, r_rep), w_out, w_err, tell, cpu, mem, lang, stdin_text), tell)
    S['child'] = pid
    start = time.monotonic()
    for fd in (w_out, w_err, w_rep):
        os.close(fd)
    send({'start': i, 'pgid': None if S['in_ns'] else pid})
    try:
        pfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pfd = -1
    caps = {r_out: Capture(out_cap), r_err: Capture(out_cap)}
    rep = bytearray()
    open_fds = {r_out, r_err, r_rep}
    deadline = start + wall_ms / 1000.0
    killed = timed_out = flooded = False
    waited = None

    def read(fd):
        try:
            data = os.read(fd, 1 << 16)
        except OSError:
            data = b''
        if not data:
            open_fds.discard(fd)
            os.close(fd)
            return
        if fd == r_rep:
            if len(rep) < 1024:
                rep.extend(data[:1024])
        else:
            caps[fd].push(data)

    while waited is None:
        now = time.monotonic()
        if not killed and now >= deadline:
            timed_out = killed = True
            kill_group(pid)
        timeout = None if killed else deadline - now
        if pfd < 0 or not open_fds:
            timeout = 0.01 if timeout is None else min(timeout, 0.01)
        watch = list(open_fds) + [0] + ([pfd] if pfd >= 0 else [])
        try:
            ready = select.select(watch, [], [], timeout)[0]
        except InterruptedError:
            ready = []
        for fd in ready:
            if fd == 0:
                try:
                    if not os.read(0, 4096):
                        die()
                except OSError:
                    die()
            elif fd != pfd:
                read(fd)
        if not killed and caps[r_out].total + caps[r_err].total > fsize:
            flooded = killed = True
            kill_group(pid)
        w = os.wait4(pid, os.WNOHANG)
        if w[0] == pid:
            waited = w
    elapsed = time.monotonic() - start
    if pfd >= 0:
        os.close(pfd)
    kill_group(pid, True)
    reap_all()
    S['child'] = None
    # Everything that could hold the pipes is gone (inside a PID namespace); without one, a process that
    # left the group may still hold them, so stop waiting after a short grace.
    grace = time.monotonic() + 0.5
    while open_fds:
        left = grace - time.monotonic()
        if left <= 0:
            break
        ready = select.select(list(open_fds), [], [], left)[0]
        if not ready:
            break
        for fd in ready:
            read(fd)
    for fd in list(open_fds):
        os.close(fd)
    _, status, usage = waited
    res['cpu'] = usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(status):
        res['signal'] = os.WTERMSIG(status)
    else:
        res['exit'] = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
    prefix = (S['nonce'] + ' ').encode('ascii')
    for line in bytes(rep).split(b'\n'):
        if line.startswith(prefix):
            res['outcome'] = line[len(prefix):].decode('utf-8', 'replace')
    res['timedOut'] = timed_out
    res['flooded'] = flooded
    res['ms'] = int(elapsed * 1000)
    res['stdout'], res['stdoutTruncated'] = caps[r_out].result()
    res['stderr'], res['stderrTruncated'] = caps[r_err].result()
    note = remove_tree(d)
    if note:
        res['cleanup'] = note
    return res

def reporter(w_rep):
    # How a child reports its outcome to the supervisor: "NONCE TEXT" lines on its own pipe.
    prefix = S['nonce'] + ' '

    def tell(text):
        try:
            os.write(w_rep, (prefix + text + '\n').encode('utf-8', 'replace'))
        except OSError:
            pass
    return tell

def prepare_child(src, d, devnull, close_fds, w_out, w_err, tell, cpu, mem, lang='python', stdin_text=None):
    try:
        os.setsid()
        for fd in close_fds:
            os.close(fd)
        os.dup2(devnull, 0)
        os.dup2(w_out, 1)
        os.dup2(w_err, 2)
        for fd in (devnull, w_out, w_err):
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        node, heap_mb, node_mem = S['node']
        limit(R.RLIMIT_CPU, cpu, cpu + 1)
        limit(R.RLIMIT_AS, node_mem if lang == 'javascript' else mem, node_mem if lang == 'javascript' else mem)
        os.chdir(d)
        os.environ['HOME'] = d
        os.environ['TMPDIR'] = d
        path = os.path.join(d, 'program.js' if lang == 'javascript' else 'program.py')
        source = src.encode('utf-8', 'replace')
        del src
        with open(path, 'wb') as f:
            f.write(source)
        if stdin_text is not None:
            with open(os.path.join(d, 'stdin.txt'), 'wb') as f:
                f.write(stdin_text.encode('utf-8', 'replace'))
            open_stdin(os.path.join(d, 'stdin.txt'))
        S.clear()
        if lang == 'javascript':
            exec_node(path, node, heap_mb)
    except BaseException as e:
        tell('setup-error ' + repr(e).replace('\n', ' ')[:300])
        os._exit(70)
    sys.argv = [path]
    builtins.exit = builtins.quit = sys.exit
    mod = type(sys)('__main__')
    g = mod.__dict__
    g['__file__'] = path
    g['__builtins__'] = builtins
    sys.modules['__main__'] = mod
    return path, g, source

main()
`;
