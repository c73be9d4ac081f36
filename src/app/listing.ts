// Permission-aware listings with keyset pagination: the nodes a user may act
// on (listTargets) and the users who may act on a node (listUsers). Both run
// the SQL functions of sql/functions/120_listing.sql (permgraph.list_targets / list_users).
import { moment } from '../db/moment.ts';
import { sql, type Queryable } from '../db/pool.ts';
import { DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT } from '../constants.ts';
import { InvalidInputError, withInputErrors } from '../errors.ts';
import { parseLevel } from '../levels.ts';
import { NODE_KINDS, type Level, type LevelInput, type NodeKind } from '../types.ts';

export interface PageOptions {
  /** Page size, 1..10,000 (default 100); larger is an error, never a silent cap. */
  limit?: number;
  /** The `next` cursor of the previous page; omit (or null) for the first page. */
  after?: string | null;
}

export interface ListTargetsOptions extends PageOptions {
  /** Minimum level, 1..3 or read/write/manage (default 1). */
  level?: LevelInput;
  /** Only nodes of this kind. */
  kind?: NodeKind;
}

export interface ListUsersOptions extends PageOptions {
  level?: LevelInput;
}

/** One page: `next` is the cursor of the following page, null when this is the last one. */
export interface Page<T> {
  items: T[];
  next: string | null;
}

export interface TargetItem {
  id: string;
  kind: NodeKind;
  /** The user's best level on this node (directly or through its owner). */
  level: Level;
  /**
   * Until when this level holds without a recomputation: the permission rows
   * it comes from have a grant on their paths that expires then (reads drop
   * them at that moment; the worker then recomputes them, and a lower level
   * may come back). null: no expiry ends it. To the millisecond: see
   * validUntilExact.
   */
  validUntil: Date | null;
  /** validUntil as the database stores it, to the microsecond: ISO 8601 in UTC, e.g. 2030-01-31T18:00:00.000250Z. */
  validUntilExact: string | null;
}

export interface UserItem {
  id: string;
  /** This user's best level on the node. */
  level: Level;
  /** Until when this level holds without a recomputation (see TargetItem.validUntil); null: no expiry ends it. To the millisecond: see validUntilExact. */
  validUntil: Date | null;
  /** validUntil to the microsecond (as TargetItem.validUntilExact). */
  validUntilExact: string | null;
}

/** Which listing a cursor belongs to, so a cursor is never reused across kinds of listing. */
type Listing = 'targets' | 'users';

/**
 * The nodes `userId` may act on at `level` (docs/semantics.md: a row (u, x), or
 * x's owner's row with traverse_owned), trashed ones hidden, rows whose
 * valid_until has passed counted as absent, ordered by id
 * (byte-wise). Pages are keyset-based: ids after the cursor, so rows that
 * stay visible while the graph changes between pages are neither missed nor
 * repeated.
 */
export async function listTargets(db: Queryable, userId: string, options: ListTargetsOptions = {}): Promise<Page<TargetItem>> {
  const level = parseLevel(options.level ?? 1);
  const limit = pageLimit(options.limit);
  const after = decodeCursor(options.after, 'targets');
  if (options.kind !== undefined && !NODE_KINDS.includes(options.kind)) {
    throw new InvalidInputError(`kind must be user, group or object, got ${JSON.stringify(options.kind)}`);
  }
  // (valid_until as its JSON text, read by moment: to the microsecond)
  const rows: { target_id: string; kind: NodeKind; level: Level; valid_until: string | null }[] = await withInputErrors(() =>
    db.query(sql`select target_id, kind, level, to_json(valid_until) as valid_until from permgraph.list_targets(
          ${userId}, ${level}::integer, ${options.kind ?? null}::text, ${after}::text, ${limit + 1}::integer)`),
  );
  return toPage(rows.map((r) => ({ id: r.target_id, kind: r.kind, level: r.level, ...moment('validUntil', r.valid_until) })), limit, 'targets');
}

/** The users who may act on node `targetId` at `level` (directly or through its owner), ordered by user id. */
export async function listUsers(db: Queryable, targetId: string, options: ListUsersOptions = {}): Promise<Page<UserItem>> {
  const level = parseLevel(options.level ?? 1);
  const limit = pageLimit(options.limit);
  const after = decodeCursor(options.after, 'users');
  const rows: { user_id: string; level: Level; valid_until: string | null }[] = await withInputErrors(() =>
    db.query(sql`select user_id, level, to_json(valid_until) as valid_until from permgraph.list_users(${targetId}, ${level}::integer, ${after}::text, ${limit + 1}::integer)`),
  );
  return toPage(rows.map((r) => ({ id: r.user_id, level: r.level, ...moment('validUntil', r.valid_until) })), limit, 'users');
}

/** A page's size: the default when none is given, else an integer from 1 to MAX_PAGE_LIMIT (listings and the audit log). */
export function pageLimit(limit: number | undefined, defaultLimit: number = DEFAULT_PAGE_LIMIT): number {
  if (limit === undefined) return defaultLimit;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE_LIMIT) {
    throw new InvalidInputError(`limit must be an integer from 1 to ${MAX_PAGE_LIMIT}, got ${JSON.stringify(limit)}`);
  }
  return limit;
}

/** The SQL functions were asked for limit + 1 rows: the extra one only says whether another page follows. */
function toPage<T extends { id: string }>(items: T[], limit: number, listing: Listing): Page<T> {
  if (items.length <= limit) return { items, next: null };
  const page = items.slice(0, limit);
  return { items: page, next: encodeCursor(page[page.length - 1]!.id, listing) };
}

/** A cursor is base64url of {"v":1,"l":listing,"a":last id}: opaque to callers, checked on the way back. */
export function encodeCursor(lastId: string, listing: Listing): string {
  return Buffer.from(JSON.stringify({ v: 1, l: listing, a: lastId }), 'utf8').toString('base64url');
}

export function decodeCursor(cursor: string | null | undefined, listing: Listing): string | null {
  if (cursor === undefined || cursor === null) return null;
  const invalid = (why: string) =>
    new InvalidInputError(`invalid cursor ${JSON.stringify(cursor.length > 60 ? `${cursor.slice(0, 60)}…` : cursor)}: ${why}; pass the "next" value of a previous page`);
  if (typeof cursor !== 'string' || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw invalid('not base64url');
  let decoded: unknown;
  try {
    decoded = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw invalid('not a permgraph cursor');
  }
  if (typeof decoded !== 'object' || decoded === null) throw invalid('not a permgraph cursor');
  const { v, l, a } = decoded as { v?: unknown; l?: unknown; a?: unknown };
  if (v !== 1 || typeof a !== 'string' || (l !== 'targets' && l !== 'users')) throw invalid('not a permgraph cursor');
  if (l !== listing) throw invalid(`it belongs to a listing of ${l}, not of ${listing}`);
  return a;
}
