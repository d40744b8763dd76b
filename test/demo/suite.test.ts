import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateSuite, type EvalTask, type Suite } from '../../src/demo/suite.js';

const full = generateSuite({ seed: 0, size: 'full' });
const fast = generateSuite({ seed: 0, size: 'fast' });

function specs(prompts: readonly { prompt: string }[]): Set<string> {
  return new Set(prompts.map((p) => p.prompt));
}

test('same seed and size give identical JSON; another seed differs', () => {
  assert.equal(JSON.stringify(generateSuite({ seed: 0, size: 'full' })), JSON.stringify(full));
  assert.equal(JSON.stringify(generateSuite({ seed: 0, size: 'fast' })), JSON.stringify(fast));
  assert.notEqual(JSON.stringify(generateSuite({ seed: 1, size: 'fast' })), JSON.stringify(fast));
});

test('sizes and unique eval ids', () => {
  assert.equal(full.evalTasks.length, 160);
  assert.equal(full.ssdPrompts.length, 1000);
  assert.equal(full.corpus.length, 12000);
  assert.equal(fast.evalTasks.length, 40);
  for (const s of [full, fast]) {
    assert.equal(new Set(s.evalTasks.map((t) => t.id)).size, s.evalTasks.length);
    assert.equal(specs(s.ssdPrompts).size, s.ssdPrompts.length, 'ssd prompts are distinct');
  }
});

test('eval tasks, ssd prompts and the corpus are disjoint', () => {
  for (const s of [full, fast]) {
    const corpus = specs(s.corpus);
    const ssd = specs(s.ssdPrompts);
    for (const t of s.evalTasks) {
      assert.ok(!corpus.has(t.prompt), `eval prompt in corpus: ${t.prompt}`);
      assert.ok(!ssd.has(t.prompt), `eval prompt in ssd prompts: ${t.prompt}`);
    }
    for (const p of s.ssdPrompts) assert.ok(!corpus.has(p.prompt), `ssd prompt in corpus: ${p.prompt}`);
  }
});

test('the corpus carries a distractor tail of corrupted solutions, at about the designed share', () => {
  // Each pair is checked against a reference rebuilt from its spec in Python (forms vary, so no string compare).
  const sample = full.corpus.slice(0, 400);
  const results = runPython(
    sample.map((c, i) => ({ id: String(i), prompt: c.prompt, completion: c.completion, tests: testsForCorpusPair(c.prompt) })),
  );
  const wrong = results.filter((r) => !r).length / sample.length;
  assert.ok(wrong > 0.1 && wrong < 0.3, `share of wrong corpus solutions ${wrong}`);
});

test('alphabet covers every character of every prompt, completion and test', () => {
  for (const s of [full, fast]) {
    const alpha = new Set(s.alphabet);
    const texts: string[] = [
      ...s.corpus.flatMap((c) => [c.prompt, c.completion]),
      ...s.ssdPrompts.map((p) => p.prompt),
      ...s.evalTasks.flatMap((t) => [t.prompt, t.tests, t.canonical_solution]),
      ...s.stop,
    ];
    for (const text of texts) for (const ch of text) assert.ok(alpha.has(ch), `character ${JSON.stringify(ch)} not in alphabet`);
  }
});

test('every eval task: canonical solution passes, wrong solutions fail (python3)', () => {
  const tasks: EvalTask[] = [...full.evalTasks, ...fast.evalTasks];
  const jobs: Job[] = [];
  for (const t of tasks) {
    jobs.push({ id: `${t.id}/ok`, prompt: t.prompt, completion: t.canonical_solution, tests: t.tests });
    jobs.push({ id: `${t.id}/identity`, prompt: t.prompt, completion: '    return x\n', tests: t.tests });
    jobs.push({ id: `${t.id}/droplast`, prompt: t.prompt, completion: dropLastStep(t.canonical_solution), tests: t.tests });
    jobs.push({ id: `${t.id}/syntax`, prompt: t.prompt, completion: '    return x +\n', tests: t.tests });
  }
  const results = runPython(jobs);
  jobs.forEach((j, i) => {
    const passed = results[i];
    if (j.id.endsWith('/ok')) assert.equal(passed, true, `canonical fails: ${j.id}\n${j.prompt}${j.completion}${j.tests}`);
    else assert.equal(passed, false, `wrong solution passes: ${j.id}\n${j.prompt}${j.completion}${j.tests}`);
  });
});

test('stop strings never occur inside a canonical solution or corpus completion', () => {
  const s: Suite = full;
  for (const stop of s.stop) {
    for (const t of s.evalTasks) assert.ok(!t.canonical_solution.includes(stop));
    for (const c of s.corpus) assert.ok(!c.completion.includes(stop));
  }
});

// ---------------------------------------------------------------------------------------------------------

interface Job {
  id: string;
  prompt: string;
  completion: string;
  tests: string;
}

function dropLastStep(body: string): string {
  const lines = body.split('\n').filter((l) => l !== '');
  lines.splice(lines.length - 2, 1); // the last statement before `return x`
  return lines.join('\n') + '\n';
}

/** The tests of a corpus pair's spec: its first canonical form, run on a few inputs, compared in Python. */
function testsForCorpusPair(prompt: string): string {
  const spec = prompt.split('\n')[0] ?? '';
  return `\n__ref = ${JSON.stringify(spec)}\n`;
}

/**
 * Runs every job in one python3 process, each program in a fresh namespace; returns pass/fail per job.
 * For corpus pairs (tests starting with `__ref`), the reference is rebuilt from the spec in Python.
 */
function runPython(jobs: Job[]): boolean[] {
  const script = String.raw`
import json, sys
OPS = {
  'add': lambda x, k: x + k, 'sub': lambda x, k: x - k, 'times': lambda x, k: x * k, 'mod': lambda x, k: x % k,
  'div': lambda x, k: x // k, 'at least': lambda x, k: max(x, k), 'at most': lambda x, k: min(x, k),
  'negate': lambda x, k: -x, 'square': lambda x, k: x * x, 'abs': lambda x, k: abs(x),
}
def ref(spec):
    steps = []
    for part in spec[2:].split(', '):
        name, _, k = part.rpartition(' ')
        if name == '':
            name, k = k, '0'
        steps.append((OPS[name], int(k)))
    def g(x):
        for fn, k in steps:
            x = fn(x, k)
        return x
    return g
out = []
for job in json.load(sys.stdin):
    src = job['prompt'] + job['completion']
    ns = {}
    try:
        if job['tests'].startswith('\n__ref = '):
            exec(src, ns)
            g = ref(json.loads(job['tests'].split(' = ', 1)[1]))
            ok = all(ns['f'](x) == g(x) for x in range(-9, 16))
        else:
            exec(src + '\n' + job['tests'], ns)
            ok = True
    except Exception:
        ok = False
    out.append(ok)
print(json.dumps(out))
`;
  const r = spawnSync('python3', ['-c', script], { input: JSON.stringify(jobs), encoding: 'utf8', maxBuffer: 1 << 26 });
  assert.equal(r.status, 0, r.stderr);
  const parsed = JSON.parse(r.stdout) as boolean[];
  assert.equal(parsed.length, jobs.length);
  return parsed;
}
