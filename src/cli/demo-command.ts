import type { Command } from 'commander';
import { EngineWorker } from '../engine/worker.js';
import { runDemo } from '../demo/run-demo.js';
import { renderDemoTable } from '../demo/report.js';
import { stderrLog } from './format.js';

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description(
      'The embedded default, offline, on a CPU: generate a code-task suite, train a tiny model from scratch, archive it, ' +
        'evaluate it, self-distil it with SSD, evaluate again, and report before/after with confidence intervals.',
    )
    .option('--fast', 'a smaller, quicker run (for tests; no claim about the result)')
    .option('--json', 'print the summary as one JSON object on stdout')
    .option('-q, --quiet', 'no progress output')
    .addHelpText(
      'after',
      `
The base model is cached in the vault (as demo-coder) and reused by later runs; every stage resumes if interrupted.
The report (HTML with a chart, and JSON) is written into the SSD run folder under $DISTILLERY_HOME/runs/.`,
    )
    .action(async (opts: { fast?: boolean; json?: boolean; quiet?: boolean }) => {
      const quiet = Boolean(opts.quiet);
      await EngineWorker.using(async (worker) => {
        const { summary, reportHtml, reportJson } = await runDemo({ size: opts.fast ? 'fast' : 'full', worker, log: stderrLog(quiet), quiet });
        if (opts.json) {
          process.stdout.write(JSON.stringify(summary) + '\n');
          return;
        }
        console.log('\n' + renderDemoTable(summary));
        console.log(`\nreport: ${reportHtml}\n        ${reportJson}`);
      });
    });
}
