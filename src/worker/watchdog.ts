import { ConnectionStalledError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Probe, ProbedSession, ProbeOutcome } from './probe.ts';
import { Wakeup } from './wakeup.ts';

export interface WatchdogTimings {
  /**
   * A statement unanswered this long is probed, and again this often while
   * still unanswered (ms); after a probe that found its session busy, twice
   * as long as the last wait, up to maxCheckIntervalMs.
   */
  checkIntervalMs: number;
  /** The longest wait between two probes of one statement (ms). */
  maxCheckIntervalMs: number;
  /**
   * How long a probe, or the LISTEN connection's check, may take (ms). A
   * statement before the session is known (its set-up) has checkIntervalMs
   * + checkTimeoutMs to answer.
   */
  checkTimeoutMs: number;
}

export interface WatchdogOptions {
  timings: WatchdogTimings;
  probe: Probe;
  /** Closes the connection at once, so that the statement it runs fails with a connection error; false if it could not. */
  closeConnection: () => boolean;
  logger: Logger;
}

/** Unanswered probes in a row that make a stall (one while stopping): a server slow to accept one connection is not a partition. */
const UNANSWERED_PROBES_FOR_STALL = 2;

/** What is logged (once a statement) of the probes that prove nothing either way. */
const UNKNOWN_OUTCOME_MESSAGES = {
  refused: 'still waiting for the database; a probe was refused, so whether its session is alive is unknown',
  slow: 'still waiting for the database; the server was slow to answer a probe, so whether its session is alive is unknown',
  elsewhere: "still waiting for the database; a probe reached another server than its session's, so whether its session is alive is unknown",
  answered: 'still waiting for the database; a probe asked nothing about its session, so whether it is alive is unknown', // (never: a session is asked about)
} as const;

/**
 * What the worker logs (once) while a connection of its waits for a server
 * session: a probe's new connection was let in (the login answered), but
 * not its statement. A LISTEN connection (listener.ts: the worker's, a
 * change stream follower's) logs it once too, having been let in itself
 * and its LISTEN left unanswered. A connection pooler does that while the server
 * sessions of its pool are all in use by other clients (PgBouncer queues
 * the client until one is free, or its query_wait_timeout), and so does a
 * server too busy to start a session. Not a network stall.
 */
export const WAITING_FOR_SERVER_SESSION =
  'waiting for a server session: new connections are let in, but their statements wait, as behind a connection pooler whose server sessions are all in use (or a server too busy to start one)';

/**
 * Watches the statements of one connection (the worker's) and closes the
 * connection when the database has stopped answering on it: on a network
 * that silently drops packets, node-pg would wait for the OS's TCP
 * keepalives (~11 min on Linux), and the worker with it, while the server
 * already gave its applier role to a standby (~25 s: WORKER_SESSION_SETTINGS).
 *
 * A statement still unanswered after checkIntervalMs is not yet a stall: a
 * full recomputation takes minutes, and a batch may wait for a lock. So
 * the server is asked, over a fresh connection (createProbe), about the
 * session the statement runs in, and again while it runs: checkIntervalMs
 * later, or, after a probe that found the session busy, twice as long as the
 * last wait, up to maxCheckIntervalMs (a long batch is not probed, a
 * connection each time, every few seconds). The connection is closed when
 * - the server has no such session any more: its keepalives ended it, or
 *   client_connection_check_interval did once they failed, even in the
 *   middle of a batch;
 * - the session has been idle for checkIntervalMs while the worker waits
 *   for it: the statement never reached it, or its answer never came back
 *   (the probe ends that session, which holds the applier role);
 * - two probes in a row got no answer in checkTimeoutMs (connecting
 *   included): the server cannot be reached at all.
 * A session that is there and busy (running, or waiting for a lock) is
 * left alone however long it takes, and a server that answers a probe with
 * an error (too many connections…), or begins to answer it but is too slow
 * to finish (a pooler whose pool is full), proves nothing either way; nor
 * does a probe that reached another server than the session's (probes
 * connect to the address the session's connection reached, but a load
 * balancer there may lead elsewhere). A
 * probe still under way when the statement settles is abandoned, ending
 * nothing.
 *
 * Statements before the session is known (identify: the session's set-up,
 * a few settings that take milliseconds) cannot be asked about: they are
 * given checkIntervalMs + checkTimeoutMs, the time a stall takes to be
 * confirmed by one probe, and the connection is closed past it. Unless a
 * probe then finds new connections let in but their statements waiting
 * (WAITING_FOR_SERVER_SESSION: a pooler's queue, which this statement
 * waits in too, and which a new connection would join at its end): that
 * is logged, and waited for while probes keep finding it.
 *
 * The statement then fails with a ConnectionStalledError (a connection
 * error): the worker retries on a new connection, as after any lost one.
 */
export class ConnectionWatchdog {
  private session: ProbedSession | undefined;
  private stopping = false;
  /** The wake-up of the watch under way (a connection runs one statement at a time). */
  private readonly watches = new Set<Wakeup>();

  constructor(private readonly options: WatchdogOptions) {}

  /** The connection's session, once read: statements before it have a deadline instead of probes. */
  identify(session: ProbedSession): void {
    this.session = session;
  }

  /**
   * The worker is stopping: the statement under way is probed now rather
   * than when its time comes, and from now on one unanswered probe is
   * enough. A busy session is still waited for (stop() finishes the batch).
   */
  stop(): void {
    this.stopping = true;
    for (const wake of this.watches) wake.notify();
  }

  /** Runs `run` (statements on the watched connection), closing the connection if it stalls meanwhile. */
  async watch<T>(what: string, run: () => Promise<T>): Promise<T> {
    const watch: Watch = { what, startedAt: Date.now(), wake: new Wakeup(), answered: new AbortController(), settled: false, stall: undefined };
    this.watches.add(watch.wake);
    void this.supervise(watch);
    try {
      return await run();
    } catch (error) {
      if (watch.stall !== undefined) throw new ConnectionStalledError(`the database stopped answering: ${watch.stall}; closed the connection`, { cause: error });
      throw error;
    } finally {
      watch.settled = true;
      this.watches.delete(watch.wake);
      watch.wake.notify();
      // A probe under way is abandoned: it must not end the session, on
      // which the worker may now wait idle, nor keep a socket open.
      watch.answered.abort();
    }
  }

  /**
   * A statement before the session is known: a stall once its time is up
   * (a stop() does not shorten it), unless the probe at checkIntervalMs,
   * which asks only whether a new connection is answered, is let in and
   * then kept waiting ('slow'): then it waits on, probing again less and
   * less often (up to maxCheckIntervalMs), until a probe finds otherwise
   * (a stall at once), or the worker stops (a stall: its connection is
   * closed rather than left in the queue).
   */
  private async superviseUnidentified(watch: Watch): Promise<void> {
    const { checkIntervalMs, checkTimeoutMs, maxCheckIntervalMs } = this.options.timings;
    const deadline = watch.startedAt + checkIntervalMs + checkTimeoutMs;
    let nextProbeAt = watch.startedAt + checkIntervalMs;
    let interval = checkIntervalMs;
    let queued = false;
    for (;;) {
      // (while queued, a stop() ends the wait)
      while (!watch.settled && !(queued && this.stopping) && Date.now() < nextProbeAt) await watch.wake.wait(nextProbeAt - Date.now());
      if (watch.settled || (queued && this.stopping)) break;
      const outcome = await this.options.probe(undefined, checkIntervalMs, watch.answered.signal).catch(
        (error: unknown): ProbeOutcome => ({ kind: 'refused', reason: `the probe failed: ${String(error)}` }),
      );
      if (watch.settled || outcome.kind !== 'slow') break;
      if (!queued) this.options.logger.warn({ operation: watch.what, waitedMs: Date.now() - watch.startedAt, probe: outcome }, WAITING_FOR_SERVER_SESSION);
      queued = true;
      interval = Math.min(interval * 2, Math.max(checkIntervalMs, maxCheckIntervalMs));
      nextProbeAt = Date.now() + interval;
    }
    while (!watch.settled && Date.now() < deadline) await watch.wake.wait(deadline - Date.now());
    if (watch.settled) return;
    const waitedMs = Date.now() - watch.startedAt;
    this.declareStall(watch, { operation: watch.what, waitedMs }, `${watch.what} got no answer for ${seconds(waitedMs)}, which takes milliseconds`);
  }

  private async supervise(watch: Watch): Promise<void> {
    const session = this.session;
    if (session === undefined) return this.superviseUnidentified(watch);
    const { checkIntervalMs, maxCheckIntervalMs } = this.options.timings;
    let unanswered = 0;
    let unknownLogged = false;
    /** The wait between probes: doubled after each probe that found the session busy. */
    let interval = checkIntervalMs;
    let nextProbeInMs = interval;
    for (;;) {
      await watch.wake.wait(nextProbeInMs);
      if (watch.settled) return;
      const outcome = await this.options.probe(session, checkIntervalMs, watch.answered.signal).catch(
        (error: unknown): ProbeOutcome => ({ kind: 'refused', reason: `the probe failed: ${String(error)}` }), // (a bug here proves no stall)
      );
      if (watch.settled) return;
      const context = { operation: watch.what, waitedMs: Date.now() - watch.startedAt, backendPid: session.pid, probe: outcome };
      switch (outcome.kind) {
        case 'alive':
          unanswered = 0;
          interval = Math.max(checkIntervalMs, Math.min(interval * 2, maxCheckIntervalMs));
          this.options.logger.debug({ ...context, nextCheckInMs: interval }, 'still waiting for the database; its session is alive');
          break;
        case 'refused':
        case 'slow':
        case 'elsewhere':
        case 'answered':
          unanswered = 0;
          if (!unknownLogged) this.options.logger.warn(context, UNKNOWN_OUTCOME_MESSAGES[outcome.kind]);
          unknownLogged = true;
          break;
        case 'unanswered':
          unanswered++;
          if (unanswered >= UNANSWERED_PROBES_FOR_STALL || this.stopping) {
            return this.declareStall(watch, context, `${watch.what} got no answer for ${seconds(context.waitedMs)}, nor did ${unanswered} probe(s) over a new connection (${outcome.reason})`);
          }
          this.options.logger.warn(context, 'still waiting for the database; a probe got no answer: probing again');
          nextProbeInMs = 0; // a second opinion at once
          continue;
        case 'abandoned':
          return; // (the statement was answered: settled above)
        case 'gone':
          return this.declareStall(watch, context, `${watch.what} got no answer for ${seconds(context.waitedMs)}, and the server has no session ${session.pid} any more`);
        case 'stuck':
          return this.declareStall(
            watch,
            context,
            `${watch.what} got no answer for ${seconds(context.waitedMs)}, while its session ${session.pid} has been ${outcome.state} for ${seconds(outcome.idleMs)}` +
              (outcome.ended ? ' (the probe ended it)' : ''),
          );
      }
      nextProbeInMs = interval;
    }
  }

  private declareStall(watch: Watch, context: object, reason: string): void {
    watch.stall = reason;
    this.options.logger.error({ ...context, reason }, 'the database stopped answering the worker\'s connection: closing it to reconnect');
    if (!this.options.closeConnection()) {
      this.options.logger.error(context, 'could not close the stalled connection: the worker waits until the operating system gives up on it');
    }
  }
}

interface Watch {
  what: string;
  startedAt: number;
  /** Notified when the watched statements settle, and by stop(). */
  wake: Wakeup;
  /** Aborted when the watched statements settle: a probe under way is abandoned. */
  answered: AbortController;
  settled: boolean;
  /** Why the connection was closed, once it was. */
  stall: string | undefined;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}
