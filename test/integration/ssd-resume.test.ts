import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, ENGINE_MISSING, STORIES, STORIES_MISSING, tempHome } from '../helpers/env.js';

const skip = STORIES_MISSING || ENGINE_MISSING;

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Python engine processes whose parent is `ppid`. */
function engineChildren(ppid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (parent === ppid && cmd.includes('distillery_engine')) out.push(Number(entry));
    } catch {
      // process ended while we looked
    }
  }
  return out;
}

test('a killed `distillery ssd` resumes training from its checkpoint and completes', { skip, timeout: 240_000 }, async () => {
  const home = tempHome();
  const env = { ...process.env, DISTILLERY_HOME: home };
  try {
    const imp = spawnSync(process.execPath, [CLI, 'vault', 'import', STORIES, '--name', 'stories'], { env, encoding: 'utf8' });
    assert.equal(imp.status, 0, imp.stderr);
    const prompts = join(home, 'prompts.jsonl');
    writeFileSync(prompts, ['Once upon a time', 'The little dog', 'Lily and Tom', 'One day'].map((p) => JSON.stringify({ prompt: p })).join('\n'));
    const args = [CLI, 'ssd', '--model', 'stories', '--prompts', prompts, '--max-tokens', '24', '--max-steps', '20',
      '--batch-size', '2', '--grad-accum', '1', '--lr', '1e-3', '--checkpoint-every', '5', '--no-retention', '--json'];

    // First attempt: kill -9 the CLI once training has written a checkpoint.
    const first = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    first.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const deadline = Date.now() + 180_000;
    let runDir: string | undefined;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      const runs = existsSync(join(home, 'runs')) ? readdirSync(join(home, 'runs')) : [];
      if (runs[0]) runDir = join(home, 'runs', runs[0]);
      const events = runDir ? join(runDir, 'train', 'events.jsonl') : '';
      if (events && existsSync(events) && readFileSync(events, 'utf8').includes('"checkpoint"')) break;
      assert.equal(first.exitCode, null, `ssd ended before training checkpointed:\n${stderr}`);
    }
    assert.ok(runDir, 'a run folder was created');
    const workers = engineChildren(first.pid!);
    assert.equal(workers.length, 1, 'one engine worker runs under the CLI');
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    // The worker must not outlive its parent (it would keep writing checkpoints into the run).
    const gone = Date.now() + 15_000;
    while (pidAlive(workers[0]!) && Date.now() < gone) await new Promise((r) => setTimeout(r, 100));
    assert.equal(pidAlive(workers[0]!), false, 'the engine worker exited with its parent');
    const record = JSON.parse(readFileSync(join(runDir, 'run.json'), 'utf8'));
    assert.equal(record.stages.train.status, 'running', 'killed during training');

    // Second attempt: the same command resumes and completes.
    const second = spawnSync(process.execPath, args, { env, encoding: 'utf8', timeout: 180_000 });
    assert.equal(second.status, 0, second.stderr);
    assert.match(second.stderr, /resuming run/);
    const result = JSON.parse(second.stdout);
    assert.equal(result.resumed, true);
    assert.equal(result.train.steps, 20);
    assert.equal(result.model, 'stories:2');
    const after = JSON.parse(readFileSync(join(runDir, 'run.json'), 'utf8'));
    assert.equal(after.stages.train.attempts, 2);
    assert.equal(after.stages.sample.attempts, 1, 'sampling was not redone');
    const events = readFileSync(join(runDir, 'train', 'events.jsonl'), 'utf8');
    assert.match(events, /resumed from/);
    const show = spawnSync(process.execPath, [CLI, 'vault', 'show', 'stories:2', '--json'], { env, encoding: 'utf8' });
    const manifest = JSON.parse(show.stdout);
    assert.equal(manifest.lineage.run_id, result.run_id);
    assert.equal(manifest.lineage.parent.ref, 'stories:1');
    assert.equal(manifest.lineage.recipe.name, 'ssd');
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
