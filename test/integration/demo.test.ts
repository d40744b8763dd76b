import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { CLI, ENGINE_MISSING, tempHome } from '../helpers/env.js';

function checkMeasured(m: { 'pass@1': number; ci: [number, number] }, what: string): void {
  assert.ok(m['pass@1'] >= 0 && m['pass@1'] <= 1, `${what} pass@1 in [0, 1]`);
  assert.ok(m.ci[0] <= m['pass@1'] + 1e-12 && m['pass@1'] <= m.ci[1] + 1e-12, `${what} CI brackets its value`);
}

test('`distillery demo --fast --json` runs the whole loop and a second run reuses the base model', { skip: ENGINE_MISSING, timeout: 600_000 }, () => {
  const home = tempHome();
  const env = { ...process.env, DISTILLERY_HOME: home };
  try {
    const first = spawnSync(process.execPath, [CLI, 'demo', '--fast', '--json'], { env, encoding: 'utf8' });
    assert.equal(first.status, 0, first.stderr);
    const lines = first.stdout.trim().split('\n');
    assert.equal(lines.length, 1, 'stdout holds exactly one JSON object');
    const s = JSON.parse(lines[0]!);
    checkMeasured(s.base, 'base');
    checkMeasured(s.distilled, 'distilled');
    for (const key of ['temperature', 'top_k', 'top_p', 'max_tokens', 'seed', 'stop']) assert.ok(key in s.decoding, `decoding.${key}`);
    assert.equal(s.model, 'demo-coder:2');
    assert.equal(s.base_model, 'demo-coder:1');
    assert.equal(s.base_reused, false);
    assert.ok(s.seconds > 0);
    assert.ok(s.base_grid.length >= 2);
    assert.ok(s.base_grid.some((g: { 'pass@1': number }) => g['pass@1'] === s.base_best['pass@1']));
    // The identical decoding is also a grid point, and its figure agrees with the before/after table.
    const same = s.base_grid.find((g: { temperature: number }) => g.temperature === s.decoding.temperature);
    assert.equal(same['pass@1'], s.base['pass@1']);
    assert.ok(s.filter.kept > 0 && s.filter.kept <= s.filter.total);
    assert.match(first.stderr, /train base/);

    const report = `${home}/runs/${s.run_id}/report.html`;
    assert.ok(existsSync(report), 'HTML report written');
    assert.match(readFileSync(report, 'utf8'), /<svg/);
    assert.deepEqual(JSON.parse(readFileSync(`${home}/runs/${s.run_id}/report.json`, 'utf8')).base, s.base);
    // The SSD run attached its evaluation report: base vs distilled with a paired verdict.
    const evalReport = JSON.parse(readFileSync(`${home}/runs/${s.run_id}/evaluation-report.json`, 'utf8')) as { comparisons: Array<{ verdict: string }> };
    assert.ok(evalReport.comparisons.length > 0 && evalReport.comparisons.every((c) => typeof c.verdict === 'string'), 'paired comparison with a verdict');
    assert.match(readFileSync(`${home}/runs/${s.run_id}/evaluation-report.html`, 'utf8'), /better than|no significant difference|worse than/);

    // The distilled model is in the vault with its lineage.
    const show = spawnSync(process.execPath, [CLI, 'vault', 'show', s.model, '--json'], { env, encoding: 'utf8' });
    const manifest = JSON.parse(show.stdout);
    assert.equal(manifest.lineage.parent.ref, 'demo-coder:1');
    assert.equal(manifest.lineage.run_id, s.run_id);
    assert.ok(manifest.lineage.evaluation.base, 'evaluation summary recorded');

    const second = spawnSync(process.execPath, [CLI, 'demo', '--fast', '--json'], { env, encoding: 'utf8' });
    assert.equal(second.status, 0, second.stderr);
    const s2 = JSON.parse(second.stdout);
    assert.equal(s2.base_reused, true);
    assert.deepEqual(s2.base, s.base, 'same figures from the cached run');
    const verify = spawnSync(process.execPath, [CLI, 'vault', 'verify'], { env, encoding: 'utf8' });
    assert.equal(verify.status, 0, verify.stdout + verify.stderr);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
