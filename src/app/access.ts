/**
 * Access checks beyond the plain level check (sql/functions/100_access.sql): levels
 * given as catalog role names, checks by catalog operation, and can() for
 * application rows that carry their own owner column.
 */
import { sql, type Queryable } from '../db/pool.ts';
import { check, type CheckOptions } from '../engine/check.ts';
import { InvalidInputError, withInputErrors } from '../errors.ts';
import { isLevelInput, parseLevel } from '../levels.ts';
import type { Level } from '../types.ts';

/**
 * A level from 1..3, read/write/manage, or the name of a role in the catalog
 * (permgraph.role_level). Unknown roles are an InvalidInputError listing the known ones.
 */
export async function parseLevelOrRole(db: Queryable, value: string | number): Promise<Level> {
  if (isLevelInput(value)) return parseLevel(value);
  const [row] = await withInputErrors(() => db.query(sql`select permgraph.role_level(${value}) as level`));
  return parseLevel(row.level as number);
}

/** The answer of checkAccess, with what was asked: a level (parsed) or an operation of the catalog. */
export type AccessAnswer = { allowed: boolean } & ({ level: Level } | { operation: string });

/**
 * May the user act on the node at a level (1..3, read/write/manage) or for an
 * operation of the catalog? What is not a level is taken for an operation name.
 */
export async function checkAccess(
  db: Queryable,
  userId: string,
  targetId: string,
  levelOrOperation: Level | string,
  options: CheckOptions = {},
): Promise<AccessAnswer> {
  if (isLevelInput(levelOrOperation)) {
    const level = parseLevel(levelOrOperation);
    return { level, allowed: await check(db, userId, targetId, level, options) };
  }
  const operation = String(levelOrOperation);
  try {
    return { operation, allowed: await checkOperation(db, userId, targetId, operation, options) };
  } catch (error) {
    throw withLevelHint(error);
  }
}

/** The most targets one checkMany() call answers (as a page of a listing). */
export const MAX_CHECK_MANY = 10_000;

/**
 * checkAccess for many targets of one user in one statement (one round
 * trip): each answer by permgraph.check() or check_op(), the same rule,
 * in the order of targetIds (duplicates answered each time; an unknown id
 * is false, as check() says).
 */
export async function checkMany(
  db: Queryable,
  userId: string,
  targetIds: readonly string[],
  levelOrOperation: Level | string,
  options: CheckOptions = {},
): Promise<boolean[]> {
  if (!Array.isArray(targetIds)) throw new InvalidInputError('targetIds must be an array of node ids');
  if (targetIds.length > MAX_CHECK_MANY) {
    throw new InvalidInputError(`checkMany answers at most ${MAX_CHECK_MANY.toLocaleString('en-US')} targets a call, got ${targetIds.length}`);
  }
  if (targetIds.some((id) => typeof id !== 'string')) throw new InvalidInputError('targetIds must be an array of node ids (strings)');
  if (targetIds.length === 0) return [];
  const includeTrash = options.includeTrash === true;
  const answer = isLevelInput(levelOrOperation)
    ? sql`permgraph.check(${userId}, t.id, ${parseLevel(levelOrOperation)}, ${includeTrash})`
    : sql`permgraph.check_op(${userId}, t.id, ${String(levelOrOperation)}, ${includeTrash})`;
  const rows: { allowed: boolean }[] = await withInputErrors(() =>
    db.query(sql`select ${answer} as allowed from pg_catalog.unnest(${targetIds}::text[]) with ordinality t(id, ord) order by t.ord`),
  ).catch((error: unknown) => {
    throw withLevelHint(error);
  });
  return rows.map((r) => r.allowed === true);
}

/** An unknown operation may have been meant as a level: say what those are too. */
function withLevelHint(error: unknown): unknown {
  if (error instanceof InvalidInputError && error.message.startsWith('unknown operation ')) {
    return new InvalidInputError(`${error.message}; nor is it a level (read, write, manage or 1-3)`, error.sqlState, { cause: error });
  }
  return error;
}

/**
 * Refuses a question about ids that are not nodes, with an InvalidInputError
 * worded as the listings and explain word theirs: the user must be a node of
 * kind user, the target a node. check() itself answers false for ids it does
 * not know (an application asking about a row it has not registered is
 * denied); a person at the command line who typed an id wrong needs to be
 * told so instead.
 */
export async function requireUserAndTarget(db: Queryable, userId: string, targetId: string): Promise<void> {
  const rows: { id: string; kind: string }[] = await db.query(
    sql`select n.id, n.kind from permgraph.nodes n where n.id = any (${[userId, targetId]}::text[])`,
  );
  const kindOf = new Map(rows.map((r) => [r.id, r.kind]));
  const userKind = kindOf.get(userId);
  if (userKind === undefined) throw new InvalidInputError(`user ${JSON.stringify(userId)} does not exist`);
  if (userKind !== 'user') throw new InvalidInputError(`${JSON.stringify(userId)} is ${userKind === 'object' ? 'an' : 'a'} ${userKind}, not a user (permissions start at users)`);
  if (!kindOf.has(targetId)) throw new InvalidInputError(`target ${JSON.stringify(targetId)} does not exist`);
}

/** permgraph.check_op(): may the user perform the named operation on the node? */
export async function checkOperation(
  db: Queryable,
  userId: string,
  targetId: string,
  operation: string,
  options: CheckOptions = {},
): Promise<boolean> {
  const [row] = await withInputErrors(() =>
    db.query(sql`select permgraph.check_op(${userId}, ${targetId}, ${operation}, ${options.includeTrash ?? false}) as allowed`),
  );
  return row.allowed === true;
}

/**
 * permgraph.can() / can_op(): may the user act on an application row that
 * carries its own owner column (the row need not be a node)? `levelOrOperation`
 * is 1..3, read/write/manage, or an operation name from the catalog.
 */
export async function canAccessRow(
  db: Queryable,
  row: { userId: string; id: string; ownerId: string | null },
  levelOrOperation: Level | string,
  options: { includeTrash?: boolean } = {},
): Promise<boolean> {
  const includeTrash = options.includeTrash ?? false;
  const isLevel = isLevelInput(levelOrOperation);
  const [result] = await withInputErrors(() =>
    isLevel
      ? db.query(sql`select permgraph.can(${row.userId}, ${row.id}, ${row.ownerId}, ${parseLevel(levelOrOperation)}, ${includeTrash}) as allowed`)
      : db.query(sql`select permgraph.can_op(${row.userId}, ${row.id}, ${row.ownerId}, ${levelOrOperation}, ${includeTrash}) as allowed`),
  );
  return result.allowed === true;
}
