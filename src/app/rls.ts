/**
 * Who gets past permgraph's checks without rows of their own (superusers),
 * and row-level security on application tables (sql/functions/110_rls.sql).
 */
import { sql, type Queryable } from '../db/pool.ts';
import { InvalidInputError, withInputErrors } from '../errors.ts';

/**
 * Flags (or unflags) a user as superuser: check, can and the row-level
 * security policies let it through (trash still hides). Only users can be
 * superusers. A plain UPDATE on permgraph.nodes, so any SQL client can do the same.
 */
export async function setSuperuser(db: Queryable, userId: string, flag: boolean): Promise<void> {
  const updated: unknown[] = await withInputErrors(() =>
    db.query(sql`update permgraph.nodes set is_superuser = ${flag} where id = ${userId} returning id`),
  );
  if (updated.length === 0) throw new InvalidInputError(`node ${JSON.stringify(userId)} does not exist`);
}

export interface RowLevelSecurityOptions {
  /**
   * Also match each row's own id against node ids: direct grants on a node
   * with that id, and its trash. Only for apps that register their rows as
   * nodes under the same ids; off by default, because an app id that merely
   * equals a node id (a document called "eng") would otherwise be visible to
   * everyone who may read that node. Needed when ownerColumn is null.
   */
  matchRowId?: boolean;
}

/**
 * permgraph.enable_rls(): installs permgraph's row-level security policies on
 * an application table (idempotent). `table` is schema-qualified
 * ("public.documents"): permgraph's connections search no schema but
 * pg_catalog. Rows are allowed through their owner column (the owner's row
 * with traverse_owned, or a superuser); see RowLevelSecurityOptions.matchRowId.
 */
export async function enableRowLevelSecurity(
  db: Queryable,
  table: string,
  idColumn: string,
  ownerColumn: string | null,
  options: RowLevelSecurityOptions = {},
): Promise<void> {
  await requireTable(db, table);
  const matchRowId = options.matchRowId ?? false;
  await withInputErrors(() => db.query(sql`select permgraph.enable_rls(${table}::regclass, ${idColumn}, ${ownerColumn}, ${matchRowId})`));
}

/** permgraph.disable_rls(): removes permgraph's policies (and RLS itself when no other policy remains). */
export async function disableRowLevelSecurity(db: Queryable, table: string): Promise<void> {
  await requireTable(db, table);
  await withInputErrors(() => db.query(sql`select permgraph.disable_rls(${table}::regclass)`));
}

/**
 * The ::regclass cast's own error is not an input error; name the table
 * instead, and say when it lacks its schema (the likely reason it was not found).
 */
async function requireTable(db: Queryable, table: string): Promise<void> {
  const rows: { found: boolean; parts: number | null }[] = await withInputErrors(
    () => db.query(sql`select to_regclass(${table}) is not null as found, pg_catalog.cardinality(pg_catalog.parse_ident(${table}, false)) as parts`),
    { '22': () => `${JSON.stringify(table)} is not a table name` },
  );
  const [row] = rows;
  if (row?.found) return;
  if (row?.parts === 1) {
    throw new InvalidInputError(
      `table ${JSON.stringify(table)} not found: give it with its schema (e.g. "public.${table}"); permgraph's connections search no schema but pg_catalog`,
    );
  }
  throw new InvalidInputError(`table ${JSON.stringify(table)} does not exist`);
}
