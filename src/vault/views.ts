import { randomBytes } from 'node:crypto';
import { linkSync, lstatSync, mkdirSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fsyncDirSync } from '../core/atomic.js';
import { blobPath, viewPath, type VaultLayout } from './layout.js';
import type { Manifest } from './manifest.js';

/**
 * A view is an ordinary Hugging Face folder (`views/<name>/<version>/`) whose files are symlinks into the
 * blob store, so the engine (transformers, safetensors mmap) can load a vault model without a copy. Views
 * are disposable: built on demand, checked on every use, rebuilt if anything in them is off.
 * Links are relative so the whole home can be moved or mounted elsewhere.
 */

function linkTarget(layout: VaultLayout, viewDir: string, filePath: string, sha256: string): string {
  return relative(dirname(join(viewDir, filePath)), blobPath(layout, sha256));
}

/** True when `dir` holds exactly the manifest's files, each linking to its blob. */
export function isViewIntact(layout: VaultLayout, m: Manifest, dir: string): boolean {
  try {
    const expected = new Map(m.files.map((f) => [f.path, linkTarget(layout, dir, f.path, f.sha256)]));
    let seen = 0;
    const walk = (abs: string, rel: string): boolean => {
      for (const name of readdirSync(abs)) {
        const childRel = rel ? `${rel}/${name}` : name;
        const childAbs = join(abs, name);
        const st = lstatSync(childAbs);
        if (st.isDirectory()) {
          if (!walk(childAbs, childRel)) return false;
        } else {
          const want = expected.get(childRel);
          if (want === undefined) return false;
          // Hard-link fallback views (no symlink permission) can't be checked by target; accept files.
          if (st.isSymbolicLink() ? readlinkSync(childAbs) !== want : !st.isFile()) return false;
          seen++;
        }
      }
      return true;
    };
    return walk(dir, '') && seen === expected.size;
  } catch {
    return false;
  }
}

function placeLink(target: string, absTarget: string, at: string): void {
  try {
    symlinkSync(target, at);
  } catch (e) {
    // Windows without Developer Mode can't create symlinks; a hard link is the next best zero-copy view.
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') throw e;
    linkSync(absTarget, at);
  }
}

/**
 * Returns the model's view folder, creating or repairing it. Built in a temp folder and renamed into place,
 * so a concurrent reader never sees a half-built view. The blobs must exist (callers check first).
 */
export function materializeView(layout: VaultLayout, m: Manifest): string {
  const dir = viewPath(layout, m.name, m.version);
  if (isViewIntact(layout, m, dir)) return dir;

  const parent = dirname(dir);
  mkdirSync(parent, { recursive: true });
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const tmp = join(parent, `.tmp-${m.version}-${tag}`);
  mkdirSync(tmp);
  try {
    for (const f of m.files) {
      const at = join(tmp, f.path);
      mkdirSync(dirname(at), { recursive: true });
      // The relative target is computed for the final location; depth below `parent` is the same.
      placeLink(linkTarget(layout, dir, f.path, f.sha256), blobPath(layout, f.sha256), at);
    }
    try {
      renameSync(tmp, dir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'EPERM' && code !== 'EISDIR' && code !== 'ENOTDIR') throw e;
      // Something is at `dir`: either a damaged view, or a concurrent process just finished the same view.
      if (isViewIntact(layout, m, dir)) {
        rmSync(tmp, { recursive: true, force: true });
        return dir;
      }
      const old = join(parent, `.old-${m.version}-${tag}`);
      renameSync(dir, old);
      renameSync(tmp, dir);
      rmSync(old, { recursive: true, force: true });
    }
    fsyncDirSync(parent);
    return dir;
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
