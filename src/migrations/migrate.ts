import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql, type Queryable } from '../db/pool.ts';
import { MigrationChecksumError, PermgraphError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';

export const SQL_DIR = fileURLToPath(new URL('../../sql/', import.meta.url));
/** Held while migrating, so concurrent `permgraph migrate` runs apply each file once. */
const MIGRATION_LOCK_KEY = 7238001000;

export interface Migration {
  version: number;
  name: string;
  text: string;
  checksum: string;
}

export interface AppliedMigration {
  version: number;
  name: string;
  checksum: string;
}

/** The numbered files in sql/ (NNN_name.sql), in order. */
export async function loadMigrations(dir = SQL_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => /^\d+_.+\.sql$/.test(f)).sort();
  const migrations: Migration[] = [];
  for (const file of files) {
    const text = await readFile(path.join(dir, file), 'utf8');
    migrations.push({
      version: Number.parseInt(file, 10),
      name: file,
      text,
      checksum: createHash('sha256').update(text).digest('hex'),
    });
  }
  const versions = new Set(migrations.map((m) => m.version));
  if (versions.size !== migrations.length) throw new PermgraphError(`duplicate migration numbers in ${dir}`);
  return migrations;
}

export async function appliedMigrations(db: Queryable): Promise<AppliedMigration[]> {
  const [exists] = await db.query(sql`select to_regclass('permgraph.migrations') is not null as present`);
  if (!exists?.present) return [];
  return db.query(sql`select version, name, checksum from permgraph.migrations order by version`);
}

/**
 * Applies every migration not yet applied, in one transaction under an
 * advisory lock. An applied file whose content changed is an error: the
 * database would no longer match what the file says.
 */
export async function migrate(db: Queryable, logger: Logger = silentLogger): Promise<{ applied: string[] }> {
  const migrations = await loadMigrations();
  return db.tx(async (tx) => {
    await tx.query(sql`select pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`);
    await tx.query(sql`
      create schema if not exists permgraph;
      create table if not exists permgraph.migrations (
        version integer primary key,
        name text not null,
        checksum text not null,
        applied_at timestamptz not null default now()
      );`);
    const applied = new Map((await appliedMigrations(tx)).map((m) => [m.version, m]));
    assertConsistent(migrations, applied);
    const done: string[] = [];
    for (const migration of migrations) {
      if (applied.has(migration.version)) continue;
      logger.info({ migration: migration.name }, 'applying migration');
      await tx.query(sql.__dangerous__rawValue(migration.text));
      await tx.query(sql`
        insert into permgraph.migrations (version, name, checksum)
        values (${migration.version}, ${migration.name}, ${migration.checksum})`);
      done.push(migration.name);
    }
    return { applied: done };
  });
}

function assertConsistent(files: Migration[], applied: Map<number, AppliedMigration>): void {
  const byVersion = new Map(files.map((m) => [m.version, m]));
  for (const row of applied.values()) {
    const file = byVersion.get(row.version);
    if (!file) {
      throw new PermgraphError(
        `database has migration ${row.name} that this permgraph does not know: the schema is newer than the package`,
      );
    }
    if (file.checksum !== row.checksum) {
      throw new MigrationChecksumError(
        `migration ${row.name} was changed after it was applied (checksum ${row.checksum.slice(0, 12)} in the database, ` +
          `${file.checksum.slice(0, 12)} on disk); add a new migration instead of editing an applied one`,
      );
    }
  }
}

export type SchemaState = 'ok' | 'behind' | 'ahead' | 'missing';

/** How the database's schema compares with this package's migrations. */
export async function schemaState(db: Queryable): Promise<{ state: SchemaState; pending: string[] }> {
  const files = await loadMigrations();
  const applied = await appliedMigrations(db);
  if (applied.length === 0) return { state: 'missing', pending: files.map((f) => f.name) };
  const known = new Set(files.map((f) => f.version));
  if (applied.some((a) => !known.has(a.version))) return { state: 'ahead', pending: [] };
  const done = new Set(applied.map((a) => a.version));
  const pending = files.filter((f) => !done.has(f.version)).map((f) => f.name);
  return { state: pending.length ? 'behind' : 'ok', pending };
}
