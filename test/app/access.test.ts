// checkMany (src/app/access.ts): many targets of one user in one statement,
// each answered by the access rule, against the reference model; and the
// class's atLeastAsFreshAs, which waits for a write before it answers.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkMany, MAX_CHECK_MANY } from '../../src/app/access.ts';
import { Permgraph } from '../../src/client.ts';
import { sql } from '../../src/db/pool.ts';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { InvalidInputError } from '../../src/errors.ts';
import * as model from '../reference/model.ts';
import type { Level } from '../reference/model.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { graphArbitrary, loadGraph } from '../helpers/graph.ts';

describe('checkMany', async () => {
  const { db, url } = await createTestDatabase();

  it('random graphs (trash, expiring grants): each answer equals the model, in the order asked, duplicates and unknown ids included', async () => {
    await fc.assert(
      fc.asyncProperty(graphArbitrary({ users: 5, groups: 8, objects: 6, grants: 30 }, 0.3, true), fc.integer({ min: 1, max: 3 }), async (graph, level) => {
        await loadGraph(db, graph);
        await refresh(db);
        const now = new Date();
        const untrashed: model.RefGraph = { ...graph, nodes: graph.nodes.map((n) => ({ ...n, trashAt: null })) };
        const targets = [...graph.nodes.map((n) => n.id).reverse(), 'not-a-node', graph.nodes[0]!.id];
        for (const user of graph.nodes.filter((n) => n.kind === 'user')) {
          const expected = targets.map((t) => model.check(graph, user.id, t, level as Level, now));
          expect(await checkMany(db, user.id, targets, level as Level), user.id).toEqual(expected);
          const ignoringTrash = targets.map((t) => model.check(untrashed, user.id, t, level as Level, now));
          expect(await checkMany(db, user.id, targets, level as Level, { includeTrash: true }), user.id).toEqual(ignoringTrash);
        }
      }),
      { numRuns: 15 },
    );
  });

  it('operations of the catalog, as check_op; an unknown one is refused naming the levels; bounds', async () => {
    await loadGraph(db, { nodes: [u('ann'), g('team'), g('other')], grants: [{ tailId: 'ann', headId: 'team', level: 2, source: 'default' }] });
    await refresh(db);
    await db.query(sql`insert into permgraph.operations (name, level) values ('doc.edit', 2), ('doc.delete', 3) on conflict (name) do update set level = excluded.level`);
    expect(await checkMany(db, 'ann', ['team', 'other', 'team'], 'doc.edit')).toEqual([true, false, true]);
    expect(await checkMany(db, 'ann', ['team'], 'doc.delete')).toEqual([false]);
    expect(await checkMany(db, 'ann', [], 'read')).toEqual([]);
    await expect(checkMany(db, 'ann', ['team'], 'doc.fly')).rejects.toThrow(/^unknown operation "doc\.fly".*; nor is it a level \(read, write, manage or 1-3\)$/);
    await expect(checkMany(db, 'ann', Array.from({ length: MAX_CHECK_MANY + 1 }, () => 'team'), 'read')).rejects.toThrow(
      new InvalidInputError('checkMany answers at most 10,000 targets a call, got 10001'),
    );
    await expect(checkMany(db, 'ann', ['team', 7 as unknown as string], 'read')).rejects.toThrow(InvalidInputError);
  });

  it('pg.check and pg.checkMany with atLeastAsFreshAs answer only once the write behind the token is applied', async () => {
    await loadGraph(db, { nodes: [u('bea'), g('lab')], grants: [] });
    await refresh(db);
    const pg = Permgraph.fromPool(db, url);
    const token = await pg.grant('bea', 'lab', 'write');
    // no worker runs: the table does not have it yet
    expect(await pg.check('bea', 'lab', 'write')).toBe(false);
    const fresh = Promise.all([pg.check('bea', 'lab', 'write', { atLeastAsFreshAs: token }), pg.checkMany('bea', ['lab'], 'read', { atLeastAsFreshAs: token })]);
    let answered = false;
    void fresh.then(() => (answered = true));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(answered).toBe(false); // still waiting for the write
    await applyChanges(db);
    expect(await fresh).toEqual([true, [true]]);
  });

  it('a row whose valid_until has passed gives nothing through the owner either, before any batch recomputes it', async () => {
    // semantics: a row with valid_until <= now() is absent for check until the engine recomputes
    // it, for the owner rule (x owned by o, a row on o with traverse_owned) as for x itself.
    const later = new Date(Date.now() + 3_600_000);
    const graph: model.RefGraph = {
      nodes: [u('ann'), g('team'), o('doc', 'team')],
      grants: [{ tailId: 'ann', headId: 'team', level: 2, source: 'default', expiresAt: later }],
    };
    await loadGraph(db, graph);
    await refresh(db);
    expect(await checkMany(db, 'ann', ['team', 'doc'], 1)).toEqual([true, true]);
    // The hour passes: the grant and the row computed from it end a second
    // ago, and no batch has run (the grant's change stays pending), which
    // is what the clock would leave, without waiting for it.
    const passed = new Date(Date.now() - 1000);
    await db.query(sql`update permgraph.grants set expires_at = ${passed} where tail_id = 'ann' and head_id = 'team'`);
    await db.query(sql`update permgraph.permissions set valid_until = ${passed} where user_id = 'ann' and target_id = 'team'`);
    graph.grants[0]!.expiresAt = passed;
    const [{ stored }] = await db.query(sql`select count(*)::int as stored from permgraph.permissions where user_id = 'ann' and target_id = 'team'`);
    expect(stored).toBe(1);
    const now = new Date();
    const expected = ['team', 'doc'].map((id) => model.check(graph, 'ann', id, 1, now));
    expect(expected).toEqual([false, false]);
    const [row] = await db.query(sql`select permgraph.check('ann', 'team', 1) as team, permgraph.check('ann', 'doc', 1) as doc,
                                            permgraph.can('ann', 'doc', 'team', 1) as can_doc`);
    expect([row.team, row.doc, row.can_doc]).toEqual([...expected, false]);
    expect(await checkMany(db, 'ann', ['team', 'doc'], 1)).toEqual(expected);
  });

  it('a group or object whose effective trash time is exactly now is hidden: check, can, checkMany and list_targets agree with the model', async () => {
    // semantics: hidden when the effective trash time is <= now(). Inside one transaction now()
    // stands still, so trash_at = now() there is the boundary itself.
    const graph: model.RefGraph = {
      nodes: [u('ann'), g('team'), g('sub', 'team'), o('doc', 'team'), o('note', 'sub'), o('kept', 'team')],
      grants: [grant('ann', 2, 'team')],
    };
    await loadGraph(db, graph);
    await refresh(db);
    await db.tx(async (tx) => {
      const [{ now }] = await tx.query(sql`update permgraph.nodes set trash_at = now() where id in ('doc', 'sub') returning now() as now`);
      await tx.query(sql`select permgraph.apply_changes()`);  // trashed_groups learns of sub
      const at = now as Date;
      const trashed: model.RefGraph = { ...graph, nodes: graph.nodes.map((n) => (n.id === 'doc' || n.id === 'sub' ? { ...n, trashAt: at } : n)) };
      const ids = graph.nodes.map((n) => n.id);
      const expected = ids.map((id) => model.check(trashed, 'ann', id, 1, at));
      expect(expected).toEqual([true, true, false, false, false, true]);  // (the model's answer, spelled out)
      const checks = await tx.query(sql`select x.id, permgraph.check('ann', x.id, 1) as allowed, permgraph.is_trashed(x.id) as trashed,
                                               permgraph.can('ann', x.id, n.owner_id, 1) as can
                                        from unnest(${ids}::text[]) with ordinality x(id, i) join permgraph.nodes n on n.id = x.id
                                        order by x.i`);
      expect(checks.map((r: { allowed: boolean }) => r.allowed)).toEqual(expected);
      expect(checks.map((r: { can: boolean }) => r.can)).toEqual(expected);
      expect(checks.map((r: { trashed: boolean }) => r.trashed)).toEqual(ids.map((id) => id === 'doc' || id === 'sub' || id === 'note'));
      expect(await checkMany(tx, 'ann', ids, 1)).toEqual(expected);
      const listed = await tx.query(sql`select target_id from permgraph.list_targets('ann')`);
      expect(listed.map((r: { target_id: string }) => r.target_id).sort()).toEqual(ids.filter((_, i) => expected[i]).sort());
    });
  });

  it('a trashed group deleted and made again as an object or a user before the worker runs: can agrees with check and the model', async () => {
    // (trashed_groups keeps the old group's row until the next batch; check asks it only of a group)
    const graph: model.RefGraph = {
      nodes: [u('ann'), u('su'), g('p'), g('x', null, new Date(Date.now() - 3_600_000))],
      grants: [grant('ann', 1, 'p')],
    };
    for (const remade of [o('x', 'p'), u('x')]) {
      await loadGraph(db, graph);
      await db.query(sql`update permgraph.nodes set is_superuser = true where id = 'su'`);
      await refresh(db);
      expect(await db.query(sql`select group_id from permgraph.trashed_groups`)).toEqual([{ group_id: 'x' }]);
      await db.tx(async (tx) => {
        await tx.query(sql`delete from permgraph.nodes where id = 'x'`);
        await tx.query(sql`insert into permgraph.nodes (id, kind, owner_id) values ('x', ${remade.kind}, ${remade.ownerId})`);
      });
      const now = new Date();
      const after: model.RefGraph = { ...graph, nodes: [...graph.nodes.filter((n) => n.id !== 'x'), remade] };
      for (const user of ['ann', 'su']) {
        const expected = user === 'su' || model.check(after, user, 'x', 1, now);
        const [row] = await db.query(sql`select permgraph.check(${user}, 'x', 1) as checked, permgraph.can(${user}, 'x', ${remade.ownerId}, 1) as can`);
        expect(row, `${remade.kind} x, ${user}`).toEqual({ checked: expected, can: expected });
      }
    }
  });
});
