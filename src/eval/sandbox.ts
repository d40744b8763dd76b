/**
 * Runs untrusted Python (model-written programs) — and JavaScript, which the launcher's child execs node for
 * after setting everything up (docs/sandbox.md, "stdin, and JavaScript programs"); a program may also be
 * given text for its stdin — with as much isolation as this machine allows without
 * extra software. docs/sandbox.md says precisely what is and is not isolated; keep the two in step.
 *
 * Per program:
 * - a fresh temp directory (mode 0700) holding `program.py`, used as cwd, HOME and TMPDIR, removed afterwards;
 * - a new session and process group (the wall-time limit kills the whole group with SIGKILL, and so does
 *   the end of the run, so background processes left behind do not survive);
 * - `unshare` namespaces where they work (probed once per process and cached): a network namespace (no
 *   interfaces but a down loopback, so no network at all), an IPC namespace and a PID namespace (the supervisor is PID 1, so
 *   when it ends the kernel kills every process the program started, even ones that left the process group);
 *   as non-root these sit in a user namespace, which also gets a private /proc;
 * - as root, the program runs as uid/gid 65534 (nobody) with no supplementary groups;
 * - rlimits set by a small Python launcher before the program starts (see sandbox-launcher.ts): CPU time,
 *   address space, file size, open files, core dumps off, and process count when the uid is dropped. The
 *   launcher's `resource.setrlimit` is used rather than `prlimit(1)`: it needs no extra binary, runs in the
 *   same process that then drops privileges (so a root-run sandbox cannot raise its hard limits again), and
 *   adds no process start-up;
 * - a scrubbed environment (minimal PATH, HOME/TMPDIR = temp dir, C.UTF-8, PYTHONHASHSEED=0) and no file
 *   descriptors other than stdin (the nonce pipe), stdout, stderr and the report pipe;
 * - `DISTILLERY_SANDBOX_NAMESPACES=off` skips the namespaces (to test the fallback, or where unshare misbehaves);
 * - the system `python3` (`/usr/bin/python3` when present; `DISTILLERY_SANDBOX_PYTHON` overrides) with
 *   `-s -S -B`: no user or system site-packages, no .pyc files. Not `-I`: that implies `-E`, which would drop
 *   PYTHONHASHSEED, and the environment is built from scratch anyway; `-I`'s script-directory rule does not
 *   apply because the program is run by the launcher (`-c`), whose sys.path[0] is the temp cwd.
 * - stdout and stderr captured up to `outputBytes` each (the head and the tail are kept, the middle dropped),
 *   and the program killed when it writes more than `fileSizeBytes` in total to them.
 *
 * Batch mode (runBatch, used by runMany): one such sandboxed supervisor runs many programs in turn, each in a
 * child forked from the pristine supervisor, with its own temp dir, process group and limits; what is shared
 * within a batch and what is not is in docs/sandbox.md ("Batch mode").
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readlinkSync } from 'node:fs';
import { chmod, chown, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { constants as osConstants } from 'node:os';
import { BATCH_SOURCE, LAUNCHER_SOURCE, PROBE_SOURCE } from './sandbox-launcher.js';

export type SandboxStatus = 'pass' | 'fail' | 'timeout' | 'memory' | 'error';
export const SANDBOX_STATUSES: readonly SandboxStatus[] = ['pass', 'fail', 'timeout', 'memory', 'error'];

export interface SandboxLimits {
  /** Wall-clock limit; the whole process group is killed when it passes. */
  wallMs: number;
  /** CPU seconds per process (RLIMIT_CPU; SIGXCPU at the limit, SIGKILL one second later). */
  cpuSeconds: number;
  /** Address space per process (RLIMIT_AS); allocations beyond it fail (Python raises MemoryError). */
  memoryBytes: number;
  /** Largest file a process may write (RLIMIT_FSIZE); also the cap on total stdout + stderr. */
  fileSizeBytes: number;
  /** Open file descriptors per process (RLIMIT_NOFILE). */
  openFiles: number;
  /**
   * Processes of the sandbox uid (RLIMIT_NPROC), only when the uid is dropped (running as root). The count
   * is per uid, i.e. shared by all sandboxes running at once; runMany raises it to 4 × concurrency.
   */
  processes: number;
  /** Bytes of stdout and of stderr kept in the result (each; head and tail). */
  outputBytes: number;
}

export const DEFAULT_LIMITS: Readonly<SandboxLimits> = Object.freeze({
  wallMs: 15_000,
  cpuSeconds: 10,
  memoryBytes: 1024 ** 3,
  fileSizeBytes: 16 * 1024 ** 2,
  openFiles: 64,
  processes: 128,
  outputBytes: 64 * 1024,
});

/** Languages the sandbox runs: Python in the launcher's own interpreter, JavaScript with node. */
export type SandboxLanguage = 'python' | 'javascript';

/** A program with its language (default python) and what is fed to its stdin (default: nothing, /dev/null). */
export interface ProgramSpec {
  code: string;
  language?: SandboxLanguage;
  stdin?: string;
}

/** A program: Python source, or a spec with a language and stdin. */
export type Program = string | ProgramSpec;

function specOf(p: Program): Required<Pick<ProgramSpec, 'code' | 'language'>> & { stdin?: string } {
  if (typeof p === 'string') return { code: p, language: 'python' };
  return { code: p.code, language: p.language ?? 'python', ...(p.stdin !== undefined ? { stdin: p.stdin } : {}) };
}

/** The node binary JavaScript programs run with: DISTILLERY_SANDBOX_NODE, else the node running Distillery. */
export function sandboxNode(): string {
  return process.env.DISTILLERY_SANDBOX_NODE || process.execPath;
}

const MIB = 1024 ** 2;
/** Extra address space node gets over `memoryBytes`: V8 reserves virtual memory (code range, heap cages) up front. */
export const NODE_EXTRA_AS_BYTES = 1024 ** 3;

/**
 * The limits a node program runs under: RLIMIT_AS = memoryBytes + 1 GiB (node 20 does not start under about
 * 512 MiB of address space — "Failed to reserve virtual memory for CodeRange" — because V8 reserves virtual
 * memory it never touches), and a V8 heap of 3/4 of memoryBytes (`--max-old-space-size`), so that a memory bomb
 * ends with "JavaScript heap out of memory" (status memory) rather than an address-space failure inside V8.
 */
export function nodeMemory(l: SandboxLimits): { addressSpace: number; heapMb: number } {
  return { addressSpace: Math.floor(l.memoryBytes) + NODE_EXTRA_AS_BYTES, heapMb: Math.max(16, Math.floor((l.memoryBytes * 3) / 4 / MIB)) };
}

export interface SandboxResult {
  status: SandboxStatus;
  /** The program's exit code (null when it ended by a signal or never ran). */
  exitCode: number | null;
  /** The signal that ended the program, e.g. "SIGXCPU" or "SIGKILL" (null when it exited). */
  signal: string | null;
  durationMs: number;
  stdout: string;
  stderr: string;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  /** Why the status is what it is, when that is not obvious (e.g. "wall time limit (15 s)"). */
  note?: string;
}

/** What isolation is actually in effect on this machine (probed once, then cached). */
export interface SandboxInfo {
  /** Interpreter used, or null when none was found (every run then ends with status 'error'). */
  python: string | null;
  /** Command prefix placed before the interpreter (the unshare invocation), possibly empty. */
  prefix: string[];
  networkNamespace: boolean;
  /** SysV IPC and POSIX message queues are private (POSIX shared memory in /dev/shm is a file system, not). */
  ipcNamespace: boolean;
  pidNamespace: boolean;
  /** /proc shows only the sandbox's own processes. */
  privateProc: boolean;
  userNamespace: boolean;
  /** The uid the program runs as when it is dropped from root, else null (same uid as Distillery). */
  dropUid: number | null;
  /** Why stronger isolation was not used (failed probes), for the record. */
  notes: string[];
}

const SANDBOX_UID = 65534; // nobody
const MIN_PATH = '/usr/local/bin:/usr/bin:/bin';
const PYTHON_FLAGS = ['-s', '-S', '-B'];
const CLOSE_GRACE_MS = 2000;

let cachedInfo: SandboxInfo | undefined;

function findPython(): string | null {
  const override = process.env.DISTILLERY_SANDBOX_PYTHON;
  if (override) return override;
  if (existsSync('/usr/bin/python3')) return '/usr/bin/python3';
  return findOnPath('python3');
}

function findOnPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? MIN_PATH).split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  for (const dir of MIN_PATH.split(':')) if (existsSync(join(dir, name))) return join(dir, name);
  return null;
}

function readNs(kind: string): string | null {
  try {
    return readlinkSync(`/proc/self/ns/${kind}`);
  } catch {
    return null;
  }
}

interface Candidate {
  prefix: string[];
  dropUid: number | null;
  userNamespace: boolean;
}

function candidates(isRoot: boolean, unshare: string | null): Candidate[] {
  const ns = ['--net', '--ipc', '--pid', '--fork', '--kill-child'];
  const user = ['--user', '--map-root-user'];
  const list: Candidate[] = [];
  const uid = isRoot ? SANDBOX_UID : null;
  if (unshare) {
    if (isRoot) list.push({ prefix: [unshare, ...ns], dropUid: uid, userNamespace: false });
    list.push({ prefix: [unshare, ...user, ...ns, '--mount-proc'], dropUid: null, userNamespace: true });
    if (isRoot) list.push({ prefix: [unshare, '--net'], dropUid: uid, userNamespace: false });
    list.push({ prefix: [unshare, ...user, '--net'], dropUid: null, userNamespace: true });
  }
  if (isRoot) list.push({ prefix: [], dropUid: uid, userNamespace: false });
  list.push({ prefix: [], dropUid: null, userNamespace: false });
  return list;
}

/**
 * Probes the isolation available here (once per process; later calls return the cached answer). Each
 * candidate, strongest first, runs a tiny Python program; the first that works is used, and what is really in
 * effect (namespaces, uid) is read back from inside rather than assumed from the flags.
 */
export function sandboxInfo(): SandboxInfo {
  if (cachedInfo) return cachedInfo;
  const python = findPython();
  const notes: string[] = [];
  if (!python) {
    notes.push('no python3 found (set DISTILLERY_SANDBOX_PYTHON)');
    cachedInfo = { python: null, prefix: [], networkNamespace: false, ipcNamespace: false, pidNamespace: false, privateProc: false, userNamespace: false, dropUid: null, notes };
    return cachedInfo;
  }
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const namespacesOff = process.env.DISTILLERY_SANDBOX_NAMESPACES === 'off';
  const unshare = process.platform === 'linux' && !namespacesOff ? findOnPath('unshare') : null;
  if (namespacesOff) notes.push('namespaces turned off by DISTILLERY_SANDBOX_NAMESPACES=off');
  else if (process.platform === 'linux' && !unshare) notes.push('unshare not found: no namespaces');
  const hostNet = readNs('net');
  const hostPid = readNs('pid');
  const hostIpc = readNs('ipc');
  for (const c of candidates(isRoot, unshare)) {
    const r = spawnSync(c.prefix[0] ?? python, [...c.prefix.slice(1), ...(c.prefix.length ? [python] : []), ...PYTHON_FLAGS, '-c', PROBE_SOURCE, String(c.dropUid ?? -1)], {
      env: { PATH: MIN_PATH, LANG: 'C.UTF-8' },
      cwd: tmpdir(),
      timeout: 10_000,
      encoding: 'utf8',
    });
    const label = c.prefix.length ? c.prefix.slice(1).join(' ') : 'no namespaces';
    const fields = (r.stdout ?? '').trim().split(/\s+/);
    if (r.status !== 0 || fields.length < 5) {
      const why = (r.error?.message ?? r.stderr ?? '').trim().split('\n').pop() ?? '';
      notes.push(`${label}${c.dropUid !== null ? ` (uid ${c.dropUid})` : ''}: unavailable (${why || `exit ${r.status ?? r.signal}`})`);
      continue;
    }
    const [net, pid, ipc, uid, procs] = fields as [string, string, string, string, string];
    const pidNamespace = pid !== '-' && hostPid !== null && pid !== hostPid;
    cachedInfo = {
      python,
      prefix: c.prefix,
      networkNamespace: net !== '-' && hostNet !== null && net !== hostNet,
      ipcNamespace: ipc !== '-' && hostIpc !== null && ipc !== hostIpc,
      pidNamespace,
      privateProc: pidNamespace && procs !== '-' && Number(procs) <= 2,
      userNamespace: c.userNamespace,
      dropUid: c.dropUid !== null && Number(uid) === c.dropUid ? c.dropUid : null,
      notes,
    };
    return cachedInfo;
  }
  notes.push('python3 could not be started');
  cachedInfo = { python: null, prefix: [], networkNamespace: false, ipcNamespace: false, pidNamespace: false, privateProc: false, userNamespace: false, dropUid: null, notes };
  return cachedInfo;
}

function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && n % 1024 === 0 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n} ${units[i]}`;
}

function resolveLimits(limits?: Partial<SandboxLimits>): SandboxLimits {
  const l = { ...DEFAULT_LIMITS, ...(limits ?? {}) };
  for (const [k, v] of Object.entries(l)) {
    if (!Number.isFinite(v) || v <= 0) throw new RangeError(`sandbox limit ${k} must be a positive number, got ${v}`);
  }
  return l;
}

/**
 * One line saying what isolation is active, e.g. "process group + pid namespace + rlimits (cpu 10s, as
 * 1 GiB, fsize 16 MiB, nofile 64, nproc 128) + network namespace + uid 65534 (nobody) + scrubbed env + temp
 * cwd". Recorded next to every score so a reader knows what the numbers were measured under.
 */
export function sandboxLevel(limits?: Partial<SandboxLimits>): string {
  const info = sandboxInfo();
  const l = resolveLimits(limits);
  if (!info.python) return `unavailable: ${info.notes.join('; ')}`;
  const parts = ['process group'];
  if (info.pidNamespace) parts.push(info.privateProc ? 'pid namespace (private /proc)' : 'pid namespace');
  const rl = [`cpu ${l.cpuSeconds}s`, `as ${formatBytes(l.memoryBytes)}`, `fsize ${formatBytes(l.fileSizeBytes)}`, `nofile ${l.openFiles}`];
  if (info.dropUid !== null) rl.push(`nproc ${l.processes}`);
  parts.push(`rlimits (${rl.join(', ')})`);
  parts.push(`wall ${l.wallMs / 1000}s`);
  parts.push(info.networkNamespace ? 'network namespace' : 'NO network isolation');
  if (info.ipcNamespace) parts.push('ipc namespace');
  if (info.dropUid !== null) parts.push(`uid ${info.dropUid}${info.dropUid === SANDBOX_UID ? ' (nobody)' : ''}`);
  else if (info.userNamespace) parts.push('user namespace (same uid outside)');
  else parts.push('same uid as Distillery');
  parts.push('scrubbed env', 'temp cwd');
  const nm = nodeMemory(l);
  return `${parts.join(' + ')}; javascript: ${sandboxNode()} (as ${formatBytes(nm.addressSpace)}, heap ${nm.heapMb} MiB)`;
}

/** Keeps the first and last halves of a stream up to a cap, and counts everything. */
class OutputCapture {
  private head: Buffer[] = [];
  private headLen = 0;
  private tail: Buffer[] = [];
  private tailLen = 0;
  total = 0;
  private readonly headCap: number;
  private readonly tailCap: number;

  constructor(cap: number) {
    this.headCap = Math.floor(cap / 2);
    this.tailCap = cap - this.headCap;
  }

  push(chunk: Buffer): void {
    this.total += chunk.length;
    if (this.headLen < this.headCap) {
      const take = Math.min(this.headCap - this.headLen, chunk.length);
      this.head.push(chunk.subarray(0, take));
      this.headLen += take;
      chunk = chunk.subarray(take);
    }
    if (chunk.length === 0) return;
    this.tail.push(chunk);
    this.tailLen += chunk.length;
    while (this.tail.length > 1 && this.tailLen - this.tail[0]!.length >= this.tailCap) {
      this.tailLen -= this.tail.shift()!.length;
    }
  }

  result(): { text: string; truncated: boolean } {
    const head = Buffer.concat(this.head);
    let tail = Buffer.concat(this.tail);
    if (this.total <= this.headCap + this.tailCap) return { text: Buffer.concat([head, tail]).toString('utf8'), truncated: false };
    tail = tail.subarray(tail.length - this.tailCap);
    const omitted = this.total - head.length - tail.length;
    return { text: `${head.toString('utf8')}\n[... ${omitted} bytes omitted ...]\n${tail.toString('utf8')}`, truncated: true };
  }
}

const activeGroups = new Set<number>();
let exitHookInstalled = false;

function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // already gone
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Sandboxes live in their own process groups, so a terminal's Ctrl-C does not reach them; kill them when
  // Distillery exits. (If Distillery is killed outright, each launcher sees its stdin close and kills its own
  // group.)
  process.once('exit', () => {
    for (const g of activeGroups) killGroup(g);
  });
}

function signalName(n: number): string {
  for (const [name, num] of Object.entries(osConstants.signals)) if (num === n) return name;
  return `signal ${n}`;
}

async function removeDir(dir: string): Promise<string | undefined> {
  try {
    await rm(dir, { recursive: true, force: true, maxRetries: 2 });
    return undefined;
  } catch {
    // A program can chmod its own directories to 000; restore access and try again.
    const fix = async (d: string): Promise<void> => {
      await chmod(d, 0o700).catch(() => {});
      for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
        if (e.isDirectory()) await fix(join(d, e.name));
      }
    };
    await fix(dir);
    try {
      await rm(dir, { recursive: true, force: true, maxRetries: 2 });
      return undefined;
    } catch (e) {
      return `temp dir ${dir} could not be removed: ${(e as Error).message}`;
    }
  }
}

interface Report {
  child?: string;
  exit?: number;
  signal?: number;
  cpu?: number;
  setupError?: string;
}

function parseReport(text: string, nonce: string): Report {
  const r: Report = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith(nonce + ' ')) continue;
    const words = line.slice(nonce.length + 1).split(' ');
    if (words[0] === 'child') r.child = words.slice(1).join(' ');
    else if (words[0] === 'exit' || words[0] === 'signal') {
      r[words[0]] = Number(words[1]);
      if (words[2] === 'cpu') r.cpu = Number(words[3]);
    } else if (words[0] === 'setup-error') r.setupError = words.slice(1).join(' ');
  }
  return r;
}

/** The environment a sandboxed process gets: built from scratch, with `dir` as HOME and TMPDIR. */
function sandboxEnv(dir: string): Record<string, string> {
  return {
    PATH: MIN_PATH,
    HOME: dir,
    TMPDIR: dir,
    LANG: 'C.UTF-8',
    LC_ALL: 'C.UTF-8',
    PYTHONHASHSEED: '0',
    PYTHONIOENCODING: 'utf-8',
  };
}

/**
 * After a sandbox process has exited: closes its stdin and, CLOSE_GRACE_MS later, stops waiting for its other
 * pipes and calls `finish` — a process that escaped the group (possible only without a PID namespace) may
 * hold them open. Returns the timer, which `finish` clears when the pipes close first.
 */
function closeAfterExit(child: ChildProcess, reportStream: NodeJS.ReadableStream, finish: () => void): NodeJS.Timeout {
  child.stdin?.destroy();
  return setTimeout(() => {
    child.stdout?.destroy();
    child.stderr?.destroy();
    reportStream.removeAllListeners('data');
    finish();
  }, CLOSE_GRACE_MS);
}

function errorResult(message: string, durationMs = 0): SandboxResult {
  return { status: 'error', exitCode: null, signal: null, durationMs, stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false, note: message };
}

/** Runs one Python program in the sandbox. Never throws for the program's behaviour; sandbox failures are status 'error'. */
export async function runProgram(program: Program, limits?: Partial<SandboxLimits>): Promise<SandboxResult> {
  const spec = specOf(program);
  const l = resolveLimits(limits);
  const info = sandboxInfo();
  if (!info.python) return errorResult(`sandbox unavailable: ${info.notes.join('; ')}`);

  let dir: string;
  try {
    dir = await mkdtemp(join(tmpdir(), 'distillery-sbx-'));
  } catch (e) {
    return errorResult(`cannot create a temp dir: ${(e as Error).message}`);
  }
  const started = Date.now();
  try {
    const js = spec.language === 'javascript';
    const file = join(dir, js ? 'program.js' : 'program.py');
    await writeFile(file, spec.code, { mode: 0o600 });
    const stdinFile = spec.stdin !== undefined ? join(dir, 'stdin.txt') : undefined;
    if (stdinFile) await writeFile(stdinFile, spec.stdin!, { mode: 0o600 });
    if (info.dropUid !== null) {
      await chown(dir, info.dropUid, info.dropUid);
      await chown(file, info.dropUid, info.dropUid);
      if (stdinFile) await chown(stdinFile, info.dropUid, info.dropUid);
    }
    const nm = nodeMemory(l);
    const nonce = randomBytes(16).toString('hex');
    const args = [
      ...info.prefix.slice(1),
      ...(info.prefix.length ? [info.python] : []),
      ...PYTHON_FLAGS,
      '-c',
      LAUNCHER_SOURCE,
      file,
      String(Math.ceil(l.cpuSeconds)),
      String(js ? nm.addressSpace : Math.floor(l.memoryBytes)),
      String(Math.floor(l.fileSizeBytes)),
      String(Math.floor(l.openFiles)),
      String(Math.floor(l.processes)),
      String(info.dropUid ?? -1),
      spec.language,
      stdinFile ?? '-',
      js ? sandboxNode() : '-',
      String(nm.heapMb),
    ];
    const result = await execute(info.prefix[0] ?? info.python, args, dir, sandboxEnv(dir), nonce, l, started, spec.language);
    const cleanup = await removeDir(dir);
    if (cleanup) result.note = result.note ? `${result.note}; ${cleanup}` : cleanup;
    return result;
  } catch (e) {
    await removeDir(dir);
    return errorResult(`sandbox failure: ${(e as Error).message}`, Date.now() - started);
  }
}

function execute(
  command: string,
  args: string[],
  cwd: string,
  env: Record<string, string>,
  nonce: string,
  l: SandboxLimits,
  started: number,
  language: SandboxLanguage = 'python',
): Promise<SandboxResult> {
  return new Promise((resolve) => {
    installExitHook();
    const child = spawn(command, args, { cwd, env, detached: true, stdio: ['pipe', 'pipe', 'pipe', 'pipe'] });
    const pgid = child.pid;
    const out = new OutputCapture(l.outputBytes);
    const err = new OutputCapture(l.outputBytes);
    const reports: Buffer[] = [];
    let reportLen = 0;
    let timedOut = false;
    let flooded = false;
    let spawnError: Error | undefined;
    let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let settled = false;
    let graceTimer: NodeJS.Timeout | undefined;

    if (pgid !== undefined) activeGroups.add(pgid);
    const kill = (): void => {
      if (pgid !== undefined) killGroup(pgid);
    };
    const wallTimer = setTimeout(() => {
      timedOut = true;
      kill();
    }, l.wallMs);

    const onOutput = (cap: OutputCapture) => (chunk: Buffer) => {
      cap.push(chunk);
      if (!flooded && out.total + err.total > l.fileSizeBytes) {
        flooded = true;
        kill();
      }
    };
    child.stdout!.on('data', onOutput(out));
    child.stderr!.on('data', onOutput(err));
    const reportStream = child.stdio[3] as NodeJS.ReadableStream;
    reportStream.on('data', (chunk: Buffer) => {
      if (reportLen < 8192) {
        reports.push(chunk);
        reportLen += chunk.length;
      }
    });
    for (const s of [child.stdin, child.stdout, child.stderr, reportStream]) (s as NodeJS.EventEmitter | null)?.on('error', () => {});
    child.stdin!.write(nonce + '\n');

    const finish = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(wallTimer);
      if (graceTimer) clearTimeout(graceTimer);
      if (pgid !== undefined) activeGroups.delete(pgid);
      const durationMs = Date.now() - started;
      const o = out.result();
      const e = err.result();
      const base = { durationMs, stdout: o.text, stderr: e.text, stdoutTruncated: o.truncated, stderrTruncated: e.truncated };
      if (spawnError) {
        resolve({ ...base, status: 'error', exitCode: null, signal: null, note: `could not start the sandbox: ${spawnError.message}` });
        return;
      }
      resolve({ ...base, ...classify(parseReport(Buffer.concat(reports).toString('utf8'), nonce), exited, timedOut, flooded, e.text, l, language) });
    };

    child.on('error', (e) => {
      spawnError = e;
      finish();
    });
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      // Anything the program left running in its process group goes now (with a PID namespace the kernel
      // has already done this when the supervisor, PID 1, exited). The group id cannot have been reused
      // while any member is alive; if none is, the kill finds nothing (ESRCH), barring a pid wrap-around in
      // the microseconds since the leader was reaped.
      kill();
      graceTimer = closeAfterExit(child, reportStream, finish);
    });
    child.on('close', finish);
  });
}

function classify(
  r: Report,
  exited: { code: number | null; signal: NodeJS.Signals | null } | undefined,
  timedOut: boolean,
  flooded: boolean,
  stderr: string,
  l: SandboxLimits,
  language: SandboxLanguage = 'python',
): Pick<SandboxResult, 'status' | 'exitCode' | 'signal' | 'note'> {
  const exitCode = r.exit ?? null;
  const signal = r.signal !== undefined ? signalName(r.signal) : null;
  if (timedOut) return { status: 'timeout', exitCode, signal: signal ?? 'SIGKILL', note: `wall time limit (${l.wallMs / 1000} s)` };
  if (flooded) return { status: 'fail', exitCode, signal: signal ?? 'SIGKILL', note: `killed: wrote more than ${formatBytes(l.fileSizeBytes)} to stdout/stderr` };
  if (r.setupError) return { status: 'error', exitCode, signal, note: `sandbox setup failed: ${r.setupError}` };
  if (r.exit === undefined && r.signal === undefined) {
    const how = exited ? (exited.signal ? `signal ${exited.signal}` : `exit ${exited.code}`) : 'no exit';
    const last = stderr.trim().split('\n').pop() ?? '';
    return { status: 'error', exitCode: exited?.code ?? null, signal: exited?.signal ?? null, note: `the sandbox launcher did not report (${how})${last ? `: ${last}` : ''}` };
  }
  if (language === 'javascript') return classifyNode(r, exitCode, signal, stderr, l);
  if (r.exit === 0 && r.child === 'pass') return { status: 'pass', exitCode: 0, signal: null };
  if (r.child === 'memory') return { status: 'memory', exitCode, signal, note: `MemoryError (address space limit ${formatBytes(l.memoryBytes)})` };
  if (r.signal !== undefined) {
    const cpu = r.cpu ?? 0;
    if (signal === 'SIGXCPU' || (signal === 'SIGKILL' && cpu >= l.cpuSeconds)) {
      return { status: 'timeout', exitCode, signal, note: `CPU time limit (${l.cpuSeconds} s)` };
    }
    if (signal === 'SIGKILL') return { status: 'memory', exitCode, signal, note: 'killed by SIGKILL (most likely the kernel OOM killer)' };
  }
  if (/\bMemoryError\b/.test(stderr.slice(-2048))) return { status: 'memory', exitCode, signal, note: 'MemoryError in the output' };
  let note: string | undefined;
  if (r.child?.startsWith('exit ')) note = `the program raised SystemExit(${r.child.slice(5)}) before its end, so the tests did not all run`;
  else if (r.exit === 0 && r.child === undefined) note = 'the program exited (os._exit) before its end, so the tests did not all run';
  else if (signal) note = `killed by ${signal}`;
  return { status: 'fail', exitCode, signal, note };
}

const NODE_MEMORY_ERROR = /JavaScript heap out of memory|Fatal process (?:out of memory|OOM)|Array buffer allocation failed|RangeError: WebAssembly\.Memory\(\): could not allocate/;

/**
 * A node program's outcome, from its exit status (node was exec'd in place of the launcher's child, so there is
 * no in-process report): exit 0 = pass; 97 = exited with 0 before the end of its top level (JS_RUNNER_SOURCE);
 * V8's out-of-memory messages = memory; the CPU/SIGKILL rules as for Python.
 */
function classifyNode(r: Report, exitCode: number | null, signal: string | null, stderr: string, l: SandboxLimits): Pick<SandboxResult, 'status' | 'exitCode' | 'signal' | 'note'> {
  if (r.exit === 0) return { status: 'pass', exitCode: 0, signal: null };
  if (NODE_MEMORY_ERROR.test(stderr.slice(-8192))) return { status: 'memory', exitCode, signal, note: `out of memory (V8 heap ${nodeMemory(l).heapMb} MiB, address space ${formatBytes(nodeMemory(l).addressSpace)})` };
  if (r.signal !== undefined) {
    const cpu = r.cpu ?? 0;
    if (signal === 'SIGXCPU' || (signal === 'SIGKILL' && cpu >= l.cpuSeconds)) return { status: 'timeout', exitCode, signal, note: `CPU time limit (${l.cpuSeconds} s)` };
    if (signal === 'SIGKILL') return { status: 'memory', exitCode, signal, note: 'killed by SIGKILL (most likely the kernel OOM killer)' };
    return { status: 'fail', exitCode, signal, note: `killed by ${signal}` };
  }
  if (r.exit === 97) return { status: 'fail', exitCode, signal, note: 'the program exited before its end, so the tests did not all run' };
  return { status: 'fail', exitCode, signal, note: `node exited with code ${r.exit}` };
}

/** Counters of batch mode since the process started (for reports and tests). */
export const batchStats = { batches: 0, programs: 0, brokenBatches: 0, rerunPrograms: 0 };

/** One frame of the batch supervisor (see BATCH_SOURCE). */
interface BatchFrame {
  i?: number;
  start?: number;
  pgid?: number | null;
  setupError?: string;
  outcome?: string;
  exit?: number;
  signal?: number;
  cpu?: number;
  timedOut?: boolean;
  flooded?: boolean;
  ms?: number;
  stdout?: string;
  stderr?: string;
  stdoutTruncated?: boolean;
  stderrTruncated?: boolean;
  cleanup?: string;
}

/** Time allowed beyond the wall limit for the supervisor's own work (start-up, cleanup) between two frames. */
const BATCH_SLACK_MS = 10_000;

function batchResult(f: BatchFrame, l: SandboxLimits, language: SandboxLanguage = 'python'): SandboxResult {
  const report: Report = {};
  if (f.outcome?.startsWith('setup-error ')) report.setupError = f.outcome.slice('setup-error '.length);
  else if (f.outcome !== undefined) report.child = f.outcome;
  if (f.setupError !== undefined) report.setupError = f.setupError;
  if (typeof f.exit === 'number') report.exit = f.exit;
  if (typeof f.signal === 'number') report.signal = f.signal;
  if (typeof f.cpu === 'number') report.cpu = f.cpu;
  const stdout = typeof f.stdout === 'string' ? f.stdout : '';
  const stderr = typeof f.stderr === 'string' ? f.stderr : '';
  const result: SandboxResult = {
    ...classify(report, undefined, f.timedOut === true, f.flooded === true, stderr, l, language),
    durationMs: typeof f.ms === 'number' ? f.ms : 0,
    stdout,
    stderr,
    stdoutTruncated: f.stdoutTruncated === true,
    stderrTruncated: f.stderrTruncated === true,
  };
  if (f.cleanup) result.note = result.note ? `${result.note}; ${f.cleanup}` : f.cleanup;
  return result;
}

/**
 * Runs several programs in one sandbox (batch mode; docs/sandbox.md): one supervisor process, set up exactly
 * like runProgram's (namespaces, uid drop, rlimits), forks a fresh child per program, in input order, each with
 * its own temp directory, wall/CPU/memory limits and output capture, and cleans up after each before the next.
 * Results come back in input order, with the same statuses as runProgram; `onResult(i, r)` is called as each
 * one arrives. If the supervisor dies or stops reporting (a program killed it, it hung, it could not be set up),
 * the programs it had not reported are run again one by one with runProgram, so none is reported wrongly.
 */
export async function runBatch(
  programs: readonly Program[],
  limits?: Partial<SandboxLimits>,
  onResult?: (index: number, result: SandboxResult) => void,
): Promise<SandboxResult[]> {
  const l = resolveLimits(limits);
  const results = new Array<SandboxResult | undefined>(programs.length);
  const info = sandboxInfo();
  if (programs.length === 0) return [];
  const deliver = (i: number, r: SandboxResult): void => {
    if (results[i] !== undefined) return;
    results[i] = r;
    onResult?.(i, r);
  };
  if (!info.python) {
    programs.forEach((_, i) => deliver(i, errorResult(`sandbox unavailable: ${info.notes.join('; ')}`)));
    return results as SandboxResult[];
  }
  batchStats.batches++;
  batchStats.programs += programs.length;
  let dir: string | undefined;
  let broken: string | undefined;
  try {
    dir = await mkdtemp(join(tmpdir(), 'distillery-sbx-'));
    if (info.dropUid !== null) await chown(dir, info.dropUid, info.dropUid);
    broken = await superviseBatch(info, dir, programs, l, deliver);
  } catch (e) {
    broken = `sandbox failure: ${(e as Error).message}`;
  } finally {
    if (dir) await removeDir(dir);
  }
  const missing = programs.map((_, i) => i).filter((i) => results[i] === undefined);
  if (missing.length > 0) {
    batchStats.brokenBatches++;
    batchStats.rerunPrograms += missing.length;
    const why = `run again on its own: ${broken ?? 'the batch supervisor did not report it'}`;
    for (const i of missing) {
      const r = await runProgram(programs[i]!, l);
      r.note = r.note ? `${r.note} (${why})` : why;
      deliver(i, r);
    }
  }
  return results as SandboxResult[];
}

/** Runs one supervisor; resolves with why it ended early (or undefined when every program was reported). */
function superviseBatch(
  info: SandboxInfo,
  dir: string,
  programs: readonly Program[],
  l: SandboxLimits,
  deliver: (i: number, r: SandboxResult) => void,
): Promise<string | undefined> {
  const specs = programs.map(specOf);
  const nm = nodeMemory(l);
  return new Promise((resolve) => {
    installExitHook();
    const nonce = randomBytes(16).toString('hex');
    const args = [
      ...info.prefix.slice(1),
      ...(info.prefix.length ? [info.python!] : []),
      ...PYTHON_FLAGS,
      '-c',
      BATCH_SOURCE,
      ...[l.cpuSeconds, l.memoryBytes, l.fileSizeBytes, l.openFiles, l.processes].map((v, k) => String(k === 0 ? Math.ceil(v) : Math.floor(v))),
      String(info.dropUid ?? -1),
      String(Math.ceil(l.wallMs)),
      String(Math.floor(l.outputBytes)),
      sandboxNode(),
      String(nm.heapMb),
      String(specs.some((s) => s.language === 'javascript') ? nm.addressSpace : Math.floor(l.memoryBytes)),
    ];
    const child = spawn(info.prefix[0] ?? info.python!, args, { cwd: dir, env: sandboxEnv(dir), detached: true, stdio: ['pipe', 'pipe', 'pipe', 'pipe'] });
    const pgid = child.pid;
    if (pgid !== undefined) activeGroups.add(pgid);
    let reported = 0;
    let why: string | undefined;
    let inFlightGroup: number | null = null;
    let settled = false;
    let graceTimer: NodeJS.Timeout | undefined;
    let watchdog: NodeJS.Timeout | undefined;
    const errTail = new OutputCapture(4096);

    const stop = (reason: string): void => {
      why ??= reason;
      if (pgid !== undefined) killGroup(pgid);
      if (inFlightGroup !== null) killGroup(inFlightGroup);
    };
    const arm = (): void => {
      if (watchdog) clearTimeout(watchdog);
      watchdog = setTimeout(() => stop(`the batch supervisor stopped reporting for ${(l.wallMs + BATCH_SLACK_MS) / 1000} s`), l.wallMs + BATCH_SLACK_MS);
    };
    arm();

    let buf: Buffer = Buffer.alloc(0);
    const onFrame = (f: BatchFrame): void => {
      if (typeof f.start === 'number') {
        if (inFlightGroup !== null) activeGroups.delete(inFlightGroup);
        inFlightGroup = typeof f.pgid === 'number' && f.pgid > 1 ? f.pgid : null;
        if (inFlightGroup !== null) activeGroups.add(inFlightGroup);
        return;
      }
      if (f.setupError !== undefined && f.i === undefined) {
        stop(`batch supervisor setup failed: ${f.setupError}`);
        return;
      }
      const i = f.i;
      if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i >= programs.length) {
        stop('the batch supervisor sent a malformed report');
        return;
      }
      if (inFlightGroup !== null) activeGroups.delete(inFlightGroup);
      inFlightGroup = null;
      reported++;
      deliver(i, batchResult(f, l, specs[i]!.language));
    };
    const reportStream = child.stdio[3] as NodeJS.ReadableStream;
    reportStream.on('data', (chunk: Buffer) => {
      if (why) return;
      arm();
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      for (;;) {
        const nl = buf.indexOf(10);
        if (nl < 0) {
          if (buf.length > 256) stop('the batch supervisor sent a malformed report');
          return;
        }
        const header = buf.subarray(0, nl).toString('latin1');
        const m = /^([0-9a-f]{32}) (\d{1,10})$/.exec(header);
        if (!m || m[1] !== nonce) {
          stop('the batch supervisor sent a malformed report');
          return;
        }
        const len = Number(m[2]);
        if (buf.length < nl + 1 + len) return;
        const body = buf.subarray(nl + 1, nl + 1 + len).toString('utf8');
        buf = buf.subarray(nl + 1 + len);
        let frame: BatchFrame;
        try {
          frame = JSON.parse(body) as BatchFrame;
        } catch {
          stop('the batch supervisor sent a malformed report');
          return;
        }
        onFrame(frame);
        if (why) return;
      }
    });
    child.stdout!.on('data', () => {}); // the supervisor itself writes nothing; children have their own pipes
    child.stderr!.on('data', (c: Buffer) => errTail.push(c));
    for (const s of [child.stdin, child.stdout, child.stderr, reportStream]) (s as NodeJS.EventEmitter | null)?.on('error', () => {});
    const payload = Buffer.from(JSON.stringify(specs.map((s) => (s.language === 'python' && s.stdin === undefined ? s.code : s))), 'utf8');
    child.stdin!.write(`${nonce}\n${payload.length}\n`);
    child.stdin!.write(payload);

    const finish = (): void => {
      if (settled) return;
      settled = true;
      if (watchdog) clearTimeout(watchdog);
      if (graceTimer) clearTimeout(graceTimer);
      if (pgid !== undefined) activeGroups.delete(pgid);
      if (inFlightGroup !== null) {
        killGroup(inFlightGroup);
        activeGroups.delete(inFlightGroup);
      }
      if (reported < programs.length && !why) {
        const last = errTail.result().text.trim().split('\n').pop() ?? '';
        why = `the batch supervisor ended after ${reported} of ${programs.length} programs${last ? `: ${last}` : ''}`;
      }
      resolve(reported < programs.length ? why : undefined);
    };
    child.on('error', (e) => {
      why ??= `could not start the batch supervisor: ${e.message}`;
      finish();
    });
    child.on('exit', () => {
      // Whatever is left goes (inside a PID namespace the kernel has already done it: the supervisor was PID 1).
      if (pgid !== undefined) killGroup(pgid);
      if (inFlightGroup !== null) killGroup(inFlightGroup);
      graceTimer = closeAfterExit(child, reportStream, finish);
    });
    child.on('close', finish);
  });
}

export interface RunManyOptions {
  /** Programs run at once (default: the number of CPU cores available). */
  concurrency?: number;
  limits?: Partial<SandboxLimits>;
  /**
   * Programs per batch (one sandboxed supervisor each, see runBatch). Default: up to 32, fewer when there are
   * few programs, so that every slot gets work. 1 runs each program in its own sandbox process (runProgram).
   */
  batchSize?: number;
}

/** The default concurrency (CPU cores available) or the given one, at least 1. */
export function resolveConcurrency(concurrency?: number): number {
  return Math.max(1, Math.floor(concurrency ?? availableParallelism()));
}

/**
 * The limits runMany really uses at a given concurrency: defaults filled in, and the process limit raised to
 * 4 × concurrency, because RLIMIT_NPROC counts every process of the sandbox uid, across concurrent runs.
 */
export function limitsForConcurrency(limits: Partial<SandboxLimits> | undefined, concurrency: number): SandboxLimits {
  const base = resolveLimits(limits);
  return { ...base, processes: Math.max(base.processes, 4 * concurrency) };
}

const MAX_BATCH = 32;

/** The batch size runMany uses: the given one, else up to 32 with at least two batches per slot when possible. */
export function resolveBatchSize(programs: number, concurrency: number, batchSize?: number): number {
  if (batchSize !== undefined) return Math.max(1, Math.floor(batchSize));
  return Math.max(1, Math.min(MAX_BATCH, Math.ceil(programs / (2 * concurrency))));
}

/**
 * Runs programs with bounded parallelism, in batches (runBatch): up to `concurrency` batches at once, each
 * taking the next chunk of programs. Results come back in input order; onProgress is called after each program
 * (with its index in `programs`).
 */
export async function runMany(
  programs: readonly Program[],
  opts: RunManyOptions = {},
  onProgress?: (done: number, total: number, last: SandboxResult, index: number) => void,
): Promise<SandboxResult[]> {
  const concurrency = resolveConcurrency(opts.concurrency);
  const limits = limitsForConcurrency(opts.limits, concurrency);
  const size = resolveBatchSize(programs.length, concurrency, opts.batchSize);
  const results = new Array<SandboxResult>(programs.length);
  let next = 0;
  let done = 0;
  const record = (i: number, r: SandboxResult): void => {
    results[i] = r;
    done++;
    onProgress?.(done, programs.length, r, i);
  };
  const worker = async (): Promise<void> => {
    while (next < programs.length) {
      const start = next;
      next = Math.min(programs.length, start + size);
      if (size === 1) record(start, await runProgram(programs[start]!, limits));
      else await runBatch(programs.slice(start, next), limits, (j, r) => record(start + j, r));
    }
  };
  const chunks = Math.ceil(programs.length / size);
  await Promise.all(Array.from({ length: Math.min(concurrency, chunks) }, worker));
  return results;
}
