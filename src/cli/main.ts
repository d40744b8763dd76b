import { Command, CommanderError } from 'commander';
import { isUserError } from '../core/errors.js';
import { registerVaultCommands } from './vault-commands.js';
import { registerDemoCommand } from './demo-command.js';
import { registerSsdCommand } from './ssd-command.js';
import { registerOnPolicyCommands } from './onpolicy-commands.js';
import { registerEvalCommand } from './eval-command.js';
import { registerDoctorCommand } from './doctor-command.js';
import { registerMirrorCommand } from './mirror-command.js';
import { registerExportCommand } from './export-command.js';
import { registerServeCommand } from './serve-command.js';
import { registerReportCommand } from './report-command.js';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('distillery')
    .description(
      'Keep open-weight language models alive and improving on your own hardware: a verified vault, ' +
        'self-distillation recipes and honest evaluation. Offline; models live in $DISTILLERY_HOME (default ~/.distillery).',
    )
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  registerDemoCommand(program);
  registerVaultCommands(program);
  registerSsdCommand(program);
  registerOnPolicyCommands(program);
  registerEvalCommand(program);
  registerReportCommand(program);
  registerExportCommand(program);
  registerServeCommand(program);
  registerMirrorCommand(program);
  registerDoctorCommand(program);
  program.addHelpText(
    'after',
    `
Start here:
  distillery demo            the whole loop on a tiny model, on a CPU, in a few minutes
  distillery vault --help    keep models safe: import, verify, bundles, lineage tree, gc
  distillery export --help   a model to GGUF for llama.cpp, Ollama (--for ollama) and LM Studio (--for lmstudio)
  distillery serve --model NAME   an OpenAI-compatible API for vault models (engine or llama.cpp)
  distillery mirror          serve the vault to hf download, llama.cpp -hf, ollama pull and other vaults
  distillery ssd --help      self-distil a model on its own samples
  distillery sdft --help     learn from demonstrations on-policy (also: opsd, distill)`,
  );
  return program;
}

/** Runs the CLI; returns the process exit code. Errors meant for people print without a stack trace. */
export async function main(argv: string[]): Promise<number> {
  // `distillery … | head` closes the pipe early: stop quietly, as other command-line tools do.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode;
    if (isUserError(e)) {
      process.stderr.write(`\nerror: ${e.message}\n`);
      if (e.hint) process.stderr.write(`${e.hint}\n`);
      return 1;
    }
    process.stderr.write(`\ninternal error (please report): ${(e as Error)?.stack ?? String(e)}\n`);
    return 2;
  }
}
