import Database from 'better-sqlite3';
import { existsSync, mkdirSync } from 'node:fs';
import { relative } from 'node:path';
import { listManifestLocations, modelSize, readManifest, type Manifest } from './manifest.js';
import { manifestPath, type VaultLayout } from './layout.js';

/**
 * `distillery.db`: a fast index of the manifests (list, search by digest or parent). It is a cache: the
 * manifests are the truth, so whenever the db is missing, outdated, or disagrees with the manifests on
 * disk about which models exist, the vault tables are rebuilt from them. Other parts of Distillery keep
 * their own tables in the same file; only the vault's tables are touched here.
 */

type DB = Database.Database;

/** Bump when the models table changes; a mismatch triggers a rebuild. */
const INDEX_SCHEMA = '1';

export interface ModelRow {
  name: string;
  version: number;
  digest: string;
  format: string;
  architecture: string | null;
  model_type: string | null;
  parameters: number | null;
  dtype: string | null;
  license: string | null;
  size: number;
  file_count: number;
  created: string;
  /** Relative to DISTILLERY_HOME, so a home can be moved. */
  manifest_path: string;
  parent_digest: string | null;
  run_id: string | null;
}

export interface RebuildResult {
  models: number;
  /** Manifests that could not be read; they are left out of the index (verify reports them). */
  skipped: Array<{ path: string; error: string }>;
}

function createTables(db: DB): void {
  db.exec(`
    CREATE TABLE IF NOT EXISTS vault_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS models (
      name TEXT NOT NULL,
      version INTEGER NOT NULL,
      digest TEXT NOT NULL,
      format TEXT NOT NULL,
      architecture TEXT,
      model_type TEXT,
      parameters INTEGER,
      dtype TEXT,
      license TEXT,
      size INTEGER NOT NULL,
      file_count INTEGER NOT NULL,
      created TEXT NOT NULL,
      manifest_path TEXT NOT NULL,
      parent_digest TEXT,
      run_id TEXT,
      PRIMARY KEY (name, version)
    );
    CREATE INDEX IF NOT EXISTS models_digest ON models (digest);
    CREATE INDEX IF NOT EXISTS models_parent ON models (parent_digest);
  `);
}

function open(layout: VaultLayout): { db: DB; fresh: boolean } {
  mkdirSync(layout.home, { recursive: true });
  const fresh = !existsSync(layout.dbPath);
  const db = new Database(layout.dbPath);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('busy_timeout = 5000');
    // NORMAL is crash-safe under WAL (only the last commits can be lost), and this index is rebuildable.
    db.pragma('synchronous = NORMAL');
    // Checked and upgraded in one write transaction, so two processes opening an old index don't race.
    const upgraded = db
      .transaction(() => {
        const meta = db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'vault_meta'`).get();
        const schema = meta ? (db.prepare(`SELECT value FROM vault_meta WHERE key = 'schema'`).get() as { value: string } | undefined)?.value : undefined;
        if (schema === INDEX_SCHEMA) return false;
        db.exec('DROP TABLE IF EXISTS models');
        createTables(db);
        db.prepare(`INSERT OR REPLACE INTO vault_meta (key, value) VALUES ('schema', ?)`).run(INDEX_SCHEMA);
        return true;
      })
      .immediate();
    return { db, fresh: fresh || upgraded };
  } catch (e) {
    db.close();
    throw e;
  }
}

function rowOf(layout: VaultLayout, m: Manifest): ModelRow {
  return {
    name: m.name, version: m.version, digest: m.digest, format: m.format, architecture: m.architecture,
    model_type: m.model_type, parameters: m.parameters, dtype: m.dtype, license: m.license, size: modelSize(m),
    file_count: m.files.length, created: m.created,
    manifest_path: relative(layout.home, manifestPath(layout, m.name, m.version)).split('\\').join('/'),
    parent_digest: m.lineage?.parent.digest ?? null, run_id: m.lineage?.run_id ?? null,
  };
}

function insert(db: DB, row: ModelRow): void {
  db.prepare(
    `INSERT OR REPLACE INTO models (name, version, digest, format, architecture, model_type, parameters, dtype,
       license, size, file_count, created, manifest_path, parent_digest, run_id)
     VALUES (@name, @version, @digest, @format, @architecture, @model_type, @parameters, @dtype,
       @license, @size, @file_count, @created, @manifest_path, @parent_digest, @run_id)`,
  ).run(row);
}

function rebuildInto(db: DB, layout: VaultLayout): RebuildResult {
  const skipped: RebuildResult['skipped'] = [];
  const rows: ModelRow[] = [];
  for (const loc of listManifestLocations(layout)) {
    try {
      rows.push(rowOf(layout, readManifest(layout, loc.name, loc.version)));
    } catch (e) {
      skipped.push({ path: manifestPath(layout, loc.name, loc.version), error: (e as Error).message });
    }
  }
  db.transaction(() => {
    db.exec('DELETE FROM models');
    for (const r of rows) insert(db, r);
    db.prepare(`INSERT OR REPLACE INTO vault_meta (key, value) VALUES ('skipped', ?)`).run(JSON.stringify(skipped));
  })();
  return { models: rows.length, skipped };
}

/** True when the index lists exactly the manifests present on disk (by name and version). */
function inSync(db: DB, layout: VaultLayout): boolean {
  const onDisk = listManifestLocations(layout).map((l) => `${l.name}:${l.version}`);
  const skipped = new Set(
    (JSON.parse((db.prepare(`SELECT value FROM vault_meta WHERE key = 'skipped'`).get() as { value: string } | undefined)?.value ?? '[]') as RebuildResult['skipped']).map((s) => s.path),
  );
  const indexed = new Set((db.prepare('SELECT name, version FROM models').all() as Array<{ name: string; version: number }>).map((r) => `${r.name}:${r.version}`));
  let expected = 0;
  for (const key of onDisk) {
    if (indexed.has(key)) expected++;
    else {
      const [name, version] = key.split(':') as [string, string];
      if (!skipped.has(manifestPath(layout, name, Number(version)))) return false;
    }
  }
  return expected === indexed.size;
}

/**
 * Opens the index, brought up to date with the manifests, runs `fn`, closes it. Opening per operation keeps
 * no handles between CLI commands or tests, and costs well under a millisecond.
 */
export function withIndex<T>(layout: VaultLayout, fn: (db: DB) => T): T {
  const { db, fresh } = open(layout);
  try {
    if (fresh || !inSync(db, layout)) rebuildInto(db, layout);
    return fn(db);
  } finally {
    db.close();
  }
}

/** Recreates the vault's tables from the manifests on disk. */
export function rebuildIndex(layout: VaultLayout): RebuildResult {
  const { db } = open(layout);
  try {
    return rebuildInto(db, layout);
  } finally {
    db.close();
  }
}

/** Adds a just-written manifest (the insert comes first, so a healthy index needs no rebuild). */
export function indexManifest(layout: VaultLayout, m: Manifest): void {
  const { db, fresh } = open(layout);
  try {
    insert(db, rowOf(layout, m));
    if (fresh || !inSync(db, layout)) rebuildInto(db, layout);
  } finally {
    db.close();
  }
}

export function queryModels(db: DB, name?: string): ModelRow[] {
  return (name === undefined
    ? db.prepare('SELECT * FROM models ORDER BY name, version').all()
    : db.prepare('SELECT * FROM models WHERE name = ? ORDER BY version').all(name)) as ModelRow[];
}

export function queryByDigest(db: DB, digest: string): ModelRow[] {
  return db.prepare('SELECT * FROM models WHERE digest = ? ORDER BY name, version').all(digest) as ModelRow[];
}
