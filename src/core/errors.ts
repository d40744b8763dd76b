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
