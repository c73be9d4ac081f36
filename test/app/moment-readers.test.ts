// The two readers of a moment's text, the API's (parseExactMoment: grant
// --expires, expiresAt, trash times, the audit log's bounds) and import's
// (a row's trash_at and expires_at, _import_moment_problem and
// _import_moment), give every text the same outcome: the same instant, or a
// refusal with the same wording. PostgreSQL's own cast, in a session whose
// zone is not UTC, is the reference for the instants, since import stores a
// text so and PostgreSQL writes the texts a CSV exported from it holds.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { importGraph, ImportRejectedError } from '../../src/app/import/index.ts';
import { sql } from '../../src/db/pool.ts';
import { parseExactMoment } from '../../src/expiry.ts';
import { createTestDatabase } from '../helpers/database.ts';

/** Outside: named as outside the years 1 to 9999. Malformed: refused as no moment, in the same words by both readers. */
type Outcome = string | 'outside' | 'malformed';
const OUTSIDE = 'outside';
const MALFORMED = 'malformed';

/**
 * [text, outcome in both readers, for a malformed text whether PostgreSQL's
 * cast reads it (then refused on purpose, as said); 'varies': some versions
 * read it, others refuse it].
 */
const TABLE: [string, Outcome, ('reads' | 'refuses' | 'varies')?][] = [
  ['2030-01-31T18:00:00Z', '2030-01-31T18:00:00.000000Z'],
  ['2030-01-31 18:00:00.000250z', '2030-01-31T18:00:00.000250Z'],
  ['2030-01-31', '2030-01-31T00:00:00.000000Z'], // a date alone: midnight UTC, whatever the zone
  ['2028-02-29T00:00:00Z', '2028-02-29T00:00:00.000000Z'],
  ['9999-12-31T23:59:59.999999Z', '9999-12-31T23:59:59.999999Z'],
  // offsets with seconds, as PostgreSQL writes a zone's local mean time; its limit is 15:59:59
  ['2030-01-01T00:00:00-03:30:52', '2030-01-01T03:30:52.000000Z'],
  ['2030-01-01 00:00:00.5+05:45:30', '2029-12-31T18:14:30.500000Z'],
  ['2030-01-01T00:00:00+15:59:59', '2029-12-31T08:00:01.000000Z'],
  ['2030-01-01T00:00:00-15:59', '2030-01-01T15:59:00.000000Z'],
  ['2030-01-01T00:00:00+16:00', MALFORMED, 'refuses'],
  ['2030-01-01T00:00:00-16', MALFORMED, 'refuses'],
  ['2030-01-01T00:00:00-03:30:60', MALFORMED, 'refuses'],
  ['2030-01-01T00:00:00-033052', MALFORMED, 'refuses'],
  // a leap second is the next minute's start, as PostgreSQL reads it; 24:00 the next day's
  ['2030-12-31T23:59:60Z', '2031-01-01T00:00:00.000000Z'],
  ['2030-06-30T12:00:60.000Z', '2030-06-30T12:01:00.000000Z'],
  ['2030-12-31T23:59:60.5Z', MALFORMED, 'refuses'],
  ['2030-01-01T24:00:00Z', '2030-01-02T00:00:00.000000Z'],
  ['2030-01-01T24:00Z', '2030-01-02T00:00:00.000000Z'],
  ['2030-01-01T24:00:00.000001Z', MALFORMED, 'refuses'],
  ['2030-01-01T24:00:01Z', MALFORMED, 'refuses'],
  ['2030-01-01T23:60:00Z', MALFORMED, 'refuses'],
  ['2030-02-29', MALFORMED, 'refuses'],
  ['2030-02-30T00:00:00Z', MALFORMED, 'refuses'],
  // a space before the offset, as PostgreSQL reads it
  ['2030-01-01T00:00:00 +01:00', '2029-12-31T23:00:00.000000Z'],
  // years: what PostgreSQL writes outside 1 to 9999 (a fifth digit, BC, infinity), year 0, which it refuses
  ['0000-06-01T00:00:00Z', OUTSIDE],
  ['0000-06-01', OUTSIDE],
  ['0000-02-30T00:00:00Z', OUTSIDE], // (refused for its year before its day)
  ['0001-01-01T00:00:00+01:00', OUTSIDE],
  ['10000-01-01T00:00:00Z', OUTSIDE],
  ['10000-01-01T00:00:00+14:00', '9999-12-31T10:00:00.000000Z'], // the instant is in range
  ['9999-12-31T23:59:60Z', OUTSIDE],
  ['300000-01-01T00:00:00Z', OUTSIDE], // (beyond what PostgreSQL holds)
  ['0001-12-31T18:00:00-05:00 BC', OUTSIDE],
  ['0001-12-31T23:00:00-05:00 BC', '0001-01-01T04:00:00.000000Z'], // the instant is in range
  ['2030-01-01T00:00:00Z BC', OUTSIDE],
  ['infinity', OUTSIDE],
  ['-infinity', OUTSIDE],
  // refused on purpose although PostgreSQL reads them: a zone-less time is the
  // session's (whose 18:00?); more than six digits would be rounded, not
  // stored as typed; and the forms of ISO 8601 alone
  ['2030-01-01T00:00:00', MALFORMED, 'reads'],
  ['2030-01-01 00:00', MALFORMED, 'reads'],
  ['2030-01-01T00:00:00.1234567Z', MALFORMED, 'reads'],
  ['2030-01-01T00:00:00.Z', MALFORMED, 'varies'], // (PostgreSQL 17 and 18 read it, 14 refuses it)
  ['2030-01-01t00:00:00Z', MALFORMED, 'reads'],
  ['2030-01-01T00:00:00UTC', MALFORMED, 'reads'],
  ['2030-01-01T00:00:00+1', MALFORMED, 'reads'],
  ['2030-1-01T00:00:00Z', MALFORMED, 'reads'],
  ['10000-01-01', MALFORMED, 'reads'], // (a date alone has four digits of year)
  ['Infinity', MALFORMED, 'reads'],
  ['soon', MALFORMED, 'refuses'],
];

const API_REFUSALS: Record<string, RegExp> = {
  [OUTSIDE]: / is outside the years 1 to 9999 \(for "never", pass null\)$/,
  [MALFORMED]: / is neither a timestamp with a time zone offset nor a date \(ISO 8601, e\.g\. 2030-01-31T12:00:00Z, or 2030-01-31: its midnight UTC\)$/,
};
const IMPORT_REFUSALS: Record<string, RegExp> = {
  [OUTSIDE]: / is outside the years 1 to 9999 \(for no trash time, leave it empty\)$/,
  [MALFORMED]: / is neither a timestamp with a time zone offset nor a date \(ISO 8601, e\.g\. 2030-01-31T12:00:00Z, or 2030-01-31: its midnight UTC\)$/,
};

describe('a moment\'s text reads the same in the API and in import', async () => {
  const { db } = await createTestDatabase();
  const dir = await mkdtemp(path.join(tmpdir(), 'permgraph-moment-readers-'));
  afterAll(() => rm(dir, { recursive: true, force: true }));

  /**
   * PostgreSQL's cast in a zone that is not UTC: the instant in UTC and its
   * year, or the error. A date alone is cast as the start of that day in UTC
   * (PostgreSQL would take the session's), as both readers document it.
   */
  async function postgres(given: string): Promise<{ utc: string | null; year: number | null } | { error: string }> {
    const text = /^\d{4}-\d{2}-\d{2}$/.test(given) ? `${given}T00:00:00Z` : given;
    try {
      const [row] = await db.tx(async (tx) => {
        await tx.query(sql`select set_config('timezone', 'America/St_Johns', true)`);
        return tx.query(sql`select to_char(t at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as utc,
                                   case when isfinite(t) then extract(year from t at time zone 'UTC')::int end as year
                            from (select ${text}::timestamptz as t) cast_`);
      });
      return row;
    } catch (error) {
      return { error: (error as Error).message };
    }
  }

  /** Import's outcome for every text of TABLE, by index: the instant stored (as the database writes it in UTC), or the problem. */
  async function imported(texts: string[]): Promise<Map<number, string>> {
    const file = path.join(dir, `nodes-${texts.length}.csv`);
    await writeFile(file, ['id,kind,owner_id,trash_at', ...texts.map((text, i) => `u${i},user,,"${text}"`)].join('\n') + '\n');
    const outcomes = new Map<number, string>();
    try {
      await importGraph(db, { nodes: { file }, maxProblems: texts.length });
      const rows = await db.query(sql`select id, to_char(trash_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as utc from permgraph.nodes`);
      for (const row of rows) outcomes.set(Number(row.id.slice(1)), row.utc);
    } catch (error) {
      if (!(error instanceof ImportRejectedError)) throw error;
      texts.forEach((_, i) => outcomes.set(i, '(no problem)'));
      for (const problem of error.summary.problems) outcomes.set(problem.line! - 2, problem.problem);
    }
    return outcomes;
  }

  it('every text of the table: the same instant as PostgreSQL\'s cast, or refused alike', async () => {
    const all = await imported(TABLE.map(([text]) => text));
    // (a run with a bad row loads nothing: the readable ones are loaded on their own)
    const readable = TABLE.flatMap(([text, want], i) => (want === OUTSIDE || want === MALFORMED ? [] : [{ text, i }]));
    const loaded = await imported(readable.map(({ text }) => text));
    readable.forEach(({ i }, j) => all.set(i, loaded.get(j)!));

    for (const [i, [text, want, pg]] of TABLE.entries()) {
      const what = JSON.stringify(text);
      let api: string;
      try {
        api = parseExactMoment(text, 'expiresAt')!;
      } catch (error) {
        api = (error as Error).message;
      }
      const reference = await postgres(text);
      if (want === OUTSIDE || want === MALFORMED) {
        expect.soft(api, `API ${what}`).toMatch(new RegExp(`^expiresAt ${escape(what)}${API_REFUSALS[want]!.source}`));
        expect.soft(all.get(i), `import ${what}`).toMatch(new RegExp(`^trash_at ${escape(what)}(${IMPORT_REFUSALS[want]!.source})`));
        if (want === OUTSIDE) {
          // PostgreSQL refuses the year, or reads an instant outside 1 to 9999
          if ('error' in reference) expect.soft(reference.error, `PostgreSQL ${what}`).toMatch(/out of range/);
          else expect.soft(reference.year === null || reference.year < 1 || reference.year > 9999, `PostgreSQL ${what} ${reference.year}`).toBe(true);
        } else {
          if (pg !== 'varies') expect.soft('error' in reference ? 'refuses' : 'reads', `PostgreSQL ${what}`).toBe(pg);
        }
      } else {
        expect.soft(reference, `PostgreSQL ${what}`).toMatchObject({ utc: want });
        expect.soft(api, `API ${what}`).toBe(want);
        expect.soft(all.get(i), `import ${what}`).toBe(want);
      }
    }
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
