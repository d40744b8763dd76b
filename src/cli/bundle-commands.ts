import type { Command } from 'commander';
import { formatDuration } from '../core/progress.js';
import { vaultLayout } from '../vault/layout.js';
import { exportBundle, importBundle, readBundleIndex, type ImportBundleResult } from '../vault/bundle.js';
import { bytesBar, formatBytes, printJson, table } from './format.js';

/** `distillery vault export | import-bundle | show-bundle`: offline bundles (one tar file of models). */


const rate = (bytesPerSecond: number) => `${formatBytes(bytesPerSecond)}/s`;

function describeImport(r: ImportBundleResult): string {
  const lines: string[] = [];
  const nameOf = (ref: string) => ref.slice(0, ref.lastIndexOf(':'));
  const rows = r.models.map((m) => {
    let what: string;
    if (m.status === 'imported') what = 'imported';
    else if (m.status === 'present') what = m.ref === m.original ? 'already present' : `already present as ${m.ref}`;
    else if (nameOf(m.ref) !== nameOf(m.original)) what = `imported as ${m.ref}`;
    else what = `imported as ${m.ref} (${nameOf(m.ref)} holds other content)`;
    return [m.original, what, formatBytes(m.bytes), m.digest.slice(0, 12)];
  });
  lines.push(table([['MODEL IN BUNDLE', 'RESULT', 'SIZE', 'DIGEST'], ...rows]));
  const added = r.models.filter((m) => m.status !== 'present').length;
  const present = r.models.length - added;
  lines.push(
    '',
    `${added} model(s) imported${present > 0 ? `, ${present} already present` : ''}: ` +
      `${formatBytes(r.archiveBytes)} read in ${formatDuration(r.seconds)} (${rate(r.bytesPerSecond)}), ` +
      `${r.blobsStored} blob(s) stored (${formatBytes(r.bytesStored)}), ${r.blobsReused} already in the vault`,
  );
  return lines.join('\n') + '\n';
}

/** Adds the bundle commands to the `vault` command. */
export function registerBundleCommands(vault: Command): void {
  vault
    .command('export <refs...>')
    .description('Write models (NAME or NAME:VERSION) and all their files to one bundle file, for offline transfer.')
    .requiredOption('-o, --output <file>', 'the bundle file to write (a POSIX tar archive; .tar is a good extension)')
    .option('--force', 'replace the output file if it exists')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `
The bundle holds an index (distillery-bundle.json), a README, SHA256SUMS, the models' manifests and each
file once (blobs/sha256/HEX), even when several models share it. Every file is re-hashed while it is
written: a damaged model is refused rather than exported. The file appears under its name only when
complete; inspect it with "tar tf FILE".

Examples:
  distillery vault export qwen3-0.6b -o qwen3.tar
  distillery vault export stories260k:1 stories260k-ssd:2 -o stories.tar`,
    )
    .action(async (refs: string[], opts: { output: string; force?: boolean; json?: boolean }) => {
      const bar = bytesBar('export');
      const r = await exportBundle(vaultLayout(), refs, opts.output, { force: opts.force, onProgress: bar.update });
      bar.done(`${formatBytes(r.archiveBytes)} written at ${rate(r.bytesPerSecond)}`);
      if (opts.json) return printJson(r);
      process.stdout.write(
        `exported ${r.models.map((m) => m.ref).join(', ')} to ${r.path}\n` +
          `${r.models.length} model(s), ${r.blobs} file(s), ${formatBytes(r.archiveBytes)} in ${formatDuration(r.seconds)} (${rate(r.bytesPerSecond)})\n` +
          `import elsewhere with: distillery vault import-bundle ${opts.output}\n`,
      );
    });

  vault
    .command('import-bundle <file>')
    .description('Add the models of a bundle (made by "vault export") to the vault, checking every file.')
    .option('--as <name>', 'import under this name (the bundle must hold one model name)')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `
Every file's sha256 and size are checked against the bundle's index before any model becomes visible; a
truncated or damaged bundle is refused and leaves the vault as it was. A model the vault already holds
(same name, same content) is reported as already present. If the name holds other content, the model
is added as the next version of that name. An interrupted import can simply be run again: files already
stored are not written twice.

Examples:
  distillery vault import-bundle qwen3.tar
  distillery vault import-bundle /media/usb/stories.tar --json
  distillery vault import-bundle qwen3.tar --as qwen3-offline`,
    )
    .action(async (file: string, opts: { as?: string; json?: boolean }) => {
      const bar = bytesBar('import');
      const r = await importBundle(vaultLayout(), file, { as: opts.as, onProgress: bar.update });
      bar.done(`${formatBytes(r.archiveBytes)} read at ${rate(r.bytesPerSecond)}`);
      if (opts.json) return printJson(r);
      process.stdout.write(describeImport(r));
    });

  vault
    .command('show-bundle <file>')
    .description('List the models and files of a bundle without importing it (reads only its index).')
    .option('--json', 'print the index (distillery-bundle.json) as JSON')
    .addHelpText('after', '\nExample:\n  distillery vault show-bundle qwen3.tar')
    .action(async (file: string, opts: { json?: boolean }) => {
      const index = await readBundleIndex(file);
      if (opts.json) return printJson(index);
      const total = index.blobs.reduce((s, b) => s + b.size, 0);
      process.stdout.write(
        `${file}: Distillery bundle (format ${index.format_version}), created ${index.created} by Distillery ${index.distillery_version}\n\n` +
          table([['MODEL', 'FILES', 'SIZE', 'DIGEST'], ...index.models.map((m) => [`${m.name}:${m.version}`, String(m.files), formatBytes(m.bytes), m.digest.slice(0, 12)])]) +
          `\n\n${index.models.length} model(s), ${index.blobs.length} unique file(s), ${formatBytes(total)}\n` +
          `import with: distillery vault import-bundle ${file}\n`,
      );
    });
}
