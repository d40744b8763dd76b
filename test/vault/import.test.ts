import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, readdirSync, statSync, truncateSync, writeFileSync, unlinkSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { importModel, registerModel, listModels, modelDigest, type Lineage } from '../../src/vault/vault.js';
import { importModel as importWithHooks } from '../../src/vault/importer.js';
import { vaultLayout } from '../../src/vault/layout.js';
import { UserError } from '../../src/core/errors.js';
import {
  FAKE_PARAMETERS, freshHome, listTree, makeFakeModel, stories260kDir, STORIES_MISSING, tempDir, writeSafetensors,
} from './helpers.js';

const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

test('imports a fake HF folder: manifest fields, files, blobs', async () => {
  const home = freshHome();
  const src = makeFakeModel(join(tempDir(), 'fake'));
  const m = await importModel(src, { name: 'fake-model' }, home);

  assert.equal(m.schema, 1);
  assert.equal(m.name, 'fake-model');
  assert.equal(m.version, 1);
  assert.ok(!Number.isNaN(Date.parse(m.created)));
  assert.equal(m.format, 'hf-safetensors');
  assert.equal(m.architecture, 'LlamaForCausalLM');
  assert.equal(m.model_type, 'llama');
  assert.equal(m.parameters, FAKE_PARAMETERS);
  assert.equal(m.dtype, 'float32');
  assert.equal(m.license, 'apache-2.0', 'license from README front matter');
  assert.deepEqual(m.source, { kind: 'local-dir', path: src });
  assert.equal(m.lineage, null);
  // Junk and hidden files skipped; subfolders kept with relative paths; sorted.
  assert.deepEqual(m.files.map((f) => f.path), ['README.md', 'config.json', 'extra/notes.txt', 'model.safetensors', 'tokenizer.json']);
  for (const f of m.files) {
    assert.equal(f.sha256, sha(join(src, f.path)));
    assert.equal(f.size, statSync(join(src, f.path)).size);
    const blob = join(home, 'blobs', 'sha256', f.sha256);
    assert.equal(statSync(blob).mode & 0o777, 0o444, 'blobs are read-only');
    assert.equal(sha(blob), f.sha256);
  }
  const expectedDigest = createHash('sha256')
    .update(m.files.map((f) => `${f.path}\t${f.sha256}\n`).join(''))
    .digest('hex');
  assert.equal(m.digest, expectedDigest);
  assert.equal(modelDigest([...m.files].reverse()), expectedDigest, 'digest does not depend on order');

  const onDisk = JSON.parse(readFileSync(join(home, 'models', 'fake-model', '1.json'), 'utf8'));
  assert.deepEqual(onDisk, m);
  assert.deepEqual(readdirSync(join(home, 'blobs', 'tmp')), [], 'no temp files left');
});

test('license flag wins; no license anywhere gives null', async () => {
  const home = freshHome();
  const a = await importModel(makeFakeModel(join(tempDir(), 'a')), { name: 'a', license: 'mit' }, home);
  assert.equal(a.license, 'mit');
  const b = await importModel(makeFakeModel(join(tempDir(), 'b'), { readme: '# no front matter\nlicense: not-this\n' }), { name: 'b' }, home);
  assert.equal(b.license, null);
  const c = await importModel(makeFakeModel(join(tempDir(), 'c'), { readme: null }), { name: 'c' }, home);
  assert.equal(c.license, null);
});

test('importing twice: versions 1 and 2, identical blobs stored once', async () => {
  const home = freshHome();
  const src = makeFakeModel(join(tempDir(), 'fake'));
  const m1 = await importModel(src, { name: 'twice' }, home);
  const blobsAfterFirst = listTree(join(home, 'blobs', 'sha256'));
  const m2 = await importModel(src, { name: 'twice' }, home);
  assert.equal(m1.version, 1);
  assert.equal(m2.version, 2);
  assert.equal(m2.digest, m1.digest);
  assert.deepEqual(listTree(join(home, 'blobs', 'sha256')), blobsAfterFirst);
  assert.equal(readdirSync(join(home, 'blobs', 'sha256')).length, m1.files.length);
  // A second model sharing a file (same tokenizer) adds only its new blobs.
  const other = makeFakeModel(join(tempDir(), 'other'), { tensors: { w: { shape: [3, 3] } } });
  await importModel(other, { name: 'other' }, home);
  assert.equal(readdirSync(join(home, 'blobs', 'sha256')).length, m1.files.length + 1, 'only the new weights are added');
  assert.deepEqual(listModels(undefined, home).map((r) => `${r.name}:${r.version}`), ['other:1', 'twice:1', 'twice:2']);
});

test('stories260k imports with the right parameter count', async (t) => {
  const dir = stories260kDir();
  if (!dir) return t.skip(STORIES_MISSING);
  const home = freshHome();
  const m = await importModel(dir, { name: 'stories260k' }, home);
  // Independent count: parse the header here and sum the tensor sizes.
  const buf = readFileSync(join(dir, 'model.safetensors'));
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { shape?: number[] }>;
  const expected = Object.entries(header)
    .filter(([k]) => k !== '__metadata__')
    .reduce((s, [, v]) => s + v.shape!.reduce((a, b) => a * b, 1), 0);
  assert.equal(m.parameters, expected);
  assert.equal(m.architecture, 'LlamaForCausalLM');
  assert.equal(m.model_type, 'llama');
  assert.equal(m.dtype, 'float32');
  assert.equal(m.format, 'hf-safetensors');
  // The folder ships its own checksums: they must agree with ours.
  const sums = new Map(readFileSync(join(dir, 'SHA256SUMS'), 'utf8').trim().split('\n').map((l) => {
    const [h, p] = l.split(/\s+/);
    return [p!, h!] as const;
  }));
  for (const [p, h] of sums) assert.equal(m.files.find((f) => f.path === p)?.sha256, h, p);
});

async function assertRefused(home: string, dir: string, pattern: RegExp, name = 'broken'): Promise<void> {
  const before = listTree(home);
  await assert.rejects(importModel(dir, { name }, home), (e: unknown) => {
    assert.ok(e instanceof UserError, `expected a UserError, got ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  });
  assert.deepEqual(listTree(home), before, 'the home is exactly as before');
}

test('broken folders are refused with a clear message and change nothing', async () => {
  for (const populated of [false, true]) {
    const home = freshHome();
    if (populated) await importModel(makeFakeModel(join(tempDir(), 'ok')), { name: 'ok' }, home);

    const truncated = makeFakeModel(join(tempDir(), 'truncated'));
    const st = join(truncated, 'model.safetensors');
    truncateSync(st, statSync(st).size - 10);
    await assertRefused(home, truncated, /model\.safetensors.*truncated/);

    const badConfig = makeFakeModel(join(tempDir(), 'bad-config'));
    writeFileSync(join(badConfig, 'config.json'), '{"architectures": [');
    await assertRefused(home, badConfig, /config\.json is not valid JSON/);

    const noConfig = makeFakeModel(join(tempDir(), 'no-config'));
    unlinkSync(join(noConfig, 'config.json'));
    await assertRefused(home, noConfig, /config\.json is missing/);

    const noWeights = makeFakeModel(join(tempDir(), 'no-weights'));
    unlinkSync(join(noWeights, 'model.safetensors'));
    await assertRefused(home, noWeights, /no weight files/);

    const badOffsets = makeFakeModel(join(tempDir(), 'bad-offsets'));
    const len = Buffer.alloc(8);
    const header = Buffer.from(JSON.stringify({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 64] } }));
    len.writeBigUInt64LE(BigInt(header.length));
    writeFileSync(join(badOffsets, 'model.safetensors'), Buffer.concat([len, header, Buffer.alloc(64)]));
    await assertRefused(home, badOffsets, /model\.safetensors.*should take 16 bytes/);

    const garbage = makeFakeModel(join(tempDir(), 'garbage'));
    writeFileSync(join(garbage, 'extra', 'adapter.safetensors'), 'not a safetensors file at all');
    await assertRefused(home, garbage, /adapter\.safetensors is not a valid safetensors file/);

    await assertRefused(home, join(tempDir(), 'does-not-exist'), /not found/);
    await assertRefused(home, makeFakeModel(join(tempDir(), 'fine')), /invalid model name/, 'Bad Name');
  }
});

test('model names are checked', async () => {
  const home = freshHome();
  const src = makeFakeModel(join(tempDir(), 'fake'));
  for (const bad of ['', 'Upper', '-leading', '.hidden', 'has space', 'a/b', 'a:1', 'x'.repeat(65), 'ünï']) {
    await assert.rejects(importModel(src, { name: bad }, home), (e: unknown) => e instanceof UserError && /invalid model name/.test(e.message), bad);
  }
  await assert.rejects(importModel(src, { name: 'My Model' }, home), (e: unknown) => e instanceof UserError && e.hint === 'try --name my-model');
  for (const good of ['a', '0', 'qwen3-0.6b', 'llama_3.1-8b', 'x'.repeat(64)]) {
    assert.equal((await importModel(src, { name: good }, home)).name, good);
  }
});

test('a failure midway removes the blobs this import added, and only those', async () => {
  const home = freshHome();
  const layout = vaultLayout(home);
  const shared = makeFakeModel(join(tempDir(), 'first'));
  await importModel(shared, { name: 'first' }, home);
  const before = listTree(home);
  // Same files plus new ones; fail after two new blobs are stored.
  const second = makeFakeModel(join(tempDir(), 'second'), { tensors: { other: { shape: [5] } } });
  writeFileSync(join(second, 'zz-new-1.txt'), 'new one');
  writeFileSync(join(second, 'zz-new-2.txt'), 'new two');
  await assert.rejects(
    importWithHooks(layout, second, { name: 'second' }, {
      afterFile: (p) => {
        if (p === 'zz-new-1.txt') throw new Error('simulated read error');
      },
    }),
    /simulated read error/,
  );
  assert.deepEqual(listTree(home), before, 'no new blob, no manifest, no folder left');
  // The blobs shared with "first" survived, and "first" still verifies as present.
  assert.deepEqual(listModels(undefined, home).map((r) => r.name), ['first']);
});

test('registerModel records lineage, auto-increments, inherits the parent license', async () => {
  const home = freshHome();
  const base = await importModel(makeFakeModel(join(tempDir(), 'base')), { name: 'base', license: 'mit' }, home);
  const lineage: Lineage = {
    parent: { ref: 'base:1', digest: base.digest },
    run_id: 'run-20250101-abc',
    recipe: { kind: 'ssd', temperature: 1.1 },
    evaluation: { pass_at_1: { before: 0.2, after: 0.3 } },
  };
  const out = makeFakeModel(join(tempDir(), 'final'), { readme: null, tensors: { w: { shape: [2, 2], values: [1, 2, 3, 4] } } });
  const r1 = await registerModel(out, { name: 'base-ssd', lineage }, home);
  const r2 = await registerModel(out, { name: 'base-ssd', lineage }, home);
  assert.equal(r1.version, 1);
  assert.equal(r2.version, 2);
  assert.deepEqual(r1.lineage, lineage);
  assert.equal(r1.license, 'mit');
  const row = listModels('base-ssd', home)[0]!;
  assert.equal(row.parent_digest, base.digest);
  assert.equal(row.run_id, 'run-20250101-abc');
  await assert.rejects(
    registerModel(out, { name: 'x', lineage: { ...lineage, parent: { ref: 'base', digest: 'nope' } } }, home),
    /invalid lineage/,
  );
});

test('pytorch .bin folders import as hf-pytorch with unknown parameter count', async () => {
  const home = freshHome();
  const dir = join(tempDir(), 'pt');
  mkdirSync(dir);
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ architectures: ['GPT2LMHeadModel'], model_type: 'gpt2', torch_dtype: 'float16' }));
  writeFileSync(join(dir, 'pytorch_model.bin'), Buffer.alloc(100, 1));
  const m = await importModel(dir, { name: 'pt' }, home);
  assert.equal(m.format, 'hf-pytorch');
  assert.equal(m.parameters, null);
  assert.equal(m.dtype, 'float16');
});

test('sharded checkpoints count only the shards named by the index', async () => {
  const home = freshHome();
  const dir = makeFakeModel(join(tempDir(), 'sharded'), { tensors: { a: { shape: [4] } } });
  writeSafetensors(join(dir, 'model-00001-of-00002.safetensors'), { a: { shape: [10] } });
  writeSafetensors(join(dir, 'model-00002-of-00002.safetensors'), { b: { shape: [20] } });
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } }));
  const m = await importModel(dir, { name: 'sharded' }, home);
  assert.equal(m.parameters, 30);
});

test('read-only source files and symlinked files import fine', async () => {
  const home = freshHome();
  const dir = makeFakeModel(join(tempDir(), 'ro'));
  chmodSync(join(dir, 'config.json'), 0o444);
  // Hugging Face cache snapshots are folders of symlinks: the link's target content is what gets stored.
  const outside = join(tempDir(), 'generation_config.json');
  writeFileSync(outside, '{"max_length": 32}');
  symlinkSync(outside, join(dir, 'generation_config.json'));
  const m = await importModel(dir, { name: 'ro' }, home);
  assert.equal(m.files.length, 6);
  assert.equal(m.files.find((f) => f.path === 'generation_config.json')?.sha256, sha(outside));
  symlinkSync(join(dir, 'missing-target'), join(dir, 'dangling.json'));
  await assert.rejects(importModel(dir, { name: 'ro' }, home), /dangling\.json: broken symlink/);
});
