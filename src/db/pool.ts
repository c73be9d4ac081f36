import databases, { sql, type ConnectionPool, type Queryable } from '@databases/pg';
import { DEFAULT_APPLICATION_NAME } from '../constants.ts';
import { InvalidInputError } from '../errors.ts';
import { clientAnnouncedPid } from './close-connection.ts';
import { installDirectConnections, withConnectionSetUp } from './pool-connections.ts';
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
   * session next (see openApplicationPool). 'if-direct': on each connection
   * that is a server session of its own, and on no other (pinSearchPath).
   */
  pinSearchPath?: boolean | 'if-direct';
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
  const pin = options.pinSearchPath ?? true;
  const setUp = pin === false ? undefined : (client: unknown) => pinSearchPath(client, pin === 'if-direct');
  return readingUrl(url, () => withConnectionSetUp(setUp, () => databases.default({
    // (under allow and prefer the URL with its TLS parameters: the pool
    // reads a client certificate's files from it itself)
    connectionString: plan.plainIfRefused ? urlWithout(url, [NODE_PG_SSL_SWITCH]) : plan.url,
    bigIntMode: 'number',
    poolSize,
    applicationName: options.applicationName ?? DEFAULT_APPLICATION_NAME,
    // TLS as the URL's sslmode says, read as libpq reads it (tls.ts); the
    // pool's own 'prefer' is what falls back to plain text for allow and prefer.
    ssl: plan.tls === null ? 'disable' : plan.plainIfRefused ? 'prefer' : plan.tls,
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
  })));
}

/**
 * Pins the search path of a new connection (as `SET search_path`: for the
 * session), so that no statement permgraph sends can resolve a name to an
 * object someone planted in public (a function taking text[] beats
 * pg_catalog's polymorphic unnest wherever public is on the path).
 * Applications name their own tables with their schema. DateStyle's output
 * form is pinned with it (ISO, which the driver reads; see PIN).
 *
 * onlyIfDirect: only when the server session that runs the statement is the
 * one the connection announced at its start (BackendKeyData): then nothing
 * in between made its own process id up, and the connection is direct.
 * Through a pooler the two differ, and nothing is set on the server
 * session, which other clients may be handed next. Asked and set in one
 * statement, one round trip, as a SET alone. A connection whose announced
 * id is unknown (node-pg keeps it elsewhere: another version) is left
 * unpinned. Every name in either statement is qualified: it runs on the
 * login's own path.
 */
async function pinSearchPath(client: unknown, onlyIfDirect: boolean): Promise<void> {
  const queryable = client as { query(text: string, values: unknown[]): Promise<unknown> };
  const path = PINNED_SEARCH_PATH.join(', ');
  if (!onlyIfDirect) {
    await queryable.query(PIN, [path]);
    return;
  }
  const announced = clientAnnouncedPid(client as object);
  if (announced === undefined) return;
  await queryable.query(PIN_IF_DIRECT, [announced, path]);
}

// (the path as SET writes it, its names being plain identifiers: current_setting shows the same)
// With the path, the output half of DateStyle: the driver reads timestamps
// in the ISO form only, and under a database's or login's DateStyle SQL,
// Postgres or German it read every one as null (an expiry as "never").
const PIN =
  "select pg_catalog.set_config('search_path', $1::pg_catalog.text, false), pg_catalog.set_config('datestyle', 'ISO', false)";
const PIN_IF_DIRECT =
  'select case when pg_catalog.pg_backend_pid() operator(pg_catalog.=) $1::pg_catalog.int4 ' +
  "then pg_catalog.set_config('search_path', $2::pg_catalog.text, false) || pg_catalog.set_config('datestyle', 'ISO', false) end as search_path";
