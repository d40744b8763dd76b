import { readFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { sha256Hex } from '../core/hash.js';
import { manifestPath } from '../vault/layout.js';
import { modelRefString, modelSize, parseManifest, type ManifestFile } from '../vault/manifest.js';
import type { Catalog, CatalogVersion } from './resolve.js';
import { printable, sendError, sendJson, type MirrorContext, type MirrorRequest, type ProtocolModule } from './server.js';

/**
 * The native Distillery API, for `distillery vault pull` and `vault repair --from URL` on another machine:
 *
 *   GET       /.distillery/v1/models                      [{name, version, digest, format, size}] of every manifest
 *   GET|HEAD  /.distillery/v1/models/{name}[/{version}]   the manifest's exact bytes (latest version without one),
 *                                                         X-Distillery-Digest: the model digest
 *   GET|HEAD  /.distillery/v1/blobs/{sha256}              a blob some manifest uses (never an orphan); Range, ETag "<sha256>"
 *
 * A leading '.' is neither a valid vault name nor a Hub repo id, so nothing here can shadow a Hugging Face
 * route. Every request under /.distillery/ is answered here (unknown routes are 404), always with
 * `X-Distillery-Api: 1`, so a client can tell "no such model" from "not a Distillery mirror". As everywhere in
 * the mirror, request strings are only compared with names, versions and hashes read from the manifests;
 * a manifest file is read at the path of a (name, version) the catalog listed, a blob only via serveBlob.
 */

export const VAULT_API_PREFIX = '/.distillery/v1';
export const VAULT_API_HEADER = 'X-Distillery-Api';
export const DIGEST_HEADER = 'X-Distillery-Digest';

export const vaultApiModule: ProtocolModule = { name: 'distillery', handle };

const API = { [VAULT_API_HEADER]: '1' };
const SHA256_RE = /^[0-9a-f]{64}$/;
const VERSION_RE = /^[1-9][0-9]{0,8}$/;

async function handle(req: MirrorRequest, res: ServerResponse, ctx: MirrorContext): Promise<boolean> {
  const seg = req.segments;
  if (seg[0] !== '.distillery') return false;
  if (seg[1] !== 'v1') {
    notFound(req, res, `unknown Distillery API ${printable(req.rawPath, 200)}: this mirror speaks ${VAULT_API_PREFIX}/`);
    return true;
  }
  const rest = seg.slice(2);
  if (rest[0] === 'models' && (rest.length === 1 || (rest.length === 2 && rest[1] === ''))) {
    listModels(req, res, ctx.catalog());
    return true;
  }
  if (rest[0] === 'models' && (rest.length === 2 || rest.length === 3)) {
    manifest(req, res, ctx, rest[1]!, rest[2]);
    return true;
  }
  if (rest[0] === 'blobs' && rest.length === 2) {
    await blob(req, res, ctx, rest[1]!);
    return true;
  }
  notFound(req, res, `no such route ${printable(req.rawPath, 200)} (routes: ${VAULT_API_PREFIX}/models, ${VAULT_API_PREFIX}/models/NAME[/VERSION], ${VAULT_API_PREFIX}/blobs/SHA256)`);
  return true;
}

function notFound(req: MirrorRequest, res: ServerResponse, message: string, status = 404): void {
  sendError(req, res, status, message, API);
}

function allVersions(catalog: Catalog): CatalogVersion[] {
  return [...catalog.byName.keys()].sort().flatMap((name) => catalog.byName.get(name)!);
}

function listModels(req: MirrorRequest, res: ServerResponse, catalog: Catalog): void {
  sendJson(req, res, 200, allVersions(catalog).map(({ manifest: m }) => ({
    name: m.name, version: m.version, digest: m.digest, format: m.format, size: modelSize(m),
  })), API);
}

function manifest(req: MirrorRequest, res: ServerResponse, ctx: MirrorContext, name: string, version: string | undefined): void {
  // Exact, case-sensitive match against the names the catalog read off the vault.
  const versions = ctx.catalog().byName.get(name);
  if (!versions || versions.length === 0) {
    notFound(req, res, `no model named ${printable(JSON.stringify(name), 200)} in this vault`);
    return;
  }
  let v: CatalogVersion | undefined;
  if (version === undefined) v = versions[versions.length - 1];
  else if (VERSION_RE.test(version)) v = versions.find((x) => x.manifest.version === Number(version));
  if (!v) {
    notFound(req, res, `${name} has no version ${printable(JSON.stringify(version), 50)} (versions: ${versions.map((x) => x.manifest.version).join(', ')})`);
    return;
  }
  const path = manifestPath(ctx.layout, v.manifest.name, v.manifest.version);
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
    // The bytes sent must be the manifest the catalog checked (it could have been replaced since).
    if (parseManifest(bytes.toString('utf8'), path).digest !== v.manifest.digest) throw new Error('it changed while being read');
  } catch (e) {
    const message = `the manifest of ${modelRefString(v.manifest)} cannot be read (${(e as Error).message}); run "distillery vault verify" on the mirror`;
    ctx.warn(message);
    sendError(req, res, 500, message, API);
    return;
  }
  res.statusCode = 200;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', String(bytes.length));
  res.setHeader(DIGEST_HEADER, v.manifest.digest);
  res.setHeader('ETag', `"${sha256Hex(bytes)}"`);
  res.setHeader(VAULT_API_HEADER, '1');
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  req.state.bytes += bytes.length;
  res.end(bytes);
}

async function blob(req: MirrorRequest, res: ServerResponse, ctx: MirrorContext, sha256: string): Promise<void> {
  if (!SHA256_RE.test(sha256)) {
    notFound(req, res, `bad blob name ${printable(JSON.stringify(sha256), 100)}: 64 lowercase hex digits (a sha256) expected`, 400);
    return;
  }
  // Only blobs a readable manifest lists are served: an orphan (garbage, an unfinished import) never leaves.
  let found: { v: CatalogVersion; f: ManifestFile } | null = null;
  for (const v of allVersions(ctx.catalog())) {
    const f = v.manifest.files.find((x) => x.sha256 === sha256);
    if (f) {
      found = { v, f };
      break;
    }
  }
  if (!found) {
    notFound(req, res, `blob ${sha256} is not part of any model in this vault`);
    return;
  }
  const ref = modelRefString(found.v.manifest);
  const etag = `"${sha256}"`;
  await ctx.serveBlob(req, res, {
    sha256, size: found.f.size, headers: { ETag: etag, ...API }, etag, label: `${ref} ${found.f.path}`, ref, errorHeaders: API,
  });
}
