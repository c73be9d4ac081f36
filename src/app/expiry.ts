// Expiries of grants, resolved in the writing transaction against the
// database's clock. What is accepted as an expiry: src/expiry.ts.
import { sql, type Queryable } from '../db/pool.ts';
import { InvalidInputError } from '../errors.ts';
import { checkExpiryInput, parseDuration, parseExpiresAt, type ExpiryInput } from '../expiry.ts';

export type { ExpiryInput };

/**
 * The expiry to write, resolved in the writing transaction against the
 * database's clock: null (never), or a moment strictly after now(). A moment
 * that is not is refused, naming it: a grant that has already ended is
 * almost always a mistake (a wrong year, a wrong zone), and writing it would
 * grant nothing.
 */
export async function resolveExpiry(tx: Queryable, input: ExpiryInput, what = 'expiry'): Promise<Date | null> {
  checkExpiryInput(input);
  const at =
    input.expiresIn !== undefined
      ? ((await tx.query(sql`select now() + pg_catalog.make_interval(secs => ${parseDuration(input.expiresIn) / 1000}) as at`))[0].at as Date)
      : parseExpiresAt(input.expiresAt, what);
  if (at !== null) await requireFuture(tx, [at], [what]);
  return at;
}

/** Refuses the first moment that is not after the database's now(), naming it (and what it belongs to). */
export async function requireFuture(tx: Queryable, moments: readonly (Date | null)[], labels: readonly string[]): Promise<void> {
  const [first]: { ord: number; now: Date }[] = await tx.query(sql`
    select m.ord, now() as now
    from pg_catalog.unnest(${moments.map((m) => (m === null ? null : m.toISOString()))}::timestamptz[]) with ordinality as m(at, ord)
    where m.at <= now()
    order by m.ord
    limit 1`);
  if (!first) return;
  const index = Number(first.ord) - 1;
  throw new InvalidInputError(
    `${labels[index]} ${moments[index]!.toISOString()} is not in the future (the database's time is ${first.now.toISOString()}); nothing was written`,
  );
}
