// Writing and removing single grants: plain SQL on permgraph.grants, so the
// capture triggers see them like any other client's writes. The rules
// (levels or catalog roles, unknown ids, whether anything was removed) live
// here; the API and the CLI only present the results.
import { DEFAULT_GRANT_SOURCE } from '../constants.ts';
import { sql, type Queryable } from '../db/pool.ts';
import { writeWithToken, type FreshnessToken } from '../engine/freshness.ts';
import { InvalidInputError } from '../errors.ts';
import type { Level } from '../types.ts';
import { parseLevelOrRole } from './access.ts';
import { applyActor } from './audit.ts';

export interface GrantOptions {
  /** The grant's source (default 'default'). */
  source?: string;
  /** Who the audit log records as making the change (default: the database login). */
  actor?: string;
}

export interface GrantResult {
  /** The level written (a role name resolved through the catalog). */
  level: Level;
  token: FreshnessToken;
}

export interface RevokeResult {
  /** Whether there was a grant of that source to remove. */
  revoked: boolean;
  token: FreshnessToken;
}

/**
 * Grants (or re-grants at a new level) tail -> head from one source; the
 * level is 1..3, read/write/manage or a role of the catalog.
 */
export async function writeGrant(
  db: Queryable,
  tailId: string,
  headId: string,
  levelOrRole: Level | string,
  options: GrantOptions = {},
): Promise<GrantResult> {
  const level = await parseLevelOrRole(db, levelOrRole);
  const source = options.source ?? DEFAULT_GRANT_SOURCE;
  const { token } = await writeWithToken(db, async (tx) => {
    await applyActor(tx, options.actor);
    await tx.query(sql`
      insert into permgraph.grants (tail_id, head_id, level, source)
      values (${tailId}, ${headId}, ${level}, ${source})
      on conflict (tail_id, head_id, source) do update set level = excluded.level
      where permgraph.grants.level is distinct from excluded.level`);
  });
  return { level, token };
}

/**
 * Removes the grant tail -> head of one source (other sources' grants stay)
 * and says whether there was one. Unknown ids are an InvalidInputError: a
 * typo to report, not a revoke that "worked".
 */
export async function revokeGrant(db: Queryable, tailId: string, headId: string, options: GrantOptions = {}): Promise<RevokeResult> {
  const { value: revoked, token } = await writeWithToken(db, async (tx) => {
    await applyActor(tx, options.actor);
    const known: { id: string }[] = await tx.query(sql`select id from permgraph.nodes where id = any (${[tailId, headId]}::text[])`);
    for (const id of [tailId, headId]) {
      if (!known.some((k) => k.id === id)) throw new InvalidInputError(`node "${id}" does not exist`);
    }
    return (await deleteGrant(tx, tailId, headId, options)) > 0;
  });
  return { revoked, token };
}

/** Deletes one source's grant tail -> head; returns how many rows went (0 or 1). No checks. */
export async function deleteGrant(tx: Queryable, tailId: string, headId: string, options: { source?: string } = {}): Promise<number> {
  const rows = await tx.query(sql`
    delete from permgraph.grants
    where tail_id = ${tailId} and head_id = ${headId} and source = ${options.source ?? DEFAULT_GRANT_SOURCE}
    returning 1`);
  return rows.length;
}
