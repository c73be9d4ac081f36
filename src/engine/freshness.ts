import { sql, type Queryable } from '../db/pool.ts';
import { InvalidInputError, PermgraphError, withInputErrors } from '../errors.ts';

/**
 * Identifies the changes of one writing transaction (its transaction id), for
 * waitFor() and isApplied(). Taken on the primary, it can be waited for on the
 * primary or on any streaming standby of it: on a standby it turns applied
 * once the standby has replayed the batch that applied it.
 */
export type FreshnessToken = string;

export class FreshnessTimeoutError extends PermgraphError {
  override name = 'FreshnessTimeoutError';
}

/** The token of the changes made so far by the transaction `tx` (call it inside the writing transaction, on the primary). */
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

/**
 * Has the permission table, as `db` reads it, caught up with the changes
 * behind `token`? On a standby, `db` is a connection to the standby: the
 * answer is about what the standby has replayed. Writes nothing and takes no
 * transaction id. A malformed token is an InvalidInputError.
 */
export async function isApplied(db: Queryable, token: FreshnessToken): Promise<boolean> {
  const [row] = await withInputErrors(() => db.query(sql`select permgraph.is_applied(${token}) as applied`));
  return row.applied === true;
}

/**
 * Resolves once permissions reflects the changes behind `token`
 * (read-your-writes on the materialized table); rejects with
 * FreshnessTimeoutError after timeoutMs. Call it after the writer committed,
 * with a pool or a connection outside a transaction (each poll needs a new
 * snapshot), to the primary or to a streaming standby of it: it only reads,
 * so the standby answers from what it has replayed.
 */
export async function waitFor(db: Queryable, token: FreshnessToken, timeoutMs = 10_000): Promise<void> {
  // (NaN, e.g. Number() of an unset variable, would wait forever)
  if (!Number.isFinite(timeoutMs) || timeoutMs < 0) throw new InvalidInputError(`timeout must be a number of milliseconds, 0 or more, got ${timeoutMs}`);
  const deadline = Date.now() + timeoutMs;
  for (let delay = 2; ; delay = Math.min(delay * 2, 100)) {
    if (await isApplied(db, token)) return;
    if (Date.now() >= deadline) {
      const [{ standby }] = await db.query(sql`select pg_is_in_recovery() as standby`);
      const hint = standby
        ? 'this server is a standby: has it replayed the batch (replication lag, paused replay), and is a worker running on the primary?'
        : 'is a worker running?';
      throw new FreshnessTimeoutError(`changes of token ${token} not applied within ${timeoutMs} ms: ${hint}`);
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(delay, Math.max(1, deadline - Date.now()))));
  }
}
