// A walk over JSON-like values (the database's JSON as the driver parses
// it, the library's results), shared by the conversions that rebuild their
// objects: the CLI's --json output (src/cli/json.ts) and the moments of
// permgraph.status() (src/app/status.ts).

/**
 * A copy of value in which each object, at any depth (not a Date), is
 * rebuilt by `rebuild` from its fields, given `inner` to convert the values
 * it keeps; arrays and scalars as they are, their items converted.
 */
export function mapObjects(value: unknown, rebuild: (fields: Record<string, unknown>, inner: (v: unknown) => unknown) => Record<string, unknown>): unknown {
  const inner = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(inner);
    if (v === null || typeof v !== 'object' || v instanceof Date) return v;
    return rebuild(v as Record<string, unknown>, inner);
  };
  return inner(value);
}
