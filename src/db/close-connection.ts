import type { Connection } from '@databases/pg';

/** The part of @databases/pg's connection that closeConnectionNow reaches: its driver's node-pg client. */
interface PooledConnectionInternals {
  _driver?: { client?: { connection?: { stream?: { destroy?: () => void } } } };
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
  const socket = (conn as unknown as PooledConnectionInternals)._driver?.client?.connection?.stream;
  if (typeof socket?.destroy !== 'function') return false;
  socket.destroy();
  return true;
}
