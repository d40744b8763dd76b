import { createHash, timingSafeEqual } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { UserError } from '../core/errors.js';
import { distilleryHome } from '../core/paths.js';
import { blobPath, vaultLayout, type VaultLayout } from '../vault/layout.js';
import { VaultReader, type Catalog } from './resolve.js';
import { hfModule } from './hf-api.js';
import { ollamaModule } from './ollama-api.js';
import { vaultApiModule } from './vault-api.js';
import { listen, urlHost } from '../core/listen.js';

/**
 * `distillery mirror`: a read-only HTTP server over the vault. This file is the protocol-neutral part:
 * binding, authentication, request parsing, logging, limits, and the one way a file's bytes ever leave the
 * vault (serveBlob: manifest entry → blob sha256 → blob path). Protocols (the Hugging Face Hub API in
 * hf-api.ts; an Ollama registry later) are modules tried in order; the first that claims a request answers it.
 */

export const DEFAULT_MIRROR_PORT = 8470;
export const DEFAULT_MIRROR_HOST = '127.0.0.1';
/** Read when no token is passed explicitly (keeps the token out of `ps` output). */
export const MIRROR_TOKEN_ENV = 'DISTILLERY_MIRROR_TOKEN';
export const MIN_TOKEN_LENGTH = 16;

const MAX_URL_LENGTH = 8192;
const MAX_CONNECTIONS = 256;
/** A connection that moves no bytes for this long is closed (a stalled downloader must not hold a file open forever). */
const IDLE_SOCKET_MS = 120_000;
const STREAM_CHUNK = 1 << 20;

export interface MirrorOptions {
  /** DISTILLERY_HOME to serve (default: the current one). */
  home?: string;
  /** Address to bind (default 127.0.0.1). Anything but a loopback address requires `token`. */
  host?: string;
  /** Port (default 8470); 0 picks a free one. */
  port?: number;
  /** Bearer token required on every request; null/undefined = no authentication (loopback only). */
  token?: string | null;
  /** One line per request (method, path, status, bytes, ms). Default: none. */
  log?: (line: string) => void;
  /** Problems worth telling the operator about (damaged blobs, unreadable manifests, internal errors). */
  warn?: (line: string) => void;
  /** Entries per page of tree listings (default 10000; llama.cpp does not follow pagination links). */
  treePageSize?: number;
  /** Test-only fault injection. */
  testHooks?: MirrorTestHooks;
}

export interface MirrorTestHooks {
  /** Called before a full (200) file body is sent; a number cuts the connection after that many bytes. */
  cutBodyAfter?: (label: string) => number | undefined;
}

export interface MirrorHandle {
  /** e.g. http://127.0.0.1:8470 */
  url: string;
  host: string;
  port: number;
  close(): Promise<void>;
}

/** A parsed request, as protocol modules see it. */
export interface MirrorRequest {
  method: 'GET' | 'HEAD';
  /** The raw path (no query), exactly as received. */
  rawPath: string;
  /** The path split on '/' and then percent-decoded segment by segment (so a decoded segment may hold '/'). */
  segments: string[];
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  /** Bytes of body written so far (for the log line). */
  state: { bytes: number };
}

export interface MirrorContext {
  layout: VaultLayout;
  /** The vault as of this request (read once per request, on first use). */
  catalog(): Catalog;
  /** Absolute base URL for links (pagination), from the Host the client used. */
  baseUrl: string;
  treePageSize: number;
  warn(line: string): void;
  serveBlob(req: MirrorRequest, res: ServerResponse, spec: BlobSpec): Promise<void>;
}

export interface ProtocolModule {
  name: string;
  /** Answers the request and returns true, or returns false to let the next module try. */
  handle(req: MirrorRequest, res: ServerResponse, ctx: MirrorContext): Promise<boolean>;
}

export interface BlobSpec {
  sha256: string;
  size: number;
  /** Protocol headers for every answer about this file (ETag, X-Repo-Commit, …), including 416. */
  headers: Record<string, string>;
  /** The strong ETag value as sent (with quotes), for If-Range. */
  etag: string | null;
  /** What the file is, for messages: `tiny:2 model.safetensors`. */
  label: string;
  /** The vault reference to verify when the blob is damaged, e.g. `tiny:2`. */
  ref: string;
  contentType?: string;
  /** Extra headers for 5xx answers (protocol error codes). */
  errorHeaders?: Record<string, string>;
}

/** Protocol modules in the order they are tried (a function, so the import cycle with the modules is harmless). */
function protocolModules(): ProtocolModule[] {
  return [vaultApiModule, hfModule, ollamaModule];
}

export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Checks the token and host combination; throws a UserError naming the fix. */
export function checkMirrorSecurity(host: string, token: string | null | undefined): void {
  if (token !== null && token !== undefined) {
    if (token.length < MIN_TOKEN_LENGTH) throw new UserError(`the mirror token is too short (${token.length} characters; at least ${MIN_TOKEN_LENGTH})`, 'use --generate-token for a random one');
    if (!/^[\x21-\x7e]+$/.test(token)) throw new UserError('the mirror token must be printable ASCII without spaces');
  } else if (!isLoopbackHost(host)) {
    throw new UserError(
      `refusing to serve the vault on ${host} without a token: anyone who can reach that address could download every model`,
      `pass --token (or set ${MIRROR_TOKEN_ENV}), or --generate-token; or bind 127.0.0.1`,
    );
  }
}

export async function startMirror(opts: MirrorOptions = {}): Promise<MirrorHandle> {
  const host = opts.host ?? DEFAULT_MIRROR_HOST;
  const port = opts.port ?? DEFAULT_MIRROR_PORT;
  const token = opts.token ?? null;
  checkMirrorSecurity(host, token);
  const layout = vaultLayout(opts.home ?? distilleryHome());
  const log = opts.log ?? (() => {});
  const warn = opts.warn ?? (() => {});
  const reader = new VaultReader(layout, warn);
  const treePageSize = Math.max(1, opts.treePageSize ?? 10_000);
  const tokenDigest = token === null ? null : createHash('sha256').update(token).digest();

  let boundAddress = host;
  const server: Server = createServer({ requestTimeout: 60_000, headersTimeout: 30_000 }, (req, res) => {
    void handleRequest(req, res, {
      layout, reader, log, warn, tokenDigest, host, treePageSize, testHooks: opts.testHooks,
      bound: () => boundAddress,
    });
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.setTimeout(IDLE_SOCKET_MS, (socket) => socket.destroy());

  const addr = await listen(server, host, port);
  boundAddress = `${addr.address.includes(':') ? `[${addr.address}]` : addr.address}:${addr.port}`;
  let closed: Promise<void> | null = null;
  return {
    url: `http://${urlHost(host)}:${addr.port}`,
    host,
    port: addr.port,
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
  };
}

interface ServerState {
  layout: VaultLayout;
  reader: VaultReader;
  log: (line: string) => void;
  warn: (line: string) => void;
  tokenDigest: Buffer | null;
  host: string;
  treePageSize: number;
  testHooks: MirrorTestHooks | undefined;
  bound: () => string;
}

async function handleRequest(req: IncomingMessage, res: ServerResponse, s: ServerState): Promise<void> {
  const started = performance.now();
  const state = { bytes: 0 };
  const rawUrl = req.url ?? '';
  res.on('close', () => {
    const ms = Math.round(performance.now() - started);
    const aborted = res.writableFinished ? '' : ' aborted';
    s.log(`${req.method ?? '?'} ${printable(rawUrl, 300)} ${res.statusCode} ${state.bytes}B ${ms}ms${aborted}`);
  });
  // Nothing here reads a request body; discard whatever a client sends.
  req.resume();
  // For answers given before the request is parsed (counted in the log; no body for HEAD).
  const early = { method: req.method === 'HEAD' ? ('HEAD' as const) : ('GET' as const), state };
  try {
    if (!hostAllowed(req.headers.host, s)) {
      sendError(early, res, 403, 'this mirror only answers requests addressed to localhost/127.0.0.1 (protection against DNS rebinding); start it with a token to allow other names');
      return;
    }
    if (s.tokenDigest !== null && !tokenMatches(req.headers.authorization, s.tokenDigest)) {
      sendError(early, res, 401, 'a valid token is required: send "Authorization: Bearer <token>" (HF_TOKEN for huggingface_hub and llama.cpp)', {
        'WWW-Authenticate': 'Bearer realm="distillery-mirror"',
        // huggingface_hub maps other 401s on repo URLs to RepositoryNotFoundError; this message keeps it a 401.
        'X-Error-Message': 'Invalid credentials in Authorization header',
      });
      return;
    }
    const method = req.method;
    if (method !== 'GET' && method !== 'HEAD') {
      sendError(early, res, 405, `method ${printable(method ?? '', 20)} not allowed: the mirror is read-only`, { Allow: 'GET, HEAD' });
      return;
    }
    if (rawUrl.length > MAX_URL_LENGTH) {
      sendError(early, res, 414, 'request URL too long');
      return;
    }
    if (!rawUrl.startsWith('/')) {
      sendError(early, res, 400, 'bad request target');
      return;
    }
    const q = rawUrl.indexOf('?');
    const rawPath = q === -1 ? rawUrl : rawUrl.slice(0, q);
    let segments: string[];
    try {
      segments = rawPath.slice(1).split('/').map((seg) => decodeURIComponent(seg));
    } catch {
      sendError(early, res, 400, 'malformed percent-encoding in the request path');
      return;
    }
    const request: MirrorRequest = {
      method, rawPath, segments, query: new URLSearchParams(q === -1 ? '' : rawUrl.slice(q + 1)), headers: req.headers, state,
    };
    let catalog: Catalog | null = null;
    const ctx: MirrorContext = {
      layout: s.layout,
      catalog: () => (catalog ??= s.reader.catalog()),
      baseUrl: `http://${safeHost(req.headers.host) ?? s.bound()}`,
      treePageSize: s.treePageSize,
      warn: s.warn,
      serveBlob: (r, out, spec) => serveBlob(r, out, spec, s),
    };
    for (const m of protocolModules()) {
      if (await m.handle(request, res, ctx)) return;
    }
    if (rawPath === '/') {
      sendText(request, res, 200, rootPage(ctx));
      return;
    }
    sendError(request, res, 404, `nothing here: ${printable(rawPath, 200)}`);
  } catch (e) {
    s.warn(`internal error answering ${req.method} ${printable(rawUrl, 300)}: ${(e as Error)?.stack ?? String(e)}`);
    if (res.headersSent) res.destroy();
    else sendError(early, res, 500, `internal error: ${(e as Error)?.message ?? String(e)}`);
  }
}

function tokenMatches(header: string | undefined, expected: Buffer): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  // Compare fixed-length digests so neither the length nor the content leaks through timing.
  const got = createHash('sha256').update(m?.[1] ?? '').digest();
  return timingSafeEqual(got, expected) && m !== null;
}

function hostAllowed(hostHeader: string | undefined, s: ServerState): boolean {
  if (s.tokenDigest !== null || hostHeader === undefined) return true;
  const name = hostName(hostHeader);
  return name !== null && (isLoopbackHost(name) || name.toLowerCase() === s.host.toLowerCase().replace(/^\[(.*)\]$/, '$1'));
}

/** `example:8470` → `example`, `[::1]:8470` → `::1`; null when it is not a plausible host. */
function hostName(hostHeader: string): string | null {
  const h = safeHost(hostHeader);
  if (h === null) return null;
  const v6 = /^\[([0-9a-fA-F:.]+)\](?::\d+)?$/.exec(h);
  if (v6) return v6[1]!;
  return h.replace(/:\d+$/, '');
}

function safeHost(hostHeader: string | undefined): string | null {
  return hostHeader !== undefined && /^[A-Za-z0-9.\-:[\]]{1,255}$/.test(hostHeader) ? hostHeader : null;
}

/** Control characters and non-ASCII escaped, so a request line can't forge log lines or break a header. */
export function printable(s: string, max: number): string {
  const out = s.replace(/[^\x20-\x7e]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return out.length > max ? `${out.slice(0, max)}…` : out;
}

function headerSafe(s: string): string {
  return printable(s, 1000).replace(/…$/, '...');
}

/** Sends a small in-memory body with its headers; HEAD gets the same headers and no body. */
export function sendBody(req: Pick<MirrorRequest, 'method' | 'state'> | null, res: ServerResponse, status: number, body: Buffer, headers: Record<string, string>): void {
  res.statusCode = status;
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.setHeader('Content-Length', String(body.length));
  if (req?.method === 'HEAD') {
    res.end();
    return;
  }
  if (req) req.state.bytes += body.length;
  res.end(body);
}

/** A JSON answer. */
export function sendJson(req: Pick<MirrorRequest, 'method' | 'state'> | null, res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  sendBody(req, res, status, Buffer.from(JSON.stringify(body), 'utf8'), { ...headers, 'Content-Type': 'application/json; charset=utf-8' });
}

function sendText(req: MirrorRequest, res: ServerResponse, status: number, text: string): void {
  sendBody(req, res, status, Buffer.from(text, 'utf8'), { 'Content-Type': 'text/plain; charset=utf-8' });
}

/** What a person opening the mirror's address sees: the repositories and how to download them. */
function rootPage(ctx: MirrorContext): string {
  const repos = ctx.catalog().repos();
  const lines = ['Distillery mirror (read-only): the vault served over the Hugging Face Hub download API.', ''];
  if (repos.length === 0) lines.push('The vault is empty.');
  else {
    lines.push('Repositories:');
    for (const r of repos) {
      const latest = r.versions[r.versions.length - 1]!.manifest;
      lines.push(`  ${r.id}  (${r.kind === 'name' ? `also ${latest.name}; ${r.versions.length} version(s)` : `imported, served from ${latest.name}:${latest.version}`})`);
    }
    lines.push('', 'Download with:', `  HF_ENDPOINT=${ctx.baseUrl} hf download ${repos[0]!.id} --local-dir ./${repos[0]!.versions[0]!.manifest.name}`);
  }
  return lines.join('\n') + '\n';
}

/** An error as the Hub sends them: `{"error": message}`, with the message also in X-Error-Message (HEAD has no body). */
export function sendError(req: Pick<MirrorRequest, 'method' | 'state'> | null, res: ServerResponse, status: number, message: string, headers: Record<string, string> = {}): void {
  sendJson(req, res, status, { error: message }, { 'X-Error-Message': headerSafe(message), ...headers });
}

export type ParsedRange = { kind: 'none' } | { kind: 'range'; start: number; end: number } | { kind: 'unsatisfiable' };

/**
 * A single `bytes=` range against a file of `size` bytes (RFC 9110 §14). Multiple ranges and malformed
 * headers are ignored (the whole file is sent), which the RFC allows.
 */
export function parseRange(header: string | undefined, size: number): ParsedRange {
  if (header === undefined) return { kind: 'none' };
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return { kind: 'none' };
  const [, a = '', b = ''] = m;
  if (a === '' && b === '') return { kind: 'none' };
  const num = (s: string) => (s.length > 15 ? Number.MAX_SAFE_INTEGER : Number(s));
  if (a === '') {
    const n = num(b);
    if (n === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'range', start: Math.max(0, size - n), end: size - 1 };
  }
  const start = num(a);
  const last = b === '' ? Number.MAX_SAFE_INTEGER : num(b);
  if (last < start) return { kind: 'none' };
  if (start >= size) return { kind: 'unsatisfiable' };
  return { kind: 'range', start, end: Math.min(last, size - 1) };
}

/**
 * Sends a blob, found only by its sha256 from a manifest entry. Before any byte goes out the blob's size is
 * checked against the manifest (a full re-hash is `vault verify`'s job); a missing or wrong-sized blob is a
 * 500 naming the model, never silently bad bytes. Streams from one open descriptor, so what was checked is
 * what is read; a client that goes away stops the read.
 */
async function serveBlob(req: MirrorRequest, res: ServerResponse, spec: BlobSpec, s: ServerState): Promise<void> {
  const damaged = (why: string) => {
    const message = `${spec.label} cannot be served: its vault blob ${why}; the model is damaged (run "distillery vault verify ${spec.ref}"; "distillery vault repair --from BUNDLE|URL" or re-importing a good copy repairs it)`;
    s.warn(message);
    sendError(req, res, 500, message, spec.errorHeaders ?? {});
  };
  let fh: FileHandle;
  try {
    fh = await open(blobPath(s.layout, spec.sha256), 'r');
  } catch (e) {
    damaged((e as NodeJS.ErrnoException).code === 'ENOENT' ? 'is missing' : `cannot be opened (${(e as Error).message})`);
    return;
  }
  let handedOff = false;
  try {
    const st = await fh.stat();
    if (!st.isFile()) return damaged('is not a regular file');
    if (st.size !== spec.size) return damaged(`has ${st.size} bytes where the manifest says ${spec.size}`);

    let range = parseRange(req.headers.range, spec.size);
    const ifRange = req.headers['if-range'];
    if (range.kind !== 'none' && ifRange !== undefined && ifRange !== spec.etag) range = { kind: 'none' };

    for (const [k, v] of Object.entries(spec.headers)) res.setHeader(k, v);
    res.setHeader('Accept-Ranges', 'bytes');
    if (range.kind === 'unsatisfiable') {
      sendError(req, res, 416, `range ${printable(req.headers.range ?? '', 100)} is outside the file (${spec.size} bytes)`, { 'Content-Range': `bytes */${spec.size}` });
      return;
    }
    const start = range.kind === 'range' ? range.start : 0;
    const end = range.kind === 'range' ? range.end : spec.size - 1;
    const length = spec.size === 0 ? 0 : end - start + 1;
    res.statusCode = range.kind === 'range' ? 206 : 200;
    if (range.kind === 'range') res.setHeader('Content-Range', `bytes ${start}-${end}/${spec.size}`);
    res.setHeader('Content-Type', spec.contentType ?? 'application/octet-stream');
    res.setHeader('Content-Length', String(length));
    if (req.method === 'HEAD' || length === 0) {
      res.end();
      return;
    }
    const cut = res.statusCode === 200 ? s.testHooks?.cutBodyAfter?.(spec.label) : undefined;
    handedOff = true;
    await streamRange(fh, res, start, end, length, req.state, cut, (line) => s.warn(`${spec.label}: ${line}`));
  } finally {
    if (!handedOff) await fh.close().catch(() => {});
  }
}

function streamRange(
  fh: FileHandle, res: ServerResponse, start: number, end: number, length: number, state: { bytes: number },
  cut: number | undefined, warn: (line: string) => void,
): Promise<void> {
  return new Promise<void>((resolve) => {
    const stream = fh.createReadStream({ start, end, highWaterMark: STREAM_CHUNK, autoClose: true });
    let sent = 0;
    let settled = false;
    const settle = () => {
      if (settled) return;
      settled = true;
      resolve();
    };
    stream.on('data', (chunk: string | Buffer) => {
      let buf = chunk as Buffer;
      if (cut !== undefined && sent + buf.length >= cut) {
        buf = buf.subarray(0, Math.max(0, cut - sent));
        sent += buf.length;
        state.bytes += buf.length;
        stream.destroy();
        res.write(buf, () => res.destroy());
        return;
      }
      sent += buf.length;
      state.bytes += buf.length;
      if (!res.write(buf)) stream.pause();
    });
    res.on('drain', () => stream.resume());
    stream.on('end', () => {
      if (sent === length) res.end();
      else {
        // The blob shrank while being read: never let a client take a short body for a whole file.
        warn(`the blob changed while being sent (${sent} of ${length} bytes); connection closed`);
        res.destroy();
      }
    });
    stream.on('error', (e) => {
      warn(`read error: ${e.message}`);
      res.destroy();
      settle();
    });
    stream.on('close', settle);
    res.on('close', () => {
      if (!res.writableFinished) stream.destroy();
      settle();
    });
  });
}
