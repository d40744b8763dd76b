import { resolve } from 'node:path';
import type { Command } from 'commander';
import { writeFileAtomicSync } from '../core/atomic.js';
import { int } from './options.js';
import { buildReport } from '../eval/report/build.js';
import { renderReportHtml, renderReportText } from '../eval/report/render.js';

export function registerReportCommand(program: Command): void {
  program
    .command('report')
    .description('Compare models or recipe runs: a table, charts and paired significance tests, as self-contained HTML and JSON.')
    .argument('<items...>', 'run ids (folders under $DISTILLERY_HOME/runs), vault models NAME[:VERSION], model folders, or evaluation summary .json files')
    .option('-o, --output <file>', 'the HTML report to write', 'report.html')
    .option('--json <file>', 'also write the report as JSON (- for stdout)')
    .option('--no-html', 'write no HTML file')
    .option('--seed <n>', 'bootstrap seed for every interval', int)
    .addHelpText(
      'after',
      `
A run is compared before/after (its base and distilled evaluations, and retention when it has one). Models given
directly are compared with the first one given; their evaluations come from the eval cache, found by model
digest, so evaluate each first (\`distillery eval --model REF --tasks FILE\`, or \`--suite retention\`). Only
evaluations with identical decoding and prompt format are paired, on the tasks both have.

Examples:
  distillery report ssd-1a2b3c4d5e                       (a recipe run: base against distilled)
  distillery report mymodel:1 mymodel:2 -o compare.html --json compare.json`,
    )
    .action(async (items: string[], opts: { output: string; json?: string; html: boolean; seed?: number }) => {
      const report = await buildReport(items, opts.seed !== undefined ? { seed: opts.seed } : {});
      const json = JSON.stringify(report, null, 2) + '\n';
      if (opts.json === '-') {
        process.stdout.write(json);
      } else {
        process.stdout.write(renderReportText(report) + '\n');
        if (opts.json) {
          writeFileAtomicSync(resolve(opts.json), json);
          process.stdout.write(`JSON: ${opts.json}\n`);
        }
      }
      if (opts.html) {
        writeFileAtomicSync(resolve(opts.output), renderReportHtml(report));
        (opts.json === '-' ? process.stderr : process.stdout).write(`HTML: ${opts.output}\n`);
      }
    });
}
