import type { Connection } from '@databases/pg';

/** The part of @databases/pg's connection reached here: its driver's node-pg client's socket. */
interface PooledConnectionInternals {
  _driver?: { client?: { host?: unknown; processID?: unknown; connection?: { stream?: { destroy?: () => void; remoteAddress?: string; remotePort?: number } } } };
}

/** A TCP address: an IP address (v4 or v6) and a port. */
export interface PeerAddress {
  host: string;
  port: number;
  /**
   * The host name the connection was made to (of a URL listing several, the
   * one that answered): what verify-full checks the server's certificate
   * against. Undefined: the URL's.
   */
  name?: string;
}

/** The socket of a pooled connection (see closeConnectionNow for how it is reached). */
function socketOf(conn: Connection) {
  return (conn as unknown as PooledConnectionInternals)._driver?.client?.connection?.stream;
}

/**
 * Closes a pooled connection's socket at once, from outside the statement
 * it runs: that statement fails with node-pg's "Connection terminated
 * unexpectedly" (a connection error), and the pool discards the connection
 * (node-pg reports the loss to @databases/pg, which then does not recycle
 * it). For a connection the server stopped answering on, where ending it
 * politely would wait for an answer too. @databases/pg (pinned in
 * package.json) has no call for this, so it reaches the node-pg client of
 * the connection's driver. False when that is not where it was (another
 * version): test/worker/watchdog.test.ts then fails.
 */
export function closeConnectionNow(conn: Connection): boolean {
  const socket = socketOf(conn);
  if (typeof socket?.destroy !== 'function') return false;
  socket.destroy();
  return true;
}

/**
 * The address a pooled connection's socket is connected to: the one server
 * it reached, where the URL's host may lead to several (several hosts
 * listed, a name with several addresses). Undefined over a Unix socket, or
 * when the socket is not where closeConnectionNow finds it.
 */
export function connectionPeer(conn: Connection): PeerAddress | undefined {
  const socket = socketOf(conn);
  const { remoteAddress: host, remotePort: port } = socket ?? {};
  if (typeof host !== 'string' || typeof port !== 'number') return undefined;
  const name = (conn as unknown as PooledConnectionInternals)._driver?.client?.host;
  return typeof name === 'string' && name !== '' ? { host, port, name } : { host, port };
}

/**
 * The process id a pooled connection's server announced at its start
 * (BackendKeyData): the server session's own, unless a pooler made one up
 * (src/db/pooler.ts). Undefined when it is not where connectionPeer finds
 * the socket.
 */
export function announcedPid(conn: Connection): number | undefined {
  const pid = (conn as unknown as PooledConnectionInternals)._driver?.client?.processID;
  return typeof pid === 'number' ? pid : undefined;
}
