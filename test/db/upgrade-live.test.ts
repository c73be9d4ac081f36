// Upgrading a database that is in use: `permgraph migrate` re-creates the
// triggers of nodes and grants, which takes ACCESS EXCLUSIVE locks on both.
// Found by upgrading a release of commit b1d6180 under a load of writers,
// readers and its worker: while migrate waited for a long transaction that
// had read nodes (a worker's batch of 40 s), every write and every check
// queued behind its lock request for as long (23 s, then 45 s), and once it
// had nodes, it asked for grants, which a writer caught half-way (its insert
// into grants waiting for nodes) held: a deadlock, which failed the migrate
// (twice) or the writer's insert (40P01). Here a transaction that read nodes
// stays open 3 s while migrate runs.
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { openPool, sql } from '../../src/db/pool.ts';
import { migrate } from '../../src/migrations/migrate.ts';
import { BEFORE_049, historyMissing, migrateAsAt } from '../helpers/released.ts';
import { createEmptyDatabase } from '../helpers/database.ts';
import { cleanUpAfter } from '../helpers/cleanup.ts';

const missing = historyMissing(BEFORE_049);

describe.skipIf(missing !== null)('upgrading a database in use', () => {
  it('a migrate that waits for a long transaction holds up neither writers nor readers for its length, and deadlocks with none of them', async () => {
    const { db, url } = await createEmptyDatabase();
    await migrateAsAt(db, BEFORE_049);
    await db.query(sql`
      insert into permgraph.nodes (id, kind) values ('alice', 'user'), ('bob', 'user'), ('team', 'group'), ('other', 'group');
      insert into permgraph.nodes (id, kind, owner_id) values ('doc', 'object', 'team');
      insert into permgraph.grants (tail_id, head_id, level) values ('alice', 'team', 2)`);
    await db.query(sql`select permgraph.apply_changes()`);
    // Each party on a connection of its own, as separate processes would be.
    const own = () => {
      const pool = openPool(url, { poolSize: 1 });
      cleanUpAfter(() => pool.dispose());
      return pool;
    };
    const [long, migrating, writing, reading] = [own(), own(), own(), own()];

    // A long transaction that has read nodes, as a worker's long batch has.
    let longOpen = true;
    const held = long.tx(async (tx) => {
      await tx.query(sql`select count(*) from permgraph.nodes`);
      await sleep(3000);
    }).finally(() => { longOpen = false; });
    await sleep(200);
    const upgrade = migrate(migrating).then((result) => ({ result }), (error: unknown) => ({ error }));
    await sleep(800);

    // A writer's transaction: its insert locks grants, then its checks read nodes.
    // And a check that the write does not change (an object's owner is read at
    // check time, so one of doc's would depend on which came first).
    // (whether each ended while the long transaction was still open: queued
    // behind migrate's lock request, it would end only after it)
    const settled = async <T>(run: () => Promise<T>) => {
      try {
        return { value: await run(), whileLongOpen: longOpen };
      } catch (error) {
        return { error, whileLongOpen: longOpen };
      }
    };
    const [write, read] = await Promise.all([
      settled(() => writing.tx(async (tx) => {
        await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('bob', 'team', 1)`);
        await tx.query(sql`update permgraph.nodes set owner_id = 'other' where id = 'doc'`);
      })),
      settled(async () => (await reading.query(sql`select permgraph.check('alice', 'team', 2) as allowed`))[0].allowed),
    ]);
    await held;
    const upgraded = await upgrade;

    expect(write).toEqual({ value: undefined, whileLongOpen: true });
    expect(read).toEqual({ value: true, whileLongOpen: true });
    expect(upgraded).toEqual({ result: expect.objectContaining({ applied: expect.arrayContaining(['049_cluster_identity.sql']) }) });

    await db.query(sql`select permgraph.apply_changes()`);
    expect(await db.query(sql`select * from permgraph.verify()`)).toEqual([]);
    expect(await db.query(sql`select permgraph.check('bob', 'doc', 1) as a, permgraph.check('alice', 'doc', 1) as b`)).toEqual([{ a: false, b: false }]);
  }, 30_000);
});
