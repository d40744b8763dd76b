import type { Command } from 'commander';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { copyFile, rename, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';
import { distilleryHome, distilleryVersion } from '../core/paths.js';
import { sha256File } from '../core/hash.js';
import { fsyncDir, tempPathFor } from '../core/atomic.js';
import { showValue, UserError } from '../core/errors.js';
import { getManifest, importFrom, modelDigest, modelView, modelRefString, modelSize, resolveModel, type Lineage, type Manifest } from '../vault/vault.js';
import { parseModelRef } from '../vault/refs.js';
import { ggufFileOf, handOffToLmStudio, handOffToOllama } from '../formats/handoff.js';
import { bytesBar, formatBytes } from './format.js';
import { listFolder, readmeLicense } from '../vault/model-folder.js';
import { findBaseModel, isAdapterFolder } from '../vault/sources/peft.js';
import { vaultLayout } from '../vault/layout.js';
import { suggestModelName, MAX_NAME_LENGTH, validateModelName } from '../vault/names.js';
import { exportGguf, GGUF_EXPORT_TYPES, type GgufExportType } from '../formats/gguf-export.js';
import { exportGgufLora, GGUF_LORA_TYPES, type GgufLoraType } from '../formats/gguf-lora.js';

/**
 * `distillery export REF --format gguf`: converts a vault model (or a model folder) to GGUF and adds the
 * result to the vault as a new model whose lineage names its parent; `-o` also writes the file out.
 * PEFT adapters become GGUF LoRA adapters for their base model's GGUF.
 */

export const EXPORT_FORMATS = ['gguf'] as const;

export interface ExportToVaultOptions {
  format?: string;
  /** f32, f16 (default) or q8_0; adapters: f32 (default) or f16. */
  type?: string;
  /** Also write the GGUF file here: a file path, or an existing folder. */
  output?: string;
  /** Vault name of the result (default `<parent>-gguf-<type>`). */
  name?: string;
  /** Adapters: the base model (default: the base recorded when the adapter was imported). */
  base?: string;
  onProgress?: (phase: 'export' | 'import', bytesDone: number, bytesTotal: number) => void;
}

export interface ExportToVaultResult {
  manifest: Manifest;
  kind: 'model' | 'adapter';
  type: string;
  architecture: string;
  parent: { ref: string; digest: string };
  /** The GGUF file written with --output, else null. */
  file: string | null;
  bytes: number;
  tensorTypes: Record<string, number> | null;
  notes: string[];
}

/** The identity of a model given as a folder: its content digest, as the vault would compute it. */
async function folderIdentity(dir: string): Promise<{ ref: string; digest: string }> {
  const { root, files } = listFolder(dir, 'export a model folder');
  const hashed = [];
  for (const f of files) hashed.push({ path: f.path, sha256: (await sha256File(f.abs)).sha256 });
  return { ref: root, digest: modelDigest(hashed) };
}

/** An adapter folder's base_model_name_or_path as a vault reference or an existing folder, else null. */
function baseFromAdapterConfig(dir: string, home: string): string | null {
  let name: unknown;
  try {
    name = (JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as { base_model_name_or_path?: unknown }).base_model_name_or_path;
  } catch {
    return null;
  }
  if (typeof name !== 'string' || name === '') return null;
  const inVault = findBaseModel(vaultLayout(home), name);
  if (inVault) return modelRefString(inVault);
  return existsSync(join(name, 'config.json')) ? resolve(name) : null;
}

/** `20250102T030405Z` */
function stamp(d = new Date()): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

/** Copies `src` to `dest` (a file path, or an existing folder) without ever leaving a half-written file there. */
async function writeOutput(src: string, dest: string, fileName: string): Promise<string> {
  let target = resolve(dest);
  if (existsSync(target) && statSync(target).isDirectory()) target = join(target, fileName);
  if (!existsSync(dirname(target))) throw new UserError(`cannot write ${target}: folder ${dirname(target)} does not exist`);
  const tmp = tempPathFor(target);
  try {
    await copyFile(src, tmp);
    await rename(tmp, target);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fsyncDir(dirname(target));
  return target;
}

/** Exports `ref` (NAME[:VERSION] or a folder) to GGUF and registers the result in the vault at `home`. */
export async function exportToVault(ref: string, opts: ExportToVaultOptions = {}, home: string = distilleryHome()): Promise<ExportToVaultResult> {
  const format = opts.format ?? 'gguf';
  if (!(EXPORT_FORMATS as readonly string[]).includes(format)) {
    throw new UserError(`unknown export format ${showValue(format)}`, `supported: ${EXPORT_FORMATS.join(', ')}`);
  }
  if (opts.name !== undefined) validateModelName(opts.name);
  const resolved = await resolveModel(ref, home);
  const parentManifest = resolved.kind === 'vault' ? resolved.manifest : null;
  if (parentManifest?.format === 'gguf') throw new UserError(`${modelRefString(parentManifest)} is already a GGUF model`);
  if (parentManifest?.format === 'hf-pytorch') {
    throw new UserError(`${modelRefString(parentManifest)} has PyTorch pickle weights; GGUF export reads safetensors`, 're-save it with save_pretrained(safe_serialization=True) and import that');
  }
  const isAdapter = parentManifest ? parentManifest.format === 'peft-adapter' : isAdapterFolder(resolved.dir);

  const types: readonly string[] = isAdapter ? GGUF_LORA_TYPES : GGUF_EXPORT_TYPES;
  const type = opts.type ?? (isAdapter ? 'f32' : 'f16');
  if (!types.includes(type)) {
    throw new UserError(`--type ${type} does not apply to ${isAdapter ? 'a LoRA adapter' : 'a model'}`, `use one of ${types.join(', ')}`);
  }
  let baseDir: string | null = null;
  let baseId: { ref: string; digest: string } | null = null;
  if (isAdapter) {
    const baseRef = opts.base ?? parentManifest?.details?.base_model?.ref ?? baseFromAdapterConfig(resolved.dir, home);
    if (baseRef === null) {
      throw new UserError(`the base model of adapter ${ref} is not known`, 'pass --base REF (the vault model or folder the adapter was trained on)');
    }
    const base = await resolveModel(baseRef, home);
    baseDir = base.dir;
    baseId = base.kind === 'vault' ? { ref: modelRefString(base.manifest), digest: base.manifest.digest } : await folderIdentity(base.dir);
  } else if (opts.base !== undefined) {
    throw new UserError('--base applies to adapters only');
  }

  const parent = parentManifest ? { ref: modelRefString(parentManifest), digest: parentManifest.digest } : await folderIdentity(resolved.dir);
  const stem = parentManifest?.name ?? suggestModelName(basename(resolved.dir)) ?? 'model';
  const suffix = `-gguf-${type}`;
  const name = opts.name ?? validateModelName(stem.slice(0, MAX_NAME_LENGTH - suffix.length).replace(/[-._]+$/, '') + suffix);
  const license = parentManifest ? parentManifest.license : readmeLicense(join(resolved.dir, 'README.md'));

  const tmpDir = join(home, 'tmp', `export-${stamp()}-${randomBytes(4).toString('hex')}`);
  mkdirSync(tmpDir, { recursive: true });
  try {
    const file = join(tmpDir, `${name}.gguf`);
    const progress = (p: { bytesDone: number; bytesTotal: number }) => opts.onProgress?.('export', p.bytesDone, p.bytesTotal);
    let architecture: string;
    let tensorTypes: Record<string, number> | null = null;
    let notes: string[] = [];
    if (isAdapter) {
      const r = await exportGgufLora(resolved.dir, baseDir!, file, { type: type as GgufLoraType, name, onProgress: progress });
      architecture = r.architecture;
    } else {
      const r = await exportGguf(resolved.dir, file, { type: type as GgufExportType, name, license, onProgress: progress });
      architecture = r.architecture;
      tensorTypes = r.tensorTypes;
      notes = r.notes;
    }
    const runId = `export-${stamp()}`;
    const lineage: Lineage = {
      parent,
      run_id: runId,
      recipe: {
        name: 'gguf-export', format: 'gguf', type, distillery_version: distilleryVersion(),
        ...(baseId ? { adapter_base: baseId } : {}),
      },
      evaluation: {},
    };
    const { manifest } = await importFrom(file, {
      name,
      lineage,
      ...(license ? { license } : {}),
      source: { kind: 'export', format: 'gguf', type, parent: parent.ref, run_id: runId },
      onProgress: (p) => opts.onProgress?.('import', p.bytesDone, p.bytesTotal),
    }, home);
    const written = opts.output !== undefined ? await writeOutput(file, opts.output, `${name}.gguf`) : null;
    return {
      manifest, kind: isAdapter ? 'adapter' : 'model', type, architecture, parent, file: written, bytes: modelSize(manifest), tensorTypes, notes,
    };
  } finally {
    rmSync(tmpDir, { recursive: true, force: true });
  }
}

/** Where the command runs: the Distillery home and stdout (tests pass their own). */
export interface ExportCommandIo {
  home?: string;
  write?: (text: string) => void;
}

export function registerExportCommand(program: Command, io: ExportCommandIo = {}): void {
  const write = io.write ?? ((s: string) => void process.stdout.write(s));
  program
    .command('export <ref>')
    .description(
      'Export a model (NAME[:VERSION] from the vault, or a Hugging Face folder) to GGUF for llama.cpp, Ollama and LM Studio, ' +
        'and add the file to the vault as a new model whose lineage names its parent. PEFT LoRA adapters become GGUF LoRA adapters.',
    )
    .option('--format <format>', `output format: ${EXPORT_FORMATS.join(', ')}`, 'gguf')
    .option('--type <type>', `weights: ${GGUF_EXPORT_TYPES.join(', ')} (default f16); adapters: ${GGUF_LORA_TYPES.join(', ')} (default f32)`)
    .option('-o, --output <file>', 'also write the GGUF file here (a file path, or an existing folder)')
    .option('--name <name>', 'vault name of the result (default <model>-gguf-<type>)')
    .option('--base <ref>', 'adapters: the base model (default: the base recorded when the adapter was imported)')
    .option('--for <app>', 'also hand the GGUF to an app: ollama (a folder with the GGUF and a Modelfile for "ollama create") or lmstudio (placed in its models folder)')
    .option('--to <dir>', '--for ollama: the folder to write (default ./<name>-ollama); --for lmstudio: the models folder (default $LMSTUDIO_MODELS_DIR or ~/.lmstudio/models)')
    .option('--json', 'print the result as JSON')
    .option('-q, --quiet', 'no progress output')
    .addHelpText(
      'after',
      `
Supported: LlamaForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM with F32/F16/BF16 safetensors, and their tokenizers
(SentencePiece-style BPE with byte fallback, or byte-level BPE: Llama 3, Qwen, GPT-2, SmolLM). Norms and biases stay F32;
with q8_0, weights whose rows are not a multiple of 32 are stored as F16 (as llama.cpp's converter does). See docs/export.md.

Examples:
  distillery export stories260k --type f32                  adds stories260k-gguf-f32 to the vault
  distillery export mymodel:3 --type q8_0 -o ./mymodel.gguf  also writes the file
  distillery export ./my-hf-folder --name my-model-gguf --json
  distillery export my-adapter -o ./adapter.gguf            a LoRA adapter (llama.cpp --lora adapter.gguf)
  distillery export mymodel --type q8_0 --for ollama        then: ollama create mymodel -f ./mymodel-gguf-q8_0-ollama/Modelfile
  distillery export mymodel-gguf-q8_0 --for lmstudio        a GGUF already in the vault is handed over as it is

The Ollama Modelfile carries the chat template (translated for the ChatML, Llama 3, Gemma and Mistral families;
other templates get none and Ollama's default applies), the stop strings and the licence. See docs/export.md.`,
    )
    .action(async (ref: string, opts: ExportCliOptions) => {
      const quiet = opts.quiet === true;
      const home = io.home ?? distilleryHome();
      if (opts.for !== undefined && opts.for !== 'ollama' && opts.for !== 'lmstudio') throw new UserError(`--for ${showValue(opts.for)}: use ollama or lmstudio`);
      if (opts.to !== undefined && opts.for === undefined) throw new UserError('--to goes with --for ollama|lmstudio');
      // A GGUF already in the vault is handed over as it is; anything else is exported first.
      const existing = opts.for !== undefined ? ggufInVault(ref, home) : null;
      let m: Manifest;
      let result: ExportToVaultResult | null = null;
      if (existing) {
        m = existing;
      } else {
        const bars = { export: bytesBar(`export ${ref}`), import: bytesBar('store in vault') };
        let phase: 'export' | 'import' = 'export';
        result = await exportToVault(ref, {
          format: opts.format, type: opts.type, output: opts.output, name: opts.name, base: opts.base,
          onProgress: (p, done, total) => {
            if (p === 'import' && phase === 'export') bars.export.done('converted');
            phase = p;
            if (!quiet) bars[p].update({ bytesDone: done, bytesTotal: total });
          },
        }, home);
        bars.import.done('stored');
        for (const n of result.notes) process.stderr.write(`note: ${n}\n`);
        m = result.manifest;
      }
      const handoff = opts.for === undefined ? null : handOff(m, opts.for, opts.to, home);
      if (opts.json) {
        write(JSON.stringify({
          model: modelRefString(m), digest: m.digest, format: 'gguf', exported: result !== null,
          ...(result ? { kind: result.kind, type: result.type, architecture: result.architecture, bytes: result.bytes, file: result.file, parent: result.parent, tensor_types: result.tensorTypes, notes: result.notes } : {}),
          ...(handoff ? { handoff } : {}),
        }, null, 2) + '\n');
        return;
      }
      if (result) {
        const what = result.kind === 'adapter' ? `GGUF LoRA adapter (${result.type.toUpperCase()})` : `GGUF ${result.type.toUpperCase()}`;
        write(
          `exported ${result.parent.ref} → ${modelRefString(m)}: ${what}, ${result.architecture}, ${formatBytes(result.bytes)}\ndigest ${m.digest}\n` +
            (result.file ? `wrote ${result.file}\n` : `file: ${join(modelView(m, home), ggufFileOf(m).path)}\n`),
        );
      }
      if (handoff?.app === 'ollama') write(`Ollama: wrote ${handoff.path} (template: ${handoff.template ?? 'none, Ollama default'})\nnow run: ${handoff.command}\n`);
      if (handoff?.app === 'lmstudio') write(`LM Studio: placed ${handoff.path}\n(it appears under My Models; restart LM Studio if it is running)\n`);
    });
}

interface ExportCliOptions {
  format: string; type?: string; output?: string; name?: string; base?: string; for?: string; to?: string; json?: boolean; quiet?: boolean;
}

/** The vault GGUF model `ref` names, or null when it is something to export (another format, or a folder). */
function ggufInVault(ref: string, home: string): Manifest | null {
  const layout = vaultLayout(home);
  if (parseModelRef(ref, layout).kind === 'path') return null;
  const m = getManifest(ref, home);
  return m.format === 'gguf' ? m : null;
}

type HandOff =
  | { app: 'ollama'; path: string; command: string; template: string | null }
  | { app: 'lmstudio'; path: string };

function handOff(m: Manifest, app: 'ollama' | 'lmstudio', to: string | undefined, home: string): HandOff {
  const gguf = join(modelView(m, home), ggufFileOf(m).path);
  if (app === 'lmstudio') return { app, path: handOffToLmStudio(m, gguf, { modelsDir: to }) };
  const r = handOffToOllama(m, gguf, to ?? `./${m.name}-ollama`, m.name);
  return { app, path: r.dir, command: r.command, template: r.family };
}
