import { UserError } from '../core/errors.js';

/** A Python exception raised inside the engine, turned into one readable line plus the saved traceback. */
export class EngineError extends UserError {
  constructor(
    readonly errorType: string,
    readonly engineMessage: string,
    readonly traceback?: string,
    hint?: string,
  ) {
    super(`engine ${errorType}: ${engineMessage}`, hint);
    this.name = 'EngineError';
  }
}

/** The end of a process's stderr, kept for error messages when the process dies unexpectedly. */
export class StderrTail {
  private text = '';
  constructor(private readonly limit = 4000) {}
  push(chunk: string): void {
    this.text = (this.text + chunk).slice(-this.limit);
  }
  toString(): string {
    return this.text.trim();
  }
}
