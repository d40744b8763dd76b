import type { Delta, TokenLogprob } from './backends/types.js';

/**
 * The text-release rules shared by the backends (the Python engine has the same, in generate.py): stop
 * strings are found in the decoded text, and text that could still turn into a stop string is held back, so
 * the deltas a client streams concatenate to exactly the final, cut text.
 */

/** How many trailing characters of `text` could be the start of one of `stops`. */
export function heldBack(text: string, stops: readonly string[]): number {
  let best = 0;
  for (const stop of stops) {
    for (let k = Math.min(stop.length - 1, text.length); k > best; k--) {
      if (text.endsWith(stop.slice(0, k))) {
        best = k;
        break;
      }
    }
  }
  return best;
}

/** Index of the earliest of `stops` in `text`, or null. */
export function findStop(text: string, stops: readonly string[]): number | null {
  let best: number | null = null;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && (best === null || i < best)) best = i;
  }
  return best;
}

interface Pending {
  entry: TokenLogprob;
  start: number;
  end: number;
}

/** Accumulates a completion's text and log-prob entries and hands out what is safe to send. */
export class Release {
  text = '';
  private sent = 0;
  private pending: Pending[] = [];
  readonly released: TokenLogprob[] = [];

  constructor(private readonly stops: readonly string[], private readonly onDelta: ((d: Delta) => void) | null, private readonly withLogprobs: boolean) {}

  add(delta: string, entry: TokenLogprob | null): void {
    const start = this.text.length;
    this.text += delta;
    if (entry) this.pending.push({ entry, start, end: this.text.length });
  }

  /** Index of a stop string that ends after position `since` (earlier ones were checked before). */
  findStop(since: number): number | null {
    if (this.stops.length === 0) return null;
    const longest = Math.max(...this.stops.map((s) => s.length));
    const offset = Math.max(0, since - longest + 1);
    const cut = findStop(this.text.slice(offset), this.stops);
    return cut === null ? null : offset + cut;
  }

  step(): void {
    this.release(this.text.length - heldBack(this.text, this.stops), false);
  }

  finish(end: number): void {
    this.text = this.text.slice(0, end);
    this.release(end, true);
  }

  private release(upto: number, final: boolean): void {
    const entries: TokenLogprob[] = [];
    while (this.pending.length > 0) {
      const p = this.pending[0]!;
      if (p.end <= upto || (final && p.start < upto)) {
        entries.push(p.entry);
        this.pending.shift();
      } else break;
    }
    if (final) this.pending = [];
    const text = upto > this.sent ? this.text.slice(this.sent, upto) : '';
    this.sent = Math.max(this.sent, upto);
    this.released.push(...entries);
    if (this.onDelta && (text.length > 0 || entries.length > 0)) this.onDelta({ text, logprobs: this.withLogprobs ? entries : null });
  }
}
