import type { Decoding } from '../engine/decoding.js';
import { describeDecoding } from '../engine/decoding.js';
import { esc, pct, textTable, timeLine, type Measured } from './report.js';

/** A paired difference (after − before on the same tasks) with its 95% paired-bootstrap interval. */
export interface PairedDiff {
  diff: number;
  ci: [number, number];
}

/** The refresh demo's result; `--json` prints exactly this object. `base`/`distilled` are v2 pass@1 as in the SSD demo. */
export interface RefreshSummary {
  scenario: 'refresh';
  /** pass@1 on held-out v2 tasks before SDFT. */
  base: Measured;
  /** pass@1 on held-out v2 tasks after SDFT. */
  distilled: Measured;
  /** pass@1 on unrelated tasks: before, after SDFT, and the change (negative = forgetting). */
  retention: { base: Measured; distilled: Measured; change: PairedDiff };
  /** Plain SFT on the same demonstrations. */
  sft_baseline: { v2: Measured; retention: Measured; retention_change: PairedDiff };
  /** SDFT − SFT on each task set. */
  sdft_vs_sft: { v2: PairedDiff; retention: PairedDiff };
  /** SDFT − base on v2. */
  v2_gain: PairedDiff;
  decoding: Decoding;
  model: string;
  base_model: string;
  run_id: string;
  train: { sdft: { steps: number; final_loss: number; mean_kl_first: number | null; mean_kl_last: number | null; seconds: number }; sft_steps: number };
  tasks: { v2: number; retention: number; demonstrations: number; corpus: number; samples_per_task: number };
  changelog: string;
  stage_seconds: Record<string, number>;
  seconds: number;
  base_reused: boolean;
  size: 'full' | 'fast';
  sandbox: string;
}

const pts = (d: PairedDiff): string =>
  `${d.diff >= 0 ? '+' : ''}${(d.diff * 100).toFixed(1)} pts [${(d.ci[0] * 100).toFixed(1)}, ${(d.ci[1] * 100).toFixed(1)}]`;
const cell = (m: Measured): string => `${pct(m['pass@1'])} [${pct(m.ci[0])}, ${pct(m.ci[1])}]`;

function rows(s: RefreshSummary): string[][] {
  return [
    ['model', 'v2 tasks (new skill)', 'retention (unrelated tasks)'],
    [`${s.base_model} (base)`, cell(s.base), cell(s.retention.base)],
    [`${s.model} (SDFT)`, cell(s.distilled), cell(s.retention.distilled)],
    ['SFT on the same demonstrations', cell(s.sft_baseline.v2), cell(s.sft_baseline.retention)],
  ];
}

/** A terminal table: v2 and retention pass@1 for base, SDFT and SFT, the paired changes, and the time per stage. */
export function renderRefreshTable(s: RefreshSummary): string {
  const out = [...textTable(rows(s)), ''];
  out.push(`decoding (all models, both task sets): ${describeDecoding(s.decoding)}; pass@1 with 95% bootstrap intervals over tasks`);
  out.push(`v2 gain from SDFT: ${pts(s.v2_gain)}`);
  out.push(`retention change: SDFT ${pts(s.retention.change)}, SFT ${pts(s.sft_baseline.retention_change)}`);
  out.push(`SDFT − SFT: v2 ${pts(s.sdft_vs_sft.v2)}, retention ${pts(s.sdft_vs_sft.retention)} (paired over tasks)`);
  out.push(timeLine(s));
  return out.join('\n');
}

/** A self-contained HTML report (no external assets). */
export function renderRefreshHtml(s: RefreshSummary): string {
  const r = rows(s);
  const table = `<table><tr>${r[0]!.map((h) => `<th>${esc(h)}</th>`).join('')}</tr>${r
    .slice(1)
    .map((row) => `<tr>${row.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`)
    .join('')}</table>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Distillery demo report: stale model refresh</title>
<style>
body{font-family:system-ui,sans-serif;max-width:900px;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
code,pre{background:#f4f4f4;padding:1px 4px}.note{color:#555;font-size:.9em}
</style></head><body>
<h1>Distillery demo: refreshing a stale model with SDFT</h1>
<p>A ${esc(s.size)} run. The base model <code>${esc(s.base_model)}</code> learned to write code against library v1. The library
then changed:</p>
<pre>${esc(s.changelog)}</pre>
<p>SDFT taught v2 usage from ${s.tasks.demonstrations} demonstrations: the teacher is the model itself with a demonstration in its
prompt (the SDFT paper's template), the student learns on its own samples (run <code>${esc(s.run_id)}</code>, ${s.train.sdft.steps} steps;
mean per-token KL ${s.train.sdft.mean_kl_first?.toFixed(4) ?? '–'} → ${s.train.sdft.mean_kl_last?.toFixed(4) ?? '–'}).
The baseline is plain SFT on the same demonstrations for ${s.train.sft_steps} steps.</p>
<h2>pass@1, identical decoding (${esc(describeDecoding(s.decoding))})</h2>
${table}
<table>
<tr><td>v2 gain from SDFT</td><td>${esc(pts(s.v2_gain))}</td></tr>
<tr><td>retention change after SDFT</td><td>${esc(pts(s.retention.change))}</td></tr>
<tr><td>retention change after SFT</td><td>${esc(pts(s.sft_baseline.retention_change))}</td></tr>
<tr><td>SDFT − SFT on v2</td><td>${esc(pts(s.sdft_vs_sft.v2))}</td></tr>
<tr><td>SDFT − SFT on retention</td><td>${esc(pts(s.sdft_vs_sft.retention))}</td></tr>
</table>
<h2>Details</h2>
<table>
<tr><td>held-out v2 tasks</td><td>${s.tasks.v2} × ${s.tasks.samples_per_task} samples</td></tr>
<tr><td>retention tasks</td><td>${s.tasks.retention} × ${s.tasks.samples_per_task} samples</td></tr>
<tr><td>base corpus</td><td>${s.tasks.corpus} documents (library v1 and unrelated tasks; no v2 name anywhere)</td></tr>
<tr><td>sandbox</td><td>${esc(s.sandbox)}</td></tr>
${Object.entries(s.stage_seconds).map(([k, v]) => `<tr><td>stage: ${esc(k)}</td><td>${v.toFixed(1)} s</td></tr>`).join('')}
<tr><td>total</td><td>${s.seconds.toFixed(1)} s${s.base_reused ? ' (base model reused from the vault)' : ''}</td></tr>
</table>
<p class="note">Intervals: 95% percentile bootstrap over tasks; differences use a paired bootstrap over the same tasks.
Generated by <code>distillery demo --scenario refresh</code>.</p>
</body></html>
`;
}
