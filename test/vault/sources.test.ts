import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sha256Hex } from '../../src/core/hash.js';
import { UserError } from '../../src/core/errors.js';
import { importAllOllama, importFrom, importModel, listModels, verifyVault } from '../../src/vault/vault.js';
import { kv } from '../../src/formats/gguf.js';
import { makeAdapter, makeHfCache, makeOllamaFolder, writeTinyGguf } from './source-fixtures.js';
import { freshHome, makeFakeModel, tempDir } from './helpers.js';

const C1 = 'a'.repeat(40);
const C2 = 'b'.repeat(39) + 'c';

function twoRevisionCache(): { hub: string; repo: string } {
  const hub = join(tempDir(), 'hub');
  const v1 = makeFakeModel(join(tempDir(), 'v1'), { readme: null });
  const v2 = makeFakeModel(join(tempDir(), 'v2'), { readme: null, tokenizer: '{"version": "2.0"}' });
  const repo = makeHfCache(hub, 'Org/Tiny-Model', { [C1]: v1, [C2]: v2 }, { main: C2, 'refs/pr/1': C1 });
  return { hub, repo };
}

test('Hugging Face cache: a repo folder imports its main revision with repo id and commit recorded', async () => {
  const { repo } = twoRevisionCache();
  const home = freshHome();
  const { manifest: m, kind } = await importFrom(repo, {}, home);
  assert.equal(kind, 'hf-cache');
  assert.equal(m.name, 'tiny-model'); // derived from the repo name
  assert.deepEqual(m.source, { kind: 'hf-cache', repo_id: 'Org/Tiny-Model', revision: C2, path: repo });
  assert.ok(m.files.some((f) => f.path === 'extra/notes.txt'), 'subfolder files come through the symlinks');
  const tok = m.files.find((f) => f.path === 'tokenizer.json');
  assert.equal(tok?.sha256, sha256Hex('{"version": "2.0"}'));
  assert.equal((await verifyVault(undefined, undefined, home)).ok, true);
});

test('Hugging Face cache: revisions by ref, nested ref, commit and prefix; the hub root with --repo; a snapshot folder', async () => {
  const { hub, repo } = twoRevisionCache();
  const home = freshHome();
  const rev = async (path: string, opts: { revision?: string; repo?: string }) => (await importFrom(path, { name: 'm', ...opts }, home)).manifest.source.revision;
  assert.equal(await rev(repo, { revision: 'refs/pr/1' }), C1);
  assert.equal(await rev(repo, { revision: C1 }), C1);
  assert.equal(await rev(repo, { revision: 'bbbbbbb' }), C2);
  assert.equal(await rev(hub, { repo: 'Org/Tiny-Model' }), C2);
  assert.equal(await rev(join(repo, 'snapshots', C1), {}), C1);
  // Identical files across the five imports are stored once.
  const versions = listModels('m', home);
  assert.equal(versions.length, 5);
});

test('Hugging Face cache: clear errors for an unknown revision, a hub root without --repo, a missing snapshot', async () => {
  const { hub, repo } = twoRevisionCache();
  const home = freshHome();
  await assert.rejects(importFrom(repo, { revision: 'v9' }, home), (e: unknown) => e instanceof UserError && /has no revision "v9"/.test(e.message) && /refs: main, refs\/pr\/1/.test(e.hint ?? ''));
  await assert.rejects(importFrom(hub, {}, home), (e: unknown) => e instanceof UserError && /choose one with --repo/.test(e.message) && /Org\/Tiny-Model/.test(e.hint ?? ''));
  await assert.rejects(importFrom(hub, { repo: 'Org/Other' }, home), /Org\/Other is not in the Hugging Face cache/);
  writeFileSync(join(repo, 'refs', 'dev'), 'd'.repeat(40));
  await assert.rejects(importFrom(repo, { revision: 'dev' }, home), /whose snapshot is not in the cache/);
  await assert.rejects(importFrom(repo, { base: 'foo' }, home), /--base applies to adapter folders/);
  assert.equal(listModels(undefined, home).length, 0, 'failed imports leave nothing');
});

test('PEFT adapters link to their base: by original repo id, by name, by --base; a missing base is noted', async () => {
  const home = freshHome();
  const { repo } = twoRevisionCache();
  const { manifest: base } = await importFrom(repo, { name: 'tiny' }, home);
  const byRepo = await importFrom(makeAdapter(join(tempDir(), 'lora-a'), 'Org/Tiny-Model'), {}, home);
  assert.equal(byRepo.kind, 'peft-adapter');
  assert.equal(byRepo.manifest.format, 'peft-adapter');
  assert.equal(byRepo.manifest.model_type, 'lora');
  assert.equal(byRepo.manifest.parameters, 64);
  assert.equal(byRepo.manifest.architecture, 'LlamaForCausalLM');
  assert.deepEqual(byRepo.manifest.details?.base_model, { name: 'Org/Tiny-Model', ref: 'tiny:1', digest: base.digest });
  assert.deepEqual(byRepo.notes, []);

  const byName = await importFrom(makeAdapter(join(tempDir(), 'lora-b'), 'tiny'), {}, home);
  assert.equal(byName.manifest.details?.base_model?.ref, 'tiny:1');

  const other = await importModel(makeFakeModel(join(tempDir(), 'o')), { name: 'other' }, home);
  const explicit = await importFrom(makeAdapter(join(tempDir(), 'lora-c'), 'Org/Tiny-Model'), { base: 'other' }, home);
  assert.equal(explicit.manifest.details?.base_model?.digest, other.digest);

  const orphan = await importFrom(makeAdapter(join(tempDir(), 'lora-d'), 'Someone/Else'), {}, home);
  assert.equal(orphan.manifest.details?.base_model?.ref, null);
  assert.match(orphan.notes[0] ?? '', /base model \(Someone\/Else\) is not in the vault/);

  await assert.rejects(importFrom(makeAdapter(join(tempDir(), 'lora-e'), 'x'), { base: 'lora-a' }, home), /is itself an adapter/);
  const noWeights = join(tempDir(), 'bad-adapter');
  mkdirSync(noWeights);
  writeFileSync(join(noWeights, 'adapter_config.json'), '{}');
  await assert.rejects(importFrom(noWeights, { name: 'bad' }, home), /has no adapter weights/);
  writeFileSync(join(noWeights, 'adapter_config.json'), '[1]');
  await assert.rejects(importFrom(noWeights, { name: 'bad' }, home), /adapter_config\.json is not valid: not a JSON object/);
});

test('import refuses files and missing paths with a clear message', async () => {
  const home = freshHome();
  const file = join(tempDir(), 'weights.bin');
  writeFileSync(file, 'x');
  await assert.rejects(importFrom(file, { name: 'x' }, home), /is a file, and not a \.gguf file/);
  await assert.rejects(importFrom(join(tempDir(), 'nope'), { name: 'x' }, home), /not found: /);
});

test('GGUF: a single file with its header metadata; a split set from any part; a folder of quantizations with --file', async () => {
  const home = freshHome();
  const dir = tempDir();
  await writeTinyGguf(join(dir, 'Tiny-F32.gguf'), [kv.string('general.license', 'mit')]);
  const single = await importFrom(join(dir, 'Tiny-F32.gguf'), {}, home);
  assert.equal(single.kind, 'gguf');
  const m = single.manifest;
  assert.equal(m.name, 'tiny-f32');
  assert.deepEqual([m.format, m.architecture, m.parameters, m.dtype, m.license], ['gguf', 'llama', 16, 'F32', 'mit']);
  assert.deepEqual(m.details, { context_length: 2048, quantization: 'F32', chat_template: '{{ messages }}' });
  assert.deepEqual(m.files.map((f) => f.path), ['Tiny-F32.gguf']);

  const splitDir = tempDir();
  for (let i = 0; i < 3; i++) {
    const split = [kv.uint16('split.no', i), kv.uint16('split.count', 3), kv.int32('split.tensors.count', 6)];
    await writeTinyGguf(join(splitDir, `Big-Q8-0000${i + 1}-of-00003.gguf`), split);
  }
  const split = (await importFrom(join(splitDir, 'Big-Q8-00002-of-00003.gguf'), {}, home)).manifest;
  assert.equal(split.name, 'big-q8');
  assert.equal(split.parameters, 48);
  assert.deepEqual(split.files.map((f) => f.path), ['Big-Q8-00001-of-00003.gguf', 'Big-Q8-00002-of-00003.gguf', 'Big-Q8-00003-of-00003.gguf']);
  rmSync(join(splitDir, 'Big-Q8-00003-of-00003.gguf'));
  await assert.rejects(importFrom(join(splitDir, 'Big-Q8-00001-of-00003.gguf'), {}, home), /is incomplete: 2 of 3 parts present, missing Big-Q8-00003-of-00003\.gguf/);

  const repo = tempDir();
  await writeTinyGguf(join(repo, 'tiny.Q4.gguf'));
  await writeTinyGguf(join(repo, 'tiny.Q8.gguf'), [], 3);
  writeFileSync(join(repo, 'README.md'), '---\nlicense: apache-2.0\n---\n');
  await assert.rejects(importFrom(repo, {}, home), (e: unknown) => e instanceof UserError && /holds 2 GGUF models; choose one with --file/.test(e.message) && /tiny\.Q4\.gguf, tiny\.Q8\.gguf/.test(e.hint ?? ''));
  const q8 = (await importFrom(repo, { file: 'tiny.Q8.gguf' }, home)).manifest;
  assert.deepEqual(q8.files.map((f) => f.path), ['README.md', 'tiny.Q8.gguf']);
  assert.equal(q8.license, 'apache-2.0', 'the model card names the licence');
  assert.equal(q8.parameters, 24);

  const bad = join(tempDir(), 'bad.gguf');
  writeFileSync(bad, 'GGUF\x03\x00\x00\x00');
  await assert.rejects(importFrom(bad, {}, home), (e: unknown) => e instanceof UserError && /bad\.gguf/.test(e.message));
  assert.equal((await verifyVault(undefined, undefined, home)).ok, true);
});

test('Ollama: a model with its layers kept for serving back; --model, --all; a damaged blob is refused', async () => {
  const home = freshHome();
  const root = join(tempDir(), 'models');
  const digests = await makeOllamaFolder(root);
  const { manifest: m, kind } = await importFrom(root, {}, home);
  assert.equal(kind, 'ollama');
  assert.equal(m.name, 'tiny');
  assert.deepEqual(m.files.map((f) => f.path).sort(), ['model.gguf', 'ollama/config.json', 'ollama/license', 'ollama/manifest.json', 'ollama/params', 'ollama/template']);
  assert.equal(m.files.find((f) => f.path === 'model.gguf')?.sha256, digests['application/vnd.ollama.image.model']);
  assert.equal(m.license, 'MIT License');
  assert.deepEqual([m.format, m.architecture, m.details?.context_length], ['gguf', 'llama', 2048]);
  assert.deepEqual(m.source, { kind: 'ollama', path: root, host: 'registry.ollama.ai', namespace: 'library', model: 'tiny', tag: 'latest' });

  await makeOllamaFolder(root, 'tiny', '8b');
  await assert.rejects(importFrom(root, {}, home), (e: unknown) => e instanceof UserError && /with 2 model\(s\); choose one with --model/.test(e.message) && /tiny:8b, tiny:latest/.test(e.hint ?? ''));
  assert.equal((await importFrom(root, { model: 'library/tiny:8b' }, home)).manifest.name, 'tiny-8b');
  await assert.rejects(importFrom(root, { model: 'nope' }, home), /nope:latest is not in the Ollama models folder/);
  const all = await importAllOllama(root, {}, home);
  assert.deepEqual(all.map((r) => `${r.manifest.name}:${r.manifest.version}`), ['tiny-8b:2', 'tiny:2']);

  const weights = join(root, 'blobs', `sha256-${digests['application/vnd.ollama.image.model']}`);
  const data = readFileSync(weights);
  data[data.length - 1] = data[data.length - 1]! ^ 0xff;
  writeFileSync(weights, data);
  await assert.rejects(importFrom(root, { model: 'tiny', name: 'damaged' }, home), /is damaged: its content hashes to sha256 [0-9a-f]{64}, but the source names it/);
  assert.equal(listModels('damaged', home).length, 0);
  assert.equal((await verifyVault(undefined, undefined, home)).ok, true);
});
