import { sql, type Queryable } from '../db/pool.ts';
import { PermgraphError, withInputErrors } from '../errors.ts';

/** Identifies the changes of one writing transaction; see waitFor(). */
export type FreshnessToken = string;

export class FreshnessTimeoutError extends PermgraphError {
  override name = 'FreshnessTimeoutError';
}

/** The token of the changes made so far by the transaction `tx` (call it inside the writing transaction). */
export async function currentToken(tx: Queryable): Promise<FreshnessToken> {
  const [row] = await tx.query(sql`select permgraph.current_token() as token`);
  return row.token;
}

/**
 * Runs `write` in a transaction and returns what it returned with the
 * transaction's freshness token; database errors caused by bad input become
 * InvalidInputError (see translateDbError).
 */
export async function writeWithToken<T>(db: Queryable, write: (tx: Queryable) => Promise<T>): Promise<{ value: T; token: FreshnessToken }> {
  return withInputErrors(() =>
    db.tx(async (tx) => {
      const value = await write(tx);
      return { value, token: await currentToken(tx) };
    }),
  );
}

/** Has the permission table caught up with the changes behind `token`? A malformed token is an InvalidInputError. */
export async function isApplied(db: Queryable, token: FreshnessToken): Promise<boolean> {
  const [row] = await withInputErrors(() => db.query(sql`select permgraph.is_applied(${token}) as applied`));
  return row.applied === true;
}

/**
 * Resolves once permissions reflects the changes behind `token`
 * (read-your-writes on the materialized table); rejects with
 * FreshnessTimeoutError after timeoutMs. Call it after the writer committed.
 */
export async function waitFor(db: Queryable, token: FreshnessToken, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 2; ; delay = Math.min(delay * 2, 100)) {
    if (await isApplied(db, token)) return;
    if (Date.now() >= deadline) {
      throw new FreshnessTimeoutError(`changes of token ${token} not applied within ${timeoutMs} ms: is a worker running?`);
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(delay, Math.max(1, deadline - Date.now()))));
  }
}
