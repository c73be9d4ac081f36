// The change stream's moments to the microsecond the tables keep
// (timestamptz), beside the Dates (milliseconds) its events and consumers
// have always carried: an event's old/newValidUntil and committedAt, a
// consumer's registeredAt and ackedAt; and `permgraph changes` printing
// them so. Read under several session time zones (Kathmandu +05:45, St.
// John's -03:30, Berlin, which puts the last hour of 9999 in year 10000);
// the expiries expected are written out by hand, the other moments are the
// database's own UTC text of the columns.
import { describe, expect, it } from 'vitest';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { applyChanges } from '../../src/engine/apply.ts';
import { ackChanges, consumerStatus, readChanges, registerConsumer } from '../../src/engine/changes.ts';
import { g, u } from '../helpers/builders.ts';
import { runCli } from '../helpers/cli.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { loadGraph } from '../helpers/graph.ts';

const ZONES = ['UTC', 'Europe/Berlin', 'Asia/Kathmandu', 'America/St_Johns'];
const UTC_TEXT = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"';

describe('the change stream\'s moments to the microsecond', async () => {
  const { db, url, name } = await createTestDatabase();
  const under = <T>(zone: string, read: (tx: Queryable) => Promise<T>) =>
    db.tx(async (tx) => {
      await tx.query(sql`select set_config('timezone', ${zone}, true)`);
      return read(tx);
    });

  /** Expiries within one millisecond (250 and 700 microseconds past it, then moved to 1), and one in the last hour of 9999. */
  async function recordExpiries(consumer: string): Promise<void> {
    await loadGraph(db, { nodes: [u('ann'), u('bob'), u('cat'), g('eng'), g('far')], grants: [] });
    await applyChanges(db);
    await registerConsumer(db, consumer);
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level, expires_at) values
      ('ann', 'eng', 1, '2100-01-01T00:00:00.000250Z'),
      ('bob', 'eng', 1, '2100-01-01T00:00:00.000700Z'),
      ('cat', 'far', 1, '9999-12-31T23:00:00.000700Z')`);
    await applyChanges(db);
    await db.query(sql`update permgraph.grants set expires_at = '2100-01-01T00:00:00.000001Z' where tail_id = 'ann'`);
    await applyChanges(db);
  }

  it('readChanges: old/newValidUntil and committedAt as Dates and, exactly, as the table holds them, whatever the session\'s time zone', async () => {
    await recordExpiries('exact');
    const committed = new Map<number, string>(
      (await db.query(sql`select seq, to_char(committed_at at time zone 'UTC', ${UTC_TEXT}) as at from permgraph.permission_changes`)).map(
        (r: { seq: number; at: string }) => [Number(r.seq), r.at],
      ),
    );
    for (const zone of ZONES) {
      const events = await under(zone, (tx) => readChanges(tx, 'exact'));
      const byRow = events.map(({ op, userId, targetId, oldValidUntil, oldValidUntilExact, newValidUntil, newValidUntilExact }) => ({
        op, row: `${userId}/${targetId}`, oldValidUntil, oldValidUntilExact, newValidUntil, newValidUntilExact,
      }));
      byRow.sort((a, b) => (a.row < b.row ? -1 : a.row > b.row ? 1 : a.op < b.op ? -1 : 1));
      const at2100 = new Date('2100-01-01T00:00:00.000Z');
      expect(byRow, zone).toEqual([
        { op: 'insert', row: 'ann/eng', oldValidUntil: null, oldValidUntilExact: null, newValidUntil: at2100, newValidUntilExact: '2100-01-01T00:00:00.000250Z' },
        { op: 'update', row: 'ann/eng', oldValidUntil: at2100, oldValidUntilExact: '2100-01-01T00:00:00.000250Z', newValidUntil: at2100, newValidUntilExact: '2100-01-01T00:00:00.000001Z' },
        { op: 'insert', row: 'bob/eng', oldValidUntil: null, oldValidUntilExact: null, newValidUntil: at2100, newValidUntilExact: '2100-01-01T00:00:00.000700Z' },
        {
          op: 'insert', row: 'cat/far', oldValidUntil: null, oldValidUntilExact: null,
          newValidUntil: new Date('9999-12-31T23:00:00.000Z'), newValidUntilExact: '9999-12-31T23:00:00.000700Z',
        },
      ]);
      for (const e of events) {
        expect(e.committedAtExact, `${zone} ${e.seq}`).toBe(committed.get(e.seq));
        expect(e.committedAt, `${zone} ${e.seq}`).toEqual(new Date(`${committed.get(e.seq)!.slice(0, -4)}Z`));
      }
    }
  });

  it('consumerStatus: registeredAt and ackedAt, exactly, as change_consumers holds them', async () => {
    await registerConsumer(db, 'status-exact');
    const events = await readChanges(db, 'exact');
    await ackChanges(db, 'exact', Math.max(...events.map((e) => e.seq)));
    const table = await db.query(sql`
      select consumer, to_char(registered_at at time zone 'UTC', ${UTC_TEXT}) as registered, to_char(acked_at at time zone 'UTC', ${UTC_TEXT}) as acked
      from permgraph.change_consumers order by consumer`);
    for (const zone of ZONES) {
      const status = await under(zone, (tx) => consumerStatus(tx));
      expect(status.map(({ consumer, registeredAtExact, ackedAtExact }) => ({ consumer, registered: registeredAtExact, acked: ackedAtExact })), zone).toEqual(table);
      for (const c of status) expect(c.registeredAt, zone).toEqual(new Date(`${c.registeredAtExact!.slice(0, -4)}Z`));
    }
  });

  it('permgraph changes prints the expiries to the microsecond, in UTC whatever the session\'s zone (JSON: the exact text in place of each Date)', async () => {
    await recordExpiries('cli-exact');
    const committed: string[] = (await db.query(sql`select distinct to_char(committed_at at time zone 'UTC', ${UTC_TEXT}) as at from permgraph.permission_changes`)).map(
      (r: { at: string }) => r.at,
    );
    await db.query(sql`alter database ${sql.ident(name)} set timezone = 'Asia/Kathmandu'`);
    try {
      const json = await runCli(['--database-url', url, 'changes', '--consumer', 'cli-exact', '--json']);
      expect(json).toMatchObject({ code: 0, stderr: '' });
      const lines = json.stdout.trimEnd().split('\n').map((line) => JSON.parse(line));
      expect(lines.map(({ op, userId, targetId, oldValidUntil, newValidUntil }) => `${op} ${userId}/${targetId} ${oldValidUntil} ${newValidUntil}`).sort()).toEqual([
        'insert ann/eng null 2100-01-01T00:00:00.000250Z',
        'insert bob/eng null 2100-01-01T00:00:00.000700Z',
        'insert cat/far null 9999-12-31T23:00:00.000700Z',
        'update ann/eng 2100-01-01T00:00:00.000250Z 2100-01-01T00:00:00.000001Z',
      ]);
      for (const line of lines) {
        expect(committed).toContain(line.committedAt);
        expect(Object.keys(line).filter((key) => key.endsWith('Exact'))).toEqual([]);
      }
      // the human lines too: an expiry moved within a millisecond is a change to see
      await db.query(sql`update permgraph.grants set expires_at = '2100-01-01T00:00:00.000002Z' where tail_id = 'ann'`);
      await db.query(sql`delete from permgraph.grants where tail_id = 'bob'`);
      await applyChanges(db);
      const human = await runCli(['--database-url', url, 'changes', '--consumer', 'cli-exact']);
      expect(human.stdout.trimEnd().split('\n').map((line) => line.replace(/^\d+ /, '')).sort()).toEqual([
        'delete bob -> eng: was level 1, traverse_owned true, valid_until 2100-01-01T00:00:00.000700Z',
        'update ann -> eng: level 1 -> 1, traverse_owned true -> true, valid_until 2100-01-01T00:00:00.000001Z -> 2100-01-01T00:00:00.000002Z',
      ]);
    } finally {
      await db.query(sql`alter database ${sql.ident(name)} reset timezone`);
    }
  });
});
