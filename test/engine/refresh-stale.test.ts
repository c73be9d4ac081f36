// A full recomputation writes permissions one of three ways (_write_all,
// 040_compute.sql): filling an empty table (indexes built after the insert),
// comparing with a stored table as the computation is produced (no edge
// expires), or through a temporary copy (some edge expires). Whatever the
// stored table holds, refresh() must leave exactly the model's rows, write
// exactly the rows that differ, and then have nothing left to write.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import * as model from '../reference/model.ts';
import type { Level, PermissionRow, RefGraph } from '../reference/model.ts';
import { g, grant, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { EXPIRIES, PAST, graphArbitrary, loadGraph, readPermissions, readTrashedGroups } from '../helpers/graph.ts';

/** One way to make a stored row wrong, or to add a row that should not be there. */
type Tamper =
  | { kind: 'delete'; row: number }
  | { kind: 'level'; row: number; level: Level }
  | { kind: 'traverse'; row: number }
  | { kind: 'validUntil'; row: number; at: Date | null }
  | { kind: 'insert'; user: number; target: number; level: Level; traverse: boolean; at: Date | null };

const someTime = fc.constantFrom<Date | null>(null, PAST, ...EXPIRIES);
const tamperArbitrary: fc.Arbitrary<Tamper> = fc.oneof(
  fc.record({ kind: fc.constant('delete' as const), row: fc.nat() }),
  fc.record({ kind: fc.constant('level' as const), row: fc.nat(), level: fc.constantFrom<Level>(1, 2, 3) }),
  fc.record({ kind: fc.constant('traverse' as const), row: fc.nat() }),
  fc.record({ kind: fc.constant('validUntil' as const), row: fc.nat(), at: someTime }),
  fc.record({
    kind: fc.constant('insert' as const), user: fc.nat(), target: fc.nat(), level: fc.constantFrom<Level>(1, 2, 3),
    traverse: fc.boolean(), at: someTime,
  }),
);

async function tamper(db: Queryable, graph: RefGraph, rows: PermissionRow[], changes: Tamper[]): Promise<void> {
  const users = graph.nodes.filter((n) => n.kind === 'user');
  for (const change of changes) {
    if (change.kind === 'insert') {
      const user = users[change.user % users.length]!.id;
      const target = graph.nodes[change.target % graph.nodes.length]!.id;
      await db.query(sql`
        insert into permgraph.permissions (user_id, target_id, level, traverse_owned, valid_until)
        values (${user}, ${target}, ${change.level}, ${change.traverse}, ${change.at}) on conflict do nothing`);
      continue;
    }
    if (rows.length === 0) continue;
    const { userId, targetId } = rows[change.row % rows.length]!;
    const key = sql`user_id = ${userId} and target_id = ${targetId}`;
    if (change.kind === 'delete') await db.query(sql`delete from permgraph.permissions where ${key}`);
    else if (change.kind === 'level') await db.query(sql`update permgraph.permissions set level = ${change.level} where ${key}`);
    else if (change.kind === 'traverse') await db.query(sql`update permgraph.permissions set traverse_owned = not traverse_owned where ${key}`);
    else await db.query(sql`update permgraph.permissions set valid_until = ${change.at} where ${key}`);
  }
}

/** What refresh() must write to turn `stored` into `expected`, counted by kind. */
function differences(stored: PermissionRow[], expected: PermissionRow[]): { inserted: number; updated: number; deleted: number } {
  const keyOf = (r: PermissionRow) => `${r.userId}\u0000${r.targetId}`;
  const before = new Map(stored.map((r) => [keyOf(r), r]));
  const after = new Map(expected.map((r) => [keyOf(r), r]));
  let inserted = 0;
  let updated = 0;
  for (const [key, row] of after) {
    const old = before.get(key);
    if (!old) inserted++;
    else if (old.level !== row.level || old.traverseOwned !== row.traverseOwned ||
      (old.validUntil?.getTime() ?? null) !== (row.validUntil?.getTime() ?? null)) updated++;
  }
  const deleted = [...before.keys()].filter((key) => !after.has(key)).length;
  return { inserted, updated, deleted };
}

describe('refresh() onto whatever the table holds', async () => {
  const { db } = await createTestDatabase();

  it.each([
    ['no edge expires (compared as computed)', false],
    ['some edges expire (compared through a copy)', true],
  ] as const)('%s: a tampered table becomes the model, writing exactly the differing rows; then nothing is left to write', async (_, expiring) => {
    await fc.assert(
      fc.asyncProperty(
        graphArbitrary({ users: 8, groups: 10, objects: 5, grants: 40 }, 0, expiring),
        fc.array(tamperArbitrary, { minLength: 0, maxLength: 25 }),
        async (graph, changes) => {
          await loadGraph(db, graph);
          await refresh(db);
          const now = new Date();
          await tamper(db, graph, model.computePermissions(graph, now), changes);
          const stored = await readPermissions(db);
          const result = await refresh(db);
          const expected = model.computePermissions(graph, new Date());
          expect(await readPermissions(db)).toEqual(expected);
          expect(await readTrashedGroups(db)).toEqual(model.computeTrashedGroups(graph));
          expect(result).toMatchObject({ mode: 'full', ...differences(stored, expected) });
          expect(await refresh(db)).toMatchObject({ inserted: 0, updated: 0, deleted: 0 });
          // Expiries applied later, by regions seeded from the rows (and their
          // permission_bounds) this refresh wrote, still equal the model.
          for (const time of EXPIRIES) {
            await applyChanges(db, { at: time });
            expect(await readPermissions(db), `at ${time.toISOString()}`).toEqual(model.computePermissions(graph, time));
          }
        },
      ),
      { numRuns: expiring ? 60 : 120 },
    );
  });

  it('without expiring edges, leftover permission_bounds rows are removed', async () => {
    await fc.assert(
      fc.asyncProperty(graphArbitrary({ users: 6, groups: 8, objects: 4, grants: 30 }, 0.3), fc.boolean(), async (graph, empty) => {
        await loadGraph(db, graph);
        await refresh(db);
        const [row] = await db.query(sql`select user_id, target_id from permgraph.permissions limit 1`);
        if (!row) return;
        await db.query(sql`
          insert into permgraph.permission_bounds (user_id, target_id, level, valid_until)
          values (${row.user_id}, ${row.target_id}, 1, ${EXPIRIES[0]!})`);
        if (empty) await db.query(sql`delete from permgraph.permissions`);
        await refresh(db);
        expect(await db.query(sql`select * from permgraph.permission_bounds`)).toEqual([]);
        expect(await readPermissions(db)).toEqual(model.computePermissions(graph, new Date()));
      }),
      { numRuns: 30 },
    );
  });

  const definitions = () =>
    db.query(sql`
      select pg_get_indexdef(i.indexrelid) as definition, i.indisprimary as primary, i.indisunique as unique,
             (select k.conname from pg_constraint k where k.conindid = i.indexrelid) as constraint
      from pg_index i where i.indrelid = 'permgraph.permissions'::regclass
      order by 1`);

  it('filling an empty table leaves its indexes and primary key as the migrations made them', async () => {
    await loadGraph(db, { nodes: [u('u'), g('g', 'u')], grants: [] });
    const before = await definitions();
    expect(before.length).toBeGreaterThanOrEqual(3);
    expect(await refresh(db)).toMatchObject({ mode: 'full', inserted: 2 });
    expect(await definitions()).toEqual(before);
    // and the key still refuses a duplicate
    await expect(db.query(sql`insert into permgraph.permissions (user_id, target_id, level, traverse_owned) values ('u', 'g', 1, false)`))
      .rejects.toThrow(/permissions_pkey/);
  });

  it('filling an empty table that a reader holds: no wait for the reader, the indexes kept, the model written', async () => {
    const graph: RefGraph = { nodes: [u('a'), u('b'), g('team'), g('p', 'a'), g('q', 'p')], grants: [grant('b', 2, 'team'), grant('team', 1, 'p')] };
    await loadGraph(db, graph);
    const before = await definitions();
    let holding!: () => void;
    let release!: () => void;
    const held = new Promise<void>((resolve) => (holding = resolve));
    const released = new Promise<void>((resolve) => (release = resolve));
    const reader = db.tx(async (tx) => {
      await tx.query(sql`select count(*) from permgraph.permissions`); // ACCESS SHARE until this transaction ends
      holding();
      await released;
    });
    await held;
    try {
      // Waiting for the reader would never end (it ends after the refresh):
      // the statement timeout turns that into an error instead of a hung test.
      const [row] = await db.tx(async (tx) => {
        await tx.query(sql`set local statement_timeout = '20s'`);
        return tx.query(sql`select permgraph.refresh() as result`);
      });
      expect(row.result).toMatchObject({ mode: 'full', inserted: model.computePermissions(graph).length });
    } finally {
      release();
      await reader;
    }
    expect(await definitions()).toEqual(before);
    expect(await readPermissions(db)).toEqual(model.computePermissions(graph, new Date()));
  });
});
