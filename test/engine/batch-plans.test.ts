// A batch's work follows its region, not the graph (issue 12: "a change
// costs what its rows cost"). Plans of every statement of apply_changes are
// captured with auto_explain (row counts, not times) on a graph far larger
// than the batches' regions, where each plan shape that once made batches
// slow would handle tens of thousands of rows:
//   * the semi-naive walk's "does this path raise the stored row" probe, run
//     as an anti-join, read every row of a large group's target to find one;
//   * the region build scanned the batch's removed edges at every walk step
//     (quadratic in a batch of removals);
//   * a walk step flattened into a join hashed all of edges at every step.
// Each result is checked against the reference model too.
import { describe, expect, it } from 'vitest';
import { sql } from '../../src/db/pool.ts';
import { SPLIT_MIXED_BATCHES_SETTING } from '../../src/engine/apply.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { insertGrants, loadGraph, readPermissions } from '../helpers/graph.ts';
import { type CapturedPlan, capturePlans, describeQuery, heaviest } from '../helpers/plans.ts';
import * as model from '../reference/model.ts';
import type { RefGrant, RefGraph } from '../reference/model.ts';

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/**
 * A big group (4,000 read members, 10 objects) that team t reaches, team t
 * with 5 members, 200 small groups of 10 members owning an object each, and
 * 20 users in nothing yet: about 6,000 edges and 50,000 rows.
 */
function graph(): RefGraph {
  return {
    nodes: [
      g('big'), g('t'),
      ...range(10).map((i) => o(`big-o${i}`, 'big')),
      ...range(4000).map((i) => u(`m${i}`)),
      ...range(5).map((i) => u(`t-m${i}`)),
      ...range(200).flatMap((i) => [g(`b${i}`), o(`b${i}-o`, `b${i}`), ...range(10).map((j) => u(`b${i}-m${j}`))]),
      ...range(20).map((i) => u(`x${i}`)),
    ],
    grants: [
      grant('t', 2, 'big'),
      ...range(4000).map((i) => grant(`m${i}`, 1, 'big')),
      ...range(5).map((i) => grant(`t-m${i}`, 2, 't')),
      ...range(200).flatMap((i) => range(10).map((j) => grant(`b${i}-m${j}`, 1, `b${i}`))),
    ],
  };
}

type TestDb = Awaited<ReturnType<typeof createTestDatabase>>['db'];

interface Batch {
  changes: number;
  region_pairs: number;
  inserted: number;
  updated: number;
  deleted: number;
  delta: boolean;
}

/** A test database holding `graph`, its table refreshed and its statistics taken. */
async function refreshedDatabase(graph: RefGraph) {
  const { db, url } = await createTestDatabase();
  await loadGraph(db, graph);
  await db.query(sql`select permgraph.refresh()`);
  await db.query(sql`analyze permgraph.edges; analyze permgraph.permissions; analyze permgraph.nodes; analyze permgraph.changes`);
  return { db, url };
}

/**
 * Writes a change, applies it under auto_explain (apply_changes in a
 * REPEATABLE READ transaction, as the worker does), checks the table against
 * the model of `next`, and returns the batch and its heaviest plan node.
 */
async function applyTracedOn(db: TestDb, url: string, write: () => Promise<unknown>, next: RefGraph) {
  await write();
  let batch: Batch | undefined;
  const plans = await capturePlans(url, async (client) => {
    await client.query("select set_config($1, 'on', false)", [SPLIT_MIXED_BATCHES_SETTING]); // the worker's session
    await client.query('begin isolation level repeatable read');
    batch = (await client.query('select permgraph.apply_changes() as r')).rows[0].r as Batch;
    await client.query('commit');
  });
  expect(await readPermissions(db)).toEqual(model.computePermissions(next));
  const nodes = plans.map(({ query, plan }) => ({ query, ...heaviest(plan) })).sort((a, b) => b.rows - a.rows);
  return { batch: batch!, heaviest: nodes[0]! };
}

describe('a batch handles rows in proportion to its region, not to the graph', async () => {
  let current = graph();
  const { db, url } = await refreshedDatabase(current);

  async function applyTraced(write: () => Promise<unknown>, next: RefGraph) {
    const traced = await applyTracedOn(db, url, write, next);
    current = next;
    return traced;
  }

  /** Work allowed: a few times what the batch reads and writes, plus a constant; the graph is ~50,000 rows. */
  const allowed = (b: Batch) => 10 * (b.changes + b.region_pairs + b.inserted + b.updated + b.deleted) + 2000;

  /** Applies batches until none is pending, each in its own transaction, tracing every statement; appends them to `batches`. */
  async function applyAllTraced(batches: Batch[]): Promise<CapturedPlan[]> {
    return capturePlans(url, async (client) => {
      await client.query("select set_config($1, 'on', false)", [SPLIT_MIXED_BATCHES_SETTING]); // the worker's session: it splits a mixed queue
      for (;;) {
        await client.query('begin isolation level repeatable read');
        const r = (await client.query('select permgraph.apply_changes() as r')).rows[0].r as Batch & { mode: string };
        await client.query('commit');
        if (r.mode === 'none') break;
        batches.push(r);
      }
    });
  }

  it('additions (semi-naive): five users join a team that reaches a group of 4,000 members', async () => {
    const added: RefGrant[] = range(5).map((i) => grant(`x${i}`, i === 0 ? 3 : 1, 't'));
    const { batch, heaviest: h } = await applyTraced(
      () => insertGrants(db, added),
      { ...current, grants: [...current.grants, ...added] },
    );
    expect(batch).toMatchObject({ delta: true, changes: 5 });
    expect(h.rows, `${h.type} ${h.relation ?? ''} in: ${describeQuery(h.query)}`).toBeLessThanOrEqual(allowed(batch));
  });

  it('400 removed memberships in one batch: the region build is not quadratic in them', async () => {
    const removed = new Set(range(200).flatMap((i) => [`b${i}-m0`, `b${i}-m1`]));
    const { batch, heaviest: h } = await applyTraced(
      () => db.query(sql`delete from permgraph.grants where tail_id = any(${[...removed]}::text[])`).then(() => {}),
      { ...current, grants: current.grants.filter((x) => !removed.has(x.tailId)) },
    );
    expect(batch).toMatchObject({ delta: false, changes: 400, deleted: 400 });
    expect(h.rows, `${h.type} ${h.relation ?? ''} in: ${describeQuery(h.query)}`).toBeLessThanOrEqual(allowed(batch));
  });

  it('a split queue of 400 removals and 105 additions, with the statistics of an empty queue: its end is not quadratic in it', async () => {
    // (the end of a split batch deleted its part by a semi-join of changes with itself, planned from
    // the queue's statistics: a nested loop when they say it is empty; bench/FINDINGS.md, finding 23)
    await db.query(sql`analyze permgraph.changes`);
    const removed = new Set(range(200).flatMap((i) => [`b${i}-m2`, `b${i}-m3`]));
    const added: RefGrant[] = range(15).flatMap((i) => range(7).map((j) => grant(`x${5 + i}`, 1, `b${j}`)));
    await db.query(sql`delete from permgraph.grants where tail_id = any(${[...removed]}::text[])`);
    await insertGrants(db, added);
    const batches: Batch[] = [];
    const plans = await applyAllTraced(batches);
    current = { ...current, grants: [...current.grants.filter((x) => !removed.has(x.tailId)), ...added] };
    expect(await readPermissions(db)).toEqual(model.computePermissions(current));
    expect(batches.map((b) => [b.changes, b.delta])).toEqual([[400, false], [105, true]]);
    const budget = Math.max(...batches.map(allowed));
    const deletes = plans.filter((p) => /delete from permgraph\.(changes|_batch_changes)/.test(p.query)).map((p) => ({ query: p.query, ...heaviest(p.plan) }));
    expect(deletes.length).toBeGreaterThanOrEqual(1);
    for (const h of deletes) expect(h.rows, `${h.type} ${h.relation ?? ''} in: ${describeQuery(h.query)}`).toBeLessThanOrEqual(budget);
  });

  it('queues of every kind of change, planned from the statistics of an empty queue: no statement is quadratic in them', async () => {
    // (autovacuum analyzes the queue between batches, usually while it is empty: every statement that
    // reads changes must keep its work to its batch's size then; finding 23 was one that did not)
    await db.query(sql`analyze permgraph.changes`);
    const joined: RefGrant[] = range(200).flatMap((i) => range(4).map((j) => grant(`b${i}-m${j}`, 1, `b${(i + 1) % 200}`)));
    const left = new Set(range(200).flatMap((i) => [7, 8].map((j) => `b${i}-m${j}`)));
    const raised = new Set(range(200).map((i) => `b${i}-m6`));
    const moved = new Set(range(40).map((i) => `b${i}`));
    const trashed = new Set(range(20).map((i) => `b${40 + i}`));
    const gone = new Set(range(20).map((i) => `b${100 + i}-m5`));
    const trashAt = new Date(Date.now() - 86_400_000);
    const batches: Batch[] = [];
    const plans: CapturedPlan[] = [];
    // Memberships joined, left and raised: a mixed queue, split into its parts.
    await insertGrants(db, joined);
    await db.query(sql`delete from permgraph.grants where tail_id = any(${[...left]}::text[])`);
    await db.query(sql`update permgraph.grants set level = 2 where tail_id = any(${[...raised]}::text[])`);
    plans.push(...(await applyAllTraced(batches)));
    expect(batches.map((b) => b.delta)).toEqual([false, true]);  // removals, then additions
    // Groups moved and trashed, users deleted, more memberships left: one batch, nothing split.
    await db.query(sql`delete from permgraph.grants where tail_id = any(${range(200).map((i) => `b${i}-m9`)}::text[])`);
    await db.query(sql`update permgraph.nodes set owner_id = 't' where id = any(${[...moved]}::text[])`);
    await db.query(sql`update permgraph.nodes set trash_at = ${trashAt} where id = any(${[...trashed]}::text[])`);
    await db.query(sql`delete from permgraph.nodes where id = any(${[...gone]}::text[])`);
    plans.push(...(await applyAllTraced(batches)));
    expect(batches.length).toBe(3);
    current = {
      nodes: current.nodes
        .filter((n) => !gone.has(n.id))
        .map((n) => (moved.has(n.id) ? { ...n, ownerId: 't' } : trashed.has(n.id) ? { ...n, trashAt } : n)),
      grants: [
        ...current.grants
          .filter((x) => !left.has(x.tailId) && !x.tailId.endsWith('-m9') && !gone.has(x.tailId))
          .map((x) => (raised.has(x.tailId) ? { ...x, level: 2 as const } : x)),
        ...joined.filter((x) => !gone.has(x.tailId)),
      ],
    };
    expect(await readPermissions(db)).toEqual(model.computePermissions(current));
    const budget = Math.max(...batches.map(allowed));
    const h = plans.map(({ query, plan }) => ({ query, ...heaviest(plan) })).sort((a, b) => b.rows - a.rows)[0]!;
    expect(h.rows, `${h.type} ${h.relation ?? ''} in: ${describeQuery(h.query)}`).toBeLessThanOrEqual(budget);
  });

  it('a team leaves the big group: the walks probe edges by key, never scan them', async () => {
    const { batch, heaviest: h } = await applyTraced(
      () => db.query(sql`delete from permgraph.grants where tail_id = 't' and head_id = 'big'`).then(() => {}),
      { ...current, grants: current.grants.filter((x) => !(x.tailId === 't' && x.headId === 'big')) },
    );
    expect(batch).toMatchObject({ delta: false, changes: 1 });
    expect(batch.deleted).toBeGreaterThan(0);
    expect(h.rows, `${h.type} ${h.relation ?? ''} in: ${describeQuery(h.query)}`).toBeLessThanOrEqual(allowed(batch));
  });
});

// A batch of a few changes is applied by one statement (_apply_local_batch,
// 055_local_change.sql), whose function sets plan_cache_mode =
// force_generic_plan, a setting its callees inherit. A batch that moves a
// group refreshes trash for the subtree from inside it (030_trash.sql), and
// the generic plan of effective_group_trash planned its whole-graph branch
// (the one a full recomputation takes) with a Gather: a Gather starts its
// workers before the branch's one-time filter can say there is nothing to
// do, ~4-5 ms per batch on org large for a batch whose own statement took
// ~1 ms (bench/FINDINGS.md, finding 17). Here the planner is told that
// parallel plans cost nothing, so any statement of the local batch that can
// be planned parallel is.
describe('a batch that moves a group starts no parallel workers', async () => {
  let current: RefGraph = {
    nodes: [g('top'), g('other'), g('sub', 'top'), o('sub-o', 'sub'), ...range(300).map((i) => u(`m${i}`))],
    grants: [...range(300).map((i) => grant(`m${i}`, 1, i % 2 ? 'top' : 'other'))],
  };
  const { db, url } = await refreshedDatabase(current);

  it('the move and its trash refresh plan no Gather, and the table equals the model', async () => {
    await db.query(sql`update permgraph.nodes set owner_id = 'other' where id = 'sub'`);
    const plans = await capturePlans(url, async (client) => {
      await client.query(`set parallel_setup_cost = 0; set parallel_tuple_cost = 0; set min_parallel_table_scan_size = 0;
                          set min_parallel_index_scan_size = 0`);
      await client.query('begin isolation level repeatable read');
      await client.query('select permgraph.apply_changes()');
      await client.query('commit');
    });
    current = { ...current, nodes: current.nodes.map((n) => (n.id === 'sub' ? { ...n, ownerId: 'other' } : n)) };
    expect(await readPermissions(db)).toEqual(model.computePermissions(current));
    // the local statement and everything it calls (the trash refresh)
    const local = plans.filter((p) => /with recursive pending as|subtree\(id\)|chain\(group_id|with fresh as materialized/.test(p.query));
    expect(local.length).toBeGreaterThanOrEqual(4);
    const parallel = local.filter((p) => JSON.stringify(p.plan).includes('"Gather'));
    expect(parallel.map((p) => describeQuery(p.query))).toEqual([]);
  });
});

// Small graphs must not be slower per change than large ones (issue 12).
// The local statements (055_local_change.sql, and the semi-naive one in
// 050_region.sql) read every key they need by its index; the planner,
// though, chooses between an index and a sequential scan from the
// statistics, and on a small graph whose groups each own 50 nodes a probe
// of edges by tail looked cheaper as a read of all of edges (~1% of it per
// key), so every step of every walk read the whole table (bench/FINDINGS.md,
// finding 27). Here: 6,000 projects, each owning 50, changed through each
// path (the region statement, the semi-naive one, the ordinary path).
describe('on a small graph of groups that own many nodes, a local batch still reads by key', async () => {
  const projects = range(6000).map((i) => g(`p${i}`, i === 0 ? null : `p${Math.floor((i - 1) / 50)}`));
  let current: RefGraph = {
    nodes: [...projects, ...range(5).map((i) => u(`m${i}`))],
    grants: range(5).map((i) => grant(`m${i}`, 1, 'p0')),
  };
  const { db, url } = await refreshedDatabase(current);

  async function applyTraced(write: () => Promise<unknown>, next: RefGraph) {
    const traced = await applyTracedOn(db, url, write, next);
    current = next;
    return traced;
  }

  it('a project moved to another owner (the region statement, then the trash refresh)', async () => {
    const { batch, heaviest: h } = await applyTraced(
      () => db.query(sql`update permgraph.nodes set owner_id = 'p1' where id = 'p5999'`),
      { ...current, nodes: current.nodes.map((n) => (n.id === 'p5999' ? { ...n, ownerId: 'p1' } : n)) },
    );
    expect(batch).toMatchObject({ delta: false });
    expect(h.rows, `${h.type} ${h.relation ?? ''} in: ${describeQuery(h.query)}`).toBeLessThanOrEqual(2000);
  });

  it('a project created and a user granted a project (the semi-naive statement)', async () => {
    const created = g('p-new', 'p7');
    const granted = grant('m0', 2, 'p9');
    const { batch, heaviest: h } = await applyTraced(
      async () => {
        await db.query(sql`insert into permgraph.nodes (id, kind, owner_id) values ('p-new', 'group', 'p7')`);
        await insertGrants(db, [granted]);
      },
      { nodes: [...current.nodes, created], grants: [...current.grants, granted] },
    );
    expect(batch).toMatchObject({ delta: true });
    expect(h.rows, `${h.type} ${h.relation ?? ''} in: ${describeQuery(h.query)}`).toBeLessThanOrEqual(2000);
  });

  it('100 projects moved in one batch (the ordinary path)', async () => {
    const moved = new Set(range(100).map((i) => `p${5000 + i}`));
    const { batch, heaviest: h } = await applyTraced(
      () => db.query(sql`update permgraph.nodes set owner_id = 'p2' where id = any(${[...moved]}::text[])`),
      { ...current, nodes: current.nodes.map((n) => (moved.has(n.id) ? { ...n, ownerId: 'p2' } : n)) },
    );
    expect(batch).toMatchObject({ delta: false });
    expect(h.rows, `${h.type} ${h.relation ?? ''} in: ${describeQuery(h.query)}`).toBeLessThanOrEqual(2000 + 10 * (batch.changes + batch.region_pairs));
  });
});
