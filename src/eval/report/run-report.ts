import { join } from 'node:path';
import { writeFileAtomicSync } from '../../core/atomic.js';
import { buildReport } from './build.js';
import { renderReportHtml } from './render.js';

/**
 * The evaluation report a recipe run attaches to itself when it evaluated its base and result: the same report
 * `distillery report RUN` writes (tables, charts, paired significance), as evaluation-report.html and
 * evaluation-report.json in the run folder. Returns the HTML path.
 */
export async function attachRunReport(runId: string, runDir: string, home?: string): Promise<string> {
  const report = await buildReport([runId], home === undefined ? {} : { home });
  const html = join(runDir, 'evaluation-report.html');
  writeFileAtomicSync(join(runDir, 'evaluation-report.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileAtomicSync(html, renderReportHtml(report));
  return html;
}
