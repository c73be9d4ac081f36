import { IsolationLevel } from '@databases/pg';
import type { Transaction } from '@databases/pg';
import { isRetryable } from '../errors.ts';
import type { Queryable } from './pool.ts';

export { IsolationLevel };

/**
 * Runs fn in a REPEATABLE READ transaction (one snapshot for the whole
 * function), retrying on serialization failures and deadlocks, which a
 * concurrent applier or writer can cause and which leave nothing behind.
 */
export async function inSnapshot<T>(db: Queryable, fn: (tx: Transaction) => Promise<T>, attempts = 8): Promise<T> {
  return withRetries(() => db.tx(fn, { isolationLevel: IsolationLevel.REPEATABLE_READ }), attempts);
}

/** Runs fn again after a serialization failure or deadlock (each attempt must start afresh). */
export async function withRetries<T>(fn: () => Promise<T>, attempts = 8): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (attempt >= attempts || !isRetryable(error)) throw error;
      await new Promise((resolve) => setTimeout(resolve, Math.min(1000, 5 * 2 ** attempt * Math.random())));
    }
  }
}
