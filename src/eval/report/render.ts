/**
 * A report as a terminal table and as a self-contained HTML page (inline SVG charts, inline CSS, no external
 * assets): pass@k with intervals, per-task before/after, per-difficulty (or per-kind, for retention) breakdown,
 * and the paired significance verdict of every before/after pair.
 */
import { describeDecoding } from '../../engine/decoding.js';
import { esc, pct, textTable } from '../../demo/report.js';
import type { PairedComparison, Estimate } from '../stats.js';
import type { Report, ReportComparison } from './build.js';

const A_COLOUR = '#888';
const B_COLOUR = '#1f6feb';
const ci = (e: Estimate): string => `${pct(e.value)} [${pct(e.ci[0])}, ${pct(e.ci[1])}]`;
const short = (d: string): string => (d.length > 12 ? d.slice(0, 12) : d);

/** Terminal rendering: one row per model evaluation, then each comparison's verdicts. */
export function renderReportText(r: Report): string {
  const rows: string[][] = [['model', 'suite', 'digest', 'decoding', 'n × tasks', 'pass@1 [95% CI]', 'Avg@n']];
  for (const m of r.models) {
    for (const e of m.evaluations) {
      rows.push([m.label, e.suite, short(e.model_digest), describeDecoding(e.decoding), `${e.n} × ${e.tasks}`, e.pass_at_k['1'] ? ci(e.pass_at_k['1']) : '—', pct(e.avg_at_n.value)]);
    }
  }
  const out = [...textTable(rows), ''];
  for (const c of r.comparisons) {
    out.push(`${c.suite}: ${c.b} vs ${c.a}`);
    for (const p of c.by_k) out.push(`  ${p.verdict}`);
    if (c.groups) {
      for (const g of c.groups.rows) out.push(`    ${c.groups.by} ${g.group}: ${pct(g.a)} → ${pct(g.b)} (${g.tasks} tasks)`);
    }
  }
  for (const n of r.notes) out.push(`note: ${n}`);
  out.push(`harness ${r.harness_version}`);
  return out.join('\n');
}

// Bars with whiskers for each k: A then B.
function passKChart(c: ReportComparison): string {
  const W = 560, H = 260, L = 50, R = 20, T = 20, B = 40;
  const groups = c.by_k;
  const gw = (W - L - R) / Math.max(groups.length, 1);
  const bw = Math.min(60, gw / 3);
  const y = (p: number): number => T + (1 - p) * (H - T - B);
  const bar = (x: number, e: Estimate, colour: string, label: string, k: number): string =>
    `<rect x="${x}" y="${y(e.value)}" width="${bw}" height="${y(0) - y(e.value)}" fill="${colour}" opacity="0.85"><title>${esc(label)} pass@${k}: ${ci(e)}</title></rect>` +
    `<line x1="${x + bw / 2}" x2="${x + bw / 2}" y1="${y(e.ci[0])}" y2="${y(e.ci[1])}" stroke="#222" stroke-width="1.5"/>` +
    `<line x1="${x + bw / 2 - 5}" x2="${x + bw / 2 + 5}" y1="${y(e.ci[0])}" y2="${y(e.ci[0])}" stroke="#222"/>` +
    `<line x1="${x + bw / 2 - 5}" x2="${x + bw / 2 + 5}" y1="${y(e.ci[1])}" y2="${y(e.ci[1])}" stroke="#222"/>`;
  const bars = groups
    .map((p: PairedComparison, i) => {
      const x0 = L + i * gw + gw / 2 - bw - 2;
      return bar(x0, p.a, A_COLOUR, c.a, p.k) + bar(x0 + bw + 4, p.b, B_COLOUR, c.b, p.k) +
        `<text x="${L + i * gw + gw / 2}" y="${H - B + 16}" text-anchor="middle">pass@${p.k}</text>`;
    })
    .join('');
  return svgFrame(W, H, L, R, y, `pass@k with 95% intervals: ${c.a} and ${c.b}`, bars + legend(W - R - 170, T, c));
}

function svgFrame(W: number, H: number, L: number, R: number, y: (p: number) => number, label: string, body: string): string {
  const ticks = [0, 0.25, 0.5, 0.75, 1]
    .map((p) => `<line x1="${L}" x2="${W - R}" y1="${y(p)}" y2="${y(p)}" stroke="#ddd"/><text x="${L - 6}" y="${y(p) + 4}" text-anchor="end">${p * 100}%</text>`)
    .join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" font-family="sans-serif" font-size="11" role="img" aria-label="${esc(label)}">${ticks}${body}</svg>`;
}

function legend(x: number, y: number, c: ReportComparison): string {
  const cut = (s: string): string => (s.length > 24 ? `${s.slice(0, 23)}…` : s);
  return `<rect x="${x}" y="${y}" width="12" height="12" fill="${A_COLOUR}"/><text x="${x + 18}" y="${y + 10}">A: ${esc(cut(c.a))}</text>` +
    `<rect x="${x}" y="${y + 18}" width="12" height="12" fill="${B_COLOUR}"/><text x="${x + 18}" y="${y + 28}">B: ${esc(cut(c.b))}</text>`;
}

// Each task a point at (A's pass rate, B's pass rate); points above the diagonal improved.
function perTaskChart(c: ReportComparison): string {
  const S = 300, M = 45;
  const pos = (p: number): number => M + p * (S - 2 * M);
  const posY = (p: number): number => S - M - p * (S - 2 * M);
  const cells = new Map<string, { a: number; b: number; ids: string[] }>();
  for (const t of c.per_task) {
    const key = `${t.a.toFixed(4)},${t.b.toFixed(4)}`;
    const cell = cells.get(key) ?? { a: t.a, b: t.b, ids: [] };
    cell.ids.push(t.id);
    cells.set(key, cell);
  }
  const up = c.per_task.filter((t) => t.b > t.a).length;
  const down = c.per_task.filter((t) => t.b < t.a).length;
  const dots = [...cells.values()]
    .map((d) => {
      const colour = d.b > d.a ? B_COLOUR : d.b < d.a ? '#d1242f' : A_COLOUR;
      const names = d.ids.slice(0, 8).join(', ') + (d.ids.length > 8 ? `, … (${d.ids.length})` : '');
      return `<circle cx="${pos(d.a)}" cy="${posY(d.b)}" r="${(3 + 2 * Math.sqrt(d.ids.length)).toFixed(1)}" fill="${colour}" opacity="0.6"><title>${esc(names)}: ${pct(d.a)} → ${pct(d.b)}</title></circle>`;
    })
    .join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${S} ${S}" width="${S}" height="${S}" font-family="sans-serif" font-size="11" role="img" aria-label="per-task pass rate before and after">
<rect x="${M}" y="${M}" width="${S - 2 * M}" height="${S - 2 * M}" fill="none" stroke="#ccc"/>
<line x1="${pos(0)}" y1="${posY(0)}" x2="${pos(1)}" y2="${posY(1)}" stroke="#bbb" stroke-dasharray="4 3"/>
<text x="${S / 2}" y="${S - 12}" text-anchor="middle">A pass rate per task</text>
<text x="14" y="${S / 2}" text-anchor="middle" transform="rotate(-90 14 ${S / 2})">B pass rate per task</text>
<text x="${pos(0)}" y="${S - M + 14}" text-anchor="middle">0%</text><text x="${pos(1)}" y="${S - M + 14}" text-anchor="middle">100%</text>
<text x="${M + 4}" y="${M - 8}">improved ${up} · worse ${down} · same ${c.per_task.length - up - down}</text>
${dots}</svg>`;
}

// Grouped bars by difficulty or probe kind.
function groupChart(c: ReportComparison): string {
  const g = c.groups!;
  const W = 560, H = 240, L = 50, R = 20, T = 20, B = 40;
  const gw = (W - L - R) / g.rows.length;
  const bw = Math.min(40, gw / 3);
  const y = (p: number): number => T + (1 - p) * (H - T - B);
  const bars = g.rows
    .map((row, i) => {
      const x0 = L + i * gw + gw / 2 - bw - 2;
      return `<rect x="${x0}" y="${y(row.a)}" width="${bw}" height="${y(0) - y(row.a)}" fill="${A_COLOUR}"><title>${esc(c.a)} ${esc(row.group)}: ${pct(row.a)}</title></rect>` +
        `<rect x="${x0 + bw + 4}" y="${y(row.b)}" width="${bw}" height="${y(0) - y(row.b)}" fill="${B_COLOUR}"><title>${esc(c.b)} ${esc(row.group)}: ${pct(row.b)}</title></rect>` +
        `<text x="${L + i * gw + gw / 2}" y="${H - B + 16}" text-anchor="middle">${esc(row.group)} (${row.tasks})</text>`;
    })
    .join('');
  return svgFrame(W, H, L, R, y, `pass rate by ${g.by}`, bars + legend(W - R - 170, T, c));
}

function comparisonSection(c: ReportComparison): string {
  const title = c.suite === 'retention' ? 'Retention probes' : c.suite === 'qa' ? 'Questions and answers' : 'Code tasks';
  const verdicts = c.by_k.map((p) => `<p class="verdict ${p.direction}">${esc(p.verdict)}</p>`).join('');
  const statRows = c.by_k
    .map((p) => {
      const mc = p.mcnemar ? `p ${p.mcnemar.p < 0.001 ? '< 0.001' : `= ${p.mcnemar.p.toPrecision(3)}`} (A only ${p.mcnemar.a_only}, B only ${p.mcnemar.b_only})` : `— (${esc(p.mcnemar_unavailable ?? '')})`;
      return `<tr><td>pass@${p.k}</td><td>${ci(p.a)}</td><td>${ci(p.b)}</td><td>${p.diff.value >= 0 ? '+' : ''}${(p.diff.value * 100).toFixed(1)} pts [${(p.diff.ci[0] * 100).toFixed(1)}, ${(p.diff.ci[1] * 100).toFixed(1)}]</td><td>${mc}</td><td>p = ${p.sign_test.p.toPrecision(3)} (+${p.sign_test.b_higher} / −${p.sign_test.a_higher} / =${p.sign_test.ties})</td><td>${p.tasks}</td></tr>`;
    })
    .join('');
  const unmatched = c.by_k[0] && (c.by_k[0].unmatched.a_only.length || c.by_k[0].unmatched.b_only.length)
    ? `<p class="note">Not in both results, so not compared: ${c.by_k[0].unmatched.a_only.length} task(s) only in A, ${c.by_k[0].unmatched.b_only.length} only in B.</p>`
    : '';
  const groups = c.groups
    ? `<h3>By ${c.groups.by}</h3>${groupChart(c)}<table><tr><th>${c.groups.by}</th><th>tasks</th><th>A</th><th>B</th><th>change</th></tr>${c.groups.rows
        .map((g) => `<tr><td>${esc(g.group)}</td><td>${g.tasks}</td><td>${pct(g.a)}</td><td>${pct(g.b)}</td><td>${g.diff >= 0 ? '+' : ''}${(g.diff * 100).toFixed(1)} pts</td></tr>`)
        .join('')}</table>`
    : '';
  const changed = c.per_task.filter((t) => t.a !== t.b).sort((x, y) => y.b - y.a - (x.b - x.a));
  const taskRows = changed
    .slice(0, 50)
    .map((t) => `<tr><td><code>${esc(t.id)}</code></td><td>${pct(t.a)}</td><td>${pct(t.b)}</td><td>${t.b - t.a >= 0 ? '+' : ''}${((t.b - t.a) * 100).toFixed(1)}</td></tr>`)
    .join('');
  return `<section>
<h2>${title}: ${esc(c.b)} against ${esc(c.a)}</h2>
<p class="note">A = ${esc(c.a)} (before), B = ${esc(c.b)} (after); decoding ${esc(describeDecoding(c.decoding))}, prompt format ${esc(c.prompt_format)}, seed ${c.seed}, ${c.n} sample(s) per task.</p>
${verdicts}
<table><tr><th>metric</th><th>A</th><th>B</th><th>B − A (paired bootstrap)</th><th>McNemar (first sample)</th><th>sign test (pass rates)</th><th>tasks</th></tr>${statRows}</table>
${unmatched}
${passKChart(c)}
<h3>Per task, before and after</h3>
${perTaskChart(c)}
${changed.length ? `<table><tr><th>task (changed only${changed.length > 50 ? `, 50 of ${changed.length}` : ''})</th><th>A</th><th>B</th><th>pts</th></tr>${taskRows}</table>` : '<p class="note">No task changed its pass rate.</p>'}
${groups}
</section>`;
}

/** The self-contained HTML page. */
export function renderReportHtml(r: Report): string {
  const modelRows = r.models
    .flatMap((m) =>
      m.evaluations.map(
        (e) =>
          `<tr><td>${esc(m.label)}</td><td>${e.suite}</td><td><code title="${esc(m.digest)}">${esc(short(m.digest))}</code></td><td>${esc(describeDecoding(e.decoding))}</td><td>${esc(e.prompt_format)}</td><td>${e.seed}</td><td>${e.n} × ${e.tasks}</td><td>${Object.entries(e.pass_at_k)
            .map(([k, v]) => `pass@${esc(k)} ${ci(v)}`)
            .join('<br>')}</td><td>${pct(e.avg_at_n.value)}</td><td>${esc(e.harness_version)}</td></tr>`,
      ),
    )
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Distillery evaluation report</title>
<style>
body{font-family:system-ui,sans-serif;max-width:980px;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
code{background:#f4f4f4;padding:1px 4px}.note{color:#555;font-size:.9em}
.verdict{font-weight:bold;font-size:1.05em}.verdict.better{color:#1a7f37}.verdict.worse{color:#d1242f}
section{margin-top:2rem;border-top:2px solid #eee}
</style></head><body>
<h1>Distillery evaluation report</h1>
<h2>Models and evaluations</h2>
<table><tr><th>model</th><th>suite</th><th>sha256</th><th>decoding</th><th>prompt</th><th>seed</th><th>n × tasks</th><th>pass@k [95% CI]</th><th>Avg@n</th><th>harness</th></tr>${modelRows}</table>
${r.comparisons.map(comparisonSection).join('\n')}
${r.notes.length ? `<h2>Notes</h2><ul>${r.notes.map((n) => `<li>${esc(n)}</li>`).join('')}</ul>` : ''}
<h2>How to read this</h2>
<p class="note">pass@k is the unbiased estimator over n samples per task, averaged over tasks; intervals are 95% percentile
bootstrap intervals over tasks. B − A is a paired bootstrap of per-task differences. McNemar's test is exact (binomial) on
whether each task's first sample passed; the sign test is exact on per-task pass rates. A difference is called significant
only when the paired interval excludes 0 and the exact test (McNemar where available, else the sign test) gives p &lt; 0.05.</p>
<p class="note">Generated ${esc(r.generated_at)} by harness ${esc(r.harness_version)}.</p>
</body></html>
`;
}
