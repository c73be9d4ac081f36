// --json output is camelCase throughout, like the TypeScript API. Most
// commands print the API's own objects; this converts the few that come
// straight from SQL (snake_case column and key names).

/** A copy of value with every object key in camelCase (last_batch_at -> lastBatchAt); arrays, dates and scalars as they are. */
export function camelCaseKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(camelCaseKeys);
  if (value === null || typeof value !== 'object' || value instanceof Date) return value;
  return Object.fromEntries(Object.entries(value).map(([key, v]) => [key.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase()), camelCaseKeys(v)]));
}
