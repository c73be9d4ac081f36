// --json output is camelCase throughout, like the TypeScript API. Most
// commands print the API's own objects; this converts the few that come
// straight from SQL (snake_case column and key names), and the library's
// moments (explain's, the listings', the audit log's) to the microsecond.
import { mapObjects } from '../objects.ts';

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
