import databases, { sql, type ConnectionPool, type Queryable } from '@databases/pg';
import connectionString from '@databases/pg-connection-string';
import { DEFAULT_APPLICATION_NAME, KEEPALIVE_INITIAL_DELAY_MS } from '../constants.ts';
import { InvalidInputError } from '../errors.ts';
import { NODE_PG_SSL_SWITCH, tlsPlan, withoutNodePgSwitch } from './tls.ts';

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
  return readingUrl(url, () => databases.default({
    // (under allow and prefer the URL as given: the pool reads a client
    // certificate's files from it itself)
    connectionString: plan.plainIfRefused ? withoutNodePgSwitch(url) : plan.url,
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
    // A server gone without closing the connection is noticed (the OS's
    // probes start after this delay) instead of a query waiting for hours.
    keepAlive: true,
    keepAliveInitialDelayMilliseconds: KEEPALIVE_INITIAL_DELAY_MS,
    // An idle connection dropped by the server (restart, pg_terminate_backend)
    // is replaced on next use; the default handler would print to stderr.
    onError: options.onIdleError ?? (() => {}),
    queryTimeoutMilliseconds: options.queryTimeoutMs,
  }));
}

/**
 * Runs the pool's construction, which parses the URL (and throws on nothing
 * else): a malformed one is an InvalidInputError that says it is the
 * database URL, without the URL (it may hold a password) and without the
 * parser's link to an old PostgreSQL manual. So is a URL with a parameter
 * that the pool's parser does not know (but NODE_PG_SSL_SWITCH, read by
 * tls.ts), as libpq refuses one ("invalid URI query parameter"): the
 * parser would print a warning to stderr, past the logger, and connect
 * without it (a typo in sslmode's name, a statement_timeout that node-pg
 * would apply to some connections, the pool to none).
 */
function readingUrl(url: string, open: () => ConnectionPool): ConnectionPool {
  const unknown: string[] = [];
  try {
    connectionString.default(url, { env: {}, unrecognisedOptionMode: (name) => void (name === NODE_PG_SSL_SWITCH || unknown.push(name)) });
    if (unknown.length === 0) return open();
  } catch (error) {
    const reason = (error instanceof Error ? error.message : String(error)).replace(/\s*See https?:\S+ for examples\.$/, '');
    throw new InvalidInputError(`the database URL is not a PostgreSQL connection string: ${reason}`, undefined, { cause: error });
  }
  if (unknown.includes('channel_binding')) {
    // (hosted servers put it in the URLs they hand out: say what to do)
    throw new InvalidInputError(
      'the database URL asks for channel_binding, which permgraph\'s connections do not do: remove it, and have TLS ' +
        'check the server instead (sslmode=verify-full), which also keeps a server in the middle out',
    );
  }
  throw new InvalidInputError(`the database URL has a parameter permgraph does not know: ${unknown.map((name) => JSON.stringify(name)).join(', ')}`);
}
