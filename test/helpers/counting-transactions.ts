// A pool that counts the transactions begun through it: how many attempts a
// call that retries on serialization failures took (src/db/transaction.ts).
import type { ConnectionPool } from '../../src/db/pool.ts';

export function countingTransactions(pool: ConnectionPool): { db: ConnectionPool; transactions: () => number } {
  let begun = 0;
  const db = new Proxy(pool, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      if (property !== 'tx') return value.bind(target);
      return (...args: unknown[]) => {
        begun++;
        return value.apply(target, args);
      };
    },
  });
  return { db, transactions: () => begun };
}
