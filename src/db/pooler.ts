// Whether a URL's connections reach PostgreSQL directly or through a
// connection pooler (PgBouncer, and its kind), told from what the server
// and the pooler answer, never from the URL.
import type { Connection } from '@databases/pg';
import pg, { type ClientConfig } from 'pg';
import { END_TIMEOUT_MS, POOLER_CHECK_APPLICATION_NAME, POOLER_CHECK_TIMEOUT_MS } from '../constants.ts';
import { PermgraphError, SharedSessionError } from '../errors.ts';
import { clientConfig, connectClient, refuseUrlRawClientsCannotRead, whileServerStarting } from './client-config.ts';
import { announcedPid, clientAnnouncedPid, clientPeer, type PeerAddress } from './close-connection.ts';
import { openPool, sql, type ConnectionPool, type PoolOptions } from './pool.ts';
import { SocketKeeper } from './socket-keeper.ts';

/**
 * How a URL's connections reach the server:
 * - `direct`: each is a server session of its own (the server's process id
 *   is the one the connection announced at its start: nothing in between
 *   rewrote it).
 * - `pooled`: through a pooler (it announced a process id of its own), which
 *   kept each connection on one server session as far as the check saw:
 *   session pooling, as far as can be told.
 * - `shared`: through a pooler that gave two connections the same server
 *   session, or moved one from session to session: transaction (or
 *   statement) pooling. That is proof: no session pooler and no server ever
 *   does it. Whatever one connection sets or locks for its session then
 *   passes to other clients, and what it set before may be gone.
 */
export type ConnectionPath = 'direct' | 'pooled' | 'shared';

/**
 * Tells how `url`'s connections reach the server, over connections of its
 * own, all closed before it returns: one of a pool (firstLook), which
 * answers `direct`; else the pooler is asked whether it shares server
 * sessions (sharesSessions), at the address the first connection reached.
 * (The worker's, doctor's and an import's question: the pool of
 * openApplicationPool tells direct connections on its own.)
 */
export async function connectionPath(url: string): Promise<ConnectionPath> {
  const seen = await firstLook(url).catch(explainTimeout);
  if (seen.direct) return 'direct';
  return (await sharesSessions(url, seen.address)) ? 'shared' : 'pooled';
}

/**
 * Whether the pooler that `url` leads to shares server sessions between
 * its connections: transaction (or statement) pooling. Asked over two raw
 * connections of its own to `address` (where a connection of the caller's
 * went: connectionPeer; undefined, the URL's host), closed before it
 * returns: one connection asks for its server's process id twice, another
 * asks inside a transaction (which keeps its server session for it), then
 * the first asks again. A session pooler keeps the first on one session
 * throughout and the second on another; a transaction pooler hands the
 * first's idle session to the second (PgBouncer reuses its most recently
 * freed session), or moves the first (round robin, or another client took
 * its session meanwhile). A pooler whose pool is full keeps the second
 * waiting: after POOLER_CHECK_TIMEOUT_MS the first asks again, and answers
 * at once on its own session in session pooling (in transaction pooling it
 * waits too, and the check fails, or it moves). Only true is certain: a
 * transaction pooler whose other clients happen to take and return its
 * sessions in step with the check may pass for a session pooler.
 */
export async function sharesSessions(url: string, address: PeerAddress | undefined): Promise<boolean> {
  return askSharing(url, address).catch(explainTimeout);
}

async function askSharing(url: string, address: PeerAddress | undefined): Promise<boolean> {
  const config = await clientConfig(url, POOLER_CHECK_APPLICATION_NAME, { address });
  const sockets = new SocketKeeper();
  const clients: pg.Client[] = [];
  const open = async (options: Partial<ClientConfig> = {}) => {
    const client = new pg.Client({ ...config, ...options, stream: sockets.stream });
    client.on('error', () => {}); // (its errors reach the calls awaited below)
    clients.push(client);
    await client.connect();
    return client;
  };
  try {
    const first = await open({ query_timeout: POOLER_CHECK_TIMEOUT_MS });
    const firstPid = await serverPid(first);
    if ((await serverPid(first)) !== firstPid) return true;
    const second = await open({ query_timeout: POOLER_CHECK_TIMEOUT_MS });
    let began = false;
    try {
      let secondPid: number | undefined;
      try {
        await second.query('begin');
        began = true;
        secondPid = await serverPid(second);
      } catch {
        // No server session for it within the time: a full session pool (the
        // first keeps its own, and answers on it), or a transaction pool
        // whose every session is in use (the first waits too, or moves).
      }
      if (secondPid === firstPid) return true;
      // (the second keeps its session, if it got one, while the first asks again)
      return (await serverPid(first)) !== firstPid;
    } finally {
      // Its session goes back to the pool clean: one left in a transaction
      // is closed by the pooler, and whoever waits for it waits longer.
      if (began) await second.query('rollback').catch(() => {});
    }
  } finally {
    await Promise.all(clients.map((client) => sockets.endWithin(client.end(), END_TIMEOUT_MS)));
  }
}

/**
 * The refusal of a transaction pooler ('shared') by `who` (the worker, an
 * import), which needs a server session of its own because `why`: what
 * was `seen` (by default sharesSessions' proof), why it matters, and what
 * to do instead.
 */
export function sharedSessionError(who: string, why: string, seen = 'two of its connections were served by one server session'): SharedSessionError {
  return new SharedSessionError(
    `this URL goes through a transaction pooler (${seen}): ${why}; ` +
      `connect ${who} directly to PostgreSQL, or through a pooler in session mode (docs/operations.md, "Connection poolers")`,
  );
}

/**
 * What a statement of the check that got no answer in time means (node-pg
 * failed it with "Query read timeout"): its connection was let in, the
 * login answered, and then no server session answered it. A connection
 * pooler does that while the server sessions of its pool are all in use:
 * it queues the client (PgBouncer, up to its query_wait_timeout).
 */
function explainTimeout(error: unknown): never {
  if (isQueryReadTimeout(error)) {
    throw new PermgraphError(
      `no server session answered within ${POOLER_CHECK_TIMEOUT_MS / 1000} s, though the connection was let in: ` +
        'a connection pooler whose server sessions are all in use (PgBouncer: pool_size), or a server too busy to answer',
      { cause: error },
    );
  }
  throw error;
}

/** What node-pg says of a statement that got no answer within its client's query_timeout (the connection stays open). */
const QUERY_READ_TIMEOUT_MESSAGE = 'Query read timeout';

/**
 * Whether node-pg gave up waiting for a statement's answer (query_timeout):
 * on a connection that a pooler let in, the statement may be waiting for a
 * server session (a pool whose sessions are all in use), not lost.
 */
export function isQueryReadTimeout(error: unknown): boolean {
  return error instanceof Error && error.message === QUERY_READ_TIMEOUT_MESSAGE;
}

/** The process id of the server session that ran this statement. */
async function serverPid(client: pg.Client): Promise<number> {
  const { rows } = await client.query<{ pid: number }>('select pg_catalog.pg_backend_pid() as pid');
  return Number(rows[0]!.pid);
}

/**
 * The first question, asked on a connection of its own to `url`: whether
 * that connection is a server session of its own (the process id it
 * announced at its start is the server's: nothing in between made one
 * up), and the address it reached. It is the first connection of the
 * worker's start (and of doctor's and an import's checks): made by
 * connectClient, which tries again only a server that is starting, and
 * reports any other failure after one attempt. It reads URLs that list several hosts
 * ('h1,h2:5432', 'h1:5432,h2:5433') as the pool does (onFirstHost), so
 * the raw clients of the sharing check connect to the address it reached:
 * they meet the server (or pooler) the pool's connections meet. Bounded,
 * as the sharing check is: its answer waits at most POOLER_CHECK_TIMEOUT_MS.
 */
async function firstLook(url: string): Promise<{ direct: boolean; address: PeerAddress | undefined }> {
  const sockets = new SocketKeeper();
  const client = await connectClient(url, POOLER_CHECK_APPLICATION_NAME, { sockets, queryTimeoutMs: POOLER_CHECK_TIMEOUT_MS });
  try {
    return { direct: clientAnnouncedPid(client) === (await serverPid(client)), address: clientPeer(client) };
  } finally {
    await sockets.endWithin(client.end(), END_TIMEOUT_MS);
  }
}

/**
 * The server session that answered a statement on `conn` (its process id),
 * and whether it is the one the connection announced at its start: then
 * nothing in between made one up, and the connection is direct.
 */
export async function serverSession(conn: Connection): Promise<{ pid: number; direct: boolean }> {
  const [row] = await conn.query(sql`select pg_catalog.pg_backend_pid() as pid`);
  const pid = Number(row.pid);
  return { pid, direct: announcedPid(conn) === pid };
}

/**
 * The pool of Permgraph.connect() and of the command line, whose URL may
 * lead to a connection pooler: the search path is pinned only on a direct
 * connection, told on each connection as it opens (pinSearchPath
 * 'if-direct'), with no connection of its own to ask (that one cost a
 * connection and its handshake per command). Through a pooler every
 * connection is a series of server sessions that other clients share (a transaction
 * pooler's), or may be: the SET would pass to the application's own
 * connections of the same login, whose unqualified names would then fail
 * to resolve, and permgraph's later statements could run on sessions
 * without it anyway. Its statements then resolve names through the
 * login's own search_path (docs/security.md, "Search paths"). Its first
 * connection is opened here, as connectClient opens one: tried again
 * while the server is starting, any other failure reported after one
 * attempt; it stays in the pool for the first statement.
 */
export async function openApplicationPool(url: string, options: Omit<PoolOptions, 'pinSearchPath'> = {}): Promise<ConnectionPool> {
  refuseUrlRawClientsCannotRead(url);
  const pool = openPool(url, { ...options, pinSearchPath: 'if-direct' });
  try {
    await whileServerStarting(() => pool.task(async () => {}));
    return pool;
  } catch (error) {
    await pool.dispose();
    throw error;
  }
}
