// The moments the listings and the audit log give, to the microsecond the
// database keeps (timestamptz), beside the Dates (milliseconds) they have
// always carried: listTargets' and listUsers' validUntil, and an audit
// entry's at, old/newExpiresAt and old/newTrashAt. The database writes them
// in the session's time zone; each is read under several, whose offsets
// may carry seconds (local mean time before 1900 or so), put the first
// hours of year 1 in 1 BC, or the last of year 9999 in year 10000. Every
// expected value is the one inserted, written out here by hand.
import { describe, expect, it } from 'vitest';
import { listAudit } from '../../src/app/audit.ts';
import { listTargets, listUsers } from '../../src/app/listing.ts';
import { sql } from '../../src/db/pool.ts';
import { refresh } from '../../src/engine/apply.ts';
import { g, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { loadGraph } from '../helpers/graph.ts';

/** Europe/Berlin: whole hours; Asia/Kathmandu: +05:41:16 in year 1, +05:45 in 9999; America/St_Johns: -03:30:52 in year 1 (1 BC locally), -03:30 in 9999. */
const ZONES = ['UTC', 'Europe/Berlin', 'Asia/Kathmandu', 'America/St_Johns'];

describe('moments to the microsecond in the listings and the audit log', async () => {
  const { db } = await createTestDatabase();

  /** What `read` returns in a transaction whose session time zone is `zone`. */
  const under = <T>(zone: string, read: (tx: Parameters<Parameters<typeof db.tx>[0]>[0]) => Promise<T>) =>
    db.tx(async (tx) => {
      await tx.query(sql`select set_config('timezone', ${zone}, true)`);
      return read(tx);
    });

  it('listTargets and listUsers: validUntil as a Date, validUntilExact as stored, whatever the session\'s time zone', async () => {
    await loadGraph(db, { nodes: [u('ann'), u('bob'), g('eng'), o('spec', 'eng'), g('far')], grants: [] });
    // two expiries within one millisecond (250 and 700 microseconds past it), and one in the last hour of year 9999
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level, expires_at) values
      ('ann', 'eng', 2, '2100-01-01T00:00:00.000250Z'),
      ('bob', 'eng', 1, '2100-01-01T00:00:00.000700Z'),
      ('ann', 'far', 1, '9999-12-31T23:00:00.000001Z')`);
    await refresh(db);
    for (const zone of ZONES) {
      const [targets, users] = await under(zone, (tx) => Promise.all([listTargets(tx, 'ann'), listUsers(tx, 'spec')]));
      expect(targets, zone).toEqual({
        items: [
          { id: 'ann', kind: 'user', level: 3, validUntil: null, validUntilExact: null },
          { id: 'eng', kind: 'group', level: 2, validUntil: new Date('2100-01-01T00:00:00.000Z'), validUntilExact: '2100-01-01T00:00:00.000250Z' },
          { id: 'far', kind: 'group', level: 1, validUntil: new Date('9999-12-31T23:00:00.000Z'), validUntilExact: '9999-12-31T23:00:00.000001Z' },
          { id: 'spec', kind: 'object', level: 2, validUntil: new Date('2100-01-01T00:00:00.000Z'), validUntilExact: '2100-01-01T00:00:00.000250Z' },
        ],
        next: null,
      });
      expect(users, zone).toEqual({
        items: [
          { id: 'ann', level: 2, validUntil: new Date('2100-01-01T00:00:00.000Z'), validUntilExact: '2100-01-01T00:00:00.000250Z' },
          { id: 'bob', level: 1, validUntil: new Date('2100-01-01T00:00:00.000Z'), validUntilExact: '2100-01-01T00:00:00.000700Z' },
        ],
        next: null,
      });
    }
  });

  it('listAudit: at, old/newExpiresAt and old/newTrashAt as Dates, and each to the microsecond, whatever the session\'s time zone', async () => {
    // entries written by hand, at moments of our choosing (the log takes inserts; triggers write now())
    await db.query(sql`insert into permgraph.audit_log (at, actor, action, tail_id, head_id, source, old_level, new_level, old_expires_at, new_expires_at) values
      ('2030-01-31T18:00:00.000001Z', 'exact-moments', 'change_level', 'ann', 'eng', 'default', 1, 2, '2100-01-01T00:00:00.000250Z', '2100-01-01T00:00:00.000700Z')`);
    await db.query(sql`insert into permgraph.audit_log (at, actor, action, head_id, node_kind, old_trash_at, new_trash_at) values
      ('0001-01-01T00:00:00.000250Z', 'exact-moments', 'set_trash', 'far', 'group', '0001-01-01T00:00:00.000001Z', '9999-12-31T23:00:00.000700Z')`);
    for (const zone of ZONES) {
      const { entries } = await under(zone, (tx) => listAudit(tx, { actor: 'exact-moments' }));
      expect(entries, zone).toMatchObject([
        {
          action: 'change_level',
          at: new Date('2030-01-31T18:00:00.000Z'), atExact: '2030-01-31T18:00:00.000001Z',
          oldExpiresAt: new Date('2100-01-01T00:00:00.000Z'), oldExpiresAtExact: '2100-01-01T00:00:00.000250Z',
          newExpiresAt: new Date('2100-01-01T00:00:00.000Z'), newExpiresAtExact: '2100-01-01T00:00:00.000700Z',
          oldTrashAt: null, oldTrashAtExact: null, newTrashAt: null, newTrashAtExact: null,
        },
        {
          action: 'set_trash',
          at: new Date('0001-01-01T00:00:00.000Z'), atExact: '0001-01-01T00:00:00.000250Z',
          oldTrashAt: new Date('0001-01-01T00:00:00.000Z'), oldTrashAtExact: '0001-01-01T00:00:00.000001Z',
          newTrashAt: new Date('9999-12-31T23:00:00.000Z'), newTrashAtExact: '9999-12-31T23:00:00.000700Z',
          oldExpiresAt: null, oldExpiresAtExact: null, newExpiresAt: null, newExpiresAtExact: null,
        },
      ]);
      // since/until given as that exact text select to the microsecond
      const at = (filter: { since?: string; until?: string }) =>
        under(zone, async (tx) => (await listAudit(tx, { actor: 'exact-moments', ...filter })).entries.map((e) => e.action));
      expect(await at({ since: '2030-01-31T18:00:00.000001Z' }), zone).toEqual(['change_level']);
      expect(await at({ since: '2030-01-31T18:00:00.000002Z' }), zone).toEqual([]);
      expect(await at({ until: '2030-01-31T18:00:00.000001Z' }), zone).toEqual(['set_trash']);
    }
  });
});
