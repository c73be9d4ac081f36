// --json output is camelCase throughout, like the TypeScript API. Most
// commands print the API's own objects; this converts the few that come
// straight from SQL (snake_case column and key names), and the library's
// moments (explain's, the listings', the audit log's) to the microsecond.
import { exactMoment } from '../db/moment.ts';

/**
 * A copy of value in which each object, at any depth (not a Date), is
 * rebuilt by `rebuild` from its fields, given `inner` to convert the values
 * it keeps; arrays and scalars as they are, their items converted.
 */
function mapObjects(value: unknown, rebuild: (fields: Record<string, unknown>, inner: (v: unknown) => unknown) => Record<string, unknown>): unknown {
  const inner = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(inner);
    if (v === null || typeof v !== 'object' || v instanceof Date) return v;
    return rebuild(v as Record<string, unknown>, inner);
  };
  return inner(value);
}

/** A copy of value with every object key in camelCase (last_batch_at -> lastBatchAt); arrays, dates and scalars as they are. */
export function camelCaseKeys(value: unknown): unknown {
  return mapObjects(value, (fields, inner) =>
    Object.fromEntries(Object.entries(fields).map(([key, v]) => [key.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase()), inner(v)])),
  );
}

/**
 * A copy of value in which every field with an `…Exact` twin (the library's
 * moments: a Date, and its text to the microsecond) takes the twin's value,
 * and the twin goes: the JSON keeps the API's keys, and prints the moments
 * as the database stores them.
 */
export function exactMoments(value: unknown): unknown {
  const twin = (key: string) => `${key}Exact`;
  return mapObjects(value, (fields, inner) =>
    Object.fromEntries(
      Object.entries(fields)
        .filter(([key]) => !(key.endsWith('Exact') && key.slice(0, -'Exact'.length) in fields))
        .map(([key, v]) => [key, twin(key) in fields ? fields[twin(key)] : inner(v)]),
    ),
  );
}

/**
 * A copy of camelCased SQL JSON (permgraph.status()'s) in which its moments,
 * the keys ending in `At` (lastBatchAt, startedAt, registeredAt, …: columns
 * of permgraph's tables) and the sessions' `since` (pg_stat_activity's),
 * are in UTC to the microsecond (exactMoment), as the library gives every
 * moment, instead of in the session's time zone as the database writes
 * JSON. Other values as they are.
 */
export function statusMomentsInUtc(value: unknown): unknown {
  return mapObjects(value, (fields, inner) =>
    Object.fromEntries(
      Object.entries(fields).map(([key, v]) => [key, (key.endsWith('At') || key === 'since') && typeof v === 'string' ? exactMoment(v) : inner(v)]),
    ),
  );
}
