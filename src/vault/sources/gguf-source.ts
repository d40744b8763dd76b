import { readdirSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { UserError } from '../../core/errors.js';
import {
  checkGgufSplitHeaders, ggufSummary, groupGgufFiles, readGgufHeader, type GgufFileSet, type GgufHeader,
} from '../../formats/gguf.js';
import { comparePaths, type ModelMetadata } from '../manifest.js';
import { readmeLicense, type FolderFile } from '../model-folder.js';
import type { PreparedImport } from '../importer.js';

/**
 * GGUF models: a single `.gguf` file, a split set (`NAME-00001-of-00003.gguf` …; naming any part imports the
 * set), or a folder of GGUF files such as a Hugging Face GGUF repo (one model per quantization, chosen with
 * --file). Metadata comes from the header of the first part: every part's header is read and checked, the
 * tensor data is not (the import hashes it).
 */

export interface GgufMetadata extends ModelMetadata {
  format: 'gguf';
}

/** Reads the headers of a model's parts (in load order) and summarises them as manifest metadata. */
export async function ggufMetadata(parts: readonly string[], license?: string): Promise<GgufMetadata> {
  const headers: Array<{ file: string; header: GgufHeader }> = [];
  for (const file of parts) headers.push({ file, header: await readGgufHeader(file) });
  checkGgufSplitHeaders(headers);
  const first = ggufSummary(headers[0]!.header);
  const parameters = headers.reduce((s, h) => s + ggufSummary(h.header).parameters, 0);
  return {
    format: 'gguf',
    architecture: first.architecture,
    model_type: first.architecture,
    parameters,
    // GGUF weights are quantized per tensor; the file type is what people compare, so it stands in as dtype.
    dtype: first.quantization,
    license: license ?? first.license,
    details: { context_length: first.context_length, quantization: first.quantization, chat_template: first.chat_template },
  };
}

function fileEntry(abs: string, path = basename(abs)): FolderFile {
  return { path, abs, size: statSync(abs).size };
}

/** The set a named file belongs to (a split part brings its siblings). */
function setOfFile(abs: string): GgufFileSet {
  const siblings = readdirSync(dirname(abs)).map((n) => join(dirname(abs), n));
  const set = groupGgufFiles(siblings).find((s) => s.files.includes(abs));
  if (!set) throw new UserError(`${abs} is not a .gguf file`);
  return set;
}

export async function prepareGgufFile(path: string, opts: { license?: string } = {}): Promise<PreparedImport & { suggested: string }> {
  const abs = resolve(path);
  const set = setOfFile(abs);
  const meta = await ggufMetadata(set.files, opts.license);
  return { ...meta, files: set.files.map((f) => fileEntry(f)), source: { kind: 'gguf-file', path: set.files[0]! }, suggested: set.base };
}

/** GGUF model sets directly in a folder (a GGUF repo holds one per quantization). */
export function ggufSetsIn(dir: string): GgufFileSet[] {
  return groupGgufFiles(readdirSync(dir).map((n) => join(dir, n)));
}

/**
 * A folder whose models are GGUF files: one set is imported together with the folder's other top-level
 * files that describe it (README, licence, params); `file` picks the set when there are several.
 */
export async function prepareGgufFolder(dir: string, opts: { file?: string; license?: string } = {}): Promise<PreparedImport & { suggested: string }> {
  const root = resolve(dir);
  const sets = ggufSetsIn(root);
  let set: GgufFileSet | undefined;
  if (opts.file !== undefined) {
    set = sets.find((s) => s.files.some((f) => basename(f) === opts.file) || s.base === opts.file);
    if (!set) throw new UserError(`${root} has no GGUF file ${JSON.stringify(opts.file)}`, `GGUF models here: ${sets.map((s) => basename(s.files[0]!)).join(', ')}`);
  } else if (sets.length === 1) {
    set = sets[0];
  } else {
    throw new UserError(`${root} holds ${sets.length} GGUF models; choose one with --file`, `GGUF models here: ${sets.map((s) => basename(s.files[0]!)).join(', ')}`);
  }
  const meta = await ggufMetadata(set!.files, opts.license);
  const others = readdirSync(root)
    .filter((n) => !n.startsWith('.') && !n.toLowerCase().endsWith('.gguf'))
    .map((n) => join(root, n))
    .filter((p) => statSync(p).isFile());
  const files = [...set!.files, ...others].map((f) => fileEntry(f)).sort((a, b) => comparePaths(a.path, b.path));
  // A Hub GGUF repo's model card names the licence when the GGUF header does not.
  const license = meta.license ?? readmeLicense(others.find((p) => basename(p) === 'README.md'));
  return { ...meta, license, files, source: { kind: 'local-dir', path: root, file: basename(set!.files[0]!) }, suggested: set!.base };
}
