// Make the grants of one source exactly a given set (e.g. mirroring an
// external directory): one transaction, only the differences written, other
// sources untouched. Writes are plain SQL on permgraph.grants, so the capture
// triggers see them like any other write.
import { sql, type Queryable } from '../db/pool.ts';
import { currentToken, type FreshnessToken } from '../engine/freshness.ts';
import { InvalidInputError, withInputErrors } from '../errors.ts';
import { parseLevel } from '../levels.ts';
import type { Level, LevelInput } from '../types.ts';
import { applyActor } from './audit.ts';
import { parseExactMoment } from '../expiry.ts';
import { requireFuture } from './expiry.ts';

export interface DesiredGrant {
  tail: string;
  head: string;
  level: LevelInput;
  /**
   * When the grant expires: a Date, or ISO 8601 text with a time zone
   * ('2030-01-31T18:00:00Z'); omitted or null: never. It must lie in the
   * future (by the database's clock).
   */
  expiresAt?: Date | string | null;
}

export interface SyncResult {
  inserted: number;
  /** Grants whose level or expiry changed. */
  updated: number;
  deleted: number;
  /** Freshness token of the sync's transaction (see waitFor). */
  token: FreshnessToken;
}

interface ValidGrant {
  tail: string;
  head: string;
  level: Level;
  /** The exact text to write (parseExactMoment), null: never. */
  expiresAt: string | null;
}

/**
 * Sets the grants of `source` to exactly `desired` (tail, head, level,
 * expiry): inserts the new pairs, updates changed levels and expiries,
 * deletes the pairs not listed. Bad input (duplicate pairs, levels outside
 * 1..3, unknown ids, an object as tail, a malformed expiry or one not in the
 * future) is refused before anything is written. Concurrent syncs of the
 * same source run one after the other.
 */
export async function syncGrants(
  db: Queryable,
  source: string,
  desired: readonly DesiredGrant[],
  options: { /** Who the audit log records as making the changes (default: the database login). */ actor?: string } = {},
): Promise<SyncResult> {
  if (typeof source !== 'string' || source === '') throw new InvalidInputError('sync-grants: the source must be a non-empty string');
  const grants = validateDesiredGrants(desired);
  const tails = grants.map((g) => g.tail);
  const heads = grants.map((g) => g.head);
  const levels = grants.map((g) => g.level);
  const expiries = grants.map((g) => g.expiresAt);
  return withInputErrors(() =>
    db.tx(async (tx) => {
      // Under READ COMMITTED each statement after the lock sees the previous
      // sync of this source committed, so the two never interleave. (A lock
      // only the schema's owner can take: 160_sync_grants.sql.)
      await tx.query(sql`select permgraph._lock_grant_source(${source})`);
      await applyActor(tx, options.actor);
      await requireKnownEnds(tx, tails, heads);
      await requireFuture(tx, expiries, grants.map((g, i) => `sync-grants: grant #${i + 1} (${g.tail} -> ${g.head}) expires at`));
      const [counts] = await tx.query(sql`
        with desired as (
          select tail_id, head_id, level, expires_at
          from rows from (pg_catalog.unnest(${tails}::text[]), pg_catalog.unnest(${heads}::text[]), pg_catalog.unnest(${levels}::smallint[]),
                          pg_catalog.unnest(${expiries}::timestamptz[])) as d(tail_id, head_id, level, expires_at)
        ), removed as (
          delete from permgraph.grants g
          where g.source = ${source}
            and not exists (select 1 from desired d where d.tail_id = g.tail_id and d.head_id = g.head_id)
          returning 1
        ), written as (
          insert into permgraph.grants (tail_id, head_id, level, source, expires_at)
          select tail_id, head_id, level, ${source}, expires_at from desired
          on conflict (tail_id, head_id, source) do update set level = excluded.level, expires_at = excluded.expires_at
          where (permgraph.grants.level, permgraph.grants.expires_at) is distinct from (excluded.level, excluded.expires_at)
          returning (xmax = 0) as is_new  -- xmax is 0 on a fresh insert, set on an update
        )
        select (select count(*) from removed)::bigint as deleted,
               (select count(*) from written where is_new)::bigint as inserted,
               (select count(*) from written where not is_new)::bigint as updated`);
      return {
        inserted: Number(counts.inserted),
        updated: Number(counts.updated),
        deleted: Number(counts.deleted),
        token: await currentToken(tx),
      };
    }),
  );
}

/**
 * Checks the shape of a desired set (from code or a JSON file): an array of
 * {tail, head, level[, expiresAt]} with non-empty string ids, levels 1..3 or
 * read/write/manage, expiries as Dates or ISO 8601 text, and no (tail, head)
 * pair twice. Errors name the entry. (Whether an expiry lies in the future
 * is the database's clock's to say: syncGrants checks it.)
 */
export function validateDesiredGrants(desired: unknown): ValidGrant[] {
  if (!Array.isArray(desired)) throw new InvalidInputError('sync-grants: the desired grants must be an array of {tail, head, level[, expiresAt]}');
  const seen = new Map<string, number>();
  return desired.map((entry: unknown, i) => {
    const where = `grant #${i + 1}`;
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      throw new InvalidInputError(`sync-grants: ${where} must be an object {tail, head, level}, got ${JSON.stringify(entry)}`);
    }
    const extra = Object.keys(entry).filter((k) => !['tail', 'head', 'level', 'expiresAt'].includes(k));
    if (extra.length) throw new InvalidInputError(`sync-grants: ${where} has unknown field(s) ${extra.join(', ')}; expected tail, head, level and optionally expiresAt`);
    const { tail, head, level, expiresAt } = entry as Record<string, unknown>;
    for (const [name, value] of [['tail', tail], ['head', head]] as const) {
      if (typeof value !== 'string' || value === '') {
        throw new InvalidInputError(`sync-grants: ${where} needs "${name}" as a non-empty string, got ${JSON.stringify(value)}`);
      }
    }
    if (typeof level !== 'string' && typeof level !== 'number') {
      throw new InvalidInputError(`sync-grants: ${where} needs "level" (1..3 or read/write/manage), got ${JSON.stringify(level)}`);
    }
    let parsed: Level;
    try {
      parsed = parseLevel(level);
    } catch (error) {
      throw new InvalidInputError(`sync-grants: ${where}: ${(error as Error).message}`);
    }
    let expiry: string | null;
    try {
      expiry = parseExactMoment(expiresAt, '"expiresAt"');
    } catch (error) {
      throw new InvalidInputError(`sync-grants: ${where}: ${(error as Error).message}`);
    }
    const key = `${tail}\u0000${head}`;
    const first = seen.get(key);
    if (first !== undefined) {
      throw new InvalidInputError(`sync-grants: grants #${first} and #${i + 1} both join ${JSON.stringify(tail)} -> ${JSON.stringify(head)}; list each pair once`);
    }
    seen.set(key, i + 1);
    return { tail: tail as string, head: head as string, level: parsed, expiresAt: expiry };
  });
}

/** Every tail and head must be a node, and no tail an object: one query, the first offender named. */
async function requireKnownEnds(tx: Queryable, tails: string[], heads: string[]): Promise<void> {
  const problems: { ord: number; tail_id: string; head_id: string; tail_kind: string | null; head_known: boolean; total: number }[] =
    await tx.query(sql`
      select d.ord, d.tail_id, d.head_id, t.kind as tail_kind, h.id is not null as head_known, count(*) over () as total
      from rows from (pg_catalog.unnest(${tails}::text[]), pg_catalog.unnest(${heads}::text[])) with ordinality as d(tail_id, head_id, ord)
      left join permgraph.nodes t on t.id = d.tail_id
      left join permgraph.nodes h on h.id = d.head_id
      where t.id is null or h.id is null or t.kind = 'object'
      order by d.ord
      limit 1`);
  const [p] = problems;
  if (!p) return;
  const why =
    p.tail_kind === null
      ? `tail "${p.tail_id}" does not exist`
      : p.tail_kind === 'object'
        ? `tail "${p.tail_id}" is an object; only users and groups can hold grants`
        : `head "${p.head_id}" does not exist`;
  const more = Number(p.total) > 1 ? ` (and ${Number(p.total) - 1} more bad grant(s))` : '';
  throw new InvalidInputError(`sync-grants: grant #${p.ord} (${p.tail_id} -> ${p.head_id}): ${why}${more}; nothing was written`);
}
