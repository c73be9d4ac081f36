// Reading the append-only audit log (sql/functions/140_audit.sql), pruning its
// old entries, and naming the actor of a transaction's changes. Triggers write
// the log; nothing here writes entries of its own.
import { AUDIT_ACTIONS, DEFAULT_AUDIT_LIMIT } from '../constants.ts';
import { pageLimit } from './listing.ts';
import { sql, type Queryable } from '../db/pool.ts';
import { InvalidInputError, withInputErrors } from '../errors.ts';
import { exactMoment, moment } from '../db/moment.ts';
import { parseDuration, parseExactMoment } from '../expiry.ts';

/** What an audit entry records (AUDIT_ACTIONS says each one's meaning). */
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

/**
 * An entry of the audit log. Each moment is a Date, which keeps
 * milliseconds, with its text to the microsecond beside it, as the log
 * stores it: ISO 8601 in UTC, e.g. 2030-01-31T18:00:00.000250Z (atExact,
 * oldTrashAtExact, …).
 */
export interface AuditEntry {
  id: number;
  /** When the change was made (the writing transaction's now()). To the millisecond: see atExact. */
  at: Date;
  atExact: string;
  /** Who the application said made the change (permgraph.actor), else the login. */
  actor: string;
  /** The database login that made the change, whatever actor it declared (null in entries older than the column). */
  dbRole: string | null;
  action: AuditAction;
  /** The grant's tail (null for node actions). */
  tailId: string | null;
  /** The grant's head, or the node a node action changed. */
  headId: string | null;
  source: string | null;
  oldLevel: number | null;
  newLevel: number | null;
  oldOwner: string | null;
  newOwner: string | null;
  nodeKind: string | null;
  oldTrashAt: Date | null;
  oldTrashAtExact: string | null;
  newTrashAt: Date | null;
  newTrashAtExact: string | null;
  /** A grant's expiry before the change (revoke, change_level, change_expiry; null: never or not a grant). */
  oldExpiresAt: Date | null;
  oldExpiresAtExact: string | null;
  /** A grant's expiry after the change (grant, change_level, change_expiry; null: never or not a grant). */
  newExpiresAt: Date | null;
  newExpiresAtExact: string | null;
  details: Record<string, unknown> | null;
}

export interface AuditFilter {
  actor?: string;
  /** Changes made by this database login (db_role), whatever actor it declared. No index serves it: the log is read in id order until a page is found. */
  login?: string;
  /** Entries about this node: as the grant's tail or head, or the node changed. */
  target?: string;
  source?: string;
  action?: AuditAction;
  /**
   * Inclusive lower / exclusive upper bound on the time: a Date, or ISO 8601
   * text with its time zone (parseExactMoment; text without one would name
   * another instant in each session's zone, and is refused). A Date keeps
   * milliseconds: to bound by an entry's moment exactly, pass its atExact.
   */
  since?: Date | string;
  until?: Date | string;
  /** Entries after this cursor (an entry id, as returned in nextCursor). */
  after?: number;
  /** Page size, default 100. */
  limit?: number;
}

export interface AuditPage {
  entries: AuditEntry[];
  /** Pass as `after` for the next page; null when this page is the last. */
  nextCursor: number | null;
}

/** Lists audit entries oldest first, keyset-paginated on id. */
export async function listAudit(db: Queryable, filter: AuditFilter = {}): Promise<AuditPage> {
  // (as the listings: pages never truncate silently, so a larger limit is an error)
  const limit = pageLimit(filter.limit, DEFAULT_AUDIT_LIMIT);
  if (filter.after !== undefined && !(Number.isSafeInteger(filter.after) && filter.after >= 0)) {
    throw new InvalidInputError(`cursor must be an entry id, got ${filter.after}`);
  }
  if (filter.action !== undefined && !(AUDIT_ACTIONS as readonly string[]).includes(filter.action)) {
    throw new InvalidInputError(`action must be one of ${AUDIT_ACTIONS.join(', ')}, got "${filter.action}"`);
  }
  const conditions = [sql`true`];
  if (filter.after !== undefined) conditions.push(sql`id > ${filter.after}`);
  if (filter.actor !== undefined) conditions.push(sql`actor = ${filter.actor}`);
  if (filter.login !== undefined) conditions.push(sql`db_role = ${filter.login}`);
  if (filter.target !== undefined) conditions.push(sql`(head_id = ${filter.target} or tail_id = ${filter.target})`);
  if (filter.source !== undefined) conditions.push(sql`source = ${filter.source}`);
  if (filter.action !== undefined) conditions.push(sql`action = ${filter.action}`);
  const since = parseExactMoment(filter.since, 'since', null);
  const until = parseExactMoment(filter.until, 'until', null);
  if (since !== null) conditions.push(sql`at >= ${since}::timestamptz`);
  if (until !== null) conditions.push(sql`at < ${until}::timestamptz`);
  // (each moment also as its JSON text, read by moment: to the microsecond)
  const rows: Record<string, unknown>[] = await db.query(sql`
    select *, to_json(at) as at_json, to_json(old_trash_at) as old_trash_at_json, to_json(new_trash_at) as new_trash_at_json,
           to_json(old_expires_at) as old_expires_at_json, to_json(new_expires_at) as new_expires_at_json
    from permgraph.audit_log where ${sql.join(conditions, sql` and `)}
    order by id limit ${limit + 1}`);
  const entries = rows.slice(0, limit).map(toEntry);
  return { entries, nextCursor: rows.length > limit ? entries[entries.length - 1]!.id : null };
}

function toEntry(r: Record<string, unknown>): AuditEntry {
  const { at, atExact } = moment('at', r.at_json as string);
  const moments = (name: 'oldTrashAt' | 'newTrashAt' | 'oldExpiresAt' | 'newExpiresAt', column: string) => moment(name, r[`${column}_json`] as string | null);
  return {
    id: Number(r.id),
    at: at!,
    atExact: atExact!,
    actor: r.actor as string,
    dbRole: (r.db_role as string | null) ?? null,
    action: r.action as AuditAction,
    tailId: (r.tail_id as string | null) ?? null,
    headId: (r.head_id as string | null) ?? null,
    source: (r.source as string | null) ?? null,
    oldLevel: (r.old_level as number | null) ?? null,
    newLevel: (r.new_level as number | null) ?? null,
    oldOwner: (r.old_owner as string | null) ?? null,
    newOwner: (r.new_owner as string | null) ?? null,
    nodeKind: (r.node_kind as string | null) ?? null,
    ...moments('oldTrashAt', 'old_trash_at'),
    ...moments('newTrashAt', 'new_trash_at'),
    ...moments('oldExpiresAt', 'old_expires_at'),
    ...moments('newExpiresAt', 'new_expires_at'),
    details: entryDetails(r.action as AuditAction, (r.details as Record<string, unknown> | null) ?? null),
  };
}

/**
 * An entry's details as the log holds them, but for a prune's cut-off
 * (details.before), given in UTC to the microsecond as every moment of an
 * entry: prune_audit_log writes it so, releases before it wrote it in the
 * time zone of the session that pruned.
 */
function entryDetails(action: AuditAction, details: Record<string, unknown> | null): Record<string, unknown> | null {
  if (action !== 'prune_audit' || typeof details?.before !== 'string') return details;
  return { ...details, before: exactMoment(details.before) };
}

/** Which entries pruneAudit removes: those before a moment, or older than a duration back from the database's now. */
export type PruneAuditOptions = ({ before: Date | string; olderThan?: undefined } | { olderThan: string; before?: undefined }) & {
  /** Count the entries instead of deleting them. */
  dryRun?: boolean;
  /** Who the log's own entry of the prune names (default: the database login). */
  actor?: string;
};

export interface PruneAuditResult {
  /** Entries before this moment were (or, with dryRun, would be) deleted. To the millisecond: see beforeExact. */
  before: Date;
  /** `before` to the microsecond, the cut-off the database compared with: ISO 8601 in UTC, e.g. 2030-01-31T18:00:00.000250Z. */
  beforeExact: string;
  entries: number;
  dryRun: boolean;
}

/**
 * Deletes the audit entries older than `before`, or than `olderThan` (a
 * duration such as '365d') back from the database's now, through
 * permgraph.prune_audit_log: the schema's owner only, and the prune is itself
 * logged. A moment in the future is refused: it would delete entries
 * written now. With dryRun, counts them and deletes nothing (any role that
 * may read the log).
 */
export async function pruneAudit(db: Queryable, options: PruneAuditOptions): Promise<PruneAuditResult> {
  if ((options.before === undefined) === (options.olderThan === undefined)) {
    throw new InvalidInputError('give the entries to prune as before (a timestamp) or olderThan (a duration such as 365d), one of the two');
  }
  const before = options.before === undefined ? null : parseExactMoment(options.before, 'before', null);
  const olderThanSeconds = options.olderThan === undefined ? null : parseDuration(options.olderThan, 'olderThan') / 1000;
  return withInputErrors(() => db.tx(async (tx) => {
    await applyActor(tx, options.actor);
    // (the cut-off read as its JSON text, to the microsecond, and deleted by with that text: a Date would cut it to the millisecond)
    const [cut] = await tx.query(sql`
      select to_json(coalesce(${before}::timestamptz, now() - pg_catalog.make_interval(secs => ${olderThanSeconds}::float8))) as before,
             coalesce(${before}::timestamptz, now()) > now() as future`);
    const { before: at, beforeExact } = moment('before', cut.before as string);
    if (cut.future) {
      throw new InvalidInputError(`before ${beforeExact!} is in the future (by the database's clock): it would prune entries written now`);
    }
    const dryRun = options.dryRun === true;
    const [row] = dryRun
      ? await tx.query(sql`select count(*)::bigint as entries from permgraph.audit_log where at < ${beforeExact}::timestamptz`)
      : await tx.query(sql`select permgraph.prune_audit_log(${beforeExact}::timestamptz) as entries`);
    return { before: at!, beforeExact: beforeExact!, entries: Number(row.entries), dryRun };
  }));
}

/**
 * Names the actor of the current transaction's changes in the audit log
 * (`set local permgraph.actor`); call it inside the writing transaction.
 * Without it the database role (current_user) is recorded.
 */
export async function setActor(tx: Queryable, actor: string): Promise<void> {
  if (typeof actor !== 'string' || actor.trim() === '') throw new InvalidInputError('the actor must not be empty');
  await tx.query(sql`select set_config('permgraph.actor', ${actor}, true)`);
}

/**
 * setActor when an actor is given (the `actor` option of the library's
 * writes: grant, revoke, syncGrants, syncRoles), nothing otherwise. Call it
 * inside the write's own transaction: `set_config(…, true)` lasts until its
 * end, so a pooled connection never carries an actor into another write.
 */
export async function applyActor(tx: Queryable, actor: string | undefined): Promise<void> {
  if (actor !== undefined) await setActor(tx, actor);
}
