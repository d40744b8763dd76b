import { readFileSync, statSync, unlinkSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { writeFileAtomicSync } from '../core/atomic.js';
import { UserError } from '../core/errors.js';
import { MAX_MANIFEST_BYTES } from './bundle-format.js';
import { queryByDigest, withIndex } from './index-db.js';
import type { VaultLayout } from './layout.js';
import { modelDigest, modelRefString, modelSize, parseManifest, type Manifest } from './manifest.js';
import { isValidModelName, validateModelName } from './names.js';
import { beginPending, livePending } from './pending.js';
import {
  IncompleteBlobError, planReceived, publishReceived, receiveBlob, removeUnreferenced, storedSize, sweepDeadTemps,
  type BlobFeed, type ReceivedBlob, type ReceivedModel,
} from './receive.js';
import { sweepStaleTemps, syncBlobDir } from './store.js';

/**
 * `distillery vault pull http://HOST:PORT/NAME[:VERSION]`: copies one model from another Distillery's mirror
 * (its native API, src/mirror/vault-api.ts) into this vault, with the guarantees of a bundle import: every
 * blob is streamed into blobs/tmp while hashed, checked against its sha256 and size, fsynced and renamed into
 * the store; the manifest is checked (its digest against its file list and against the mirror's
 * X-Distillery-Digest) and published only once every blob is durable, by the same rules as import-bundle
 * (receive.ts). A blob is downloaded into `blobs/tmp/pull-<sha256>.part`, a fixed name, so a pull that was
 * interrupted (connection cut, process killed) resumes with `Range: bytes=N-` after hashing what it has.
 */

/** Read when no token is passed (keeps it out of `ps`); the same variable `distillery mirror` reads. */
export const PULL_TOKEN_ENV = 'DISTILLERY_MIRROR_TOKEN';
const API = '/.distillery/v1';
const API_HEADER = 'x-distillery-api';
const DIGEST_HEADER = 'x-distillery-digest';
const MODEL_URL_USAGE = 'give the mirror address and the model: http://HOST:PORT/NAME or http://HOST:PORT/NAME:VERSION, e.g. http://192.168.1.20:8470/qwen3-0.6b:2';
const BASE_URL_USAGE = 'give the mirror address only: http://HOST:PORT, e.g. http://192.168.1.20:8470';
/** A connection that delivers nothing for this long is given up (and retried). */
const IDLE_TIMEOUT_MS = 60_000;
const DEFAULT_ATTEMPTS = 3;

// ---------------------------------------------------------------------------------------------- URLs

export interface MirrorModelUrl {
  /** scheme://host[:port], no trailing slash. */
  base: string;
  name: string;
  /** null: the latest version. */
  version: number | null;
}

function splitUrl(url: string, usage: string): { base: string; path: string } {
  const bad = (why: string) => new UserError(`not a mirror URL: ${JSON.stringify(url)}: ${why}`, usage);
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)(.*)$/.exec(url);
  if (!m) throw bad('it does not start with http://');
  const [, scheme = '', authority = '', rest = ''] = m;
  if (!/^https?$/i.test(scheme)) throw bad(`the scheme is ${scheme}: (only http:// and https:// are supported)`);
  if (authority.includes('@')) throw bad('user names and passwords do not go in the URL; pass --token (or set DISTILLERY_MIRROR_TOKEN)');
  if (authority === '') throw bad('it has no host');
  if (/[?#]/.test(rest)) throw bad('a query (?…) or fragment (#…) is not part of a mirror URL');
  if (/\s/.test(url)) throw bad('it contains spaces');
  let parsed: URL;
  try {
    parsed = new URL(`${scheme.toLowerCase()}://${authority}/`);
  } catch {
    throw bad(`${JSON.stringify(authority)} is not a valid host[:port]`);
  }
  return { base: `${parsed.protocol}//${parsed.host}`, path: rest };
}

/** `http://HOST:PORT/NAME[:VERSION]`, strictly: one path segment, a valid model name, a positive version. */
export function parseMirrorModelUrl(url: string): MirrorModelUrl {
  const { base, path } = splitUrl(url, MODEL_URL_USAGE);
  const bad = (why: string) => new UserError(`not a mirror model URL: ${JSON.stringify(url)}: ${why}`, MODEL_URL_USAGE);
  if (path === '' || path === '/') throw bad('it names no model');
  const segs = path.slice(1).split('/');
  if (segs.length !== 1 || segs[0] === '') throw bad(`the path must be /NAME or /NAME:VERSION (it is ${JSON.stringify(path)})`);
  const m = /^([^:]*)(?::(.*))?$/.exec(segs[0]!)!;
  const [, name = '', versionText] = m;
  if (!isValidModelName(name)) {
    throw bad(`${JSON.stringify(name)} is not a model name (lowercase letters, digits, ".", "_", "-", starting with a letter or digit)`);
  }
  let version: number | null = null;
  if (versionText !== undefined) {
    if (!/^[1-9][0-9]{0,8}$/.test(versionText)) throw bad(`the version ${JSON.stringify(versionText)} is not a positive integer`);
    version = Number(versionText);
  }
  return { base, name, version };
}

/** `http://HOST:PORT` (a trailing slash is fine): the address of a mirror, without a model. */
export function parseMirrorBaseUrl(url: string): string {
  const { base, path } = splitUrl(url, BASE_URL_USAGE);
  if (path !== '' && path !== '/') {
    throw new UserError(`not a mirror address: ${JSON.stringify(url)}: it has a path (${JSON.stringify(path)})`, BASE_URL_USAGE);
  }
  return base;
}

export function isMirrorUrl(s: string): boolean {
  return /^https?:\/\//i.test(s);
}

// ---------------------------------------------------------------------------------------------- HTTP

/** The connection broke or stalled (retried; a later run resumes from the partial file). */
export class MirrorInterruptedError extends UserError {}
/** The mirror sent bytes that are not the blob (or a manifest that is not consistent). Never retried as is. */
export class MirrorContentError extends UserError {}
/** The mirror does not have the blob (404): repair reports it as not in the source. */
export class BlobNotOnMirrorError extends UserError {}

/** A network failure while reading a response body (as opposed to a failure writing what was read). */
class BodyError extends Error {
  constructor(readonly reason: unknown) {
    super((reason as Error)?.message ?? String(reason));
  }
}

/** Talks to one mirror: bearer token, one keep-alive agent, errors turned into UserErrors naming the fix. */
export class MirrorClient {
  private readonly agent: HttpAgent;

  constructor(readonly base: string, private readonly token: string | null) {
    this.agent = base.startsWith('https:') ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
  }

  static connect(base: string, token?: string | null): MirrorClient {
    const t = token ?? process.env[PULL_TOKEN_ENV] ?? null;
    return new MirrorClient(base, t === null || t === '' ? null : t);
  }

  close(): void {
    this.agent.destroy();
  }

  /** GET `path`; answers other than 401/403 are returned (the caller reads or discards the body). */
  async get(path: string, headers: Record<string, string> = {}): Promise<IncomingMessage> {
    const url = new URL(this.base + path);
    const all: Record<string, string> = { 'User-Agent': 'distillery-pull/1', ...headers };
    if (this.token !== null) all.Authorization = `Bearer ${this.token}`;
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
      const req = send(url, { method: 'GET', headers: all, agent: this.agent }, resolve);
      req.setTimeout(IDLE_TIMEOUT_MS, () => req.destroy(Object.assign(new Error(`no data for ${IDLE_TIMEOUT_MS / 1000} s`), { code: 'ETIMEDOUT' })));
      req.on('error', (e) => reject(this.connectError(e)));
      req.end();
    });
    if (res.statusCode === 401) {
      const detail = await errorText(res);
      throw new UserError(
        this.token === null
          ? `the mirror at ${this.base} requires a token (401${detail ? `: ${detail}` : ''})`
          : `the mirror at ${this.base} refused the token (401${detail ? `: ${detail}` : ''})`,
        `pass --token TOKEN or set ${PULL_TOKEN_ENV}: the token "distillery mirror" was started with (--token, or the one --generate-token printed)`,
      );
    }
    if (res.statusCode === 403) {
      const detail = await errorText(res);
      throw new UserError(
        `the mirror at ${this.base} refused the request (403${detail ? `: ${detail}` : ''})`,
        'a mirror without a token answers only requests to localhost; start it with --token (or --generate-token) and pass the same token here',
      );
    }
    return res;
  }

  private connectError(e: Error & { code?: string }): UserError {
    const where = `the mirror at ${this.base}`;
    if (e.code === 'ECONNREFUSED') return new MirrorInterruptedError(`cannot reach ${where}: connection refused`, 'check the address and port, and that "distillery mirror" is running there');
    if (e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN') return new MirrorInterruptedError(`cannot reach ${where}: unknown host`, 'check the host name');
    if (e.code === 'ETIMEDOUT' || e.code === 'EHOSTUNREACH' || e.code === 'ENETUNREACH') return new MirrorInterruptedError(`cannot reach ${where}: ${e.message}`, 'check the network and the address');
    return new MirrorInterruptedError(`cannot reach ${where}: ${e.message}`);
  }

  /** A 404 from something that does not speak the vault API is a wrong address, not a missing model. */
  checkSpeaksApi(res: IncomingMessage, path: string): void {
    if (res.headers[API_HEADER] === undefined) {
      res.resume();
      throw new UserError(
        `${this.base} is not a Distillery mirror with the vault API (${res.statusCode} for ${path})`,
        'point at a "distillery mirror" (version with /.distillery/v1/); for the Hugging Face API use hf download with HF_ENDPOINT',
      );
    }
  }
}

async function readBody(res: IncomingMessage, max: number, what: string): Promise<Buffer> {
  const declared = Number(res.headers['content-length'] ?? NaN);
  if (declared > max) {
    res.destroy();
    throw new MirrorContentError(`${what} is ${declared} bytes (at most ${max} expected)`);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const c of res) {
      total += (c as Buffer).length;
      if (total > max) {
        res.destroy();
        throw new MirrorContentError(`${what} is larger than ${max} bytes`);
      }
      chunks.push(c as Buffer);
    }
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new MirrorInterruptedError(`the connection broke while reading ${what}: ${(e as Error).message}`, 'run the command again');
  }
  return Buffer.concat(chunks);
}

/** The `error` of a JSON error answer (or its text), short and printable. */
async function errorText(res: IncomingMessage): Promise<string> {
  let body: Buffer;
  try {
    body = await readBody(res, 64 << 10, 'an error answer');
  } catch {
    return '';
  }
  let text = body.toString('utf8');
  try {
    const v = JSON.parse(text) as { error?: unknown };
    if (typeof v.error === 'string') text = v.error;
  } catch {
    /* not JSON */
  }
  text = text.replace(/[^\x20-\x7e]/g, ' ').trim();
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

// ---------------------------------------------------------------------------------------------- blobs

export function partPath(layout: VaultLayout, sha256: string): string {
  return join(layout.blobTmpDir, `pull-${sha256}.part`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * One writer per partial file: `pull-<sha256>.lock` holds the writer's pid (written whole, by exclusive
 * link). A lock whose process is gone (a killed pull) is taken over, and its partial file resumed.
 */
function lockPart(layout: VaultLayout, sha256: string): () => void {
  const lock = join(layout.blobTmpDir, `pull-${sha256}.lock`);
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileAtomicSync(lock, `${process.pid}\n`, { exclusive: true });
      return () => {
        try {
          unlinkSync(lock);
        } catch {
          /* swept meanwhile */
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 3) throw e;
    }
    let pid = NaN;
    try {
      pid = Number(readFileSync(lock, 'utf8').trim());
    } catch {
      continue; // released meanwhile
    }
    if (Number.isSafeInteger(pid) && pid > 0 && isAlive(pid)) {
      throw new UserError(
        `blob ${sha256} is being downloaded by another Distillery process (pid ${pid})`,
        'wait for that pull or repair to finish (or stop it), then run this one again',
      );
    }
    try {
      unlinkSync(lock);
    } catch {
      /* another process took it over first; the next attempt sees its pid */
    }
  }
}

function fileSize(path: string): number | null {
  try {
    return statSync(path).size;
  } catch {
    return null;
  }
}

export interface DownloadBlobOptions {
  /** What the blob holds, for messages: `tiny:2 model.safetensors`. */
  usedBy: string;
  /** Bytes of the blob received so far (a resumed partial file's bytes included). */
  onBytes?: (bytes: number) => void;
  /** Attempts before giving up on a broken connection (default 3); each resumes from the partial file. */
  maxAttempts?: number;
  retryDelayMs?: number;
  /** Test-only: after each chunk is written. */
  afterChunk?: (written: number) => void | Promise<void>;
}

export interface DownloadedBlob extends ReceivedBlob {
  attempts: number;
}

/**
 * Downloads one blob from the mirror into the store, verified (size and sha256), fsynced and renamed over
 * any stored copy. Resumes `blobs/tmp/pull-<sha256>.part` with a Range request (hashing its bytes first);
 * a server that answers 200 instead of 206 is read from the start. A broken connection is retried
 * `maxAttempts` times, each resuming; then the partial file is kept for the next run. Content that does not
 * hash to `sha256` is refused and its partial file deleted (retried once from scratch if it was resumed: the
 * old part may have been the bad part).
 */
export async function downloadBlob(client: MirrorClient, layout: VaultLayout, sha256: string, size: number, opts: DownloadBlobOptions): Promise<DownloadedBlob> {
  await mkdir(layout.blobTmpDir, { recursive: true });
  const part = partPath(layout, sha256);
  const path = `${API}/blobs/${sha256}`;
  const maxAttempts = Math.max(1, opts.maxAttempts ?? DEFAULT_ATTEMPTS);
  const release = lockPart(layout, sha256);
  let lastError: Error | null = null;
  try {
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      if (attempt > 1) await new Promise((r) => setTimeout(r, (opts.retryDelayMs ?? 1000) * (attempt - 1)));
      let have = fileSize(part) ?? 0;
      if (have > size) {
        unlinkSync(part);
        have = 0;
      }
      let res: IncomingMessage | null = null;
      let resume = false;
      if (have < size || size === 0) {
        try {
          res = await client.get(path, have > 0 ? { Range: `bytes=${have}-` } : {});
        } catch (e) {
          if (!(e instanceof MirrorInterruptedError)) throw e;
          lastError = e;
          continue;
        }
        if (res.statusCode === 404) {
          client.checkSpeaksApi(res, path);
          const detail = await errorText(res);
          throw new BlobNotOnMirrorError(`the mirror at ${client.base} does not have blob ${sha256} (${opts.usedBy})${detail ? `: ${detail}` : ''}`);
        }
        if (res.statusCode === 416) {
          // Our partial file is not a prefix the server agrees with: start again.
          res.resume();
          if (have === 0) throw new MirrorContentError(`the mirror answered 416 (range not satisfiable) to a plain request for blob ${sha256}`);
          unlinkSync(part);
          attempt--; // not the connection's fault: start the file over
          continue;
        }
        if (res.statusCode === 206) {
          const cr = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(res.headers['content-range'] ?? ''));
          if (!cr || Number(cr[1]) !== have || Number(cr[2]) !== size - 1 || Number(cr[3]) !== size) {
            res.destroy();
            unlinkSync(part);
            throw new MirrorContentError(
              `the mirror answered a resume of blob ${sha256} from byte ${have} with ${JSON.stringify(res.headers['content-range'] ?? null)} (expected bytes ${have}-${size - 1}/${size})`,
              'run the command again: it starts this file over',
            );
          }
          resume = true;
        } else if (res.statusCode !== 200) {
          const detail = await errorText(res);
          throw new UserError(
            `the mirror at ${client.base} could not send blob ${sha256} (${opts.usedBy}): ${res.statusCode}${detail ? ` ${detail}` : ''}`,
            res.statusCode === 500 ? 'the model is damaged on the mirror: run "distillery vault verify" (and "vault repair") there' : undefined,
          );
        }
      } else {
        resume = true; // the whole blob is already in the partial file: only its hash is left to check
      }
      const response = res;
      const feed: BlobFeed = async (consume) => {
        if (response === null) return;
        const it = response[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
        let done = false;
        try {
          for (;;) {
            let r: IteratorResult<Buffer>;
            try {
              r = await it.next();
            } catch (e) {
              throw new BodyError(e);
            }
            if (r.done) {
              done = true;
              return;
            }
            await consume(r.value);
          }
        } finally {
          if (!done) response.destroy();
        }
      };
      let resumedFrom = resume ? have : 0;
      try {
        const got = await receiveBlob(layout, sha256, size, feed, {
          tmp: part,
          resume,
          keepPartial: true,
          onChunk: async (written) => {
            opts.onBytes?.(written);
            await opts.afterChunk?.(written);
          },
          mismatch: ({ actualSha256, size: n }) =>
            new MirrorContentError(
              actualSha256 === null
                ? `the mirror sent more than the ${size} bytes of blob ${sha256} (${opts.usedBy})`
                : `the mirror sent blob ${sha256} (${opts.usedBy}) with sha256 ${actualSha256}${resumedFrom > 0 ? ` (resumed at byte ${resumedFrom})` : ''}: its content was changed or corrupted on the way (${n} bytes)`,
              'nothing was added for this model; run "distillery vault verify" on the mirror, then pull again',
            ),
        });
        return { ...got, attempts: attempt };
      } catch (e) {
        if (e instanceof MirrorContentError) {
          // A resumed file may have been the damaged part (e.g. written before a power cut): one fresh try.
          if (resumedFrom > 0 && attempt < maxAttempts) {
            lastError = e;
            resumedFrom = 0;
            continue;
          }
          throw e;
        }
        if (e instanceof BodyError || e instanceof IncompleteBlobError) {
          lastError = e;
          continue;
        }
        throw e;
      }
    }
    const got = fileSize(part) ?? 0;
    throw new MirrorInterruptedError(
      `downloading blob ${sha256} (${opts.usedBy}) from ${client.base} failed after ${maxAttempts} attempt(s): ${lastError?.message ?? 'interrupted'} (${got} of ${size} bytes kept)`,
      'run the same command again: it resumes where it stopped',
    );
  } finally {
    release();
  }
}

// ---------------------------------------------------------------------------------------------- pull

export interface PullProgress {
  /** Bytes received of the blobs this pull downloads (resumed bytes count as received). */
  bytesDone: number;
  bytesTotal: number;
  /** The file being downloaded (its first path in the manifest). */
  file: string;
}

export interface PullOptions {
  /** Store under this name (default: the model's own name). */
  as?: string;
  /** Bearer token; default $DISTILLERY_MIRROR_TOKEN. */
  token?: string;
  onProgress?: (p: PullProgress) => void;
}

/** Test-only knobs. */
export interface PullHooks {
  maxAttempts?: number;
  retryDelayMs?: number;
  afterChunk?: (sha256: string, written: number) => void | Promise<void>;
}

export interface PullParent {
  /** The parent as the model's lineage names it, and its digest. */
  ref: string;
  digest: string;
  /** NAME:VERSION of a model with that digest in this vault, if any. */
  local: string | null;
  /** NAME:VERSION of a model with that digest on the mirror, if any (looked up only when not local). */
  onMirror: string | null;
  /** How to get it, when it is missing here and the mirror has it. */
  command: string | null;
}

export interface PullResult {
  /** The mirror's address. */
  mirror: string;
  model: ReceivedModel;
  files: number;
  /** Distinct blobs downloaded, already stored (skipped), bytes received now, bytes a partial file already had. */
  blobsDownloaded: number;
  blobsReused: number;
  bytesDownloaded: number;
  bytesResumed: number;
  seconds: number;
  bytesPerSecond: number;
  /** The lineage parent, when the model has one. */
  parent: PullParent | null;
}

const elapsed = (start: bigint): number => Number(process.hrtime.bigint() - start) / 1e9;

/** Fetches and checks the manifest: its digest matches its file list and the mirror's X-Distillery-Digest. */
async function fetchManifest(client: MirrorClient, url: MirrorModelUrl): Promise<{ manifest: Manifest; bytes: Buffer }> {
  const what = `${url.name}${url.version === null ? '' : `:${url.version}`}`;
  const path = `${API}/models/${url.name}${url.version === null ? '' : `/${url.version}`}`;
  const res = await client.get(path);
  if (res.statusCode !== 200) {
    client.checkSpeaksApi(res, path);
    const detail = await errorText(res);
    if (res.statusCode === 404) {
      const names = await listRemote(client).then((l) => [...new Set(l.map((m) => m.name))], () => []);
      throw new UserError(
        `the mirror at ${client.base} has no model ${what}${detail ? ` (${detail})` : ''}`,
        names.length > 0 ? `models there: ${names.join(', ')}` : 'the mirror\'s vault is empty',
      );
    }
    throw new UserError(`the mirror at ${client.base} could not send the manifest of ${what}: ${res.statusCode}${detail ? ` ${detail}` : ''}`);
  }
  const announced = res.headers[DIGEST_HEADER];
  const bytes = await readBody(res, MAX_MANIFEST_BYTES, `the manifest of ${what}`);
  const where = `${client.base}/${what}`;
  let m: Manifest;
  try {
    m = parseManifest(bytes.toString('utf8'), where);
  } catch (e) {
    throw new MirrorContentError((e as Error).message, 'the manifest was damaged on the mirror or on the way: run "distillery vault verify" there');
  }
  if (m.name !== url.name || (url.version !== null && m.version !== url.version)) {
    throw new MirrorContentError(`${where}: the mirror sent the manifest of ${modelRefString(m)}`);
  }
  if (modelDigest(m.files) !== m.digest) {
    throw new MirrorContentError(`${where}: the manifest's digest does not match its file list: it was changed or corrupted`, 'run "distillery vault verify" on the mirror');
  }
  if (announced !== m.digest) {
    throw new MirrorContentError(`${where}: the manifest has digest ${m.digest}, but the mirror announced ${JSON.stringify(announced ?? null)}: it was changed on the way`);
  }
  const sizes = new Map<string, number>();
  for (const f of m.files) {
    const s = sizes.get(f.sha256);
    if (s !== undefined && s !== f.size) throw new MirrorContentError(`${where}: the manifest lists blob ${f.sha256} with two sizes (${s} and ${f.size})`);
    sizes.set(f.sha256, f.size);
  }
  return { manifest: m, bytes };
}

interface RemoteModel {
  name: string;
  version: number;
  digest: string;
}

async function listRemote(client: MirrorClient): Promise<RemoteModel[]> {
  const res = await client.get(`${API}/models`);
  if (res.statusCode !== 200) {
    res.resume();
    return [];
  }
  const v = JSON.parse((await readBody(res, 64 << 20, 'the model list')).toString('utf8')) as unknown;
  if (!Array.isArray(v)) return [];
  return v.filter((x): x is RemoteModel => typeof x === 'object' && x !== null && typeof x.name === 'string' && typeof x.digest === 'string' && Number.isSafeInteger(x.version));
}

/** Where the lineage parent is: here, on the mirror (with the command to pull it), or nowhere known. */
async function findParent(layout: VaultLayout, client: MirrorClient, m: Manifest): Promise<PullParent | null> {
  if (!m.lineage) return null;
  const { ref, digest } = m.lineage.parent;
  let local: string | null = null;
  try {
    const rows = withIndex(layout, (db) => queryByDigest(db, digest));
    if (rows.length > 0) local = `${rows[0]!.name}:${rows[0]!.version}`;
  } catch {
    /* no index: treated as not present */
  }
  let onMirror: string | null = null;
  if (local === null) {
    try {
      const hit = (await listRemote(client)).find((r) => r.digest === digest);
      if (hit) onMirror = `${hit.name}:${hit.version}`;
    } catch {
      /* the hint is optional */
    }
  }
  return { ref, digest, local, onMirror, command: onMirror === null ? null : `distillery vault pull ${client.base}/${onMirror}` };
}

/**
 * Pulls one model from another Distillery's mirror into this vault. Nothing becomes visible until every blob
 * is verified and durable. A refused transfer (content that does not match) leaves the vault as it was; an
 * interrupted one (network) keeps the blobs it stored and the partial file, so running it again resumes.
 */
export async function pullModel(layout: VaultLayout, url: string, opts: PullOptions = {}, hooks: PullHooks = {}): Promise<PullResult> {
  const start = process.hrtime.bigint();
  const target = parseMirrorModelUrl(url);
  const as = opts.as === undefined ? undefined : validateModelName(opts.as);
  const client = MirrorClient.connect(target.base, opts.token);
  try {
    const { manifest, bytes } = await fetchManifest(client, target);
    const blobs = new Map<string, { size: number; usedBy: string[] }>();
    for (const f of manifest.files) {
      const b = blobs.get(f.sha256) ?? { size: f.size, usedBy: [] };
      b.usedBy.push(f.path);
      blobs.set(f.sha256, b);
    }
    const [plan] = planReceived(layout, [{ name: manifest.name, version: manifest.version, digest: manifest.digest, bytes: modelSize(manifest) }], as);
    const result = (model: ReceivedModel, downloaded: number, reused: number, bytesDownloaded: number, bytesResumed: number, parent: PullParent | null): PullResult => {
      const seconds = elapsed(start);
      return {
        mirror: client.base, model, files: manifest.files.length, blobsDownloaded: downloaded, blobsReused: reused,
        bytesDownloaded, bytesResumed, seconds, bytesPerSecond: seconds > 0 ? bytesDownloaded / seconds : 0, parent,
      };
    };
    if (plan!.action === 'present') {
      const model = publishReceived(layout, plan!, { manifest, bytes }, () => manifest.source);
      return result(model, 0, blobs.size, 0, 0, await findParent(layout, client, manifest));
    }

    sweepStaleTemps(layout);
    sweepDeadTemps(layout);
    livePending(layout, true); // drops markers of transfers that were killed (they protect nothing)
    const pending = beginPending(layout, `pull ${client.base}/${modelRefString(manifest)}`);
    const created = new Set<string>();
    let keepBlobs = false;
    try {
      const todo = [...blobs].filter(([sha256, b]) => storedSize(layout, sha256) !== b.size);
      const bytesTotal = todo.reduce((s, [, b]) => s + b.size, 0);
      let finished = 0;
      let downloaded = 0;
      let resumed = 0;
      for (const [sha256, b] of todo) {
        const file = b.usedBy[0]!;
        const progress = (n: number) => opts.onProgress?.({ bytesDone: finished + n, bytesTotal, file });
        progress(0);
        const got = await downloadBlob(client, layout, sha256, b.size, {
          usedBy: `${modelRefString(manifest)} ${b.usedBy.join(', ')}`,
          onBytes: progress,
          maxAttempts: hooks.maxAttempts,
          retryDelayMs: hooks.retryDelayMs,
          afterChunk: hooks.afterChunk ? (w) => hooks.afterChunk!(sha256, w) : undefined,
        });
        if (got.created) created.add(sha256);
        finished += b.size;
        downloaded += got.bytes;
        resumed += got.resumedFrom;
        progress(0);
      }
      await syncBlobDir(layout); // blobs durable before the manifest can point at them
      for (const [sha256, b] of blobs) {
        if (storedSize(layout, sha256) !== b.size) {
          keepBlobs = true;
          throw new UserError(`blob ${sha256} disappeared from the store during the pull (a concurrent "vault gc" or failed import removed it)`, 'run the pull again: it resumes where it stopped');
        }
      }
      const model = publishReceived(layout, plan!, { manifest, bytes }, (m) => ({
        kind: 'mirror', url: client.base, original: modelRefString(m), original_source: m.source,
      }));
      return result(model, todo.length, blobs.size - todo.length, downloaded, resumed, await findParent(layout, client, manifest));
    } catch (e) {
      // A broken connection keeps what was stored (verified blobs, the partial file) for the next run;
      // anything else leaves the vault as it was.
      if (!keepBlobs && !(e instanceof MirrorInterruptedError)) removeUnreferenced(layout, created);
      throw e;
    } finally {
      pending.end();
    }
  } finally {
    client.close();
  }
}
