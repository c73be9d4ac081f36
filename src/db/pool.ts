import databases, { sql, type ConnectionPool, type Queryable } from '@databases/pg';
import { DEFAULT_APPLICATION_NAME } from '../constants.ts';

export { sql };
export type { ConnectionPool, Queryable };

/** The search_path of every connection permgraph opens: the catalog, then temporary tables. */
export const PINNED_SEARCH_PATH = ['pg_catalog', 'pg_temp'];

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
    // Pinned on every connection, so no statement permgraph sends can resolve
    // a name to an object someone planted in public (a function taking
    // text[] beats pg_catalog's polymorphic unnest wherever public is on the
    // path). Applications name their own tables with their schema.
    schema: PINNED_SEARCH_PATH,
    // An idle connection dropped by the server (restart, pg_terminate_backend)
    // is replaced on next use; the default handler would print to stderr.
    onError: options.onIdleError ?? (() => {}),
  });
}

/**
 * The settings of a raw pg.Client on the pool's terms (for what the pool
 * cannot do, such as COPY FROM STDIN): a URL that asks for SSL gets it
 * without certificate verification, as the pool's 'prefer' does (node-pg
 * would otherwise read sslmode=require as verify-full, and refuse servers
 * the pool accepts). The ssl parameters are taken out of the URL, since
 * node-pg lets them override the ssl option. Unlike the pool's 'prefer', no
 * fallback to a plain connection.
 */
export function clientConfig(url: string, applicationName: string): { connectionString: string; ssl: false | { rejectUnauthorized: false }; application_name: string } {
  if (!urlRequestsSsl(url)) return { connectionString: url, ssl: false, application_name: applicationName };
  const stripped = new URL(url);
  for (const key of ['sslmode', 'ssl', 'sslcert', 'sslkey', 'sslrootcert', 'uselibpqcompat']) stripped.searchParams.delete(key);
  return { connectionString: stripped.toString(), ssl: { rejectUnauthorized: false }, application_name: applicationName };
}

function urlRequestsSsl(url: string): boolean {
  try {
    const mode = new URL(url).searchParams.get('sslmode');
    return mode !== null && mode !== 'disable';
  } catch {
    return false;
  }
}
