// The writers' statement triggers (capture, audit, validation) plan each
// statement once per session, with the size the transition tables had at
// that first call: a plan made for a bulk statement was kept for every
// one-row write after it (two sequential reads of nodes, or one of edges, per
// write: 90-170 ms on org large), and one made for a one-row UPDATE nested
// loops over old and new rows in a bulk UPDATE after it (11,111 grants:
// 80 s). Whatever came first in the session, a one-row write must handle a
// few rows and a bulk one rows in proportion to its size, whatever the
// statistics say. Plans are captured with auto_explain (row counts, never
// times).
import fc from 'fast-check';
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { openPool, sql, type Queryable } from '../../src/db/pool.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { FUTURE, PAST, graphArbitrary, insertGrants, insertNodes, loadGraph, readPermissions, readTrashedGroups } from '../helpers/graph.ts';
import { GraphState, grantKey, mutationArbitrary } from '../helpers/mutations.ts';
import { capturePlans, describeQuery, heaviest, type CapturedPlan } from '../helpers/plans.ts';
import * as model from '../reference/model.ts';
import type { Kind, Level, RefGrant, RefGraph, RefNode } from '../reference/model.ts';

const USERS = 800;
const GROUPS = 400;
const OBJECTS = 800;
/** Rows a bulk statement writes. */
const BULK = 1_000;
/** The most rows any plan node of a one-row write may handle (a sequential read of nodes handles 2,000 and more). */
const ONE_ROW_LIMIT = 50;

function baseGraph(): RefGraph {
  const nodes: RefNode[] = [];
  for (let i = 0; i < USERS; i++) nodes.push({ id: `u${i}`, kind: 'user', ownerId: null, trashAt: null });
  for (let i = 0; i < GROUPS; i++) nodes.push({ id: `g${i}`, kind: 'group', ownerId: `u${i % USERS}`, trashAt: null });
  for (let i = 0; i < OBJECTS; i++) nodes.push({ id: `o${i}`, kind: 'object', ownerId: `g${i % GROUPS}`, trashAt: null });
  const grants: RefGrant[] = [];
  for (let i = 0; i < USERS; i++) grants.push({ tailId: `u${i}`, headId: `g${(7 * i) % GROUPS}`, level: 1, source: 'base' });
  return { nodes, grants };
}

/** Bulk writes of grants and nodes (each one statement of BULK rows), leaving the graph as it was. */
async function bulkWrites(client: pg.Client): Promise<void> {
  await client.query(`
    insert into permgraph.grants (tail_id, head_id, level, source)
    select 'u' || i, 'o' || (i * 3 % ${OBJECTS}), 1, 'bulk' from generate_series(0, ${BULK - 1}) i where i < ${USERS}
    union all
    select 'g' || (i % ${GROUPS}), 'o' || (i * 5 % ${OBJECTS}), 2, 'bulk' from generate_series(${USERS}, ${BULK - 1}) i`);
  await client.query(`update permgraph.grants set level = 3 where source = 'bulk'`);
  await client.query(`delete from permgraph.grants where source = 'bulk'`);
  await client.query(`
    insert into permgraph.nodes (id, kind, owner_id)
    select 'bg' || i, 'group', 'g' || (i % ${GROUPS}) from generate_series(0, ${BULK - 1}) i`);
  await client.query(`update permgraph.nodes set owner_id = 'g' || ((substr(id, 3)::int + 1) % ${GROUPS}) where id like 'bg%'`);
  await client.query(`update permgraph.nodes set trash_at = now() + interval '1 day' where id like 'bg%'`);
  await client.query(`delete from permgraph.nodes where id like 'bg%'`);
}

/** One-row writes of grants and nodes, leaving the graph as it was. */
async function oneRowWrites(client: pg.Client): Promise<void> {
  await client.query(`insert into permgraph.grants (tail_id, head_id, level, source) values ('u1', 'o2', 1, 'one')`);
  await client.query(`update permgraph.grants set level = 2 where tail_id = 'u1' and head_id = 'o2' and source = 'one'`);
  await client.query(`delete from permgraph.grants where tail_id = 'u1' and head_id = 'o2' and source = 'one'`);
  await client.query(`insert into permgraph.nodes (id, kind, owner_id) values ('one-group', 'group', 'g3')`);
  await client.query(`update permgraph.nodes set owner_id = 'g4' where id = 'one-group'`);
  await client.query(`update permgraph.nodes set trash_at = now() + interval '1 day' where id = 'one-group'`);
  await client.query(`delete from permgraph.nodes where id = 'one-group'`);
}

/** The plans of `then`'s statements, run on a fresh connection after `first`'s (whose plans are not kept). */
function plansAfter(url: string, first: (client: pg.Client) => Promise<void>, then: (client: pg.Client) => Promise<void>) {
  return capturePlans(url, async (client) => {
    await client.query('set auto_explain.log_min_duration = -1');
    await first(client);
    await client.query('set auto_explain.log_min_duration = 0');
    await then(client);
  });
}

/** Every captured plan of a statement that touched permgraph's tables handles at most `limit` rows in any node. */
function expectAtMost(plans: CapturedPlan[], limit: number): void {
  const ours = plans.filter((p) => /permgraph\.|new_rows|old_rows|written|inserted_nodes|deleted_nodes_now|updated_nodes/.test(p.query));
  expect(ours.length).toBeGreaterThan(10);
  const over = ours
    .map(({ query, plan }) => ({ query, h: heaviest(plan) }))
    .filter(({ h }) => h.rows > limit)
    .map(({ query, h }) => `${h.rows} rows: ${h.type}${h.relation ? ` on ${h.relation}` : ''} in: ${describeQuery(query)}`);
  expect(over, `plan nodes above ${limit} rows`).toEqual([]);
}

describe('writers\' statement triggers whatever came first in the session', async () => {
  const { db, url } = await createTestDatabase();
  const graph = baseGraph();
  await insertNodes(db, graph.nodes);
  await insertGrants(db, graph.grants);
  await db.query(sql`analyze permgraph.nodes; analyze permgraph.edges; analyze permgraph.grants`);
  await applyChanges(db);

  it('a one-row write after bulk writes reads a few rows, not the nodes or edges', async () => {
    expectAtMost(await plansAfter(url, bulkWrites, oneRowWrites), ONE_ROW_LIMIT);
  });

  it('a bulk write after one-row writes stays linear (no nested loop over old and new rows)', async () => {
    // A nested loop over 1,000 old and 1,000 new rows handles 1,000,000.
    expectAtMost(await plansAfter(url, oneRowWrites, bulkWrites), 5 * (BULK + graph.nodes.length + graph.grants.length + GROUPS));
  });

  it('what the writes captured, applied, equals the reference model', async () => {
    await applyChanges(db);
    const nodes: { id: string; kind: Kind; owner_id: string | null; trash_at: Date | null }[] =
      await db.query(sql`select id, kind, owner_id, trash_at from permgraph.nodes`);
    const grants: { tail_id: string; head_id: string; level: Level; source: string }[] =
      await db.query(sql`select tail_id, head_id, level, source from permgraph.grants`);
    const now: RefGraph = {
      nodes: nodes.map((n) => ({ id: n.id, kind: n.kind, ownerId: n.owner_id, trashAt: n.trash_at })),
      grants: grants.map((g) => ({ tailId: g.tail_id, headId: g.head_id, level: g.level, source: g.source })),
    };
    expect(now.nodes.length).toBe(graph.nodes.length);
    expect(now.grants.length).toBe(graph.grants.length);
    expect(await readPermissions(db)).toEqual(model.computePermissions(now));
    expect(await readTrashedGroups(db)).toEqual(model.computeTrashedGroups(now));
  });
});

describe('writers\' statement triggers with statistics taken before the bulk write', async () => {
  const { db, url } = await createTestDatabase();

  it('bulk writes of owned nodes stay linear when the statistics say no node has an owner', async () => {
    // Analyzed while no node has an owner and edges hold no ownership edge:
    // a plan free to turn a join around then reads the owned nodes, or the
    // ownership edges, once for every row of the statement.
    const users = Array.from({ length: USERS }, (_, i): RefNode => ({ id: `u${i}`, kind: 'user', ownerId: null, trashAt: null }));
    const groups = Array.from({ length: GROUPS }, (_, i): RefNode => ({ id: `g${i}`, kind: 'group', ownerId: null, trashAt: null }));
    await insertNodes(db, [...users, ...groups]);
    await db.query(sql`analyze permgraph.nodes; analyze permgraph.edges`);
    const plans = await plansAfter(url, async () => {}, async (client) => {
      await client.query(`
        insert into permgraph.nodes (id, kind, owner_id)
        select 'bg' || i, 'group', 'g' || (i % ${GROUPS}) from generate_series(0, ${BULK - 1}) i`);
      await client.query(`
        insert into permgraph.nodes (id, kind, owner_id)
        select 'bo' || i, 'object', 'bg' || (i % ${BULK}) from generate_series(0, ${BULK - 1}) i`);
      await client.query(`update permgraph.nodes set owner_id = 'g' || ((substr(id, 3)::int + 1) % ${GROUPS}) where id like 'bg%'`);
      await client.query(`delete from permgraph.nodes where id like 'bo%'`);
      await client.query(`delete from permgraph.nodes where id like 'bg%'`);
    });
    // A turned-around loop handles BULK × BULK = 1,000,000 rows.
    expectAtMost(plans, 5 * (BULK + USERS + GROUPS));
  });
});

// The UPDATE branches compare a statement's old and new rows as sets
// (EXCEPT): random multi-row UPDATEs of grants (level, expiry, source) and
// of nodes (owner, trash), mixed with one-row changes on the same
// connection, captured and applied, must equal the reference model.
interface GrantEdit { pick: number; level: Level; expiresAt: Date | null; moveSource: boolean }
interface NodeEdit { pick: number; owner: number | null; trash: Date | null }

const grantEditsArb = fc.array(
  fc.record({ pick: fc.nat(), level: fc.constantFrom<Level>(1, 2, 3), expiresAt: fc.constantFrom<Date | null>(null, null, FUTURE), moveSource: fc.boolean() }),
  { minLength: 1, maxLength: 12 },
);
const nodeEditsArb = fc.array(
  fc.record({ pick: fc.nat(), owner: fc.option(fc.nat()), trash: fc.constantFrom<Date | null>(null, null, PAST, FUTURE) }),
  { minLength: 1, maxLength: 8 },
);
const stepArb = fc.oneof(
  { weight: 2, arbitrary: fc.record({ type: fc.constant('grants' as const), edits: grantEditsArb }) },
  { weight: 2, arbitrary: fc.record({ type: fc.constant('nodes' as const), edits: nodeEditsArb }) },
  { weight: 3, arbitrary: fc.record({ type: fc.constant('one' as const), mutation: mutationArbitrary }) },
  { weight: 1, arbitrary: fc.record({ type: fc.constant('apply' as const) }) },
);

/** One UPDATE of several grants: new level and expiry, some moved to another source (a key no grant has). */
async function updateGrants(db: Queryable, state: GraphState, edits: readonly GrantEdit[]): Promise<string> {
  const grants = [...state.grants.values()].sort((a, b) => (grantKey(a) < grantKey(b) ? -1 : 1));
  if (grants.length === 0) return 'noop';
  const chosen = new Map<string, { old: RefGrant; next: RefGrant }>();
  for (const e of edits) {
    const old = grants[e.pick % grants.length]!;
    const moved = { ...old, source: `${old.source}+` };
    const source = e.moveSource && !state.grants.has(grantKey(moved)) ? moved.source : old.source;
    chosen.set(grantKey(old), { old, next: { ...old, level: e.level, expiresAt: e.expiresAt, source } });
  }
  const rows = [...chosen.values()];
  await db.query(sql`
    update permgraph.grants g set level = u.level, expires_at = u.expires_at, source = u.new_source
    from unnest(${rows.map((r) => r.old.tailId)}::text[], ${rows.map((r) => r.old.headId)}::text[], ${rows.map((r) => r.old.source)}::text[],
                ${rows.map((r) => r.next.level)}::smallint[], ${rows.map((r) => r.next.expiresAt ?? null)}::timestamptz[],
                ${rows.map((r) => r.next.source)}::text[]) as u(tail_id, head_id, source, level, expires_at, new_source)
    where g.tail_id = u.tail_id and g.head_id = u.head_id and g.source = u.source`);
  for (const { old, next } of rows) {
    state.grants.delete(grantKey(old));
    state.grants.set(grantKey(next), next);
  }
  return `update ${rows.length} grants: ${rows.map((r) => `${grantKey(r.old)} -> ${r.next.level}/${r.next.source}/${r.next.expiresAt?.toISOString() ?? 'never'}`).join(', ')}`;
}

/**
 * One UPDATE of several groups and objects: a new trash time, and some a new
 * owner (an object: any user or group; a group: a user nobody owns, which
 * cannot close a cycle whatever else the statement moves).
 */
async function updateNodes(db: Queryable, state: GraphState, edits: readonly NodeEdit[]): Promise<string> {
  const nodes = [...state.nodes.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
  const movable = nodes.filter((n) => n.kind !== 'user');
  if (movable.length === 0) return 'noop';
  const chosen = new Map<string, RefNode>();
  for (const e of edits) {
    const node = movable[e.pick % movable.length]!;
    const owners = nodes.filter((n) => (node.kind === 'object' ? n.kind !== 'object' : n.kind === 'user' && n.ownerId === null));
    const ownerId = e.owner === null || owners.length === 0 ? node.ownerId : owners[e.owner % owners.length]!.id;
    chosen.set(node.id, { ...node, ownerId, trashAt: e.trash });
  }
  const rows = [...chosen.values()];
  await db.query(sql`
    update permgraph.nodes n set owner_id = u.owner_id, trash_at = u.trash_at
    from unnest(${rows.map((r) => r.id)}::text[], ${rows.map((r) => r.ownerId)}::text[], ${rows.map((r) => r.trashAt)}::timestamptz[])
         as u(id, owner_id, trash_at)
    where n.id = u.id`);
  for (const r of rows) state.nodes.set(r.id, r);
  return `update ${rows.length} nodes: ${rows.map((r) => `${r.id} owner=${r.ownerId} trash=${r.trashAt?.toISOString() ?? 'none'}`).join(', ')}`;
}

describe('multi-row UPDATEs captured as sets', async () => {
  const { db, url } = await createTestDatabase();

  it('random multi-row and one-row changes on one connection, applied, equal the reference model', async () => {
    // one connection: every statement after the first runs the plans its triggers made then
    const session = openPool(url, { poolSize: 1 });
    try {
      await fc.assert(
        fc.asyncProperty(
          graphArbitrary({ users: 8, groups: 10, objects: 6, grants: 30 }, 0.5),
          fc.array(stepArb, { minLength: 1, maxLength: 12 }),
          async (graph, steps) => {
            await loadGraph(session, graph);
            await refresh(session);
            const state = new GraphState(graph);
            const log: string[] = [];
            for (const step of steps) {
              if (step.type === 'grants') log.push(await updateGrants(session, state, step.edits));
              else if (step.type === 'nodes') log.push(await updateNodes(session, state, step.edits));
              else if (step.type === 'one') log.push(await state.apply(session, step.mutation));
              if (step.type !== 'apply') continue;
              await applyChanges(session);
              expect(await readPermissions(session), log.join('; ')).toEqual(model.computePermissions(state.snapshot()));
            }
            await applyChanges(session);
            expect(await readPermissions(session), log.join('; ')).toEqual(model.computePermissions(state.snapshot()));
            expect(await readTrashedGroups(session), log.join('; ')).toEqual(model.computeTrashedGroups(state.snapshot()));
          },
        ),
        { numRuns: 60 },
      );
    } finally {
      await session.dispose();
    }
  });
});
