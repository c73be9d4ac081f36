import { sql, type Queryable } from '../db/pool.ts';
import { inSnapshot } from '../db/transaction.ts';

export interface Difference {
  relation: 'permissions' | 'trashed_groups';
  key: string;
  stored: string;
  expected: string;
}

export interface VerifyResult {
  differences: Difference[];
  /** Captured changes not yet applied; while any exist, differences are expected. */
  pendingChanges: number;
}

/** Compares permissions and trashed_groups with a full recomputation; writes nothing. */
export async function verify(db: Queryable): Promise<VerifyResult> {
  return inSnapshot(db, async (tx) => {
    const differences: Difference[] = await tx.query(sql`select relation, key, stored, expected from permgraph.verify()`);
    const [pending] = await tx.query(sql`select count(*)::bigint as n from permgraph.changes`);
    return { differences, pendingChanges: Number(pending.n) };
  });
}
