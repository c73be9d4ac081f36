// The settings of a raw node-pg client, apart from the pool (pool.ts): its
// declarations name pg's types, which the package's public declarations must
// not (pg's types are not among its dependencies), so it is not reachable
// from them.
import pg, { type ClientConfig } from 'pg';
import { CONNECT_TIMEOUT_MS, KEEPALIVE_INITIAL_DELAY_MS } from '../constants.ts';
import { isTlsRefused, tlsPlan } from './tls.ts';

/**
 * The settings of a raw pg.Client on the pool's terms (tlsPlan): for what
 * the pool cannot do, COPY FROM STDIN (import) and LISTEN (pg-listen). Under
 * allow and prefer, whether the server takes TLS is asked once, by
 * connecting: node-pg, unlike the pool, has no fallback of its own.
 */
export async function clientConfig(url: string, applicationName: string): Promise<ClientConfig> {
  const plan = tlsPlan(url);
  const config = {
    connectionString: plan.url,
    ssl: plan.tls ?? false,
    application_name: applicationName,
    // as the pool's connections (pool.ts)
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_INITIAL_DELAY_MS,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
  };
  if (!plan.plainIfRefused) return config;
  const probe = new pg.Client(config);
  probe.on('error', () => {});
  try {
    await probe.connect();
    return config;
  } catch (error) {
    if (isTlsRefused(error)) return { ...config, ssl: false };
    throw error;
  } finally {
    await probe.end().catch(() => {});
  }
}
