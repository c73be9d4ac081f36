// permgraph.status() as the library reads it, for `permgraph status` and
// doctor alike: the one place that puts its moments in UTC.
import { exactMoment } from '../db/moment.ts';
import { sql, type Queryable } from '../db/pool.ts';
import { mapObjects } from '../objects.ts';

/**
 * permgraph.status(): its JSON with the database's keys (snake_case), in
 * which every moment, the keys ending in `_at` (last_batch_at, started_at,
 * registered_at, …: columns of permgraph's tables) and the sessions' `since`
 * (pg_stat_activity's), is in UTC to the microsecond (exactMoment), as the
 * library gives every moment, instead of in the session's time zone as the
 * database writes JSON. Other values as they are.
 */
export async function readStatus(db: Queryable): Promise<Record<string, any>> {
  const [{ status }] = await db.query(sql`select permgraph.status() as status`);
  return mapObjects(status, (fields, inner) =>
    Object.fromEntries(
      Object.entries(fields).map(([key, v]) => [key, (key.endsWith('_at') || key === 'since') && typeof v === 'string' ? exactMoment(v) : inner(v)]),
    ),
  ) as Record<string, any>;
}
