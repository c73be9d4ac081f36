import databases, { sql, type ConnectionPool, type Queryable } from '@databases/pg';
import { DEFAULT_APPLICATION_NAME } from '../constants.ts';

export { sql };
export type { ConnectionPool, Queryable };

export interface PoolOptions {
  poolSize?: number;
  applicationName?: string;
  onIdleError?: (error: Error) => void;
}

/** A connection pool on an explicit URL (never silently on DATABASE_URL: callers decide). */
export function openPool(url: string, options: PoolOptions = {}): ConnectionPool {
  // @databases/pg is CommonJS; its callable export is reachable as .default in ESM.
  return databases.default({
    connectionString: url,
    bigIntMode: 'number',
    poolSize: options.poolSize ?? 10,
    applicationName: options.applicationName ?? DEFAULT_APPLICATION_NAME,
    ssl: urlRequestsSsl(url) ? 'prefer' : 'disable',
    // An idle connection dropped by the server (restart, pg_terminate_backend)
    // is replaced on next use; the default handler would print to stderr.
    onError: options.onIdleError ?? (() => {}),
  });
}

function urlRequestsSsl(url: string): boolean {
  try {
    const mode = new URL(url).searchParams.get('sslmode');
    return mode !== null && mode !== 'disable';
  } catch {
    return false;
  }
}
