import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { kv } from '../../src/formats/gguf.js';
import { ggufFileOf, handOffToLmStudio, handOffToOllama, ollamaModelfile } from '../../src/formats/handoff.js';
import { importFrom, importModel, modelView } from '../../src/vault/vault.js';
import { freshHome, makeFakeModel, tempDir } from '../vault/helpers.js';
import { writeTinyGguf } from '../vault/source-fixtures.js';

async function chatGguf(home: string) {
  const f = join(tempDir(), 'chatty.gguf');
  await writeTinyGguf(f, [kv.string('tokenizer.chat_template', '{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}'), kv.string('general.license', 'apache-2.0')]);
  const { manifest } = await importFrom(f, { name: 'chatty' }, home);
  return { manifest, gguf: join(modelView(manifest, home), ggufFileOf(manifest).path), original: f };
}

test('Ollama hand-off: the GGUF and a Modelfile with template, stop parameters and licence', async () => {
  const home = freshHome();
  const { manifest, gguf, original } = await chatGguf(home);
  const dir = join(tempDir(), 'to-ollama');
  const r = handOffToOllama(manifest, gguf, dir, 'chatty');
  assert.equal(r.family, 'chatml');
  assert.equal(r.command, `ollama create chatty -f ${join(dir, 'Modelfile')}`);
  assert.deepEqual(readFileSync(join(dir, 'chatty.gguf')), readFileSync(original));
  assert.equal(statSync(join(dir, 'chatty.gguf')).mode & 0o777, 0o644, 'the copy is writable, unlike the vault blob');
  const modelfile = readFileSync(join(dir, 'Modelfile'), 'utf8');
  assert.match(modelfile, /^# chatty:1 from the Distillery vault \(digest [0-9a-f]{12}\)\nFROM \.\/chatty\.gguf\nTEMPLATE """\{\{- range \.Messages \}\}<\|im_start\|>/);
  assert.match(modelfile, /\nPARAMETER stop "<\|im_start\|>"\nPARAMETER stop "<\|im_end\|>"\nLICENSE """apache-2\.0"""\n$/);
  // An unknown template family: no TEMPLATE line (Ollama then uses its default).
  assert.doesNotMatch(ollamaModelfile({ ...manifest, details: { chat_template: '{{ x }}' } }, 'm.gguf').text, /TEMPLATE/);
});

test('LM Studio hand-off: <models>/<publisher>/<model>/<file>.gguf; a different file is not overwritten', async () => {
  const home = freshHome();
  const { manifest, gguf, original } = await chatGguf(home);
  const models = join(tempDir(), 'lmstudio-models');
  const placed = handOffToLmStudio(manifest, gguf, { modelsDir: models });
  assert.equal(placed, join(models, 'distillery', 'chatty', 'chatty-v1.gguf'));
  assert.deepEqual(readFileSync(placed), readFileSync(original));
  assert.equal(handOffToLmStudio(manifest, gguf, { modelsDir: models }), placed, 'placing it again is fine');
  writeFileSync(placed, 'something else');
  assert.throws(() => handOffToLmStudio(manifest, gguf, { modelsDir: models }), /exists and is a different file/);
});

test('hand-off needs one GGUF file', async () => {
  const home = freshHome();
  const hf = await importModel(makeFakeModel(join(tempDir(), 'hf')), { name: 'hf' }, home);
  assert.throws(() => ggufFileOf(hf), /hf:1 is hf-safetensors, not GGUF/);
});
