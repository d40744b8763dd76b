import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { blobPath, type VaultLayout } from '../vault/layout.js';
import { comparePaths, isSafeRelativePath, modelSize, type Manifest, type ManifestFile } from '../vault/manifest.js';
import { findFile, resolveRevision, versionTag, type CatalogVersion, type Repo } from './resolve.js';
import { printable, sendError, sendJson, type MirrorContext, type MirrorRequest, type ProtocolModule } from './server.js';

/**
 * The subset of the Hugging Face Hub HTTP API that downloaders use, checked against huggingface_hub 1.33
 * (`hf download`, snapshot_download, hf_hub_download) and llama.cpp's `-hf` downloader:
 *
 *   GET       /api/models                                   list (search=, author=, limit=)
 *   GET       /api/models/{repo}[/revision/{rev}]           model info: id, sha (the commit), siblings, …
 *   GET       /api/models/{repo}/tree/{rev}[/{path}]        tree listing (recursive=, cursor= paging via Link)
 *   GET       /api/models/{repo}/refs                       branches (main) and tags (v1, v2, …)
 *   GET|HEAD  /{repo}/resolve/{rev}/{path}                  the file: ETag, X-Repo-Commit, Range
 *   GET       /v2/{user}/{model}/manifests/{tag}            llama.cpp's older GGUF lookup (User-Agent llama-cpp*)
 *
 * Files are answered directly (200/206), never redirected, so there is no X-Linked-* indirection to follow
 * and no Xet header is ever sent: every client falls back to plain HTTP downloads. ETags follow the Hub: the
 * sha256 for files the Hub keeps in Git LFS (weights and other binaries, anything ≥ 10 MiB), the git blob id
 * (sha1 of "blob <size>\0" + bytes) for small text files, so client caches name their blobs as the Hub's would.
 */

export const hfModule: ProtocolModule = { name: 'huggingface', handle };

/** Files at least this big are in LFS on the Hub whatever their name. */
const LFS_SIZE_THRESHOLD = 10 * 1024 * 1024;
/** The Hub's default .gitattributes (LFS patterns), by file name. */
const LFS_NAME_PATTERNS: RegExp[] = [
  /\.(7z|arrow|bin|bz2|ckpt|ftz|gz|h5|joblib|mlmodel|model|msgpack|npy|npz|onnx|ot|parquet|pb|pickle|pkl|pt|pth|rar|safetensors|tar|tflite|tgz|wasm|xz|zip|zst|gguf)$/i,
  /\.tar\..*$/i,
  /\.lfs\..*$/i,
  /tfevents/i,
];
const REPO_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

type ApiAction =
  | { kind: 'info'; revision: string | null }
  | { kind: 'tree'; revision: string; path: string[] }
  | { kind: 'refs' };

async function handle(req: MirrorRequest, res: ServerResponse, ctx: MirrorContext): Promise<boolean> {
  const seg = req.segments;
  // A vault model may be called "api" or "v2": what is not an API route is tried as /{repo}/resolve/….
  if (seg[0] === 'api' && (await handleApi(req, res, ctx))) return true;
  if (seg[0] === 'v2' && (await handleGgufManifest(req, res, ctx))) return true;
  return handleResolve(req, res, ctx);
}

/**
 * A path can name a repo as `a/b` or as `a` (vault names have no namespace): the first reading whose repo
 * exists wins. When none does, answers RepoNotFound for the first reading and returns null.
 */
function firstRepo<T extends { repoId: string }>(req: MirrorRequest, res: ServerResponse, ctx: MirrorContext, forms: T[]): (T & { repo: Repo }) | null {
  const catalog = ctx.catalog();
  for (const f of forms) {
    const repo = catalog.findRepo(f.repoId);
    if (repo) return { ...f, repo };
  }
  repoNotFound(req, res, forms[0]!.repoId);
  return null;
}

// ---------------------------------------------------------------------------------------------------------
// /api/…

async function handleApi(req: MirrorRequest, res: ServerResponse, ctx: MirrorContext): Promise<boolean> {
  const [, kind, ...rest] = req.segments;
  if (kind === 'datasets' || kind === 'spaces' || kind === 'kernels') {
    repoNotFound(req, res, rest.slice(0, 2).join('/'), `the mirror serves models only, not ${kind}`);
    return true;
  }
  if (kind !== 'models') return false;
  if (rest.length === 0 || (rest.length === 1 && rest[0] === '')) {
    listModels(req, res, ctx);
    return true;
  }
  const forms: Array<{ repoId: string; action: ApiAction }> = [];
  const two = rest.length >= 2 ? parseAction(rest.slice(2)) : null;
  if (two && REPO_SEGMENT.test(rest[0]!) && REPO_SEGMENT.test(rest[1]!)) forms.push({ repoId: `${rest[0]}/${rest[1]}`, action: two });
  const one = parseAction(rest.slice(1));
  if (one && REPO_SEGMENT.test(rest[0]!)) forms.push({ repoId: rest[0]!, action: one });
  if (forms.length === 0) return false;
  const found = firstRepo(req, res, ctx, forms);
  if (!found) return true;
  const { repo, action } = found;
  if (action.kind === 'refs') {
    refs(req, res, repo);
    return true;
  }
  const version = lookupRevision(req, res, repo, action.revision ?? 'main');
  if (!version) return true;
  try {
    if (action.kind === 'info') await modelInfo(req, res, ctx, repo, version);
    else await tree(req, res, ctx, repo, version, action.revision, action.path);
  } catch (e) {
    if (!(e instanceof BlobProblem)) throw e;
    damaged(req, res, ctx, version, e);
  }
  return true;
}

function parseAction(rest: string[]): ApiAction | null {
  if (rest.length === 0) return { kind: 'info', revision: null };
  if (rest[0] === 'revision' && rest.length === 2 && rest[1] !== '') return { kind: 'info', revision: rest[1]! };
  if (rest[0] === 'tree' && rest.length >= 2 && rest[1] !== '') return { kind: 'tree', revision: rest[1]!, path: rest.slice(2) };
  if (rest[0] === 'refs' && rest.length === 1) return { kind: 'refs' };
  return null;
}

function lookupRevision(req: MirrorRequest, res: ServerResponse, repo: Repo, revision: string): CatalogVersion | null {
  const r = resolveRevision(repo, revision);
  if (r.ok) return r.version;
  sendError(req, res, 404, `Invalid rev id: ${revision} (${r.message})`, { 'X-Error-Code': 'RevisionNotFound' });
  return null;
}

function repoNotFound(req: MirrorRequest, res: ServerResponse, repoId: string, why?: string): void {
  sendError(
    req, res, 404,
    `Repository not found: ${printable(repoId, 200)}${why ? ` (${why})` : ' is neither a model in this vault (NAME or distillery/NAME) nor the original repo id of an imported one'}`,
    { 'X-Error-Code': 'RepoNotFound' },
  );
}

function listModels(req: MirrorRequest, res: ServerResponse, ctx: MirrorContext): void {
  const search = req.query.get('search')?.toLowerCase() ?? null;
  const author = req.query.get('author')?.toLowerCase() ?? null;
  const limit = Number(req.query.get('limit') ?? NaN);
  let repos = ctx.catalog().repos();
  if (search) repos = repos.filter((r) => r.id.toLowerCase().includes(search));
  if (author) repos = repos.filter((r) => r.id.toLowerCase().startsWith(`${author}/`));
  if (Number.isSafeInteger(limit) && limit > 0) repos = repos.slice(0, limit);
  sendJson(req, res, 200, repos.map((r) => {
    const latest = r.versions[r.versions.length - 1]!;
    return { id: r.id, modelId: r.id, sha: latest.commit, lastModified: latest.manifest.created, private: false, downloads: 0, likes: 0, tags: tagsOf(latest.manifest), library_name: libraryOf(latest.manifest) };
  }));
}

function refs(req: MirrorRequest, res: ServerResponse, repo: Repo): void {
  const latest = repo.versions[repo.versions.length - 1]!;
  const tags = new Map<string, string>();
  for (const v of repo.versions) tags.set(versionTag(v), v.commit); // later versions win a (cross-name) clash
  sendJson(req, res, 200, {
    branches: [{ name: 'main', ref: 'refs/heads/main', targetCommit: latest.commit }],
    converts: [],
    tags: [...tags.entries()].map(([name, commit]) => ({ name, ref: `refs/tags/${name}`, targetCommit: commit })),
    ...(req.query.get('include_prs') ? { pullRequests: [] } : {}),
  });
}

async function modelInfo(req: MirrorRequest, res: ServerResponse, ctx: MirrorContext, repo: Repo, v: CatalogVersion): Promise<void> {
  const m = v.manifest;
  const withBlobs = isTrue(req.query.get('blobs'));
  const siblings = [];
  for (const f of sortedFiles(m)) {
    const lfs = isLfs(f);
    siblings.push({
      rfilename: f.path,
      size: f.size,
      ...(withBlobs ? { blobId: await fileOid(ctx.layout, f) } : {}),
      ...(lfs ? { lfs: { size: f.size, sha256: f.sha256, pointerSize: lfsPointer(f).length } } : {}),
    });
  }
  const details = m.details ?? {};
  const config: Record<string, unknown> = {};
  if (m.architecture) config.architectures = [m.architecture];
  if (m.model_type) config.model_type = m.model_type;
  const gguf = m.format === 'gguf'
    ? dropNulls({ total: m.parameters, architecture: m.architecture ?? m.model_type, context_length: details.context_length ?? null, chat_template: details.chat_template ?? null })
    : undefined;
  sendJson(req, res, 200, {
    _id: m.digest.slice(0, 24),
    id: repo.id,
    modelId: repo.id,
    author: repo.id.includes('/') ? repo.id.split('/')[0] : null,
    sha: v.commit,
    lastModified: m.created,
    createdAt: repo.versions[0]!.manifest.created,
    private: false,
    gated: false,
    disabled: false,
    downloads: 0,
    likes: 0,
    library_name: libraryOf(m),
    tags: tagsOf(m),
    ...(m.license ? { cardData: { license: m.license } } : {}),
    ...(Object.keys(config).length > 0 ? { config } : {}),
    ...(gguf ? { gguf } : {}),
    siblings,
    spaces: [],
    usedStorage: modelSize(m),
    distillery: { name: m.name, version: m.version, ref: `${m.name}:${m.version}`, digest: m.digest, format: m.format, source: m.source.kind, lineage: m.lineage?.parent ?? null },
  }, { 'X-Repo-Commit': v.commit });
}

interface TreeEntry {
  type: 'file' | 'directory';
  path: string;
  file?: ManifestFile;
}

async function tree(req: MirrorRequest, res: ServerResponse, ctx: MirrorContext, repo: Repo, v: CatalogVersion, revision: string, pathSegments: string[]): Promise<void> {
  const m = v.manifest;
  // The client sends the folder as one %2F-encoded segment; accept plain slashes too.
  const folder = pathSegments.join('/').replace(/\/+$/, '');
  if (folder !== '' && !isSafeRelativePath(folder)) {
    sendError(req, res, 400, `invalid path ${printable(folder, 200)}`);
    return;
  }
  const all = allEntries(m);
  if (folder !== '' && !all.some((e) => e.type === 'directory' && e.path === folder)) {
    sendError(req, res, 404, `Entry not found: ${printable(folder, 200)} is not a folder of ${repo.id} at ${revision}`, { 'X-Error-Code': 'EntryNotFound', 'X-Repo-Commit': v.commit });
    return;
  }
  const recursive = isTrue(req.query.get('recursive'));
  const prefix = folder === '' ? '' : `${folder}/`;
  const listed = all.filter((e) => e.path.startsWith(prefix) && (recursive || !e.path.slice(prefix.length).includes('/')));

  const cursorText = req.query.get('cursor');
  const offset = cursorText === null ? 0 : decodeCursor(cursorText);
  if (offset === null) {
    sendError(req, res, 400, 'invalid cursor');
    return;
  }
  const page = listed.slice(offset, offset + ctx.treePageSize);
  const oids = await treeOids(ctx.layout, m);
  const body = page.map((e) => {
    if (e.type === 'directory') return { type: 'directory', oid: oids.get(`${e.path}/`)!, size: 0, path: e.path };
    const f = e.file!;
    return {
      type: 'file', oid: oids.get(f.path)!, size: f.size,
      ...(isLfs(f) ? { lfs: { oid: f.sha256, size: f.size, pointerSize: lfsPointer(f).length } } : {}),
      path: f.path,
    };
  });
  const headers: Record<string, string> = { 'X-Repo-Commit': v.commit };
  if (offset + page.length < listed.length) {
    const q = new URLSearchParams(req.query);
    q.set('cursor', encodeCursor(offset + page.length));
    headers.Link = `<${ctx.baseUrl}${req.rawPath}?${q.toString()}>; rel="next"`;
  }
  sendJson(req, res, 200, body, headers);
}

/** Every file and every folder implied by the file paths, in byte order of the path. */
function allEntries(m: Manifest): TreeEntry[] {
  const dirs = new Set<string>();
  for (const f of m.files) {
    const parts = f.path.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  const entries: TreeEntry[] = [
    ...[...dirs].map((path) => ({ type: 'directory' as const, path })),
    ...m.files.map((file) => ({ type: 'file' as const, path: file.path, file })),
  ];
  return entries.sort((a, b) => comparePaths(a.path, b.path));
}

function encodeCursor(offset: number): string {
  return Buffer.from(`offset:${offset}`, 'utf8').toString('base64url');
}

function decodeCursor(cursor: string): number | null {
  const m = /^offset:(\d{1,9})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  return m ? Number(m[1]) : null;
}

// ---------------------------------------------------------------------------------------------------------
// /{repo}/resolve/{rev}/{path}

async function handleResolve(req: MirrorRequest, res: ServerResponse, ctx: MirrorContext): Promise<boolean> {
  const seg = req.segments;
  if ((seg[0] === 'datasets' || seg[0] === 'spaces') && (seg[2] === 'resolve' || seg[3] === 'resolve')) {
    repoNotFound(req, res, seg.slice(1, seg[2] === 'resolve' ? 2 : 3).join('/'), `the mirror serves models only, not ${seg[0]}`);
    return true;
  }
  const forms: Array<{ repoId: string; rest: string[] }> = [];
  if (seg.length >= 5 && seg[2] === 'resolve' && REPO_SEGMENT.test(seg[0]!) && REPO_SEGMENT.test(seg[1]!)) forms.push({ repoId: `${seg[0]}/${seg[1]}`, rest: seg.slice(3) });
  if (seg.length >= 4 && seg[1] === 'resolve' && REPO_SEGMENT.test(seg[0]!)) forms.push({ repoId: seg[0]!, rest: seg.slice(2) });
  if (forms.length === 0) return false;
  const found = firstRepo(req, res, ctx, forms);
  if (!found) return true;
  const { repo, rest } = found;
  const [revision = '', ...pathSegments] = rest;
  const version = lookupRevision(req, res, repo, revision);
  if (!version) return true;
  const path = pathSegments.join('/');
  if (!isSafeRelativePath(path)) {
    sendError(req, res, 400, `invalid file path ${printable(path, 200)}: paths are relative, '/'-separated, without '.', '..' or empty parts`, { 'X-Repo-Commit': version.commit });
    return true;
  }
  const file = findFile(version.manifest, path);
  if (!file) {
    sendError(req, res, 404, `Entry not found: ${printable(path, 200)} is not a file of ${repo.id} at ${printable(revision, 64)} (${version.manifest.name}:${version.manifest.version})`, {
      'X-Error-Code': 'EntryNotFound', 'X-Repo-Commit': version.commit,
    });
    return true;
  }
  await serveFile(req, res, ctx, version, file);
  return true;
}

async function serveFile(req: MirrorRequest, res: ServerResponse, ctx: MirrorContext, v: CatalogVersion, f: ManifestFile): Promise<void> {
  const ref = `${v.manifest.name}:${v.manifest.version}`;
  const label = `${ref} ${f.path}`;
  const lfs = isLfs(f);
  let etag: string;
  try {
    etag = lfs ? f.sha256 : await gitBlobId(ctx.layout, f);
  } catch (e) {
    if (!(e instanceof BlobProblem)) throw e;
    damaged(req, res, ctx, v, e);
    return;
  }
  const headers: Record<string, string> = {
    'X-Repo-Commit': v.commit,
    ETag: `"${etag}"`,
    'Content-Disposition': contentDisposition(f.path),
  };
  if (lfs) {
    // What the Hub puts on its LFS redirects; the client prefers these over ETag/Content-Length.
    headers['X-Linked-Etag'] = `"${f.sha256}"`;
    headers['X-Linked-Size'] = String(f.size);
  }
  await ctx.serveBlob(req, res, {
    sha256: f.sha256, size: f.size, headers, etag: `"${etag}"`, label, ref, contentType: contentTypeOf(f.path),
    errorHeaders: { 'X-Repo-Commit': v.commit },
  });
}

function contentDisposition(path: string): string {
  const name = path.slice(path.lastIndexOf('/') + 1);
  const ascii = name.replace(/[^A-Za-z0-9._-]/g, '_');
  // The trailing ';' after filename="…" is what huggingface_hub's pattern expects.
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}

function contentTypeOf(path: string): string {
  if (/\.json$/i.test(path)) return 'application/json';
  if (/\.(txt|md|py|jinja|yaml|yml|ini)$/i.test(path)) return 'text/plain; charset=utf-8';
  return 'application/octet-stream';
}

// ---------------------------------------------------------------------------------------------------------
// /v2/{user}/{model}/manifests/{tag} — llama.cpp before its 2026 HF-cache downloader asked this for the
// GGUF file of a quantisation tag. The Hub tells it apart from an Ollama pull by the User-Agent; so does
// the mirror (other clients fall through to the next protocol module).

async function handleGgufManifest(req: MirrorRequest, res: ServerResponse, ctx: MirrorContext): Promise<boolean> {
  const seg = req.segments;
  const ua = req.headers['user-agent'] ?? '';
  if (!/^llama-cpp/i.test(ua) || seg.length !== 5 || seg[3] !== 'manifests') return false;
  const repoId = `${seg[1]}/${seg[2]}`;
  const repo = REPO_SEGMENT.test(seg[1]!) && REPO_SEGMENT.test(seg[2]!) ? ctx.catalog().findRepo(repoId) : null;
  if (!repo) {
    repoNotFound(req, res, repoId);
    return true;
  }
  const latest = repo.versions[repo.versions.length - 1]!;
  const tag = seg[4]!;
  const files = sortedFiles(latest.manifest);
  const primary = pickGguf(files, tag);
  if (!primary) {
    const ggufs = files.filter((f) => isGgufModelFile(f.path)).map((f) => f.path);
    const why = ggufs.length === 0
      ? `${repo.id} has no GGUF files (format ${latest.manifest.format})`
      : `no GGUF file of ${repo.id} matches the tag ${printable(tag, 50)} (files: ${ggufs.join(', ')})`;
    sendError(req, res, 404, why, { 'X-Error-Code': 'EntryNotFound', 'X-Repo-Commit': latest.commit });
    return true;
  }
  const mmproj = files.find((f) => f.path.endsWith('.gguf') && basename(f.path).includes('mmproj'));
  const describe = async (f: ManifestFile) => ({
    rfilename: f.path, blobId: await fileOid(ctx.layout, f), size: f.size,
    ...(isLfs(f) ? { lfs: { sha256: f.sha256, size: f.size, pointerSize: lfsPointer(f).length } } : {}),
  });
  try {
    sendJson(req, res, 200, { ggufFile: await describe(primary), ...(mmproj ? { mmprojFile: await describe(mmproj) } : {}) }, { 'X-Repo-Commit': latest.commit });
  } catch (e) {
    if (!(e instanceof BlobProblem)) throw e;
    damaged(req, res, ctx, latest, e);
  }
  return true;
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** A GGUF file that is a model (not a projector, imatrix or draft head), and the first part of a split. */
function isGgufModelFile(path: string): boolean {
  if (!path.endsWith('.gguf')) return false;
  const name = basename(path);
  if (/mmproj|imatrix|mtp-|eagle3-|dflash-|dspark-/.test(name)) return false;
  const split = /-(\d{5})-of-(\d{5})\.gguf$/i.exec(name);
  return !split || Number(split[1]) === 1;
}

/**
 * The GGUF file for a tag, as llama.cpp and the Hub pick it: the tag (case-insensitive) followed by '.' or
 * '-' in the file name; `latest` prefers Q4_K_M, then other 4-bit, then Q8_0, then the first GGUF.
 */
export function pickGguf(files: ManifestFile[], tag: string): ManifestFile | undefined {
  const models = files.filter((f) => isGgufModelFile(f.path));
  const withTag = (t: string) => {
    const re = new RegExp(`${t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}[.-]`, 'i');
    return models.find((f) => re.test(basename(f.path)));
  };
  if (tag.toLowerCase() !== 'latest' && tag !== '') return withTag(tag);
  return withTag('Q4_K_M') ?? withTag('Q4_K_S') ?? withTag('Q4_0') ?? withTag('Q8_0') ?? models[0];
}

// ---------------------------------------------------------------------------------------------------------
// Git object ids, as the Hub reports them

/** A blob that is missing or does not match its manifest entry (message: "the vault blob of PATH …"). */
class BlobProblem extends Error {}

function damaged(req: MirrorRequest, res: ServerResponse, ctx: MirrorContext, v: CatalogVersion, e: BlobProblem): void {
  const ref = `${v.manifest.name}:${v.manifest.version}`;
  const message = `${ref} cannot be served: ${e.message}; the model is damaged (run "distillery vault verify ${ref}"; "distillery vault repair --from BUNDLE|URL" or re-importing a good copy repairs it)`;
  ctx.warn(message);
  sendError(req, res, 500, message, { 'X-Repo-Commit': v.commit });
}

/** Would the Hub keep this file in Git LFS? (Then its ETag/oid is the sha256.) */
export function isLfs(f: Pick<ManifestFile, 'path' | 'size'>): boolean {
  if (f.size >= LFS_SIZE_THRESHOLD) return true;
  const name = basename(f.path);
  return LFS_NAME_PATTERNS.some((re) => re.test(name)) || f.path.startsWith('saved_model/');
}

/** The Git LFS pointer file that stands in the git tree for an LFS file. */
export function lfsPointer(f: Pick<ManifestFile, 'sha256' | 'size'>): Buffer {
  return Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${f.sha256}\nsize ${f.size}\n`, 'utf8');
}

function gitObjectId(type: 'blob' | 'tree', body: Buffer): string {
  return createHash('sha1').update(`${type} ${body.length}\0`).update(body).digest('hex');
}

/** The git oid of a file: of its LFS pointer for LFS files, of its bytes otherwise. */
async function fileOid(layout: VaultLayout, f: ManifestFile): Promise<string> {
  return isLfs(f) ? gitObjectId('blob', lfsPointer(f)) : gitBlobId(layout, f);
}

const blobIdCache = new Map<string, string>();

/** sha1 of "blob <size>\0" + the blob's bytes; read once per blob (content-addressed, so it never changes). */
async function gitBlobId(layout: VaultLayout, f: ManifestFile): Promise<string> {
  const key = `${layout.blobsDir}\0${f.sha256}`;
  const hit = blobIdCache.get(key);
  if (hit) return hit;
  let fh;
  try {
    fh = await open(blobPath(layout, f.sha256), 'r');
  } catch (e) {
    throw new BlobProblem(`the vault blob of ${f.path} ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'is missing' : `cannot be opened (${(e as Error).message})`}`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size !== f.size) throw new BlobProblem(`the vault blob of ${f.path} has ${st.size} bytes where the manifest says ${f.size}`);
    const hash = createHash('sha1').update(`blob ${f.size}\0`);
    let read = 0;
    for await (const chunk of fh.createReadStream({ autoClose: false })) {
      hash.update(chunk as Buffer);
      read += (chunk as Buffer).length;
    }
    if (read !== f.size) throw new BlobProblem(`the vault blob of ${f.path} changed size while being read (${read} bytes, manifest ${f.size})`);
    const id = hash.digest('hex');
    blobIdCache.set(key, id);
    return id;
  } finally {
    await fh.close().catch(() => {});
  }
}

/**
 * Oids for a version's tree: files by path, folders by `path/`, computed as git would (tree objects of
 * `<mode> <name>\0<20-byte id>` entries, folders sorted as if their name ended in '/').
 */
async function treeOids(layout: VaultLayout, m: Manifest): Promise<Map<string, string>> {
  const oids = new Map<string, string>();
  for (const f of m.files) oids.set(f.path, await fileOid(layout, f));
  const treeOf = (dir: string): string => {
    const prefix = dir === '' ? '' : `${dir}/`;
    const children = new Map<string, { mode: string; id: string; sortKey: string }>();
    for (const f of m.files) {
      if (!f.path.startsWith(prefix)) continue;
      const rest = f.path.slice(prefix.length);
      const slash = rest.indexOf('/');
      if (slash === -1) children.set(rest, { mode: '100644', id: oids.get(f.path)!, sortKey: rest });
      else {
        const name = rest.slice(0, slash);
        if (!children.has(name)) children.set(name, { mode: '40000', id: treeOf(`${prefix}${name}`), sortKey: `${name}/` });
      }
    }
    const parts = [...children.entries()]
      .sort(([, a], [, b]) => comparePaths(a.sortKey, b.sortKey))
      .map(([name, c]) => Buffer.concat([Buffer.from(`${c.mode} ${name}\0`, 'utf8'), Buffer.from(c.id, 'hex')]));
    const id = gitObjectId('tree', Buffer.concat(parts));
    oids.set(`${prefix}`, id);
    return id;
  };
  treeOf('');
  return oids;
}

// ---------------------------------------------------------------------------------------------------------

function sortedFiles(m: Manifest): ManifestFile[] {
  return [...m.files].sort((a, b) => comparePaths(a.path, b.path));
}

function libraryOf(m: Manifest): string {
  return m.format === 'gguf' ? 'gguf' : m.format === 'peft-adapter' ? 'peft' : 'transformers';
}

function tagsOf(m: Manifest): string[] {
  const tags = ['distillery', libraryOf(m)];
  if (m.format === 'hf-safetensors') tags.push('safetensors');
  if (m.model_type) tags.push(m.model_type);
  if (m.license) tags.push(`license:${m.license}`);
  return tags;
}

function isTrue(v: string | null): boolean {
  return v !== null && /^(1|true|yes)$/i.test(v);
}

function dropNulls(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== null && v !== undefined));
}
