import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  CHANGED,
  LIB_V1,
  LIB_V2,
  REFRESH_SIZES,
  TEACHER_TEMPLATE,
  V1_NAMES,
  V2_ONLY_NAMES,
  NAME_POOL,
  generateRefreshSuite,
  libBody,
  parseLibPrompt,
  signatureV1,
  signatureV2,
  teacherPrompt,
  v1SolutionFor,
  type RefreshSuite,
} from '../../src/demo/refresh-suite.js';
import { BUILTIN_TEMPLATES, renderPair } from '../../src/recipes/onpolicy-templates.js';

const full = generateRefreshSuite({ seed: 0, size: 'full' });
const fast = generateRefreshSuite({ seed: 0, size: 'fast' });
const both: RefreshSuite[] = [full, fast];

/** Every task prompt (`# spec\ndef f(x):\n`) that occurs anywhere in a corpus document. */
function corpusQuestions(s: RefreshSuite): Set<string> {
  const found = new Set<string>();
  for (const d of s.corpus) for (const m of (d.prompt + d.completion).matchAll(/# [^\n]*\ndef f\(x\):\n/g)) found.add(m[0]);
  return found;
}

test('same seed and size give identical JSON; another seed differs', () => {
  assert.equal(JSON.stringify(generateRefreshSuite({ seed: 0, size: 'full' })), JSON.stringify(full));
  assert.equal(JSON.stringify(generateRefreshSuite({ seed: 0, size: 'fast' })), JSON.stringify(fast));
  assert.notEqual(JSON.stringify(generateRefreshSuite({ seed: 1, size: 'fast' })), JSON.stringify(fast));
});

test('sizes, unique ids and prompts', () => {
  for (const s of both) {
    const want = REFRESH_SIZES[s.size];
    assert.equal(s.corpus.length, want.corpus);
    assert.equal(s.sdftData.length, want.sdft);
    assert.equal(s.v2Tasks.length, want.v2Tasks);
    assert.equal(s.retentionTasks.length, want.retention);
    const ids = [...s.v2Tasks, ...s.retentionTasks].map((t) => t.id);
    assert.equal(new Set(ids).size, ids.length);
    const prompts = [...s.v2Tasks, ...s.retentionTasks, ...s.sdftData].map((t) => t.prompt);
    assert.equal(new Set(prompts).size, prompts.length, 'v2 tasks, retention tasks and sdft records are pairwise disjoint');
  }
});

test('no retention question occurs in the corpus; v2 tasks and SDFT records are disjoint', () => {
  for (const s of both) {
    const corpus = corpusQuestions(s);
    assert.ok(corpus.size > 100);
    for (const t of s.retentionTasks) assert.ok(!corpus.has(t.prompt), `in corpus: ${t.prompt}`);
    const v2 = new Set(s.v2Tasks.map((t) => t.prompt));
    for (const r of s.sdftData) assert.ok(!v2.has(r.prompt), `demonstration for a held-out task: ${r.prompt}`);
  }
});

test('no corpus document holds a v2 body; v2 names occur only as aliases in examples and copy runs', () => {
  assert.deepEqual([...V2_ONLY_NAMES].sort(), ['clamp', 'mul', 'offset']);
  for (const s of both) {
    for (const d of s.corpus) {
      const question = /# [^\n]*\ndef f\(x\):\n/.exec(d.prompt)?.[0];
      const call = question === undefined ? null : parseLibPrompt(question);
      if (call !== null && libBody(call, signatureV1(call), true) !== libBody(call, signatureV2(call), true)) {
        for (const inline of [true, false]) assert.notEqual(d.completion, libBody(call, signatureV2(call), inline), `v2 body in corpus: ${d.prompt}`);
      }
      const plain = !d.prompt.includes('This is an example') && !d.prompt.startsWith('\n');
      if (plain) for (const name of V2_ONLY_NAMES) assert.ok(!new RegExp(`\\b${name}\\b`).test(d.completion), `v2 name in plain code: ${d.completion}`);
    }
  }
});

test('the corpus mixes plain v1 tasks, in-context documents (teacher format, aliases) and copy documents', () => {
  const head = TEACHER_TEMPLATE.split('$orig_content')[0]!;
  const icl = full.corpus.filter((d) => d.prompt.startsWith(head) && d.prompt.includes('This is an example for a response to the question:\n'));
  const copies = full.corpus.filter((d) => !icl.includes(d) && d.prompt.startsWith('\n'));
  assert.ok(icl.length > full.corpus.length * 0.3 && icl.length < full.corpus.length * 0.5, `${icl.length} in-context docs`);
  assert.ok(copies.length > full.corpus.length * 0.2 && copies.length < full.corpus.length * 0.4, `${copies.length} copy docs`);
  for (const d of copies) assert.equal(d.prompt, `\n${d.completion.trimEnd()}\n\n`);
  // the answer repeats the example; the example's name is a pool alias or a v1 name
  const names = new Set([...NAME_POOL, ...V1_NAMES]);
  let v1Named = 0;
  for (const d of icl) {
    assert.equal(d.prompt.split('question:\n')[1]!.split('\n\nNow answer')[0]!, d.completion);
    const name = /(\w+)\(/.exec(d.completion)![1]!;
    assert.ok(names.has(name), name);
    if (V1_NAMES.includes(name)) v1Named++;
  }
  assert.ok(v1Named > icl.length * 0.1 && v1Named < icl.length * 0.3, `${v1Named} examples with a v1 name`);
  // plain library tasks are v1 bodies of their question
  for (const d of full.corpus) {
    const call = parseLibPrompt(d.prompt);
    if (call === null) continue;
    assert.ok([true, false].some((inline) => d.completion === libBody(call, signatureV1(call), inline)), d.completion);
  }
});

test('the teacher prompt is the sdft recipe\'s default template, rendered as the recipe renders it', () => {
  assert.equal(
    teacherPrompt('Q\n', 'D\n'),
    '\nQ\n\n\nThis is an example for a response to the question:\nD\n\n\nNow answer with a response of your own, including the thinking process.',
  );
  const pair = BUILTIN_TEMPLATES.sdft[0]!;
  assert.equal(TEACHER_TEMPLATE, pair.teacher.text);
  for (const r of full.sdftData.slice(0, 20)) assert.equal(teacherPrompt(r.prompt, r.demonstration), renderPair(pair, { prompt: r.prompt, demonstration: r.demonstration }).teacher);
});

test('the vocabulary covers every piece of every prompt and completion the model sees', () => {
  for (const s of both) {
    const vocab = new Set(s.pieces);
    const texts: string[] = [
      ...s.corpus.flatMap((c) => [c.prompt, c.completion]),
      ...s.sdftData.flatMap((r) => [r.prompt, r.demonstration, teacherPrompt(r.prompt, r.demonstration)]),
      ...[...s.v2Tasks, ...s.retentionTasks].flatMap((t) => [t.prompt, t.canonical_solution]),
    ];
    const re = new RegExp(s.pattern, 'g');
    for (const text of texts) {
      let covered = 0;
      for (const m of text.matchAll(re)) {
        assert.ok(vocab.has(m[0]), `piece ${JSON.stringify(m[0])} not in the vocabulary`);
        covered += m[0].length;
      }
      assert.equal(covered, text.length, `the pattern splits all of ${JSON.stringify(text)}`);
    }
    assert.deepEqual(s.pieces, [...s.pieces].sort());
  }
});

test('stop strings never occur inside a solution or a demonstration', () => {
  for (const s of both) {
    for (const stop of s.stop) {
      for (const t of [...s.v2Tasks, ...s.retentionTasks]) assert.ok(!t.canonical_solution.includes(stop));
      for (const r of s.sdftData) assert.ok(!r.demonstration.includes(stop));
    }
  }
});

test('every v2 task uses a changed function; v2 breaks v1 code', () => {
  const changed = new Set(CHANGED);
  assert.deepEqual([...changed].sort(), ['cycle', 'grow', 'inc', 'limit']);
  for (const s of both) {
    for (const t of s.v2Tasks) assert.ok(t.prompt.split('\n')[0]!.slice(2).split(', ').some((p) => changed.has(p.split(' ')[0]!)), t.prompt);
    assert.ok(s.v2Tasks[0]!.tests.includes(LIB_V2));
  }
});

test('v2 tasks: canonical (v2) passes, the v1 solution fails under v2 and passes under v1 (python3)', () => {
  const programs: { id: string; src: string; want: boolean }[] = [];
  for (const t of [...full.v2Tasks, ...fast.v2Tasks]) {
    const v1 = v1SolutionFor(t.prompt);
    assert.ok(v1 !== null);
    const v1Tests = t.tests.replace(LIB_V2, LIB_V1);
    programs.push({ id: `${t.id}/v2`, src: t.prompt + t.canonical_solution + t.tests, want: true });
    programs.push({ id: `${t.id}/v1-under-v2`, src: t.prompt + v1 + t.tests, want: false });
    programs.push({ id: `${t.id}/v1-under-v1`, src: t.prompt + v1 + v1Tests, want: true });
    programs.push({ id: `${t.id}/identity`, src: t.prompt + '    return x\n' + t.tests, want: false });
  }
  for (const t of [...full.retentionTasks, ...fast.retentionTasks]) {
    programs.push({ id: `${t.id}/ok`, src: t.prompt + t.canonical_solution + t.tests, want: true });
    programs.push({ id: `${t.id}/identity`, src: t.prompt + '    return x\n' + t.tests, want: false });
  }
  const results = runPython(programs.map((p) => p.src));
  programs.forEach((p, i) => assert.equal(results[i], p.want, `${p.id}\n${p.src}`));
});

test('SDFT demonstrations are correct v2 bodies: same values as the v1 solution under v1 (python3)', () => {
  const programs: string[] = [];
  for (const r of fast.sdftData.concat(full.sdftData)) {
    const v1 = v1SolutionFor(r.prompt);
    assert.ok(v1 !== null);
    const v2Fn = r.prompt.replace('def f(', 'def f2(') + r.demonstration;
    // f (v1 body, v1 lib) and f2 (demonstration, v2 lib) live in separate namespaces; compare on many inputs.
    programs.push(
      [
        `ns1 = {}`,
        `exec(${JSON.stringify(LIB_V1 + r.prompt + v1)}, ns1)`,
        `ns2 = {}`,
        `exec(${JSON.stringify(LIB_V2 + v2Fn)}, ns2)`,
        `assert all(ns1['f'](x) == ns2['f2'](x) for x in range(-12, 20))`,
        `assert 'shift' not in ${JSON.stringify(r.demonstration)}`,
      ].join('\n') + '\n',
    );
  }
  const results = runPython(programs);
  results.forEach((ok, i) => assert.ok(ok, programs[i]));
});

/** Runs every program in a fresh namespace of one python3 process; returns pass/fail per program. */
function runPython(programs: string[]): boolean[] {
  const script = String.raw`
import json, sys
out = []
for src in json.load(sys.stdin):
    try:
        exec(src, {})
        out.append(True)
    except Exception:
        out.append(False)
print(json.dumps(out))
`;
  const r = spawnSync('python3', ['-c', script], { input: JSON.stringify(programs), encoding: 'utf8', maxBuffer: 1 << 26 });
  assert.equal(r.status, 0, r.stderr);
  const parsed = JSON.parse(r.stdout) as boolean[];
  assert.equal(parsed.length, programs.length);
  return parsed;
}
