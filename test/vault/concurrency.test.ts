import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { listModels, verifyVault } from '../../src/vault/vault.js';
import { freshHome, listTree, makeFakeModel, tempDir } from './helpers.js';

/** Runs importModel in a separate Node process (same loader flags as this one, so it works under tsx too). */
function importInChild(home: string, dir: string, name: string): Promise<number> {
  const vaultUrl = new URL('../../src/vault/vault.js', import.meta.url).href;
  const script = join(tempDir(), 'child.mjs');
  writeFileSync(script, `const v = await import(${JSON.stringify(vaultUrl)});
const m = await v.importModel(${JSON.stringify(dir)}, { name: ${JSON.stringify(name)} }, ${JSON.stringify(home)});
process.stdout.write(String(m.version));`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...process.execArgv, script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(Number(out)) : reject(new Error(`child exited ${code}`))));
  });
}

test('concurrent imports of one name from several processes get distinct versions', async () => {
  const home = freshHome();
  const src = makeFakeModel(join(tempDir(), 'fake'));
  const versions = await Promise.all([1, 2, 3, 4].map(() => importInChild(home, src, 'race')));
  assert.deepEqual([...versions].sort(), [1, 2, 3, 4]);
  assert.deepEqual(listModels('race', home).map((r) => r.version), [1, 2, 3, 4]);
  assert.equal((await verifyVault(undefined, undefined, home)).ok, true);
  assert.ok(!listTree(home).some((e) => /tmp-|\.tmp/.test(e) && !e.startsWith('blobs/tmp/')), 'no temp files left');
  assert.ok(!listTree(home).some((e) => e.startsWith('blobs/tmp/') && !e.endsWith('/')), 'no blob temp files left');
});
