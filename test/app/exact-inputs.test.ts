// The moments a caller gives the library, written to the microsecond as
// given: a grant's expiry (writeGrant, syncGrants; expiresIn counted from the
// database's now()), a node's trash time (addNode, setTrash). timestamptz
// keeps microseconds, a Date milliseconds: text such as
// 2100-01-01T00:00:00.000250Z must reach the table as that instant, not
// as .000000. Each write runs under several session time zones (Berlin,
// Kathmandu +05:45, St. John's -03:30), and the stored value is read back by
// the database in UTC; every expected value is written out here by hand.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { listAudit, pruneAudit } from '../../src/app/audit.ts';
import { writeGrant } from '../../src/app/grants.ts';
import { importGraph } from '../../src/app/import/index.ts';
import { syncGrants } from '../../src/app/sync-grants.ts';
import { Permgraph } from '../../src/client.ts';
import type { SQLQuery } from '@databases/pg';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { g, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { loadGraph } from '../helpers/graph.ts';

const ZONES = ['UTC', 'Europe/Berlin', 'Asia/Kathmandu', 'America/St_Johns'];
/** A timestamptz column as the database writes it in UTC, to the microsecond. */
const utc = (column: SQLQuery) => sql`to_char((${column}) at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

describe('moments given to the library are written to the microsecond', async () => {
  const { db, url } = await createTestDatabase();
  const pg = Permgraph.fromPool(db, url);

  /** `write` in a transaction whose session time zone is `zone`. */
  const under = <T>(zone: string, write: (tx: Queryable) => Promise<T>) =>
    db.tx(async (tx) => {
      await tx.query(sql`select set_config('timezone', ${zone}, true)`);
      return write(tx);
    });
  const expiry = async (tail: string, head: string, source = 'default'): Promise<string | null> =>
    (await db.query(sql`select ${utc(sql.ident('expires_at'))} as at from permgraph.grants where tail_id = ${tail} and head_id = ${head} and source = ${source}`))[0].at;
  const trash = async (id: string): Promise<string | null> => (await db.query(sql`select ${utc(sql.ident('trash_at'))} as at from permgraph.nodes where id = ${id}`))[0].at;

  it('writeGrant: expiresAt as text keeps its microseconds (and its offset), as a Date its milliseconds; the result says what was written', async () => {
    await loadGraph(db, { nodes: [u('ann'), g('eng')], grants: [] });
    const cases: [Date | string, string][] = [
      ['2100-01-01T00:00:00.000250Z', '2100-01-01T00:00:00.000250Z'],
      ['2100-01-01T05:45:00.0007+05:45', '2100-01-01T00:00:00.000700Z'],
      ['2100-01-01 00:00:00.000001-03:30', '2100-01-01T03:30:00.000001Z'],
      ['9999-12-31T23:59:59.999999Z', '9999-12-31T23:59:59.999999Z'],
      // a date alone is midnight UTC, whatever the session's zone
      ['2100-01-01', '2100-01-01T00:00:00.000000Z'],
      [new Date('2100-01-01T00:00:00.123Z'), '2100-01-01T00:00:00.123000Z'],
    ];
    for (const zone of ZONES) {
      for (const [given, stored] of cases) {
        const result = await under(zone, (tx) => writeGrant(tx, 'ann', 'eng', 'read', { expiresAt: given }));
        const what = `${zone} ${String(given)}`;
        expect(await expiry('ann', 'eng'), what).toBe(stored);
        expect(result, what).toMatchObject({ expiresAt: new Date(`${stored.slice(0, -4)}Z`), expiresAtExact: stored });
      }
    }
  });

  it('writeGrant: expiresIn is the writing transaction\'s now() plus the duration, to the microsecond', async () => {
    await loadGraph(db, { nodes: [u('ann'), g('eng')], grants: [] });
    for (const zone of ZONES) {
      const result = await under(zone, (tx) => writeGrant(tx, 'ann', 'eng', 'read', { expiresIn: '90m', actor: `in-${zone}` }));
      // the audit entry's at is the writing transaction's now()
      const [row] = await db.query(sql`
        select g.expires_at - a.at = interval '90 minutes' as exact_span, ${utc(sql.ident('g', 'expires_at'))} as stored
        from permgraph.grants g, permgraph.audit_log a
        where g.tail_id = 'ann' and g.head_id = 'eng' and a.actor = ${`in-${zone}`}`);
      expect({ exactSpan: row.exact_span, exact: result.expiresAtExact }, zone).toEqual({ exactSpan: true, exact: row.stored });
    }
  });

  it('writeGrant refuses an expiry not in the future naming it as given, to the microsecond', async () => {
    await loadGraph(db, { nodes: [u('ann'), g('eng')], grants: [] });
    await expect(writeGrant(db, 'ann', 'eng', 'read', { expiresAt: '2001-01-01T05:45:00.00025+05:45' })).rejects.toThrow(
      /^expiry 2001-01-01T00:00:00\.000250Z is not in the future \(the database's time is \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\); nothing was written$/,
    );
  });

  it('syncGrants: each expiresAt to the microsecond; an expiry moved within a millisecond is an update', async () => {
    await loadGraph(db, { nodes: [u('ann'), u('bob'), g('eng')], grants: [] });
    for (const zone of ZONES) {
      await db.query(sql`delete from permgraph.grants`);
      const first = await under(zone, (tx) =>
        syncGrants(tx, 'ldap', [
          { tail: 'ann', head: 'eng', level: 1, expiresAt: '2100-01-01T05:45:00.0007+05:45' },
          { tail: 'bob', head: 'eng', level: 1, expiresAt: '2100-01-01T00:00:00.000001Z' },
        ]),
      );
      expect(first, zone).toMatchObject({ inserted: 2, updated: 0, deleted: 0 });
      expect([await expiry('ann', 'eng', 'ldap'), await expiry('bob', 'eng', 'ldap')], zone).toEqual(['2100-01-01T00:00:00.000700Z', '2100-01-01T00:00:00.000001Z']);
      const second = await under(zone, (tx) =>
        syncGrants(tx, 'ldap', [
          { tail: 'ann', head: 'eng', level: 1, expiresAt: '2100-01-01T00:00:00.000250Z' },
          { tail: 'bob', head: 'eng', level: 1, expiresAt: '2100-01-01T00:00:00.000001Z' },
        ]),
      );
      expect(second, zone).toMatchObject({ inserted: 0, updated: 1, deleted: 0 });
      expect(await expiry('ann', 'eng', 'ldap'), zone).toBe('2100-01-01T00:00:00.000250Z');
    }
  });

  it('addNode and setTrash: a trash time as text keeps its microseconds, as a Date its milliseconds', async () => {
    for (const zone of ZONES) {
      const id = `t-${zone}`;
      const inZone = <T>(fn: () => Promise<T>) =>
        pg.asActor('exact-inputs', async (tx) => {
          await tx.query(sql`select set_config('timezone', ${zone}, true)`);
          return fn();
        });
      await inZone(() => pg.addNode(id, 'group', { trashAt: '0001-01-01T05:41:16.000001+05:41' }));
      expect(await trash(id), zone).toBe('0001-01-01T00:00:16.000001Z');
      await inZone(() => pg.setTrash(id, '9999-12-31T23:00:00.0007Z'));
      expect(await trash(id), zone).toBe('9999-12-31T23:00:00.000700Z');
      await inZone(() => pg.setTrash(id, '2030-01-31T14:30:00.00025-03:30'));
      expect(await trash(id), zone).toBe('2030-01-31T18:00:00.000250Z');
      await inZone(() => pg.setTrash(id, new Date('2030-01-31T18:00:00.123Z')));
      expect(await trash(id), zone).toBe('2030-01-31T18:00:00.123000Z');
      await inZone(() => pg.setTrash(id, null));
      expect(await trash(id), zone).toBeNull();
    }
  });

  it('a trash time that is not an ISO 8601 timestamp with its zone is an InvalidInputError naming it; nothing is written', async () => {
    await pg.addNode('kept', 'group', { trashAt: '2030-01-31T18:00:00.000250Z' });
    const cases: [unknown, RegExp][] = [
      ['soon', /^trash time "soon" is neither a timestamp with a time zone offset nor a date \(ISO 8601, e\.g\. 2030-01-31T12:00:00Z, or 2030-01-31: its midnight UTC\)$/],
      ['2030-01-31T18:00:00', /^trash time "2030-01-31T18:00:00" is neither a timestamp with a time zone offset nor a date/],
      ['2030-02-30T00:00:00Z', /^trash time "2030-02-30T00:00:00Z" is neither a timestamp with a time zone offset nor a date/],
      ['0001-01-01T00:00:00+01:00', /^trash time "0001-01-01T00:00:00\+01:00" is outside the years 1 to 9999 \(for "no trash time", pass null\)$/],
      [new Date(Number.NaN), /^trash time is an invalid Date$/],
    ];
    for (const [given, message] of cases) {
      await expect(pg.setTrash('kept', given as string), String(given)).rejects.toThrow(InvalidInputError);
      await expect(pg.setTrash('kept', given as string), String(given)).rejects.toThrow(message);
    }
    expect(await trash('kept')).toBe('2030-01-31T18:00:00.000250Z');
  });

  it('import: the CSV\'s expires_at and trash_at are cast by PostgreSQL, to the microsecond', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'permgraph-exact-inputs-'));
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    await writeFile(path.join(dir, 'nodes.csv'), 'id,kind,owner_id,trash_at\nimp-u,user,,\nimp-g,group,,2030-01-31T23:45:00.000001+05:45\n');
    await writeFile(path.join(dir, 'grants.csv'), 'tail_id,head_id,level,source,expires_at\nimp-u,imp-g,1,imp,2100-01-01T00:00:00.00025Z\nimp-u,imp-g,1,imp2,2099-12-31T20:30:00.0007-03:30\n');
    await importGraph(db, { nodes: { file: path.join(dir, 'nodes.csv') }, grants: { file: path.join(dir, 'grants.csv') } });
    expect(await trash('imp-g')).toBe('2030-01-31T18:00:00.000001Z');
    expect([await expiry('imp-u', 'imp-g', 'imp'), await expiry('imp-u', 'imp-g', 'imp2')]).toEqual(['2100-01-01T00:00:00.000250Z', '2100-01-01T00:00:00.000700Z']);
  });

  it('pruneAudit: the cut-off to the microsecond deletes what is before it, and is said and logged as such, in UTC', async () => {
    // each zone's entries a year before the last zone's cut-off, which leaves them alone
    for (const [i, zone] of ZONES.entries()) {
      const year = 2000 - i;
      await db.query(sql`insert into permgraph.audit_log (at, actor, action, head_id, node_kind) values
        (${`${year}-01-01T00:00:00.000001Z`}, 'prune-exact', 'set_trash', 'x', 'group'),
        (${`${year}-01-01T00:00:00.000250Z`}, 'prune-exact', 'set_trash', 'x', 'group'),
        (${`${year}-01-01T00:00:00.000700Z`}, 'prune-exact', 'set_trash', 'x', 'group')`);
      const cut = `${year}-01-01T00:00:00.000250Z`;
      const given = `${year}-01-01T05:45:00.00025+05:45`; // (the same instant)
      const said = { before: new Date(`${year}-01-01T00:00:00.000Z`), beforeExact: cut };
      expect(await under(zone, (tx) => pruneAudit(tx, { before: given, dryRun: true })), zone).toEqual({ ...said, entries: 1, dryRun: true });
      expect(await under(zone, (tx) => pruneAudit(tx, { before: given, actor: `prune-${zone}` })), zone).toEqual({ ...said, entries: 1, dryRun: false });
      const left = await db.query(sql`select ${utc(sql.ident('at'))} as at from permgraph.audit_log where actor = 'prune-exact' and at >= ${`${year}-01-01Z`} and at < ${`${year + 1}-01-01Z`} order by at`);
      expect(left.map((r: { at: string }) => r.at), zone).toEqual([cut, `${year}-01-01T00:00:00.000700Z`]);
      // the log's own entry of the prune names the cut-off in UTC, in the table and as listAudit reads it
      const [logged] = await db.query(sql`select details->>'before' as before from permgraph.audit_log where actor = ${`prune-${zone}`}`);
      expect(logged.before, zone).toBe(cut);
      expect((await listAudit(db, { actor: `prune-${zone}` })).entries.map((e) => e.details), zone).toEqual([{ before: cut, entries: 1 }]);
      // olderThan: the writing transaction's now() (the entry's at) minus the duration, to the microsecond
      const older = await under(zone, (tx) => pruneAudit(tx, { olderThan: '3650d', actor: `older-${zone}` }));
      const [entry] = await db.query(sql`
        select ${utc(sql`at - interval '315360000 seconds'`)} as cut, details->>'before' as before
        from permgraph.audit_log where actor = ${`older-${zone}`}`);
      expect({ exact: older.beforeExact, logged: entry.before }, zone).toEqual({ exact: entry.cut, logged: entry.cut });
    }
  });

  it('listAudit: since/until are moments with their zone, to the microsecond; text without one is refused, whatever the session\'s zone', async () => {
    await db.query(sql`insert into permgraph.audit_log (at, actor, action, head_id, node_kind) values
      ('2030-01-31T18:00:00.000001Z', 'bounds', 'set_trash', 'b1', 'group'),
      ('2030-01-31T18:00:00.000002Z', 'bounds', 'set_trash', 'b2', 'group')`);
    const heads = (page: { entries: { headId: string | null }[] }) => page.entries.map((e) => e.headId);
    for (const zone of ZONES) {
      // the same instant as 18:00:00.000001Z, written with an offset
      expect(heads(await under(zone, (tx) => listAudit(tx, { actor: 'bounds', since: '2030-01-31T23:45:00.000001+05:45', until: '2030-01-31T18:00:00.000002Z' }))), zone).toEqual(['b1']);
      expect(heads(await under(zone, (tx) => listAudit(tx, { actor: 'bounds', since: '2030-01-31 14:30:00.000002-03:30' }))), zone).toEqual(['b2']);
      expect(heads(await under(zone, (tx) => listAudit(tx, { actor: 'bounds', until: new Date('2030-01-31T18:00:00.001Z') }))), zone).toEqual(['b1', 'b2']);
      // without a zone, each session would read another instant: refused, naming the bound
      const cases: [string, string][] = [['since', '2030-01-31 18:00:00.000001'], ['until', '2030-01-31T18:00:00.000002'], ['since', 'yesterday']];
      for (const [bound, given] of cases) {
        const refused = under(zone, (tx) => listAudit(tx, { actor: 'bounds', [bound]: given }));
        await expect(refused, `${zone} ${bound} ${given}`).rejects.toThrow(InvalidInputError);
        await expect(under(zone, (tx) => listAudit(tx, { actor: 'bounds', [bound]: given })), `${zone} ${bound} ${given}`).rejects.toThrow(
          `${bound} "${given}" is neither a timestamp with a time zone offset nor a date (ISO 8601, e.g. 2030-01-31T12:00:00Z, or 2030-01-31: its midnight UTC)`,
        );
      }
      // out of range: no hint to pass null for "never", which a bound does not mean
      await expect(under(zone, (tx) => listAudit(tx, { since: '0001-01-01T00:00:00+01:00' })), zone).rejects.toThrow(
        /^since "0001-01-01T00:00:00\+01:00" is outside the years 1 to 9999$/,
      );
    }
  });

  it('listAudit gives the cut-off of a prune logged in a session\'s time zone, by an older release, in UTC too', async () => {
    await db.query(sql`insert into permgraph.audit_log (at, actor, action, details) values
      ('2030-01-31T18:00:00Z', 'old-prune', 'prune_audit', '{"before": "2030-01-31T19:00:00.0007+01:00", "entries": 3}'),
      ('2030-01-31T18:00:01Z', 'old-prune', 'prune_audit', '{"before": "0001-12-31T20:29:08.000001-03:30:52 BC", "entries": 0}')`);
    expect((await listAudit(db, { actor: 'old-prune' })).entries.map((e) => e.details)).toEqual([
      { before: '2030-01-31T18:00:00.000700Z', entries: 3 },
      { before: '0001-01-01T00:00:00.000001Z', entries: 0 },
    ]);
  });
});

describe('ids the database cannot take', async () => {
  const { db, url } = await createTestDatabase();
  const pg = Permgraph.fromPool(db, url);
  await loadGraph(db, { nodes: [u('ann'), g('eng')], grants: [] });

  it("a NUL byte in an id, or a grant key wider than the grants' index, is an InvalidInputError with the SQLSTATE, not the driver's raw error", async () => {
    for (const attempt of [() => pg.check('a\u0000b', 'eng', 1), () => pg.addNode('x\u0000y', 'user'), () => writeGrant(db, 'ann', 'eng', 1, { source: 'a\u0000' })]) {
      const error = await attempt().then(() => undefined, (e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidInputError);
      expect(error).toMatchObject({ sqlState: '22021', message: expect.stringMatching(/invalid byte sequence for encoding "UTF8": 0x00/) });
    }
    const wide = await writeGrant(db, 'ann', 'eng', 1, { source: '界'.repeat(900) }).then(() => undefined, (e: unknown) => e);
    expect(wide).toBeInstanceOf(InvalidInputError);
    expect(wide).toMatchObject({ sqlState: '54000', message: expect.stringMatching(/^grant "ann" -> "eng": its tail, head and source are 2706 bytes together in UTF-8/) });
    expect(await db.query(sql`select count(*)::int as n from permgraph.grants`)).toEqual([{ n: 0 }]);
  });
});
