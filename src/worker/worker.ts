import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { openPool, sql, type ConnectionPool } from '../db/pool.ts';
import type { Connection } from '@databases/pg';
import {
  DEFAULT_CHUNK_PAIRS,
  DEFAULT_MAX_BATCH,
  DEFAULT_POLL_INTERVAL_MS,
  DEFAULT_STANDBY_INTERVAL_MS,
  MAX_INTERVAL_MS,
  MAX_RETRY_DELAY_MS,
  SESSION_END_WAIT_MS,
  STALL_CHECK_INTERVAL_MS,
  STALL_CHECK_MAX_INTERVAL_MS,
  STALL_CHECK_TIMEOUT_MS,
  WORKER_APPLICATION_NAME,
  WORKER_IDLE_GRACE_MS,
} from '../constants.ts';
import { closeConnectionNow, connectionPeer } from '../db/close-connection.ts';
import {
  applyChangesOnSession,
  queryOnSession,
  resetWorkerSession,
  STANDBY_REFUSAL,
  useWorkerSession,
  type BatchResult,
  type SessionIdentity,
} from '../engine/apply.ts';
import { applyJobChunk, type ChunkResult } from '../engine/long-job.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';
import { isConnectionError, PermgraphError, SessionMovedError, SharedSessionError, sqlStateOf } from '../errors.ts';
import { connectionPath, serverSession, sharedSessionError, sharesSessions, type ConnectionPath } from '../db/pooler.ts';
import { startListener, type Listener } from './listener.ts';
import { createProbe, type Probe } from './probe.ts';
import { requireIntervalMs, Wakeup } from './wakeup.ts';
import { ConnectionWatchdog, WAITING_FOR_SERVER_SESSION, type WatchdogTimings } from './watchdog.ts';

export interface WorkerOptions {
  url: string;
  logger?: Logger;
  /** Apply pending changes at least this often even without a notification. */
  pollIntervalMs?: number;
  /** How often a standby tries to take over the applier role. */
  standbyIntervalMs?: number;
  /** More pending changes than this are a backlog, taken as a long job (with chunkPairs null: one full recomputation). */
  maxBatch?: number;
  /** LISTEN for wake-ups (default true); without it the worker only polls. */
  listen?: boolean;
  /**
   * A change whose region is larger than this (pairs) becomes a long job,
   * applied in chunks of about this size between batches. null: off, every
   * batch is applied whole (and may hold up the changes behind it).
   */
  chunkPairs?: number | null;
  /**
   * How the worker notices that the database stopped answering on its
   * connections (a network partition), instead of waiting for the OS
   * (src/worker/watchdog.ts): checkIntervalMs (STALL_CHECK_INTERVAL_MS),
   * checkTimeoutMs (STALL_CHECK_TIMEOUT_MS), maxCheckIntervalMs
   * (STALL_CHECK_MAX_INTERVAL_MS). Shorter ones are for tests.
   */
  watchdog?: Partial<WatchdogTimings>;
}

export interface WorkerEvents {
  batch: [BatchResult];
  chunk: [ChunkResult];
  role: ['active' | 'standby'];
  error: [Error];
  stopped: [];
}

/**
 * The daemon: one active applier per database (a session advisory lock),
 * others wait as hot standbys. Woken by LISTEN/NOTIFY, by a timer set to the
 * earliest valid_until ahead (an expiry needs no write), and by a polling
 * backstop; every wake applies all pending changes and due expiries in one
 * transaction, except changes whose region is above chunkPairs: those become
 * a long job, and the loop alternates one chunk of it with a batch of what
 * came meanwhile.
 */
export class Worker extends EventEmitter<WorkerEvents> {
  readonly options: Required<Omit<WorkerOptions, 'logger' | 'watchdog'>> & { watchdog: WatchdogTimings };
  private readonly logger: Logger;
  /** Asks the server about the worker's session when a statement goes unanswered. */
  private readonly probe: Probe;
  /** The watchdog of the connection in use, if any. */
  private watchdog: ConnectionWatchdog | undefined;
  private readonly wakeup = new Wakeup();
  private readonly pool: ConnectionPool;
  private subscriber: Listener | undefined;
  private stopping = false;
  /** Failures since the last batch that succeeded: each retry waits longer (retryDelay). */
  private failuresInARow = 0;
  private lastFailureAt = 0;
  /** Aborted by stop(): ends a wait before the next try. */
  private readonly stopSignal = new AbortController();
  private starting: Promise<void> | undefined;
  private stopped: Promise<void> | undefined;
  private loop: Promise<void> | undefined;
  private currentRole: 'active' | 'standby' | undefined;
  private failed: SharedSessionError | undefined;
  /**
   * The server session the last connection set up (useWorkerSession), until
   * the applier role's lock was released on it (serveWatched's finally). A
   * connection lost first leaves the lock and settings there: a server ends
   * the session soon after, a session pooler resets it, but a transaction
   * pooler (a pool reloaded in that mode, where the worker was alone on its
   * session) keeps the session, lock and all, for its other clients.
   */
  private unreleased: SessionIdentity | undefined;
  /** The batch or long job chunk under way on the applier's connection, if any: stop() waits for it, and says so. */
  private running: { operation: string; since: number } | undefined;

  constructor(options: WorkerOptions) {
    super();
    this.options = {
      pollIntervalMs: DEFAULT_POLL_INTERVAL_MS,
      standbyIntervalMs: DEFAULT_STANDBY_INTERVAL_MS,
      maxBatch: DEFAULT_MAX_BATCH,
      listen: true,
      chunkPairs: DEFAULT_CHUNK_PAIRS,
      ...options,
      watchdog: { checkIntervalMs: STALL_CHECK_INTERVAL_MS, checkTimeoutMs: STALL_CHECK_TIMEOUT_MS, maxCheckIntervalMs: STALL_CHECK_MAX_INTERVAL_MS, ...options.watchdog },
    };
    requireIntervalMs(this.options.pollIntervalMs, 'pollIntervalMs');
    requireIntervalMs(this.options.standbyIntervalMs, 'standbyIntervalMs');
    this.logger = options.logger ?? silentLogger;
    this.probe = createProbe(options.url, this.options.watchdog.checkTimeoutMs);
    this.pool = openPool(options.url, { poolSize: 1, applicationName: WORKER_APPLICATION_NAME });
  }

  /** 'active' (the applier), 'standby', or undefined before start() and once stop() has returned. */
  get role(): 'active' | 'standby' | undefined {
    return this.currentRole;
  }

  /**
   * Why the worker stopped by itself, if it did (it then emits 'stopped'):
   * it found a transaction pooler between it and the server only after it
   * started (the server could not be reached then, or the pooler's mode
   * changed, or the URL led elsewhere after a failover). A worker never
   * stops by itself otherwise.
   */
  get failure(): Error | undefined {
    return this.failed;
  }

  /**
   * Starts listening and applying; resolves once the loop runs (it takes
   * the role, or waits as a standby, on its own: see role and the 'role'
   * event). Refuses a login that may not be a worker, which would otherwise
   * retry forever, a server in recovery, and a transaction pooler
   * (SharedSessionError: the worker needs a session of its own, see
   * requireOwnSessions). A second call returns the
   * first one's promise; a worker once stopped (or stopping) does not start
   * again: create a new one.
   */
  start(): Promise<void> {
    if (this.stopping) return Promise.reject(new PermgraphError('this worker was stopped: create a new Worker to start again'));
    this.starting ??= this.open();
    return this.starting;
  }

  private async open(): Promise<void> {
    try {
      await this.requireOwnSessions();
      await this.requireWorkerRights();
      if (this.options.listen && !this.stopping) {
        this.subscriber = await startListener(this.options.url, () => this.wakeup.notify(), this.logger, this.options.watchdog);
      }
    } catch (error) {
      // nothing of a worker that did not start stays open
      await this.pool.dispose().catch(() => {});
      throw error;
    }
    // (a stop() that came meanwhile closes the listener once this returns)
    if (!this.stopping) this.loop = this.runForever();
  }

  /**
   * Finishes the current batch, releases the role, closes connections. Also
   * while start() runs (a signal during start-up): the worker then stops as
   * soon as it has started, without taking the role.
   */
  stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      this.stopped = this.close();
    }
    return this.stopped!;
  }

  private async close(): Promise<void> {
    await this.starting?.catch(() => {});
    // The listener goes first: a stopping worker needs no wake-ups, and a
    // listener closed before the server drops its connection does not try
    // to reconnect (Ctrl-C under `npm start` also stops the embedded server,
    // which terminates every connection while the last batch finishes).
    const listenerClosed = this.subscriber?.close().catch(() => {});
    this.wakeup.notify();
    this.stopSignal.abort();
    // (a backlog's batch may run for minutes: a stop that seems ignored is a batch being finished)
    if (this.running) {
      this.logger.info({ operation: this.running.operation, runningMs: Date.now() - this.running.since }, 'stopping once the running batch has committed');
    }
    // a batch on a stalled connection would keep stop() waiting for the OS
    this.watchdog?.stop();
    await this.loop;
    this.currentRole = undefined; // the lock is released: neither applier nor standby
    await listenerClosed;
    await this.pool.dispose().catch(() => {});
    this.emit('stopped');
  }

  /** Runs a batch or a chunk under the watchdog, recorded as the one under way (see running). */
  private async whileRunning<T>(watchdog: ConnectionWatchdog, operation: string, run: () => Promise<T>): Promise<T> {
    this.running = { operation, since: Date.now() };
    try {
      return await watchdog.watch(operation, run);
    } finally {
      this.running = undefined;
    }
  }

  private async requireWorkerRights(): Promise<void> {
    let row: { login: string; schema: boolean; may: boolean | null; standby: boolean };
    try {
      // (to_regprocedure itself is refused without USAGE on the schema: asked last)
      [row] = await this.pool.query(sql`
        select session_user::text as login, to_regnamespace('permgraph') is not null as schema, pg_is_in_recovery() as standby,
               case when to_regnamespace('permgraph') is null then null
                    when not has_schema_privilege('permgraph', 'usage') then false
                    when to_regprocedure('permgraph._applier_role_key()') is null then null
                    else has_function_privilege('permgraph._applier_role_key()', 'execute') end as may`);
    } catch (error) {
      // A server that cannot be reached now is what the loop retries (as a
      // standby); only a definite answer refuses the start. (With listening
      // on, the listener's own first connection fails the start instead.)
      this.logger.warn({ err: error }, 'could not check the worker login\'s rights; starting anyway');
      return;
    }
    if (row.standby) throw new PermgraphError(STANDBY_REFUSAL);
    if (row.may === true) return;
    throw new PermgraphError(
      row.may === null
        ? 'permgraph schema not found in this database: run `permgraph migrate` first'
        : `${row.login} may not run the worker: grant it permgraph_worker (it may not execute the engine's functions)`,
    );
  }

  /**
   * Refuses a transaction pooler between the worker and the server
   * (src/db/pooler.ts). The applier role is a session's advisory lock
   * (acquireRole), and a worker's session holds its settings
   * (useWorkerSession): such a pooler would run the lock on a server
   * session that it then hands to other clients, so that another worker
   * of the same login takes the role too (the lock is re-entrant within a
   * session), and it keeps the lock on that session after the worker stops
   * (its unlock may reach another session), where it keeps every worker a
   * standby. A session pooler keeps the worker's connection on one server
   * session, and resets it when the worker disconnects: it is fine. Asked
   * at start, before anything is opened; a server that cannot be reached
   * then (the loop tries again) is asked about each connection the loop
   * opens (requireOwnSession).
   */
  private async requireOwnSessions(): Promise<void> {
    let path: ConnectionPath;
    try {
      path = await connectionPath(this.options.url);
    } catch (error) {
      this.logger.warn({ err: error }, 'could not check how the worker\'s connections reach the server; asking again when it connects');
      return;
    }
    if (path === 'shared') throw sharedSessionError('the worker', SHARED_SESSION_REASON);
    if (path === 'pooled') this.logger.info('connected through a pooler that keeps each connection on a server session of its own (session pooling)');
  }

  /**
   * The check of requireOwnSessions, for the connection the loop opened
   * (on every reconnect: the pooler may have been reloaded in another
   * mode, or a failover may have led the URL to another one since the
   * worker started), before anything is set on its session; again when
   * the worker takes the role after waiting as a standby. A connection
   * whose server session is the one it announced at its start is direct,
   * and asks nothing more; through a pooler, the pooler at the address the
   * connection reached is asked whether it shares server sessions (two
   * connections of its own). A check that gets no answer proves nothing:
   * the worker goes on, logging it (its statements still run on its own
   * session only: queryOnSession).
   *
   * Between these checks, a worker alone on its server session behind a
   * pool reloaded in transaction mode is not found: the pooler gives it
   * that session back for each statement, so its lock and settings stay
   * where they are, and no statement of its can tell the pooler's mode.
   * What one can tell without a round trip of its own, which session
   * answered it, every batch asks (queryOnSession): the worker is caught
   * once another client holds its session as its next statement comes.
   * Not caught: another client given the session between the worker's
   * statements, which then runs with the worker's settings and lock, and
   * a worker killed there, whose session the pooler keeps, lock and all
   * (docs/operations.md, "A worker left alone on its server session
   * after a reload").
   */
  private async requireOwnSession(conn: Connection, direct: boolean): Promise<void> {
    if (direct) return;
    let shared: boolean;
    try {
      shared = await sharesSessions(this.options.url, connectionPeer(conn));
    } catch (error) {
      this.logger.warn({ err: error }, 'could not check whether the pooler shares server sessions between its clients; going on');
      return;
    }
    if (shared) throw sharedSessionError('the worker', SHARED_SESSION_REASON);
  }

  private async runForever(): Promise<void> {
    while (!this.stopping) {
      // (aborted once the task starts, or the pool fails to connect)
      const connected = new AbortController();
      void this.noticeConnecting(connected.signal);
      try {
        await this.pool
          .task((conn) => {
            connected.abort();
            return this.serveWithConnection(conn);
          })
          .finally(() => connected.abort());
      } catch (error) {
        if (this.stopping) break;
        if (error instanceof SharedSessionError) {
          // Never retried: it is how the worker reaches the server, not a passing failure.
          this.failed = error;
          this.logger.error({ err: error }, 'stopping: the worker cannot run behind a transaction pooler');
          if (this.listenerCount('error') > 0) this.emit('error', error);
          void this.stop();
          break;
        }
        this.setRole('standby');
        // failures more than twice the longest wait apart are not in a row
        if (Date.now() - this.lastFailureAt > 2 * MAX_RETRY_DELAY_MS) this.failuresInARow = 0;
        this.lastFailureAt = Date.now();
        this.failuresInARow++;
        const retryInMs = retryDelay(this.options.standbyIntervalMs, this.failuresInARow);
        const connection = isConnectionError(error);
        this.logger.error(
          { err: error, sqlState: sqlStateOf(error), failuresInARow: this.failuresInARow, retryInMs },
          connection ? 'lost the connection to the database; retrying' : 'applying changes failed; retrying',
        );
        // EventEmitter throws on 'error' without listeners; the worker must survive.
        if (this.listenerCount('error') > 0) this.emit('error', error as Error);
        // A lost connection is tried again at once when the listener is back
        // (its reconnect wakes), the first few times; a failed batch, or a
        // connection lost again and again (a batch that crashes the
        // server?), only when its time comes, not on every wake-up.
        if (connection && this.failuresInARow <= EARLY_RETRIES) await this.wakeup.wait(retryInMs);
        else await sleep(retryInMs, undefined, { signal: this.stopSignal.signal }).catch(() => {});
      }
    }
  }

  /**
   * Says why the loop waits for its connection, if it does for longer than
   * checkIntervalMs: the pool connects and pins its search path before the
   * task starts, where no watchdog watches. A probe of a new connection
   * then, and less and less often after, tells a pooler's queue
   * (WAITING_FOR_SERVER_SESSION: logged once; the connection waits in it,
   * and a new one would join it at its end) from a server that answers.
   */
  private async noticeConnecting(connected: AbortSignal): Promise<void> {
    const { checkIntervalMs, maxCheckIntervalMs } = this.options.watchdog;
    for (let interval = checkIntervalMs; !this.stopping; interval = Math.min(interval * 2, Math.max(checkIntervalMs, maxCheckIntervalMs))) {
      await sleep(interval, undefined, { signal: connected }).catch(() => {});
      if (connected.aborted || this.stopping) return;
      const outcome = await this.probe(undefined, checkIntervalMs, connected);
      if (connected.aborted || this.stopping) return;
      if (outcome.kind === 'slow') {
        this.logger.warn({ operation: 'connecting', probe: outcome }, WAITING_FOR_SERVER_SESSION);
        return;
      }
    }
  }

  private async serveWithConnection(conn: Connection): Promise<void> {
    // Every statement on the connection is watched: on a stalled network it
    // is closed (the statement fails as a lost connection) and the loop
    // reconnects, instead of waiting for the OS's keepalives.
    const watchdog = new ConnectionWatchdog({ timings: this.options.watchdog, probe: this.probe, closeConnection: () => closeConnectionNow(conn), logger: this.logger });
    if (this.stopping) watchdog.stop();
    this.watchdog = watchdog;
    try {
      await this.serveWatched(conn, watchdog);
    } finally {
      this.watchdog = undefined;
    }
  }

  private async serveWatched(conn: Connection, watchdog: ConnectionWatchdog): Promise<void> {
    // Nothing is set on a session that a transaction pooler shares.
    const { pid: serverPid, direct } = await watchdog.watch("the connection's first statement", () => serverSession(conn));
    try {
      await this.requireOwnSession(conn, direct);
    } catch (error) {
      // The session a lost connection left behind the transaction pooler just found, if it still holds the role.
      if (error instanceof SharedSessionError && this.unreleased) await this.leaveSharedSession(conn, watchdog, this.unreleased, { holdingRole: true });
      throw error;
    }
    // Each batch is one statement in its own REPEATABLE READ transaction:
    // one round trip, and writers never wait for it; a mixed queue is
    // applied removals first; no timeout cancels a batch, and a session
    // whose worker vanished ends (useWorkerSession). Before the role: its
    // lock lives as long as this session.
    const session = await watchdog.watch('the session set-up', () => useWorkerSession(conn, { idleLimitMs: workerIdleLimitMs(this.options) }));
    this.unreleased = session;
    // (probes connect to where this connection went: the URL may lead to several servers)
    watchdog.identify({ ...session, peer: connectionPeer(conn) });
    let left = false;
    try {
      if (session.pid !== serverPid) throw new SessionMovedError(serverPid, session.pid);
      if (!(await this.acquireRole(conn, watchdog, session, direct))) return;
      this.setRole('active');
      while (!this.stopping) {
        const result = await this.whileRunning(watchdog, 'a batch', () =>
          applyChangesOnSession(conn, { maxChanges: this.options.maxBatch, chunkPairs: this.options.chunkPairs ?? undefined }, session),
        );
        if (result.mode !== 'none') {
          this.logger.info({ batch: result }, 'applied batch');
          this.emit('batch', result);
        }
        // One chunk, then the changes that came meanwhile: they never wait for
        // more than a chunk. But not right after the batch that started the
        // job: the changes committed while it ran (seconds, for a backlog)
        // are deferred by the next batch first, and the first chunk takes
        // their users (bench/FINDINGS.md 53).
        if (result.longJobActive && result.toLongJob === 0) {
          const chunk = await this.whileRunning(watchdog, 'a long job chunk', () => applyJobChunk(conn));
          this.failuresInARow = 0;
          this.logger.info({ chunk }, chunk.finished ? 'finished long job' : 'applied long job chunk');
          this.emit('chunk', chunk);
          continue;
        }
        // (only here, or once a chunk succeeds: after a retry the batch
        // before a chunk that fails again succeeds, often with nothing to
        // apply, and the failures would never count as in a row)
        this.failuresInARow = 0;
        // More may have come meanwhile (or the batch left part of a mixed
        // queue: morePending): look again at once. Waiting for their
        // notification instead saves that look under a trickle, but the
        // notification comes later than the look: at 500 changes/s on org
        // large lag p95/p99 read 27-77/52-118 ms against 26-33/41-75, for
        // ~0.2 ms of server CPU per empty look (bench/FINDINGS.md 31).
        if (result.mode !== 'none') continue;
        await this.wakeup.wait(untilNextWake(this.options.pollIntervalMs, result.nextExpiryInMs));
      }
    } catch (error) {
      if (!(error instanceof SharedSessionError || error instanceof SessionMovedError)) throw error;
      left = true;
      await this.leaveSharedSession(conn, watchdog, session);
      this.unreleased = undefined;
      throw error instanceof SessionMovedError
        ? sharedSessionError('the worker', SHARED_SESSION_REASON, `its connection was moved from server session ${error.sessionPid} to ${error.servedBy}`)
        : error;
    } finally {
      // A session lock and setting outlive the task on a pooled connection:
      // undo them. (On a connection closed as stalled, both fail at once,
      // and the session stays `unreleased`.)
      if (!left) {
        await watchdog.watch('the session reset', () => resetWorkerSession(conn)).catch(() => {});
        const released = await watchdog
          .watch("the applier role's release", () => queryOnSession(conn, session, sql`pg_catalog.pg_advisory_unlock(permgraph._applier_role_key())`))
          .then(
            () => true,
            async (error: unknown) => error instanceof SessionMovedError && (await this.leaveSharedSession(conn, watchdog, session), true),
          );
        if (released) this.unreleased = undefined;
      }
    }
  }

  /**
   * Takes the applier role, waiting as a standby while another worker
   * holds it. Only on the worker's own server session (queryOnSession).
   * Taken after waiting, it asks again how the connection reaches the
   * server (requireOwnSession): a pooler may have been reloaded in
   * transaction mode meanwhile.
   */
  private async acquireRole(conn: Connection, watchdog: ConnectionWatchdog, session: SessionIdentity, direct: boolean): Promise<boolean> {
    let waited = false;
    while (!this.stopping) {
      const acquired = await watchdog.watch("the applier role's lock", () =>
        queryOnSession<boolean>(conn, session, sql`pg_catalog.pg_try_advisory_lock(permgraph._applier_role_key())`),
      );
      if (acquired) {
        if (waited) await this.requireOwnSession(conn, direct);
        return true;
      }
      waited = true;
      this.setRole('standby');
      await sleep(this.options.standbyIntervalMs, undefined, { signal: this.stopSignal.signal }).catch(() => {});
    }
    return false;
  }

  /**
   * Ends the worker's server session, found behind a transaction pooler
   * after its settings (and perhaps the applier role's lock) were put on
   * it: the pooler would keep them on that session for its other clients
   * (REPEATABLE READ by default, no timeouts), and the lock where an
   * unlock sent through the pooler may never arrive, keeping every worker
   * a standby until the pooler closes the session. Matched by its process
   * id and start, so that no later session is ended. A transaction of
   * another client running on it then fails (a connection error).
   * holdingRole: only if it still holds the applier role's lock (a session
   * a lost connection left: a session pooler may have reset it since, and
   * given it to another client).
   */
  private async leaveSharedSession(conn: Connection, watchdog: ConnectionWatchdog, session: SessionIdentity, { holdingRole = false } = {}): Promise<void> {
    try {
      const [row] = await watchdog.watch('the end of its server session', () =>
        conn.query(sql`
          select count(*) filter (where pg_catalog.pg_terminate_backend(a.pid, ${SESSION_END_WAIT_MS}::bigint))::int as ended
          from pg_catalog.pg_stat_activity a
          where a.pid = ${session.pid}::integer
            and (${session.startedAt}::numeric is null or extract(epoch from a.backend_start) = ${session.startedAt}::numeric)
            -- (status() names the session holding the applier role's lock)
            and (not ${holdingRole}::boolean or a.pid = (permgraph.status() -> 'worker' ->> 'pid')::integer)`),
      );
      if (row.ended === 0) this.logger.info({ backendPid: session.pid }, holdingRole ? 'its earlier server session no longer holds the applier role' : 'its server session had already ended');
      else this.logger.info({ backendPid: session.pid }, 'ended its server session, with its settings and lock, behind the transaction pooler');
    } catch (error) {
      // (the statement may have reached that very session, which then ended: it is gone either way)
      if (isConnectionError(error)) return;
      this.logger.warn(
        { err: error, backendPid: session.pid },
        'could not end its server session behind the transaction pooler: its settings and the applier role\'s lock stay there until the pooler closes it',
      );
    }
  }

  private setRole(role: 'active' | 'standby'): void {
    if (this.currentRole === role) return;
    this.currentRole = role;
    this.logger.info({ role }, role === 'active' ? 'holding the applier role' : 'waiting as standby');
    this.emit('role', role);
  }
}

/** Why the worker refuses a transaction pooler (requireOwnSessions). */
const SHARED_SESSION_REASON =
  "the worker holds the applier role as a session's advisory lock, which such a pooler would pass on to its other clients and keep after the worker stops";

/** Connection failures in a row after which a wake-up no longer cuts the wait short. */
const EARLY_RETRIES = 3;

/**
 * How long the worker waits before its next try after failures in a row:
 * the standby interval, doubled with each failure after the first, at most
 * MAX_RETRY_DELAY_MS. A batch that keeps failing, or a database that stays
 * down, is then tried (and logged) twice a minute, not every second.
 */
export function retryDelay(standbyIntervalMs: number, failuresInARow: number): number {
  return Math.min(standbyIntervalMs * 2 ** Math.max(0, Math.min(failuresInARow - 1, 30)), Math.max(standbyIntervalMs, MAX_RETRY_DELAY_MS));
}

/**
 * How long the daemon's session may sit idle before the server ends it
 * (WORKER_IDLE_GRACE_MS): an active worker runs a batch at least once per
 * poll interval, a standby tries the role once per standby interval, so
 * only a frozen one stays idle this long. At most what the setting holds.
 */
export function workerIdleLimitMs(options: { pollIntervalMs: number; standbyIntervalMs: number }): number {
  return Math.min(MAX_INTERVAL_MS, 2 * Math.max(options.pollIntervalMs, options.standbyIntervalMs) + WORKER_IDLE_GRACE_MS);
}

/**
 * The next wake-up with nothing pending: the polling backstop, or the
 * earliest expiry if that comes first (plus a millisecond, so that the batch
 * it starts finds the row's valid_until passed).
 */
export function untilNextWake(pollIntervalMs: number, nextExpiryInMs: number | null): number {
  return nextExpiryInMs === null ? pollIntervalMs : Math.min(pollIntervalMs, nextExpiryInMs + 1);
}
