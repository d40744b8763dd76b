import type { Command } from 'commander';
import { distilleryHome } from '../core/paths.js';
import { formatDuration } from '../core/progress.js';
import {
  collectGarbage, getManifest, importAllOllama, importFrom, inspectModelFolder, lineageTree, listModels, modelSize, verifyVault,
  type Manifest, type ModelRow, type TreeNode, type VerifyReport,
} from '../vault/vault.js';
import { UserError } from '../core/errors.js';

interface ImportCliOptions {
  name?: string; license?: string; repo?: string; revision?: string; base?: string; file?: string; model?: string; all?: boolean; json?: boolean;
}
import { parseModelRef } from '../vault/refs.js';
import { vaultLayout } from '../vault/layout.js';
import { bytesBar, formatBytes, formatParams, printJson, table, type BytesBar } from './format.js';
import { registerBundleCommands } from './bundle-commands.js';
import { pullModel, type PullResult } from '../vault/pull.js';
import { repairVault, type RepairReport } from '../vault/repair.js';

/** `distillery vault …`: import, list, show and verify models in DISTILLERY_HOME. */

const short = (digest: string) => digest.slice(0, 12);
const when = (iso: string) => iso.slice(0, 16).replace('T', ' ');

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

function describePull(r: PullResult): string {
  const m = r.model;
  const lines: string[] = [];
  if (m.status === 'present') {
    lines.push(`${m.original} from ${r.mirror} is already in the vault as ${m.ref} (digest ${short(m.digest)}): nothing to do`);
  } else {
    const nameOf = (ref: string) => ref.slice(0, ref.lastIndexOf(':'));
    const as = m.ref === m.original ? '' : nameOf(m.ref) === nameOf(m.original) ? ` as ${m.ref} (${nameOf(m.ref)} holds other content here)` : ` as ${m.ref}`;
    lines.push(
      `pulled ${m.original} from ${r.mirror}${as}: ${formatBytes(m.bytes)} in ${r.files} file(s), digest ${short(m.digest)}`,
      `${r.blobsDownloaded} file(s) downloaded (${formatBytes(r.bytesDownloaded)}${r.bytesResumed > 0 ? `, resumed after ${formatBytes(r.bytesResumed)}` : ''}) ` +
        `in ${formatDuration(r.seconds)} (${formatBytes(r.bytesPerSecond)}/s), ${r.blobsReused} already in the vault`,
    );
  }
  const p = r.parent;
  if (p && p.local === null) {
    lines.push(
      p.command
        ? `note: its lineage parent ${p.ref} (digest ${short(p.digest)}) is not in this vault; the mirror has it as ${p.onMirror}: ${p.command}`
        : `note: its lineage parent ${p.ref} (digest ${short(p.digest)}) is neither in this vault nor on the mirror`,
    );
  }
  return lines.join('\n') + '\n';
}

function describeRepair(r: RepairReport): string {
  const lines: string[] = [];
  const from = `${r.source.kind} ${r.source.location}`;
  if (r.repaired.length === 0 && r.stillDamaged.length === 0) {
    lines.push(`nothing to repair: ${r.checked.models} model(s), ${r.checked.blobs} blob(s) checked, all intact`);
  } else {
    const use = (b: { usedBy: Array<{ model: string; path: string }> }) => b.usedBy.map((u) => `${u.model} ${u.path}`).join(', ');
    const rows = [
      ...r.repaired.map((b) => [short(b.sha256), b.problem, 'repaired', use(b)]),
      ...r.stillDamaged.map((b) => [short(b.sha256), b.problem, 'STILL DAMAGED', use(b)]),
    ];
    lines.push(table([['BLOB', 'PROBLEM', 'RESULT', 'FILES'], ...rows]));
    for (const b of r.stillDamaged) lines.push(`blob ${b.sha256}: ${b.reason}`);
    lines.push('', table([['MODEL', 'STATUS'], ...r.models.map((m) => [m.ref, m.ok ? 'ok (repaired)' : `DAMAGED (${m.damagedFiles.join(', ') || 'manifest'})`])]));
    lines.push(
      '',
      `${r.repaired.length} blob(s) repaired from ${from} (${formatBytes(r.bytesRestored)})` +
        (r.stillDamaged.length > 0 ? `, ${r.stillDamaged.length} still damaged` : '') + ` in ${formatDuration(r.seconds)}`,
    );
  }
  for (const b of r.badManifests) lines.push(`manifest ${b.path}: ${b.error} (repair never changes manifests: restore that file, or remove the model)`);
  if (r.stillDamaged.length > 0) lines.push('find a source that holds the damaged files (another bundle or mirror) and run vault repair again');
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

  registerBundleCommands(vault);

  vault
    .command('import <path>')
    .description('Import a model into the vault as a new version: a Hugging Face folder or cache, a GGUF file, an Ollama models folder, or a PEFT adapter.')
    .option('--name <name>', 'model name: lowercase letters, digits, ".", "_", "-" (default: derived from the repo or folder name)')
    .option('--license <license>', 'license identifier (default: `license:` from README.md front matter)')
    .option('--repo <org/name>', 'Hugging Face cache: the model to take from a hub folder that holds several')
    .option('--revision <rev>', 'Hugging Face cache: branch, tag, commit or commit prefix (default: main)')
    .option('--base <ref>', 'adapter: the vault model it was trained on (default: matched from adapter_config.json)')
    .option('--file <name>', 'folder of GGUF files: which one (file name, or a split set\'s name)')
    .option('--model <model[:tag]>', 'Ollama models folder: which model (e.g. qwen3:8b)')
    .option('--all', 'Ollama models folder: import every model, each under its own name')
    .option('--json', 'print the new manifest(s) as JSON')
    .addHelpText(
      'after',
      `
What PATH can be:
  a Hugging Face model folder   config.json + *.safetensors or pytorch_model*.bin
  a Hugging Face cache          .../hub/models--ORG--NAME (or the hub folder with --repo ORG/NAME, or a
                                snapshot folder); the repo id and commit are recorded, so "distillery
                                mirror" can serve the model back under the same id
  a PEFT adapter folder         adapter_config.json + adapter_model.safetensors, linked to its base model
  a GGUF file                   model.gguf, or any part of a split set (NAME-00001-of-0000N.gguf: the whole
                                set is imported); a folder of GGUF files with --file to pick one
  an Ollama models folder       ~/.ollama/models (manifests/ + blobs/) with --model NAME:TAG or --all; the
                                weights become model.gguf, Ollama's own layers are kept under ollama/

Everything is checked first (config, weight headers, revision); a broken source changes nothing. Importing
the same name again adds the next version; identical files are stored once.

Examples:
  distillery vault import ~/models/Qwen3-0.6B --name qwen3-0.6b --license apache-2.0
  distillery vault import ~/.cache/huggingface/hub --repo Qwen/Qwen3-0.6B --revision main
  distillery vault import ./my-lora --base qwen3-0.6b
  distillery vault import ~/Downloads/qwen3-8b-q4_k_m.gguf
  distillery vault import ~/.ollama/models --model qwen3:8b`,
    )
    .action(async (path: string, opts: ImportCliOptions) => {
      if (opts.all && (opts.name !== undefined || opts.model !== undefined)) throw new UserError('--all imports every model under its own name: leave out --name and --model');
      const bar = bytesBar(`import ${opts.all ? 'all' : (opts.name ?? path)}`);
      const common = { license: opts.license, repo: opts.repo, revision: opts.revision, base: opts.base, file: opts.file, onProgress: bar.update };
      const results = opts.all
        ? await importAllOllama(path, common)
        : [await importFrom(path, { ...common, name: opts.name, model: opts.model })];
      bar.done(`${formatBytes(results.reduce((s, r) => s + modelSize(r.manifest), 0))} stored`);
      for (const n of results.flatMap((r) => r.notes)) process.stderr.write(`note: ${n}\n`);
      if (opts.json) return printJson(opts.all ? results.map((r) => r.manifest) : results[0]!.manifest);
      if (results.length === 0) process.stdout.write('the Ollama models folder holds no models\n');
      for (const { manifest: m } of results) {
        const what = m.format === 'peft-adapter' ? `adapter for ${m.details?.base_model?.ref ?? m.details?.base_model?.name ?? 'an unknown base'}` : [m.architecture ?? 'unknown architecture', m.format === 'gguf' ? m.details?.quantization : null].filter(Boolean).join(' ');
        process.stdout.write(
          `imported ${m.name}:${m.version}: ${what}, ${formatParams(m.parameters)} parameters, ` +
            `${formatBytes(modelSize(m))} in ${m.files.length} file(s)\ndigest ${m.digest}\n`,
        );
      }
    });

  vault
    .command('pull <url>')
    .description('Copy a model from another Distillery\'s mirror (distillery mirror) into this vault, checking every file.')
    .option('--as <name>', 'store it under this name (default: its own name)')
    .option('--token <token>', 'the mirror\'s token (default: $DISTILLERY_MIRROR_TOKEN)')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `
URL is http://HOST:PORT/NAME (the latest version) or http://HOST:PORT/NAME:VERSION, the address the other
machine's "distillery mirror" prints. Every file's sha256 and size are checked before the model becomes
visible; files this vault already holds are not downloaded again. If NAME holds other content here, the
model becomes the next version of NAME. An interrupted pull resumes where it stopped when run again.
A model whose lineage parent is not in this vault says so, with the command to pull the parent too.

Examples:
  distillery vault pull http://192.168.1.20:8470/qwen3-0.6b
  distillery vault pull http://192.168.1.20:8470/qwen3-0.6b-ssd:2 --as qwen3-ssd
  DISTILLERY_MIRROR_TOKEN=hf_... distillery vault pull http://gpu-box:8470/qwen3-0.6b --json`,
    )
    .action(async (url: string, opts: { as?: string; token?: string; json?: boolean }) => {
      const bar = bytesBar('pull');
      const r = await pullModel(vaultLayout(), url, { as: opts.as, token: opts.token, onProgress: bar.update });
      bar.done(`${formatBytes(r.bytesDownloaded)} at ${formatBytes(r.bytesPerSecond)}/s`);
      if (opts.json) return printJson(r);
      process.stdout.write(describePull(r));
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
      const bar = bytesBar('verify');
      const report = await verifyVault(ref, bar.update);
      const rate = `${formatBytes(report.bytesPerSecond)}/s`;
      bar.done(`${formatBytes(report.bytes)} at ${rate}`);
      if (opts.json) printJson(report);
      else {
        process.stdout.write(describeReport(report));
        process.stdout.write(
          `\n${report.ok ? 'ok' : 'DAMAGE FOUND'}: ${report.models.length} model(s), ${report.blobs} blob(s), ` +
            `${formatBytes(report.bytes)} hashed in ${formatDuration(report.seconds)} (${rate})\n`,
        );
        if (!report.ok) {
          process.stdout.write(
            'restore the damaged files from a good copy: distillery vault repair --from BUNDLE|http://HOST:PORT (a bundle or another\n' +
              "Distillery's mirror that holds these models), or import the models again from a good copy\n",
          );
        }
      }
      if (!report.ok) process.exitCode = 1;
    });

  vault
    .command('repair [ref]')
    .description('Restore damaged or missing files of one model (or all) from a bundle or another Distillery\'s mirror; exit code 1 if any stay damaged.')
    .requiredOption('--from <source>', 'a bundle file (vault export) or a mirror address http://HOST:PORT')
    .option('--token <token>', 'the mirror\'s token (default: $DISTILLERY_MIRROR_TOKEN)')
    .option('--json', 'print the report as JSON')
    .addHelpText(
      'after',
      `
Runs the checks of "vault verify", then fetches a good copy of each damaged file by its sha256 (the
manifests say what it must be): from a bundle, read once, taking only the files needed; from a mirror,
one download per file. Each copy is checked while it is written, replaces the damaged file in one step,
and is hashed again afterwards. Manifests are never changed. Files the source does not hold are reported.

Examples:
  distillery vault repair --from /media/usb/qwen3.tar
  distillery vault repair qwen3-0.6b:2 --from http://192.168.1.20:8470
  distillery vault repair --from http://gpu-box:8470 --token hf_... --json`,
    )
    .action(async (ref: string | undefined, opts: { from: string; token?: string; json?: boolean }) => {
      // One bar per phase (verify, then restore).
      let bar: BytesBar | null = null;
      let phase = '';
      const r = await repairVault(vaultLayout(), {
        from: opts.from,
        ref,
        token: opts.token,
        onProgress: (p) => {
          if (p.phase !== phase) {
            bar?.done();
            bar = bytesBar(p.phase);
            phase = p.phase;
          }
          bar!.update(p);
        },
      });
      (bar as BytesBar | null)?.done();
      if (opts.json) printJson(r);
      else process.stdout.write(describeRepair(r));
      if (!r.ok) process.exitCode = 1;
    });

  vault
    .command('gc')
    .description('Remove stored files no model uses any more (left by interrupted imports or removed models).')
    .option('--dry-run', 'only report what would be removed')
    .option('--json', 'print the report as JSON')
    .addHelpText(
      'after',
      `
Nothing is removed while an import is in progress, or when a manifest cannot be read (its files could not
be told apart from garbage). Temp files of dead imports and views of removed models go too.

Examples:
  distillery vault gc --dry-run
  distillery vault gc`,
    )
    .action((opts: { dryRun?: boolean; json?: boolean }) => {
      const r = collectGarbage({ dryRun: opts.dryRun });
      if (opts.json) return printJson(r);
      const verb = r.dryRun ? 'would remove' : 'removed';
      for (const b of r.removed) process.stdout.write(`${verb} ${b.sha256} (${formatBytes(b.size)})\n`);
      if (r.blockedBy.length > 0) {
        process.stdout.write(`stopped: import(s) in progress: ${r.blockedBy.join(', ')}; run gc again when they finish\n`);
        if (!r.dryRun) process.exitCode = 1;
      }
      process.stdout.write(
        `${verb} ${r.removed.length} unused blob(s), ${formatBytes(r.bytes)}; ${r.kept} blob(s) in use` +
          (r.dryRun ? '' : `; ${r.tempsRemoved} temp file(s) and ${r.viewsRemoved} stale view(s) removed`) + '\n',
      );
    });

  vault
    .command('tree [ref]')
    .description('Show base models with their distilled descendants and adapters, and the runs that made them.')
    .option('--json', 'print the tree as JSON')
    .addHelpText('after', '\nExamples:\n  distillery vault tree\n  distillery vault tree stories260k-ssd')
    .action((ref: string | undefined, opts: { json?: boolean }) => {
      const roots = lineageTree(ref);
      if (opts.json) return printJson(roots.map(treeJson));
      if (roots.length === 0) {
        process.stdout.write(`the vault is empty (${distilleryHome()})\n`);
        return;
      }
      process.stdout.write(roots.map((r) => renderTree(r)).join('\n') + '\n');
    });
}

/** A tree node without the full manifests (which `vault show --json` prints). */
function treeJson(n: TreeNode): Record<string, unknown> {
  const m = n.manifest;
  return {
    ref: n.ref,
    digest: m?.digest ?? n.missing?.digest ?? null,
    in_vault: m !== null,
    relation: n.relation,
    format: m?.format ?? null,
    run_id: m?.lineage?.run_id ?? null,
    recipe: recipeName(m),
    evaluation: m?.lineage?.evaluation ?? null,
    children: n.children.map(treeJson),
  };
}

function recipeName(m: Manifest | null): string | null {
  const r = m?.lineage?.recipe;
  return r && typeof r.name === 'string' ? r.name : null;
}

/** "pass@1 61.3% → 88.9%" from a lineage evaluation summary, when it has one. */
function evalSummary(m: Manifest): string | null {
  const e = m.lineage?.evaluation as { base?: Record<string, { value: number }>; distilled?: Record<string, { value: number }> } | undefined;
  const k = e?.base && e.distilled ? Object.keys(e.distilled).sort((a, b) => Number(a) - Number(b))[0] : undefined;
  if (k === undefined || !e?.base?.[k] || !e.distilled?.[k]) return null;
  const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
  return `pass@${k} ${pct(e.base[k].value)} → ${pct(e.distilled[k].value)}`;
}

function nodeLine(n: TreeNode): string {
  const m = n.manifest;
  if (!m) return `${n.ref} (not in this vault, digest ${short(n.missing!.digest)})`;
  const facts = [m.format === 'peft-adapter' ? `adapter (${m.model_type ?? 'peft'})` : (m.architecture ?? m.format), formatParams(m.parameters)];
  if (m.lineage) {
    facts.push(`${recipeName(m) ?? 'recipe'} run ${m.lineage.run_id}`);
    const ev = evalSummary(m);
    if (ev) facts.push(ev);
  }
  return `${n.ref}  ${facts.join(' · ')}`;
}

function renderTree(root: TreeNode): string {
  const lines = [nodeLine(root)];
  const walk = (n: TreeNode, prefix: string) => {
    n.children.forEach((c, i) => {
      const last = i === n.children.length - 1;
      lines.push(`${prefix}${last ? '└─ ' : '├─ '}${nodeLine(c)}`);
      walk(c, prefix + (last ? '   ' : '│  '));
    });
  };
  walk(root, '');
  return lines.join('\n');
}
