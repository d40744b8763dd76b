/**
 * An error meant for the person at the terminal: its message names the problem and, where there is one,
 * what to do about it. The CLI prints these without a stack trace; anything else is a bug and shows one.
 */
export class UserError extends Error {
  constructor(message: string, readonly hint?: string) {
    super(message);
    this.name = 'UserError';
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}

/**
 * An untrusted value for an error message: JSON, cut to `max` characters. JSON.stringify overflows the stack
 * on the deeply nested values JSON.parse accepts, and a hostile file must still get a clear message.
 */
export function showValue(v: unknown, max = 200): string {
  let s: string | undefined;
  try {
    s = JSON.stringify(v);
  } catch {
    return '(a value nested too deeply to show)';
  }
  if (s === undefined) return String(v);
  return s.length > max ? `${s.slice(0, max)}…` : s;
}
