/**
 * Child process for pull.test.ts: pulls a model and stops dead (waiting to be SIGKILLed) once `STOP_AT`
 * bytes of the blob `SHA256` are in its partial file.
 *   node pull-child.js HOME URL SHA256 STOP_AT
 * Prints "stopped" when it reached that point, "done" if the pull finished instead.
 */
import { vaultLayout } from '../../src/vault/layout.js';
import { pullModel } from '../../src/vault/pull.js';

const [home, url, sha256, stopAt] = process.argv.slice(2);
await pullModel(vaultLayout(home!), url!, {}, {
  afterChunk: async (sha, written) => {
    if (sha === sha256 && written >= Number(stopAt)) {
      process.stdout.write('stopped\n');
      setInterval(() => {}, 1000); // keep the process alive until it is killed
      await new Promise(() => {});
    }
  },
});
process.stdout.write('done\n');
