import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { registerReportCommand } from '../../src/cli/report-command.js';
import { isUserError } from '../../src/core/errors.js';
import type { Decoding } from '../../src/engine/decoding.js';
import { buildReport, type Report, type StoredSummary } from '../../src/eval/report/build.js';
import { renderReportText } from '../../src/eval/report/render.js';
import { retentionTasks, scoreRetention } from '../../src/eval/retention/index.js';
import { evalCacheDir } from '../../src/eval/run.js';
import { binomialPmf, HARNESS_VERSION } from '../../src/eval/stats.js';
import { importModel } from '../../src/vault/vault.js';
import { runCli } from '../helpers/cli.js';
import { tempHome } from '../helpers/env.js';
import { makeFakeModel, tempDir } from '../vault/helpers.js';

const DECODING: Decoding = { temperature: 0.8, top_k: 20, top_p: 0.95, min_p: 0, max_tokens: 128, stop: [], seed: 0, chat_template: false };
const close = (a: number, b: number, eps = 1e-12) => assert.ok(Math.abs(a - b) <= eps, `${a} vs ${b}`);

/** 20 tasks, n = 1, difficulty 1 or 2; `solved` lists the task indexes that pass. */
function summary(digest: string, solved: number[], extra: Partial<StoredSummary> = {}): StoredSummary {
  const per = Array.from({ length: 20 }, (_, i) => ({ id: `task-${i}`, n: 1, correct: solved.includes(i) ? 1 : 0, difficulty: i < 10 ? 'easy' : 'hard' }));
  const mean = per.reduce((s, t) => s + t.correct, 0) / per.length;
  return { model_digest: digest, decoding: DECODING, n: 1, tasks: 20, pass_at_k: { '1': { value: mean, ci: [0, 1] } }, per_task: per, ...extra };
}

function retentionSummary(digest: string, wrong: Set<string>): unknown {
  const tasks = retentionTasks();
  const s = scoreRetention(new Map(tasks.map((t) => [t.id, [wrong.has(t.id) ? 'no idea' : t.kind === 'arithmetic' ? String(t.answer) : t.kind === 'qa' ? t.answers![0]! : 'x']])), tasks);
  return { suite: 'retention', harness_version: HARNESS_VERSION, model_digest: digest, decoding: { ...DECODING, temperature: 0 }, prompt_format: 'base', seed: 50, n: 1, tasks: tasks.length, ...s, pass_at_k: { '1': s.accuracy } };
}

function writeRun(home: string, id: string, stages: Record<string, unknown>): void {
  mkdirSync(join(home, 'runs', id), { recursive: true });
  const rec = {
    schema: 1, id, recipe: 'ssd', created: '2026-01-01T00:00:00.000Z', config: { model: 'tiny:1' }, status: 'done',
    stages: Object.fromEntries(Object.entries(stages).map(([k, v]) => [k, { status: 'done', attempts: 1, result: v }])),
  };
  writeFileSync(join(home, 'runs', id, 'run.json'), JSON.stringify(rec));
}

test('a recipe run: before/after numbers, McNemar, per-difficulty, retention, HTML and JSON', async () => {
  const home = tempHome();
  try {
    // base solves 0..3 and 10; distilled solves 0..9 and 10..12 but loses nothing: 8 gained, 0 lost.
    const base = summary('a'.repeat(64), [0, 1, 2, 3, 10]);
    const distilled = summary('b'.repeat(64), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    const retWrongBase = new Set(['arith-000']);
    const retWrongDist = new Set(['arith-000', 'qa-capital-france', 'arith-001']);
    writeRun(home, 'ssd-0123456789', {
      evaluate: { base, distilled },
      retention: { base: retentionSummary('a'.repeat(64), retWrongBase), distilled: retentionSummary('b'.repeat(64), retWrongDist) },
      register: { ref: 'tiny:2' },
    });
    const html = join(home, 'r.html');
    const json = join(home, 'r.json');
    const { out } = await runCli(registerReportCommand, ['report', 'ssd-0123456789', '-o', html, '--json', json], { home });
    const r = JSON.parse(readFileSync(json, 'utf8')) as Report;
    assert.equal(r.harness_version, HARNESS_VERSION);
    assert.deepEqual(r.models.map((m) => m.label), ['ssd-0123456789 base (tiny:1)', 'ssd-0123456789 distilled (tiny:2)']);
    assert.equal(r.models[1]!.digest, 'b'.repeat(64));
    const code = r.comparisons.find((c) => c.suite === 'code')!;
    const p1 = code.by_k[0]!;
    close(p1.a.value, 5 / 20);
    close(p1.b.value, 13 / 20);
    close(p1.diff.value, 8 / 20);
    assert.deepEqual({ ...p1.mcnemar!, p: 0 }, { a_only: 0, b_only: 8, both: 5, neither: 7, p: 0, outcome: 'first sample' });
    close(p1.mcnemar!.p, 2 * binomialPmf(0, 8));
    assert.equal(p1.significant, true);
    assert.match(code.verdict, /^ssd-0123456789 distilled \(tiny:2\) is better than ssd-0123456789 base \(tiny:1\): \+40\.0 pts \[[\d.]+, [\d.]+\] pass@1, McNemar p = 0\.008, 20 tasks$/);
    assert.deepEqual(code.groups, {
      by: 'difficulty',
      rows: [
        { group: 'easy', tasks: 10, a: 0.4, b: 1, diff: 0.6 },
        { group: 'hard', tasks: 10, a: 0.1, b: 0.3, diff: 0.2 },
      ],
    });
    assert.equal(code.per_task.length, 20);
    // Every result records what it was made with.
    const e = r.models[0]!.evaluations[0]!;
    assert.deepEqual([e.model_digest, e.decoding, e.prompt_format, e.seed], ['a'.repeat(64), DECODING, 'base', 0]);
    assert.match(e.harness_version, /unrecorded/);
    const ret = r.comparisons.find((c) => c.suite === 'retention')!;
    assert.equal(ret.by_k[0]!.mcnemar!.a_only, 2);
    assert.equal(ret.by_k[0]!.mcnemar!.b_only, 0);
    close(ret.by_k[0]!.mcnemar!.p, 0.5);
    assert.match(ret.verdict, /^no significant difference/);
    assert.deepEqual(ret.groups!.rows.map((g) => g.group), ['arithmetic', 'instruction', 'qa']);
    assert.equal(r.models[1]!.evaluations[1]!.prompt_format, 'base');

    const page = readFileSync(html, 'utf8');
    assert.match(page, /<table>/);
    assert.match(page, /<svg /);
    assert.ok(page.includes('is better than ssd-0123456789 base (tiny:1): +40.0 pts'), 'verdict in the HTML');
    assert.ok(page.includes('Retention probes'));
    assert.ok(page.includes('By difficulty'));
    assert.doesNotMatch(page, /<script|<link|src=|url\(/, 'self-contained');
    assert.match(out, /is better than/);
    assert.match(out, /difficulty easy: 40\.0% → 100\.0%/);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('summary files: sign test when per-sample outcomes are unknown, pass@k for every shared k', async () => {
  const home = tempHome();
  try {
    const per = (cs: number[]) => cs.map((c, i) => ({ id: `t${i}`, n: 4, correct: c }));
    const mk = (d: string, cs: number[]) => ({ model_digest: d, decoding: DECODING, n: 4, tasks: cs.length, pass_at_k: { '1': { value: 0, ci: [0, 0] }, '2': { value: 0, ci: [0, 0] } }, per_task: per(cs) });
    writeFileSync(join(home, 'before.json'), JSON.stringify(mk('c'.repeat(64), [1, 2, 0, 4])));
    writeFileSync(join(home, 'after.json'), JSON.stringify(mk('d'.repeat(64), [2, 2, 1, 3])));
    const r = await buildReport([join(home, 'before.json'), join(home, 'after.json')], { home, now: new Date(0) });
    assert.equal(r.generated_at, '1970-01-01T00:00:00.000Z');
    const c = r.comparisons[0]!;
    assert.deepEqual(c.by_k.map((p) => p.k), [1, 2]);
    close(c.by_k[0]!.diff.value, (1 + 0 + 1 - 1) / 4 / 4);
    assert.equal(c.by_k[0]!.mcnemar, null);
    assert.deepEqual({ ...c.by_k[0]!.sign_test, p: 0 }, { b_higher: 2, a_higher: 1, ties: 1, p: 0 });
    close(c.by_k[0]!.sign_test.p, 1);
    assert.match(c.verdict, /^no significant difference between after and before: .*sign test p = 1\.00, 4 tasks$/);
    assert.equal(c.groups, null);
    assert.match(renderReportText(r), /no significant difference/);
    const cli = await runCli(registerReportCommand, ['report', join(home, 'before.json'), join(home, 'after.json'), '--json', '-', '--no-html'], { home });
    const printed = JSON.parse(cli.out) as Report;
    assert.equal(printed.comparisons[0]!.verdict, c.verdict);
    // Different decoding: not paired, and said so.
    writeFileSync(join(home, 'other.json'), JSON.stringify({ ...mk('e'.repeat(64), [0, 0, 0, 0]), decoding: { ...DECODING, temperature: 0 } }));
    const r2 = await buildReport([join(home, 'before.json'), join(home, 'other.json')], { home });
    assert.equal(r2.comparisons.length, 0);
    assert.match(r2.notes[0]!, /same decoding/);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('vault models: a missing evaluation says how to make one; a cached one is found by digest', async () => {
  const home = tempHome();
  try {
    const m1 = await importModel(makeFakeModel(join(tempDir(), 'm1')), { name: 'tiny' }, home);
    const m2 = await importModel(makeFakeModel(join(tempDir(), 'm2'), { tokenizer: '{"v": 2}' }), { name: 'tiny' }, home);
    await assert.rejects(buildReport(['tiny:1', 'tiny:2'], { home }), (e: unknown) => {
      assert.ok(isUserError(e));
      assert.match(e.message, /no cached evaluation for tiny:1 \(digest [0-9a-f]{12}\), tiny:2/);
      assert.match(e.hint!, /distillery eval --model tiny:1 --tasks/);
      return true;
    });
    for (const [m, solved] of [[m1, [0, 1]], [m2, [0, 1, 2]]] as const) {
      const dir = join(evalCacheDir(home), `k-${m.digest.slice(0, 8)}`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'summary.json'), JSON.stringify(summary(m.digest, [...solved])));
    }
    writeFileSync(join(evalCacheDir(home), 'junk.json'), 'not a folder');
    const r = await buildReport(['tiny:1', 'tiny:2'], { home });
    assert.deepEqual(r.models.map((m) => [m.label, m.source, m.digest]), [['tiny:1', 'vault', m1.digest], ['tiny:2', 'vault', m2.digest]]);
    close(r.comparisons[0]!.by_k[0]!.diff.value, 1 / 20);
    assert.equal(r.comparisons[0]!.by_k[0]!.mcnemar!.b_only, 1);
    // A second decoding evaluated for both (a temperature grid): one comparison per decoding.
    for (const [m, solved] of [[m1, [0]], [m2, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]] as const) {
      const dir = join(evalCacheDir(home), `greedy-${m.digest.slice(0, 8)}`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'summary.json'), JSON.stringify(summary(m.digest, [...solved], { decoding: { ...DECODING, temperature: 0 } })));
    }
    const grid = await buildReport(['tiny:1', 'tiny:2'], { home });
    assert.equal(grid.comparisons.length, 2);
    const greedy = grid.comparisons.find((c) => c.decoding.temperature === 0)!;
    close(greedy.by_k[0]!.diff.value, 9 / 20);
    assert.equal(greedy.by_k[0]!.direction, 'better');
    close(grid.comparisons.find((c) => c.decoding.temperature === 0.8)!.by_k[0]!.diff.value, 1 / 20);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('clear errors: a run without evaluation, an unknown item, nothing given; a run with retention only', async () => {
  const home = tempHome();
  try {
    writeRun(home, 'ssd-noeval', { sample: {} });
    await assert.rejects(buildReport(['ssd-noeval'], { home }), (e: unknown) => isUserError(e) && /run ssd-noeval has no finished evaluation/.test(e.message) && /--eval-tasks/.test(e.hint!));
    // A run without code tasks still has its retention stage: that alone makes a report.
    writeRun(home, 'ssd-retonly', { retention: { base: retentionSummary('a'.repeat(64), new Set()), distilled: retentionSummary('b'.repeat(64), new Set(['arith-000'])) } });
    const ret = await buildReport(['ssd-retonly'], { home });
    assert.deepEqual(ret.comparisons.map((c) => c.suite), ['retention']);
    assert.equal(ret.models[1]!.digest, 'b'.repeat(64));
    await assert.rejects(buildReport(['nosuchthing'], { home }), (e: unknown) => isUserError(e) && /nosuchthing is not a run, an evaluation summary file or a model/.test(e.message));
    await assert.rejects(buildReport([], { home }), (e: unknown) => isUserError(e));
    writeFileSync(join(home, 'bad.json'), JSON.stringify({ hello: 1 }));
    await assert.rejects(buildReport([join(home, 'bad.json')], { home }), (e: unknown) => isUserError(e) && /not an evaluation summary/.test(e.message));
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
