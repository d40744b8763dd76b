import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { CLI, ENGINE_MISSING, tempHome } from '../helpers/env.js';

type Measured = { 'pass@1': number; ci: [number, number] };
type Diff = { diff: number; ci: [number, number] };

function checkMeasured(m: Measured, what: string): void {
  assert.ok(m['pass@1'] >= 0 && m['pass@1'] <= 1, `${what} pass@1 in [0, 1]`);
  assert.ok(m.ci[0] <= m['pass@1'] + 1e-12 && m['pass@1'] <= m.ci[1] + 1e-12, `${what} CI brackets its value`);
}

function checkDiff(d: Diff, a: Measured, b: Measured, what: string): void {
  assert.ok(Math.abs(d.diff - (a['pass@1'] - b['pass@1'])) < 1e-9, `${what} is the difference of its two figures`);
  assert.ok(d.ci[0] <= d.diff + 1e-12 && d.diff <= d.ci[1] + 1e-12, `${what} CI brackets its value`);
}

test('`distillery demo --scenario refresh --fast --json` runs SDFT, the SFT baseline and both task sets', { skip: ENGINE_MISSING, timeout: 600_000 }, () => {
  const home = tempHome();
  const env = { ...process.env, DISTILLERY_HOME: home };
  try {
    const run = spawnSync(process.execPath, [CLI, 'demo', '--scenario', 'refresh', '--fast', '--json'], { env, encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    const lines = run.stdout.trim().split('\n');
    assert.equal(lines.length, 1, 'stdout holds exactly one JSON object');
    const s = JSON.parse(lines[0]!);
    assert.equal(s.scenario, 'refresh');
    checkMeasured(s.base, 'base v2');
    checkMeasured(s.distilled, 'SDFT v2');
    checkMeasured(s.retention.base, 'base retention');
    checkMeasured(s.retention.distilled, 'SDFT retention');
    checkMeasured(s.sft_baseline.v2, 'SFT v2');
    checkMeasured(s.sft_baseline.retention, 'SFT retention');
    checkDiff(s.v2_gain, s.distilled, s.base, 'v2 gain');
    checkDiff(s.retention.change, s.retention.distilled, s.retention.base, 'retention change');
    checkDiff(s.sft_baseline.retention_change, s.sft_baseline.retention, s.retention.base, 'SFT retention change');
    checkDiff(s.sdft_vs_sft.v2, s.distilled, s.sft_baseline.v2, 'SDFT - SFT on v2');
    assert.equal(s.base_model, 'refresh-coder:1');
    assert.equal(s.model, 'refresh-coder:2');
    assert.ok(s.changelog.includes('renamed'), 'the changelog is in the summary');
    assert.match(run.stderr, /train base/);
    assert.match(run.stderr, /sft baseline/);

    const dir = `${home}/runs/${s.run_id}`;
    assert.ok(existsSync(`${dir}/report.html`), 'HTML report written');
    assert.deepEqual(JSON.parse(readFileSync(`${dir}/report.json`, 'utf8')).retention, s.retention);

    // The SDFT model is in the vault with its lineage: parent, run, recipe.
    const show = spawnSync(process.execPath, [CLI, 'vault', 'show', s.model, '--json'], { env, encoding: 'utf8' });
    const manifest = JSON.parse(show.stdout);
    assert.equal(manifest.lineage.parent.ref, 'refresh-coder:1');
    assert.equal(manifest.lineage.run_id, s.run_id);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
