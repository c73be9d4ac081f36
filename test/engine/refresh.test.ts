import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { sql } from '../../src/db/pool.ts';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { check } from '../../src/engine/check.ts';
import { verify } from '../../src/engine/verify.ts';
import * as model from '../reference/model.ts';
import type { Level, RefGraph } from '../reference/model.ts';
import { u, g, o, grant } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { FUTURE, PAST, graphArbitrary, loadGraph, readPermissions, readTrashedGroups } from '../helpers/graph.ts';

describe('refresh() against the reference model', async () => {
  const { db } = await createTestDatabase();

  async function expectMatchesModel(graph: RefGraph): Promise<void> {
    await loadGraph(db, graph);
    await refresh(db);
    expect(await readPermissions(db)).toEqual(model.computePermissions(graph));
    expect(await readTrashedGroups(db)).toEqual(model.computeTrashedGroups(graph));
  }

  // The worked examples of semantics.md, each row by row.
  const examples: [string, RefGraph][] = [
    ['ownership chain and a role', {
      nodes: [u('u1'), u('u2'), g('p1', 'u1'), g('p2', 'p1'), g('r')],
      grants: [grant('r', 2, 'p1'), grant('u2', 1, 'r')],
    }],
    ['min along a path', { nodes: [u('x'), g('r'), g('b')], grants: [grant('x', 2, 'r'), grant('r', 1, 'b')] }],
    ['max across parallel grants', { nodes: [u('u'), g('g')], grants: [grant('u', 3, 'g', 's1'), grant('u', 1, 'g', 's2')] }],
    ['manage on a user: traverse_owned', { nodes: [u('a'), u('userB'), g('r')], grants: [grant('a', 1, 'r'), grant('r', 3, 'userB')] }],
    ['write on a user: no traverse_owned', { nodes: [u('a'), u('userB'), g('r')], grants: [grant('a', 1, 'r'), grant('r', 2, 'userB')] }],
    ['paths do not pass through users', {
      nodes: [u('a'), u('userB'), g('r'), g('g2')],
      grants: [grant('a', 1, 'r'), grant('r', 3, 'userB'), grant('userB', 3, 'g2')],
    }],
    ['cycles terminate', { nodes: [u('u'), g('g1'), g('g2')], grants: [grant('g1', 1, 'g2'), grant('g2', 2, 'g1'), grant('u', 3, 'g1')] }],
    ['objects are leaves', { nodes: [u('u'), g('p'), o('doc', 'p'), o('other', 'p')], grants: [grant('u', 1, 'doc')] }],
    ['a user with no edges', { nodes: [u('lonely')], grants: [] }],
    ['trash through group owners', {
      nodes: [u('u'), g('top', 'u', PAST), g('mid', 'top'), g('low', 'mid', FUTURE), g('free', 'u', FUTURE), o('d', 'free', PAST)],
      grants: [],
    }],
  ];
  for (const [name, graph] of examples) {
    it(`worked example: ${name}`, () => expectMatchesModel(graph));
  }

  it('deleting the manage grant of two parallel grants leaves read', async () => {
    await loadGraph(db, { nodes: [u('u'), g('g')], grants: [grant('u', 3, 'g', 's1'), grant('u', 1, 'g', 's2')] });
    await refresh(db);
    await db.query(sql`delete from permgraph.grants where source = 's1'`);
    await applyChanges(db);
    expect(await readPermissions(db)).toContainEqual({ userId: 'u', targetId: 'g', level: 1, traverseOwned: true, validUntil: null });
  });

  it('random graphs: refresh() equals the model, and check() agrees', async () => {
    const size = { users: 12, groups: 16, objects: 8, grants: 60 };
    const triples = fc.array(fc.tuple(fc.nat(), fc.nat(), fc.constantFrom<Level>(1, 2, 3)), { minLength: 20, maxLength: 20 });
    await fc.assert(
      fc.asyncProperty(graphArbitrary(size), triples, async (graph, picks) => {
        await expectMatchesModel(graph);
        const users = graph.nodes.filter((n) => n.kind === 'user');
        const now = new Date();
        for (const [ui, ti, level] of picks) {
          const user = users[ui % users.length]!.id;
          const target = graph.nodes[ti % graph.nodes.length]!.id;
          expect(await check(db, user, target, level), `check(${user}, ${target}, ${level})`).toBe(
            model.check(graph, user, target, level, now),
          );
        }
      }),
      { numRuns: 250 },
    );
  });

  it('larger random graphs (a few hundred nodes): refresh() equals the model and verify() is clean', async () => {
    await fc.assert(
      fc.asyncProperty(graphArbitrary({ users: 80, groups: 150, objects: 70, grants: 600 }, 0.5), async (graph) => {
        await expectMatchesModel(graph);
        expect((await verify(db)).differences).toEqual([]);
      }),
      { numRuns: 25 },
    );
  });

  it('verify() reports a tampered row', async () => {
    await expectMatchesModel(examples[0]![1]);
    await db.query(sql`update permgraph.permissions set level = 3 where user_id = 'u2' and target_id = 'p2'`);
    await db.query(sql`delete from permgraph.permissions where user_id = 'u1' and target_id = 'p1'`);
    const { differences } = await verify(db);
    expect(differences).toEqual([
      { relation: 'permissions', key: 'u1 -> p1', stored: 'missing', expected: 'level 3, traverse_owned true' },
      { relation: 'permissions', key: 'u2 -> p2', stored: 'level 3, traverse_owned true', expected: 'level 1, traverse_owned true' },
    ]);
    const again = await refresh(db);
    expect(again).toMatchObject({ mode: 'full', inserted: 1, updated: 1, deleted: 0 });
    expect((await verify(db)).differences).toEqual([]);
  });

  it('a second refresh writes nothing', async () => {
    await expectMatchesModel(examples[0]![1]);
    expect(await refresh(db)).toMatchObject({ inserted: 0, updated: 0, deleted: 0 });
  });
});
