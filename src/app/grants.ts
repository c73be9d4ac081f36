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
import { checkExpiryInput, type ExpiryInput } from '../expiry.ts';
import { resolveExpiry } from './expiry.ts';

export interface GrantOptions {
  /** The grant's source (default 'default'). */
  source?: string;
  /** Who the audit log records as making the change (default: the database login). */
  actor?: string;
}

/**
 * A grant's options: its source, the actor, and its expiry (expiresAt or
 * expiresIn; neither: the grant never expires, and re-granting without one
 * removes an expiry the grant had).
 */
export interface WriteGrantOptions extends GrantOptions, ExpiryInput {}

export interface GrantResult {
  /** The level written (a role name resolved through the catalog). */
  level: Level;
  /** When the grant expires, as written (null: never). To the millisecond: see expiresAtExact. */
  expiresAt: Date | null;
  /** expiresAt as written, to the microsecond: ISO 8601 in UTC, e.g. 2030-01-31T18:00:00.000250Z. */
  expiresAtExact: string | null;
  token: FreshnessToken;
}

export interface RevokeResult {
  /** Whether there was a grant of that source to remove. */
  revoked: boolean;
  token: FreshnessToken;
}

/**
 * Grants (or re-grants with a new level or expiry) tail -> head from one
 * source; the level is 1..3, read/write/manage or a role of the catalog.
 * The grant becomes exactly what is given: without an expiry it never
 * expires. An expiry that is malformed or not in the future (by the
 * database's clock) is an InvalidInputError naming it, and nothing is written.
 */
export async function writeGrant(
  db: Queryable,
  tailId: string,
  headId: string,
  levelOrRole: Level | string,
  options: WriteGrantOptions = {},
): Promise<GrantResult> {
  checkExpiryInput(options);
  const level = await parseLevelOrRole(db, levelOrRole);
  const source = options.source ?? DEFAULT_GRANT_SOURCE;
  const { value: expiresAt, token } = await writeWithToken(db, async (tx) => {
    const expiresAt = await resolveExpiry(tx, options);
    await applyActor(tx, options.actor);
    await tx.query(sql`
      insert into permgraph.grants (tail_id, head_id, level, source, expires_at)
      values (${tailId}, ${headId}, ${level}, ${source}, ${expiresAt}::timestamptz)
      on conflict (tail_id, head_id, source) do update set level = excluded.level, expires_at = excluded.expires_at
      where (permgraph.grants.level, permgraph.grants.expires_at) is distinct from (excluded.level, excluded.expires_at)`);
    return expiresAt;
  });
  return { level, expiresAt: expiresAt === null ? null : new Date(expiresAt), expiresAtExact: expiresAt, token };
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
