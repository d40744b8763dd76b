/**
 * Child process for crash.test.ts: runs one vault operation so the test can SIGKILL it at a random moment.
 *   node crash-child.js import HOME DIR NAME      import a model folder
 *   node crash-child.js gc HOME                   collect garbage
 *   node crash-child.js import-bundle HOME FILE   import a bundle
 * Prints "started" when the operation begins, "done" when it finished.
 */
import { collectGarbage, importModel } from '../../src/vault/vault.js';
import { importBundle } from '../../src/vault/bundle.js';
import { vaultLayout } from '../../src/vault/layout.js';

const [op, home, a, b] = process.argv.slice(2);
process.stdout.write('started\n');
if (op === 'import') await importModel(a!, { name: b! }, home);
else if (op === 'gc') collectGarbage({}, home);
else if (op === 'import-bundle') await importBundle(vaultLayout(home), a!);
else throw new Error(`unknown operation ${op}`);
process.stdout.write('done\n');
