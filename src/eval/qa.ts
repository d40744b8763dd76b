import { readFile } from 'node:fs/promises';
import { UserError } from '../core/errors.js';
import { parseJsonlObjects } from '../core/jsonl.js';
import type { RetentionTask } from './retention/index.js';

/**
 * Question/answer sets for knowledge and retention probes, from a JSONL file the user has:
 * `{"question": str, "answer": str | [str], "aliases"?: [str], "id"?: str, "difficulty"?: number}` per line, and
 * optionally a first line `{"licence": str}` recording where the data comes from. Answers are matched as the
 * built-in probes' facts are (src/eval/retention: exact, normalised, any alias), no execution involved.
 */

export function isQaRecord(rec: Record<string, unknown>): boolean {
  return typeof rec.question === 'string' && (typeof rec.answer === 'string' || Array.isArray(rec.answer));
}

export function parseQaFile(text: string, source: string): { tasks: RetentionTask[]; licence: string | null } {
  let licence: string | null = null;
  const tasks: RetentionTask[] = [];
  const ids = new Set<string>();
  for (const { rec, where } of parseJsonlObjects(text, source)) {
    if (tasks.length === 0 && licence === null && typeof rec.licence === 'string' && rec.question === undefined) {
      licence = rec.licence;
      continue;
    }
    if (!isQaRecord(rec)) throw new UserError(`${where}: a question/answer line needs "question" (string) and "answer" (string or list of strings)`);
    const answers = [...(Array.isArray(rec.answer) ? rec.answer : [rec.answer]), ...(Array.isArray(rec.aliases) ? rec.aliases : [])];
    if (answers.length === 0 || !answers.every((a) => typeof a === 'string' && a.trim() !== '')) throw new UserError(`${where}: answers and aliases must be non-empty strings`);
    const id = typeof rec.id === 'string' ? rec.id : `qa/${String(tasks.length).padStart(4, '0')}`;
    if (ids.has(id)) throw new UserError(`${where}: duplicate id ${JSON.stringify(id)}`);
    ids.add(id);
    const difficulty = typeof rec.difficulty === 'number' ? rec.difficulty : 1;
    tasks.push({ id, kind: 'qa', question: rec.question as string, difficulty, answers: answers as string[] });
  }
  if (tasks.length === 0) throw new UserError(`${source} holds no questions`);
  return { tasks, licence };
}

/** True when the file's first record is a question/answer line (or a licence line). */
export async function looksLikeQaFile(path: string): Promise<boolean> {
  // An unreadable file is not recognised here: the task loader then reports it by name.
  const text = await readFile(path, 'utf8').catch(() => '');
  const first = text.split('\n').find((l) => l.trim() !== '');
  if (!first) return false;
  try {
    const rec = JSON.parse(first) as Record<string, unknown>;
    return isQaRecord(rec) || (typeof rec.licence === 'string' && rec.question === undefined);
  } catch {
    return false;
  }
}
