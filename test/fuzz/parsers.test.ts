import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UserError } from '../../src/core/errors.js';
import { Rng } from '../../src/core/rng.js';
import { parseManifest } from '../../src/vault/manifest.js';
import { readSafetensorsInfo } from '../../src/vault/safetensors.js';
import {
  TARGET_NAMES, describeFailure, fuzzInput, iterationSeed, makeTarget, mutateBytes, mutateJsonText, runFuzz,
  type FuzzFailure, type FuzzTarget, type TargetName,
} from './mutate.js';

/**
 * The parsers that read untrusted files either return a value or throw UserError, on thousands of mutated
 * inputs per target. A failure names the seed and iteration; `node dist/bench/fuzz.js --target T --seed S
 * --repro I` replays it. Longer runs: bench/fuzz.ts.
 */

const SEED = 20250101;
const ITERATIONS: Record<TargetName, number> = { gguf: 4000, safetensors: 1500, manifest: 4000, 'ollama-manifest': 3000, bundle: 400 };

for (const name of TARGET_NAMES) {
  test(`fuzz ${name}: every input parses or is rejected with a UserError`, async (t) => {
    const target = await makeTarget(name);
    try {
      for (const [i, s] of target.seeds.entries()) {
        await assert.doesNotReject(async () => target.run(s, 1), `seed input ${i} of ${name} must parse`);
      }
      const r = await runFuzz(target, { seed: SEED, iterations: ITERATIONS[name] });
      const real = r.failures;
      t.diagnostic(`${name}: ${r.iterations} inputs in ${Math.round(r.ms)} ms (${Math.round(r.iterations / (r.ms / 1000))}/s): ` +
        `${r.ok} parsed, ${r.userError} UserError, ${real.length} failures`);
      assert.equal(r.iterations, ITERATIONS[name]);
      assert.deepEqual(real.map(describeFailure), [], 'parser failures');
      // The mutations must reach past the first checks: both outcomes are common (except for bundles, where
      // nearly every changed byte breaks a checksum: refusing them is the point).
      if (name !== 'bundle') assert.ok(r.ok > r.iterations / 50, `only ${r.ok} inputs parsed`);
      assert.ok(r.userError > r.iterations / 4, `only ${r.userError} inputs were rejected`);
      assert.ok(r.messages.size > 15, `only ${r.messages.size} distinct errors reached`);
    } finally {
      target.close();
    }
  });
}

test('fuzz inputs are reproducible from (seed, iteration) alone', async () => {
  for (const name of ['gguf', 'safetensors', 'manifest', 'ollama-manifest'] as const) {
    const a = await makeTarget(name);
    const b = await makeTarget(name);
    for (const it of [0, 1, 77, 12345]) {
      const x = fuzzInput(a, SEED, it);
      const y = fuzzInput(b, SEED, it);
      assert.deepEqual(x.ops, y.ops);
      assert.equal(Buffer.compare(x.data, y.data), 0);
    }
    a.close();
    b.close();
  }
  assert.notEqual(iterationSeed(1, 2), iterationSeed(2, 1));
  const r = new Rng(5);
  const xs = Array.from({ length: 1000 }, () => r.below(10));
  assert.ok(xs.every((x) => x >= 0 && x < 10) && new Set(xs).size === 10);
});

test('mutators: byte mutations stay bounded; JSON mutations mostly keep JSON valid', () => {
  const input = Uint8Array.from({ length: 100 }, (_, i) => i);
  let changed = 0;
  for (let i = 0; i < 500; i++) {
    const { data, ops } = mutateBytes(input, new Rng(i));
    assert.ok(data.length <= 4 * 100 + 4096);
    assert.ok(ops.length >= 1);
    if (Buffer.compare(data, input) !== 0) changed++;
  }
  assert.ok(changed > 450, `only ${changed} of 500 byte mutations changed anything`);
  let valid = 0;
  for (let i = 0; i < 200; i++) {
    const { text } = mutateJsonText('{"a": [1, 2, {"b": "c"}], "d": null}', new Rng(i));
    try { JSON.parse(text); valid++; } catch { /* counted */ }
  }
  assert.ok(valid > 150, `only ${valid} of 200 JSON mutations parse`);
});

test('the runner reports non-UserError exceptions with seed, iteration and stack', async () => {
  const target: FuzzTarget = {
    name: 'gguf', seeds: [new Uint8Array(4)], close: () => undefined,
    mutate: (rng) => ({ data: Uint8Array.of(rng.below(4)), ops: ['x'] }),
    run: (input) => {
      if (input[0] === 3) throw new TypeError('boom');
      if (input[0] === 2) throw new UserError('rejected');
      return true;
    },
  };
  const r = await runFuzz(target, { seed: 9, iterations: 200, maxFailures: 3 });
  assert.equal(r.failures.length, 3);
  const f = r.failures[0]!;
  assert.equal(f.error, 'TypeError: boom');
  assert.equal(fuzzInput(target, 9, f.iteration).data[0], 3);
  assert.match(describeFailure(f), /^gguf seed=9 iteration=\d+ exception: TypeError: boom\n  at /);
  assert.ok(r.userError > 0 && r.ok > 0);
});

// Found by this fuzzer: error messages that stringified an untrusted value overflowed the stack on deep nesting.
const deep = '['.repeat(20000) + ']'.repeat(20000);

test('safetensors: a deeply nested shape is a UserError', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'distillery-fuzz-'));
  try {
    const header = Buffer.from(`{"a":{"dtype":"F32","shape":${deep},"data_offsets":[0,4]}}`);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    writeFileSync(join(dir, 'x.safetensors'), Buffer.concat([len, header, Buffer.alloc(4)]));
    await assert.rejects(readSafetensorsInfo(join(dir, 'x.safetensors')), UserError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('manifest: a deeply nested file entry is a UserError', () => {
  assert.throws(() => parseManifest(`{"schema":1,"name":"m","version":1,"created":"x","digest":"${'a'.repeat(64)}","format":"gguf","files":[${deep}]}`, 'm.json'), UserError);
  assert.throws(() => parseManifest(`{"schema":${deep}}`, 'm.json'), UserError);
});
