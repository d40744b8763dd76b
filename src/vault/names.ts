import { UserError } from '../core/errors.js';

/** Names become folder names on every OS and appear in refs (`NAME:VERSION`), hence the narrow alphabet. */
const NAME_RE = /^[a-z0-9][a-z0-9._-]*$/;
export const MAX_NAME_LENGTH = 64;

export function isValidModelName(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && NAME_RE.test(name);
}

/** A valid name close to `name` (lowercased, other characters turned into '-'), or null. */
export function suggestModelName(name: string): string | null {
  const s = name
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, MAX_NAME_LENGTH)
    .replace(/[-._]+$/, '');
  return s.length > 0 && isValidModelName(s) ? s : null;
}

export function validateModelName(name: string): string {
  if (isValidModelName(name)) return name;
  const why =
    name.length === 0
      ? 'it is empty'
      : name.length > MAX_NAME_LENGTH
        ? `it is ${name.length} characters long (at most ${MAX_NAME_LENGTH})`
        : 'names use lowercase letters, digits, ".", "_" and "-", and start with a letter or digit';
  const suggestion = suggestModelName(name);
  throw new UserError(
    `invalid model name ${JSON.stringify(name)}: ${why}`,
    suggestion ? `try --name ${suggestion}` : undefined,
  );
}
