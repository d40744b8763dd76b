import { chmodSync, copyFileSync, existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { writeFileAtomicSync, tempPathFor } from '../core/atomic.js';
import { UserError } from '../core/errors.js';
import type { Manifest, ManifestFile } from '../vault/manifest.js';
import { templateFor } from './chat-families.js';

/**
 * Handing a GGUF model to the local apps people run models in:
 * - Ollama: a folder with the GGUF and a Modelfile (`FROM`, `TEMPLATE`, `PARAMETER stop`, `LICENSE`) that
 *   `ollama create NAME -f Modelfile` turns into an Ollama model;
 * - LM Studio: the GGUF placed as `<models dir>/<publisher>/<model>/<file>.gguf`, the layout LM Studio scans
 *   (a file directly in the models folder is not found).
 */

/** A vault GGUF model's weights file (not Ollama's kept layers under ollama/, not a vision projector). */
export function isGgufWeightsPath(path: string): boolean {
  return path.endsWith('.gguf') && !path.startsWith('ollama/') && !/mmproj/.test(path);
}

/** The single GGUF weights file of a vault GGUF model (split sets are refused: Ollama wants one file). */
export function ggufFileOf(m: Manifest): ManifestFile {
  if (m.format !== 'gguf') {
    throw new UserError(`${m.name}:${m.version} is ${m.format}, not GGUF`, `export it first: distillery export ${m.name}:${m.version} --format gguf`);
  }
  const ggufs = m.files.filter((f) => isGgufWeightsPath(f.path));
  if (ggufs.length !== 1 || /-\d{5}-of-\d{5}\.gguf$/.test(ggufs[0]!.path)) {
    throw new UserError(`${m.name}:${m.version} has ${ggufs.length === 1 ? 'a split GGUF' : `${ggufs.length} GGUF files`}; the hand-off needs exactly one GGUF file`);
  }
  return ggufs[0]!;
}

/** Modelfile text for a GGUF named `ggufName` beside it. Quoting: Modelfile triple quotes cannot hold `"""`. */
export function ollamaModelfile(m: Manifest, ggufName: string): { text: string; family: string | null } {
  const lines = [`# ${m.name}:${m.version} from the Distillery vault (digest ${m.digest.slice(0, 12)})`, `FROM ./${ggufName}`];
  const family = templateFor(m.details?.chat_template ?? null);
  if (family) {
    lines.push(`TEMPLATE """${family.template}"""`);
    for (const s of family.stop) lines.push(`PARAMETER stop ${JSON.stringify(s)}`);
  }
  if (m.license) lines.push(`LICENSE """${m.license.replace(/"""/g, '" " "')}"""`);
  return { text: lines.join('\n') + '\n', family: family?.family ?? null };
}

/** Copies through a temp name (never a half file under the final name); the copy is the user's: writable. */
function copyAtomic(src: string, dst: string): void {
  const tmp = tempPathFor(dst);
  copyFileSync(src, tmp);
  chmodSync(tmp, 0o644);
  renameSync(tmp, dst);
}

/** Writes `<dir>/<model>.gguf` and `<dir>/Modelfile`; returns what to run. */
export function handOffToOllama(m: Manifest, ggufPath: string, dir: string, ollamaName: string): { dir: string; command: string; family: string | null } {
  const out = resolve(dir);
  mkdirSync(out, { recursive: true });
  const ggufName = `${m.name}.gguf`;
  copyAtomic(ggufPath, join(out, ggufName));
  const { text, family } = ollamaModelfile(m, ggufName);
  writeFileAtomicSync(join(out, 'Modelfile'), text);
  return { dir: out, command: `ollama create ${ollamaName} -f ${join(out, 'Modelfile')}`, family };
}

/** LM Studio's models folder: $LMSTUDIO_MODELS_DIR, else ~/.lmstudio/models. */
export function lmStudioModelsDir(): string {
  return process.env.LMSTUDIO_MODELS_DIR ?? join(homedir(), '.lmstudio', 'models');
}

/** Copies the GGUF to `<modelsDir>/<publisher>/<model>/<file>`; refuses to overwrite a different file. */
export function handOffToLmStudio(m: Manifest, ggufPath: string, opts: { modelsDir?: string; publisher?: string } = {}): string {
  const root = resolve(opts.modelsDir ?? lmStudioModelsDir());
  const dir = join(root, opts.publisher ?? 'distillery', m.name);
  const file = join(dir, `${m.name}-v${m.version}.gguf`);
  if (existsSync(file) && statSync(file).size !== statSync(ggufPath).size) {
    throw new UserError(`${file} exists and is a different file`, 'remove it, or pass another --publisher');
  }
  mkdirSync(dir, { recursive: true });
  copyAtomic(ggufPath, file);
  return file;
}
