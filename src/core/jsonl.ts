import { UserError } from './errors.js';

/** One object line of a JSONL text, with where it came from for error messages. */
export interface JsonlRecord {
  rec: Record<string, unknown>;
  /** 1-based line number. */
  line: number;
  /** `source:line`, the prefix of every message about this record. */
  where: string;
}

/** Parses JSONL whose lines are JSON objects; blank lines are skipped, errors name `source:line`. */
export function parseJsonlObjects(text: string, source: string): JsonlRecord[] {
  const out: JsonlRecord[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.replace(/\r$/, '');
    if (raw.trim() === '') continue;
    const where = `${source}:${i + 1}`;
    let obj: unknown;
    try {
      obj = JSON.parse(raw);
    } catch (e) {
      throw new UserError(`${where}: not valid JSON (${(e as Error).message})`, 'each line must be one JSON object');
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
      throw new UserError(`${where}: expected a JSON object, got ${Array.isArray(obj) ? 'an array' : typeof obj}`);
    }
    out.push({ rec: obj as Record<string, unknown>, line: i + 1, where });
  }
  return out;
}
