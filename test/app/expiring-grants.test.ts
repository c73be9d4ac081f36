// Writing expiring grants (docs/api.md): what grant(), syncGrants() and the
// audit log do with an expiry, and what they refuse. The parsers alone are
// tested first, without a database.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { listAudit } from '../../src/app/audit.ts';
import { writeGrant } from '../../src/app/grants.ts';
import { syncGrants, type DesiredGrant } from '../../src/app/sync-grants.ts';
import { Permgraph } from '../../src/client.ts';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { parseDuration, parseExactMoment, parseExpiresAt } from '../../src/expiry.ts';
import { g, grant, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { loadGraph } from '../helpers/graph.ts';

const HOUR = 3600 * 1000;

describe('parsing an expiry', () => {
  it('moments: Dates and ISO 8601 text with a time zone', () => {
    expect(parseExpiresAt('2030-01-31T18:00:00Z')).toEqual(new Date(Date.UTC(2030, 0, 31, 18)));
    expect(parseExpiresAt('2030-01-31T18:00:00.250+02:00')).toEqual(new Date(Date.UTC(2030, 0, 31, 16, 0, 0, 250)));
    expect(parseExpiresAt('2030-01-31 18:00Z')).toEqual(new Date(Date.UTC(2030, 0, 31, 18)));
    expect(parseExpiresAt('2030-01-31')).toEqual(new Date(Date.UTC(2030, 0, 31)));
    const date = new Date(Date.UTC(2031, 5, 1));
    expect(parseExpiresAt(date)).toEqual(date);
    expect(parseExpiresAt(null)).toBeNull();
    expect(parseExpiresAt(undefined)).toBeNull();
  });

  it('parseExactMoment: the moment as written, in UTC to the microsecond, the fraction as typed', () => {
    const cases: [Date | string, string][] = [
      ['2030-01-31T18:00:00.000001Z', '2030-01-31T18:00:00.000001Z'],
      ['2030-01-31T18:00:00.00025Z', '2030-01-31T18:00:00.000250Z'],
      ['2030-01-31T23:45:00.0007+05:45', '2030-01-31T18:00:00.000700Z'],
      ['2030-01-31 14:30:00.999999-03:30', '2030-01-31T18:00:00.999999Z'],
      ['2030-02-01T01:00+07:00', '2030-01-31T18:00:00.000000Z'],
      ['2030-01-31', '2030-01-31T00:00:00.000000Z'],
      ['0001-01-01T00:00:00.000001Z', '0001-01-01T00:00:00.000001Z'],
      ['0001-01-01T01:00:00.000250+01:00', '0001-01-01T00:00:00.000250Z'],
      ['9999-12-31T23:59:59.999999Z', '9999-12-31T23:59:59.999999Z'],
      [' 2030-01-31T18:00:00.7Z ', '2030-01-31T18:00:00.700000Z'],
      [new Date('2030-01-31T18:00:00.123Z'), '2030-01-31T18:00:00.123000Z'],
    ];
    for (const [given, exact] of cases) expect(parseExactMoment(given), String(given)).toBe(exact);
    expect(parseExactMoment(null)).toBeNull();
    expect(() => parseExactMoment('2030-01-31T18:00:00.0000001Z')).toThrow(/is neither a timestamp with a time zone offset nor a date/); // (seven digits: timestamptz keeps six)
    expect(() => parseExactMoment('2030-01-31T25:00:00Z')).toThrow(/is neither a timestamp with a time zone offset nor a date/);
    expect(() => parseExactMoment('0001-01-01T00:00:00.5+00:01', 'trash time')).toThrow('trash time "0001-01-01T00:00:00.5+00:01" is outside the years 1 to 9999');
  });

  it.each([
    ['tomorrow', /expiry "tomorrow" is neither a timestamp with a time zone offset nor a date/],
    ['2030-01-31T18:00:00', /"2030-01-31T18:00:00" is neither a timestamp with a time zone offset nor a date/], // no zone: whose 18:00?
    ['2030-02-31T10:00:00Z', /"2030-02-31T10:00:00Z" is neither a timestamp/], // no such day
    ['2030-13-01', /"2030-13-01" is neither a timestamp/],
    ['infinity', /^expiry "infinity" is outside the years 1 to 9999 \(for "never", pass null\)$/], // (as import names it: for never, null)
    ['', /"" is neither a timestamp/],
  ])('refuses the moment %j, naming it', (text, message) => {
    expect(() => parseExpiresAt(text)).toThrow(InvalidInputError);
    expect(() => parseExpiresAt(text)).toThrow(message);
  });

  it('refuses an invalid Date and values of other types', () => {
    expect(() => parseExpiresAt(new Date('nope'))).toThrow(/expiry is an invalid Date/);
    expect(() => parseExpiresAt(1893456000000)).toThrow(/must be a Date or an ISO 8601 timestamp.*got 1893456000000/);
  });

  it('durations: digits and s, m, h, d, combinable', () => {
    expect(parseDuration('90m')).toBe(90 * 60_000);
    expect(parseDuration('12h')).toBe(12 * HOUR);
    expect(parseDuration('7d')).toBe(7 * 24 * HOUR);
    expect(parseDuration('1d12h30s')).toBe(36 * HOUR + 30_000);
    for (const bad of ['', '90', 'm', '1.5h', '-1h', '7 d', '2w', '1h 30m']) {
      expect(() => parseDuration(bad), bad).toThrow(new RegExp(`duration ${JSON.stringify(bad).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is not a duration`));
    }
    expect(() => parseDuration('0m')).toThrow(/"0m" is not longer than zero/);
    expect(() => parseDuration('40000d')).toThrow(/longer than 100 years/);
  });
});

describe('expiring grants through the API', async () => {
  const { db } = await createTestDatabase();

  it('parseExactMoment reads every ISO 8601 form of an offset as PostgreSQL does, to the microsecond', async () => {
    // PostgreSQL's own cast, in a session whose zone is not UTC, is the
    // reference: import casts its rows' moments so, and the API must name
    // the same instant for the same text (2030-01-31T12:00+0545 in a CSV and
    // in `grant --expires`). An offset may have seconds, as PostgreSQL
    // writes a zone's local mean time (-03:30:52), so that a CSV it exported
    // holds them; its limit, as PostgreSQL's, is 15:59:59.
    const pad = (n: number, width = 2) => String(n).padStart(width, '0');
    const moment = fc.record({
      at: fc.date({ min: new Date('0002-01-01T00:00:00Z'), max: new Date('9998-12-31T00:00:00Z'), noInvalidDate: true }),
      micros: fc.integer({ min: 0, max: 999 }),
      separator: fc.constantFrom('T', ' '),
      offsetSeconds: fc.integer({ min: -(15 * 3600 + 59 * 60 + 59), max: 15 * 3600 + 59 * 60 + 59 }),
      offsetForm: fc.constantFrom('Z', 'z', '+hh:mm:ss', '+hh:mm', '+hhmm', '+hh'),
    }).map(({ at, micros, separator, offsetSeconds, offsetForm }) => {
      const unit = { Z: 0, z: 0, '+hh:mm:ss': 1, '+hh:mm': 60, '+hhmm': 60, '+hh': 3600 }[offsetForm];
      const seconds = unit === 0 ? 0 : Math.trunc(offsetSeconds / unit) * unit;
      const local = new Date(at.getTime() + seconds * 1000).toISOString(); // (the wall clock at that offset)
      const sign = seconds < 0 ? '-' : '+';
      const [hh, mm, ss] = [pad(Math.trunc(Math.abs(seconds) / 3600)), pad(Math.trunc(Math.abs(seconds) / 60) % 60), pad(Math.abs(seconds) % 60)];
      const offset = { Z: 'Z', z: 'z', '+hh:mm:ss': `${sign}${hh}:${mm}:${ss}`, '+hh:mm': `${sign}${hh}:${mm}`, '+hhmm': `${sign}${hh}${mm}`, '+hh': `${sign}${hh}` }[offsetForm];
      return `${local.slice(0, 10)}${separator}${local.slice(11, 23)}${pad(micros, 3)}${offset}`;
    });
    await fc.assert(
      fc.asyncProperty(moment, async (text) => {
        // (the zone set by a statement of its own: set in the statement that
        // casts, it is not yet in force when the cast is evaluated)
        const [row] = await db.tx(async (tx) => {
          await tx.query(sql`select set_config('timezone', 'Asia/Kathmandu', true)`);
          return tx.query(sql`select to_char(${text}::timestamptz at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as utc`);
        });
        expect(parseExactMoment(text), text).toBe(row.utc);
      }),
      { numRuns: 300 },
    );
  });
  const fresh = () => loadGraph(db, { nodes: [u('ann'), u('bob'), g('eng'), g('ops')], grants: [grant('bob', 1, 'ops')] });
  const stored = async (tail: string, head: string, source = 'default') =>
    db.query(sql`select level, expires_at from permgraph.grants where tail_id = ${tail} and head_id = ${head} and source = ${source}`);
  const dbNow = async (q: Queryable = db): Promise<Date> => (await q.query(sql`select now() as now`))[0].now;
  const auditSince = async (from: number) => (await listAudit(db, { after: from, limit: 1000 })).entries;
  const lastAuditId = async () => Number((await db.query(sql`select coalesce(max(id), 0) as id from permgraph.audit_log`))[0].id);

  it('grant() writes the expiry given as a Date, as ISO text, or as a duration from the database clock', async () => {
    await fresh();
    const at = new Date(Date.now() + 2 * HOUR);
    expect(await writeGrant(db, 'ann', 'eng', 'write', { expiresAt: at })).toMatchObject({ level: 2, expiresAt: at });
    expect(await stored('ann', 'eng')).toEqual([{ level: 2, expires_at: at }]);

    const text = '2030-01-31T18:00:00+01:00';
    await writeGrant(db, 'ann', 'ops', 1, { expiresAt: text, source: 'iso' });
    expect(await stored('ann', 'ops', 'iso')).toEqual([{ level: 1, expires_at: new Date('2030-01-31T17:00:00Z') }]);

    const before = await dbNow();
    const { expiresAt } = await writeGrant(db, 'ann', 'ops', 'read', { expiresIn: '90m', source: 'in' });
    const after = await dbNow();
    const [row] = await stored('ann', 'ops', 'in');
    expect(row.expires_at).toEqual(expiresAt);
    expect(expiresAt!.getTime()).toBeGreaterThanOrEqual(before.getTime() + 90 * 60_000);
    expect(expiresAt!.getTime()).toBeLessThanOrEqual(after.getTime() + 90 * 60_000);
  });

  it('the grant becomes what is given: re-granting without an expiry makes it permanent; a new expiry alone is a change', async () => {
    await fresh();
    const at = new Date(Date.now() + HOUR);
    const later = new Date(Date.now() + 2 * HOUR);
    const from = await lastAuditId();
    await writeGrant(db, 'ann', 'eng', 2, { expiresAt: at });
    await writeGrant(db, 'ann', 'eng', 2, { expiresAt: at }); // the same: nothing written
    await writeGrant(db, 'ann', 'eng', 2, { expiresAt: later });
    expect(await stored('ann', 'eng')).toEqual([{ level: 2, expires_at: later }]);
    await writeGrant(db, 'ann', 'eng', 3);
    expect(await stored('ann', 'eng')).toEqual([{ level: 3, expires_at: null }]);
    expect((await auditSince(from)).map((e) => [e.action, e.oldLevel, e.newLevel, e.oldExpiresAt, e.newExpiresAt])).toEqual([
      ['grant', null, 2, null, at],
      ['change_expiry', 2, 2, at, later],
      ['change_level', 2, 3, later, null],
    ]);
  });

  it.each([
    [{ expiresAt: new Date(Date.now() - HOUR) }, /^expiry \d{4}-\d\d-\d\dT[\d:.]+Z is not in the future \(the database's time is .*\); nothing was written$/],
    [{ expiresAt: '2001-09-09T01:46:40Z' }, /^expiry 2001-09-09T01:46:40.000000Z is not in the future/],
    [{ expiresAt: 'next week' }, /^expiresAt "next week" is neither a timestamp with a time zone offset nor a date/],
    [{ expiresAt: new Date(NaN) }, /^expiresAt is an invalid Date$/],
    [{ expiresIn: '3 days' }, /^expiresIn "3 days" is not a duration/],
    [{ expiresIn: '1h', expiresAt: new Date(Date.now() + HOUR) }, /^give an expiry as expiresAt or as expiresIn, not both$/],
  ])('grant() refuses %o with a clear error and writes nothing', async (options, message) => {
    await fresh();
    const from = await lastAuditId();
    const captured = async () => Number((await db.query(sql`select count(*) from permgraph.changes`))[0].count);
    const capturedBefore = await captured();
    const error = await writeGrant(db, 'ann', 'eng', 'write', options).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as Error).message).toMatch(message);
    expect(await stored('ann', 'eng')).toEqual([]);
    expect(await auditSince(from)).toEqual([]);
    expect(await captured()).toBe(capturedBefore);
  });

  it('a refused re-grant leaves the existing grant as it was', async () => {
    await fresh();
    const at = new Date(Date.now() + HOUR);
    await writeGrant(db, 'ann', 'eng', 1, { expiresAt: at });
    await expect(writeGrant(db, 'ann', 'eng', 3, { expiresAt: '1999-01-01T00:00:00Z' })).rejects.toThrow(/not in the future/);
    expect(await stored('ann', 'eng')).toEqual([{ level: 1, expires_at: at }]);
  });

  it('Permgraph#grant takes the same options', async () => {
    await fresh();
    const pg = Permgraph.fromPool(db, 'unused');
    const at = new Date(Date.now() + HOUR);
    await pg.grant('ann', 'eng', 'read', { expiresAt: at, source: 'ui' });
    await pg.grant('ann', 'ops', 'read', { expiresIn: '1d' });
    expect(await stored('ann', 'eng', 'ui')).toEqual([{ level: 1, expires_at: at }]);
    expect((await stored('ann', 'ops'))[0].expires_at).toBeInstanceOf(Date);
    await expect(pg.grant('ann', 'eng', 'read', { expiresIn: 'soon' })).rejects.toThrow(/expiresIn "soon" is not a duration/);
  });

  it('the audit log records expiries of grants, revokes and changes made with plain SQL', async () => {
    await fresh();
    const at = new Date(Date.UTC(2040, 0, 1));
    const later = new Date(Date.UTC(2041, 0, 1));
    const from = await lastAuditId();
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level, expires_at) values ('ann', 'eng', 1, ${at})`);
    await db.query(sql`update permgraph.grants set expires_at = ${later} where tail_id = 'ann'`);
    await db.query(sql`update permgraph.grants set level = level, expires_at = expires_at`); // nothing changes: no entry
    await db.query(sql`update permgraph.grants set level = 2, expires_at = null where tail_id = 'ann'`);
    await db.query(sql`update permgraph.grants set expires_at = ${at} where tail_id = 'ann'`);
    await db.query(sql`update permgraph.grants set source = 'moved' where tail_id = 'ann'`);
    await db.query(sql`delete from permgraph.grants where tail_id = 'ann'`);
    const entries = await auditSince(from);
    expect(entries.map((e) => [e.action, e.source, e.oldLevel, e.newLevel, e.oldExpiresAt, e.newExpiresAt])).toEqual([
      ['grant', 'default', null, 1, null, at],
      ['change_expiry', 'default', 1, 1, at, later],
      ['change_level', 'default', 1, 2, later, null],
      ['change_expiry', 'default', 2, 2, null, at],
      ['revoke', 'default', 2, null, at, null],
      ['grant', 'moved', null, 2, null, at],
      ['revoke', 'moved', 2, null, at, null],
    ]);
    const filtered = await listAudit(db, { after: from, action: 'change_expiry' });
    expect(filtered.entries.map((e) => e.newExpiresAt)).toEqual([later, at]);
  });

  it('syncGrants: an expiry per grant; a changed expiry is an update; refused expiries write nothing', async () => {
    await fresh();
    const at = new Date(Date.now() + HOUR);
    const later = new Date(Date.now() + 2 * HOUR);
    const rows = () => db.query(sql`select tail_id, head_id, level, expires_at from permgraph.grants where source = 'ldap' order by 1, 2`);
    expect(
      await syncGrants(db, 'ldap', [
        { tail: 'ann', head: 'eng', level: 'write', expiresAt: at },
        { tail: 'ann', head: 'ops', level: 1, expiresAt: later.toISOString() },
        { tail: 'bob', head: 'eng', level: 1 },
      ]),
    ).toMatchObject({ inserted: 3, updated: 0, deleted: 0 });
    expect(await rows()).toEqual([
      { tail_id: 'ann', head_id: 'eng', level: 2, expires_at: at },
      { tail_id: 'ann', head_id: 'ops', level: 1, expires_at: later },
      { tail_id: 'bob', head_id: 'eng', level: 1, expires_at: null },
    ]);
    const same: DesiredGrant[] = [
      { tail: 'ann', head: 'eng', level: 'write', expiresAt: at.toISOString() },
      { tail: 'ann', head: 'ops', level: 1, expiresAt: later },
      { tail: 'bob', head: 'eng', level: 1, expiresAt: null },
    ];
    expect(await syncGrants(db, 'ldap', same)).toMatchObject({ inserted: 0, updated: 0, deleted: 0 });
    const from = await lastAuditId();
    expect(
      await syncGrants(db, 'ldap', [
        { tail: 'ann', head: 'eng', level: 'write', expiresAt: later }, // expiry moved
        { tail: 'ann', head: 'ops', level: 1 }, // expiry removed
        { tail: 'bob', head: 'eng', level: 1, expiresAt: at }, // expiry added
      ]),
    ).toMatchObject({ inserted: 0, updated: 3, deleted: 0 });
    expect((await auditSince(from)).map((e) => [e.action, e.tailId, e.headId, e.oldExpiresAt, e.newExpiresAt])).toEqual([
      ['change_expiry', 'ann', 'eng', at, later],
      ['change_expiry', 'ann', 'ops', later, null],
      ['change_expiry', 'bob', 'eng', null, at],
    ]);

    const before = await rows();
    await expect(
      syncGrants(db, 'ldap', [
        { tail: 'ann', head: 'eng', level: 1 },
        { tail: 'bob', head: 'ops', level: 1, expiresAt: '2001-01-01T00:00:00Z' },
      ]),
    ).rejects.toThrow(/^sync-grants: grant #2 \(bob -> ops\) expires at 2001-01-01T00:00:00.000000Z is not in the future \(the database's time is .*\); nothing was written$/);
    await expect(syncGrants(db, 'ldap', [{ tail: 'ann', head: 'eng', level: 1, expiresAt: 'soon' }])).rejects.toThrow(
      /^sync-grants: grant #1: "expiresAt" "soon" is neither a timestamp with a time zone offset nor a date/,
    );
    await expect(syncGrants(db, 'ldap', [{ tail: 'ann', head: 'eng', level: 1, expires_at: at } as never])).rejects.toThrow(
      /grant #1 has unknown field\(s\) expires_at; expected tail, head, level and optionally expiresAt/,
    );
    expect(await rows()).toEqual(before);
  });
});
