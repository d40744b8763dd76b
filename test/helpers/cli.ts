import { Command } from 'commander';

/**
 * Runs CLI commands in-process: `register` adds them to a fresh program, `argv` is what follows
 * `distillery`. Captures what they print and the exit code they set; `home` sets DISTILLERY_HOME for the
 * call only. Only string writes are captured: the test runner talks to its parent through stdout in binary
 * chunks, which pass through.
 */
export async function runCli(
  register: (program: Command) => void,
  argv: string[],
  opts: { home?: string } = {},
): Promise<{ out: string; err: string; code: number }> {
  const program = new Command().name('distillery').exitOverride();
  register(program);
  let out = '';
  let err = '';
  const ow = process.stdout.write.bind(process.stdout);
  const ew = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((s: string | Uint8Array, ...rest: never[]) => (typeof s === 'string' ? ((out += s), true) : ow(s, ...rest))) as typeof process.stdout.write;
  process.stderr.write = ((s: string | Uint8Array, ...rest: never[]) => (typeof s === 'string' ? ((err += s), true) : ew(s, ...rest))) as typeof process.stderr.write;
  const saved = process.env.DISTILLERY_HOME;
  if (opts.home !== undefined) process.env.DISTILLERY_HOME = opts.home;
  process.exitCode = undefined;
  try {
    await program.parseAsync(argv, { from: 'user' });
  } finally {
    process.stdout.write = ow;
    process.stderr.write = ew;
    if (saved === undefined) delete process.env.DISTILLERY_HOME;
    else process.env.DISTILLERY_HOME = saved;
  }
  const code = typeof process.exitCode === 'number' ? process.exitCode : 0;
  process.exitCode = undefined;
  return { out, err, code };
}
