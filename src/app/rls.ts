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

/**
 * permgraph.enable_rls(): installs permgraph's row-level security policies on
 * an application table (idempotent). `table` is a table name as SQL reads it
 * (optionally schema-qualified); ownerColumn null means direct grants only.
 */
export async function enableRowLevelSecurity(db: Queryable, table: string, idColumn: string, ownerColumn: string | null): Promise<void> {
  await requireTable(db, table);
  await withInputErrors(() => db.query(sql`select permgraph.enable_rls(${table}::regclass, ${idColumn}, ${ownerColumn})`));
}

/** permgraph.disable_rls(): removes permgraph's policies (and RLS itself when no other policy remains). */
export async function disableRowLevelSecurity(db: Queryable, table: string): Promise<void> {
  await requireTable(db, table);
  await withInputErrors(() => db.query(sql`select permgraph.disable_rls(${table}::regclass)`));
}

/** The ::regclass cast's own error is not an input error; name the table instead. */
async function requireTable(db: Queryable, table: string): Promise<void> {
  const rows: { found: boolean }[] = await withInputErrors(() => db.query(sql`select to_regclass(${table}) is not null as found`));
  if (!rows[0]?.found) throw new InvalidInputError(`table ${JSON.stringify(table)} does not exist`);
}
