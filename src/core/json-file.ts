import { readFileSync } from 'node:fs';
import { UserError } from './errors.js';

/** A JSON object: what config files, tokenizer files and manifests hold. */
export type JsonObject = Record<string, unknown>;

export function isJsonObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Reads a file that must hold a JSON object; a UserError names the file and what is wrong. */
export function readJsonObject(path: string): JsonObject {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new UserError(`${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (!isJsonObject(v)) throw new UserError(`${path} is not a JSON object`);
  return v;
}

/** The same for optional files: null when the file is missing, unreadable or not a JSON object. */
export function readJsonObjectOrNull(path: string): JsonObject | null {
  try {
    return readJsonObject(path);
  } catch {
    return null;
  }
}
