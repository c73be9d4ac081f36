import { setTimeout as sleep } from 'node:timers/promises';
import pgListen, { type Subscriber } from 'pg-listen';
import { CHANGES_CHANNEL, LISTENER_APPLICATION_NAME, END_TIMEOUT_MS, STALL_CHECK_INTERVAL_MS, STALL_CHECK_TIMEOUT_MS } from '../constants.ts';
import { clientConfig, onFirstHost, type HostAddress } from '../db/client-config.ts';
import { isQueryReadTimeout } from '../db/pooler.ts';
import { SocketKeeper } from '../db/socket-keeper.ts';
import type { Logger } from '../logger.ts';
import { WAITING_FOR_SERVER_SESSION } from './watchdog.ts';

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

/** One pg-listen subscriber, on one of the URL's hosts, and its sockets. */
interface Subscription {
  subscriber: Subscriber;
  sockets: SocketKeeper;
}

/**
 * LISTENs for wake-ups with pg-listen, reconnecting forever. onWake runs on
 * every notification and after every (re)connect, because notifications
 * sent while disconnected are lost and the worker must catch up. The
 * worker's channel by default; the change stream's followers pass theirs.
 *
 * Every connection, the first and each one after a loss, goes to the first
 * of the URL's hosts that takes it and its LISTEN, tried in the URL's order
 * (onFirstHost): on a URL listing several hosts ('h1,h2:5432',
 * 'h1:5432,h2:5433'), where the pool connects too, and after a failover
 * wherever a listed server answers now, never again and again to the host
 * that went. pg-listen builds every client of a subscriber from one fixed
 * node-pg config, which names one host: so each connection is a subscriber
 * of its own, on the host it reached, that never reconnects itself. When it
 * loses its connection, it gives up at once (its 'error'), and the listener
 * goes through the hosts again from the first, with a new subscriber.
 *
 * A connection that stops answering (a network partition drops packets
 * silently: no error comes for minutes) is noticed by its check query
 * (pg-listen's paranoid check), which must answer within checkTimeoutMs:
 * past it, node-pg fails the query and the listener reconnects ("listener
 * reconnecting").
 *
 * A connection let in (its login answered) whose LISTEN then gets no
 * answer within checkTimeoutMs waits for a server session, as a connection
 * pooler keeps its clients while every session of its pool is in use
 * (PgBouncer in session pooling, whose pool the worker's own connection or
 * the application's fill), or a server too busy to start one. That is no
 * failure: the listener says so once (WAITING_FOR_SERVER_SESSION, until it
 * listens again), tries again and again as after a loss, and listens as
 * soon as a try gets a session; meanwhile its user polls. Found at start,
 * startListener returns with those tries under way, rather than fail. Each
 * try waits checkTimeoutMs in the pooler's queue, not longer: every query
 * of a pg-listen connection, the LISTEN and its checks, is bounded by the
 * one query_timeout, and a check is due every checkIntervalMs +
 * checkTimeoutMs, which node-pg would queue behind a LISTEN still waiting.
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
  /** The subscription that is listening, if any. */
  let current: Subscription | undefined;
  /** Whether a try since the last open() was let in, then kept waiting for a server session (subscribe). */
  let keptWaiting = false;
  /** Whether WAITING_FOR_SERVER_SESSION was logged since the listener last listened. */
  let saidWaiting = false;

  // (a connection with nothing in flight ends politely, waiting for the
  // server's side to close: on a stalled network, for minutes)
  const end = ({ subscriber, sockets }: Subscription) => sockets.endWithin(subscriber.close(), END_TIMEOUT_MS);

  /** A subscriber on `address` (undefined: the URL's one host), once it has connected and LISTENs; closed if it does not get that far. */
  const subscribe = async (address: HostAddress | undefined): Promise<Subscription> => {
    // Its own sockets: close() cuts an attempt short by closing them, and
    // a lost connection's goodbye closes only its own.
    const sockets = new SocketKeeper();
    const cut = () => sockets.destroyAll();
    stopped.signal.addEventListener('abort', cut);
    try {
      // (TLS on the pool's terms: node-pg's own reading of sslmode differs, src/db/tls.ts)
      const config = {
        ...(await clientConfig(url, applicationName, { sockets, address })),
        // Bounds every query of the connection: a check that times out
        // makes pg-listen drop the connection (node-pg's end() closes one
        // with a query in flight at once). A LISTEN that timed out passes
        // that host over.
        query_timeout: checkTimeoutMs,
        // its sockets, for close() on a stalled network
        stream: sockets.stream,
      };
      stopped.signal.throwIfAborted();
      // pg-listen is CommonJS; its factory is the .default export.
      const subscriber = pgListen.default(config, {
        // No attempt of its own to reconnect: its loop tries while
        // `attempt < retryLimit`, from 1. A lost connection makes it emit
        // 'error' at once, and the next connection is the listener's to
        // make, from the first host.
        retryLimit: 1,
        paranoidChecking: checkIntervalMs + checkTimeoutMs,
        // The payload is never read: any login may NOTIFY on the channel,
        // and pg-listen's default JSON.parse reported an error for each
        // payload that was not JSON. A notification only wakes.
        parse: (payload: string) => payload,
      });
      const subscription: Subscription = { subscriber, sockets };
      subscriber.events.on('notification', () => {
        if (current === subscription) onWake();
      });
      // (also one whose first connect failed, after the listener passed it
      // over: pg-listen reports that loss too; an EventEmitter throws on an
      // 'error' nobody listens to)
      subscriber.events.on('error', () => lost(subscription));
      let letIn = false;
      try {
        // ('connected', which pg-listen emits here before the LISTEN, is
        // not waited for: the listener is connected once it LISTENs)
        await subscriber.connect();
        letIn = true;
        await subscriber.listenTo(channel);
        return subscription;
      } catch (error) {
        // (its place in a pooler's queue goes with it: the next try waits at the end)
        await end(subscription);
        if (letIn && isQueryReadTimeout(error)) keptWaiting = true;
        throw error;
      }
    } finally {
      stopped.signal.removeEventListener('abort', cut);
    }
  };

  /** The first of the URL's hosts that takes a subscriber, from the first. */
  const open = () => {
    keptWaiting = false;
    return onFirstHost(url, subscribe, stopped.signal);
  };

  const adopt = (subscription: Subscription) => {
    current = subscription;
    saidWaiting = false;
    logger.info('listener connected');
    onWake();
  };

  /** After a try that failed: whether it waited for a server session, said once until the listener listens again. */
  const waitedForSession = (): boolean => {
    if (!keptWaiting) return false;
    if (!saidWaiting) logger.warn({ operation: 'LISTEN', waitedMs: checkTimeoutMs }, WAITING_FOR_SERVER_SESSION);
    saidWaiting = true;
    return true;
  };

  const lost = (subscription: Subscription) => {
    if (closed || current !== subscription) return;
    current = undefined;
    void end(subscription);
    void reconnect();
  };

  /**
   * Tries until a subscriber listens, or close(). `waiting`: the try before
   * (startListener's first) waited for a server session, which was said.
   */
  const reconnect = async (waiting = false) => {
    let failure: unknown;
    for (let attempt = 1; !closed; attempt++) {
      // attempts half a second apart: the first, then every 20th (ten
      // seconds of quick failures), with why the last one failed; none
      // while tries wait for a server session (said once)
      if (attempt % RECONNECT_LOG_EVERY === 1 && !waiting) logger.warn({ attempt, err: failure }, 'listener reconnecting');
      try {
        const subscription = await open();
        // (a connection finished after close(): nobody listens on it)
        if (closed) return void (await end(subscription));
        return adopt(subscription);
      } catch (error) {
        failure = error;
        waiting = waitedForSession();
      }
      await sleep(RETRY_INTERVAL_MS, undefined, { signal: stopped.signal }).catch(() => {});
    }
  };

  const close = async () => {
    closed = true;
    stopped.abort();
    const subscription = current;
    current = undefined;
    if (subscription) await end(subscription);
  };

  try {
    adopt(await open());
  } catch (error) {
    // (kept waiting for a server session: no failure, the tries go on)
    if (!waitedForSession()) {
      await close();
      throw error;
    }
    void reconnect(true);
  }
  return { close };
}
