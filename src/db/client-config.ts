// The settings of a raw node-pg client, apart from the pool (pool.ts): its
// declarations name pg's types, which the package's public declarations must
// not (pg's types are not among its dependencies), so it is not reachable
// from them.
import connectionString from '@databases/pg-connection-string';
import pg, { type ClientConfig } from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { END_TIMEOUT_MS, SERVER_STARTING_RETRY_MS } from '../constants.ts';
import { isServerStarting } from '../errors.ts';
import { isSocketDirectory, type PeerAddress } from './close-connection.ts';
import { SocketKeeper } from './socket-keeper.ts';
import { isTlsRefused, splitHostList, tlsPlan, urlWithout } from './tls.ts';
import { CONNECTION_NAME_PARAMETERS, readingUrl, readUrlParameters } from './url-parameters.ts';

/** Where a raw client connects instead of the URL's host: a reached address (PeerAddress), or one of the hosts a URL lists, whose port may be the default. */
export type HostAddress = Omit<PeerAddress, 'port'> & { port?: number };

export interface ClientConfigOptions {
  /**
   * Where the connection asking whether the server takes TLS (allow,
   * prefer) keeps its socket, so that the caller can close it with its own
   * (the watchdog's probe, at its deadline or when abandoned). Default: a
   * keeper of its own.
   */
  sockets?: SocketKeeper;
  /** How long that connection may take to connect (ms; default, and at most, the URL's connect_timeout: url-parameters.ts). */
  connectTimeoutMs?: number;
  /**
   * Connect to this address instead of the URL's host and port: the server
   * a pooled connection on the same URL reached, where the URL's host may
   * lead to several. verify-full still checks the certificate against a
   * host name: the address's `name` (the one of several hosts that
   * connection reached), else the URL's.
   */
  address?: HostAddress;
}

/**
 * The settings of a raw pg.Client on the pool's terms (tlsPlan): for what
 * the pool cannot do, COPY FROM STDIN (import) and LISTEN (pg-listen, the
 * worker's listener), and for connections to an address a pooled one reached. Under
 * allow and prefer, whether the server takes TLS is asked once, by
 * connecting: node-pg, unlike the pool, has no fallback of its own. That
 * connection's goodbye is waited for END_TIMEOUT_MS at most (a stalled
 * network never answers it).
 */
export async function clientConfig(url: string, applicationName: string, options: ClientConfigOptions = {}): Promise<ClientConfig> {
  const plan = tlsPlan(url);
  const settings = readUrlParameters(url);
  // (verify-full checks the name of the host the address was reached by,
  // not the address: of a URL listing several, the one that answered)
  const name = options.address?.name;
  const named = rawClientUrl(plan.url);
  const config = {
    // (the connection is named here: see CONNECTION_NAME_PARAMETERS)
    connectionString: options.address ? atAddress(named, options.address) : named,
    ssl: plan.tls && plan.mode === 'verify-full' && name !== undefined ? { ...plan.tls, host: name } : (plan.tls ?? false),
    application_name: applicationName,
    // as the pool's connections (pool.ts): node-pg reads neither from the URL
    keepAlive: settings.keepAlive,
    keepAliveInitialDelayMillis: settings.keepAliveInitialDelayMs,
    connectionTimeoutMillis: settings.connectTimeoutMs,
  };
  if (!plan.plainIfRefused) return config;
  const sockets = options.sockets ?? new SocketKeeper();
  const check = newClient(url, { ...config, connectionTimeoutMillis: tighterConnectTimeout(config.connectionTimeoutMillis, options.connectTimeoutMs), stream: sockets.stream });
  check.on('error', () => {});
  try {
    await check.connect();
    return config;
  } catch (error) {
    if (isTlsRefused(error)) return { ...config, ssl: false };
    throw error;
  } finally {
    await sockets.endWithin(check.end(), END_TIMEOUT_MS);
  }
}

/** The URL a raw client is given: the connection is named by its config (see CONNECTION_NAME_PARAMETERS). */
const rawClientUrl = (tlsPlanUrl: string) => urlWithout(tlsPlanUrl, CONNECTION_NAME_PARAMETERS);

/**
 * Refuses, before anything connects, a URL that raw clients (connectClient,
 * clientConfig) cannot read, with the error they would give: a `#` in a
 * password, which the pool's own parser takes. The pool of
 * openApplicationPool opens no raw client, but the worker's and doctor's
 * checks do: a URL that `Permgraph.connect()` took would fail there.
 */
export function refuseUrlRawClientsCannotRead(url: string): void {
  // (what the pool refuses first, named as the pool names it: a port out of range is node-pg's "Invalid URL")
  readUrlParameters(url);
  const named = rawClientUrl(tlsPlan(url).url);
  // (of a URL listing several hosts, each is given to a raw client alone: onFirstHost)
  const first = listedHosts(url)?.[0];
  newClient(url, { connectionString: first ? atAddress(named, first) : named });
}

/**
 * node-pg's client, which reads the URL itself as it is made: a URL the
 * pool's parser took and node-pg's cannot read (a `#` in a password, which
 * libpq reads as it is) is an InvalidInputError saying so, as the pool's
 * are, not node-pg's bare TypeError "Invalid URL".
 */
function newClient(url: string, config: pg.ClientConfig): pg.Client {
  return readingUrl(url, () => new pg.Client(config), (error) => (error as NodeJS.ErrnoException | null)?.code === 'ERR_INVALID_URL');
}

/**
 * The shorter of two bounds on connecting (ms; 0 is none, as node-pg's
 * connectionTimeoutMillis): the URL's, and a caller's own (the watchdog's
 * probe, whose whole probe has a deadline).
 */
export function tighterConnectTimeout(urlMs: number, callerMs: number | undefined): number {
  if (callerMs === undefined || callerMs <= 0) return urlMs;
  return urlMs > 0 ? Math.min(urlMs, callerMs) : callerMs;
}

/**
 * The hosts a postgres:// URL lists, in its order, each with its port (one
 * port for all, or one each), as the pool reads them: with the pool's own
 * parser, so that a raw client tries the servers the pool tries. Undefined
 * for a URL naming one host or none (a Unix socket), and for any other
 * string: node-pg reads those itself.
 */
export function listedHosts(url: string): HostAddress[] | undefined {
  if (!/^postgres(?:ql)?:\/\//i.test(url)) return undefined;
  let hosts: string[];
  let ports: (number | null)[];
  try {
    ({ host: hosts, port: ports } = connectionString.default(url, { unrecognisedOptionMode: 'ignore' }));
  } catch {
    return undefined; // (the pool refuses it too)
  }
  if (hosts.length < 2 || (ports.length > 1 && ports.length !== hosts.length)) return undefined;
  return hosts.map((host, i) => {
    const port = (ports.length > 1 ? ports[i] : ports[0]) ?? undefined;
    return port === undefined ? { host, name: host } : { host, port, name: host };
  });
}

/**
 * `attempt` on the hosts a URL lists (listedHosts), one by one in the URL's
 * order from the first, as the pool and libpq try them: the first that
 * succeeds gives the result. Started again after its server went, it
 * reaches whichever listed server answers now. A URL naming one host is
 * tried once, with no address (node-pg reads it). Throws the last host's
 * error when none succeeds; once `signal` is aborted, no further host is
 * tried.
 */
export async function onFirstHost<T>(url: string, attempt: (address: HostAddress | undefined) => Promise<T>, signal?: AbortSignal): Promise<T> {
  let failure: unknown;
  for (const address of listedHosts(url) ?? [undefined]) {
    signal?.throwIfAborted();
    try {
      return await attempt(address);
    } catch (error) {
      failure = error;
    }
  }
  throw failure;
}

/**
 * A raw pg.Client on the pool's terms (clientConfig), connected to the
 * first of the URL's hosts that takes it (onFirstHost): a URL that lists
 * several ('h1,h2:5432', 'h1:5432,h2:5433') node-pg alone cannot read.
 * Each connection that failed is closed (its goodbye waited for
 * END_TIMEOUT_MS at most). A server that is starting (isServerStarting) is
 * tried again, all the hosts each time, for SERVER_STARTING_RETRY_MS; any
 * other failure is reported at once, after one attempt: the first
 * connection of the worker's start is this one (src/db/pooler.ts), as the
 * first of every command's pool and of Permgraph.connect()'s is opened
 * (openApplicationPool); a pool tries no connection again
 * (src/db/pool-connections.ts). `sockets` keeps its socket (as clientConfig's
 * option), for a caller that bounds its goodbye; `queryTimeoutMs` bounds
 * each statement's wait for its answer (node-pg's query_timeout).
 */
export async function connectClient(
  url: string,
  applicationName: string,
  { sockets = new SocketKeeper(), queryTimeoutMs }: { sockets?: SocketKeeper; queryTimeoutMs?: number } = {},
): Promise<pg.Client> {
  const attempt = () =>
    onFirstHost(url, async (address) => {
      let client: pg.Client | undefined;
      try {
        const config = await clientConfig(url, applicationName, { sockets, address });
        client = newClient(url, { ...config, query_timeout: queryTimeoutMs, stream: sockets.stream });
        client.on('error', () => {}); // (its errors reach the calls awaited here, then its user's handlers)
        await client.connect();
        return client;
      } catch (error) {
        if (client) await sockets.endWithin(client.end(), END_TIMEOUT_MS);
        throw error;
      }
    });
  return whileServerStarting(attempt);
}

/**
 * `attempt` (a first connection), made again while it fails as one to a
 * server that is starting (isServerStarting) fails, for
 * SERVER_STARTING_RETRY_MS, with a growing pause; any other failure is
 * thrown at once.
 */
export async function whileServerStarting<T>(attempt: () => Promise<T>): Promise<T> {
  const start = Date.now();
  for (let tries = 1; ; tries++) {
    try {
      return await attempt();
    } catch (error) {
      if (!isServerStarting(error) || Date.now() - start >= SERVER_STARTING_RETRY_MS) throw error;
    }
    await sleep(tries * 100);
  }
}

/**
 * The URL with its host, or the list of hosts it names, replaced by
 * `address` (any other string is left as it is, to fail as it would). A
 * Unix socket's directory is written %-encoded, as a URL names one
 * (postgres://%2Frun%2Fpostgresql/db): as it is, URL would not take it as a
 * host, and the list would stay.
 */
function atAddress(url: string, address: HostAddress): string {
  const hostname = isSocketDirectory(address.host) ? encodeURIComponent(address.host) : address.host.includes(':') ? `[${address.host}]` : address.host;
  const port = address.port === undefined ? '' : String(address.port);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // libpq's several hosts each with its own port ('h1:5432,h2:5433'),
    // which URL cannot parse: the list is replaced by the one address
    const several = splitHostList(url);
    return several ? `${several.head}${hostname}${port && `:${port}`}${several.rest}` : url;
  }
  parsed.hostname = hostname;
  parsed.port = port;
  // (node-pg reads these before the URL's host)
  for (const key of ['host', 'hostaddr', 'port']) parsed.searchParams.delete(key);
  return parsed.toString();
}
