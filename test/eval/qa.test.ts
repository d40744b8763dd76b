import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UserError } from '../../src/core/errors.js';
import { isQaRecord, parseQaFile } from '../../src/eval/qa.js';
import { scoreRetention } from '../../src/eval/retention/index.js';

const FILE = [
  '{"licence": "CC-BY-4.0, from my notes"}',
  '{"id": "cap-fr", "question": "What is the capital of France?", "answer": "Paris"}',
  '{"question": "Who wrote Hamlet?", "answer": ["William Shakespeare"], "aliases": ["Shakespeare"], "difficulty": 2}',
].join('\n');

test('question/answer files: licence line, ids, aliases; answers matched like the built-in facts', () => {
  const { tasks, licence } = parseQaFile(FILE, 'qa.jsonl');
  assert.equal(licence, 'CC-BY-4.0, from my notes');
  assert.deepEqual(tasks.map((t) => [t.id, t.kind, t.answers, t.difficulty]), [
    ['cap-fr', 'qa', ['Paris'], 1],
    ['qa/0001', 'qa', ['William Shakespeare', 'Shakespeare'], 2],
  ]);
  const completions = new Map([['cap-fr', [' paris.']], ['qa/0001', [' It was Shakespeare\nQuestion: next']]]);
  const score = scoreRetention(completions, tasks);
  assert.deepEqual(score.per_task.map((t) => t.correct), [1, 1]);
  const wrong = scoreRetention(new Map([['cap-fr', [' Lyon']], ['qa/0001', [' Marlowe']]]), tasks);
  assert.deepEqual(wrong.per_task.map((t) => t.correct), [0, 0]);
});

test('question/answer files: bad lines are named', () => {
  assert.ok(isQaRecord({ question: 'q', answer: 'a' }) && !isQaRecord({ prompt: 'p' }));
  assert.throws(() => parseQaFile('{"question": "q"}', 'x.jsonl'), (e: unknown) => e instanceof UserError && /x\.jsonl:1: a question\/answer line needs/.test(e.message));
  assert.throws(() => parseQaFile('{"question": "q", "answer": ""}', 'x.jsonl'), /non-empty strings/);
  assert.throws(() => parseQaFile('{"id": "a", "question": "q", "answer": "x"}\n{"id": "a", "question": "r", "answer": "y"}', 'x.jsonl'), /x\.jsonl:2: duplicate id "a"/);
  assert.throws(() => parseQaFile('{"licence": "mine"}', 'x.jsonl'), /holds no questions/);
});
