import { statSync } from 'node:fs';
import { manifestPath, type VaultLayout } from '../vault/layout.js';
import { listManifestLocations, readManifest, type Manifest, type ManifestFile } from '../vault/manifest.js';

/**
 * What the mirror serves, read straight from the vault's manifests (the truth; the SQLite index is not
 * needed). Request strings are only ever compared against names, versions and paths found here: nothing a
 * client sends is turned into a filesystem path.
 *
 * Repositories:
 *  - `NAME` and `distillery/NAME` for every vault model NAME (all its versions);
 *  - the original repo id for models imported from a Hugging Face cache (`source.repo_id`), made of the
 *    versions (of any vault name) that carry that repo id.
 * Revisions: `main` (the latest version), `vN` (version N), or a version's 40-hex commit id.
 */

export interface CatalogVersion {
  manifest: Manifest;
  /** The commit id this version is served under (see commitOf). */
  commit: string;
}

export interface Repo {
  /** The id as the mirror spells it (`tiny`, `distillery/tiny`, or the original `Org/Tiny`). */
  id: string;
  kind: 'name' | 'original';
  /** Oldest first; `main` is the last one. Never empty. */
  versions: CatalogVersion[];
}

export type RevisionLookup =
  | { ok: true; version: CatalogVersion }
  | { ok: false; message: string };

const COMMIT_RE = /^[0-9a-f]{40}$/;
export const NAME_NAMESPACE = 'distillery';

/**
 * The commit id of a version: the original Hugging Face commit for models imported from an HF cache (so
 * `snapshots/<commit>` matches what the Hub served), otherwise the first 40 hex digits of the model digest.
 */
export function commitOf(m: Manifest): string {
  const rev = m.source.revision;
  if (m.source.kind === 'hf-cache' && typeof rev === 'string' && COMMIT_RE.test(rev)) return rev;
  return m.digest.slice(0, 40);
}

export function isCommitId(s: string): boolean {
  return COMMIT_RE.test(s);
}

/** One look at the vault: every readable manifest, grouped by name and by original repo id. */
export class Catalog {
  readonly byName = new Map<string, CatalogVersion[]>();
  /** Keyed by the lowercased repo id (the Hub treats repo ids case-insensitively). */
  readonly byOriginal = new Map<string, { id: string; versions: CatalogVersion[] }>();

  constructor(manifests: Manifest[]) {
    for (const manifest of manifests) {
      const v: CatalogVersion = { manifest, commit: commitOf(manifest) };
      const list = this.byName.get(manifest.name) ?? [];
      list.push(v);
      this.byName.set(manifest.name, list);
      const repoId = originalRepoId(manifest);
      if (repoId !== null) {
        const key = repoId.toLowerCase();
        const entry = this.byOriginal.get(key) ?? { id: repoId, versions: [] };
        entry.versions.push(v);
        this.byOriginal.set(key, entry);
      }
    }
    for (const list of this.byName.values()) list.sort((a, b) => a.manifest.version - b.manifest.version);
    for (const entry of this.byOriginal.values()) {
      entry.versions.sort((a, b) => compareCreated(a.manifest, b.manifest));
      // The latest import names the repo (its spelling of the id).
      entry.id = originalRepoId(entry.versions[entry.versions.length - 1]!.manifest) ?? entry.id;
    }
  }

  /**
   * The repository a client names. Vault names win over original repo ids (`distillery/NAME` is always the
   * vault model NAME), so an import can never hide a vault model.
   */
  findRepo(repoId: string): Repo | null {
    const parts = repoId.split('/');
    if (parts.length === 1 || (parts.length === 2 && parts[0]!.toLowerCase() === NAME_NAMESPACE)) {
      const name = parts[parts.length - 1]!.toLowerCase();
      const versions = this.byName.get(name);
      if (versions && versions.length > 0) return { id: parts.length === 1 ? name : `${NAME_NAMESPACE}/${name}`, kind: 'name', versions };
    }
    if (parts.length > 2) return null;
    const original = this.byOriginal.get(repoId.toLowerCase());
    if (original && original.versions.length > 0) return { id: original.id, kind: 'original', versions: original.versions };
    return null;
  }

  /** Every repository id served, for listings: `distillery/NAME` per name, then the original repo ids. */
  repos(): Repo[] {
    const out: Repo[] = [];
    for (const [name, versions] of [...this.byName.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      out.push({ id: `${NAME_NAMESPACE}/${name}`, kind: 'name', versions });
    }
    for (const entry of [...this.byOriginal.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) {
      if (this.findRepo(entry.id)?.kind === 'original') out.push({ id: entry.id, kind: 'original', versions: entry.versions });
    }
    return out;
  }
}

/** `main`, `vN` or a commit id (or `refs/heads/main`, `refs/tags/vN`) → the version it names in `repo`. */
export function resolveRevision(repo: Repo, requested: string): RevisionLookup {
  const latest = repo.versions[repo.versions.length - 1]!;
  // Full ref names name the same things: refs/heads/main, refs/tags/vN.
  const revision = requested === 'refs/heads/main' ? 'main' : /^refs\/tags\/v\d+$/.test(requested) ? requested.slice('refs/tags/'.length) : requested;
  if (revision === 'main') return { ok: true, version: latest };
  const vm = /^v([1-9][0-9]{0,8})$/.exec(revision);
  if (vm) {
    const n = Number(vm[1]);
    const matches = repo.versions.filter((v) => v.manifest.version === n);
    const names = new Set(matches.map((v) => v.manifest.name));
    if (matches.length === 0) return { ok: false, message: `${repo.id} has no version ${n} (versions: ${versionList(repo)})` };
    if (names.size > 1) {
      return { ok: false, message: `${revision} is ambiguous for ${repo.id}: it names versions of ${[...names].sort().join(', ')}; use a commit id or distillery/NAME` };
    }
    return { ok: true, version: matches[matches.length - 1]! };
  }
  if (isCommitId(revision)) {
    const matches = repo.versions.filter((v) => v.commit === revision);
    if (matches.length > 0) return { ok: true, version: matches[matches.length - 1]! };
    return { ok: false, message: `${repo.id} has no commit ${revision}` };
  }
  return { ok: false, message: `invalid revision ${JSON.stringify(revision)} for ${repo.id}: use main, vN (versions: ${versionList(repo)}) or a 40-hex commit id` };
}

/** Exact lookup of a manifest entry; the path is never normalised, so `a/../b` simply does not exist. */
export function findFile(m: Manifest, path: string): ManifestFile | undefined {
  return m.files.find((f) => f.path === path);
}

/** The version tag of a catalog entry inside its repo (`vN`), as listed by the refs endpoint. */
export function versionTag(v: CatalogVersion): string {
  return `v${v.manifest.version}`;
}

function versionList(repo: Repo): string {
  return repo.versions.map((v) => (repo.kind === 'original' ? `${v.manifest.name}:${v.manifest.version}` : `v${v.manifest.version}`)).join(', ');
}

function originalRepoId(m: Manifest): string | null {
  const id = m.source.repo_id;
  // Only ids the Hub itself could have: one or two segments of [A-Za-z0-9._-].
  if (typeof id !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)?$/.test(id) || id.length > 200) return null;
  return id;
}

function compareCreated(a: Manifest, b: Manifest): number {
  if (a.created !== b.created) return a.created < b.created ? -1 : 1;
  if (a.name !== b.name) return a.name < b.name ? -1 : 1;
  return a.version - b.version;
}

interface CachedManifest {
  mtimeMs: number;
  size: number;
  ino: number;
  manifest: Manifest;
}

/**
 * Reads the vault's manifests for each request. Manifests are immutable, so parsed ones are kept and only
 * re-read when the file itself changed (a model removed and re-imported under the same version number).
 */
export class VaultReader {
  private readonly cache = new Map<string, CachedManifest>();
  private readonly warned = new Set<string>();

  constructor(readonly layout: VaultLayout, private readonly warn: (line: string) => void = () => {}) {}

  catalog(): Catalog {
    const manifests: Manifest[] = [];
    const seen = new Set<string>();
    for (const loc of listManifestLocations(this.layout)) {
      const key = `${loc.name}:${loc.version}`;
      seen.add(key);
      const path = manifestPath(this.layout, loc.name, loc.version);
      try {
        const st = statSync(path);
        const hit = this.cache.get(key);
        if (hit && hit.mtimeMs === st.mtimeMs && hit.size === st.size && hit.ino === st.ino) {
          manifests.push(hit.manifest);
          continue;
        }
        const manifest = readManifest(this.layout, loc.name, loc.version);
        this.cache.set(key, { mtimeMs: st.mtimeMs, size: st.size, ino: st.ino, manifest });
        manifests.push(manifest);
      } catch (e) {
        if (!this.warned.has(path)) {
          this.warned.add(path);
          this.warn(`skipping unreadable manifest ${path}: ${(e as Error).message}`);
        }
      }
    }
    for (const key of this.cache.keys()) if (!seen.has(key)) this.cache.delete(key);
    return new Catalog(manifests);
  }
}
