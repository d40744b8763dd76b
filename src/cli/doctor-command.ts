import type { Command } from 'commander';
import { EngineWorker } from '../engine/worker.js';
import { engineCommand } from '../engine/python.js';
import { distilleryHome } from '../core/paths.js';
import { sandboxLevel } from '../eval/sandbox.js';

export function registerDoctorCommand(program: Command): void {
  program
    .command('doctor')
    .description('Check the installation: the Python engine, its device and precision, the sandbox level, the home folder.')
    .option('--json', 'print the findings as JSON')
    .action(async (opts: { json?: boolean }) => {
      const { python } = engineCommand();
      const health = await EngineWorker.using((worker) => worker.health());
      const report = { home: distilleryHome(), python, engine: health, sandbox: await sandboxLevel() };
      if (opts.json) {
        process.stdout.write(JSON.stringify(report, null, 2) + '\n');
        return;
      }
      console.log(`home      ${report.home}`);
      console.log(`engine    ${python} (python ${health.python}, torch ${health.torch}, transformers ${health.transformers})`);
      console.log(`device    ${health.device}${health.cuda ? ` (bf16 ${health.bf16 ? 'yes' : 'no'})` : ''}`);
      console.log(`sandbox   ${report.sandbox}`);
    });
}
