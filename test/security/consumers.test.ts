// A reader's change-stream calls never make the worker's batches fail.
// register_consumer and drop_consumer are open to every permgraph role and
// take the applier lock, so they run between batches; a batch whose
// snapshot is older than such a call (it took it, then waited for the lock)
// used to fail at its end with a serialization failure, on a row the call
// had updated. A reader calling them back to back from three connections,
// each a short transaction (no open transaction for a timeout to end), kept
// every batch from completing. Through real login roles: the reader's calls
// commit while the worker login's repeatable-read batch waits, and the
// batch must commit, exact, with the events a consumer registered meanwhile
// needs.
import { describe, expect, it } from 'vitest';
import { sql, type ConnectionPool } from '../../src/db/pool.ts';
import { applyChanges } from '../../src/engine/apply.ts';
import { computePermissions, type RefGraph } from '../reference/model.ts';
import { g, grant, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { loadGraph, readPermissions } from '../helpers/graph.ts';
import { createLogin } from '../helpers/logins.ts';
import { afterStaleSnapshot } from '../helpers/stale-snapshot.ts';

const graph: RefGraph = {
  nodes: [u('alice'), u('bob'), g('eng'), g('ops')],
  grants: [grant('alice', 2, 'eng')],
};

describe("a reader's consumer calls and the worker's batches", async () => {
  const { db: owner, url } = await createTestDatabase();
  await loadGraph(owner, graph);
  await owner.query(sql`select permgraph.refresh()`);
  const reader = await createLogin(owner, url, 'streamreader', 'permgraph_reader');
  const writer = await createLogin(owner, url, 'streamwriter', 'permgraph_writer');
  const worker = await createLogin(owner, url, 'streamworker', 'permgraph_worker');
  const grants = [...graph.grants];

  /** A writer's grant, then the worker's batch, its snapshot taken before the reader's `calls` commit. */
  async function batchAfter(tail: string, head: string, calls: (db: ConnectionPool) => Promise<unknown>): Promise<unknown> {
    await writer.db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values (${tail}, ${head}, 1)`);
    grants.push(grant(tail, 1, head));
    return afterStaleSnapshot(worker.db, sql`select permgraph.apply_changes(p_local_pairs => 0) as result`, () => calls(reader.db));
  }

  async function expectModel(): Promise<void> {
    expect(await readPermissions(owner)).toEqual(computePermissions({ nodes: graph.nodes, grants }));
  }

  it('a drop of a consumer nobody registered, and a registration and drop of its own, fail no batch', async () => {
    const dropNothing = batchAfter('bob', 'eng', (db) => db.query(sql`select permgraph.drop_consumer('nothing-here')`));
    await expect(dropNothing).resolves.toEqual([{ result: expect.objectContaining({ mode: 'incremental' }) }]);
    const registerAndDrop = batchAfter('bob', 'ops', async (db) => {
      await db.query(sql`select permgraph.register_consumer('readers-own')`);
      await db.query(sql`select permgraph.drop_consumer('readers-own')`);
    });
    await expect(registerAndDrop).resolves.toEqual([{ result: expect.objectContaining({ mode: 'incremental' }) }]);
    await expectModel();
    // (the events recorded for the consumer dropped meanwhile go with the next registration)
    await reader.db.query(sql`select permgraph.register_consumer('readers-own')`);
    expect(await owner.query(sql`select count(*)::int as n from permgraph.permission_changes`)).toEqual([{ n: 0 }]);
    await reader.db.query(sql`select permgraph.drop_consumer('readers-own')`);
  });

  it('a consumer registered meanwhile, and kept, gets the events of the batch', async () => {
    let registered = 0;
    const batch = batchAfter('alice', 'ops', async (db) => {
      [{ registered }] = await db.query(sql`select permgraph.register_consumer('reader-feed') as registered`);
    });
    await expect(batch).resolves.toEqual([{ result: expect.objectContaining({ mode: 'incremental' }) }]);
    const events = await reader.db.query(sql`select user_id, target_id, new_level from permgraph.read_changes('reader-feed')`);
    expect(events).toContainEqual({ user_id: 'alice', target_id: 'ops', new_level: 1 });
    expect(Number(registered)).toBeGreaterThanOrEqual(0);
    await expectModel();
    // With no consumer again, a batch records nothing.
    await reader.db.query(sql`select permgraph.drop_consumer('reader-feed')`);
    await writer.db.query(sql`delete from permgraph.grants where tail_id = 'alice' and head_id = 'ops'`);
    grants.splice(grants.findIndex((x) => x.tailId === 'alice' && x.headId === 'ops'), 1);
    await applyChanges(worker.db);
    expect(await owner.query(sql`select count(*)::int as n from permgraph.permission_changes`)).toEqual([{ n: 0 }]);
    await expectModel();
  });
});
