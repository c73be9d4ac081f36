// Upgrading a database that is in use: `permgraph migrate` re-creates the
// triggers of nodes and grants, which takes ACCESS EXCLUSIVE locks on both.
// Found by upgrading a release of commit b1d6180 under a load of writers,
// readers and its worker: while migrate waited for a long transaction that
// had read nodes (a worker's batch of 40 s), every write and every check
// queued behind its lock request for as long (23 s, then 45 s), and once it
// had nodes, it asked for grants, which a writer caught half-way (its insert
// into grants waiting for nodes) held: a deadlock, which failed the migrate
// (twice) or the writer's insert (40P01). Here a transaction that read nodes
// stays open while migrate tries, and until a write and a check have ended.
import { describe, expect, it } from 'vitest';
import { EMBEDDED_MAJOR, startCluster } from '../../scripts/lib/postgres-cluster.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import { migrate } from '../../src/migrations/migrate.ts';
import { BEFORE_049, historyMissing, migrateAsAt } from '../helpers/released.ts';
import { earlierFunctionChecksum } from '../helpers/function-versions.ts';
import { createEmptyDatabase } from '../helpers/database.ts';
import { cleanUpAfter } from '../helpers/cleanup.ts';
import { until } from '../helpers/cluster.ts';
import { FAST } from '../helpers/ops.ts';

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

    // A long transaction that has read nodes, as a worker's long batch has:
    // open until the write and the read below have ended (or failed).
    let longOpen = true;
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const held = long.tx(async (tx) => {
      await tx.query(sql`select count(*) from permgraph.nodes`);
      await released;
    }).finally(() => { longOpen = false; });
    // (migrate's: no one else asks for ACCESS EXCLUSIVE on nodes or grants)
    const upgradeLock = async (granted: boolean | null) =>
      (await db.query(sql`select exists (select 1 from pg_locks where relation in ('permgraph.grants'::regclass, 'permgraph.nodes'::regclass) and mode = 'AccessExclusiveLock'
                                         and database = (select oid from pg_database where datname = current_database())
                                         and (${granted}::boolean is null or granted = ${granted}::boolean)) as found`))[0].found === true;
    await until('the long transaction has read nodes', async () =>
      (await db.query(sql`select exists (select 1 from pg_locks where relation = 'permgraph.nodes'::regclass and mode = 'AccessShareLock' and granted
                                         and database = (select oid from pg_database where datname = current_database())) as found`))[0].found === true);
    try {
      const upgrade = migrate(migrating).then((result) => ({ result }), (error: unknown) => ({ error }));
      // Started while migrate holds or waits for its first lock, as a writer
      // that arrives during one of its attempts. (Missing that window makes
      // the write one that arrives between attempts: a weaker test, never a
      // false failure.)
      await until('migrate takes or waits for grants or nodes', () => upgradeLock(null));

      // A writer's transaction: its insert locks grants, then its checks read nodes.
      // And a check that the write does not change (an object's owner is read at
      // check time, so one of doc's would depend on which came first).
      // (whether each ended while the long transaction was still open: queued
      // behind migrate's lock request, it would end only after it; the long
      // transaction waits for both, so the bound below ends such a run)
      type Settled = { value?: unknown; error?: unknown; whileLongOpen: boolean };
      const settled = async (run: () => Promise<unknown>): Promise<Settled> => {
        try {
          return { value: await run(), whileLongOpen: longOpen };
        } catch (error) {
          return { error, whileLongOpen: longOpen };
        }
      };
      let both: Settled[] | undefined;
      void Promise.all([
        settled(() => writing.tx(async (tx) => {
          await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('bob', 'team', 1)`);
          await tx.query(sql`update permgraph.nodes set owner_id = 'other' where id = 'doc'`);
        })),
        settled(async () => (await reading.query(sql`select permgraph.check('alice', 'team', 2) as allowed`))[0].allowed),
      ]).then((results) => (both = results));
      await until('the write and the check end while the long transaction is open', async () => both !== undefined, async () => ({ migrateHoldsItsLock: await upgradeLock(true) }), 60_000);
      release();
      await held;
      const [write, read] = both! as [Settled, Settled];
      const upgraded = await upgrade;

      expect(write).toEqual({ value: undefined, whileLongOpen: true });
      expect(read).toEqual({ value: true, whileLongOpen: true });
      expect(upgraded).toEqual({ result: expect.objectContaining({ applied: expect.arrayContaining(['049_cluster_identity.sql']) }) });
    } finally {
      release();
    }

    await db.query(sql`select permgraph.apply_changes()`);
    expect(await db.query(sql`select * from permgraph.verify()`)).toEqual([]);
    expect(await db.query(sql`select permgraph.check('bob', 'doc', 1) as a, permgraph.check('alice', 'doc', 1) as b`)).toEqual([{ a: false, b: false }]);
  }, 120_000);

  it('an autovacuum of nodes keeps migrate out only until the server cancels it for migrate', async () => {
    // PostgreSQL cancels an autovacuum that holds a lock a backend waits for
    // once that backend has waited deadlock_timeout (1 s), in its deadlock
    // check; migrate's waits of 200 ms never got there, so it gave way for
    // as long as the autovacuum ran (found by review: an autovacuum of nodes
    // slowed down by cost-based delays kept it out for the whole run). A
    // cluster of its own: autovacuum_naptime is the server's.
    const cluster = await startCluster({ major: EMBEDDED_MAJOR, settings: { ...FAST, autovacuum_naptime: '1' } });
    cleanUpAfter(() => cluster.stop());
    const admin = openPool(cluster.url, { poolSize: 2 });
    cleanUpAfter(() => admin.dispose());
    await migrate(admin);
    // Dead rows in nodes (triggers off: nothing captured), vacuumed at once and slowly.
    await admin.tx(async (tx) => {
      await tx.query(sql`set local session_replication_role = replica`);
      await tx.query(sql`insert into permgraph.nodes (id, kind) select 'dead' || i, 'group' from generate_series(1, 10000) i`);
      await tx.query(sql`delete from permgraph.nodes where id like 'dead%'`);
    });
    // An upgrade that re-creates nodes' triggers (140_audit.sql).
    await admin.query(sql`update permgraph.function_files set checksum = ${await earlierFunctionChecksum('140_audit.sql')} where name = '140_audit.sql'`);
    await admin.query(sql`
      alter table permgraph.nodes set (autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0,
        autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1, autovacuum_analyze_threshold = 2000000000)`);
    const vacuumed = async () => (await admin.query(sql`select autovacuum_count from pg_stat_user_tables where relid = 'permgraph.nodes'::regclass`))[0].autovacuum_count;
    await until('an autovacuum worker holds a lock on nodes', async () => (await admin.query(sql`
      select exists (select 1 from pg_locks l join pg_stat_activity a on a.pid = l.pid
                     where l.relation = 'permgraph.nodes'::regclass and a.backend_type = 'autovacuum worker') as held`))[0].held, async () => '', 60_000);

    let migrated: { result?: unknown; error?: unknown } | undefined;
    void migrate(admin).then((result) => (migrated = { result }), (error: unknown) => (migrated = { error }));
    // (whichever comes first: the autovacuum completing, a minute at its pace, or migrate)
    await until('migrate ends or the autovacuum of nodes completes', async () => migrated !== undefined || Number(await vacuumed()) > 0, async () => '', 180_000);
    expect(Number(await vacuumed()), 'autovacuums of nodes completed before migrate ended').toBe(0);
    expect(migrated).toEqual({ result: { applied: [], functions: ['140_audit.sql'], rights: [] } });
  }, 300_000);
});
