import { readFileSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { UserError } from '../core/errors.js';
import { readJsonObject, readJsonObjectOrNull } from '../core/json-file.js';
import { pickChatTemplate } from '../formats/chat-families.js';
import { comparePaths, type ModelMetadata } from './manifest.js';
import { readSafetensorsInfo, torchDtypeName } from './safetensors.js';

/**
 * Reads a Hugging Face model folder and checks it is importable, touching nothing: the importer runs this
 * before writing a single byte, so a broken folder leaves the vault exactly as it was.
 */

export interface FolderFile {
  /** Relative, '/'-separated. */
  path: string;
  abs: string;
  size: number;
  /** The content's sha256 where the source names it (Ollama blobs); checked on import. */
  sha256?: string;
}

export interface ModelFolderInfo extends ModelMetadata {
  dir: string;
  files: FolderFile[];
}

/** Files that are never part of a model: OS and editor litter, Python caches. Hidden entries are skipped too
 *  (.git, .cache/huggingface download state, .DS_Store). */
const JUNK_NAMES = new Set(['__pycache__', 'Thumbs.db', 'desktop.ini']);
function isJunk(name: string): boolean {
  return name.startsWith('.') || JUNK_NAMES.has(name) || name.endsWith('.pyc') || name.endsWith('~');
}

const PYTORCH_WEIGHTS = /^pytorch_model.*\.bin$/;

export async function inspectModelFolder(dir: string, opts: { license?: string } = {}): Promise<ModelFolderInfo> {
  const { root, files } = listFolder(dir, 'import a Hugging Face model folder (config.json + weights)');
  const byPath = new Map(files.map((f) => [f.path, f]));

  const configFile = byPath.get('config.json');
  if (!configFile) throw new UserError(`${join(root, 'config.json')} is missing: not a Hugging Face model folder`);
  const cfg = readJsonObject(configFile.abs);

  // Weights are what transformers loads: top-level files. Subfolders are kept but don't count.
  const topLevel = files.filter((f) => !f.path.includes('/'));
  const safetensors = topLevel.filter((f) => f.path.endsWith('.safetensors'));
  const pytorch = topLevel.filter((f) => PYTORCH_WEIGHTS.test(f.path));
  if (safetensors.length === 0 && pytorch.length === 0) {
    throw new UserError(`${root} has no weight files (*.safetensors or pytorch_model*.bin)`);
  }

  // Every safetensors file anywhere must be sound, but only the files that make up the model count towards
  // its size: a sharded checkpoint's index names its shards, and repos sometimes ship extra copies.
  const { parameters, dominant } = await safetensorsStats(files, new Set(shardsFromIndex(byPath) ?? safetensors.map((f) => f.path)));
  const configDtype = typeof cfg.torch_dtype === 'string' ? cfg.torch_dtype : typeof cfg.dtype === 'string' ? cfg.dtype : null;
  const archs = cfg.architectures;
  return {
    dir: root,
    files,
    format: safetensors.length > 0 ? 'hf-safetensors' : 'hf-pytorch',
    architecture: Array.isArray(archs) && typeof archs[0] === 'string' ? archs[0] : null,
    model_type: typeof cfg.model_type === 'string' ? cfg.model_type : null,
    parameters: safetensors.length > 0 ? parameters : null,
    dtype: dominant ? torchDtypeName(dominant) : configDtype,
    license: opts.license ?? readmeLicense(byPath.get('README.md')?.abs),
    details: {
      context_length: Number.isSafeInteger(cfg.max_position_embeddings) ? (cfg.max_position_embeddings as number) : null,
      chat_template: chatTemplateOf(byPath.get('tokenizer_config.json')?.abs),
    },
  };
}

/** tokenizer_config.json's default chat template, or null (a bad tokenizer file is not import's concern). */
function chatTemplateOf(path: string | undefined): string | null {
  return path ? pickChatTemplate(readJsonObjectOrNull(path)?.chat_template) : null;
}

/**
 * Checks every safetensors file's header; counts parameters (and the dominant dtype, as a torch name) over
 * the files in `counted` only.
 */
export async function safetensorsStats(files: FolderFile[], counted: Set<string>): Promise<{ parameters: number; dominant: string | undefined }> {
  let parameters = 0;
  const elements: Record<string, number> = {};
  for (const f of files.filter((f) => f.path.endsWith('.safetensors'))) {
    const info = await readSafetensorsInfo(f.abs, f.abs);
    if (!counted.has(f.path)) continue;
    parameters += info.parameters;
    for (const [dt, n] of Object.entries(info.elementsByDtype)) elements[dt] = (elements[dt] ?? 0) + n;
  }
  const dominant = Object.entries(elements).sort((a, b) => b[1] - a[1])[0]?.[0];
  return { parameters, dominant };
}

/** The folder's files (see listFiles), with a clear error when it is not a folder. */
export function listFolder(dir: string, hint: string): { root: string; files: FolderFile[] } {
  const root = resolve(dir);
  let st;
  try {
    st = statSync(root);
  } catch {
    throw new UserError(`not found: ${root}`);
  }
  if (!st.isDirectory()) throw new UserError(`not a folder: ${root}`, hint);
  return { root, files: listFiles(root) };
}

/** All regular files under root, following symlinks (Hugging Face cache snapshots are symlink farms). */
function listFiles(root: string): FolderFile[] {
  const out: FolderFile[] = [];
  const seenDirs = new Set<string>();
  const walk = (abs: string, rel: string) => {
    const real = realpathSync(abs);
    if (seenDirs.has(real)) return; // a symlink loop
    seenDirs.add(real);
    for (const name of readdirSync(abs).sort()) {
      if (isJunk(name)) continue;
      const childAbs = join(abs, name);
      const childRel = rel ? `${rel}/${name}` : name;
      let st;
      try {
        st = statSync(childAbs);
      } catch (e) {
        throw new UserError(`cannot read ${childAbs}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'broken symlink' : (e as Error).message}`);
      }
      if (st.isDirectory()) walk(childAbs, childRel);
      else if (st.isFile()) out.push({ path: childRel, abs: childAbs, size: st.size });
      else throw new UserError(`${childAbs} is not a regular file or folder`, 'move it out of the model folder');
    }
  };
  walk(root, '');
  return out.sort((a, b) => comparePaths(a.path, b.path));
}

function shardsFromIndex(byPath: Map<string, FolderFile>): string[] | null {
  const index = byPath.get('model.safetensors.index.json');
  if (!index) return null;
  try {
    const weightMap = (JSON.parse(readFileSync(index.abs, 'utf8')) as { weight_map?: Record<string, string> }).weight_map;
    if (!weightMap || typeof weightMap !== 'object') return null;
    const shards = [...new Set(Object.values(weightMap))];
    for (const s of shards) {
      if (!byPath.has(s)) throw new UserError(`${index.abs} names shard ${s}, which is not in the folder (incomplete download?)`);
    }
    return shards;
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`${index.abs} is not valid JSON: ${(e as Error).message}`);
  }
}

/** `license:` from a model card's YAML front matter (the Hugging Face convention), or null. */
export function readmeLicense(readmePath: string | undefined): string | null {
  if (!readmePath) return null;
  let text: string;
  try {
    text = readFileSync(readmePath, 'utf8');
  } catch {
    return null;
  }
  const front = /^\uFEFF?---\r?\n([\s\S]*?)\r?\n---\s*(\r?\n|$)/.exec(text);
  if (!front?.[1]) return null;
  for (const line of front[1].split(/\r?\n/)) {
    const m = /^license:\s*(.*?)\s*$/.exec(line);
    if (m?.[1]) {
      const v = m[1].replace(/^(['"])(.*)\1$/, '$2').trim();
      return v.length > 0 ? v : null;
    }
  }
  return null;
}
