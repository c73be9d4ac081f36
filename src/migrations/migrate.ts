import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { MIGRATION_LOCK_KEY } from '../constants.ts';
import { sql, type Queryable } from '../db/pool.ts';
import { assertServerVersion } from '../db/server-version.ts';
import { InvalidInputError, MigrationChecksumError, MigrationLockTimeoutError, PermgraphError, PermissionDeniedError, SqlState, sqlStateOf, withoutCodeFrame } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';
import { readFunctionHistory, unknownFunctionVersions, type FunctionHistory } from './function-history.ts';

export const SQL_DIR = fileURLToPath(new URL('../../sql/', import.meta.url));
/** The numbered, frozen history: tables, columns, indexes, data moves, drops. */
export const MIGRATIONS_DIR = path.join(SQL_DIR, 'migrations');
/** The one current definition of every function, trigger and view, re-applied when changed. */
export const FUNCTIONS_DIR = path.join(SQL_DIR, 'functions');

export interface SqlFile {
  name: string;
  text: string;
  checksum: string;
}

export interface Migration extends SqlFile {
  version: number;
}

export interface AppliedMigration {
  version: number;
  name: string;
  checksum: string;
}

/** The .sql files of a folder matching `pattern`, in name order, with their checksums. */
async function loadSqlFiles(dir: string, pattern: RegExp): Promise<SqlFile[]> {
  const names = (await readdir(dir)).filter((f) => pattern.test(f)).sort();
  return Promise.all(
    names.map(async (name) => {
      const text = await readFile(path.join(dir, name), 'utf8');
      return { name, text, checksum: createHash('sha256').update(text).digest('hex') };
    }),
  );
}

/** The numbered files in sql/migrations/ (NNN_name.sql), in order. */
export async function loadMigrations(dir = MIGRATIONS_DIR): Promise<Migration[]> {
  const files = await loadSqlFiles(dir, /^\d+_.+\.sql$/);
  const migrations = files.map((file) => ({ ...file, version: Number.parseInt(file.name, 10) }));
  const versions = new Set(migrations.map((m) => m.version));
  if (versions.size !== migrations.length) throw new PermgraphError(`duplicate migration numbers in ${dir}`);
  return migrations;
}

export async function appliedMigrations(db: Queryable): Promise<AppliedMigration[]> {
  const [exists] = await db.query(sql`select to_regclass('permgraph.migrations') is not null as present`);
  if (!exists?.present) return [];
  return db.query(sql`select version, name, checksum from permgraph.migrations order by version`);
}

/** The files of sql/functions/ (NNN_name.sql), in the order they are applied. */
export async function loadFunctionFiles(dir = FUNCTIONS_DIR): Promise<SqlFile[]> {
  return loadSqlFiles(dir, /^\d+_.+\.sql$/);
}

export interface MigrateResult {
  /** Migrations applied by this run. */
  applied: string[];
  /** Function files (re-)applied by this run because they were new or changed. */
  functions: string[];
  /**
   * The roles' rights this run found missing and granted, on a schema it
   * otherwise left as it was (a backup restored into a cluster without the
   * roles: sql/functions/900_privileges.sql); empty when it applied
   * anything, which grants every right anyway.
   */
  rights: string[];
}

export interface MigrateOptions {
  /**
   * Applies this package's function files over versions of them it never
   * had, which migrate otherwise refuses as a newer package's: for a
   * development checkout whose database applied its own edits before
   * `npm run schema:dump` recorded them. Never over a newer release.
   */
  overwriteUnknownFunctions?: boolean;
  /**
   * Aborting it ends migrate's giving way: a pause between attempts ends at
   * once, no attempt starts after it, and migrate rejects with the signal's
   * reason, having changed nothing (an attempt that gave way rolled back).
   * An attempt under way is not cut short: its waits for nodes' and grants'
   * locks end within LOCK_WAIT_MS, but what it applies takes as long as it
   * takes, and so does a wait for another migrate run (the advisory lock);
   * if it commits, migrate resolves with what it applied.
   */
  signal?: AbortSignal;
  /**
   * How long migrate keeps trying while transactions hold locks it needs,
   * in milliseconds, before it gives up (MigrationLockTimeoutError); 0:
   * one attempt. Default LOCK_PATIENCE_MS (5 minutes).
   */
  lockPatienceMs?: number;
}

/**
 * Applies every migration not yet applied, then re-applies every function
 * file whose content changed since it was last applied (new ones included),
 * both in name order, in one transaction under an advisory lock. An applied
 * migration whose content changed is an error: the database would no longer
 * match its history. Function files are the opposite: each is the current
 * definition, so a changed one is simply applied again. Then it grants the
 * three roles their rights, when it applied anything or finds one missing.
 * On a database in use it gives way to transactions that hold the locks it
 * needs, and tries again, for up to `options.lockPatienceMs`.
 */
export async function migrate(db: Queryable, logger: Logger = silentLogger, options: MigrateOptions = {}): Promise<MigrateResult> {
  const { signal } = options;
  const patienceMs = lockPatience(options.lockPatienceMs);
  signal?.throwIfAborted();
  await assertServerVersion(db);
  const [migrations, functionFiles, history] = await Promise.all([loadMigrations(), loadFunctionFiles(), readFunctionHistory(SQL_DIR)]);
  const started = Date.now();
  let outwait = false;
  for (let attempt = 1; ; attempt++) {
    signal?.throwIfAborted();
    const waits: LockWaits = { table: null };
    try {
      return await migrateOnce(db, migrations, functionFiles, options.overwriteUnknownFunctions === true ? null : history, logger, outwait, waits);
    } catch (error) {
      const state = sqlStateOf(error);
      if (state !== SqlState.lockNotAvailable && state !== SqlState.deadlockDetected) throw error;
      // (it gave way and rolled back: no further attempt once aborted)
      signal?.throwIfAborted();
      outwait = await autovacuumHoldsLock(db);
      const waitedMs = Date.now() - started;
      if (waitedMs + LOCK_RETRY_PAUSE_MS > patienceMs) {
        // (the table named: a lock_timeout's message names none)
        const last = `${waits.table === null ? '' : `, for ${waits.table}`}: ${withoutCodeFrame((error as Error).message)}`;
        throw new MigrationLockTimeoutError(
          `migrate gave way ${attempt} time(s) in ${Math.round(waitedMs / 1000)} s to transactions holding locks it needs ` +
            `(the last${last}): nothing was changed. Find the long-running transaction on permgraph's tables ` +
            "in pg_stat_activity and end it or wait for it; if it is the worker's (batches that take seconds, back to back), " +
            'stop the workers, migrate, then start the upgraded ones (docs/operations.md, Upgrades)',
          { table: waits.table, attempts: attempt, waitedMs },
          { cause: error },
        );
      }
      logger.warn(
        { attempt, sqlState: state, table: waits.table, waitedMs, retryInMs: LOCK_RETRY_PAUSE_MS, autovacuum: outwait },
        outwait
          ? 'migrate gave way to an autovacuum holding a lock it needs; trying again, waiting past deadlock_timeout for the server to cancel it'
          : 'migrate gave way to a transaction holding a lock it needs; trying again',
      );
      await pause(LOCK_RETRY_PAUSE_MS, signal);
    }
  }
}

/** options.lockPatienceMs, checked: a number of milliseconds, 0 or more (default LOCK_PATIENCE_MS). */
function lockPatience(value: number | undefined): number {
  if (value === undefined) return LOCK_PATIENCE_MS;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new InvalidInputError(`lockPatienceMs must be a finite number of milliseconds, 0 or more, got ${String(value)}`);
  }
  return value;
}

/** Sleeps `ms`, or until `signal` aborts: then it rejects with the signal's reason (node's own sleep rejects with an AbortError of its own). */
async function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await sleep(ms, undefined, { signal });
  } catch (error) {
    signal?.throwIfAborted();
    throw error;
  }
}

/**
 * The table an attempt of migrate is waiting for now (lockForUpgrade sets
 * it), or null: what it says of the lock it could not take when it gives up.
 */
interface LockWaits {
  table: string | null;
}

/**
 * How long one attempt of migrate waits for a lock (lock_timeout) before it
 * rolls back and gives way: every write and read of the table it waits for
 * queues behind its request meanwhile (lockForUpgrade).
 */
const LOCK_WAIT_MS = 200;
/** The pause between attempts, in which the queued writes and reads run. */
const LOCK_RETRY_PAUSE_MS = 1000;
/** How long migrate keeps trying by default (MigrateOptions.lockPatienceMs): longer than a full recomputation's batch (60-90 s for 5.6 M rows), which holds nodes and grants. */
const LOCK_PATIENCE_MS = 300_000;

/**
 * Whether an autovacuum worker holds a lock on a relation of permgraph's
 * now. PostgreSQL cancels an autovacuum (not one against wraparound) that
 * keeps a lock from a backend only once that backend has waited
 * deadlock_timeout (1 s by default) for it, in its deadlock check: a wait
 * cut short by a lock_timeout below that never cancels it, and the
 * autovacuum (of nodes, with cost-based delays, minutes) kept every
 * attempt out. (pg_locks and pg_stat_activity's backend_type are open to
 * every login.)
 */
async function autovacuumHoldsLock(db: Queryable): Promise<boolean> {
  const [{ held }] = await db.query(sql`
    select exists (
      select 1 from pg_catalog.pg_locks l
      join pg_catalog.pg_stat_activity a on a.pid = l.pid
      join pg_catalog.pg_class c on c.oid = l.relation
      where l.locktype = 'relation' and l.granted
        and l.database = (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database())
        and a.backend_type = 'autovacuum worker'
        and c.relnamespace = (select n.oid from pg_catalog.pg_namespace n where n.nspname = 'permgraph')) as held`);
  return held === true;
}

async function migrateOnce(
  db: Queryable, migrations: Migration[], functionFiles: SqlFile[], history: FunctionHistory | null, logger: Logger, outwait: boolean, waits: LockWaits,
): Promise<MigrateResult> {
  return db.tx(async (tx) => {
    // Whatever the session's path, names in the files resolve to pg_catalog or
    // are schema-qualified (an SQL-standard function body is resolved now).
    // First: on a path of the caller's (a pool of its own, a pooler's
    // session), an unqualified call could run a function planted there.
    await tx.query(sql`set local search_path = pg_catalog, pg_temp`);
    await tx.query(sql`select pg_advisory_xact_lock(${MIGRATION_LOCK_KEY}::bigint)`);
    // The history tables, on the first run only: CREATE SCHEMA IF NOT EXISTS
    // needs CREATE on the database even when the schema is there, so a
    // worker's login (which a deployment also runs `migrate` or `worker
    // --migrate` as, to find nothing to do) would fail on it.
    const [{ present }] = await tx.query(sql`
      select to_regclass('permgraph.migrations') is not null and to_regclass('permgraph.function_files') is not null as present`);
    if (!present) {
      await assertMayCreateSchema(tx);
      await tx.query(sql`
        create schema if not exists permgraph;
        create table if not exists permgraph.migrations (
          version integer primary key,
          name text not null,
          checksum text not null,
          applied_at timestamptz not null default now()
        );
        create table if not exists permgraph.function_files (
          name text primary key,
          checksum text not null,
          applied_at timestamptz not null default now()
        );`);
    }
    const applied = new Map((await appliedMigrations(tx)).map((m) => [m.version, m]));
    assertConsistent(migrations, applied);
    const pending = migrations.filter((m) => !applied.has(m.version));
    if (pending.length) await assertReadsClusterIdentity(tx);
    const appliedFunctions = await appliedFunctionChecksums(tx);
    // (history null: overwriteUnknownFunctions)
    const newer = history === null ? [] : unknownFunctionVersions(history, functionFiles, appliedFunctions);
    if (newer.length) throw new PermgraphError(newerFunctionsMessage(newer));
    const changed = functionFiles.filter((file) => appliedFunctions.get(file.name) !== file.checksum);
    if (pending.length || changed.length) await lockForUpgrade(tx, outwait, waits);
    const done: string[] = [];
    for (const migration of pending) {
      logger.debug({ migration: migration.name }, 'applying migration');
      await tx.query(sql.__dangerous__rawValue(migration.text));
      await tx.query(sql`
        insert into permgraph.migrations (version, name, checksum)
        values (${migration.version}, ${migration.name}, ${migration.checksum})`);
      done.push(migration.name);
    }
    const functions = await applyFunctionFiles(tx, changed, logger);
    // (a run that applied nothing asks whether a right is missing: any of the roles may ask)
    const rights: string[] = done.length || functions.length ? [] : (await tx.query(sql`select permgraph._missing_rights() as missing`))[0].missing;
    if (done.length || functions.length || rights.length) {
      // Objects created by this run start with default privileges: take them away again.
      await tx.query(sql`select permgraph._apply_privileges()`);
      // (one line for the run; each file at debug)
      if (rights.length) logger.info({ rights: rights.length, missing: rights.slice(0, 5) }, "granted the roles' missing rights");
      else logger.info({ migrations: done.length, functionFiles: functions.length, schemaVersion: migrations.at(-1)?.name }, 'schema migrated');
    }
    return { applied: done, functions, rights };
  });
}

/**
 * The schema's owner reads the cluster's identity with pg_control_system()
 * (migration 049, and the first batch after each start of the server:
 * sql/functions/048_cluster_identity.sql). PostgreSQL lets every role call
 * it; a hardened server may have revoked it from PUBLIC. The GRANT that
 * `role` (the session's user when not given) lacks for it, or null: what
 * migrate refuses on and doctor's owner check fails on.
 */
export async function missingClusterIdentityGrant(db: Queryable, role?: string): Promise<string | null> {
  const [row] = await db.query(sql`
    select pg_catalog.has_function_privilege(coalesce(${role ?? null}::text, current_user), 'pg_catalog.pg_control_system()', 'execute') as allowed,
           pg_catalog.quote_ident(coalesce(${role ?? null}::text, current_user)) as grantee`);
  return row.allowed ? null : `grant execute on function pg_catalog.pg_control_system() to ${row.grantee}`;
}

/** Without that right the migration would fail with a bare "permission denied", which reads as if the login were not the owner. */
async function assertReadsClusterIdentity(tx: Queryable): Promise<void> {
  const grant = await missingClusterIdentityGrant(tx);
  if (grant === null) return;
  const [{ owner }] = await tx.query(sql`select pg_catalog.quote_ident(current_user) as owner`);
  throw new PermgraphError(
    `the schema's owner ${owner} may not execute pg_catalog.pg_control_system(); as a superuser, run: ${grant} ` +
      "(permgraph reads the cluster's identity with it, to tell a backup restored from another cluster)",
  );
}

/**
 * The first run creates the schema, which needs CREATE on the database.
 * Without it PostgreSQL says only "permission denied for database app",
 * which reads as if the login were not the one to own the schema, when the
 * intended owner merely lacks that one right (operations.md, Roles and logins).
 */
async function assertMayCreateSchema(tx: Queryable): Promise<void> {
  const [row] = await tx.query(sql`
    select pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE') as allowed,
           pg_catalog.quote_ident(pg_catalog.current_database()) as database,
           pg_catalog.quote_ident(current_user) as login`);
  if (row.allowed) return;
  throw new PermissionDeniedError(
    `the first \`permgraph migrate\` creates schema permgraph, which needs CREATE on database ${row.database}: ` +
      `as its owner or a superuser, run: grant create on database ${row.database} to ${row.login} ` +
      '(or migrate as the role that is to own the schema and has that right)',
  );
}

/**
 * Before an upgrade changes anything: the locks every re-created trigger of
 * nodes and grants takes (ACCESS EXCLUSIVE), first, and from here on no lock
 * waited for longer than LOCK_WAIT_MS (then migrate() tries again). Grants
 * first, waited for; then nodes, never waited for while grants is held:
 * writers hold one of the two while they wait for the other (an insert into
 * grants reads nodes; syncGrants reads nodes, then writes grants), so an
 * upgrade queued for the second would close a cycle with them, and
 * PostgreSQL's deadlock check could fail the writer (when its
 * deadlock_timeout runs out first) as well as the upgrade. Nodes is tried
 * without waiting (NOWAIT) until LOCK_WAIT_MS has passed, so neither writes
 * nor the checks and listings that read nodes queue behind it, unless only
 * autovacuum workers hold it: the server cancels one for a backend that
 * waits for it (autovacuumHoldsLock). `outwait`: an autovacuum held a lock
 * when the last attempt gave way; this one waits deadlock_timeout longer
 * for every lock. `waits` names the table it waits for while it does.
 */
async function lockForUpgrade(tx: Queryable, outwait: boolean, waits: LockWaits): Promise<void> {
  await tx.query(sql`
    select pg_catalog.set_config('lock_timeout',
      (${LOCK_WAIT_MS}::bigint + case when ${outwait}::boolean
         then (extract(epoch from pg_catalog.current_setting('deadlock_timeout')::interval) * 1000)::bigint else 0 end)::text || 'ms',
      true)`);
  // (not on a first install, and not by a login that does not own them: the
  // upgrade's first statement refuses that one, saying what it may not do)
  const [{ owned }] = await tx.query(sql`
    select count(*) = 2 as owned from pg_catalog.pg_class c
    where c.oid in (to_regclass('permgraph.nodes'), to_regclass('permgraph.grants')) and pg_catalog.pg_has_role(c.relowner, 'USAGE')`);
  if (!owned) return;
  waits.table = 'permgraph.grants';
  await tx.query(sql`lock table permgraph.grants in access exclusive mode`);
  waits.table = 'permgraph.nodes';
  await tx.query(sql`
    do $$
    declare
      give_up constant timestamptz := pg_catalog.clock_timestamp() + pg_catalog.current_setting('lock_timeout')::interval;
    begin
      loop
        begin
          lock table permgraph.nodes in access exclusive mode nowait;
          return;
        exception when lock_not_available then
          -- (held by autovacuum workers only: waited for, which cancels them)
          if not exists (select 1 from pg_catalog.pg_locks l
                         left join pg_catalog.pg_stat_activity a on a.pid = l.pid
                         where l.locktype = 'relation' and l.relation = 'permgraph.nodes'::pg_catalog.regclass and l.granted
                           and l.database = (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database())
                           and l.pid is distinct from pg_catalog.pg_backend_pid()
                           and a.backend_type is distinct from 'autovacuum worker') then
            lock table permgraph.nodes in access exclusive mode;
            return;
          end if;
          if pg_catalog.clock_timestamp() >= give_up then raise; end if;
          perform pg_catalog.pg_sleep(0.005);
        end;
      end loop;
    end $$`);
  waits.table = null;
}

/** Why migrate refuses a database whose function files a newer package applied (unknownFunctionVersions). */
function newerFunctionsMessage(names: string[]): string {
  return `database has function file(s) ${names.join(', ')} in a version this permgraph never had: ` +
    'the schema is newer than the package (a newer permgraph migrated it: upgrade permgraph), or they were edited by hand ' +
    '(a development checkout\'s own edits: `permgraph migrate --overwrite-unknown-functions` applies this package\'s)';
}

async function applyFunctionFiles(tx: Queryable, files: SqlFile[], logger: Logger): Promise<string[]> {
  const applied: string[] = [];
  for (const file of files) {
    logger.debug({ functions: file.name }, 'applying function file');
    await tx.query(sql.__dangerous__rawValue(file.text));
    await tx.query(sql`
      insert into permgraph.function_files (name, checksum) values (${file.name}, ${file.checksum})
      on conflict (name) do update set checksum = excluded.checksum, applied_at = now()`);
    applied.push(file.name);
  }
  return applied;
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

/** What schemaState's 'modified' means, for doctor and the commands that refuse it. */
export function modifiedMigrations(names: string[]): string {
  return `migrations applied by the database differ from this package's: ${names.join(', ')} (an applied migration was edited; migrate refuses until they match)`;
}

export type SchemaState = 'ok' | 'behind' | 'ahead' | 'missing' | 'modified';

/**
 * How the database's schema compares with this package: `pending` names the
 * migrations not yet applied and the function files not applied in their
 * current content; either makes the state 'behind'. 'modified': a migration
 * the database applied differs from this package's file of that name (which
 * migrate refuses, MigrationChecksumError); `pending` names them.
 */
export async function schemaState(db: Queryable): Promise<{ state: SchemaState; pending: string[] }> {
  const [files, functionFiles, history] = await Promise.all([loadMigrations(), loadFunctionFiles(), readFunctionHistory(SQL_DIR)]);
  const applied = await appliedMigrations(db);
  if (applied.length === 0) return { state: 'missing', pending: files.map((f) => f.name) };
  const known = new Set(files.map((f) => f.version));
  if (applied.some((a) => !known.has(a.version))) return { state: 'ahead', pending: [] };
  const checksums = new Map(files.map((f) => [f.version, f.checksum]));
  const modified = applied.filter((a) => checksums.get(a.version) !== a.checksum).map((a) => a.name);
  if (modified.length) return { state: 'modified', pending: modified };
  const done = new Set(applied.map((a) => a.version));
  const appliedFunctions = await appliedFunctionChecksums(db);
  if (unknownFunctionVersions(history, functionFiles, appliedFunctions).length) return { state: 'ahead', pending: [] };
  const pending = [
    ...files.filter((f) => !done.has(f.version)).map((f) => f.name),
    ...functionFiles.filter((f) => appliedFunctions.get(f.name) !== f.checksum).map((f) => `functions/${f.name}`),
  ];
  return { state: pending.length ? 'behind' : 'ok', pending };
}

async function appliedFunctionChecksums(db: Queryable): Promise<Map<string, string>> {
  const [exists] = await db.query(sql`select to_regclass('permgraph.function_files') is not null as present`);
  if (!exists?.present) return new Map();
  const rows: { name: string; checksum: string }[] = await db.query(sql`select name, checksum from permgraph.function_files`);
  return new Map(rows.map((r) => [r.name, r.checksum]));
}
