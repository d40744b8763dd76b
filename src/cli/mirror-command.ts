import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { UserError } from '../core/errors.js';
import { distilleryHome } from '../core/paths.js';
import { vaultLayout } from '../vault/layout.js';
import { VaultReader } from '../mirror/resolve.js';
import { DEFAULT_MIRROR_HOST, DEFAULT_MIRROR_PORT, MIRROR_TOKEN_ENV, isLoopbackHost, startMirror } from '../mirror/server.js';
import { int } from './options.js';
import { untilStopped } from '../core/listen.js';

/** `distillery mirror`: serve the vault read-only to `hf download`, huggingface_hub and llama.cpp. See docs/mirror.md. */

interface MirrorFlags {
  port: number;
  host: string;
  token?: string;
  generateToken?: boolean;
  quiet?: boolean;
}

/** llama.cpp only sends a token that looks like a Hugging Face one (hf_ + at least 34 letters/digits). */
const LLAMA_CPP_TOKEN = /^hf_[A-Za-z0-9]{34,253}$/;

export function generateMirrorToken(): string {
  return `hf_${randomBytes(20).toString('hex')}`;
}

export function registerMirrorCommand(program: Command): void {
  program
    .command('mirror')
    .description(
      'Serve the vault read-only over HTTP, speaking the Hugging Face Hub download API (point HF_ENDPOINT for ' +
        'hf download and huggingface_hub, or MODEL_ENDPOINT for llama.cpp -hf, at it) and the Ollama registry pull API ' +
        '(ollama pull --insecure HOST:PORT/distillery/NAME). Models are served as NAME, distillery/NAME and, when ' +
        'imported from a Hugging Face cache or Ollama, under their original names.',
    )
    .option('--port <port>', `port to listen on (0 = any free port)`, int, DEFAULT_MIRROR_PORT)
    .option('--host <host>', 'address to bind; anything but a loopback address requires a token', DEFAULT_MIRROR_HOST)
    .option('--token <token>', `require "Authorization: Bearer <token>" on every request (default: $${MIRROR_TOKEN_ENV}; clients send it from HF_TOKEN)`)
    .option('--generate-token', 'require a freshly generated random token, printed at start')
    .option('--quiet', 'do not log each request to stderr')
    .addHelpText(
      'after',
      `
Examples:
  distillery mirror
  HF_ENDPOINT=http://127.0.0.1:${DEFAULT_MIRROR_PORT} hf download distillery/NAME --local-dir ./NAME
  ollama pull --insecure 127.0.0.1:${DEFAULT_MIRROR_PORT}/distillery/NAME     (GGUF models)
  ${MIRROR_TOKEN_ENV}=… distillery mirror --host 0.0.0.0`,
    )
    .action(async (flags: MirrorFlags) => {
      if (!Number.isInteger(flags.port) || flags.port < 0 || flags.port > 65535) throw new UserError(`--port must be 0-65535, not ${flags.port}`);
      if (flags.token !== undefined && flags.generateToken) throw new UserError('use either --token or --generate-token, not both');
      const envToken = process.env[MIRROR_TOKEN_ENV];
      const token = flags.generateToken ? generateMirrorToken() : flags.token ?? (envToken && envToken.length > 0 ? envToken : null);
      const home = distilleryHome();
      const warn = (line: string) => process.stderr.write(`mirror: ${line}\n`);
      const mirror = await startMirror({
        home, host: flags.host, port: flags.port, token,
        log: flags.quiet ? undefined : (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`),
        warn,
      });
      process.stdout.write(startBanner(home, mirror.url, flags.host, token, flags.generateToken === true, warn));

      await untilStopped('mirror');
      await mirror.close();
    });
}

function startBanner(home: string, url: string, host: string, token: string | null, generated: boolean, warn: (line: string) => void): string {
  const repos = new VaultReader(vaultLayout(home), warn).catalog().repos();
  const lines = [`Distillery mirror serving ${home} (read-only) at ${url}`];
  if (host === '0.0.0.0' || host === '::' || host === '[::]') lines.push(`  listening on every interface: clients use this machine's address instead of ${host}`);
  else if (!isLoopbackHost(host)) lines.push(`  reachable by anyone who can reach ${host}; every request needs the token`);
  if (repos.length === 0) lines.push('  the vault is empty: add models with "distillery vault import DIR --name NAME"');
  else lines.push(`  ${repos.length} repositor${repos.length === 1 ? 'y' : 'ies'}: ${repos.slice(0, 8).map((r) => r.id).join(', ')}${repos.length > 8 ? ', …' : ''}`);
  if (generated && token) lines.push('', `Token (send as HF_TOKEN): ${token}`);
  else if (token) lines.push('', 'Every request needs the token: clients send it from HF_TOKEN.');
  if (token && !LLAMA_CPP_TOKEN.test(token)) lines.push('  note: llama.cpp only sends tokens of the form hf_<34+ letters or digits>; use --generate-token for one');

  const example = repos.find((r) => r.kind === 'name') ?? repos[0];
  const repoId = example?.id ?? 'distillery/NAME';
  const dir = example?.versions[0]?.manifest.name ?? 'NAME';
  const gguf = repos.find((r) => r.kind === 'name' && r.versions[r.versions.length - 1]!.manifest.format === 'gguf');
  const auth = token ? 'HF_TOKEN=<token> ' : '';
  lines.push(
    '',
    'Use it with:',
    `  ${auth}HF_ENDPOINT=${url} HF_HUB_DISABLE_TELEMETRY=1 hf download ${repoId} --local-dir ./${dir}`,
    `  ${auth}HF_ENDPOINT=${url} python -c "from huggingface_hub import snapshot_download; print(snapshot_download('${repoId}'))"`,
    `  ${auth}MODEL_ENDPOINT=${url}/ llama-server -hf ${gguf?.id ?? 'distillery/NAME'}    (GGUF models)`,
    ...(token ? [] : [`  ollama pull --insecure ${new URL(url).host}/${gguf?.id ?? 'distillery/NAME'}    (GGUF models; Ollama sends no token)`]),
    '  add --revision vN (or a commit id) for an older version',
    `  ${token ? `${MIRROR_TOKEN_ENV}=<token> ` : ''}distillery vault pull ${url}/${dir}    (from another Distillery vault)`,
    '',
    'Stop with Ctrl+C.',
    '',
  );
  return lines.join('\n');
}
