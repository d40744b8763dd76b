/** Shared formatting for terminal output. */
import { startProgress, type Progress } from '../core/progress.js';
import { describeDecoding } from '../engine/decoding.js';
import type { RetentionBeforeAfter } from '../eval/retention/before-after.js';
import type { EvalSummary } from '../eval/run.js';

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export interface BytesBar {
  update(p: { bytesDone: number; bytesTotal: number }): void;
  done(message?: string): void;
}

/**
 * A progress bar for byte counts, in MB (readable for multi-gigabyte models). It starts on the first report
 * with a total, so the total is known; done() finishes it (a no-op if nothing was reported).
 */
export function bytesBar(label: string): BytesBar {
  const mb = (b: number) => Math.round(b / 1e6);
  let bar: Progress | null = null;
  return {
    update: (p) => {
      if (p.bytesTotal === 0 && bar === null) return;
      bar ??= startProgress(label, { total: Math.max(1, mb(p.bytesTotal)), unit: 'MB' });
      bar.update(mb(p.bytesDone));
    },
    done: (message) => bar?.done(message),
  };
}

/** Progress lines go to stderr (stdout stays clean for --json), and nowhere under --quiet. */
export function stderrLog(quiet: boolean): (line: string) => void {
  return (line) => {
    if (!quiet) process.stderr.write(line + '\n');
  };
}

export function pct(x: number, digits = 1): string {
  return `${(x * 100).toFixed(digits)}%`;
}

export function formatPassAt(v: { value: number; ci: [number, number] }): string {
  return `${pct(v.value)} [${pct(v.ci[0])}, ${pct(v.ci[1])}]`;
}

/** A recipe run's before/after lines: code evaluation (pass@k with intervals) and the retention suite. */
export function printBeforeAfter(r: {
  evaluation: { base: EvalSummary; distilled: EvalSummary } | null;
  retention: RetentionBeforeAfter | null;
}): void {
  if (r.evaluation) {
    const { base, distilled } = r.evaluation;
    console.log(`  evaluation (${describeDecoding(base.decoding)}, n=${base.n}, ${base.tasks} tasks):`);
    for (const k of Object.keys(base.pass_at_k)) {
      console.log(`    pass@${k}: base ${formatPassAt(base.pass_at_k[k]!)}  →  distilled ${formatPassAt(distilled.pass_at_k[k]!)}`);
    }
  }
  if (r.retention) {
    const { base, distilled } = r.retention;
    console.log(`  retention (${base.tasks} general probes, ${describeDecoding(base.decoding)}):`);
    console.log(`    pass@1: base ${formatPassAt(base.pass_at_k['1']!)}  →  distilled ${formatPassAt(distilled.pass_at_k['1']!)}`);
  }
}

/** A plain aligned table: first row is the header. */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  const line = (row: string[]): string => row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const out = [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  ')];
  for (const row of rows.slice(1)) out.push(line(row));
  return out.join('\n');
}

/** 1044992 → "1.0 MB". Decimal units, matching how model sizes and disk throughput are usually quoted. */
export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let i = 0;
  let v = n;
  while (i < units.length - 1 && Math.abs(v) >= 999.5) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${n} B` : `${v < 9.95 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** 260032 → "260k", 1234567 → "1.2M", 7615616512 → "7.6B". */
export function formatParams(n: number | null): string {
  if (n === null) return '-';
  const units = ['', 'k', 'M', 'B', 'T'];
  let i = 0;
  let v = n;
  while (i < units.length - 1 && Math.abs(v) >= 999.5) {
    v /= 1000;
    i++;
  }
  return i === 0 ? String(n) : `${v < 9.95 ? v.toFixed(1) : Math.round(v)}${units[i]}`;
}
