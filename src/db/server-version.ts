import { sql, type Queryable } from './pool.ts';
import { PermgraphError } from '../errors.ts';

/** The oldest PostgreSQL major version permgraph's SQL runs on. */
export const MIN_SERVER_VERSION_NUM = 140000;

/**
 * Refuses a server older than PostgreSQL 14 with a message that says so,
 * instead of letting the first unsupported function fail somewhere deep in a
 * migration.
 */
export async function assertServerVersion(db: Queryable): Promise<number> {
  const [row] = await db.query(sql`select current_setting('server_version_num')::int as num, current_setting('server_version') as version`);
  const num = Number(row.num);
  if (num < MIN_SERVER_VERSION_NUM) {
    throw new PermgraphError(
      `permgraph needs PostgreSQL ${MIN_SERVER_VERSION_NUM / 10000} or newer; this server is PostgreSQL ${row.version}`,
    );
  }
  return num;
}
