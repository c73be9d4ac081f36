// The settings of a raw node-pg client, apart from the pool (pool.ts): its
// declarations name pg's types, which the package's public declarations must
// not (pg's types are not among its dependencies), so it is not reachable
// from them.
import pg, { type ClientConfig } from 'pg';
import { CONNECT_TIMEOUT_MS, END_TIMEOUT_MS, KEEPALIVE_INITIAL_DELAY_MS } from '../constants.ts';
import type { PeerAddress } from './close-connection.ts';
import { SocketKeeper } from './socket-keeper.ts';
import { isTlsRefused, tlsPlan } from './tls.ts';

export interface ClientConfigOptions {
  /**
   * Where the connection asking whether the server takes TLS (allow,
   * prefer) keeps its socket, so that the caller can close it with its own
   * (the watchdog's probe, at its deadline or when abandoned). Default: a
   * keeper of its own.
   */
  sockets?: SocketKeeper;
  /** How long that connection may take to connect (ms; default CONNECT_TIMEOUT_MS). */
  connectTimeoutMs?: number;
  /**
   * Connect to this address instead of the URL's host and port: the server
   * a pooled connection on the same URL reached, where the URL's host may
   * lead to several. verify-full still checks the certificate against a
   * host name: the address's `name` (the one of several hosts that
   * connection reached), else the URL's.
   */
  address?: PeerAddress;
}

/**
 * The settings of a raw pg.Client on the pool's terms (tlsPlan): for what
 * the pool cannot do, COPY FROM STDIN (import) and LISTEN (pg-listen). Under
 * allow and prefer, whether the server takes TLS is asked once, by
 * connecting: node-pg, unlike the pool, has no fallback of its own. That
 * connection's goodbye is waited for END_TIMEOUT_MS at most (a stalled
 * network never answers it).
 */
export async function clientConfig(url: string, applicationName: string, options: ClientConfigOptions = {}): Promise<ClientConfig> {
  const plan = tlsPlan(url);
  // (verify-full checks the name of the host the address was reached by,
  // not the address: of a URL listing several, the one that answered)
  const name = options.address?.name;
  const config = {
    connectionString: options.address ? atAddress(plan.url, options.address) : plan.url,
    ssl: plan.tls && plan.mode === 'verify-full' && name !== undefined ? { ...plan.tls, host: name } : (plan.tls ?? false),
    application_name: applicationName,
    // as the pool's connections (pool.ts)
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_INITIAL_DELAY_MS,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
  };
  if (!plan.plainIfRefused) return config;
  const sockets = options.sockets ?? new SocketKeeper();
  const check = new pg.Client({ ...config, connectionTimeoutMillis: options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS, stream: sockets.stream });
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

/** The URL with its host, or the list of hosts it names, replaced by `address` (any other string is left as it is, to fail as it would). */
function atAddress(url: string, address: PeerAddress): string {
  const hostname = address.host.includes(':') ? `[${address.host}]` : address.host;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // libpq's several hosts each with its own port ('h1:5432,h2:5433'),
    // which URL cannot parse: the list is replaced by the one address
    const several = /^(postgres(?:ql)?:\/\/(?:[^@/?#]*@)?)[^/?#]*(.*)$/s.exec(url);
    return several ? `${several[1]}${hostname}:${address.port}${several[2]}` : url;
  }
  parsed.hostname = hostname;
  parsed.port = String(address.port);
  // (node-pg reads these before the URL's host)
  for (const key of ['host', 'hostaddr', 'port']) parsed.searchParams.delete(key);
  return parsed.toString();
}
