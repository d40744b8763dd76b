/** Shared formatting for terminal output. */

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

/** A plain aligned table: first row is the header. */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  const line = (row: string[]): string => row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const out = [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  ')];
  for (const row of rows.slice(1)) out.push(line(row));
  return out.join('\n');
}
