import type { Decoding } from '../engine/decoding.js';
import { describeDecoding } from '../engine/decoding.js';
import type { EvalSummary } from '../eval/run.js';

/** One measured pass@1 with its bootstrap interval. */
export interface Measured {
  'pass@1': number;
  ci: [number, number];
}

/** pass@1 and its interval from an evaluation summary. */
export function measured(e: EvalSummary): Measured {
  const p = e.pass_at_k['1']!;
  return { 'pass@1': p.value, ci: p.ci };
}

export interface GridPoint extends Measured {
  temperature: number;
  decoding: Decoding;
}

/** The demo's result; `--json` prints exactly this object. */
export interface DemoSummary {
  base: Measured;
  distilled: Measured;
  /** The decoding used for both base and distilled above (identical by construction). */
  decoding: Decoding;
  /** The base model's pass@1 at each grid temperature, and the best of them: a decoding-only gain stays visible. */
  base_grid: GridPoint[];
  base_best: GridPoint;
  /** The distilled model over the same grid. */
  distilled_grid: GridPoint[];
  model: string;
  base_model: string;
  run_id: string;
  tasks: { eval: number; ssd_prompts: number; corpus: number; samples_per_task: number };
  filter: { total: number; kept: number; empty: number; stub: number; shortest: number };
  stage_seconds: Record<string, number>;
  seconds: number;
  base_reused: boolean;
  size: 'full' | 'fast';
  sandbox: string;
}

export const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;
export const esc = (s: string): string => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

/** A terminal table of the before/after result, the base's temperature grid and the time per stage. */
export function renderDemoTable(s: DemoSummary): string {
  const rows: string[][] = [['model', 'decoding', 'pass@1', '95% CI']];
  rows.push([s.base_model + ' (base)', describeDecoding(s.decoding), pct(s.base['pass@1']), `${pct(s.base.ci[0])} – ${pct(s.base.ci[1])}`]);
  rows.push([s.model + ' (SSD)', describeDecoding(s.decoding), pct(s.distilled['pass@1']), `${pct(s.distilled.ci[0])} – ${pct(s.distilled.ci[1])}`]);
  for (const [label, grid] of [['base', s.base_grid], ['SSD', s.distilled_grid]] as const) {
    for (const g of grid) {
      const best = label === 'base' && g.temperature === s.base_best.temperature ? ' ← base best' : '';
      rows.push([`${label} grid`, describeDecoding(g.decoding), pct(g['pass@1']) + best, `${pct(g.ci[0])} – ${pct(g.ci[1])}`]);
    }
  }
  const out = [...textTable(rows), ''];
  out.push(
    `held-out tasks: ${s.tasks.eval} × ${s.tasks.samples_per_task} samples; SSD trained on ${s.filter.kept}/${s.filter.total} ` +
      `of its own samples for ${s.tasks.ssd_prompts} prompts (no answers, no tests)`,
  );
  out.push(timeLine(s));
  return out.join('\n');
}

/** Rows as aligned text columns, the first row a header underlined with dashes. */
export function textTable(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]): string => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)];
}

/** "time: stage 1.0s, ... — total Ns" for a demo summary. */
export function timeLine(s: { stage_seconds: Record<string, number>; seconds: number; base_reused: boolean }): string {
  const stages = Object.entries(s.stage_seconds).map(([k, v]) => `${k} ${v.toFixed(1)}s`);
  return `time: ${stages.join(', ')} — total ${s.seconds.toFixed(1)}s${s.base_reused ? ' (base model reused from the vault)' : ''}`;
}

/** A small SVG chart: pass@1 against evaluation temperature for base and SSD, with CI whiskers. */
function chart(s: DemoSummary): string {
  const W = 560, H = 300, L = 50, R = 20, T = 20, B = 40;
  const temps = s.base_grid.map((g) => g.temperature);
  const tMax = Math.max(...temps, s.decoding.temperature, 0.1);
  const x = (t: number): number => L + (t / tMax) * (W - L - R);
  const y = (p: number): number => T + (1 - p) * (H - T - B);
  const series = (grid: GridPoint[], color: string, label: string, dx: number): string => {
    const pts = grid.map((g) => `${x(g.temperature) + dx},${y(g['pass@1'])}`).join(' ');
    const whiskers = grid
      .map(
        (g) =>
          `<line x1="${x(g.temperature) + dx}" x2="${x(g.temperature) + dx}" y1="${y(g.ci[0])}" y2="${y(g.ci[1])}" stroke="${color}" stroke-width="2"/>` +
          `<circle cx="${x(g.temperature) + dx}" cy="${y(g['pass@1'])}" r="4" fill="${color}"><title>${label} T=${g.temperature}: ${pct(g['pass@1'])} [${pct(g.ci[0])}, ${pct(g.ci[1])}]</title></circle>`,
      )
      .join('');
    return `<polyline points="${pts}" fill="none" stroke="${color}" stroke-width="2"/>${whiskers}`;
  };
  const yTicks = [0, 0.25, 0.5, 0.75, 1]
    .map((p) => `<line x1="${L}" x2="${W - R}" y1="${y(p)}" y2="${y(p)}" stroke="#ddd"/><text x="${L - 6}" y="${y(p) + 4}" text-anchor="end">${p * 100}%</text>`)
    .join('');
  const xTicks = temps.map((t) => `<text x="${x(t)}" y="${H - B + 16}" text-anchor="middle">${t}</text>`).join('');
  return `<svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" font-family="sans-serif" font-size="11" role="img" aria-label="pass@1 by temperature">
${yTicks}${xTicks}
<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">evaluation temperature</text>
${series(s.base_grid, '#888', 'base', -3)}
${series(s.distilled_grid, '#1f6feb', 'SSD', 3)}
<rect x="${W - R - 120}" y="${T}" width="12" height="12" fill="#888"/><text x="${W - R - 102}" y="${T + 10}">base</text>
<rect x="${W - R - 120}" y="${T + 18}" width="12" height="12" fill="#1f6feb"/><text x="${W - R - 102}" y="${T + 28}">after SSD</text>
</svg>`;
}

/** A self-contained HTML report (no external assets). */
export function renderDemoHtml(s: DemoSummary): string {
  const rows = (grid: GridPoint[], label: string): string =>
    grid
      .map((g) => `<tr><td>${label}</td><td>${esc(describeDecoding(g.decoding))}</td><td>${pct(g['pass@1'])}</td><td>${pct(g.ci[0])} – ${pct(g.ci[1])}</td></tr>`)
      .join('');
  const gain = s.distilled['pass@1'] - s.base['pass@1'];
  const overBest = s.distilled['pass@1'] - s.base_best['pass@1'];
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Distillery demo report</title>
<style>
body{font-family:system-ui,sans-serif;max-width:860px;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
code{background:#f4f4f4;padding:1px 4px}.note{color:#555;font-size:.9em}
</style></head><body>
<h1>Distillery demo: SSD on a tiny model</h1>
<p>A ${esc(s.size)} run. The base model <code>${esc(s.base_model)}</code> was trained from scratch on a generated corpus,
then self-distilled with SSD (one sample per training prompt from the frozen base, no answers, no tests) into
<code>${esc(s.model)}</code> (run <code>${esc(s.run_id)}</code>).</p>
<h2>Held-out tasks, identical decoding</h2>
<table><tr><th>model</th><th>decoding</th><th>pass@1</th><th>95% CI (bootstrap over tasks)</th></tr>
<tr><td>base</td><td>${esc(describeDecoding(s.decoding))}</td><td>${pct(s.base['pass@1'])}</td><td>${pct(s.base.ci[0])} – ${pct(s.base.ci[1])}</td></tr>
<tr><td>after SSD</td><td>${esc(describeDecoding(s.decoding))}</td><td>${pct(s.distilled['pass@1'])}</td><td>${pct(s.distilled.ci[0])} – ${pct(s.distilled.ci[1])}</td></tr>
</table>
<p>Change at identical decoding: <b>${gain >= 0 ? '+' : ''}${(gain * 100).toFixed(1)} points</b>.
Against the base model's best evaluation temperature (T=${s.base_best.temperature}, ${pct(s.base_best['pass@1'])}):
<b>${overBest >= 0 ? '+' : ''}${(overBest * 100).toFixed(1)} points</b>. A gain that only matches the base's best temperature
would be a decoding effect, not learning.</p>
<h2>pass@1 by evaluation temperature</h2>
${chart(s)}
<table><tr><th>model</th><th>decoding</th><th>pass@1</th><th>95% CI</th></tr>${rows(s.base_grid, 'base')}${rows(s.distilled_grid, 'after SSD')}</table>
<h2>Details</h2>
<table>
<tr><td>held-out evaluation tasks</td><td>${s.tasks.eval} × ${s.tasks.samples_per_task} samples each</td></tr>
<tr><td>SSD training prompts</td><td>${s.tasks.ssd_prompts} (disjoint from the evaluation tasks)</td></tr>
<tr><td>samples kept by the filter</td><td>${s.filter.kept} of ${s.filter.total} (empty ${s.filter.empty}, stub ${s.filter.stub}, shortest ${s.filter.shortest})</td></tr>
<tr><td>base corpus</td><td>${s.tasks.corpus} solved examples</td></tr>
<tr><td>sandbox</td><td>${esc(s.sandbox)}</td></tr>
${Object.entries(s.stage_seconds).map(([k, v]) => `<tr><td>stage: ${esc(k)}</td><td>${v.toFixed(1)} s</td></tr>`).join('')}
<tr><td>total</td><td>${s.seconds.toFixed(1)} s${s.base_reused ? ' (base model reused from the vault)' : ''}</td></tr>
</table>
<p class="note">Intervals are 95% percentile bootstrap intervals over tasks. pass@1 is the unbiased estimator averaged over
samples. Generated by <code>distillery demo</code>.</p>
</body></html>
`;
}
