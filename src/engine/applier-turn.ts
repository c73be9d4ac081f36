import type { Transaction } from '@databases/pg';
import { sql, type Queryable } from '../db/pool.ts';
import { inSnapshot } from '../db/transaction.ts';

/**
 * Runs fn in a REPEATABLE READ transaction that waits for the applier's
 * turn before its snapshot is taken: its first statement locks
 * permgraph.applier_turn, which every batch and chunk holds until it
 * commits (sql/functions/060_apply.sql, _begin_applying). LOCK TABLE takes
 * no snapshot, so fn's first statement reads every batch committed before
 * this one's turn came. A transaction that took its snapshot and then
 * waited was stale once the batch it waited for committed, and failed to
 * be retried; behind a long job's chunks run back to back, every retry
 * could (bench/FINDINGS.md 59). For the batches and chunks an application
 * or the worker runs as a transaction of its own.
 */
export async function inApplierTurn<T>(db: Queryable, fn: (tx: Transaction) => Promise<T>): Promise<T> {
  return inSnapshot(db, async (tx) => {
    await tx.query(sql`lock table permgraph.applier_turn in exclusive mode`);
    return fn(tx);
  });
}
