import databases, { sql, type ConnectionPool, type Queryable } from '@databases/pg';
import { DEFAULT_APPLICATION_NAME } from '../constants.ts';
import { InvalidInputError } from '../errors.ts';
import { installDirectConnections } from './pool-connections.ts';
import { NODE_PG_SSL_SWITCH, tlsPlan, urlWithout } from './tls.ts';
import { readingUrl, readUrlParameters } from './url-parameters.ts';

export { sql };
export type { ConnectionPool, Queryable };

/** The search_path of every connection permgraph opens: the catalog, then temporary tables. */
export const PINNED_SEARCH_PATH = ['pg_catalog', 'pg_temp'];

export interface PoolOptions {
  poolSize?: number;
  applicationName?: string;
  onIdleError?: (error: Error) => void;
  /**
   * SET search_path = PINNED_SEARCH_PATH on each connection (default true).
   * A session setting: through a transaction pooler it would land on one
   * server session and pass to whichever client the pooler hands that
   * session next (see openApplicationPool).
   */
  pinSearchPath?: boolean;
  /** How long a query may wait for its answer (ms; default: no bound). */
  queryTimeoutMs?: number;
}

/** A connection pool on an explicit URL (never silently on DATABASE_URL: callers decide). */
export function openPool(url: string, options: PoolOptions = {}): ConnectionPool {
  const poolSize = options.poolSize ?? 10;
  // (a size below 1 would leave every query waiting for a connection forever)
  if (!Number.isInteger(poolSize) || poolSize < 1) throw new InvalidInputError(`poolSize must be a positive integer, got ${poolSize}`);
  // @databases/pg is CommonJS; its callable export is reachable as .default in ESM.
  const plan = tlsPlan(url);
  const settings = readUrlParameters(url);
  installDirectConnections();
  return readingUrl(url, () => databases.default({
    // (under allow and prefer the URL with its TLS parameters: the pool
    // reads a client certificate's files from it itself)
    connectionString: plan.plainIfRefused ? urlWithout(url, [NODE_PG_SSL_SWITCH]) : plan.url,
    bigIntMode: 'number',
    poolSize,
    applicationName: options.applicationName ?? DEFAULT_APPLICATION_NAME,
    // TLS as the URL's sslmode says, read as libpq reads it (tls.ts); the
    // pool's own 'prefer' is what falls back to plain text for allow and prefer.
    ssl: plan.tls === null ? 'disable' : plan.plainIfRefused ? 'prefer' : plan.tls,
    // Pinned on every connection, so no statement permgraph sends can resolve
    // a name to an object someone planted in public (a function taking
    // text[] beats pg_catalog's polymorphic unnest wherever public is on the
    // path). Applications name their own tables with their schema.
    schema: options.pinSearchPath === false ? undefined : PINNED_SEARCH_PATH,
    // What the URL says of connecting and keepalives (url-parameters.ts),
    // as every raw client takes it: by default a server gone without
    // closing the connection is noticed (the OS's probes start after
    // KEEPALIVE_INITIAL_DELAY_MS) instead of a query waiting for hours.
    connectionTimeoutMilliseconds: settings.connectTimeoutMs,
    keepAlive: settings.keepAlive,
    keepAliveInitialDelayMilliseconds: settings.keepAliveInitialDelayMs,
    // An idle connection dropped by the server (restart, pg_terminate_backend)
    // is replaced on next use; the default handler would print to stderr.
    onError: options.onIdleError ?? (() => {}),
    queryTimeoutMilliseconds: options.queryTimeoutMs,
  }));
}
