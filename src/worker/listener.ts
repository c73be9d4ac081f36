import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { CHANGES_CHANNEL, LISTENER_APPLICATION_NAME, END_TIMEOUT_MS, STALL_CHECK_INTERVAL_MS, STALL_CHECK_TIMEOUT_MS } from '../constants.ts';
import { connectClient } from '../db/client-config.ts';
import { SocketKeeper } from '../db/socket-keeper.ts';
import type { Logger } from '../logger.ts';

/** A LISTEN connection; close() ends it, and any reconnecting it was doing. */
export interface Listener {
  close(): Promise<void>;
}

export interface ListenerOptions {
  channel?: string;
  applicationName?: string;
  /** How long after the previous check query's answer the connection runs the next (default STALL_CHECK_INTERVAL_MS). */
  checkIntervalMs?: number;
  /** How long any of its queries may go unanswered before it reconnects (default STALL_CHECK_TIMEOUT_MS). */
  checkTimeoutMs?: number;
}

/** How long the listener waits between attempts to reconnect (ms). */
const RETRY_INTERVAL_MS = 500;

/** Of the attempts to reconnect, the first and every this many after it are logged. */
const RECONNECT_LOG_EVERY = 20;

/** One LISTENing connection and its sockets. */
interface Connection {
  client: pg.Client;
  sockets: SocketKeeper;
}

/**
 * LISTENs for wake-ups, reconnecting forever. onWake runs on every
 * notification and after every (re)connect, because notifications sent
 * while disconnected are lost and the worker must catch up. The worker's
 * channel by default; the change stream's followers pass theirs.
 *
 * Every connection, the first and each one after a loss, goes to the first
 * of the URL's hosts that takes it and its LISTEN, tried in the URL's order
 * (connectClient): on a URL listing several hosts ('h1,h2:5432',
 * 'h1:5432,h2:5433'), where the pool connects too, and after a failover
 * wherever a listed server answers now, never again and again to the host
 * that went.
 *
 * A connection that stops answering (a network partition drops packets
 * silently: no error comes for minutes) is noticed by its check query,
 * which must answer within checkTimeoutMs: past it, node-pg fails the
 * query and the listener reconnects ("listener reconnecting").
 */
export async function startListener(
  url: string,
  onWake: () => void,
  logger: Logger,
  {
    channel = CHANGES_CHANNEL,
    applicationName = LISTENER_APPLICATION_NAME,
    checkIntervalMs = STALL_CHECK_INTERVAL_MS,
    checkTimeoutMs = STALL_CHECK_TIMEOUT_MS,
  }: ListenerOptions = {},
): Promise<Listener> {
  let closed = false;
  /** Aborted by close(): ends a wait between attempts, and an attempt under way. */
  const stopped = new AbortController();
  let current: Connection | undefined;
  let nextCheck: NodeJS.Timeout | undefined;

  // (a connection with nothing in flight ends politely, waiting for the
  // server's side to close: on a stalled network, for minutes)
  const end = ({ client, sockets }: Connection) => sockets.endWithin(client.end(), END_TIMEOUT_MS);

  const open = async (): Promise<Connection> => {
    // Its own sockets: close() cuts an attempt short by closing them, and
    // a lost connection's goodbye closes only its own.
    const sockets = new SocketKeeper();
    const cut = () => sockets.destroyAll();
    stopped.signal.addEventListener('abort', cut);
    try {
      const client = await connectClient(url, applicationName, {
        sockets,
        // Bounds every query of the connection: a check that times out
        // makes the listener replace the connection. A LISTEN that timed
        // out stays sent: TCP delivers it once the network is back, or
        // that host is passed over.
        settings: { query_timeout: checkTimeoutMs },
        prepare: (c) => c.query(`listen ${c.escapeIdentifier(channel)}`),
        signal: stopped.signal,
      });
      return { client, sockets };
    } finally {
      stopped.signal.removeEventListener('abort', cut);
    }
  };

  /** The check query, checkIntervalMs after the previous one's answer: one at a time, never queued behind another. */
  const scheduleCheck = (connection: Connection) => {
    nextCheck = setTimeout(() => {
      connection.client.query('select 1').then(
        () => {
          if (current === connection) scheduleCheck(connection);
        },
        (error: unknown) => lost(connection, error),
      );
    }, checkIntervalMs);
  };

  const adopt = (connection: Connection) => {
    current = connection;
    const { client } = connection;
    client.on('notification', () => onWake());
    client.on('error', (error) => lost(connection, error));
    client.on('end', () => lost(connection, new Error('the connection ended')));
    scheduleCheck(connection);
    logger.info('listener connected');
    onWake();
  };

  const lost = (connection: Connection, cause: unknown) => {
    if (closed || current !== connection) return;
    current = undefined;
    clearTimeout(nextCheck);
    void end(connection);
    void reconnect(cause);
  };

  const reconnect = async (cause: unknown) => {
    let failure = cause;
    for (let attempt = 1; !closed; attempt++) {
      // every attempt is twice a second: the first, then one line every ten seconds
      if (attempt % RECONNECT_LOG_EVERY === 1) logger.warn({ attempt, err: failure }, 'listener reconnecting');
      try {
        const connection = await open();
        // (a connection finished after close(): nobody listens on it)
        if (closed) return void (await end(connection));
        return adopt(connection);
      } catch (error) {
        failure = error;
      }
      await sleep(RETRY_INTERVAL_MS, undefined, { signal: stopped.signal }).catch(() => {});
    }
  };

  const close = async () => {
    closed = true;
    stopped.abort();
    clearTimeout(nextCheck);
    const connection = current;
    current = undefined;
    if (connection) await end(connection);
  };

  try {
    adopt(await open());
  } catch (error) {
    await close();
    throw error;
  }
  return { close };
}
