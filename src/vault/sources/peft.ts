import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { UserError } from '../../core/errors.js';
import type { PreparedImport } from '../importer.js';
import type { VaultLayout } from '../layout.js';
import { listManifestLocations, modelRefString, readManifest, type Manifest } from '../manifest.js';
import { listFolder, readmeLicense, safetensorsStats } from '../model-folder.js';
import { lookupManifest } from '../refs.js';
import { torchDtypeName } from '../safetensors.js';

/**
 * PEFT adapter folders (`adapter_config.json` + `adapter_model.safetensors|bin`). An adapter is useless
 * without its base, so the import links it to a vault model: the one given with `--base`, else the one whose
 * name, original Hub repo id or source folder matches the config's `base_model_name_or_path`.
 */

export function isAdapterFolder(dir: string): boolean {
  return existsSync(join(dir, 'adapter_config.json')) && !existsSync(join(dir, 'config.json'));
}

/** The vault model an adapter's `base_model_name_or_path` refers to (latest version), or null. */
export function findBaseModel(layout: VaultLayout, baseName: string): Manifest | null {
  const wanted = baseName.replace(/\/+$/, '');
  let best: Manifest | null = null;
  for (const loc of listManifestLocations(layout)) {
    let m: Manifest;
    try {
      m = readManifest(layout, loc.name, loc.version);
    } catch {
      continue; // verify reports unreadable manifests; they just can't be a base here
    }
    if (m.format === 'peft-adapter') continue;
    const matches =
      m.name === wanted.toLowerCase() ||
      m.source.repo_id === wanted ||
      (typeof m.source.path === 'string' && resolve(m.source.path) === resolve(wanted));
    // Manifests come sorted by name, then version: the first matching name wins, at its latest version.
    if (matches && (best === null || (m.name === best.name && m.version > best.version))) best = m;
  }
  return best;
}

export async function preparePeftAdapter(
  layout: VaultLayout,
  dir: string,
  opts: { base?: string; license?: string } = {},
): Promise<PreparedImport & { baseFound: boolean }> {
  const { root, files } = listFolder(dir, 'import a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)');
  const configFile = files.find((f) => f.path === 'adapter_config.json');
  if (!configFile) throw new UserError(`${join(root, 'adapter_config.json')} is missing: not a PEFT adapter folder`);
  let cfg: Record<string, unknown>;
  try {
    const v = JSON.parse(readFileSync(configFile.abs, 'utf8')) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    cfg = v as Record<string, unknown>;
  } catch (e) {
    throw new UserError(`${configFile.abs} is not valid: ${(e as Error).message}`);
  }
  const weights = files.filter((f) => !f.path.includes('/') && /^adapter_model.*\.(safetensors|bin)$/.test(f.path));
  if (weights.length === 0) throw new UserError(`${root} has no adapter weights (adapter_model.safetensors or adapter_model.bin)`);
  const safetensors = weights.filter((f) => f.path.endsWith('.safetensors'));
  const { parameters, dominant } = await safetensorsStats(files, new Set(safetensors.map((f) => f.path)));

  const baseName = typeof cfg.base_model_name_or_path === 'string' && cfg.base_model_name_or_path !== '' ? cfg.base_model_name_or_path : null;
  const base = opts.base !== undefined ? lookupManifest(opts.base, layout) : baseName !== null ? findBaseModel(layout, baseName) : null;
  if (base?.format === 'peft-adapter') throw new UserError(`--base ${opts.base}: ${modelRefString(base)} is itself an adapter`);
  return {
    files,
    format: 'peft-adapter',
    architecture: base?.architecture ?? null,
    model_type: typeof cfg.peft_type === 'string' ? cfg.peft_type.toLowerCase() : null,
    parameters: safetensors.length > 0 ? parameters : null,
    dtype: dominant ? torchDtypeName(dominant) : null,
    license: opts.license ?? readmeLicense(files.find((f) => f.path === 'README.md')?.abs) ?? base?.license ?? null,
    details: { base_model: { name: baseName, ref: base ? modelRefString(base) : null, digest: base?.digest ?? null } },
    source: { kind: 'peft-adapter', path: root },
    baseFound: base !== null,
  };
}
