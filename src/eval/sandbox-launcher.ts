/**
 * The Python launcher that runs inside the sandbox, before and around the untrusted program. It is passed to
 * `python3 -s -S -B -c` (so nothing is written to disk for it) with these arguments:
 *
 *     PROGRAM_PATH CPU_SECONDS MEMORY_BYTES FILE_SIZE_BYTES OPEN_FILES PROCESSES UID
 *
 * (-1 means "leave as it is"). What it does, in order:
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
export const LAUNCHER_SOURCE = String.raw`
import os, sys, resource as R, select, builtins

def main():
    prog = sys.argv[1]
    cpu, mem, fsize, nofile, nproc, uid = (int(a) for a in sys.argv[2:8])
    nonce = os.read(0, 128).decode('ascii', 'replace').strip()
    os.set_inheritable(3, False)

    def report(text):
        try:
            os.write(3, ('%s %s\n' % (nonce, text)).encode('utf-8', 'replace'))
        except OSError:
            pass

    def limit(res, soft, hard):
        if soft < 0:
            return
        cur = R.getrlimit(res)[1]
        if cur != R.RLIM_INFINITY:
            hard = min(hard, cur)
            soft = min(soft, hard)
        R.setrlimit(res, (soft, hard))

    try:
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
        pid = os.fork()
    except BaseException as e:
        report('setup-error ' + repr(e).replace('\n', ' ')[:300])
        os._exit(70)

    if pid == 0:
        run_program(prog, report)

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

def run_program(prog, report):
    code = 1
    outcome = 'exception'
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 0)
        os.close(fd)
        sys.argv = [prog]
        builtins.exit = builtins.quit = sys.exit
        g = {'__name__': '__main__', '__file__': prog, '__builtins__': builtins}
        try:
            with open(prog, 'rb') as f:
                source = f.read()
            exec(compile(source, prog, 'exec'), g)
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
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        report('child ' + outcome)
        os._exit(code)

def show_traceback():
    try:
        import traceback
        kind, value, tb = sys.exc_info()
        # Skip the launcher's own frame: the traceback starts in the program.
        traceback.print_exception(kind, value, tb.tb_next if tb is not None else None)
    except BaseException:
        try:
            os.write(2, b'(traceback unavailable)\n')
        except OSError:
            pass

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
