import { sql, type Queryable } from '../db/pool.ts';
import { inSnapshot } from '../db/transaction.ts';
import { withInputErrors } from '../errors.ts';

export interface Difference {
  relation: 'permissions' | 'permission_bounds' | 'trashed_groups';
  key: string;
  stored: string;
  expected: string;
}

export interface VerifyResult {
  differences: Difference[];
  /** Captured changes not yet applied (a running long job's included); while any exist, differences are expected. */
  pendingChanges: number;
}

/**
 * Compares permissions (and the engine's permission_bounds) and
 * trashed_groups with a full recomputation as of `at` (default: now);
 * writes nothing. Rows whose valid_until has passed differ until a batch
 * recomputes them.
 */
export async function verify(db: Queryable, options: { at?: Date } = {}): Promise<VerifyResult> {
  return withInputErrors(() => inSnapshot(db, async (tx) => {
    const differences: Difference[] = await tx.query(
      sql`select relation, key, stored, expected from permgraph.verify(${options.at ?? null}::timestamptz)`,
    );
    // (a long job's own changes and its backlog's count until a chunk lets
    // them go: while any user is left in the job, a change that touches it is
    // left too, and that user's rows may differ; deferred changes are applied)
    const [pending] = await tx.query(sql`select count(*) as n from permgraph._unapplied_changes where held_by <> 'deferred'`);
    return { differences, pendingChanges: Number(pending.n) };
  }));
}
