import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { explain, type Explanation, type PathEdge } from '../../src/app/explain.ts';
import { sql } from '../../src/db/pool.ts';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { check } from '../../src/engine/check.ts';
import { InvalidInputError } from '../../src/errors.ts';
import * as model from '../reference/model.ts';
import type { Level, RefGrant, RefGraph } from '../reference/model.ts';
import { u, g, o, expiring, grant } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { FUTURE, PAST, graphArbitrary, loadGraph } from '../helpers/graph.ts';

const edge = (tail: string, level: Level, head: string, source = 'default'): PathEdge => ({ tail, head, level, source, expiresAt: null, expiresAtExact: null });

/**
 * Checks a path edge by edge against the graph (not against the engine): it
 * starts at the user, each edge exists (a grant with that source and level,
 * an ownership, or the user's identity), each step continues only out of a
 * group (or the start), and it ends at `end`. Returns its weakest level.
 */
function checkPath(graph: RefGraph, user: string, path: PathEdge[], end: string, allowOwnerStepAtEnd: boolean): number {
  const kind = (id: string) => graph.nodes.find((n) => n.id === id)!.kind;
  expect(path.length).toBeGreaterThan(0);
  expect(path[0]!.tail).toBe(user);
  expect(path[path.length - 1]!.head).toBe(end);
  path.forEach((e, i) => {
    if (i > 0) {
      expect(e.tail).toBe(path[i - 1]!.head);
      const lastOwnerStep = allowOwnerStepAtEnd && i === path.length - 1 && e.source === 'owner';
      if (!lastOwnerStep && !(i === 1 && path[0]!.source === 'identity')) expect(kind(e.tail), `path leaves ${e.tail}`).toBe('group');
    }
    if (e.source === 'identity') {
      expect(e).toEqual({ tail: user, head: user, level: 3, source: 'identity', expiresAt: null, expiresAtExact: null });
      expect(i).toBe(0);
    } else if (e.source === 'owner') {
      expect(graph.nodes.find((n) => n.id === e.head)!.ownerId, `owner of ${e.head}`).toBe(e.tail);
      expect(e.level).toBe(3);
    } else {
      expect(graph.grants, `grant ${JSON.stringify(e)}`).toContainEqual({ tailId: e.tail, headId: e.head, level: e.level, source: e.source });
    }
  });
  return Math.min(...path.map((e) => e.level));
}

/** Compares one explanation with what the model says about (user, thing, level). */
function expectAgreesWithModel(graph: RefGraph, rows: model.PermissionRow[], e: Explanation, level: Level | null, now: Date): void {
  const row = (t: string | null) => rows.find((r) => r.userId === e.user && r.targetId === t);
  const thing = graph.nodes.find((n) => n.id === e.thing)!;
  const direct = row(thing.id)?.level ?? 0;
  const ownerRow = row(thing.ownerId);
  const viaOwner = ownerRow?.traverseOwned ? ownerRow.level : 0;
  const best = Math.max(direct, viaOwner);
  const trash = model.effectiveTrashAt(graph, thing.id);
  const trashed = trash !== null && trash.getTime() <= now.getTime();
  const label = `explain(${e.user}, ${e.thing}, ${level})`;

  expect(e.bestLevel, label).toBe(best);
  expect(e.allowed, label).toBe(model.check(graph, e.user, thing.id, level ?? 1, now));
  expect(e.reason, label).toBe(trashed ? 'trashed' : best === 0 ? 'no path' : best < (level ?? 1) ? 'level too low' : null);
  expect(e.trashAt?.getTime() ?? null, label).toBe(trash?.getTime() ?? null);
  expect(e.pendingChanges, label).toBe(0); // nothing pending: the table says what the edges say
  if (best === 0) {
    expect(e.path, label).toEqual([]);
    return;
  }
  const ownerStep = e.via === 'owner';
  expect(checkPath(graph, e.user, e.path, thing.id, ownerStep), label).toBe(best);
  if (ownerStep) {
    expect(e.path[e.path.length - 1], label).toEqual(edge(thing.ownerId!, 3, thing.id, 'owner'));
    expect(viaOwner, label).toBe(best);
    const owner = graph.nodes.find((n) => n.id === thing.ownerId)!;
    const toOwner = e.path.slice(0, -1);
    if (owner.kind === 'user' && owner.id !== e.user && toOwner[toOwner.length - 1]!.level !== 3) {
      // the owner's belongings are reachable through a path that ends with a manage edge
      checkPath(graph, e.user, e.traversePath!, owner.id, false);
      expect(e.traversePath![e.traversePath!.length - 1]!.level, label).toBe(3);
    } else {
      expect(e.traversePath, label).toBeNull();
    }
  } else {
    expect(direct, label).toBe(best);
    expect(e.traversePath, label).toBeNull();
  }
}

describe('explain() against the reference model', async () => {
  const { db } = await createTestDatabase();

  it('random graphs: the path is the strongest, its edges exist, and the reason matches', async () => {
    const picks = fc.array(fc.tuple(fc.nat(), fc.nat(), fc.option(fc.constantFrom<Level>(1, 2, 3))), { minLength: 25, maxLength: 25 });
    await fc.assert(
      fc.asyncProperty(graphArbitrary({ users: 6, groups: 10, objects: 6, grants: 35 }), picks, async (graph, choices) => {
        await loadGraph(db, graph);
        await refresh(db);
        const now = new Date();
        const rows = model.computePermissions(graph);
        const users = graph.nodes.filter((n) => n.kind === 'user');
        for (const [ui, ti, level] of choices) {
          const user = users[ui % users.length]!.id;
          const thing = graph.nodes[ti % graph.nodes.length]!.id;
          expectAgreesWithModel(graph, rows, await explain(db, user, thing, level), level, now);
        }
      }),
      { numRuns: 60 },
    );
  });

  it('worked examples: owner steps, manage edges on users, cycles, ties', async () => {
    await loadGraph(db, {
      nodes: [u('u1'), u('u2'), u('a'), u('userB'), g('p1', 'u1'), g('p2', 'p1'), g('r'), g('c1'), g('c2'), o('doc', 'p2'), o('bdoc', 'userB'), g('w'), g('m')],
      grants: [
        grant('r', 2, 'p1'), grant('u2', 1, 'r'),
        grant('a', 2, 'w'), grant('w', 2, 'userB'), grant('a', 1, 'm'), grant('m', 3, 'userB'),
        grant('c1', 1, 'c2'), grant('c2', 2, 'c1'), grant('u1', 3, 'c1'),
      ],
    });
    await refresh(db);

    // through a role, then ownership edges, then the object's owner
    expect(await explain(db, 'u2', 'doc', 'read')).toMatchObject({
      allowed: true, reason: null, bestLevel: 1, via: 'owner', traversePath: null,
      path: [edge('u2', 1, 'r'), edge('r', 2, 'p1'), edge('p1', 3, 'p2', 'owner'), edge('p2', 3, 'doc', 'owner')],
    });
    expect(await explain(db, 'u2', 'doc', 'write')).toMatchObject({ allowed: false, reason: 'level too low', bestLevel: 1 });
    expect(await explain(db, 'u1', 'doc')).toMatchObject({
      allowed: true, bestLevel: 3,
      path: [edge('u1', 3, 'p1', 'owner'), edge('p1', 3, 'p2', 'owner'), edge('p2', 3, 'doc', 'owner')],
    });
    // a writes what userB owns: the level comes from the write path, traverse_owned from the manage edge
    expect(await explain(db, 'a', 'bdoc', 'write')).toMatchObject({
      allowed: true, bestLevel: 2, via: 'owner',
      path: [edge('a', 2, 'w'), edge('w', 2, 'userB'), edge('userB', 3, 'bdoc', 'owner')],
      traversePath: [edge('a', 1, 'm'), edge('m', 3, 'userB')],
    });
    // cycles terminate; the best path is taken
    expect(await explain(db, 'u1', 'c2')).toMatchObject({ bestLevel: 1, path: [edge('u1', 3, 'c1'), edge('c1', 1, 'c2')] });
    // identity, and a user's own things
    expect(await explain(db, 'a', 'a')).toMatchObject({ allowed: true, bestLevel: 3, path: [{ tail: 'a', head: 'a', level: 3, source: 'identity' }] });
    expect(await explain(db, 'userB', 'bdoc', 'manage')).toMatchObject({
      allowed: true, via: 'owner', path: [{ tail: 'userB', head: 'userB', level: 3, source: 'identity', expiresAt: null, expiresAtExact: null }, edge('userB', 3, 'bdoc', 'owner')],
    });
    expect(await explain(db, 'u2', 'c1')).toMatchObject({ allowed: false, reason: 'no path', bestLevel: 0, path: [], via: null });
  });

  it('trashed things: reason and effective trash time; a future trash time does not hide', async () => {
    await loadGraph(db, {
      nodes: [u('ann'), g('top', null, PAST), g('sub', 'top'), o('doc', 'sub', FUTURE), g('later', null, FUTURE)],
      grants: [grant('ann', 2, 'top'), grant('ann', 1, 'later')],
    });
    await refresh(db);
    const sub = await explain(db, 'ann', 'sub', 'read');
    expect(sub).toMatchObject({ allowed: false, reason: 'trashed', bestLevel: 2, trashAt: PAST });
    expect(sub.path).toEqual([edge('ann', 2, 'top'), edge('top', 3, 'sub', 'owner')]);
    expect(await explain(db, 'ann', 'doc')).toMatchObject({ allowed: false, reason: 'trashed', trashAt: PAST });
    expect(await explain(db, 'ann', 'later', 'write')).toMatchObject({ allowed: false, reason: 'level too low', trashAt: FUTURE });
  });

  it('moments to the microsecond: beside each Date, the exact text, in UTC whatever the session\'s time zone', async () => {
    // whole milliseconds plus some microseconds, which a Date cannot hold
    const ms = (at: number) => new Date(Math.floor(at / 1000) * 1000);
    const ahead = ms(Date.now() + 3600_000);
    const ago = ms(Date.now() - 3600_000);
    // in 1900, Kathmandu's and St. John's offsets had seconds (+05:41:16, -03:30:52);
    // and St. John's puts the first hours of year 1 in 1 BC; Berlin and
    // Kathmandu put the last hour of 9999 in year 10000
    const longAgo = new Date('1900-01-01T00:00:00Z');
    const yearOne = new Date('0001-01-01T00:00:00Z');
    /** The moment `at` plus `micros` (under 1000) as the database stores it, in ISO 8601 with six digits. */
    const exact = (at: Date, micros: number) => at.toISOString().replace(/Z$/, `${String(micros).padStart(3, '0')}Z`);
    await loadGraph(db, { nodes: [u('ann'), u('bob'), g('eng'), o('spec', 'eng'), o('old', 'eng'), o('first', 'eng'), o('last', 'eng')], grants: [] });
    await db.query(sql`update permgraph.nodes set trash_at = ${longAgo}::timestamptz + interval '1 microsecond' where id = 'old'`);
    await db.query(sql`update permgraph.nodes set trash_at = ${yearOne}::timestamptz + interval '3 microseconds' where id = 'first'`);
    await db.query(sql`update permgraph.nodes set trash_at = '9999-12-31T23:00:00.000700Z' where id = 'last'`);
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level, expires_at) values
      ('ann', 'eng', 2, ${ahead}::timestamptz + interval '250 microseconds'),
      ('bob', 'eng', 1, ${ago}::timestamptz + interval '700 microseconds')`);
    await refresh(db);
    for (const zone of ['UTC', 'Europe/Berlin', 'Asia/Kathmandu', 'America/St_Johns']) {
      const [allowed, ended, trashed, first, last] = await db.tx(async (tx) => {
        await tx.query(sql`select set_config('timezone', ${zone}, true)`);
        return Promise.all([explain(tx, 'ann', 'spec'), explain(tx, 'bob', 'spec'), explain(tx, 'ann', 'old'), explain(tx, 'ann', 'first'), explain(tx, 'ann', 'last')]);
      });
      expect(allowed, zone).toMatchObject({
        allowed: true,
        validUntil: ahead, validUntilExact: exact(ahead, 250),
        rows: [{ target: 'eng', validUntil: ahead, validUntilExact: exact(ahead, 250) }],
        path: [{ tail: 'ann', expiresAt: ahead, expiresAtExact: exact(ahead, 250) }, { tail: 'eng', expiresAt: null, expiresAtExact: null }],
        trashAt: null, trashAtExact: null, expiredAt: null, expiredAtExact: null,
      });
      expect(ended.accessEnded, zone).toMatchObject({
        at: ago, atExact: exact(ago, 700),
        expiredGrants: [{ tail: 'bob', expiresAt: ago, expiresAtExact: exact(ago, 700) }],
      });
      expect(trashed, zone).toMatchObject({ reason: 'trashed', trashAt: longAgo, trashAtExact: exact(longAgo, 1) });
      expect(first, zone).toMatchObject({ reason: 'trashed', trashAt: yearOne, trashAtExact: exact(yearOne, 3) });
      expect(last, zone).toMatchObject({ allowed: true, trashAt: new Date('9999-12-31T23:00:00.000Z'), trashAtExact: '9999-12-31T23:00:00.000700Z' });
    }
    // 'expired': the rows that allowed ended at a moment with microseconds
    await db.query(sql`update permgraph.permissions set valid_until = ${ago}::timestamptz + interval '5 microseconds' where user_id = 'ann' and target_id = 'eng'`);
    expect(await explain(db, 'ann', 'spec')).toMatchObject({
      reason: 'expired', expiredAt: ago, expiredAtExact: exact(ago, 5),
      rows: [{ validUntil: ago, validUntilExact: exact(ago, 5), expired: true }],
    });
  });

  it('ties are broken deterministically: fewest edges, then smallest ids', async () => {
    await loadGraph(db, {
      nodes: [u('ann'), g('b'), g('a'), g('long1'), g('long2'), o('doc')],
      grants: [
        grant('ann', 2, 'b'), grant('ann', 2, 'a'), grant('a', 2, 'doc'), grant('b', 2, 'doc'),
        grant('ann', 2, 'long1'), grant('long1', 2, 'long2'), grant('long2', 2, 'doc'),
        grant('ann', 2, 'a', 'z-source'), grant('ann', 1, 'a', 'a-source'),
      ],
    });
    await refresh(db);
    expect((await explain(db, 'ann', 'doc')).path).toEqual([edge('ann', 2, 'a'), edge('a', 2, 'doc')]);
  });

  it('random graphs with expiring grants: every grant of the path shown lasts as long as the answer (validUntil)', async () => {
    const picks = fc.array(fc.tuple(fc.nat(), fc.nat()), { minLength: 25, maxLength: 25 });
    await fc.assert(
      fc.asyncProperty(graphArbitrary({ users: 5, groups: 8, objects: 5, grants: 30 }, 0, true), picks, async (graph, choices) => {
        await loadGraph(db, graph);
        await refresh(db);
        const users = graph.nodes.filter((n) => n.kind === 'user');
        for (const [ui, ti] of choices) {
          const user = users[ui % users.length]!.id;
          const thing = graph.nodes[ti % graph.nodes.length]!;
          const e = await explain(db, user, thing.id);
          if (!e.allowed || e.via === 'superuser') continue;
          // the traverse path (a manage edge into another user who owns the thing) must last as well
          for (const step of [...e.path, ...(e.traversePath ?? [])]) {
            if (step.expiresAt === null) continue;
            const label = `explain(${user}, ${thing.id}): ${step.tail} -> ${step.head} ends ${step.expiresAt.toISOString()}, validUntil ${e.validUntil?.toISOString() ?? 'never'}`;
            expect(e.validUntil, label).not.toBeNull();
            expect(step.expiresAt.getTime(), label).toBeGreaterThanOrEqual(e.validUntil!.getTime());
          }
        }
      }),
      { numRuns: 40 },
    );
  });

  it('shows a path that holds as long as the answer does: past a shorter one whose grant ends sooner', async () => {
    const hour = 3_600_000;
    const soon = new Date(Date.now() + 2 * hour);
    const later = new Date(Date.now() + 5 * hour);
    const at = (ms: number) => new Date(Math.floor(ms / 1000) * 1000); // (whole seconds, as stored and compared)
    const load = async (teamGrant: RefGrant) => {
      await loadGraph(db, {
        nodes: [u('erin'), g('oncall'), g('team'), g('proj'), o('doc', 'proj')],
        // both paths have two edges, and 'oncall' sorts first
        grants: [expiring('erin', 2, 'oncall', at(soon.getTime())), grant('oncall', 2, 'proj'), teamGrant, grant('team', 2, 'proj')],
      });
      await refresh(db);
    };
    // the lasting path never ends: it is shown, and validUntil is null
    await load(grant('erin', 2, 'team'));
    for (const [thing, via] of [['proj', 'direct'], ['doc', 'owner']] as const) {
      const e = await explain(db, 'erin', thing);
      expect(e, thing).toMatchObject({ allowed: true, via, validUntil: null });
      expect(e.path.slice(0, 2), thing).toEqual([edge('erin', 2, 'team'), edge('team', 2, 'proj')]);
    }
    // both end: the one ending later gives validUntil, and is the one shown
    await load(expiring('erin', 2, 'team', at(later.getTime())));
    const both = await explain(db, 'erin', 'proj');
    expect(both.validUntil).toEqual(at(later.getTime()));
    expect(both.path).toEqual([
      { ...edge('erin', 2, 'team'), expiresAt: at(later.getTime()), expiresAtExact: at(later.getTime()).toISOString().replace(/Z$/, '000Z') },
      edge('team', 2, 'proj'),
    ]);
    // a thing another user owns, reached at manage: the owner route through the lasting path
    await loadGraph(db, {
      nodes: [u('erin'), u('xena'), g('a'), g('b'), o('memo', 'xena')],
      grants: [expiring('erin', 3, 'a', at(soon.getTime())), grant('a', 3, 'xena'), grant('erin', 3, 'b'), grant('b', 3, 'xena')],
    });
    await refresh(db);
    const memo = await explain(db, 'erin', 'memo');
    expect(memo).toMatchObject({ allowed: true, via: 'owner', bestLevel: 3, validUntil: null, traversePath: null });
    expect(memo.path).toEqual([edge('erin', 3, 'b'), edge('b', 3, 'xena'), edge('xena', 3, 'memo', 'owner')]);
    // …and below manage: the path to the owner is the user's own write grant, and the
    // manage edge into the owner that makes its belongings reachable must last too
    await loadGraph(db, {
      nodes: [u('erin'), u('xena'), g('a'), g('b'), g('c'), o('memo', 'xena')],
      grants: [
        grant('erin', 2, 'xena'),
        expiring('erin', 1, 'a', at(soon.getTime())), grant('a', 3, 'xena'), // the nearest manage edge is reached by a grant ending soon
        grant('erin', 1, 'c'), grant('c', 1, 'b'), grant('b', 3, 'xena'), // this one does not
      ],
    });
    await refresh(db);
    const below = await explain(db, 'erin', 'memo');
    expect(below).toMatchObject({ allowed: true, via: 'owner', bestLevel: 2, validUntil: null });
    expect(below.path).toEqual([edge('erin', 2, 'xena'), edge('xena', 3, 'memo', 'owner')]);
    expect(below.traversePath).toEqual([edge('erin', 1, 'c'), edge('c', 1, 'b'), edge('b', 3, 'xena')]);
    // only the short one: it is shown, and ends the answer
    await load(grant('erin', 1, 'team'));
    const short = await explain(db, 'erin', 'proj');
    expect(short).toMatchObject({ bestLevel: 2, validUntil: at(soon.getTime()) });
    expect(short.path.map((p) => p.head)).toEqual(['oncall', 'proj']);
  });

  it('says how many changes are pending, while check() still answers from the table that lags them', async () => {
    await loadGraph(db, { nodes: [u('ann'), g('team')], grants: [] });
    await refresh(db);
    expect(await explain(db, 'ann', 'team')).toMatchObject({ allowed: false, reason: 'no path', pendingChanges: 0 });
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('ann', 'team', 1)`);
    expect(await explain(db, 'ann', 'team')).toMatchObject({ allowed: true, path: [edge('ann', 1, 'team')], pendingChanges: 1 });
    expect(await check(db, 'ann', 'team', 1)).toBe(false);
    await applyChanges(db);
    expect(await explain(db, 'ann', 'team')).toMatchObject({ allowed: true, pendingChanges: 0 });
    expect(await check(db, 'ann', 'team', 1)).toBe(true);
  });

  it('bad input: clear errors', async () => {
    await loadGraph(db, { nodes: [u('ann'), g('team')], grants: [] });
    const refused = async (promise: Promise<unknown>, message: RegExp) => {
      const error = await promise.then(() => null, (e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidInputError);
      expect((error as Error).message).toMatch(message);
    };
    await refused(explain(db, 'nobody', 'team'), /user "nobody" does not exist/);
    await refused(explain(db, 'team', 'ann'), /"team" is a group, not a user/);
    await refused(explain(db, 'ann', 'nothing'), /thing "nothing" does not exist/);
    await refused(explain(db, 'ann', 'team', 4 as Level), /level must be/);
    await refused(explain(db, 'ann', 'team', 'owner'), /level must be/);
  });
});
