// Expiries of grants, resolved in the writing transaction against the
// database's clock. What is accepted as an expiry: src/expiry.ts.
import { exactMoment } from '../db/moment.ts';
import { sql, type Queryable } from '../db/pool.ts';
import { InvalidInputError } from '../errors.ts';
import { checkExpiryInput, parseDuration, parseExactMoment, type ExpiryInput } from '../expiry.ts';

export type { ExpiryInput };

/**
 * The expiry to write, resolved in the writing transaction against the
 * database's clock: null (never), or a moment strictly after now(), as its
 * exact text (parseExactMoment: bind it and cast it to timestamptz; a
 * duration counts from now() to the microsecond). A moment
 * that is not is refused, naming it: a grant that has already ended is
 * almost always a mistake (a wrong year, a wrong zone), and writing it would
 * grant nothing.
 */
export async function resolveExpiry(tx: Queryable, input: ExpiryInput, what = 'expiry'): Promise<string | null> {
  checkExpiryInput(input);
  const at =
    input.expiresIn !== undefined
      ? exactMoment((await tx.query(sql`select to_json(now() + pg_catalog.make_interval(secs => ${parseDuration(input.expiresIn) / 1000})) as at`))[0].at as string)
      : parseExactMoment(input.expiresAt, what);
  if (at !== null) await requireFuture(tx, [at], [what]);
  return at;
}

/** Refuses the first moment (exact texts: parseExactMoment) that is not after the database's now(), naming it (and what it belongs to). */
export async function requireFuture(tx: Queryable, moments: readonly (string | null)[], labels: readonly string[]): Promise<void> {
  const [first]: { ord: number; now: string }[] = await tx.query(sql`
    select m.ord, to_json(now()) as now
    from pg_catalog.unnest(${moments}::timestamptz[]) with ordinality as m(at, ord)
    where m.at <= now()
    order by m.ord
    limit 1`);
  if (!first) return;
  const index = Number(first.ord) - 1;
  throw new InvalidInputError(
    `${labels[index]} ${moments[index]!} is not in the future (the database's time is ${exactMoment(first.now)}); nothing was written`,
  );
}
