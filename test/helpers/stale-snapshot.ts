// A repeatable-read transaction whose snapshot is older than something that
// committed while it waited: what a worker's batch, or a slow registration
// of a change consumer, sees when another session commits while it waits
// for the applier lock.
import { IsolationLevel, type SQLQuery } from '@databases/pg';
import { sql, type ConnectionPool } from '../../src/db/pool.ts';

/**
 * Runs `statement` in a repeatable-read transaction whose snapshot was taken
 * before `meanwhile` ran and committed.
 */
export async function afterStaleSnapshot(db: ConnectionPool, statement: SQLQuery, meanwhile: () => Promise<unknown>): Promise<unknown> {
  let proceed!: () => void;
  const ready = new Promise<void>((resolve) => (proceed = resolve));
  let snapshotTaken!: () => void;
  const taken = new Promise<void>((resolve) => (snapshotTaken = resolve));
  const stale = db.tx(
    async (tx) => {
      await tx.query(sql`select 1`); // the snapshot
      snapshotTaken();
      await ready;
      return tx.query(statement);
    },
    { isolationLevel: IsolationLevel.REPEATABLE_READ },
  );
  stale.catch(() => {}); // awaited below
  // (not before: `meanwhile` committing ahead of the snapshot left it fresh,
  // and the statement then passed, once in a CI run)
  await Promise.race([taken, stale]);
  await meanwhile();
  proceed();
  return stale;
}
