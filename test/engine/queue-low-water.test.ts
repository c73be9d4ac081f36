// The change queue's low-water mark (sql/functions/045_batch_split.sql): a
// batch that applies the whole visible queue records the oldest transaction
// its snapshot saw running, and later batches read the queue from there by
// its xact_id index. Checked two ways: a writer whose transaction was
// running when a batch took its snapshot, and commits after it, is applied
// by the next batch on every path (against the reference model); and a
// batch after many applied changes (dead rows, autovacuum off) does not
// read them, nor a backlog more often than once.
import { describe, expect, it } from 'vitest';
import type { SQLQuery } from '@databases/pg';
import { sql } from '../../src/db/pool.ts';
import { applyChanges, applyChangesOnSession, refresh, resetWorkerSession, useWorkerSession } from '../../src/engine/apply.ts';
import { applyJobChunk } from '../../src/engine/long-job.ts';
import * as model from '../reference/model.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { countPendingChanges, loadGraph, readPermissions } from '../helpers/graph.ts';
import { GraphState, grantKey } from '../helpers/mutations.ts';

describe('the change queue is read from its low-water mark', async () => {
  const { db } = await createTestDatabase();

  /** Each way a batch is applied; inTransaction: its statement, run inside a caller's transaction. */
  const paths: [string, () => Promise<unknown>, SQLQuery][] = [
    ['applyChanges(), the one-statement path', () => applyChanges(db), sql`select permgraph.apply_local_changes()`],
    ['applyChanges(), the ordinary path', () => applyChanges(db, { localPairs: 0 }), sql`select permgraph.apply_changes(p_local_pairs => 0)`],
    ['a worker session', () => db.task(async (conn) => {
      await useWorkerSession(conn);
      try {
        return await applyChangesOnSession(conn);
      } finally {
        await resetWorkerSession(conn);
      }
    }), sql`set local permgraph.split_mixed_batches = on; select permgraph.apply_changes()`],
    ['refresh()', () => refresh(db), sql`select permgraph.refresh()`],
  ];

  it.each(paths)('%s: a writer running when a batch took its snapshot, committed after it, is applied by the next batch', async (_, apply) => {
    const state = new GraphState({ nodes: [u('alice'), u('bob'), g('eng'), o('doc')], grants: [grant('alice', 2, 'eng'), grant('eng', 2, 'doc')] });
    await loadGraph(db, state.snapshot());
    await refresh(db);
    const [{ before }] = await db.query(sql`select coalesce(queue_low_water, '0')::text as before from permgraph.applier_state`);
    const writerXact = await db.tx(async (writer) => {
      // bob joins eng in a transaction that stays open across the batch
      await writer.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('bob', 'eng', 1)`);
      const [{ xact }] = await writer.query(sql`select pg_current_xact_id()::text as xact`);
      // alice leaves eng, committed: the batch applies it, and cannot see bob's change
      await db.query(sql`delete from permgraph.grants where tail_id = 'alice' and head_id = 'eng'`);
      await apply();
      return xact as string;
    });
    state.grants.delete(grantKey(grant('alice', 2, 'eng')));
    state.grants.set(grantKey(grant('bob', 1, 'eng')), grant('bob', 1, 'eng'));
    // the batch raised the mark, and kept it at or below the running writer
    const [{ mark }] = await db.query(sql`select queue_low_water::text as mark from permgraph.applier_state`);
    expect(BigInt(mark)).toBeGreaterThan(BigInt(before));
    expect(BigInt(mark)).toBeLessThanOrEqual(BigInt(writerXact));
    await apply();
    expect(await countPendingChanges(db)).toBe(0);
    expect(await readPermissions(db)).toEqual(model.computePermissions(state.snapshot()));
  });

  it.each(paths.slice(0, 3))('%s: a batch does not read the change rows earlier batches deleted', async (_, __, inTransaction) => {
    const objects = Array.from({ length: 3000 }, (_, i) => o(`d${i}`));
    const state = new GraphState({ nodes: [u('carol'), u('dan'), g('ops'), o('log'), ...objects], grants: [grant('ops', 1, 'log')] });
    await loadGraph(db, state.snapshot());
    await refresh(db);
    await db.query(sql`alter table permgraph.changes set (autovacuum_enabled = off)`);
    try {
      // 3,000 changes applied: 3,000 dead rows that no vacuum reclaims
      await db.query(sql`
        insert into permgraph.grants (tail_id, head_id, level)
        select 'carol', 'd' || i, 1 from generate_series(0, 2999) i`);
      await applyChanges(db);
      const [{ pages }] = await db.query(sql`select pg_relation_size('permgraph.changes') / current_setting('block_size')::int as pages`);
      expect(Number(pages)).toBeGreaterThan(20);
      // one more change, applied with the heap blocks of the queue counted
      await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('dan', 'ops', 1)`);
      // (in a transaction, so that the blocks it fetched can be read before
      // commit; the counter may still hold the connection's earlier ones)
      const blocks = await db.tx(async (tx) => {
        const fetched = async () =>
          Number((await tx.query(sql`select pg_stat_get_xact_blocks_fetched('permgraph.changes'::regclass) as n`))[0].n);
        const before = await fetched();
        await tx.query(inTransaction);
        return (await fetched()) - before;
      });
      expect(await countPendingChanges(db)).toBe(0);
      // (every read of the queue would fetch all of its pages, several times per batch)
      expect(blocks).toBeLessThan(Number(pages));
      for (const x of objects) state.grants.set(grantKey(grant('carol', 1, x.id)), grant('carol', 1, x.id));
      state.grants.set(grantKey(grant('dan', 1, 'ops')), grant('dan', 1, 'ops'));
      expect(await readPermissions(db)).toEqual(model.computePermissions(state.snapshot()));
    } finally {
      await db.query(sql`alter table permgraph.changes reset (autovacuum_enabled)`);
    }
  });

  it("a backlog a long job holds is hidden from batches by an inlined filter, and their reads start at its snapshot's xmin", async () => {
    await loadGraph(db, { nodes: [u('erin'), ...Array.from({ length: 3000 }, (_, i) => o(`f${i}`))], grants: [] });
    await refresh(db);
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) select 'erin', 'f' || i, 1 from generate_series(0, 2999) i`);
    const [{ pages }] = await db.query(sql`select pg_relation_size('permgraph.changes') / current_setting('block_size')::int as pages`);
    expect(Number(pages)).toBeGreaterThan(20);
    const { calls, blocks } = await db.tx(async (tx) => {
      await tx.query(sql`set local track_functions = 'all'`);
      const [{ pending, queued }] = await tx.query(sql`
        select (select count(*) from permgraph._batch_changes) as pending,
               (select count(*) from permgraph._unapplied_changes where held_by = 'queue') as queued`);
      expect([Number(pending), Number(queued)]).toEqual([3000, 3000]);
      // a backlog held, as a job that took it records it: the snapshot that saw every row
      await tx.query(sql`insert into permgraph.long_job (chunk_pairs, backlog_snapshot) values (1, pg_current_snapshot())`);
      const fetched = async () => Number((await tx.query(sql`select pg_stat_get_xact_blocks_fetched('permgraph.changes'::regclass) as n`))[0].n);
      const before = await fetched();
      const [{ hidden }] = await tx.query(sql`select count(*) as hidden from permgraph._batch_changes`);
      const blocks = (await fetched()) - before;
      expect(Number(hidden)).toBe(0);
      const [{ held }] = await tx.query(sql`select count(*) as held from permgraph._unapplied_changes where held_by = 'backlog'`);
      expect(Number(held)).toBe(3000);
      const calls = await tx.query(sql`select funcname, calls from pg_stat_xact_user_functions where funcname = '_in_backlog'`);
      return { calls, blocks };
    });
    expect(calls, 'no call of _in_backlog per row').toEqual([]);
    // (from the mark, below the backlog, the read would fetch every page of it)
    expect(blocks).toBeLessThan(Number(pages));
    await db.query(sql`delete from permgraph.long_job`);
    await refresh(db);
  });

  it('a backlog is read whole once: the local path counts no further than it takes, and the batch that takes the backlog reads it once more', async () => {
    const objects = Array.from({ length: 3000 }, (_, i) => o(`h${i}`));
    const state = new GraphState({ nodes: [u('gus'), ...objects], grants: [] });
    await loadGraph(db, state.snapshot());
    await refresh(db);
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) select 'gus', 'h' || i, 1 from generate_series(0, 2999) i`);
    for (const x of objects) state.grants.set(grantKey(grant('gus', 1, x.id)), grant('gus', 1, x.id));
    const [{ pages }] = await db.query(sql`select pg_relation_size('permgraph.changes') / current_setting('block_size')::int as pages`);
    expect(Number(pages)).toBeGreaterThan(20);
    // As a worker session applies: the local path first, then the batch.
    const { local, batch, blocks } = await db.tx(async (tx) => {
      await tx.query(sql`set local permgraph.split_mixed_batches = on`);
      const fetched = async () => Number((await tx.query(sql`select pg_stat_get_xact_blocks_fetched('permgraph.changes'::regclass) as n`))[0].n);
      const start = await fetched();
      const [{ local }] = await tx.query(sql`select permgraph.apply_local_changes(p_max_changes => 100, p_chunk_pairs => 1000) as local`);
      const afterLocal = await fetched();
      const [{ batch }] = await tx.query(sql`select permgraph.apply_changes(p_max_changes => 100, p_chunk_pairs => 1000) as batch`);
      return { local, batch, blocks: [afterLocal - start, (await fetched()) - afterLocal] };
    });
    expect(local).toBeNull();
    expect(batch).toMatchObject({ changes: 3000, to_long_job: 3000, long_job_active: true });
    // (counting the whole queue reads every page of it, each time)
    expect(blocks[0], 'blocks the local path read').toBeLessThan(Number(pages) / 4);
    expect(blocks[1], 'blocks the batch read').toBeLessThan(Number(pages) * 1.5);
    for (let chunks = 0; !(await applyJobChunk(db)).finished; chunks++) expect(chunks).toBeLessThan(20);
    expect(await countPendingChanges(db)).toBe(0);
    expect(await readPermissions(db)).toEqual(model.computePermissions(state.snapshot()));
  });
});
