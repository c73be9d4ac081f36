// Why may (or may not) a user act on a thing? Runs permgraph.explain()
// (sql/functions/130_explain.sql): a breadth-first search of the current edges
// from the user, expired grants left out. check() and the listings answer
// from the permission table, which lags the edges while changes are pending
// (explain says how many) and while rows past their valid_until await their
// recomputation (explain shows those rows, and reason 'expired'). When access
// is refused and grants that have expired would give it, accessEnded says
// which and when it ended.
import { exactMoment, moment } from '../db/moment.ts';
import { sql, type Queryable } from '../db/pool.ts';
import { withInputErrors } from '../errors.ts';
import { parseLevel } from '../levels.ts';
import type { Level, LevelInput, NodeKind } from '../types.ts';

/** One step of a path. source: the grant's source, 'owner' for ownership, 'identity' for a user's own row. */
export interface PathEdge {
  tail: string;
  head: string;
  level: Level;
  source: string;
  /** When the grant of this step expires (null: never; always null for ownership and identity). To the millisecond: see expiresAtExact. */
  expiresAt: Date | null;
  /** expiresAt as the database stores it, to the microsecond: ISO 8601 in UTC, e.g. 2030-01-31T18:00:00.000250Z. */
  expiresAtExact: string | null;
}

/**
 * 'expired': a path allows, but the permission rows check() answers from
 * have expired (a grant on their paths expired at expiredAt) and await
 * their recomputation by the worker; until then access is refused.
 */
export type ExplainReason = 'no path' | 'trashed' | 'level too low' | 'expired';

/** A row of the permission table that check() reads for this question, as stored. */
export interface PermissionRowUsed {
  /** The thing itself, or its owner (used only with traverseOwned). */
  target: string;
  level: Level;
  traverseOwned: boolean;
  /** The earliest expiry at which this row would change (null: never). To the millisecond: see validUntilExact. */
  validUntil: Date | null;
  /** validUntil to the microsecond (as PathEdge.expiresAtExact). */
  validUntilExact: string | null;
  /** validUntil has passed: reads treat the row as absent until the engine recomputes it. */
  expired: boolean;
}

/**
 * How access ended that grants which have expired gave: the graph now does
 * not allow at the level (no path, or a lower one), but with the expired
 * grants (still in the grants table until someone deletes them) it would.
 */
export interface AccessEnded {
  /**
   * When the access ended: the graph of the grants not yet expired allowed
   * it until this moment and not from it on. Over the routes that allowed,
   * the latest of each one's earliest expiry (ownership and identity never
   * expire). To the millisecond: see atExact.
   */
  at: Date;
  /** `at` to the microsecond (as PathEdge.expiresAtExact): the expiresAtExact of the first `endedBy` expiredGrants. */
  atExact: string;
  /** The level it is about: the one asked, else 1 (any access). */
  level: Level;
  /** The route that allowed until `at`: to the thing itself, or through its owner (as Explanation.via). */
  via: 'direct' | 'owner';
  /**
   * Its path, found as Explanation.path is, expired grants included: each
   * edge with its expiresAt. The strongest just before `at`, so it may be
   * above `level` (read asked, read and manage routes that ended together:
   * the manage one).
   */
  path: PathEdge[];
  /** As Explanation.traversePath, on that route: the manage path into an owner that is another user, when `path` does not end with one. */
  traversePath: PathEdge[] | null;
  /**
   * The grants of path and traversePath that have expired, earliest first:
   * the first `endedBy` of them expired at `at` and ended the access;
   * renewing them all would give it back through this route.
   */
  expiredGrants: PathEdge[];
  /**
   * How many of expiredGrants, from the first, expired exactly at `at`. The
   * database compares the moments to the microsecond; a Date keeps only
   * milliseconds, so two expiries less than a millisecond apart look equal
   * in `at` and `expiresAt` (not in atExact and expiresAtExact) while only
   * the earlier one ended the access.
   */
  endedBy: number;
}

export interface Explanation {
  user: string;
  thing: string;
  thingKind: NodeKind;
  /** The level asked about, or null (then any level counts). */
  level: Level | null;
  allowed: boolean;
  /** Why not, when not allowed; null when allowed. 'trashed' wins over the others. */
  reason: ExplainReason | null;
  /** The best level found (0: no path), whether or not the thing is trashed. */
  bestLevel: 0 | Level;
  /** 'owner': the access comes through the thing's owner (the path's last step is that ownership). */
  /** superuser: allowed by the user's superuser flag, with an empty path. */
  via: 'direct' | 'owner' | 'superuser' | null;
  /**
   * The strongest path from the user to the thing: its weakest edge is
   * bestLevel. Ties: fewest edges, then the lexicographically smallest
   * sequence of node ids. Empty when there is no path.
   */
  path: PathEdge[];
  /**
   * Only when the access comes through an owner that is another user and
   * `path` does not reach that user by a manage edge: a path that does, which
   * is what makes the owner's belongings reachable (traverse_owned).
   */
  traversePath: PathEdge[] | null;
  /** The thing's effective trash time (past or future), if any. To the millisecond: see trashAtExact. */
  trashAt: Date | null;
  /** trashAt to the microsecond (as PathEdge.expiresAtExact). */
  trashAtExact: string | null;
  /**
   * The permission rows check() answers from: the user's row on the thing,
   * then the one on its owner, where the table has them (expired ones
   * included, flagged).
   */
  rows: PermissionRowUsed[];
  /**
   * When allowed: until when check() keeps allowing without a recomputation
   * (the latest validUntil of the rows that allow); null when no expiry ends
   * it, when not allowed, or when the table has not caught up yet. To the
   * millisecond: see validUntilExact.
   */
  validUntil: Date | null;
  /** validUntil to the microsecond (as PathEdge.expiresAtExact). */
  validUntilExact: string | null;
  /** With reason 'expired': when the access ended (the validUntil of the expired rows). To the millisecond: see expiredAtExact. */
  expiredAt: Date | null;
  /** expiredAt to the microsecond (as PathEdge.expiresAtExact). */
  expiredAtExact: string | null;
  /**
   * When not allowed and not trashed, and the current grants do not give the
   * level asked (reason 'no path' or 'level too low'; or 'expired' with
   * bestLevel below it) but the grants that have expired would: how and when
   * that access ended. Null otherwise. It does not change when the worker
   * recomputes the rows; the reason does ('expired' becomes 'no path' or
   * 'level too low'), and keeps its meaning.
   */
  accessEnded: AccessEnded | null;
  /**
   * Changes captured but not yet applied to the permission table (queued, or
   * held by a long job until it has recomputed their users), counted in
   * the same snapshot as the search. explain reads the current edges, while
   * check() and the listings read the table: when this is not 0, they may
   * still answer differently until a worker has applied the changes.
   */
  pendingChanges: number;
}

/** Explains access of `userId` to `thingId`, at `level` if given (else: the best access there is). */
export async function explain(db: Queryable, userId: string, thingId: string, level?: LevelInput | null): Promise<Explanation> {
  const parsed = level === undefined || level === null ? null : parseLevel(level);
  const [row] = await withInputErrors(() =>
    db.query(sql`
      select permgraph.explain(${userId}, ${thingId}, ${parsed}::integer) as result,
             (select count(*) from permgraph._unapplied_changes where held_by <> 'deferred')::bigint as pending`),
  );
  const raw: RawExplanation = row.result;
  const edges = (path: RawEdge[]): PathEdge[] => path.map((e) => ({ ...e, ...moment('expiresAt', e.expiresAt) }));
  const ended = ({ at, ...rest }: RawAccessEnded): AccessEnded => {
    const atExact = exactMoment(at);
    return {
      ...rest,
      at: new Date(atExact),
      atExact,
      path: edges(rest.path),
      traversePath: rest.traversePath === null ? null : edges(rest.traversePath),
      expiredGrants: edges(rest.expiredGrants),
    };
  };
  return {
    ...raw,
    path: edges(raw.path),
    traversePath: raw.traversePath === null ? null : edges(raw.traversePath),
    ...moment('trashAt', raw.trashAt),
    rows: raw.rows.map((r) => ({ ...r, ...moment('validUntil', r.validUntil) })),
    ...moment('validUntil', raw.validUntil),
    ...moment('expiredAt', raw.expiredAt),
    accessEnded: raw.accessEnded === null ? null : ended(raw.accessEnded),
    pendingChanges: Number(row.pending),
  };
}

type Dated<T, K extends keyof T & string> = Omit<T, K | `${K}Exact`> & { [P in K]: string | null };
type RawEdge = Dated<PathEdge, 'expiresAt'>;
type RawExplanation = Omit<Dated<Explanation, 'trashAt' | 'validUntil' | 'expiredAt'>, 'path' | 'traversePath' | 'rows' | 'accessEnded' | 'pendingChanges'> & {
  path: RawEdge[];
  traversePath: RawEdge[] | null;
  rows: Dated<PermissionRowUsed, 'validUntil'>[];
  accessEnded: RawAccessEnded | null;
};
type RawAccessEnded = Omit<AccessEnded, 'at' | 'atExact' | 'path' | 'traversePath' | 'expiredGrants'> & {
  at: string;
  path: RawEdge[];
  traversePath: RawEdge[] | null;
  expiredGrants: RawEdge[];
};
