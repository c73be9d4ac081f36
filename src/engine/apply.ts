import { isTransaction, type Connection, type SQLQuery } from '@databases/pg';
import { sql, type Queryable } from '../db/pool.ts';
import { DEFAULT_MAX_BATCH, WORKER_CLIENT_CHECK_INTERVAL_MS, WORKER_SESSION_SETTINGS } from '../constants.ts';
import { withRetries } from '../db/transaction.ts';
import { inApplierTurn } from './applier-turn.ts';
import { PermgraphError, SessionMovedError, SqlState, sqlStateOf, withInputErrors } from '../errors.ts';

export interface BatchResult {
  /** none: nothing was pending; incremental: only the affected region; full: whole-table recomputation. */
  mode: 'none' | 'incremental' | 'full';
  /** An incremental batch that only added edges, computed semi-naively: only the rows that rise. */
  delta: boolean;
  /** An incremental batch applied by the one-statement path for small batches (sql/functions/055_local_change.sql). */
  local: boolean;
  changes: number;
  /** Rows whose valid_until had passed, recomputed by this batch (an expiry needs no other change). */
  expired: number;
  /** Size of the affected region (incremental mode only; with delta, the pairs whose rows rise). */
  regionPairs: number | null;
  inserted: number;
  updated: number;
  deleted: number;
  /** Server-side duration. */
  ms: number;
  /** Milliseconds until the earliest valid_until still ahead (the worker's timer); null when no row expires. */
  nextExpiryInMs: number | null;
  /** Change rows this batch moved into a long job (their region was above chunkPairs, or they were a backlog: see maxChanges). */
  toLongJob: number;
  /** Change rows applied by this batch whose tokens wait for the running long job (they touch its users). */
  deferred: number;
  /** A long job is running after this batch: apply its chunks (applyJobChunk). */
  longJobActive: boolean;
  /**
   * The batch took one part of a queue of 24 or more removals and
   * additions (the removals, or the additions after a removals batch) and
   * left the rest pending: apply again now. Only in a worker session
   * (useWorkerSession); anywhere else a batch takes every pending change.
   */
  morePending: boolean;
}

export interface ApplyOptions {
  /**
   * More pending changes than this are applied by a full recomputation, in
   * one transaction; with chunkPairs set, they become a long job instead
   * (a backlog, recomputed a chunk of users at a time while later changes
   * flow).
   */
  maxChanges?: number;
  /** A larger affected region than this is applied by a full recomputation (with chunkPairs set: a long job, as maxChanges). */
  maxPairs?: number;
  /**
   * A change whose own region is larger than this (pairs) becomes a long
   * job, applied in chunks of about this size by applyJobChunk() while later
   * batches apply the rest (sql/functions/065_long_job.sql).
   * Unset: off, every batch is applied whole.
   */
  chunkPairs?: number;
  /**
   * Compute the graph as of this time instead of now: grants expiring by
   * then are left out. Not earlier than now, and not later unless the
   * session is the schema's owner (the server refuses both): a batch ahead
   * of time leaves out rows that are still valid, until refresh(). For tests.
   */
  at?: Date;
  /**
   * The largest region (pairs) a small batch is applied by in one statement
   * (sql/functions/055_local_change.sql); a larger one takes the ordinary
   * path. Unset: the engine's default; 0: never (tests and benchmarks
   * compare the two paths with it).
   */
  localPairs?: number;
}

/**
 * Applies every change committed before the call, as one batch in one
 * transaction that never blocks writers: a small batch as one statement
 * (applyLocalChanges below), any other in REPEATABLE READ, its snapshot
 * taken once the batch before it has committed (inApplierTurn).
 */
export async function applyChanges(db: Queryable, options: ApplyOptions = {}): Promise<BatchResult> {
  return withInputErrors(() => runApply(db, options, false));
}

/** Recomputes the whole table, writing only rows whose value differs, and marks pending changes done. */
export async function refresh(db: Queryable, options: Pick<ApplyOptions, 'at'> = {}): Promise<BatchResult> {
  return withInputErrors(() => runApply(db, options, true));
}

/**
 * Makes a dedicated connection (the worker's) a worker session. Every
 * transaction it starts is REPEATABLE READ by default, so that one
 * statement is one snapshot: a batch is then a single round trip (no BEGIN
 * and COMMIT of its own). And a queue of 24 or more changes that mixes
 * removals and additions is applied as two batches, the removals first, then the rest
 * (more_pending; sql/functions/045_batch_split.sql): cheaper, and a
 * revocation waits for no addition. It also runs without timeouts and
 * with dead-peer detection (WORKER_SESSION_SETTINGS); with idleLimitMs,
 * the session ends itself once idle (or idle in a transaction) that long,
 * as a frozen worker's would (WORKER_IDLE_GRACE_MS). Only for a
 * connection nobody else uses; undo it with resetWorkerSession. Returns
 * the session's identity on the server, which the worker's watchdog asks
 * about when the connection stops answering.
 */
export async function useWorkerSession(conn: Connection, options: { idleLimitMs?: number } = {}): Promise<SessionIdentity> {
  const [session] = await conn.query(sql`
    set default_transaction_isolation = 'repeatable read';
    set ${splitSetting} = on;
    select pg_backend_pid() as pid,
           (select extract(epoch from backend_start)::text from pg_stat_activity where pid = pg_backend_pid()) as started,
           host(inet_server_addr()) as server_address, inet_server_port() as server_port`);
  const idle = options.idleLimitMs === undefined ? {} : {
    idle_session_timeout: String(options.idleLimitMs),
    idle_in_transaction_session_timeout: String(options.idleLimitMs),
  };
  await conn.query(sql`
    select set_config(s.name, v.value, false)
    from jsonb_each_text(${JSON.stringify({ ...WORKER_SESSION_SETTINGS, ...idle })}::jsonb) v(name, value)
    join pg_settings s on s.name = v.name`);
  await conn
    .query(sql`select set_config(${CLIENT_CHECK_SETTING}, ${String(WORKER_CLIENT_CHECK_INTERVAL_MS)}, false)`)
    .catch((error: unknown) => {
      // only a platform that cannot check refuses it (22023): the batch then runs on as before
      if (sqlStateOf(error) !== SqlState.invalidParameterValue) throw error;
    });
  return {
    pid: Number(session.pid),
    startedAt: session.started ?? null,
    server: { address: session.server_address ?? null, port: session.server_port === null ? null : Number(session.server_port) },
  };
}

/**
 * A session as the server knows it: its backend's pid, and when that
 * backend started (epoch seconds, exact, as text; null if unknown): a pid
 * alone may have been reused by a later session.
 */
export interface SessionIdentity {
  pid: number;
  startedAt: string | null;
  /**
   * The server's address and port for the session's connection
   * (inet_server_addr(), inet_server_port(); both null over a Unix socket);
   * undefined: not known. A pid means something on this server only.
   */
  server?: { address: string | null; port: number | null };
}

export async function resetWorkerSession(conn: Connection): Promise<void> {
  await conn.query(sql`
    reset default_transaction_isolation;
    reset ${splitSetting}`);
  await conn.query(sql`
    select set_config(s.name, s.reset_val, false) from pg_settings s
    where s.name = any(${[...Object.keys(WORKER_SESSION_SETTINGS), CLIENT_CHECK_SETTING]}::text[])`);
}

/** Set apart from WORKER_SESSION_SETTINGS: see WORKER_CLIENT_CHECK_INTERVAL_MS. */
const CLIENT_CHECK_SETTING = 'client_connection_check_interval';

/** Why a worker, or `worker --once`, refuses a server in recovery. */
export const STANDBY_REFUSAL =
  'this server is a standby (in recovery), where nothing can be written: run the worker against the primary (docs/replicas.md)';

/** Refuses a standby, which would fail every batch with "read-only transaction". */
export async function requirePrimary(db: Queryable): Promise<void> {
  const [{ standby }] = await db.query(sql`select pg_is_in_recovery() as standby`);
  if (standby) throw new PermgraphError(STANDBY_REFUSAL);
}

/** The session setting that makes apply_changes() split a mixed queue (sql/functions/045_batch_split.sql). */
export const SPLIT_MIXED_BATCHES_SETTING = 'permgraph.split_mixed_batches';
const splitSetting = sql.ident(...SPLIT_MIXED_BATCHES_SETTING.split('.'));

/**
 * applyChanges() as one statement, its own transaction: for a connection
 * made a worker session (useWorkerSession), so that a batch costs one
 * round trip instead of three. On a connection left at READ COMMITTED it
 * is still correct, but apply_changes() then locks writers out for the
 * batch (060_apply.sql). Given the `session` useWorkerSession returned,
 * the batch runs on that server session only (queryOnSession).
 */
export async function applyChangesOnSession(conn: Connection, options: ApplyOptions = {}, session?: SessionIdentity): Promise<BatchResult> {
  const call = applyCall(options, false);
  const result = await withRetries(async () =>
    session === undefined ? (await conn.query(sql`select ${call} as result`))[0].result : await queryOnSession(conn, session, call),
  );
  return toBatchResult(result);
}

/**
 * The value of `expression`, computed on the server session `session`
 * only: a connection through a pooler that moved it to another session (a
 * transaction pooler's) gets SessionMovedError, and nothing was run. The
 * statement says which session answered it; the expression is evaluated
 * only where that is `session` (a volatile function in CASE is computed
 * for the branch taken only). A server reuses a process id only once its
 * session has ended, and a pooler's other sessions are alive.
 */
export async function queryOnSession<T = unknown>(conn: Connection, session: SessionIdentity, expression: SQLQuery): Promise<T> {
  const [row] = await conn.query(sql`
    select pg_catalog.pg_backend_pid() as served_by,
           case when pg_catalog.pg_backend_pid() = ${session.pid}::integer then ${expression} end as result`);
  if (Number(row.served_by) !== session.pid) throw new SessionMovedError(session.pid, Number(row.served_by));
  return row.result as T;
}

async function runApply(db: Queryable, options: ApplyOptions, forceFull: boolean): Promise<BatchResult> {
  if (!forceFull) {
    const local = await applyLocalChanges(db, options);
    if (local) return local;
  }
  const [row] = await inApplierTurn(db, (tx) => tx.query(sql`select ${applyCall(options, forceFull)} as result`));
  return toBatchResult(row.result);
}

/**
 * A small batch in one round trip: apply_local_changes() as the one
 * statement of its own transaction, at the connection's isolation level
 * (READ COMMITTED is fine: it is one statement, one snapshot, and it does
 * not lock writers out; sql/functions/055_local_change.sql). A batch that
 * only adds is computed semi-naively there too; nothing pending and
 * nothing expired is answered there ('none'). Null when the local path
 * does not fit the batch (nothing was written; the caller takes
 * apply_changes), or cannot be tried here: inside a caller's transaction
 * (its statements would be part of it), with a time to compute at (the
 * local path computes no expiries), or with the local path off.
 */
async function applyLocalChanges(db: Queryable, options: ApplyOptions): Promise<BatchResult | null> {
  if (isTransaction(db) || options.at !== undefined || options.localPairs === 0) return null;
  const [row] = await withRetries(() =>
    db.query(sql`
      select permgraph.apply_local_changes(
        p_max_changes => ${options.maxChanges ?? DEFAULT_MAX_BATCH}::integer,
        p_max_pairs => ${options.maxPairs ?? null}::bigint,
        p_chunk_pairs => ${options.chunkPairs ?? null}::bigint,
        p_local_pairs => ${options.localPairs ?? null}::bigint) as result`),
  );
  return row.result === null ? null : toBatchResult(row.result);
}

/** The call of apply_changes() for these options: one batch's value (its jsonb result). */
function applyCall(options: ApplyOptions, forceFull: boolean): SQLQuery {
  return sql`
    permgraph.apply_changes(
      p_max_changes => ${options.maxChanges ?? DEFAULT_MAX_BATCH}::integer,
      p_max_pairs => ${options.maxPairs ?? null}::bigint,
      p_force_full => ${forceFull},
      p_at => ${options.at ?? null}::timestamptz,
      p_chunk_pairs => ${options.chunkPairs ?? null}::bigint,
      p_local_pairs => ${options.localPairs ?? null}::bigint)`;
}

function toBatchResult(raw: Record<string, unknown>): BatchResult {
  return {
    mode: raw.mode as BatchResult['mode'],
    delta: raw.delta === true,
    local: raw.local === true,
    changes: Number(raw.changes ?? 0),
    expired: Number(raw.expired ?? 0),
    regionPairs: raw.region_pairs == null ? null : Number(raw.region_pairs),
    inserted: Number(raw.inserted ?? 0),
    updated: Number(raw.updated ?? 0),
    deleted: Number(raw.deleted ?? 0),
    ms: Number(raw.ms ?? 0),
    nextExpiryInMs: raw.next_expiry_in_ms == null ? null : Number(raw.next_expiry_in_ms),
    toLongJob: Number(raw.to_long_job ?? 0),
    deferred: Number(raw.deferred ?? 0),
    longJobActive: raw.long_job_active === true,
    morePending: raw.more_pending === true,
  };
}
