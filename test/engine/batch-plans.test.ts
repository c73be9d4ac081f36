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
import { g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { loadGraph, readPermissions } from '../helpers/graph.ts';
import { capturePlans, describeQuery, heaviest } from '../helpers/plans.ts';
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

interface Batch {
  changes: number;
  region_pairs: number;
  inserted: number;
  updated: number;
  deleted: number;
  delta: boolean;
}

describe('a batch handles rows in proportion to its region, not to the graph', async () => {
  const { db, url } = await createTestDatabase();
  let current = graph();
  await loadGraph(db, current);
  await db.query(sql`select permgraph.refresh()`);
  await db.query(sql`analyze permgraph.edges; analyze permgraph.permissions; analyze permgraph.nodes`);

  /** Writes the change, applies it under auto_explain, checks the table against the model and returns the heaviest plan node. */
  async function applyTraced(write: () => Promise<void>, next: RefGraph) {
    await write();
    let batch: Batch | undefined;
    const plans = await capturePlans(url, async (client) => {
      await client.query('begin isolation level repeatable read');
      batch = (await client.query('select permgraph.apply_changes() as r')).rows[0].r as Batch;
      await client.query('commit');
    });
    current = next;
    expect(await readPermissions(db)).toEqual(model.computePermissions(current));
    const nodes = plans.map(({ query, plan }) => ({ query, ...heaviest(plan) })).sort((a, b) => b.rows - a.rows);
    return { batch: batch!, heaviest: nodes[0]! };
  }

  /** Work allowed: a few times what the batch reads and writes, plus a constant; the graph is ~50,000 rows. */
  const allowed = (b: Batch) => 10 * (b.changes + b.region_pairs + b.inserted + b.updated + b.deleted) + 2000;

  it('additions (semi-naive): five users join a team that reaches a group of 4,000 members', async () => {
    const added: RefGrant[] = range(5).map((i) => grant(`x${i}`, i === 0 ? 3 : 1, 't'));
    const { batch, heaviest: h } = await applyTraced(
      () => db.query(sql`insert into permgraph.grants (tail_id, head_id, level, source)
                         select * from unnest(${added.map((a) => a.tailId)}::text[], ${added.map((a) => a.headId)}::text[],
                                              ${added.map((a) => a.level)}::smallint[], ${added.map((a) => a.source)}::text[])`).then(() => {}),
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
