import type { Command } from 'commander';
import { distilleryHome } from '../core/paths.js';
import { startProgress, formatDuration } from '../core/progress.js';
import {
  getManifest, importModel, inspectModelFolder, listModels, modelSize, verifyVault,
  type Manifest, type ModelRow, type VerifyReport,
} from '../vault/vault.js';
import { parseModelRef } from '../vault/refs.js';
import { vaultLayout } from '../vault/layout.js';
import { table } from './format.js';

/** `distillery vault …`: import, list, show and verify models in DISTILLERY_HOME. */

/** 1044992 → "1.0 MB". Decimal units, matching how model sizes and disk throughput are usually quoted. */
export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let i = 0;
  let v = n;
  while (i < units.length - 1 && Math.abs(v) >= 999.5) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${n} B` : `${v < 9.95 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** 260032 → "260k", 1234567 → "1.2M", 7615616512 → "7.6B". */
export function formatParams(n: number | null): string {
  if (n === null) return '-';
  const units = ['', 'k', 'M', 'B', 'T'];
  let i = 0;
  let v = n;
  while (i < units.length - 1 && Math.abs(v) >= 999.5) {
    v /= 1000;
    i++;
  }
  return i === 0 ? String(n) : `${v < 9.95 ? v.toFixed(1) : Math.round(v)}${units[i]}`;
}

const short = (digest: string) => digest.slice(0, 12);
const when = (iso: string) => iso.slice(0, 16).replace('T', ' ');

function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

function bytesProgress(label: string, total: number) {
  // startProgress counts units; megabytes keep the numbers readable for multi-gigabyte models.
  const mb = (b: number) => Math.round(b / 1e6);
  const bar = startProgress(label, { total: Math.max(1, mb(total)), unit: 'MB' });
  return { update: (done: number, extra?: string) => bar.update(mb(done), extra), done: (msg?: string) => bar.done(msg) };
}

function describeManifest(m: Manifest, rows: ModelRow[]): string {
  const parent = m.lineage
    ? `${m.lineage.parent.ref} (${short(m.lineage.parent.digest)}${rows.some((r) => r.digest === m.lineage!.parent.digest) ? '' : ', not in this vault'})`
    : null;
  const fields: Array<[string, string]> = [
    ['model', `${m.name}:${m.version}`],
    ['digest', m.digest],
    ['created', m.created],
    ['format', m.format],
    ['architecture', m.architecture ?? '-'],
    ['model type', m.model_type ?? '-'],
    ['parameters', m.parameters === null ? '-' : `${formatParams(m.parameters)} (${m.parameters.toLocaleString('en-US')})`],
    ['dtype', m.dtype ?? '-'],
    ['license', m.license ?? 'unknown'],
    ['size', `${formatBytes(modelSize(m))} in ${m.files.length} file(s)`],
    ['source', [m.source.kind, m.source.path].filter(Boolean).join(' ')],
  ];
  if (parent) {
    fields.push(['parent', parent], ['run', m.lineage!.run_id]);
  }
  const width = Math.max(...fields.map(([k]) => k.length));
  const lines = fields.map(([k, v]) => `${k.padEnd(width)}  ${v}`);
  lines.push('', table([['FILE', 'SIZE', 'SHA256'], ...m.files.map((f) => [f.path, formatBytes(f.size), short(f.sha256)])]));
  return lines.join('\n') + '\n';
}

function describeReport(r: VerifyReport): string {
  const lines: string[] = [];
  if (r.models.length > 0) {
    lines.push(table([['MODEL', 'STATUS'], ...r.models.map((m) => [m.ref, m.ok ? 'ok' : `DAMAGED (${m.damagedFiles.join(', ') || 'manifest'})`])]));
  } else {
    lines.push('the vault is empty: nothing to verify');
  }
  for (const d of r.damaged) {
    const what = {
      missing: 'missing',
      'size-mismatch': `wrong size (${d.actualSize} bytes, expected ${d.expectedSize})`,
      'hash-mismatch': `content changed (sha256 now ${d.actualSha256 ? short(d.actualSha256) : '?'})`,
      unreadable: `unreadable (${d.error ?? 'error'})`,
    }[d.problem];
    lines.push('', `blob ${d.sha256}: ${what}`);
    for (const u of d.usedBy) lines.push(`  breaks ${u.model} ${u.path}`);
  }
  for (const b of r.badManifests) lines.push('', `manifest ${b.path}: ${b.error}`);
  return lines.join('\n') + '\n';
}

export function registerVaultCommands(program: Command): void {
  const vault = program
    .command('vault')
    .description('Keep models safe: content-addressed, verifiable storage in $DISTILLERY_HOME.')
    .addHelpText(
      'after',
      `
Models are stored once per unique file (blobs/sha256/…) and described by versioned manifests
(models/NAME/VERSION.json). A model reference is NAME, NAME:VERSION or a path to a model folder.

Example:
  distillery vault import ./stories260k --name stories260k
  distillery vault list
  distillery vault verify`,
    );

  vault
    .command('import <dir>')
    .description('Copy a Hugging Face model folder (config.json + safetensors/bin weights) into the vault as a new version.')
    .requiredOption('--name <name>', 'model name: lowercase letters, digits, ".", "_", "-" (at most 64 characters)')
    .option('--license <license>', 'license identifier (default: `license:` from README.md front matter)')
    .option('--json', 'print the new manifest as JSON')
    .addHelpText(
      'after',
      `
The folder is checked first (config.json, weight files, safetensors headers); a broken folder changes
nothing. Importing the same name again adds the next version; identical files are stored once.

Example:
  distillery vault import ~/models/Qwen3-0.6B --name qwen3-0.6b --license apache-2.0`,
    )
    .action(async (dir: string, opts: { name: string; license?: string; json?: boolean }) => {
      let bar: ReturnType<typeof bytesProgress> | null = null;
      const m = await importModel(dir, {
        name: opts.name,
        license: opts.license,
        onProgress: (p) => {
          bar ??= bytesProgress(`import ${opts.name}`, p.bytesTotal);
          bar.update(p.bytesDone);
        },
      });
      (bar as ReturnType<typeof bytesProgress> | null)?.done(`${formatBytes(modelSize(m))} stored`);
      if (opts.json) return printJson(m);
      process.stdout.write(
        `imported ${m.name}:${m.version}: ${m.architecture ?? 'unknown architecture'}, ${formatParams(m.parameters)} parameters, ` +
          `${formatBytes(modelSize(m))} in ${m.files.length} file(s)\ndigest ${m.digest}\n`,
      );
    });

  vault
    .command('list')
    .description('List the models in the vault, every version.')
    .option('--json', 'print JSON (one object per model version)')
    .addHelpText('after', '\nExample:\n  distillery vault list --json')
    .action((opts: { json?: boolean }) => {
      const rows = listModels();
      if (opts.json) return printJson(rows);
      if (rows.length === 0) {
        process.stdout.write(`the vault is empty (${distilleryHome()})\nadd a model: distillery vault import DIR --name NAME\n`);
        return;
      }
      const byDigest = new Map(rows.map((r) => [r.digest, `${r.name}:${r.version}`]));
      const body = rows.map((r) => [
        `${r.name}:${r.version}`, r.architecture ?? '-', formatParams(r.parameters), r.dtype ?? '-',
        formatBytes(r.size), when(r.created), short(r.digest),
        r.parent_digest ? (byDigest.get(r.parent_digest) ?? short(r.parent_digest)) : '-',
      ]);
      process.stdout.write(table([['MODEL', 'ARCHITECTURE', 'PARAMS', 'DTYPE', 'SIZE', 'CREATED (UTC)', 'DIGEST', 'PARENT'], ...body]) + '\n');
    });

  vault
    .command('show <ref>')
    .description('Show a model: manifest fields, files and lineage (or what a folder would import as).')
    .option('--json', 'print the manifest as JSON')
    .addHelpText('after', '\nExamples:\n  distillery vault show stories260k        latest version\n  distillery vault show stories260k:1 --json\n  distillery vault show ./some-model-folder')
    .action(async (ref: string, opts: { json?: boolean }) => {
      const parsed = parseModelRef(ref, vaultLayout());
      if (parsed.kind === 'path') {
        // Not in the vault: show what importing it would record, without writing anything.
        const info = await inspectModelFolder(parsed.path);
        const summary = {
          kind: 'path', dir: info.dir, format: info.format, architecture: info.architecture, model_type: info.model_type,
          parameters: info.parameters, dtype: info.dtype, license: info.license,
          files: info.files.map((f) => ({ path: f.path, size: f.size })),
        };
        if (opts.json) return printJson(summary);
        const size = info.files.reduce((s, f) => s + f.size, 0);
        process.stdout.write(
          `${info.dir} (a folder, not in the vault)\n` +
            `format ${info.format}, ${info.architecture ?? 'unknown architecture'}, ${formatParams(info.parameters)} parameters, ` +
            `${info.dtype ?? 'unknown dtype'}, license ${info.license ?? 'unknown'}\n\n` +
            table([['FILE', 'SIZE'], ...info.files.map((f) => [f.path, formatBytes(f.size)])]) +
            `\n${formatBytes(size)} in ${info.files.length} file(s)\n`,
        );
        return;
      }
      const m = getManifest(ref);
      if (opts.json) return printJson(m);
      process.stdout.write(describeManifest(m, listModels()));
    });

  vault
    .command('verify [ref]')
    .description('Re-hash every stored file of one model (or all) and report damage; exit code 1 if any.')
    .option('--json', 'print the report as JSON')
    .addHelpText(
      'after',
      `
Each blob is read in full and its sha256 compared with its name, so a single flipped bit is found.
Blobs shared by several models are read once. Progress goes to stderr.

Examples:
  distillery vault verify
  distillery vault verify stories260k:2 --json`,
    )
    .action(async (ref: string | undefined, opts: { json?: boolean }) => {
      let bar: ReturnType<typeof bytesProgress> | null = null;
      const report = await verifyVault(ref, (p) => {
        bar ??= bytesProgress('verify', p.bytesTotal);
        bar.update(p.bytesDone);
      });
      const rate = `${formatBytes(report.bytesPerSecond)}/s`;
      (bar as ReturnType<typeof bytesProgress> | null)?.done(`${formatBytes(report.bytes)} at ${rate}`);
      if (opts.json) printJson(report);
      else {
        process.stdout.write(describeReport(report));
        process.stdout.write(
          `\n${report.ok ? 'ok' : 'DAMAGE FOUND'}: ${report.models.length} model(s), ${report.blobs} blob(s), ` +
            `${formatBytes(report.bytes)} hashed in ${formatDuration(report.seconds)} (${rate})\n`,
        );
        if (!report.ok) {
          process.stdout.write('restore the damaged models by importing them again from a good copy\n');
        }
      }
      if (!report.ok) process.exitCode = 1;
    });
}
