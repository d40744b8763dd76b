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
  generateRefreshSuite,
  libNamespace,
  teacherPrompt,
  v1SolutionFor,
  type RefreshSuite,
} from '../../src/demo/refresh-suite.js';

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

test('no held-out or SDFT question occurs in the corpus', () => {
  for (const s of both) {
    const corpus = corpusQuestions(s);
    assert.ok(corpus.size > 100);
    for (const t of [...s.v2Tasks, ...s.retentionTasks, ...s.sdftData]) assert.ok(!corpus.has(t.prompt), `in corpus: ${t.prompt}`);
  }
});

test('no v2 name and no v2-style call occurs in the corpus', () => {
  assert.deepEqual([...V2_ONLY_NAMES].sort(), ['clamp', 'mul', 'offset']);
  for (const s of both) {
    for (const d of s.corpus) {
      const text = d.prompt + d.completion;
      for (const name of V2_ONLY_NAMES) assert.ok(!text.includes(name), `v2 name ${name} in corpus: ${text}`);
      // wrap kept its name but takes the modulus first in v2: wrap(<number>, ...) never occurs in the corpus
      assert.ok(!/\bwrap\(\d/.test(text), `v2-style wrap call in corpus: ${text}`);
    }
  }
});

test('the corpus has in-context documents in the teacher format, with names other than v1', () => {
  const head = TEACHER_TEMPLATE.split('$orig_content')[0]!;
  const icl = full.corpus.filter((d) => d.prompt.startsWith(head) && d.prompt.includes('This is an example for a response to the question:\n'));
  assert.ok(icl.length > full.corpus.length * 0.3 && icl.length < full.corpus.length * 0.7, `${icl.length} in-context docs`);
  const libIcl = icl.filter((d) => /\w+\([^)]*\)/.test(d.completion.replace(/\b(max|min|abs)\(/g, '')));
  assert.ok(libIcl.length > icl.length * 0.5);
  for (const d of libIcl) for (const name of V1_NAMES) assert.ok(!new RegExp(`\\b${name}\\(`).test(d.completion), `v1 name in an in-context answer: ${d.completion}`);
  // the example and the answer use the same names
  for (const d of libIcl.slice(0, 200)) {
    const names = (t: string): string[] => [...t.matchAll(/(\w+)\(/g)].map((m) => m[1]!).sort();
    const example = d.prompt.split('question:\n')[1]!;
    assert.deepEqual(names(d.completion), names(example.split('\n\nNow answer')[0]!));
  }
});

test('teacher prompt is the SDFT template, verbatim', () => {
  assert.equal(
    teacherPrompt('Q\n', 'D\n'),
    '\nQ\n\n\nThis is an example for a response to the question:\nD\n\n\nNow answer with a response of your own, including the thinking process.\n',
  );
});

test('alphabet covers every character the model or the tests see', () => {
  for (const s of both) {
    const alpha = new Set(s.alphabet);
    const texts: string[] = [
      TEACHER_TEMPLATE.replace('$orig_content', '').replace('$output_text', ''),
      s.libV1,
      s.libV2,
      s.changelog,
      ...s.corpus.flatMap((c) => [c.prompt, c.completion]),
      ...s.sdftData.flatMap((r) => [r.prompt, r.demonstration, teacherPrompt(r.prompt, r.demonstration)]),
      ...[...s.v2Tasks, ...s.retentionTasks].flatMap((t) => [t.prompt, t.tests, t.canonical_solution]),
      ...s.stop,
    ];
    for (const text of texts) for (const ch of text) assert.ok(alpha.has(ch), `character ${JSON.stringify(ch)} not in alphabet`);
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
    assert.ok(s.v2Tasks[0]!.tests.includes(libNamespace(LIB_V2, 'v2')));
  }
});

test('v2 tasks: canonical (v2) passes, the v1 solution fails under v2 and passes under v1 (python3)', () => {
  const programs: { id: string; src: string; want: boolean }[] = [];
  for (const t of [...full.v2Tasks, ...fast.v2Tasks]) {
    const v1 = v1SolutionFor(t.prompt);
    assert.ok(v1 !== null);
    const v1Tests = t.tests.replace(libNamespace(LIB_V2, 'v2'), libNamespace(LIB_V1, 'v1'));
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
  for (const r of fast.sdftData.concat(full.sdftData.slice(0, 150))) {
    const v1 = v1SolutionFor(r.prompt);
    assert.ok(v1 !== null);
    const v2Fn = r.prompt.replace('def f(', 'def f2(') + r.demonstration;
    // f (v1 body, v1 lib) and f2 (demonstration, v2 lib) live in separate namespaces; compare on many inputs.
    programs.push(
      [
        `ns1 = {}`,
        `exec(${JSON.stringify(libNamespace(LIB_V1, 'v1') + r.prompt + v1)}, ns1)`,
        `ns2 = {}`,
        `exec(${JSON.stringify(libNamespace(LIB_V2, 'v2') + v2Fn)}, ns2)`,
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
