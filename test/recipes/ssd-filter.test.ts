import { test } from 'node:test';
import assert from 'node:assert/strict';
import { filterSamples, isStub, DEFAULT_FILTER } from '../../src/recipes/ssd-filter.js';

test('stubs are recognised by content, one-line code is not a stub', () => {
  assert.equal(isStub('    pass\n'), true);
  assert.equal(isStub('```python\n# YOUR CODE HERE\n```'), true);
  assert.equal(isStub('raise NotImplementedError("later")'), true);
  assert.equal(isStub('    return (x+3)*2\n'), false);
  assert.equal(isStub('x = 1\npass'), false);
  assert.equal(isStub(''), false); // empty is counted as empty, not stub
});

test('filter drops empty and stub outputs and counts each reason', () => {
  const samples = ['', '   \n', 'pass', 'return x+1', 'x += 2\nreturn x'].map((completion, i) => ({ completion, i }));
  const { kept, stats } = filterSamples(samples, DEFAULT_FILTER);
  assert.deepEqual(kept.map((s) => s.i), [3, 4]);
  assert.deepEqual(stats, { total: 5, empty: 2, stub: 1, shortest: 0, kept: 2 });
});

test('drop_shortest_pct removes the shortest outputs and keeps order', () => {
  const samples = ['aaaa', 'a', 'aaaaaaa', 'aa', 'aaaaa', 'aaa', 'aaaaaaaaa', 'aaaaaa', 'aaaaaaaa', 'aaaaaaaaaa'].map(
    (completion) => ({ completion }),
  );
  const { kept, stats } = filterSamples(samples, { ...DEFAULT_FILTER, drop_shortest_pct: 20 });
  assert.equal(stats.shortest, 2);
  assert.deepEqual(
    kept.map((s) => s.completion.length),
    [4, 7, 5, 3, 9, 6, 8, 10],
  );
});

test('drop_stubs off keeps stubs', () => {
  const { stats } = filterSamples([{ completion: 'pass' }], { ...DEFAULT_FILTER, drop_stubs: false });
  assert.equal(stats.kept, 1);
});
