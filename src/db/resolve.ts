import { PermgraphError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';
import { defaultDataDir, startEmbedded } from './embedded.ts';

export interface ResolvedDatabase {
  url: string;
  /** Where the URL came from, for messages. */
  origin: 'flag' | 'env' | 'embedded';
  /** Stops the embedded server if this process started it; otherwise nothing. */
  release(): Promise<void>;
}

/**
 * Connection precedence: --database-url, then DATABASE_URL, then the
 * embedded server. The embedded server is for development: with NODE_ENV
 * set to production it is refused, so that a deployment whose URL went
 * missing fails instead of running on an empty database of its own.
 */
export async function resolveDatabase(options: { databaseUrl?: string; logger?: Logger } = {}): Promise<ResolvedDatabase> {
  if (options.databaseUrl) return { url: options.databaseUrl, origin: 'flag', release: async () => {} };
  const fromEnv = process.env.DATABASE_URL;
  if (fromEnv) return { url: fromEnv, origin: 'env', release: async () => {} };
  if (process.env.NODE_ENV === 'production') {
    throw new PermgraphError(
      'no database URL (neither given nor in DATABASE_URL) and NODE_ENV is production: the embedded PostgreSQL is for development only',
    );
  }
  const server = await startEmbedded({ dataDir: defaultDataDir(), logger: options.logger ?? silentLogger });
  return { url: server.url, origin: 'embedded', release: () => server.stop() };
}
