import { type Command, Option } from 'commander';
import { EngineWorker } from '../engine/worker.js';
import { runDemo } from '../demo/run-demo.js';
import { renderDemoTable } from '../demo/report.js';
import { runRefreshDemo } from '../demo/refresh-demo.js';
import { renderRefreshTable } from '../demo/refresh-report.js';
import { stderrLog } from './format.js';

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description(
      'The embedded default, offline, on a CPU. ssd (default): generate a code-task suite, train a tiny model from ' +
        'scratch, archive it, evaluate it, self-distil it with SSD, evaluate again. refresh: a model ' +
        'trained on library v1 is taught v2 from demonstrations with SDFT, against plain SFT, with retention measured.',
    )
    .addOption(new Option('--scenario <name>', 'which demo').choices(['ssd', 'refresh']).default('ssd'))
    .option('--fast', 'a smaller, quicker run (for tests; no claim about the result)')
    .option('--json', 'print the summary as one JSON object on stdout')
    .option('-q, --quiet', 'no progress output')
    .addHelpText(
      'after',
      `
Examples:
  distillery demo                       SSD on a tiny model: before/after pass@1 with confidence intervals
  distillery demo --scenario refresh    a stale model refreshed with SDFT; v2 skill, retention, SFT baseline
                                        (docs/demo-design.md has what it shows and why)

Base models are cached in the vault (demo-coder, refresh-coder) and reused by later runs; every stage resumes if
interrupted. The report (HTML and JSON) is written into the run folder under $DISTILLERY_HOME/runs/.`,
    )
    .action(async (opts: { scenario: 'ssd' | 'refresh'; fast?: boolean; json?: boolean; quiet?: boolean }) => {
      const quiet = Boolean(opts.quiet);
      const size = opts.fast ? 'fast' : 'full';
      await EngineWorker.using(async (worker) => {
        const common = { size, worker, log: stderrLog(quiet), quiet } as const;
        const { summary, table, reportHtml, reportJson } =
          opts.scenario === 'refresh'
            ? await runRefreshDemo(common).then((r) => ({ ...r, table: renderRefreshTable(r.summary) }))
            : await runDemo(common).then((r) => ({ ...r, table: renderDemoTable(r.summary) }));
        if (opts.json) {
          process.stdout.write(JSON.stringify(summary) + '\n');
          return;
        }
        console.log('\n' + table);
        console.log(`\nreport: ${reportHtml}\n        ${reportJson}`);
      });
    });
}
