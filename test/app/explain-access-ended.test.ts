// explain()'s accessEnded: when access is refused and grants that have
// expired (still in permgraph.grants) would give it, which grants and when
// the access ended, also after the worker has recomputed the rows. Checked
// against the reference model evaluated at the moments around the one
// reported, never against the engine.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { explain, type Explanation, type PathEdge } from '../../src/app/explain.ts';
import { sql } from '../../src/db/pool.ts';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { check } from '../../src/engine/check.ts';
import * as model from '../reference/model.ts';
import type { Level, RefGraph } from '../reference/model.ts';
import { expiring, g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { FUTURE, PAST, graphArbitrary, loadGraph, wholeSecondAfter } from '../helpers/graph.ts';

const HOUR = 3600 * 1000;
/** Moments a grant expired at, hours ago (whole seconds: stored and compared exactly), earliest first. */
const AGO = [5, 3, 2, 1].map((h) => wholeSecondAfter(Date.now() - h * HOUR));
const AHEAD = wholeSecondAfter(Date.now() + 2 * HOUR);
const ms = (at: Date | null | undefined) => at?.getTime() ?? Infinity;

/** A moment of whole milliseconds as the database stores it: ISO 8601 with six digits. */
const exact = (at: Date) => at.toISOString().replace(/Z$/, '000Z');
const edge = (tail: string, level: Level, head: string, source = 'default', expiresAt: Date | null = null): PathEdge => ({
  tail, head, level, source, expiresAt, expiresAtExact: expiresAt && exact(expiresAt),
});
const ownerStep = (owner: string, thing: string): PathEdge => edge(owner, 3, thing, 'owner');

/** The graph with every grant's expiry taken away: the grants that have expired restored. */
const restored = (graph: RefGraph): RefGraph => ({ nodes: graph.nodes, grants: graph.grants.map((gr) => ({ ...gr, expiresAt: null })) });

/**
 * Checks a path edge by edge against the graph: it starts at the user, each
 * edge is a grant of the graph with that level, source and expiry (expired
 * ones included), an ownership, or the user's identity, it continues only
 * out of groups (or the start), and it ends at `end`.
 */
function expectPathInGraph(graph: RefGraph, user: string, path: PathEdge[], end: string, label: string): void {
  const kind = (id: string) => graph.nodes.find((n) => n.id === id)!.kind;
  expect(path.length, label).toBeGreaterThan(0);
  expect(path[0]!.tail, label).toBe(user);
  expect(path[path.length - 1]!.head, label).toBe(end);
  path.forEach((e, i) => {
    if (i > 0) {
      expect(e.tail, label).toBe(path[i - 1]!.head);
      const ownerStepAtEnd = i === path.length - 1 && e.source === 'owner';
      if (!ownerStepAtEnd && !(i === 1 && path[0]!.source === 'identity')) expect(kind(e.tail), `${label}: the path leaves ${e.tail}`).toBe('group');
    }
    if (e.source === 'owner') {
      expect(graph.nodes.find((n) => n.id === e.head)!.ownerId, label).toBe(e.tail);
      expect(e).toEqual(edge(e.tail, 3, e.head, 'owner'));
    } else if (e.source === 'identity') {
      expect(e).toEqual(edge(user, 3, user, 'identity'));
    } else {
      const found = graph.grants.find((gr) => gr.tailId === e.tail && gr.headId === e.head && gr.source === e.source);
      expect(found, `${label}: grant ${JSON.stringify(e)}`).toBeDefined();
      expect({ level: e.level, expiresAt: ms(e.expiresAt), expiresAtExact: e.expiresAtExact }, label).toEqual({
        level: found!.level,
        expiresAt: ms(found!.expiresAt),
        expiresAtExact: found!.expiresAt ? exact(found!.expiresAt) : null,
      });
    }
  });
}

/**
 * What the model says about accessEnded for one explanation: present exactly
 * when the thing is not trashed, the graph now refuses the level and the
 * graph with the expired grants restored allows it; then the model allows
 * just before `at` and refuses at `at`, and the route shown is one of the
 * graph's, through grants whose earliest expiry is `at`.
 */
function expectAccessEndedAgrees(graph: RefGraph, e: Explanation, level: Level | null, now: Date): boolean {
  const asked = level ?? 1;
  const label = `explain(${e.user}, ${e.thing}, ${level})`;
  const refusedNow = !model.check(graph, e.user, e.thing, asked, now);
  const allowedRestored = model.check(restored(graph), e.user, e.thing, asked, now);
  expect(e.accessEnded !== null, `${label}: refused now ${refusedNow}, allowed with the expired grants ${allowedRestored}`).toBe(refusedNow && allowedRestored);
  const ended = e.accessEnded;
  if (ended === null) return false;
  expect(e.allowed, label).toBe(false);
  expect(ended.level, label).toBe(asked);
  expect(ended.at.getTime(), label).toBeLessThanOrEqual(now.getTime());
  expect(model.check(graph, e.user, e.thing, asked, new Date(ended.at.getTime() - 1)), `${label}: allowed just before ${ended.at.toISOString()}`).toBe(true);
  expect(model.check(graph, e.user, e.thing, asked, ended.at), `${label}: refused at ${ended.at.toISOString()}`).toBe(false);

  // the route shown: the graph's, lasting exactly until `at`, and the one
  // explain() showed just before: at the strongest level there was then
  // (at least the level asked), directly when the thing's own row gave it
  const before = new Date(ended.at.getTime() - 1);
  const strongest = ([3, 2, 1] as const).find((l) => model.check(graph, e.user, e.thing, l, before));
  const thing = graph.nodes.find((n) => n.id === e.thing)!;
  expectPathInGraph(graph, e.user, ended.path, thing.id, label);
  const steps = [...ended.path, ...(ended.traversePath ?? [])];
  if (ended.via === 'owner') {
    expect(ended.path[ended.path.length - 1], label).toEqual(ownerStep(thing.ownerId!, thing.id));
    const owner = graph.nodes.find((n) => n.id === thing.ownerId)!;
    const toOwner = ended.path.slice(0, -1);
    expect(Math.min(...toOwner.map((s) => s.level)), `${label}: the strongest route just before`).toBe(strongest);
    const directRow = model.computePermissions(graph, before).find((r) => r.userId === e.user && r.targetId === e.thing);
    expect(directRow?.level ?? 0, `${label}: no direct route as strong just before`).toBeLessThan(strongest!);
    if (owner.kind === 'user' && owner.id !== e.user && toOwner[toOwner.length - 1]!.level !== 3) {
      expectPathInGraph(graph, e.user, ended.traversePath!, owner.id, label);
      expect(ended.traversePath![ended.traversePath!.length - 1]!.level, label).toBe(3);
    } else {
      expect(ended.traversePath, label).toBeNull();
    }
  } else {
    expect(Math.min(...ended.path.map((s) => s.level)), `${label}: the strongest route just before`).toBe(strongest);
    expect(ended.traversePath, label).toBeNull();
  }
  expect(Math.min(...steps.map((s) => ms(s.expiresAt))), label).toBe(ended.at.getTime());
  // the grants of the route that have expired, earliest first, each once
  const expired = steps.filter((s, i) => ms(s.expiresAt) <= now.getTime() && steps.findIndex((t) => t.tail === s.tail && t.head === s.head && t.source === s.source) === i);
  expect([...ended.expiredGrants].sort((a, b) => ms(a.expiresAt) - ms(b.expiresAt)), label).toEqual(ended.expiredGrants);
  expect(new Set(ended.expiredGrants.map((s) => JSON.stringify(s))), label).toEqual(new Set(expired.map((s) => JSON.stringify(s))));
  expect(ended.expiredGrants[0]!.expiresAt, label).toEqual(ended.at);
  // (the expiries here are whole seconds: milliseconds compare them exactly)
  expect(ended.endedBy, label).toBe(ended.expiredGrants.filter((s) => ms(s.expiresAt) === ended.at.getTime()).length);
  return true;
}

describe('explain(): accessEnded, when access that expired grants gave has ended', async () => {
  const { db } = await createTestDatabase();

  it('random graphs with expiries, after a batch: present exactly when the expired grants would allow, and says when access ended', async () => {
    // expiries: mostly none; four moments past, one ahead
    const expiries = fc.constantFrom<Date | null>(null, null, null, ...AGO, AHEAD);
    const picks = fc.array(fc.tuple(fc.nat(), fc.nat(), fc.option(fc.constantFrom<Level>(1, 2, 3))), { minLength: 15, maxLength: 15 });
    let reported = 0;
    await fc.assert(
      fc.asyncProperty(graphArbitrary({ users: 5, groups: 5, objects: 5, grants: 30 }, 0.5, expiries), picks, fc.boolean(), async (graph, choices, batch) => {
        if (batch) {
          // the expired grants were not yet expired when the rows were computed; a batch applies their new expiry
          await loadGraph(db, restored(graph));
          await refresh(db);
          for (const gr of graph.grants.filter((x) => x.expiresAt != null)) {
            await db.query(sql`update permgraph.grants set expires_at = ${gr.expiresAt} where tail_id = ${gr.tailId} and head_id = ${gr.headId} and source = ${gr.source}`);
          }
          await applyChanges(db);
        } else {
          await loadGraph(db, graph);
          await refresh(db);
        }
        const now = new Date();
        const users = graph.nodes.filter((n) => n.kind === 'user');
        // the random questions, and every one to which the model says the hint belongs
        const questions: [string, string, Level | null][] = choices.map(([ui, ti, level]) => [users[ui % users.length]!.id, graph.nodes[ti % graph.nodes.length]!.id, level]);
        for (const user of users) {
          for (const thing of graph.nodes) {
            for (const level of [1, 2, 3] as const) {
              if (!model.check(graph, user.id, thing.id, level, now) && model.check(restored(graph), user.id, thing.id, level, now)) questions.push([user.id, thing.id, level]);
            }
          }
        }
        for (const [user, thing, level] of questions) {
          const e = await explain(db, user, thing, level);
          expect(e.pendingChanges).toBe(0);
          if (expectAccessEndedAgrees(graph, e, level, now)) reported++;
        }
      }),
      { numRuns: 60 },
    );
    expect(reported).toBeGreaterThan(100); // the property had something to check
  });

  it('things that other users own, expiries on the path to the owner and on the manage edge into it: the same property', async () => {
    // Three users, three groups, three objects each owned by a user: most
    // hints go through the owner, and need a manage edge into it, whose own
    // path may expire before or after the path to the owner.
    const expiries = fc.constantFrom<Date | null>(null, null, ...AGO, AHEAD);
    const ids = ['u0', 'u1', 'u2', 'g0', 'g1', 'g2', 'o0', 'o1', 'o2'];
    const arbitrary = fc
      .record({
        owners: fc.array(fc.nat(2), { minLength: 3, maxLength: 3 }),
        grants: fc.array(
          fc.record({ tail: fc.nat(5), head: fc.nat(5), level: fc.constantFrom<Level>(1, 2, 3), source: fc.constantFrom('a', 'b'), expiresAt: expiries }),
          { minLength: 6, maxLength: 20 },
        ),
      })
      .map(({ owners, grants }): RefGraph => ({
        nodes: [u('u0'), u('u1'), u('u2'), g('g0'), g('g1'), g('g2'), ...owners.map((owner, i) => o(`o${i}`, `u${owner}`))],
        grants: [
          ...new Map(
            grants.map((x) => [`${x.tail} ${x.head} ${x.source}`, x.expiresAt ? expiring(ids[x.tail]!, x.level, ids[x.head]!, x.expiresAt, x.source) : grant(ids[x.tail]!, x.level, ids[x.head]!, x.source)]),
          ).values(),
        ],
      }));
    // Besides the random graphs, one where both u1 and u2 lose write on
    // every object: each had it through g0 (a write edge into u0, their
    // owner), while only g1's weaker route ends in manage on u0. So each of
    // the 6 hints at write names both routes, whatever the random runs
    // draw (their count of such routes varies from run to run).
    const bothRoutes: RefGraph = {
      nodes: [u('u0'), u('u1'), u('u2'), g('g0'), g('g1'), g('g2'), o('o0', 'u0'), o('o1', 'u0'), o('o2', 'u0')],
      grants: [
        expiring('u1', 3, 'g0', AGO[1]!),
        expiring('u2', 3, 'g0', AGO[2]!),
        grant('g0', 2, 'u0'),
        grant('u1', 1, 'g1'),
        grant('u2', 1, 'g1'),
        grant('g1', 3, 'u0'),
      ],
    };
    let traversed = 0;
    await fc.assert(
      fc.asyncProperty(arbitrary, async (graph) => {
        await loadGraph(db, graph);
        await refresh(db);
        const now = new Date();
        for (const user of ['u0', 'u1', 'u2']) {
          for (const thing of ['o0', 'o1', 'o2']) {
            for (const level of [null, 1, 2, 3] as const) {
              const e = await explain(db, user, thing, level);
              if (expectAccessEndedAgrees(graph, e, level, now) && e.accessEnded!.traversePath) traversed++;
            }
          }
        }
      }),
      { numRuns: 100, examples: [[bothRoutes]] }, // (the example is the first of the 100 runs)
    );
    // routes through a manage edge into the owner were checked: the example's
    // 6, and usually 12 to ~30 more from the random graphs
    expect(traversed).toBeGreaterThanOrEqual(6);
  });

  it('names the expired grant and when access ended, on the path explain would have shown', async () => {
    await loadGraph(db, {
      nodes: [u('alice'), g('g1'), g('p'), o('spec', 'p')],
      grants: [grant('alice', 3, 'g1'), expiring('g1', 1, 'p', AGO[1]!, 'member')],
    });
    await refresh(db);
    const e = await explain(db, 'alice', 'spec', 'read');
    expect(e).toMatchObject({ allowed: false, reason: 'no path', bestLevel: 0, path: [], expiredAt: null, pendingChanges: 0 });
    expect(e.accessEnded).toEqual({
      at: AGO[1], atExact: exact(AGO[1]!),
      level: 1,
      via: 'owner',
      path: [edge('alice', 3, 'g1'), edge('g1', 1, 'p', 'member', AGO[1]), ownerStep('p', 'spec')],
      traversePath: null,
      expiredGrants: [edge('g1', 1, 'p', 'member', AGO[1])],
      endedBy: 1,
    });
    // the group itself: directly
    expect((await explain(db, 'alice', 'p')).accessEnded).toMatchObject({ at: AGO[1], level: 1, via: 'direct', path: [edge('alice', 3, 'g1'), edge('g1', 1, 'p', 'member', AGO[1])] });
    // what the expired grant never gave: no hint
    expect(await explain(db, 'alice', 'spec', 'write')).toMatchObject({ reason: 'no path', accessEnded: null });
    // what still allows: none
    expect(await explain(db, 'alice', 'g1', 'manage')).toMatchObject({ allowed: true, accessEnded: null });
  });

  it('of several routes, the one that lasted longest: the latest of their earliest expiries', async () => {
    await loadGraph(db, {
      nodes: [u('bo'), g('a'), g('b'), g('c'), g('proj')],
      grants: [
        // through a: ended at AGO[0] (its second grant lasted longer, but the path needs both)
        expiring('bo', 2, 'a', AGO[3]!), expiring('a', 2, 'proj', AGO[0]!),
        // through b: ended at AGO[2], the latest
        expiring('bo', 2, 'b', AGO[2]!), grant('b', 2, 'proj'),
        // through c: ended at AGO[1]
        grant('bo', 2, 'c'), expiring('c', 2, 'proj', AGO[1]!),
      ],
    });
    await refresh(db);
    const e = await explain(db, 'bo', 'proj');
    expect(e).toMatchObject({ reason: 'no path' });
    expect(e.accessEnded).toMatchObject({ at: AGO[2], via: 'direct', path: [edge('bo', 2, 'b', 'default', AGO[2]), edge('b', 2, 'proj')] });
    // two expired grants on the route: both listed, the one that ended the access first
    await db.query(sql`update permgraph.grants set expires_at = ${AGO[3]} where tail_id = 'b' and head_id = 'proj'`);
    await applyChanges(db);
    const both = await explain(db, 'bo', 'proj');
    expect(both.accessEnded).toMatchObject({ at: AGO[2], path: [edge('bo', 2, 'b', 'default', AGO[2]), edge('b', 2, 'proj', 'default', AGO[3])] });
    expect(both.accessEnded!.expiredGrants).toEqual([edge('bo', 2, 'b', 'default', AGO[2]), edge('b', 2, 'proj', 'default', AGO[3])]);
    expect(both.accessEnded!.endedBy).toBe(1);
    // both at the same moment: both ended it
    await db.query(sql`update permgraph.grants set expires_at = ${AGO[2]} where tail_id = 'b' and head_id = 'proj'`);
    await applyChanges(db);
    expect((await explain(db, 'bo', 'proj')).accessEnded).toMatchObject({ at: AGO[2], endedBy: 2 });
    // less than a millisecond apart, which Dates do not show: only the earlier one ended it
    await db.query(sql`update permgraph.grants set expires_at = ${AGO[2]}::timestamptz + interval '700 microseconds' where tail_id = 'bo' and head_id = 'b'`);
    await db.query(sql`update permgraph.grants set expires_at = ${AGO[2]}::timestamptz + interval '200 microseconds' where tail_id = 'b' and head_id = 'proj'`);
    await applyChanges(db);
    const close = (await explain(db, 'bo', 'proj')).accessEnded!;
    expect(close.expiredGrants.map((e) => `${e.tail}->${e.head}`)).toEqual(['b->proj', 'bo->b']);
    expect(close.endedBy).toBe(1);
    // the exact texts tell them apart
    const micros = (at: Date, n: number) => at.toISOString().replace(/\.000Z$/, `.000${n}Z`);
    expect(close.atExact).toBe(micros(AGO[2]!, 200));
    expect(close.expiredGrants.map((e) => e.expiresAtExact)).toEqual([micros(AGO[2]!, 200), micros(AGO[2]!, 700)]);
    const [{ at }] = await db.query(sql`select (permgraph.explain('bo', 'proj') -> 'accessEnded' ->> 'at')::timestamptz = ${AGO[2]}::timestamptz + interval '200 microseconds' as at`);
    expect(at).toBe(true);
  });

  it('read asked, read and manage through two routes that expired: the one that lasted, and when both did, the stronger', async () => {
    // bea reads doc directly, and manages it through team, which owns it
    const nodes = [u('bea'), g('team'), o('doc', 'team')];
    const readUntil = (at: Date) => expiring('bea', 1, 'doc', at, 'share');
    const manageUntil = (at: Date) => expiring('bea', 3, 'team', at, 'admin-ui');
    const readRoute = (at: Date) => ({ via: 'direct', path: [edge('bea', 1, 'doc', 'share', at)], traversePath: null });
    const manageRoute = (at: Date) => ({ via: 'owner', path: [edge('bea', 3, 'team', 'admin-ui', at), ownerStep('team', 'doc')], traversePath: null });
    const cases = [
      // read lasted longer: access to read ended with it
      { read: AGO[2]!, manage: AGO[0]!, at: AGO[2]!, route: readRoute(AGO[2]!), best: 1 },
      // manage lasted longer: it gave read too, until it ended
      { read: AGO[0]!, manage: AGO[2]!, at: AGO[2]!, route: manageRoute(AGO[2]!), best: 3 },
      // both ended together: just before, explain showed the strongest path, manage through the owner
      { read: AGO[2]!, manage: AGO[2]!, at: AGO[2]!, route: manageRoute(AGO[2]!), best: 3 },
    ];
    for (const c of cases) {
      const graph = { nodes, grants: [readUntil(c.read), manageUntil(c.manage)] };
      await loadGraph(db, graph);
      await refresh(db);
      const now = new Date();
      // the reference: read allowed just before the moment and not at it, at the best level shown
      const before = new Date(c.at.getTime() - 1);
      expect([model.check(graph, 'bea', 'doc', 1, before), model.check(graph, 'bea', 'doc', 1, c.at)]).toEqual([true, false]);
      expect(([1, 2, 3] as const).filter((level) => model.check(graph, 'bea', 'doc', level, before)).pop()).toBe(c.best);
      for (const level of ['read', null] as const) {
        const e = await explain(db, 'bea', 'doc', level);
        expect(e).toMatchObject({ allowed: false, reason: 'no path' });
        expect(e.accessEnded, JSON.stringify(c)).toEqual({ at: c.at, atExact: exact(c.at), level: 1, ...c.route, expiredGrants: c.route.path.filter((s) => s.expiresAt), endedBy: 1 });
        expectAccessEndedAgrees(graph, e, level === null ? null : 1, now);
      }
    }
  });

  it("'level too low': the level that ended, while a lower one remains", async () => {
    await loadGraph(db, {
      nodes: [u('cy'), g('team'), o('doc', 'team')],
      grants: [grant('cy', 1, 'team', 'ldap'), expiring('cy', 3, 'team', AGO[2]!, 'admin-ui')],
    });
    await refresh(db);
    const e = await explain(db, 'cy', 'doc', 'write');
    expect(e).toMatchObject({ allowed: false, reason: 'level too low', bestLevel: 1 });
    expect(e.accessEnded).toEqual({
      at: AGO[2], atExact: exact(AGO[2]!), level: 2, via: 'owner', traversePath: null,
      path: [edge('cy', 3, 'team', 'admin-ui', AGO[2]), ownerStep('team', 'doc')],
      expiredGrants: [edge('cy', 3, 'team', 'admin-ui', AGO[2])],
      endedBy: 1,
    });
    expect(await explain(db, 'cy', 'doc', 'read')).toMatchObject({ allowed: true, accessEnded: null });
    expect(await explain(db, 'cy', 'doc')).toMatchObject({ allowed: true, accessEnded: null });
  });

  it("a thing another user owns: the expired manage edge into that user, on the traverse path", async () => {
    await loadGraph(db, {
      nodes: [u('di'), u('xena'), g('m'), o('memo', 'xena')],
      grants: [grant('di', 2, 'xena'), grant('di', 1, 'm'), expiring('m', 3, 'xena', AGO[1]!)],
    });
    await refresh(db);
    const e = await explain(db, 'di', 'memo', 'write');
    expect(e).toMatchObject({ allowed: false, reason: 'no path' });
    expect(e.accessEnded).toEqual({
      at: AGO[1], atExact: exact(AGO[1]!), level: 2, via: 'owner',
      path: [edge('di', 2, 'xena'), ownerStep('xena', 'memo')],
      traversePath: [edge('di', 1, 'm'), edge('m', 3, 'xena', 'default', AGO[1])],
      expiredGrants: [edge('m', 3, 'xena', 'default', AGO[1])],
      endedBy: 1,
    });
    // the manage edge lasts, but the grant that reached its tail ended earlier: that one ended the access
    await db.query(sql`update permgraph.grants set expires_at = null where tail_id = 'm'`);
    await db.query(sql`update permgraph.grants set expires_at = ${AGO[2]} where tail_id = 'di' and head_id = 'm'`);
    await applyChanges(db);
    expect((await explain(db, 'di', 'memo', 'write')).accessEnded).toEqual({
      at: AGO[2], atExact: exact(AGO[2]!), level: 2, via: 'owner',
      path: [edge('di', 2, 'xena'), ownerStep('xena', 'memo')],
      traversePath: [edge('di', 1, 'm', 'default', AGO[2]), edge('m', 3, 'xena')],
      expiredGrants: [edge('di', 1, 'm', 'default', AGO[2])],
      endedBy: 1,
    });
  });

  it('trash wins, and a superuser is allowed: no hint', async () => {
    await loadGraph(db, {
      nodes: [u('ed'), g('bin', null, PAST), g('later', null, FUTURE)],
      grants: [expiring('ed', 1, 'bin', AGO[0]!), expiring('ed', 1, 'later', AGO[0]!)],
    });
    await refresh(db);
    expect(await explain(db, 'ed', 'bin')).toMatchObject({ reason: 'trashed', accessEnded: null });
    expect((await explain(db, 'ed', 'later')).accessEnded).toMatchObject({ at: AGO[0] }); // trashed only later
    await db.query(sql`update permgraph.nodes set is_superuser = true where id = 'ed'`);
    expect(await explain(db, 'ed', 'later')).toMatchObject({ allowed: true, via: 'superuser', accessEnded: null });
  });

  it("the same before and after the worker recomputes the rows: 'expired', then 'no path'", async () => {
    await loadGraph(db, { nodes: [u('fay'), g('eng'), o('spec', 'eng')], grants: [expiring('fay', 2, 'eng', AHEAD)] });
    await refresh(db);
    // the grant has ended since the rows were computed, and they await their recomputation
    await db.query(sql`update permgraph.grants set expires_at = ${AGO[3]} where tail_id = 'fay'`);
    await db.query(sql`update permgraph.permissions set valid_until = ${AGO[3]} where user_id = 'fay' and target_id = 'eng'`);
    const before = await explain(db, 'fay', 'spec', 'write');
    expect(before).toMatchObject({ allowed: false, reason: 'expired', expiredAt: AGO[3], bestLevel: 0 });
    const hint = {
      at: AGO[3], atExact: exact(AGO[3]!), level: 2, via: 'owner', traversePath: null,
      path: [edge('fay', 2, 'eng', 'default', AGO[3]), ownerStep('eng', 'spec')],
      expiredGrants: [edge('fay', 2, 'eng', 'default', AGO[3])],
      endedBy: 1,
    };
    expect(before.accessEnded).toEqual(hint);
    await applyChanges(db);
    const after = await explain(db, 'fay', 'spec', 'write');
    expect(after).toMatchObject({ allowed: false, reason: 'no path', expiredAt: null, pendingChanges: 0 });
    expect(after.accessEnded).toEqual(hint);
    expect(await check(db, 'fay', 'spec', 2)).toBe(false);
    // deleting the expired grant removes the hint with it
    await db.query(sql`delete from permgraph.grants where tail_id = 'fay'`);
    expect(await explain(db, 'fay', 'spec', 'write')).toMatchObject({ reason: 'no path', accessEnded: null });
  });
});
