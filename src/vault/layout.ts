import { join } from 'node:path';
import { distilleryHome } from '../core/paths.js';

/**
 * Where the vault keeps things inside DISTILLERY_HOME (see docs/architecture.md, "The vault").
 * Everything else in src/vault takes a layout (or a home) so tests can use throwaway homes.
 */
export interface VaultLayout {
  home: string;
  /** blobs/sha256/<hex>: content-addressed, read-only files. */
  blobsDir: string;
  /** blobs/tmp: blobs being written. Beside blobs/sha256 so rename stays on one filesystem even when
   *  blobs/ is a symlink to another disk. */
  blobTmpDir: string;
  modelsDir: string;
  viewsDir: string;
  dbPath: string;
}

export function vaultLayout(home: string = distilleryHome()): VaultLayout {
  return {
    home,
    blobsDir: join(home, 'blobs', 'sha256'),
    blobTmpDir: join(home, 'blobs', 'tmp'),
    modelsDir: join(home, 'models'),
    viewsDir: join(home, 'views'),
    dbPath: join(home, 'distillery.db'),
  };
}

export function blobPath(layout: VaultLayout, sha256: string): string {
  return join(layout.blobsDir, sha256);
}

export function manifestPath(layout: VaultLayout, name: string, version: number): string {
  return join(layout.modelsDir, name, `${version}.json`);
}

export function viewPath(layout: VaultLayout, name: string, version: number): string {
  return join(layout.viewsDir, name, String(version));
}
