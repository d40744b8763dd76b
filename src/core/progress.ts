/**
 * Progress for long work. On a terminal it redraws one line (bar, count, rate, ETA); elsewhere (CI, pipes,
 * --json) it prints a plain line at most every few seconds so logs stay readable. All output goes to stderr
 * so stdout stays clean for machine-readable results.
 */
export interface Progress {
  update(done: number, extra?: string): void;
  done(message?: string): void;
}

export interface ProgressOptions {
  total: number;
  unit?: string;
  /** Silence everything (e.g. under --quiet). */
  quiet?: boolean;
  stream?: NodeJS.WriteStream;
}

const BAR_WIDTH = 24;
const PLAIN_INTERVAL_MS = 5000;

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)}s`;
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  if (m < 60) return `${m}m${String(s).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

export function startProgress(label: string, opts: ProgressOptions): Progress {
  const stream = opts.stream ?? process.stderr;
  const tty = Boolean(stream.isTTY);
  const start = Date.now();
  let lastPrint = 0;
  let lastLine = '';
  const unit = opts.unit ?? '';

  const render = (done: number, extra?: string): string => {
    const elapsed = (Date.now() - start) / 1000;
    const frac = opts.total > 0 ? Math.min(1, done / opts.total) : 0;
    const rate = elapsed > 0 ? done / elapsed : 0;
    const eta = rate > 0 ? (opts.total - done) / rate : NaN;
    const filled = Math.round(frac * BAR_WIDTH);
    const bar = tty ? `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] ` : '';
    const rateText = rate > 0 ? ` ${rate >= 100 ? rate.toFixed(0) : rate.toFixed(1)} ${unit}/s` : '';
    return `${label} ${bar}${done}/${opts.total}${unit ? ' ' + unit : ''}${rateText} ETA ${formatDuration(eta)}${extra ? ' ' + extra : ''}`;
  };

  return {
    update(done, extra) {
      if (opts.quiet) return;
      const now = Date.now();
      if (tty) {
        if (now - lastPrint < 100 && done < opts.total) return;
        lastLine = render(done, extra);
        stream.write(`\r${lastLine.slice(0, (stream.columns ?? 120) - 1)}\x1b[K`);
      } else {
        if (now - lastPrint < PLAIN_INTERVAL_MS) return;
        stream.write(render(done, extra) + '\n');
      }
      lastPrint = now;
    },
    done(message) {
      if (opts.quiet) return;
      const elapsed = formatDuration((Date.now() - start) / 1000);
      const line = `${label} ${message ?? 'done'} (${elapsed})`;
      stream.write(tty ? `\r${line}\x1b[K\n` : line + '\n');
    },
  };
}
