import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  describeRetention, evaluateRetention, lastNumber, normaliseAnswer, replyRegion, retentionPrompt, retentionTasks, scoreProbe, scoreRetention,
  RETENTION_DEFAULT_DECODING, type RetentionTask,
} from '../../src/eval/retention/index.js';
import { checkInstruction, INSTRUCTIONS } from '../../src/eval/retention/instructions.js';
import { FACTS } from '../../src/eval/retention/facts.js';
import { HARNESS_VERSION } from '../../src/eval/version.js';
import type { Sampler, SampleRequest } from '../../src/sampling/sampler.js';
import { isUserError } from '../../src/core/errors.js';

const byId = (id: string): RetentionTask => retentionTasks().find((t) => t.id === id)!;

test('the probe set is fixed: deterministic for a seed, different for another, sizes and unique ids', () => {
  const a = retentionTasks();
  assert.deepEqual(a, retentionTasks());
  assert.deepEqual(a, retentionTasks(50));
  assert.notDeepEqual(a.filter((t) => t.kind === 'arithmetic'), retentionTasks(51).filter((t) => t.kind === 'arithmetic'));
  assert.equal(a.filter((t) => t.kind === 'arithmetic').length, 50);
  assert.equal(a.filter((t) => t.kind === 'qa').length, FACTS.length);
  assert.ok(FACTS.length >= 50);
  assert.equal(a.filter((t) => t.kind === 'instruction').length, 30);
  assert.equal(new Set(a.map((t) => t.id)).size, a.length);
  // A known first problem (guards against accidental changes to the generator: bump HARNESS_VERSION if it changes).
  const first = a[0]!;
  assert.equal(first.id, 'arith-000');
  assert.match(first.question, /^\w+ has \d+ apples and buys \d+ more\./);
  const [x, y] = first.question.match(/\d+/g)!.map(Number);
  assert.equal(first.answer, x! + y!);
  for (const t of a.filter((t) => t.kind === 'arithmetic')) assert.ok(Number.isInteger(t.answer) && t.answer! >= 0, t.id);
});

test('prompt formats: base and chat', () => {
  const t = byId('qa-capital-france');
  assert.equal(retentionPrompt(t, 'base'), 'Question: What is the capital of France?\nAnswer:');
  assert.equal(retentionPrompt(t, 'chat'), 'What is the capital of France? Answer in a few words.');
  assert.match(retentionPrompt(byId('arith-001'), 'chat'), /Reply with the final number only\.$/);
  assert.equal(retentionPrompt(byId('if-upper-cold'), 'chat'), INSTRUCTIONS.find((i) => i.id === 'if-upper-cold')!.question);
});

test('arithmetic: the last number of the reply, thousands separators, the next question cut off', () => {
  const t: RetentionTask = { id: 'x', kind: 'arithmetic', question: 'q', difficulty: 1, answer: 1234 };
  assert.equal(scoreProbe(t, ' 1234').correct, true);
  assert.equal(scoreProbe(t, ' 1,234 dollars').correct, true);
  assert.equal(scoreProbe(t, ' 1000 + 234 = 1234.').correct, true);
  assert.equal(scoreProbe(t, ' 1235').correct, false);
  assert.equal(scoreProbe(t, ' 12\nQuestion: what is 1234?').correct, false);
  assert.equal(scoreProbe(t, ' many').why, 'no number in the reply');
  assert.equal(lastNumber('-3 and 4.5'), 4.5);
});

test('QA: exact, normalised, alias and contained matches; wrong answers fail', () => {
  const t = byId('qa-capital-france');
  assert.deepEqual(scoreProbe(t, 'Paris'), { correct: true, match: 'exact' });
  assert.deepEqual(scoreProbe(t, ' paris.'), { correct: true, match: 'normalised' });
  assert.deepEqual(scoreProbe(t, 'The capital of France is Paris.'), { correct: true, match: 'contains' });
  assert.equal(scoreProbe(t, 'Lyon').correct, false);
  assert.equal(scoreProbe(t, 'Parisian food').correct, false); // whole words only
  assert.deepEqual(scoreProbe(byId('qa-highest-mountain'), 'Mt. Everest'), { correct: true, match: 'alias' });
  assert.deepEqual(scoreProbe(byId('qa-water-formula'), 'H2O'), { correct: true, match: 'exact' });
  assert.deepEqual(scoreProbe(byId('qa-water-formula'), 'h₂o'), { correct: true, match: 'normalised' });
  assert.equal(scoreProbe(byId('qa-pi-digits'), '3.14').correct, true);
  assert.equal(scoreProbe(byId('qa-pi-digits'), '314').correct, false);
  assert.equal(scoreProbe(byId('qa-legs-spider'), ' Eight legs.\n\nQuestion: next').correct, true);
  assert.equal(normaliseAnswer('  The Pacific-Ocean! '), 'pacific ocean');
  assert.equal(normaliseAnswer('Émile'), 'emile');
});

test('instruction checks accept compliant replies and reject others', () => {
  const cases: [string, string, boolean][] = [
    ['if-words3-colours', 'Red, green, blue.', true],
    ['if-words3-colours', 'Red and green and blue', false],
    ['if-max4-ocean', 'A big salty sea', true],
    ['if-max4-ocean', 'A very big body of salt water', false],
    ['if-upper-cold', 'HOT!', true],
    ['if-upper-cold', 'Hot', false],
    ['if-lower-city', 'tokyo', true],
    ['if-lower-city', 'Tokyo', false],
    ['if-include-harbour', 'Boats rest in the harbour at dusk.', true],
    ['if-include-harbour', 'Boats rest in the harbours.', false],
    ['if-exclude-the', 'A dog runs fast.', true],
    ['if-exclude-the', 'The dog runs.', false],
    ['if-json-colour', '```json\n{"colour": "green"}\n```', true],
    ['if-json-colour', '{"color": "green"}', false],
    ['if-json-colour', 'green', false],
    ['if-start-yes', 'Yes, it is.', true],
    ['if-start-yes', 'yes it is', false],
    ['if-end-done', 'Boil water, steep the leaves, and you are done.', true],
    ['if-end-done', 'Done is what you are.', false],
    ['if-end-question', 'Is the Moon made of rock?', true],
    ['if-number-week', '7', true],
    ['if-number-week', 'Seven days', false],
    ['if-bullets3-fruits', '- apple\n- pear\n- plum', true],
    ['if-bullets3-fruits', '- apple\n- pear', false],
    ['if-bullets3-fruits', 'Fruits:\n- apple\n- pear\n- plum', false],
    ['if-nocomma-park', 'Trees grow there. Kids play.', true],
    ['if-nocomma-park', 'Trees, kids and dogs.', false],
    ['if-quoted-motto', '"Onward together"', true],
    ['if-quoted-motto', 'Onward together', false],
  ];
  for (const [id, reply, ok] of cases) assert.equal(scoreProbe(byId(id), reply).correct, ok, `${id}: ${JSON.stringify(reply)}`);
  assert.deepEqual(checkInstruction({ type: 'uppercase' }, '   '), { ok: false, why: 'empty reply' });
  assert.equal(replyRegion(' - a\n- b\nQuestion: x', 'instruction'), '- a\n- b');
});

test('scoreRetention: per-task outcomes and groups; unknown or missing probes are errors', () => {
  const tasks = retentionTasks().filter((t) => ['qa-capital-france', 'qa-capital-japan', 'if-number-week'].includes(t.id));
  const s = scoreRetention(new Map([
    ['qa-capital-france', ['Paris', 'Lyon']],
    ['qa-capital-japan', ['Kyoto', 'Kyoto']],
    ['if-number-week', ['7', '7']],
  ]), tasks);
  assert.deepEqual(s.per_task.map((t) => [t.id, t.correct, t.outcomes]), [
    ['qa-capital-france', 1, [true, false]],
    ['qa-capital-japan', 0, [false, false]],
    ['if-number-week', 2, [true, true]],
  ]);
  assert.ok(Math.abs(s.accuracy.value - 0.5) < 1e-12);
  assert.equal(s.by_kind.qa.value, 0.25);
  assert.equal(s.by_kind.instruction.value, 1);
  assert.equal(s.by_kind.qa.tasks, 2);
  assert.throws(() => scoreRetention(new Map([['nope', ['x']]]), tasks), (e) => isUserError(e));
  assert.throws(() => scoreRetention(new Map([['qa-capital-france', ['Paris']]]), tasks), (e) => isUserError(e));
});

/** Answers every probe correctly except those in `wrong`, writing the sample file as every backend does. */
class FakeSampler implements Sampler {
  kind = 'http' as const;
  calls = 0;
  constructor(private wrong: Set<string>) {}
  describe(): string {
    return 'fake sampler';
  }
  identity(): Record<string, unknown> {
    return { fake: true };
  }
  async sample(req: SampleRequest) {
    this.calls++;
    const tasks = retentionTasks();
    const perfect: Record<string, string> = {
      'if-words3-colours': 'red green blue', 'if-words2-animal': 'soft cat', 'if-words1-fruit': 'apple', 'if-words5-weather': 'it is warm and sunny',
      'if-max4-ocean': 'salt water', 'if-max6-sleep': 'to rest', 'if-upper-cold': 'HOT', 'if-upper-greeting': 'HELLO', 'if-upper-tree': 'TREES ARE TALL.',
      'if-lower-city': 'paris', 'if-lower-sentence': 'rain falls.', 'if-include-harbour': 'a harbour.', 'if-include-lantern': 'a lantern.',
      'if-include-purple': 'purple.', 'if-exclude-the': 'dogs bark.', 'if-exclude-good': 'breakfast is great.', 'if-json-colour': '{"colour":"green"}',
      'if-json-name': '{"name":"Ana"}', 'if-json-count': '{"count":2}', 'if-start-yes': 'Yes, it is.', 'if-start-dear': 'Dear Bo, hi.',
      'if-end-done': 'tea is done', 'if-end-question': 'Why?', 'if-number-week': '7', 'if-number-dozen': '12', 'if-number-hands': '2',
      'if-bullets3-fruits': '- a\n- b\n- c', 'if-bullets2-tools': '- a\n- b', 'if-nocomma-park': 'Green. Quiet.', 'if-quoted-motto': '"Go"',
    };
    for (let p = 0; p < req.prompts.length; p++) {
      const t = tasks[p]!;
      assert.equal(req.prompts[p], retentionPrompt(t, req.decoding.chat_template ? 'chat' : 'base'));
      const good = t.kind === 'arithmetic' ? ` ${t.answer}` : t.kind === 'qa' ? ` ${t.answers![0]}` : perfect[t.id]!;
      for (let i = 0; i < req.n; i++) {
        const completion = this.wrong.has(t.id) ? ' no idea' : good;
        appendFileSync(req.outputFile, JSON.stringify({ prompt_index: p, sample_index: i, completion, finish_reason: 'stop' }) + '\n');
      }
    }
    return { count: req.prompts.length * req.n, seconds: 0, resumed: 0 };
  }
  async close() {}
}

test('evaluateRetention: generates through the sampler, scores, records settings, caches', async () => {
  const cacheDir = mkdtempSync(join(tmpdir(), 'distillery-retention-'));
  try {
    const all = retentionTasks();
    const sampler = new FakeSampler(new Set(['arith-000', 'qa-capital-france']));
    const s = await evaluateRetention({ sampler, modelDigest: 'd'.repeat(64), cacheDir, quiet: true });
    assert.equal(s.tasks, all.length);
    assert.equal(s.per_task.filter((t) => t.correct === 0).map((t) => t.id).join(','), 'arith-000,qa-capital-france');
    assert.ok(Math.abs(s.accuracy.value - (all.length - 2) / all.length) < 1e-12);
    assert.equal(s.pass_at_k['1']!.value, s.accuracy.value);
    assert.equal(s.suite, 'retention');
    assert.equal(s.harness_version, HARNESS_VERSION);
    assert.equal(s.model_digest, 'd'.repeat(64));
    assert.equal(s.prompt_format, 'base');
    assert.equal(s.seed, 50);
    assert.deepEqual(s.decoding, RETENTION_DEFAULT_DECODING);
    assert.match(s.licence ?? '', /MIT/);
    const lines = describeRetention(s, 'tiny:1');
    assert.match(lines[0]!, /^tiny:1: retention probes, 132 × 1 sample\(s\), base prompts, seed 50, harness distillery-eval\/\d+$/);
    assert.match(lines[1]!, /overall \(Avg@1\): 98\.5%/);
    assert.equal(lines.length, 5);
    // Cached: a second call does not sample again.
    const again = await evaluateRetention({ sampler, modelDigest: 'd'.repeat(64), cacheDir, quiet: true });
    assert.equal(sampler.calls, 1);
    assert.deepEqual(again, JSON.parse(JSON.stringify(s)));
    // Chat format: another cache entry, chat prompts (checked inside the fake sampler).
    const chat = await evaluateRetention({ sampler, modelDigest: 'd'.repeat(64), cacheDir, quiet: true, decoding: { ...RETENTION_DEFAULT_DECODING, chat_template: true } });
    assert.equal(chat.prompt_format, 'chat');
    assert.equal(sampler.calls, 2);
    const dirs = (await import('node:fs')).readdirSync(cacheDir);
    assert.equal(dirs.length, 2);
    for (const d of dirs) {
      assert.ok(existsSync(join(cacheDir, d, 'summary.json')));
      assert.ok(JSON.parse(readFileSync(join(cacheDir, d, 'prompts.json'), 'utf8')).prompts.length === all.length);
    }
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
});
