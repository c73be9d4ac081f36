// The import's inputs: CSV files (header checked) or the operator's queries
// (columns probed), and the fingerprint a resumed run must match.
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { sql, type Queryable } from '../../db/pool.ts';
import { InvalidInputError, SqlState, SqlStateClass, sqlStateOf, withInputErrors } from '../../errors.ts';
import { openCsv } from '../csv.ts';
import type { ImportSource, Prepared } from './types.ts';

export const NODE_COLUMNS = { required: ['id', 'kind', 'owner_id'], optional: ['trash_at'] } as const;
export const GRANT_COLUMNS = { required: ['tail_id', 'head_id', 'level'], optional: ['source'] } as const;

export function describeInput(input: ImportSource | undefined): { file: string } | { query: string } | null {
  if (!input) return null;
  if ('file' in input && 'query' in input) throw new InvalidInputError('give a file or a query for each input, not both');
  if ('file' in input) return { file: path.resolve(input.file) };
  if (typeof input.query !== 'string' || input.query.trim() === '') throw new InvalidInputError('an import query must not be empty');
  return { query: input.query };
}

export async function fileFingerprints(inputs: (ImportSource | undefined)[]): Promise<Record<string, { size: number; mtimeMs: number }>> {
  const out: Record<string, { size: number; mtimeMs: number }> = {};
  for (const input of inputs) {
    if (input && 'file' in input) {
      const s = await stat(input.file);
      out[path.resolve(input.file)] = { size: s.size, mtimeMs: Math.trunc(s.mtimeMs) };
    }
  }
  return out;
}

/** JSON with object keys sorted, so a value compares equal after a round trip through jsonb. */
export function canonicalJson(value: unknown): string {
  const sortKeys = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sortKeys);
    if (v && typeof v === 'object') {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
    }
    return v;
  };
  return JSON.stringify(sortKeys(value));
}

export async function prepare(
  db: Queryable,
  input: ImportSource,
  shape: { required: readonly string[]; optional: readonly string[] },
  table: 'nodes' | 'grants',
): Promise<Prepared> {
  if ('file' in input) {
    const file = await openCsv(input.file, shape);
    return { kind: 'csv', file, label: path.basename(input.file), optional: file.columns.includes(shape.optional[0]!) };
  }
  const query = input.query;
  const probe = async (columns: readonly string[]) => {
    const list = sql.join(columns.map((c) => sql`q.${sql.ident(c)}`), sql`, `);
    await db.query(sql`select ${list} from (${sql.__dangerous__rawValue(query)}) as q limit 0`);
  };
  const expected = `${shape.required.join(', ')}${shape.optional.map((c) => ` [, ${c}]`).join('')}`;
  await withInputErrors(() => probe(shape.required), {
    [SqlState.undefinedColumn]: (reason) => `the ${table} query must return columns ${expected}: ${reason}`,
    [SqlStateClass.syntaxErrorOrAccessRuleViolation]: (reason) => `the ${table} query is not valid SQL: ${reason}`,
  });
  let optional = true;
  try {
    await probe(shape.optional);
  } catch (error) {
    if (sqlStateOf(error) !== SqlState.undefinedColumn) throw error;
    optional = false;
  }
  return { kind: 'query', query, optional };
}
