import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { UserError } from '../../core/errors.js';

/**
 * The Hugging Face cache (`$HF_HOME/hub/models--ORG--NAME/{blobs,refs,snapshots}`), as written by
 * huggingface_hub and llama.cpp: `refs/<branch>` holds a commit id, `snapshots/<commit>/` is a folder of
 * symlinks into `blobs/`. Importing a revision means importing its snapshot folder, recording the repo id
 * and commit so the mirror can serve it back under the same name and revision.
 */

const COMMIT = /^[0-9a-f]{40}$/;

export interface HfCacheRepo {
  /** The `models--ORG--NAME` folder. */
  dir: string;
  repoId: string;
}

/** True for a `models--…` repo folder, a hub root (which holds them), or a snapshot folder inside one. */
export function looksLikeHfCache(path: string): boolean {
  const abs = resolve(path);
  const inSnapshots = basename(dirname(abs)) === 'snapshots' && hfRepoFolder(dirname(dirname(abs))) !== null;
  return inSnapshots || hfRepoFolder(abs) !== null || isHubRoot(abs);
}

function isHubRoot(path: string): boolean {
  try {
    return readdirSync(path).some((n) => n.startsWith('models--') && existsSync(join(path, n, 'snapshots')));
  } catch {
    return false;
  }
}

/** `models--Org--Name` → `Org/Name` (Hub names cannot contain "--", so the split is unambiguous). */
export function repoIdOfFolder(folderName: string): string | null {
  const m = /^models--(.+)$/.exec(folderName);
  if (!m?.[1]) return null;
  const parts = m[1].split('--');
  return parts.every((p) => p.length > 0) && parts.length <= 2 ? parts.join('/') : null;
}

function hfRepoFolder(path: string): HfCacheRepo | null {
  const abs = resolve(path);
  const repoId = repoIdOfFolder(basename(abs));
  if (repoId && existsSync(join(abs, 'snapshots'))) return { dir: abs, repoId };
  return null;
}

/** The repo folders under a hub root, as repo ids (for "did you mean" and `--repo` listings). */
export function listCachedRepos(hubRoot: string): string[] {
  try {
    return readdirSync(hubRoot)
      .filter((n) => existsSync(join(hubRoot, n, 'snapshots')))
      .map(repoIdOfFolder)
      .filter((r): r is string => r !== null)
      .sort();
  } catch {
    return [];
  }
}

/** Finds the repo folder from a repo folder, a snapshot folder, or a hub root plus `repo`. */
export function findHfCacheRepo(path: string, repo?: string): { repo: HfCacheRepo; snapshot: string | null } {
  const abs = resolve(path);
  const direct = hfRepoFolder(abs);
  if (direct) {
    if (repo !== undefined && repo !== direct.repoId) throw new UserError(`${abs} holds ${direct.repoId}, not ${repo}`);
    return { repo: direct, snapshot: null };
  }
  // …/models--Org--Name/snapshots/<commit>
  if (basename(dirname(abs)) === 'snapshots') {
    const up = hfRepoFolder(dirname(dirname(abs)));
    if (up) return { repo: up, snapshot: basename(abs) };
  }
  if (!isHubRoot(abs)) throw new UserError(`${abs} is not a Hugging Face cache folder (no models--ORG--NAME folders with snapshots/)`);
  const repos = listCachedRepos(abs);
  if (repo === undefined) {
    throw new UserError(`${abs} is a Hugging Face cache holding ${repos.length} model(s); choose one with --repo`, `cached: ${repos.join(', ')}`);
  }
  const dir = join(abs, `models--${repo.split('/').join('--')}`);
  const found = hfRepoFolder(dir);
  if (!found) throw new UserError(`${repo} is not in the Hugging Face cache at ${abs}`, repos.length > 0 ? `cached: ${repos.join(', ')}` : undefined);
  return { repo: found, snapshot: null };
}

function readRefs(repoDir: string): Map<string, string> {
  const refs = new Map<string, string>();
  const walk = (dir: string, prefix: string) => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const n of names) {
      const p = join(dir, n);
      const name = prefix ? `${prefix}/${n}` : n;
      if (statSync(p).isDirectory()) walk(p, name);
      else {
        const commit = readFileSync(p, 'utf8').trim();
        if (COMMIT.test(commit)) refs.set(name, commit);
      }
    }
  };
  walk(join(repoDir, 'refs'), '');
  return refs;
}

/**
 * Picks the snapshot for `revision`: a ref (branch or tag name, default "main"), a full commit id, or an
 * unambiguous commit prefix of at least 7 characters.
 */
export function resolveHfRevision(repo: HfCacheRepo, revision: string | undefined): string {
  const snapshots = readdirSync(join(repo.dir, 'snapshots')).filter((n) => COMMIT.test(n));
  const refs = readRefs(repo.dir);
  const describe = () =>
    `refs: ${[...refs.keys()].join(', ') || 'none'}; snapshots: ${snapshots.map((s) => s.slice(0, 12)).join(', ') || 'none'}`;
  const wanted = revision ?? 'main';
  let commit = refs.get(wanted) ?? null;
  if (commit === null && /^[0-9a-f]{7,40}$/.test(wanted)) {
    const matches = snapshots.filter((s) => s.startsWith(wanted));
    if (matches.length > 1) throw new UserError(`revision ${wanted} is ambiguous in ${repo.repoId}: ${matches.join(', ')}`);
    commit = matches[0] ?? null;
  }
  if (commit === null) {
    if (revision === undefined && snapshots.length === 1) return snapshots[0]!; // no refs/main, one snapshot
    throw new UserError(`${repo.repoId} has no revision ${JSON.stringify(wanted)} in the cache`, describe());
  }
  if (!snapshots.includes(commit)) {
    throw new UserError(`${repo.repoId}: ${wanted} points at commit ${commit}, whose snapshot is not in the cache (incomplete download?)`, describe());
  }
  return commit;
}

/** Locates one cached revision: its snapshot folder (a model or adapter folder), repo id and commit. */
export function locateHfCacheRevision(path: string, opts: { repo?: string; revision?: string } = {}): { dir: string; repoId: string; commit: string; repoDir: string } {
  const { repo, snapshot } = findHfCacheRepo(path, opts.repo);
  const commit = resolveHfRevision(repo, opts.revision ?? snapshot ?? undefined);
  return { dir: join(repo.dir, 'snapshots', commit), repoId: repo.repoId, commit, repoDir: repo.dir };
}
