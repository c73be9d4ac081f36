import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { listTargets, listUsers, type Page, type TargetItem, type UserItem } from '../../src/app/listing.ts';
import { sql } from '../../src/db/pool.ts';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { InvalidInputError } from '../../src/errors.ts';
import * as model from '../reference/model.ts';
import type { Level, RefGraph } from '../reference/model.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { PAST, graphArbitrary, loadGraph } from '../helpers/graph.ts';
import { GraphState, mutationArbitrary } from '../helpers/mutations.ts';

const levelArb = fc.constantFrom<Level>(1, 2, 3);
const size = { users: 6, groups: 8, objects: 6, grants: 30 };

/** The model's answer to "which ids may user act on at level", in byte-wise id order. */
function expectedTargets(graph: RefGraph, user: string, level: Level, now: Date): string[] {
  return graph.nodes.filter((n) => model.check(graph, user, n.id, level, now)).map((n) => n.id).sort(model.compareIds);
}

function expectedUsers(graph: RefGraph, target: string, level: Level, now: Date): string[] {
  return graph.nodes.filter((n) => n.kind === 'user' && model.check(graph, n.id, target, level, now)).map((n) => n.id).sort(model.compareIds);
}

/** The model's best level of user on x: its row, or its owner's row when that has traverse_owned. */
function bestLevel(rows: model.PermissionRow[], graph: RefGraph, user: string, x: string): number {
  const row = (t: string | null) => rows.find((r) => r.userId === user && r.targetId === t);
  const owner = graph.nodes.find((n) => n.id === x)?.ownerId ?? null;
  const viaOwner = row(owner);
  return Math.max(row(x)?.level ?? 0, viaOwner?.traverseOwned ? viaOwner.level : 0);
}

async function allPages<T>(fetch: (after: string | null) => Promise<Page<T>>): Promise<T[][]> {
  const pages: T[][] = [];
  let after: string | null = null;
  for (;;) {
    const page = await fetch(after);
    pages.push(page.items);
    if (page.next === null) return pages;
    after = page.next;
  }
}

describe('listTargets / listUsers against the reference model', async () => {
  const { db } = await createTestDatabase();

  it('random graphs: every page concatenated is exactly the allowed set, in id order, with the right levels', async () => {
    await fc.assert(
      fc.asyncProperty(graphArbitrary(size), levelArb, fc.integer({ min: 1, max: 4 }), async (graph, level, limit) => {
        await loadGraph(db, graph);
        await refresh(db);
        const now = new Date();
        const rows = model.computePermissions(graph);
        for (const user of graph.nodes.filter((n) => n.kind === 'user')) {
          const pages = await allPages((after) => listTargets(db, user.id, { level, limit, after }));
          for (const [i, page] of pages.entries()) {
            // every page is full except the last; the last is non-empty unless the whole listing is
            if (i < pages.length - 1) expect(page).toHaveLength(limit);
            else if (pages.length > 1) expect(page.length).toBeGreaterThan(0);
          }
          const items = pages.flat();
          expect(items.map((t) => t.id), `targets of ${user.id} at ${level}`).toEqual(expectedTargets(graph, user.id, level, now));
          for (const item of items) {
            expect(item.kind).toBe(graph.nodes.find((n) => n.id === item.id)!.kind);
            expect(item.level, `level of ${user.id} on ${item.id}`).toBe(bestLevel(rows, graph, user.id, item.id));
          }
          const objects = await listTargets(db, user.id, { level, kind: 'object', limit: 10_000 });
          expect(objects).toEqual({ items: items.filter((t) => t.kind === 'object'), next: null });
        }
        for (const target of graph.nodes) {
          const items = (await allPages((after) => listUsers(db, target.id, { level, limit, after }))).flat();
          expect(items.map((u) => u.id), `users of ${target.id} at ${level}`).toEqual(expectedUsers(graph, target.id, level, now));
          for (const item of items) expect(item.level).toBe(bestLevel(rows, graph, item.id, target.id));
        }
      }),
      { numRuns: 40 },
    );
  });

  it('many children per owner, ids clustered or interleaved: pages merge the owners exactly', async () => {
    // Owners: groups the user reaches, and a user it manages (its children of every kind count).
    const child = fc.record({
      owner: fc.nat(),
      name: fc.stringMatching(/^[ab]{1,4}$/),
      kind: fc.constantFrom<'object' | 'group' | 'user'>('object', 'object', 'object', 'group', 'user'),
      trash: fc.constantFrom<Date | null>(null, null, null, PAST),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(child, { maxLength: 40 }), levelArb, fc.integer({ min: 1, max: 7 }), fc.boolean(), async (children, level, limit, clustered) => {
        const owners = ['gA', 'gB', 'gC', 'boss'];
        const nodes: model.RefNode[] = [
          u('me'),
          u('boss'),
          g('gA'),
          g('gB'),
          g('gC', null, PAST),
          g('role'),
        ];
        children.forEach((c, i) => {
          const ownerId = owners[c.owner % owners.length]!;
          // clustered: ids grouped by owner; interleaved: owner plays no part in the order
          const id = clustered ? `${ownerId}/${c.name}${i}` : `${c.name}${i}`;
          nodes.push({ id, kind: c.kind, ownerId, trashAt: c.kind === 'user' ? null : c.trash });
        });
        const graph: RefGraph = {
          nodes,
          grants: [
            grant('me', 3, 'gA'),
            grant('me', 1, 'gB'),
            grant('me', 2, 'gC'),
            grant('me', 2, 'role'),
            grant('role', 3, 'boss'),
          ],
        };
        await loadGraph(db, graph);
        await refresh(db);
        const now = new Date();
        const items = (await allPages((after) => listTargets(db, 'me', { level, limit, after }))).flat();
        expect(items.map((t) => t.id)).toEqual(expectedTargets(graph, 'me', level, now));
        const groups = (await allPages((after) => listTargets(db, 'me', { level, limit, after, kind: 'group' }))).flat();
        expect(groups).toEqual(items.filter((t) => t.kind === 'group'));
      }),
      { numRuns: 60 },
    );
  });

  it('objects are listed through their owner, trashed ones hidden, users never hidden', async () => {
    const graph: RefGraph = {
      nodes: [
        u('ann'),
        g('team'),
        u('bob', 'team'),
        g('old', 'team', PAST),
        o('doc', 'team'),
        o('gone', 'team', PAST),
        o('inOld', 'old'),
      ],
      grants: [grant('ann', 2, 'team')],
    };
    await loadGraph(db, graph);
    await refresh(db);
    expect((await listTargets(db, 'ann')).items).toEqual([
      { id: 'ann', kind: 'user', level: 3, validUntil: null, validUntilExact: null },
      { id: 'bob', kind: 'user', level: 2, validUntil: null, validUntilExact: null },
      { id: 'doc', kind: 'object', level: 2, validUntil: null, validUntilExact: null },
      { id: 'team', kind: 'group', level: 2, validUntil: null, validUntilExact: null },
    ]);
    expect((await listTargets(db, 'ann', { level: 'manage' })).items.map((t) => t.id)).toEqual(['ann']);
    expect((await listUsers(db, 'doc', { level: 'write' })).items).toEqual([{ id: 'ann', level: 2, validUntil: null, validUntilExact: null }]);
    expect((await listUsers(db, 'gone')).items).toEqual([]);
  });

  it('pages with changes committed in between: rows allowed throughout are returned exactly once', async () => {
    const changes = fc.array(fc.array(mutationArbitrary.filter((m) => m.type !== 'deleteNode'), { maxLength: 4 }), { minLength: 8, maxLength: 8 });
    await fc.assert(
      fc.asyncProperty(graphArbitrary(size), levelArb, fc.integer({ min: 1, max: 3 }), changes, fc.nat(), async (graph, level, limit, batches, pick) => {
        await loadGraph(db, graph);
        await refresh(db);
        const state = new GraphState(graph);
        const users = graph.nodes.filter((n) => n.kind === 'user');
        const user = users[pick % users.length]!.id;
        const target = graph.nodes[pick % graph.nodes.length]!.id;

        const targetPages: TargetItem[][] = [];
        const userPages: UserItem[][] = [];
        let throughoutTargets: Set<string> | null = null;
        let throughoutUsers: Set<string> | null = null;
        let targetsAfter: string | null = null;
        let usersAfter: string | null = null;
        let targetsDone = false;
        let usersDone = false;
        for (let step = 0; !(targetsDone && usersDone); step++) {
          const now = new Date();
          const current = state.snapshot();
          const allowedTargets = new Set(expectedTargets(current, user, level, now));
          const allowedUsers = new Set(expectedUsers(current, target, level, now));
          throughoutTargets = intersect(throughoutTargets, allowedTargets);
          throughoutUsers = intersect(throughoutUsers, allowedUsers);
          if (!targetsDone) {
            const page = await listTargets(db, user, { level, limit, after: targetsAfter });
            for (const t of page.items) expect(allowedTargets.has(t.id), `${t.id} listed for ${user} at step ${step}`).toBe(true);
            targetPages.push(page.items);
            targetsAfter = page.next;
            targetsDone = page.next === null;
          }
          if (!usersDone) {
            const page = await listUsers(db, target, { level, limit, after: usersAfter });
            for (const u of page.items) expect(allowedUsers.has(u.id), `${u.id} listed for ${target} at step ${step}`).toBe(true);
            userPages.push(page.items);
            usersAfter = page.next;
            usersDone = page.next === null;
          }
          for (const m of batches[step % batches.length]!) await state.apply(db, m);
          await applyChanges(db);
        }
        const now = new Date();
        throughoutTargets = intersect(throughoutTargets, new Set(expectedTargets(state.snapshot(), user, level, now)));
        throughoutUsers = intersect(throughoutUsers, new Set(expectedUsers(state.snapshot(), target, level, now)));
        expectStrictlyIncreasingCovering(targetPages.flat().map((t) => t.id), throughoutTargets);
        expectStrictlyIncreasingCovering(userPages.flat().map((u) => u.id), throughoutUsers);
      }),
      { numRuns: 40 },
    );
  });

  it('bad input: clear errors', async () => {
    await loadGraph(db, {
      nodes: [
        u('ann'),
        g('team'),
      ],
      grants: [],
    });
    await refresh(db);
    const refused = async (promise: Promise<unknown>, message: RegExp) => {
      const error = await promise.then(() => null, (e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidInputError);
      expect((error as Error).message).toMatch(message);
    };
    await refused(listTargets(db, 'nobody'), /user "nobody" does not exist/);
    await refused(listTargets(db, 'team'), /"team" is a group, not a user/);
    await refused(listTargets(db, 'ann', { level: 0 as Level }), /level must be 1 \(read\), 2 \(write\) or 3 \(manage\), got 0/);
    await refused(listTargets(db, 'ann', { level: 4 as Level }), /level must be .* got 4/);
    await refused(listTargets(db, 'ann', { level: 'admin' }), /level must be .* got "admin"/);
    await refused(listTargets(db, 'ann', { kind: 'doc' as 'object' }), /kind must be user, group or object, got "doc"/);
    await refused(listTargets(db, 'ann', { limit: 0 }), /limit must be an integer from 1 to 10000, got 0/);
    await refused(listTargets(db, 'ann', { limit: 10_001 }), /limit must be an integer from 1 to 10000, got 10001/);
    await refused(listTargets(db, 'ann', { limit: 2.5 }), /limit must be an integer/);
    await refused(listTargets(db, 'ann', { after: 'not a cursor!' }), /invalid cursor .*not base64url/);
    await refused(listTargets(db, 'ann', { after: Buffer.from('{"x":1}').toString('base64url') }), /invalid cursor .*not a permgraph cursor/);
    await refused(listTargets(db, 'ann', { after: 'abc' }), /invalid cursor .*not a permgraph cursor/);
    const usersCursor = Buffer.from(JSON.stringify({ v: 1, l: 'users', a: 'ann' })).toString('base64url');
    await refused(listTargets(db, 'ann', { after: usersCursor }), /belongs to a listing of users, not of targets/);
    await refused(listUsers(db, 'nothing'), /target "nothing" does not exist/);
    await refused(listUsers(db, 'team', { limit: -1 }), /limit must be/);
    // The SQL functions check their own arguments too.
    await expect(db.query(sql`select * from permgraph.list_targets('ann', 1, null, null, 0)`)).rejects.toThrow(/permgraph: limit must be between 1 and 100000, got 0/);
    await expect(db.query(sql`select * from permgraph.list_users('team', 5)`)).rejects.toThrow(/permgraph: level must be/);
  });

  it('a limit of 10,000 is accepted; an id listed after the cursor ends exactly at the last page', async () => {
    const graph: RefGraph = {
      nodes: [u('ann'), ...['b', 'c', 'd'].map((id) => ({ id, kind: 'group' as const, ownerId: 'ann', trashAt: null }))],
      grants: [],
    };
    await loadGraph(db, graph);
    await refresh(db);
    const first = await listTargets(db, 'ann', { limit: 2 });
    expect(first.items.map((t) => t.id)).toEqual(['ann', 'b']);
    const second = await listTargets(db, 'ann', { limit: 2, after: first.next });
    expect(second).toEqual({ items: [{ id: 'c', kind: 'group', level: 3, validUntil: null, validUntilExact: null }, { id: 'd', kind: 'group', level: 3, validUntil: null, validUntilExact: null }], next: null });
    expect((await listTargets(db, 'ann', { limit: 10_000 })).items).toHaveLength(4);
  });
});

function intersect(a: Set<string> | null, b: Set<string>): Set<string> {
  return a === null ? new Set(b) : new Set([...a].filter((x) => b.has(x)));
}

function expectStrictlyIncreasingCovering(ids: string[], mustContain: Set<string>): void {
  for (let i = 1; i < ids.length; i++) expect(model.compareIds(ids[i - 1]!, ids[i]!), `order at ${ids[i]}`).toBe(-1);
  for (const id of mustContain) expect(ids, `${id} allowed throughout`).toContain(id);
}

describe('superusers in listings and explain', async () => {
  const { db } = await createTestDatabase();

  it('a superuser lists every node trash does not hide, is listed among who can see a node, and explain says why', async () => {
    await fc.assert(
      fc.asyncProperty(graphArbitrary({ users: 6, groups: 8, objects: 6, grants: 20 }), fc.nat(), async (graph, pick) => {
        await loadGraph(db, graph);
        const users = graph.nodes.filter((n) => n.kind === 'user');
        const root = users[pick % users.length]!.id;
        await db.query(sql`update permgraph.nodes set is_superuser = true where id = ${root}`);
        await refresh(db);
        const now = new Date();
        const visible = graph.nodes
          .filter((n) => n.kind === 'user' || (model.effectiveTrashAt(graph, n.id) ?? new Date(8.64e15)) > now)
          .map((n) => n.id)
          .sort(model.compareIds);
        const listed: string[] = [];
        let page: Page<TargetItem> = await listTargets(db, root, { limit: 3 });
        for (;;) {
          listed.push(...page.items.map((t) => t.id));
          expect(page.items.every((t) => t.level === 3)).toBe(true);
          if (!page.next) break;
          page = await listTargets(db, root, { limit: 3, after: page.next });
        }
        expect(listed).toEqual(visible);
        for (const id of visible) {
          const who = await listUsers(db, id, { level: 3, limit: 10_000 });
          expect(who.items.map((u: UserItem) => u.id)).toContain(root);
          const [row] = await db.query(sql`select permgraph.explain(${root}, ${id}, 3) as e`);
          expect(row.e).toMatchObject({ allowed: true, via: 'superuser', bestLevel: 3 });
        }
        for (const hidden of graph.nodes.filter((n) => !visible.includes(n.id))) {
          expect((await listUsers(db, hidden.id)).items).toEqual([]);
        }
      }),
      { numRuns: 20 },
    );
  });
});
