import pgListen from 'pg-listen';
import { CHANGES_CHANNEL, LISTENER_APPLICATION_NAME, END_TIMEOUT_MS, STALL_CHECK_INTERVAL_MS, STALL_CHECK_TIMEOUT_MS } from '../constants.ts';
import { clientConfig } from '../db/client-config.ts';
import { SocketKeeper } from '../db/socket-keeper.ts';
import type { Logger } from '../logger.ts';

/** A LISTEN connection; close() ends it, and any reconnecting it was doing. */
export interface Listener {
  close(): Promise<void>;
}

export interface ListenerOptions {
  channel?: string;
  applicationName?: string;
  /**
   * The connection runs a check query this long after the previous one's
   * time to answer is up (default STALL_CHECK_INTERVAL_MS): pg-listen
   * starts one on a fixed interval, which must not come while the previous
   * one still waits (node-pg would queue it, and warn).
   */
  checkIntervalMs?: number;
  /** How long any of its queries may go unanswered before it reconnects (default STALL_CHECK_TIMEOUT_MS). */
  checkTimeoutMs?: number;
}

/** How long the listener waits between attempts to reconnect (ms). */
const RETRY_INTERVAL_MS = 500;

/** Of the attempts to reconnect, the first and every this many after it are logged. */
const RECONNECT_LOG_EVERY = 20;

/**
 * LISTENs for wake-ups with pg-listen, reconnecting forever. onWake runs on
 * every notification and after every (re)connect, because notifications sent
 * while disconnected are lost and the worker must catch up. The worker's
 * channel by default; the change stream's followers pass theirs.
 *
 * A connection that stops answering (a network partition drops packets
 * silently: no error comes for minutes) is noticed by its check query, which
 * must answer within checkTimeoutMs: past it, node-pg fails the query and
 * pg-listen reconnects ("listener reconnecting").
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
  const sockets = new SocketKeeper();
  // pg-listen is CommonJS; its factory is the .default export.
  // (TLS on the pool's terms: node-pg's own reading of sslmode differs, src/db/tls.ts)
  const config = {
    ...(await clientConfig(url, applicationName)),
    // Bounds every query of the connection: a check that times out makes
    // pg-listen replace the connection (node-pg's end() closes one with a
    // query in flight at once). A LISTEN that timed out (on reconnecting)
    // stays sent: TCP delivers it once the network is back, or the next
    // check times out too.
    query_timeout: checkTimeoutMs,
    // its sockets, for close() on a stalled network
    stream: sockets.stream,
  };
  const subscriber = pgListen.default(config, {
    retryLimit: Infinity,
    retryTimeout: Infinity,
    // pg-listen's close() does not end a reconnect loop under way (the
    // server down): it would connect later, an orphan LISTEN keeping the
    // process alive. Asked before every next attempt, this ends it.
    retryInterval: () => {
      if (closed) throw new Error('the listener was closed');
      return RETRY_INTERVAL_MS;
    },
    paranoidChecking: checkIntervalMs + checkTimeoutMs,
    // The payload is never read: any login may NOTIFY on the channel, and
    // pg-listen's default JSON.parse logged an error for each payload that
    // was not JSON. A notification only wakes.
    parse: (payload: string) => payload,
  });
  // (a connection with nothing in flight ends politely, waiting for the
  // server's side to close: on a stalled network, for minutes)
  const end = () => sockets.endWithin(subscriber.close(), END_TIMEOUT_MS);
  const close = async () => {
    closed = true;
    await end();
  };
  subscriber.events.on('notification', onWake);
  subscriber.events.on('connected', () => {
    if (closed) return void end(); // a reconnect that finished after close()
    logger.info('listener connected');
    onWake();
  });
  subscriber.events.on('reconnect', (attempt: number) => {
    // every attempt is twice a second: the first, then one line every ten seconds
    if (!closed && attempt % RECONNECT_LOG_EVERY === 1) logger.warn({ attempt }, 'listener reconnecting');
  });
  subscriber.events.on('error', (error: Error) => {
    // (closed: a reconnect whose LISTEN failed after close() left its client open)
    if (closed) return void end();
    logger.error({ err: error }, 'listener error');
  });
  try {
    await subscriber.connect();
    await subscriber.listenTo(channel);
  } catch (error) {
    await close().catch(() => {});
    throw error;
  }
  return { close };
}
