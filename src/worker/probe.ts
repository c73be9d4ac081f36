import pg, { type ClientConfig } from 'pg';
import { END_TIMEOUT_MS, SESSION_END_WAIT_MS, WATCHDOG_APPLICATION_NAME } from '../constants.ts';
import { clientConfig, tighterConnectTimeout } from '../db/client-config.ts';
import type { PeerAddress } from '../db/close-connection.ts';
import { SocketKeeper } from '../db/socket-keeper.ts';
import type { SessionIdentity } from '../engine/apply.ts';
import { isConnectionError, sqlStateOf } from '../errors.ts';

/** What a probe learned of a session whose statement has gone unanswered. */
export type ProbeOutcome =
  /** The session is there and not idle: running the statement, or waiting for a lock (state null: the server did not say). */
  | { kind: 'alive'; state: string | null }
  /** The server answered and has no such session: it ended (its own keepalives found the network dead). */
  | { kind: 'gone' }
  /**
   * The session has been idle for at least stuckAfterMs while the worker
   * waits: the statement never reached it, or its answer never came back.
   * ended: the probe ended the session, which would otherwise hold the
   * applier role until the server's keepalives give up on it.
   */
  | { kind: 'stuck'; state: string; idleMs: number; ended: boolean }
  /** No answer within the time allowed (connecting included), or the network failed: the server cannot be reached. */
  | { kind: 'unanswered'; reason: string }
  /**
   * The server began to answer (the login), then did not finish within the
   * time allowed: it is reachable, only slow (a server too busy to start a
   * session, a pooler whose pool is full and queues the probe), and whether
   * the session is alive is unknown.
   */
  | { kind: 'slow'; reason: string }
  /** The server answered with an error (too many connections, a password changed, …): it is up, and nothing more is known. */
  | { kind: 'refused'; reason: string }
  /**
   * The probe reached another server than the session's (a name or a load
   * balancer that leads to several): what it would find there says nothing
   * of the session. server: that server's address and port, as it says.
   */
  | { kind: 'elsewhere'; server: string }
  /**
   * Asked about no session (none is known yet: undefined): a new
   * connection was let in and its statement answered in time, so the
   * server and the network to it work.
   */
  | { kind: 'answered' }
  /**
   * The statement it was about was answered meanwhile (the caller's signal):
   * the probe stopped where it was, ended no session, and learned nothing.
   */
  | { kind: 'abandoned' };

/**
 * The session a probe asks about: who it is on the server, and where its
 * connection went (peer: connectionPeer, a TCP address or a Unix socket's
 * directory; undefined when not known), where the probe connects too
 * rather than to the URL's host, which may lead to several servers (several
 * hosts or socket directories listed, a name with several addresses).
 */
export interface ProbedSession extends SessionIdentity {
  peer?: PeerAddress;
}

/**
 * Asks the server about a session, or, with none known yet (undefined),
 * only whether a new connection to the URL is let in and answered
 * ('answered', 'slow', 'unanswered' or 'refused'). signal: aborted once
 * the answer no longer matters (the statement was answered meanwhile):
 * the probe then ends at once, ends no session, and its outcome is
 * 'abandoned'.
 */
export type Probe = (session: ProbedSession | undefined, stuckAfterMs: number, signal?: AbortSignal) => Promise<ProbeOutcome>;

/** The states of a session waiting for its client's next message. */
const IDLE_STATES = ['idle', 'idle in transaction', 'idle in transaction (aborted)'];

/**
 * Probes over a fresh connection each time (the stalled one is of no use),
 * as the same login. Without pg_read_all_stats a login reads the state and
 * start of its own role's sessions only: another role's show null (so
 * does its own session to a login whose sessions switch role, ALTER ROLE …
 * SET role), and then the probe learns only whether the session is there,
 * never taking what it cannot read for a stall. Each probe, connecting
 * included, takes at most timeoutMs: then its socket is closed, whatever
 * node-pg is waiting for. A probe that finds itself on another server than
 * the session's (SessionIdentity.server) reads nothing there: 'elsewhere'.
 */
export function createProbe(url: string, timeoutMs: number): Probe {
  // Read once for each address. Under sslmode allow/prefer it connects to
  // learn whether the server takes TLS: on the sockets of the probe that
  // reads it, within its time, so that the probe's deadline or abandonment
  // ends that connection too.
  const configs = new Map<string, Promise<ClientConfig>>();
  const readConfig = (address: PeerAddress | undefined, sockets: SocketKeeper) => {
    const key = address ? `${address.host} ${address.port} ${address.name ?? ''}` : '';
    let config = configs.get(key);
    if (config === undefined) {
      config = clientConfig(url, WATCHDOG_APPLICATION_NAME, { sockets, connectTimeoutMs: timeoutMs, address }).catch((error: unknown) => {
        configs.delete(key);
        throw error;
      });
      configs.set(key, config);
    }
    return config;
  };
  return async (session, stuckAfterMs, signal) => {
    const sockets = new SocketKeeper();
    let expired = false;
    // Ended by its deadline or by the caller: the sockets closed at once, whatever node-pg is waiting for.
    let fail!: (error: Error) => void;
    const ended = new Promise<never>((_, reject) => (fail = reject));
    ended.catch(() => {}); // (raced below; its rejection must not go unhandled when nothing awaits it)
    const end = (error: Error) => {
      sockets.destroyAll();
      fail(error);
    };
    const timer = setTimeout(() => {
      expired = true;
      end(new Error(`no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    const abandon = () => end(new Error(ABANDONED));
    signal?.addEventListener('abort', abandon, { once: true });
    let client: pg.Client | undefined;
    try {
      if (signal?.aborted) throw new Error(ABANDONED);
      const base = await Promise.race([readConfig(session?.peer, sockets), ended]);
      client = new pg.Client({ ...base, connectionTimeoutMillis: tighterConnectTimeout(base.connectionTimeoutMillis ?? 0, timeoutMs), stream: sockets.stream });
      client.on('error', () => {}); // (its errors reach the calls awaited here)
      await Promise.race([client.connect(), ended]);
      if (session === undefined) return await Promise.race([client.query('select').then((): ProbeOutcome => ({ kind: 'answered' })), ended]);
      return await Promise.race([askAbout(client, session, stuckAfterMs, signal), ended]);
    } catch (error) {
      if (signal?.aborted) return { kind: 'abandoned' };
      // Only silence, or the network failing, says the server is out of reach;
      // an error the server sent (an SQLSTATE) says it is up, and so does a
      // login it began to answer (it is slow, not out of reach).
      if (expired && sockets.heard) return { kind: 'slow', reason: `the server began to answer, then not within ${timeoutMs} ms` };
      const reason = expired ? `no answer within ${timeoutMs} ms` : error instanceof Error ? error.message : String(error);
      const unanswered = expired || (sqlStateOf(error) === undefined && isConnectionError(error));
      return unanswered ? { kind: 'unanswered', reason } : { kind: 'refused', reason };
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', abandon);
      // a goodbye, not waited for: the outcome is known
      if (client) void sockets.endWithin(client.end(), END_TIMEOUT_MS);
    }
  };
}

/** Thrown inside a probe that was abandoned (its outcome is then 'abandoned'). */
const ABANDONED = 'abandoned: the statement it was about has been answered';

async function askAbout(client: pg.Client, session: SessionIdentity, stuckAfterMs: number, signal: AbortSignal | undefined): Promise<ProbeOutcome> {
  // (the pid with its start, where both are known: a pid alone may be a later
  // session's; and the server, where a pid means something)
  // The connection runs on the login's own search_path, which may list a
  // schema others can create in: every operand below has the exact type of
  // pg_catalog's operator or function, so nothing planted there matches better
  // (docs/security.md, "Search paths").
  const {
    rows: [row],
  } = await client.query<{ server_address: string | null; server_port: number | null; found: boolean | null; state: string | null; state_ms: number | null }>(
    `select host(inet_server_addr()) as server_address, inet_server_port() as server_port, a.found, a.state, a.state_ms
     from (select) here
     left join (select true as found, state, (extract(epoch from clock_timestamp() - state_change) * 1000::numeric)::float8 as state_ms
                from pg_stat_activity
                where pid = $1 and ($2::numeric is null or backend_start is null or extract(epoch from backend_start) = $2::numeric)) a on true`,
    [session.pid, session.startedAt],
  );
  if (row === undefined) throw new Error('the probe\'s question had no answer row'); // (never: one row always)
  const server = { address: row.server_address, port: row.server_port === null ? null : Number(row.server_port) };
  if (session.server !== undefined && (server.address !== session.server.address || server.port !== session.server.port)) {
    return { kind: 'elsewhere', server: `${server.address ?? 'a Unix socket'} port ${server.port ?? '-'}` };
  }
  if (!row.found) return { kind: 'gone' };
  if (row.state === null || !IDLE_STATES.includes(row.state) || row.state_ms === null || row.state_ms < stuckAfterMs) {
    return { kind: 'alive', state: row.state };
  }
  // Idle while the worker waits: ended here (if still idle), so that the
  // applier role it holds is free for the worker's next connection. Not
  // once the worker has its answer after all: it may sit idle on the
  // session next, as it does between batches.
  if (signal?.aborted) throw new Error(ABANDONED);
  const ended = await client
    .query<{ ended: boolean }>(
      `select pg_terminate_backend(pid, $4) as ended from pg_stat_activity
       where pid = $1 and state = any($2::text[]) and state_change <= clock_timestamp() - $3::float8 * interval '1 millisecond'`,
      [session.pid, IDLE_STATES, stuckAfterMs, SESSION_END_WAIT_MS],
    )
    .then(
      ({ rows: [terminated] }) => (terminated === undefined ? 'busy again' : terminated.ended),
      () => false, // (not allowed to: the server's own keepalives end it later)
    );
  // (it came to life between the two questions: the statement arrived after all)
  if (ended === 'busy again') return { kind: 'alive', state: null };
  return { kind: 'stuck', state: row.state, idleMs: Math.round(row.state_ms), ended };
}
