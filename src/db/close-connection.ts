import type { Connection, Transaction } from '@databases/pg';
import { connect } from 'node:net';
import { CANCEL_REQUEST_CODE } from '../constants.ts';

/** The part of @databases/pg's connection (or transaction) reached here: its driver's node-pg client, and that client's socket. */
interface PooledConnectionInternals {
  _driver?: { client?: ClientInternals };
}

/** The part of a node-pg client reached here: where it connected, what its server announced, and its socket. */
interface ClientInternals {
  host?: unknown;
  port?: unknown;
  processID?: unknown;
  secretKey?: unknown;
  connection?: { stream?: { destroy?: () => void; remoteAddress?: string; remotePort?: number } };
}

/**
 * Where a connection went: a TCP address (an IP address, v4 or v6, and a
 * port), or a Unix socket's directory (isSocketDirectory) and port.
 */
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

/** Whether a host, as node-pg and libpq read it, is the directory of a Unix socket (its socket: `${host}/.s.PGSQL.${port}`). */
export function isSocketDirectory(host: string): boolean {
  return host.startsWith('/');
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
 * Where a pooled connection went: the one server it reached, where the
 * URL's host may lead to several (several hosts listed, a name with several
 * addresses). Over TCP, the address its socket is connected to, with the
 * host name it was reached by (name); over a Unix socket, the socket's
 * directory and port, as node-pg connected to them (of a URL listing several
 * directories, the one that answered). Undefined when the socket or its
 * client is not where closeConnectionNow finds them.
 */
export function connectionPeer(conn: Connection): PeerAddress | undefined {
  return clientPeer((conn as unknown as PooledConnectionInternals)._driver?.client);
}

/** Where a node-pg client's connection went, read as connectionPeer reads a pooled one's (a raw client's, too). */
export function clientPeer(raw: object | undefined): PeerAddress | undefined {
  const client = raw as ClientInternals | undefined;
  const socket = client?.connection?.stream;
  const name = client?.host;
  const { remoteAddress: host, remotePort: port } = socket ?? {};
  if (typeof host === 'string' && typeof port === 'number') return typeof name === 'string' && name !== '' ? { host, port, name } : { host, port };
  // (a Unix socket has no remote address: node-pg's host is its directory)
  if (socket !== undefined && typeof name === 'string' && isSocketDirectory(name) && typeof client?.port === 'number') return { host: name, port: client.port };
  return undefined;
}

/**
 * The process id a pooled connection's server announced at its start
 * (BackendKeyData): the server session's own, unless a pooler made one up
 * (src/db/pooler.ts). Undefined when it is not where connectionPeer finds
 * the socket.
 */
export function announcedPid(conn: Connection): number | undefined {
  return clientAnnouncedPid((conn as unknown as PooledConnectionInternals)._driver?.client);
}

/** The process id a node-pg client's server announced at its start (announcedPid, of a raw client too). */
export function clientAnnouncedPid(raw: object | undefined): number | undefined {
  const pid = (raw as ClientInternals | undefined)?.processID;
  return typeof pid === 'number' ? pid : undefined;
}

/**
 * What a CancelRequest for a pooled connection's statement needs: the
 * process id and secret key its server announced at its start
 * (BackendKeyData; a pooler's own, which it maps to the server session
 * it has linked to this connection at the moment), and where to send it:
 * the address the connection's socket reached, or its Unix socket's path.
 */
export interface CancelTarget {
  processID: number;
  secretKey: number;
  to: PeerAddress | { path: string };
}

/** The CancelTarget of a pooled connection, or of the transaction it runs; undefined when node-pg's client is not where closeConnectionNow finds it. */
export function cancelTargetOf(conn: Connection | Transaction): CancelTarget | undefined {
  const client = (conn as unknown as PooledConnectionInternals)._driver?.client;
  const { processID, secretKey } = client ?? {};
  if (typeof processID !== 'number' || typeof secretKey !== 'number') return undefined;
  const peer = connectionPeer(conn as Connection);
  if (peer === undefined) return undefined;
  // (node-pg's path of a Unix socket, as it connects: the directory, then .s.PGSQL.<port>)
  return { processID, secretKey, to: isSocketDirectory(peer.host) ? { path: `${peer.host}/.s.PGSQL.${peer.port}` } : peer };
}

/**
 * Asks the server (or pooler) of a connection to cancel the statement the
 * connection runs, by the protocol's CancelRequest over a connection of
 * its own: the key names that one session (through a pooler, the server
 * session the pooler has linked to that client connection then, if any),
 * and a session that is idle ignores it. Sent in plain text, as libpq's
 * PQcancel sends it: it carries only the key. Resolves once the server
 * has closed that connection, which it does when it has the request (as
 * libpq, this side never closes first: a request cut short may be lost,
 * and PgBouncer 1.18 crashed, "bad client state", when the client closed
 * while it forwarded one). Fails after timeoutMs, leaving the socket to
 * close then (unreferenced: it keeps no process alive).
 */
export async function sendCancelRequest(target: CancelTarget, timeoutMs: number): Promise<void> {
  const packet = Buffer.alloc(16);
  packet.writeInt32BE(16, 0);
  packet.writeInt32BE(CANCEL_REQUEST_CODE, 4);
  packet.writeInt32BE(target.processID, 8);
  packet.writeInt32BE(target.secretKey, 12);
  const socket = 'path' in target.to ? connect(target.to.path) : connect(target.to.port, target.to.host);
  socket.unref();
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the cancel request was not taken within ${timeoutMs} ms`)), timeoutMs);
    socket.once('connect', () => socket.write(packet));
    socket.once('error', (error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    });
    // (the server's close ends this side too: allowHalfOpen is off)
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
