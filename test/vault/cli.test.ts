import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, closeSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { registerVaultCommands } from '../../src/cli/vault-commands.js';
import { formatBytes, formatParams } from '../../src/cli/format.js';
import { UserError } from '../../src/core/errors.js';
import { freshHome, makeFakeModel, stories260kDir, tempDir } from './helpers.js';
import { registerModel } from '../../src/vault/vault.js';
import { kv } from '../../src/formats/gguf.js';
import { makeAdapter, makeHfCache, makeOllamaFolder, writeTinyGguf } from './source-fixtures.js';
import { runCli } from '../helpers/cli.js';

let home = '';
before(() => {
  home = freshHome();
  process.env.DISTILLERY_HOME = home;
});

/** Runs `distillery vault …` in-process (see runCli). */
function cli(...args: string[]): Promise<{ out: string; err: string; code: number }> {
  return runCli(registerVaultCommands, ['vault', ...args]);
}

test('number formatting', () => {
  assert.equal(formatParams(260032), '260k');
  assert.equal(formatParams(264128), '264k');
  assert.equal(formatParams(1_234_567), '1.2M');
  assert.equal(formatParams(999_700), '1.0M');
  assert.equal(formatParams(7_615_616_512), '7.6B');
  assert.equal(formatParams(70_553_706_496), '71B');
  assert.equal(formatParams(512), '512');
  assert.equal(formatParams(null), '-');
  assert.equal(formatBytes(1044992), '1.0 MB');
  assert.equal(formatBytes(512), '512 B');
  assert.equal(formatBytes(15_200_000_000), '15 GB');
});

test('import, list, show, verify through the CLI', async () => {
  const src = stories260kDir() ?? makeFakeModel(join(tempDir(), 'fake'));
  const imp = await cli('import', src, '--name', 'tiny', '--license', 'mit');
  assert.equal(imp.code, 0);
  assert.match(imp.out, /^imported tiny:1: LlamaForCausalLM, .* parameters/);
  await cli('import', src, '--name', 'tiny');

  const list = await cli('list');
  const lines = list.out.trim().split('\n');
  assert.match(lines[0]!, /^MODEL\s+ARCHITECTURE\s+PARAMS\s+DTYPE\s+SIZE/);
  assert.equal(lines.length, 4);
  assert.match(lines[2]!, /^tiny:1\s+LlamaForCausalLM/);
  // Aligned: every row starts its columns at the header's offsets.
  assert.equal(lines[2]!.indexOf('LlamaForCausalLM'), lines[0]!.indexOf('ARCHITECTURE'));
  if (stories260kDir()) assert.match(list.out, /260k\s+float32\s+1\.1 MB/);
  const json = JSON.parse((await cli('list', '--json')).out);
  assert.deepEqual(json.map((r: { name: string; version: number }) => `${r.name}:${r.version}`), ['tiny:1', 'tiny:2']);

  const show = await cli('show', 'tiny:1');
  assert.match(show.out, /^model\s+tiny:1$/m);
  assert.match(show.out, /^license\s+mit$/m);
  assert.match(show.out, /^config\.json\s+\d+ B\s+[0-9a-f]{12}$/m);
  const showJson = JSON.parse((await cli('show', 'tiny', '--json')).out);
  assert.equal(showJson.version, 2);
  const folder = await cli('show', src);
  assert.match(folder.out, /a folder, not in the vault/);

  const ok = await cli('verify');
  assert.equal(ok.code, 0);
  assert.match(ok.out, /^ok: 2 model\(s\), \d+ blob\(s\), .* hashed in .* \(.*\/s\)$/m);
  assert.match(ok.err, /verify/);

  const blob = join(home, 'blobs', 'sha256', showJson.files[0].sha256);
  chmodSync(blob, 0o644);
  const fd = openSync(blob, 'r+');
  writeSync(fd, Buffer.from('!'), 0, 1, 0);
  closeSync(fd);
  const bad = await cli('verify', 'tiny:1');
  assert.equal(bad.code, 1);
  assert.match(bad.out, /DAMAGE FOUND/);
  assert.match(bad.out, new RegExp(`breaks tiny:1 ${showJson.files[0].path.replace('.', '\\.')}`));
  const badJson = await cli('verify', '--json');
  assert.equal(badJson.code, 1);
  assert.equal(JSON.parse(badJson.out).ok, false);
});

test('CLI errors are UserErrors', async () => {
  await assert.rejects(cli('show', 'nope'), (e: unknown) => e instanceof UserError && /no model named "nope"/.test(e.message));
  await assert.rejects(cli('import', tempDir(), '--name', 'x'), (e: unknown) => e instanceof UserError && /config\.json is missing/.test(e.message));
  await assert.rejects(cli('import', tempDir(), '--name', 'Bad'), (e: unknown) => e instanceof UserError && /invalid model name/.test(e.message));
});

test('every vault command has a description and an example', () => {
  const program = new Command();
  registerVaultCommands(program);
  const vault = program.commands.find((c) => c.name() === 'vault')!;
  assert.deepEqual(vault.commands.map((c) => c.name()), ['export', 'import-bundle', 'show-bundle', 'import', 'pull', 'list', 'show', 'verify', 'repair', 'gc', 'tree']);
  for (const c of [vault, ...vault.commands]) {
    assert.ok(c.description().length > 10, c.name());
    let help = '';
    c.configureOutput({ writeOut: (s) => (help += s) });
    c.outputHelp();
    assert.match(help, /Example/, c.name());
  }
});

test('tree and gc through the CLI', async () => {
  process.env.DISTILLERY_HOME = freshHome();
  try {
    await cli('import', makeFakeModel(join(tempDir(), 'root-model')), '--name', 'root');
    const root = JSON.parse((await cli('show', 'root', '--json')).out) as { digest: string };
    await registerModel(makeFakeModel(join(tempDir(), 'kid'), { tokenizer: '{"kid": 1}' }), {
      name: 'root-ssd',
      lineage: { parent: { ref: 'root:1', digest: root.digest }, run_id: 'run-7', recipe: { name: 'ssd' }, evaluation: { base: { 1: { value: 0.25, ci: [0, 1] } }, distilled: { 1: { value: 0.5, ci: [0, 1] } } } },
    });
    const tree = await cli('tree');
    assert.equal(tree.out, 'root:1  LlamaForCausalLM · 264\n└─ root-ssd:1  LlamaForCausalLM · 264 · ssd run run-7 · pass@1 25.0% → 50.0%\n');
    const treeJson = JSON.parse((await cli('tree', 'root-ssd', '--json')).out) as Array<{ ref: string; children: Array<{ recipe: string }> }>;
    assert.equal(treeJson[0]?.children[0]?.recipe, 'ssd');
    const gc = await cli('gc', '--dry-run');
    assert.match(gc.out, /would remove 0 unused blob\(s\), 0 B; \d+ blob\(s\) in use\n$/);
  } finally {
    process.env.DISTILLERY_HOME = home;
  }
});

test('every source through the CLI: HF folder, HF cache, GGUF, Ollama, adapter; vault list shows them; verify passes', async () => {
  process.env.DISTILLERY_HOME = freshHome();
  try {
    const hub = join(tempDir(), 'hub');
    const repo = makeHfCache(hub, 'Org/Cached', { ['c'.repeat(40)]: makeFakeModel(join(tempDir(), 'snap')) }, { main: 'c'.repeat(40) });
    const gguf = join(tempDir(), 'Tiny-F32.gguf');
    await writeTinyGguf(gguf, [kv.string('general.license', 'mit')]);
    const ollama = join(tempDir(), 'ollama-models');
    await makeOllamaFolder(ollama, 'tiny', '8b');
    await makeOllamaFolder(ollama, 'other', 'latest');
    const steps: Array<[string[], RegExp]> = [
      [['import', makeFakeModel(join(tempDir(), 'plain')), '--name', 'plain'], /^imported plain:1: LlamaForCausalLM, 264 parameters/],
      [['import', hub, '--repo', 'Org/Cached'], /^imported cached:1: LlamaForCausalLM/],
      [['import', gguf], /^imported tiny-f32:1: llama F32, 16 parameters/],
      [['import', ollama, '--all'], /^imported other:1: llama F32, 16 parameters.*\n.*\nimported tiny-8b:1: /s],
      [['import', makeAdapter(join(tempDir(), 'my-lora'), 'Org/Cached')], /^imported my-lora:1: adapter for cached:1, 64 parameters/],
    ];
    for (const [args, want] of steps) assert.match((await cli(...args)).out, want, args.join(' '));
    const rows = JSON.parse((await cli('list', '--json')).out) as Array<Record<string, unknown>>;
    const facts = Object.fromEntries(rows.map((r) => [r.name, [r.format, r.architecture, r.parameters, r.dtype, r.license]]));
    assert.deepEqual(facts, {
      plain: ['hf-safetensors', 'LlamaForCausalLM', 264, 'float32', 'apache-2.0'],
      cached: ['hf-safetensors', 'LlamaForCausalLM', 264, 'float32', 'apache-2.0'],
      'tiny-f32': ['gguf', 'llama', 16, 'F32', 'mit'],
      other: ['gguf', 'llama', 16, 'F32', 'MIT License'],
      'tiny-8b': ['gguf', 'llama', 16, 'F32', 'MIT License'],
      'my-lora': ['peft-adapter', 'LlamaForCausalLM', 64, 'float32', 'apache-2.0'],
    });
    const verify = await cli('verify');
    assert.equal(verify.code, 0);
    assert.match(verify.out, /^ok: 6 model\(s\)/m);
    assert.match((await cli('tree')).out, /^cached:1 .*\n└─ my-lora:1  adapter \(lora\)/m);
    await assert.rejects(cli('import', ollama), (e: unknown) => e instanceof UserError && /choose one with --model, or import every one with --all/.test(e.message));
    await assert.rejects(cli('import', ollama, '--all', '--name', 'x'), /--all imports every model under its own name/);
  } finally {
    process.env.DISTILLERY_HOME = home;
  }
});
