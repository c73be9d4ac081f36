// permgraph.status() as the library reads it, for `permgraph status` and
// doctor alike: the one place that puts its moments in UTC.
import { exactMoment } from '../db/moment.ts';
import { sql, type Queryable } from '../db/pool.ts';
import { mapObjects } from '../objects.ts';

/**
 * permgraph.status() as readStatus gives it: the database's keys, moments in
 * UTC to the microsecond; the fields the library reads are typed.
 */
export interface Status {
  pending_changes: number;
  permission_rows: number;
  /** Absent from the status() of an older schema. */
  permissions_missing?: boolean;
  oldest_pending_age_s: number | null;
  /** The oldest change a running long job holds, whose token waits for it; null when none, absent from an older schema's status(). */
  long_job_oldest_change_age_s?: number | null;
  worker: { pid: number; application_name: string; since: string | null } | null;
  /** Absent from the status() of an older schema, as change_consumers. */
  change_consumers?: Record<string, any>[];
  /** Absent from the status() of an older schema. */
  restored_from_another_cluster?: boolean;
  /** may_apply is absent from the status() of an older schema, which lists only sessions that may not. */
  blocking_sessions?: { pid: number; role: string; application_name: string; lock: 'role' | 'batch'; state: string | null; since: string | null; may_apply?: boolean }[];
  /** The rest of status()'s fields (docs/sql.md), as it gives them. */
  [field: string]: unknown;
}

/**
 * permgraph.status(): its JSON with the database's keys (snake_case), in
 * which every moment, the keys ending in `_at` (last_batch_at, started_at,
 * registered_at, …: columns of permgraph's tables) and the sessions' `since`
 * (pg_stat_activity's), is in UTC to the microsecond (exactMoment), as the
 * library gives every moment, instead of in the session's time zone as the
 * database writes JSON. Other values as they are.
 */
export async function readStatus(db: Queryable): Promise<Status> {
  const [{ status }] = await db.query(sql`select permgraph.status() as status`);
  return mapObjects(status, (fields, inner) =>
    Object.fromEntries(
      Object.entries(fields).map(([key, v]) => [key, (key.endsWith('_at') || key === 'since') && typeof v === 'string' ? exactMoment(v) : inner(v)]),
    ),
  ) as Status;
}
