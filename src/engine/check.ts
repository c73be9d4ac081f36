import { sql, type Queryable } from '../db/pool.ts';
import { withInputErrors } from '../errors.ts';
import { parseLevel } from '../levels.ts';
import type { Level } from '../types.ts';

/** Options of a check: includeTrash answers as if nothing were trashed (an admin's view of a trash can). */
export interface CheckOptions {
  includeTrash?: boolean;
}

/** permgraph.check(): may the user act on the node at this level (owner check and trash included)? */
export async function check(db: Queryable, userId: string, targetId: string, level: Level | string, options: CheckOptions = {}): Promise<boolean> {
  const parsed = parseLevel(level);
  const [row] = await withInputErrors(() =>
    db.query(
      options.includeTrash
        ? sql`select permgraph.check(${userId}, ${targetId}, ${parsed}, true) as allowed`
        : sql`select permgraph.check(${userId}, ${targetId}, ${parsed}) as allowed`,
    ),
  );
  return row.allowed === true;
}
