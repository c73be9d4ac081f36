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

/** How long a write or a check may wait for an upgrade that itself waits. */
const BOUNDED_MS = 1500;

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
    const held = long.tx(async (tx) => {
      await tx.query(sql`select count(*) from permgraph.nodes`);
      await sleep(3000);
    });
    await sleep(200);
    const upgrade = migrate(migrating).then((result) => ({ result }), (error: unknown) => ({ error }));
    await sleep(800);

    // A writer's transaction: its insert locks grants, then its checks read nodes.
    const timed = async <T>(run: () => Promise<T>) => {
      const started = Date.now();
      try {
        return { value: await run(), ms: Date.now() - started };
      } catch (error) {
        return { error, ms: Date.now() - started };
      }
    };
    const [write, read] = await Promise.all([
      timed(() => writing.tx(async (tx) => {
        await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('bob', 'team', 1)`);
        await tx.query(sql`update permgraph.nodes set owner_id = 'other' where id = 'doc'`);
      })),
      timed(async () => (await reading.query(sql`select permgraph.check('alice', 'doc', 2) as allowed`))[0].allowed),
    ]);
    await held;
    const upgraded = await upgrade;

    expect(write).toEqual({ value: undefined, ms: expect.any(Number) });
    expect(read).toEqual({ value: true, ms: expect.any(Number) });
    expect(upgraded).toEqual({ result: expect.objectContaining({ applied: expect.arrayContaining(['049_cluster_identity.sql']) }) });
    expect(write.ms).toBeLessThan(BOUNDED_MS);
    expect(read.ms).toBeLessThan(BOUNDED_MS);

    await db.query(sql`select permgraph.apply_changes()`);
    expect(await db.query(sql`select * from permgraph.verify()`)).toEqual([]);
    expect(await db.query(sql`select permgraph.check('bob', 'doc', 1) as a, permgraph.check('alice', 'doc', 1) as b`)).toEqual([{ a: false, b: false }]);
  }, 30_000);
});
