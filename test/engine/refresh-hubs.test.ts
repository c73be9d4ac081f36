// Without expiring grants, a full recomputation walks each stretch of the
// graph once (permgraph._lasting_rows, 040_compute.sql): from every "hub"
// (a node entered by a user, by two or more nodes, or a user) through the
// nodes below it that have a single tail, and then composes each user's row
// for a hub with that hub's stretch. These graphs are mostly such stretches:
// ownership trees with users entering at random depths, parallel grants
// along ownership edges (one tail, several levels), grants back up the tree
// (cycles through single-tail nodes), grants onto users (traverse_owned) and
// direct grants onto objects and users. refresh() from empty, and again
// after every grant changed, must equal the reference model, pair for pair.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { sql } from '../../src/db/pool.ts';
import { refresh } from '../../src/engine/apply.ts';
import * as model from '../reference/model.ts';
import type { Level, RefGrant, RefGraph, RefNode } from '../reference/model.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { insertGrants, loadGraph, readPermissions } from '../helpers/graph.ts';

const level = fc.constantFrom<Level>(1, 2, 3);

/** One extra grant, by what it does to the structure (indexes are taken modulo the node counts). */
const extraArbitrary = fc.oneof(
  fc.record({ kind: fc.constant('entry' as const), user: fc.nat(), group: fc.nat(), level }),
  fc.record({ kind: fc.constant('parallel' as const), group: fc.nat(), level }),
  fc.record({ kind: fc.constant('up' as const), from: fc.nat(), to: fc.nat(), level }),
  fc.record({ kind: fc.constant('onUser' as const), group: fc.nat(), user: fc.nat(), level }),
  fc.record({ kind: fc.constant('direct' as const), user: fc.nat(), target: fc.nat(), level }),
);
type Extra = typeof extraArbitrary extends fc.Arbitrary<infer T> ? T : never;

/** The grants that `extras` describe on a tree whose group i is owned by group parents[i] % i. */
function grantsOf(extras: Extra[], userIds: string[], groupIds: string[], parents: number[], targets: string[]): RefGrant[] {
  const grants: RefGrant[] = [];
  const add = (tail: string, lvl: Level, head: string, source: string) => {
    if (!grants.some((x) => x.tailId === tail && x.headId === head && x.source === source)) grants.push(grant(tail, lvl, head, source));
  };
  const group = (n: number) => groupIds[n % groupIds.length]!;
  const user = (n: number) => userIds[n % userIds.length]!;
  extras.forEach((extra, i) => {
    const source = `s${i}`;
    if (extra.kind === 'entry') add(user(extra.user), extra.level, group(extra.group), source);
    else if (extra.kind === 'parallel') {
      // a second edge beside an ownership edge: same tail and head, another level
      const index = extra.group % groupIds.length;
      if (index > 0) add(group(parents[index]! % index), extra.level, group(index), source);
    } else if (extra.kind === 'up') add(group(extra.from), extra.level, group(extra.to), source);
    else if (extra.kind === 'onUser') add(group(extra.group), extra.level, user(extra.user), source);
    else add(user(extra.user), extra.level, targets[extra.target % targets.length]!, source);
  });
  return grants;
}

/**
 * An ownership tree of groups (each owned by an earlier group, or the first
 * by a user) and objects under it, with two sets of extra grants: before and after.
 */
const treeGraphsArbitrary: fc.Arbitrary<{ before: RefGraph; after: RefGraph }> = fc
  .record({
    users: fc.integer({ min: 1, max: 5 }),
    parents: fc.array(fc.nat(), { minLength: 1, maxLength: 24 }),
    objects: fc.array(fc.nat(), { maxLength: 6 }),
    extras: fc.array(extraArbitrary, { maxLength: 12 }),
    laterExtras: fc.array(extraArbitrary, { maxLength: 12 }),
  })
  .map(({ users, parents, objects, extras, laterExtras }) => {
    const userIds = Array.from({ length: users }, (_, i) => `u${i}`);
    const groupIds = parents.map((_, i) => `g${i}`);
    const nodes: RefNode[] = userIds.map((id) => u(id));
    // group i is owned by an earlier group (a tree), group 0 by a user
    parents.forEach((parent, i) => nodes.push(g(groupIds[i]!, i === 0 ? userIds[0]! : groupIds[parent % i]!)));
    const objectIds = objects.map((owner, i) => {
      nodes.push(o(`o${i}`, groupIds[owner % groupIds.length]!));
      return `o${i}`;
    });
    const targets = [...userIds, ...groupIds, ...objectIds];
    return { before: { nodes, grants: grantsOf(extras, userIds, groupIds, parents, targets) }, after: { nodes, grants: grantsOf(laterExtras, userIds, groupIds, parents, targets) } };
  });

describe('refresh() without expiring grants: walks shared between hubs', async () => {
  const { db } = await createTestDatabase();

  it('tree-like graphs: refresh() from empty, then after the grants change, equals the model', async () => {
    await fc.assert(
      fc.asyncProperty(treeGraphsArbitrary, async ({ before, after }) => {
        await loadGraph(db, before);
        await refresh(db);
        expect(await readPermissions(db)).toEqual(model.computePermissions(before));
        // every grant changes at once; refresh() compares with the stored rows
        await db.query(sql`delete from permgraph.grants`);
        await insertGrants(db, after.grants);
        await refresh(db);
        expect(await readPermissions(db)).toEqual(model.computePermissions(after));
      }),
      { numRuns: 150 },
    );
  });

  it('worked example: two teams over one project tree, a chain below, a user entering the middle', async () => {
    const graph: RefGraph = {
      nodes: [u('a'), u('b'), u('c'), g('t1'), g('t2'), g('root', 'a'), g('p1', 'root'), g('p2', 'p1'), g('p3', 'p2'), o('doc', 'p3')],
      grants: [
        grant('a', 1, 't1'), grant('b', 3, 't2'), grant('t1', 2, 'root'), grant('t2', 1, 'root'),
        grant('root', 1, 'p1', 'extra'), grant('c', 2, 'p2'), grant('p2', 3, 'b'), grant('p3', 1, 'root', 'loop'),
      ],
    };
    await loadGraph(db, graph);
    await refresh(db);
    expect(await readPermissions(db)).toEqual(model.computePermissions(graph));
  });
});
