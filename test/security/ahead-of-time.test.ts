// A batch computed for a later moment leaves out the rows that expire by
// then, though they are still valid, and later batches recompute only what
// changes or expires, so those rows stay out until a refresh(). A review
// found that a worker login could remove access that way: the moment is now
// the schema owner's to move ahead (a tool for tests), and a worker login is
// refused, through the SQL and through the library (docs/security.md).
import { describe, expect, it } from 'vitest';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { applyJobChunk } from '../../src/engine/long-job.ts';
import { sqlStateOf } from '../../src/errors.ts';
import { sql } from '../../src/db/pool.ts';
import { computePermissions, type RefGraph } from '../reference/model.ts';
import { expiring, g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { loadGraph, readPermissions } from '../helpers/graph.ts';
import { createLogin } from '../helpers/logins.ts';
import { failureOf } from '../helpers/failure.ts';

const DAY = 24 * 3600 * 1000;
const CENTURY = 100 * 365 * DAY;

describe('computing the table ahead of the clock', async () => {
  const { db: owner, url } = await createTestDatabase();
  const graph: RefGraph = {
    nodes: [u('alice'), u('bob'), g('eng'), g('ops'), o('doc', 'eng')],
    grants: [expiring('alice', 2, 'eng', new Date(Date.now() + 30 * DAY)), grant('bob', 1, 'eng')],
  };
  await loadGraph(owner, graph);
  await refresh(owner);
  const worker = await createLogin(owner, url, 'ahead_worker', 'permgraph_worker');
  const writer = await createLogin(owner, url, 'ahead_writer', 'permgraph_writer');

  it('a worker login is refused, by every entry point that takes the moment, and the table keeps every valid row', async () => {
    const later = new Date(Date.now() + CENTURY);
    const attempts = [
      () => worker.db.query(sql`select permgraph.apply_changes(p_force_full => true, p_at => now() + interval '100 years')`),
      () => worker.db.query(sql`select permgraph.apply_job_chunk(p_at => now() + interval '100 years')`),
      () => applyChanges(worker.db, { at: later }),
      () => refresh(worker.db, { at: later }),
      () => applyJobChunk(worker.db, { at: later }),
    ];
    for (const attempt of attempts) {
      const error = await failureOf(attempt());
      expect(sqlStateOf(error)).toBe('42501');
      expect(error.message).toMatch(/is ahead of the clock; only the owner of schema permgraph may compute the table for a later moment/);
    }
    expect(await readPermissions(owner)).toEqual(computePermissions(graph));

    // Its ordinary work goes on: an unrelated change applied, alice's rows still there.
    await writer.db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('bob', 'ops', 2)`);
    await applyChanges(worker.db);
    const withOps: RefGraph = { ...graph, grants: [...graph.grants, grant('bob', 2, 'ops')] };
    expect(await readPermissions(owner)).toEqual(computePermissions(withOps));
    expect(await worker.db.query(sql`select permgraph.check('alice', 'doc', 2) as allowed`)).toEqual([{ allowed: true }]);
    // (the moment of its own transaction is not ahead of the clock)
    await worker.db.query(sql`select permgraph.apply_changes(p_at => now())`);
  });

  it("the schema's owner may, and the rows left out stay out until refresh() puts them back", async () => {
    const withOps: RefGraph = { ...graph, grants: [...graph.grants, grant('bob', 2, 'ops')] };
    const later = new Date(Date.now() + CENTURY);
    await refresh(owner, { at: later });
    expect(await readPermissions(owner)).toEqual(computePermissions(withOps, later));
    expect(await owner.query(sql`select permgraph.check('alice', 'doc', 1) as allowed`)).toEqual([{ allowed: false }]);
    // what the worker's next batch does not undo, and why only the owner may
    await writer.db.query(sql`delete from permgraph.grants where tail_id = 'bob' and head_id = 'ops'`);
    await applyChanges(worker.db);
    expect(await readPermissions(owner)).toEqual(computePermissions(graph, later));
    await refresh(worker.db);
    expect(await readPermissions(owner)).toEqual(computePermissions(graph));
  });
});
