import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  check,
  compareIds,
  compareRows,
  computePermissions,
  computeTrashedGroups,
  effectiveTrashAt,
  type Kind,
  type Level,
  type PermissionRow,
  type RefGraph,
  type RefGrant,
  type RefNode,
} from './model.ts';
import { u as user, g as group, o as object, grant } from '../helpers/builders.ts';

// ---------- small builders (nodes and grants: test/helpers/builders.ts) ----------

const row = (userId: string, targetId: string, level: Level, traverseOwned: boolean, validUntil: Date | null = null): PermissionRow => ({
  userId,
  targetId,
  level,
  traverseOwned,
  validUntil,
});
const id = (u: string): PermissionRow => row(u, u, 3, true);

/** Expected rows, sorted the same way the model sorts. */
const sorted = (rows: PermissionRow[]): PermissionRow[] =>
  [...rows].sort(compareRows);

const r = 1 as const;
const w = 2 as const;
const m = 3 as const;

// ---------- worked examples from semantics.md ----------

describe('reference model: worked examples', () => {
  it('u1 owns p1, p1 owns p2; role r -w-> p1; u2 -r-> r', () => {
    const g: RefGraph = {
      nodes: [user('u1'), user('u2'), group('p1', 'u1'), group('p2', 'p1'), group('r')],
      grants: [grant('r', w, 'p1'), grant('u2', r, 'r')],
    };
    expect(computePermissions(g)).toEqual(
      sorted([
        id('u1'),
        id('u2'),
        row('u1', 'p1', 3, true),
        row('u1', 'p2', 3, true),
        row('u2', 'r', 1, true),
        row('u2', 'p1', 1, true),
        row('u2', 'p2', 1, true),
      ]),
    );
  });

  it('x -w-> r -r-> b (b a group)', () => {
    const g: RefGraph = {
      nodes: [user('x'), group('r'), group('b')],
      grants: [grant('x', w, 'r'), grant('r', r, 'b')],
    };
    expect(computePermissions(g)).toEqual(sorted([id('x'), row('x', 'r', 2, true), row('x', 'b', 1, true)]));
  });

  it('u -m-> g and u -r-> g (two grants); deleting the manage grant leaves (u,g,1,t)', () => {
    const nodes = [user('u'), group('g')];
    const both: RefGraph = { nodes, grants: [grant('u', m, 'g', 's1'), grant('u', r, 'g', 's2')] };
    expect(computePermissions(both)).toEqual(sorted([id('u'), row('u', 'g', 3, true)]));
    const after: RefGraph = { nodes, grants: [grant('u', r, 'g', 's2')] };
    expect(computePermissions(after)).toEqual(sorted([id('u'), row('u', 'g', 1, true)]));
  });

  it('a -r-> r, r -m-> userB: a reads what userB owns', () => {
    const g: RefGraph = {
      nodes: [user('a'), group('r'), user('userB')],
      grants: [grant('a', r, 'r'), grant('r', m, 'userB')],
    };
    expect(computePermissions(g)).toEqual(
      sorted([id('a'), id('userB'), row('a', 'r', 1, true), row('a', 'userB', 1, true)]),
    );
  });

  it('a -r-> r, r -w-> userB: a sees userB, not its belongings', () => {
    const g: RefGraph = {
      nodes: [user('a'), group('r'), user('userB')],
      grants: [grant('a', r, 'r'), grant('r', w, 'userB')],
    };
    expect(computePermissions(g)).toEqual(
      sorted([id('a'), id('userB'), row('a', 'r', 1, true), row('a', 'userB', 1, false)]),
    );
  });

  it('a -r-> r, r -m-> userB, userB -m-> g2: paths do not pass through userB', () => {
    const g: RefGraph = {
      nodes: [user('a'), group('r'), user('userB'), group('g2')],
      grants: [grant('a', r, 'r'), grant('r', m, 'userB'), grant('userB', m, 'g2')],
    };
    expect(computePermissions(g)).toEqual(
      sorted([
        id('a'),
        id('userB'),
        row('a', 'r', 1, true),
        row('a', 'userB', 1, true),
        row('userB', 'g2', 3, true),
      ]),
    );
  });

  it('g1 -r-> g2, g2 -w-> g1, u -m-> g1 (cycle terminates)', () => {
    const g: RefGraph = {
      nodes: [user('u'), group('g1'), group('g2')],
      grants: [grant('g1', r, 'g2'), grant('g2', w, 'g1'), grant('u', m, 'g1')],
    };
    expect(computePermissions(g)).toEqual(sorted([id('u'), row('u', 'g1', 3, true), row('u', 'g2', 1, true)]));
  });

  it('u -r-> doc (doc an object owned by p): nothing for other objects of p', () => {
    const g: RefGraph = {
      nodes: [user('u'), user('owner'), group('p', 'owner'), object('doc', 'p'), object('doc2', 'p')],
      grants: [grant('u', r, 'doc')],
    };
    expect(computePermissions(g)).toEqual(
      sorted([id('owner'), id('u'), row('owner', 'p', 3, true), row('u', 'doc', 1, false)]),
    );
  });
});

// ---------- more edge semantics ----------

describe('reference model: edges and rows', () => {
  it('every user has the identity row even with no edges', () => {
    expect(computePermissions({ nodes: [user('lonely')], grants: [] })).toEqual([id('lonely')]);
  });

  it('a user owning itself changes nothing', () => {
    const g: RefGraph = { nodes: [user('u', 'u')], grants: [] };
    expect(computePermissions(g)).toEqual([id('u')]);
  });

  it('a user owned by a user gets an ownership edge at 3 (traverse true)', () => {
    const g: RefGraph = { nodes: [user('boss'), user('emp', 'boss')], grants: [] };
    expect(computePermissions(g)).toEqual(sorted([id('boss'), id('emp'), row('boss', 'emp', 3, true)]));
  });

  it('a user owned by a group: the ownership edge is a level-3 last edge', () => {
    const g: RefGraph = {
      nodes: [user('a'), group('g'), user('c', 'g')],
      grants: [grant('a', r, 'g')],
    };
    expect(computePermissions(g)).toEqual(
      sorted([id('a'), id('c'), row('a', 'g', 1, true), row('a', 'c', 1, true)]),
    );
  });

  it('ownership of objects is not an edge', () => {
    const g: RefGraph = { nodes: [user('u'), object('o', 'u')], grants: [] };
    expect(computePermissions(g)).toEqual([id('u')]);
  });

  it('objects are never traversed out of, users reached part-way are endpoints', () => {
    const g: RefGraph = {
      nodes: [user('u'), group('g'), user('v'), group('h', 'v'), object('o')],
      grants: [grant('u', m, 'g'), grant('g', m, 'v'), grant('g', w, 'o')],
    };
    expect(computePermissions(g)).toEqual(
      sorted([
        id('u'),
        id('v'),
        row('u', 'g', 3, true),
        row('u', 'o', 2, false),
        row('u', 'v', 3, true),
        row('v', 'h', 3, true),
      ]),
    );
  });

  it('traverse_owned on a user is an OR over paths, decided by the current last-edge level', () => {
    const nodes = [user('a'), group('r1'), group('r2'), user('b')];
    const manageAndWrite: RefGraph = {
      nodes,
      grants: [grant('a', r, 'r1'), grant('a', w, 'r2'), grant('r1', m, 'b'), grant('r2', w, 'b')],
    };
    // level: max(min(1,3), min(2,2)) = 2; traverse: the r1 path ends with a manage edge.
    expect(computePermissions(manageAndWrite)).toContainEqual(row('a', 'b', 2, true));
    // revoking the manage grant while a weaker path remains: traverse must become false
    const revoked: RefGraph = {
      nodes,
      grants: [grant('a', r, 'r1'), grant('a', w, 'r2'), grant('r2', w, 'b')],
    };
    expect(computePermissions(revoked)).toContainEqual(row('a', 'b', 2, false));
    // downgrading the manage grant to read: same
    const downgraded: RefGraph = {
      nodes,
      grants: [grant('a', r, 'r1'), grant('a', w, 'r2'), grant('r1', r, 'b'), grant('r2', w, 'b')],
    };
    expect(computePermissions(downgraded)).toContainEqual(row('a', 'b', 2, false));
  });

  it('a direct grant from u to another user is a one-edge path', () => {
    const g: RefGraph = { nodes: [user('a'), user('b')], grants: [grant('a', m, 'b'), grant('b', r, 'a')] };
    expect(computePermissions(g)).toEqual(
      sorted([id('a'), id('b'), row('a', 'b', 3, true), row('b', 'a', 1, false)]),
    );
  });

  it('a path back to the start user does not disturb the identity row', () => {
    const g: RefGraph = { nodes: [user('u'), group('g')], grants: [grant('u', r, 'g'), grant('g', r, 'u')] };
    expect(computePermissions(g)).toEqual(sorted([id('u'), row('u', 'g', 1, true)]));
  });

  it('longer cycles take the widest path', () => {
    const g: RefGraph = {
      nodes: [user('u'), group('a'), group('b'), group('c')],
      grants: [
        grant('u', m, 'a'),
        grant('a', r, 'b'),
        grant('a', w, 'c'),
        grant('c', m, 'b'),
        grant('b', m, 'a'),
        grant('b', r, 'c'),
      ],
    };
    expect(computePermissions(g)).toEqual(
      sorted([id('u'), row('u', 'a', 3, true), row('u', 'b', 2, true), row('u', 'c', 2, true)]),
    );
  });

  it('rows are sorted byte-wise (C collation)', () => {
    const g: RefGraph = {
      nodes: [user('b'), user('B'), user('é'), user('z'), user('\uFFFF'), user('😀')],
      grants: [],
    };
    expect(computePermissions(g).map((x) => x.userId)).toEqual(['B', 'b', 'z', 'é', '\uFFFF', '😀']);
  });

  it('compareIds compares UTF-8 bytes, not UTF-16 code units', () => {
    expect(compareIds('a', 'a')).toBe(0);
    expect(compareIds('B', 'a')).toBeLessThan(0);
    expect(compareIds('ab', 'a')).toBeGreaterThan(0);
    // JS '<' says '😀' (U+D83D...) < '\uFFFF'; UTF-8 (F0.. vs EF..) says the opposite
    expect('😀' < '\uFFFF').toBe(true);
    expect(compareIds('😀', '\uFFFF')).toBeGreaterThan(0);
  });
});

// ---------- trash ----------

const past = new Date('2023-06-01T00:00:00Z');
const earlier = new Date('2022-01-01T00:00:00Z');
const now = new Date('2024-01-01T00:00:00Z');
const future = new Date('2025-06-01T00:00:00Z');

describe('reference model: trash', () => {
  it('chain through group owners takes the earliest trash_at; a user owner ends the chain', () => {
    const g: RefGraph = {
      nodes: [
        user('u', null, earlier), // a user's trash_at never propagates
        group('top', 'u', future),
        group('mid', 'top', past),
        group('leaf', 'mid'),
        group('clean', 'u'),
        group('ownFuture', 'u', future),
        user('v', 'leaf'),
        group('belowUser', 'v'), // v ends the chain: leaf's trash does not reach here
      ],
      grants: [],
    };
    expect(effectiveTrashAt(g, 'top')).toEqual(future);
    expect(effectiveTrashAt(g, 'mid')).toEqual(past);
    expect(effectiveTrashAt(g, 'leaf')).toEqual(past);
    expect(effectiveTrashAt(g, 'clean')).toBeNull();
    expect(effectiveTrashAt(g, 'belowUser')).toBeNull();
    expect(effectiveTrashAt(g, 'u')).toBeNull();
    expect(effectiveTrashAt(g, 'v')).toBeNull();
    expect(effectiveTrashAt(g, 'nope')).toBeNull();
    expect(computeTrashedGroups(g)).toEqual([
      { groupId: 'leaf', trashAt: past },
      { groupId: 'mid', trashAt: past },
      { groupId: 'ownFuture', trashAt: future },
      { groupId: 'top', trashAt: future },
    ]);
  });

  it('an earlier own trash_at beats a later inherited one', () => {
    const g: RefGraph = { nodes: [group('p', null, future), group('c', 'p', past)], grants: [] };
    expect(effectiveTrashAt(g, 'c')).toEqual(past);
  });

  it('objects: earlier of own trash_at and the owner group effective trash', () => {
    const g: RefGraph = {
      nodes: [
        user('u', null, earlier),
        group('gp', 'u', past),
        group('g', 'gp', future),
        group('gf', 'u', future),
        object('inGroup', 'g'), // inherits past from gp
        object('ownEarlier', 'gf', past), // own past beats future
        object('ownLater', 'gf', new Date('2030-01-01T00:00:00Z')), // inherits future
        object('ofUser', 'u'), // user owner: no inheritance
        object('ofUserOwn', 'u', future),
        object('loose'),
      ],
      grants: [],
    };
    expect(effectiveTrashAt(g, 'inGroup')).toEqual(past);
    expect(effectiveTrashAt(g, 'ownEarlier')).toEqual(past);
    expect(effectiveTrashAt(g, 'ownLater')).toEqual(future);
    expect(effectiveTrashAt(g, 'ofUser')).toBeNull();
    expect(effectiveTrashAt(g, 'ofUserOwn')).toEqual(future);
    expect(effectiveTrashAt(g, 'loose')).toBeNull();
    // trashed_groups lists groups only
    expect(computeTrashedGroups(g).map((x) => x.groupId)).toEqual(['g', 'gf', 'gp']);
  });

  it('trash never changes the permission rows', () => {
    const base: RefGraph = {
      nodes: [user('u'), group('g', 'u'), group('h', 'g'), object('o', 'h')],
      grants: [grant('u', r, 'o')],
    };
    const trashed: RefGraph = {
      nodes: [user('u', null, past), group('g', 'u', past), group('h', 'g', future), object('o', 'h', past)],
      grants: base.grants,
    };
    expect(computePermissions(trashed)).toEqual(computePermissions(base));
  });

  it('check hides trashed targets, even with a direct grant; future trash does not hide', () => {
    const g: RefGraph = {
      nodes: [
        user('u'),
        group('gPast', null, past),
        group('gFuture', null, future),
        group('child', 'gPast'),
        group('gNow', null, now),
        object('doc', 'gPast'),
        object('docOwnPast', null, past),
      ],
      grants: [
        grant('u', m, 'gPast'),
        grant('u', m, 'gFuture'),
        grant('u', m, 'child'),
        grant('u', m, 'gNow'),
        grant('u', m, 'doc'),
        grant('u', m, 'docOwnPast'),
      ],
    };
    expect(check(g, 'u', 'gPast', 1, now)).toBe(false);
    expect(check(g, 'u', 'gFuture', 3, now)).toBe(true);
    expect(check(g, 'u', 'child', 1, now)).toBe(false); // inherited from gPast
    expect(check(g, 'u', 'gNow', 1, now)).toBe(false); // trash_at <= now hides
    expect(check(g, 'u', 'gNow', 1, new Date(now.getTime() - 1))).toBe(true);
    expect(check(g, 'u', 'doc', 1, now)).toBe(false);
    expect(check(g, 'u', 'docOwnPast', 1, now)).toBe(false);
    // the same targets before the trash time are visible
    expect(check(g, 'u', 'gPast', 3, earlier)).toBe(true);
    expect(check(g, 'u', 'doc', 3, earlier)).toBe(true);
  });

  it('users are never hidden by trash', () => {
    const g: RefGraph = {
      nodes: [user('a'), user('b', 'gPast', past), group('gPast', 'a', past)],
      grants: [grant('a', w, 'b')],
    };
    expect(check(g, 'a', 'b', 2, now)).toBe(true);
    expect(check(g, 'b', 'b', 3, now)).toBe(true);
    expect(check(g, 'a', 'gPast', 1, now)).toBe(false);
  });
});

// ---------- check ----------

describe('reference model: check', () => {
  it('direct rows by level', () => {
    const g: RefGraph = {
      nodes: [user('u'), group('g'), group('h')],
      grants: [grant('u', w, 'g'), grant('g', r, 'h')],
    };
    expect(check(g, 'u', 'g', 1, now)).toBe(true);
    expect(check(g, 'u', 'g', 2, now)).toBe(true);
    expect(check(g, 'u', 'g', 3, now)).toBe(false);
    expect(check(g, 'u', 'h', 1, now)).toBe(true);
    expect(check(g, 'u', 'h', 2, now)).toBe(false);
    expect(check(g, 'u', 'u', 3, now)).toBe(true); // identity
  });

  it('owner check: objects owned by a group the user reaches', () => {
    const g: RefGraph = {
      nodes: [user('u'), group('p'), object('doc', 'p'), object('loose')],
      grants: [grant('u', w, 'p')],
    };
    expect(check(g, 'u', 'doc', 2, now)).toBe(true);
    expect(check(g, 'u', 'doc', 3, now)).toBe(false);
    expect(check(g, 'u', 'loose', 1, now)).toBe(false);
  });

  it('objects owned by the user itself', () => {
    const g: RefGraph = { nodes: [user('u'), user('v'), object('mine', 'u')], grants: [] };
    expect(check(g, 'u', 'mine', 3, now)).toBe(true);
    expect(check(g, 'v', 'mine', 1, now)).toBe(false);
  });

  it('owner check through a user needs traverse_owned (a manage last edge)', () => {
    const nodes = [user('a'), group('r'), user('userB'), object('docB', 'userB')];
    const managed: RefGraph = { nodes, grants: [grant('a', r, 'r'), grant('r', m, 'userB')] };
    expect(check(managed, 'a', 'docB', 1, now)).toBe(true);
    expect(check(managed, 'a', 'docB', 2, now)).toBe(false);
    const written: RefGraph = { nodes, grants: [grant('a', r, 'r'), grant('r', w, 'userB')] };
    expect(check(written, 'a', 'docB', 1, now)).toBe(false);
    expect(check(written, 'a', 'userB', 1, now)).toBe(true);
    expect(check(written, 'a', 'userB', 2, now)).toBe(false);
  });

  it('the owner check is one step: it reaches what userB owns directly, not deeper', () => {
    // Literal reading of the rule: x's owner o must have a row (u, o) with traverse_owned.
    const g: RefGraph = {
      nodes: [user('a'), group('r'), user('userB'), group('g2', 'userB'), object('deep', 'g2')],
      grants: [grant('a', r, 'r'), grant('r', m, 'userB')],
    };
    expect(computePermissions(g).some((x) => x.userId === 'a' && x.targetId === 'g2')).toBe(false);
    expect(check(g, 'a', 'g2', 1, now)).toBe(true); // owner userB, row (a,userB,1,t)
    expect(check(g, 'a', 'deep', 1, now)).toBe(false); // owner g2, no row (a,g2)
  });

  it('a direct object row does not cover other objects of the same owner', () => {
    const g: RefGraph = {
      nodes: [user('u'), group('p'), object('doc', 'p'), object('doc2', 'p')],
      grants: [grant('u', w, 'doc')],
    };
    expect(check(g, 'u', 'doc', 2, now)).toBe(true);
    expect(check(g, 'u', 'doc2', 1, now)).toBe(false);
  });

  it('unknown ids and non-user principals are false', () => {
    const g: RefGraph = { nodes: [user('u'), group('g')], grants: [grant('u', m, 'g')] };
    expect(check(g, 'u', 'nope', 1, now)).toBe(false);
    expect(check(g, 'nope', 'g', 1, now)).toBe(false);
    expect(check(g, 'g', 'g', 1, now)).toBe(false);
  });
});

// ---------- properties ----------

interface NodeSpec {
  kind: Kind;
  owner: number | null;
  selfOwn: boolean;
  trash: number | null;
}
interface GrantSpec {
  tail: number;
  head: number;
  level: Level;
  source: string;
}

const ID_POOL = ['a', 'B', 'b', 'é', 'g', 'z', '\uFFFF', '😀', 'a b', ''];
const DAY = 86_400_000;
const BASE = Date.UTC(2024, 0, 1);

function buildGraph(nodeSpecs: NodeSpec[], grantSpecs: GrantSpec[]): RefGraph {
  const ids = nodeSpecs.map((_, i) => `${ID_POOL[i % ID_POOL.length]}${i}`);
  const nodes: RefNode[] = nodeSpecs.map((s, i) => {
    // owners are users/groups with a smaller index: ownership never forms a cycle
    const owners = ids.slice(0, i).filter((_, j) => nodeSpecs[j]!.kind !== 'object');
    let ownerId: string | null = null;
    if (s.kind === 'user' && s.selfOwn) ownerId = ids[i]!;
    else if (s.owner !== null && owners.length > 0) ownerId = owners[s.owner % owners.length]!;
    return {
      id: ids[i]!,
      kind: s.kind,
      ownerId,
      trashAt: s.kind !== 'user' && s.trash !== null ? new Date(BASE + s.trash * DAY) : null,
    };
  });
  const tails = nodes.filter((n) => n.kind !== 'object');
  const seen = new Set<string>();
  const grants: RefGrant[] = [];
  if (tails.length > 0) {
    for (const g of grantSpecs) {
      const t = tails[g.tail % tails.length]!.id;
      const h = nodes[g.head % nodes.length]!.id;
      const key = JSON.stringify([t, h, g.source]); // unique (tail, head, source)
      if (seen.has(key)) continue;
      seen.add(key);
      grants.push({ tailId: t, headId: h, level: g.level, source: g.source });
    }
  }
  return { nodes, grants };
}

const levelArb = fc.constantFrom<Level>(1, 2, 3);
const nodeArb: fc.Arbitrary<NodeSpec> = fc.record({
  kind: fc.constantFrom<Kind>('user', 'user', 'group', 'group', 'group', 'object'),
  owner: fc.option(fc.nat(20), { freq: 2 }),
  selfOwn: fc.boolean(),
  trash: fc.option(fc.integer({ min: -5, max: 5 }), { freq: 2 }),
});
const grantArb: fc.Arbitrary<GrantSpec> = fc.record({
  tail: fc.nat(40),
  head: fc.nat(40),
  level: levelArb,
  source: fc.constantFrom('s1', 's2'),
});
const graphArb = fc
  .tuple(fc.array(nodeArb, { minLength: 1, maxLength: 8 }), fc.array(grantArb, { maxLength: 16 }))
  .map(([ns, gs]) => buildGraph(ns, gs));

/**
 * Brute force straight from the spec text: enumerate every simple path from
 * each user (it is enough: a walk's min only drops with repetitions, and the
 * last edge of a walk is also the last edge of a simple path, since users and
 * objects are never intermediate).
 */
function bruteForce(graph: RefGraph): Map<string, { level: number; traverse: boolean }> {
  const kind = new Map(graph.nodes.map((n) => [n.id, n.kind] as const));
  const edges: { tail: string; head: string; level: number }[] = [];
  for (const n of graph.nodes) {
    if ((n.kind === 'user' || n.kind === 'group') && n.ownerId !== null)
      edges.push({ tail: n.ownerId, head: n.id, level: 3 });
  }
  for (const g of graph.grants) edges.push({ tail: g.tailId, head: g.headId, level: g.level });
  const out = new Map<string, { level: number; traverse: boolean }>();
  const record = (u: string, t: string, level: number, traverse: boolean): void => {
    const key = JSON.stringify([u, t]);
    const prev = out.get(key);
    out.set(key, {
      level: Math.max(prev?.level ?? 0, level),
      traverse: (prev?.traverse ?? false) || traverse,
    });
  };
  for (const n of graph.nodes) {
    if (n.kind !== 'user') continue;
    const u = n.id;
    record(u, u, 3, true);
    const walk = (at: string, minSoFar: number, visited: Set<string>): void => {
      for (const e of edges) {
        if (e.tail !== at || visited.has(e.head)) continue;
        const lvl = Math.min(minSoFar, e.level);
        const k = kind.get(e.head)!;
        record(u, e.head, lvl, k === 'group' ? true : k === 'object' ? false : e.level === 3);
        if (k === 'group') walk(e.head, lvl, new Set([...visited, e.head]));
      }
    };
    // the start u is excluded from `visited` so a path may end back at u (harmless)
    walk(u, 3, new Set());
  }
  return out;
}

const rowKey = (x: PermissionRow): string => JSON.stringify([x.userId, x.targetId]);

describe('reference model: properties', () => {
  it('agrees with brute-force enumeration of simple paths', () => {
    fc.assert(
      fc.property(graphArb, (g) => {
        const expected = bruteForce(g);
        const got = computePermissions(g);
        expect(got.length).toBe(expected.size);
        for (const x of got) expect(expected.get(rowKey(x))).toEqual({ level: x.level, traverse: x.traverseOwned });
      }),
      { numRuns: 300 },
    );
  });

  it('identity rows are always present, rows are sorted and unique, levels are 1..3', () => {
    fc.assert(
      fc.property(graphArb, (g) => {
        const rows = computePermissions(g);
        for (const n of g.nodes) {
          if (n.kind === 'user') expect(rows).toContainEqual(id(n.id));
        }
        for (let i = 1; i < rows.length; i++) {
          const a = rows[i - 1]!;
          const b = rows[i]!;
          expect(compareIds(a.userId, b.userId) || compareIds(a.targetId, b.targetId)).toBeLessThan(0);
        }
        for (const x of rows) expect([1, 2, 3]).toContain(x.level);
        const users = new Set(g.nodes.filter((n) => n.kind === 'user').map((n) => n.id));
        for (const x of rows) expect(users.has(x.userId)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it("every row's target is reachable from its user (leaving only the start and groups)", () => {
    fc.assert(
      fc.property(graphArb, (g) => {
        const kind = new Map(g.nodes.map((n) => [n.id, n.kind] as const));
        const succ = (x: string): string[] => [
          ...g.nodes.filter((n) => n.kind !== 'object' && n.ownerId === x).map((n) => n.id),
          ...g.grants.filter((e) => e.tailId === x).map((e) => e.headId),
        ];
        for (const x of computePermissions(g)) {
          const reached = new Set<string>([x.userId]);
          const stack = [...succ(x.userId)];
          while (stack.length > 0) {
            const n = stack.pop()!;
            if (reached.has(n)) continue;
            reached.add(n);
            if (kind.get(n) === 'group') stack.push(...succ(n));
          }
          expect(reached.has(x.targetId)).toBe(true);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('adding a grant never lowers a level, removes a row or clears traverse_owned', () => {
    fc.assert(
      fc.property(graphArb, grantArb, (g, extra) => {
        const tails = g.nodes.filter((n) => n.kind !== 'object');
        fc.pre(tails.length > 0);
        const add: RefGrant = {
          tailId: tails[extra.tail % tails.length]!.id,
          headId: g.nodes[extra.head % g.nodes.length]!.id,
          level: extra.level,
          source: 'extra',
        };
        const before = computePermissions(g);
        const after = new Map(computePermissions({ nodes: g.nodes, grants: [...g.grants, add] }).map((x) => [rowKey(x), x]));
        for (const b of before) {
          const a = after.get(rowKey(b));
          expect(a).toBeDefined();
          expect(a!.level).toBeGreaterThanOrEqual(b.level);
          if (b.traverseOwned) expect(a!.traverseOwned).toBe(true);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('the result does not depend on the order of nodes and grants', () => {
    fc.assert(
      fc.property(graphArb, fc.integer(), (g, seed) => {
        const shuffle = <T>(xs: readonly T[]): T[] => {
          const a = [...xs];
          let s = seed >>> 0;
          for (let i = a.length - 1; i > 0; i--) {
            s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
            const j = s % (i + 1);
            [a[i], a[j]] = [a[j]!, a[i]!];
          }
          return a;
        };
        const h: RefGraph = { nodes: shuffle(g.nodes), grants: shuffle(g.grants) };
        expect(computePermissions(h)).toEqual(computePermissions(g));
        expect(computeTrashedGroups(h)).toEqual(computeTrashedGroups(g));
      }),
      { numRuns: 100 },
    );
  });

  it('effective trash: never later than own trash_at or the owner group effective trash; trashed_groups matches', () => {
    fc.assert(
      fc.property(graphArb, (g) => {
        const byId = new Map(g.nodes.map((n) => [n.id, n] as const));
        const le = (a: Date | null, b: Date | null): boolean => b === null || (a !== null && a <= b);
        for (const n of g.nodes) {
          const eff = effectiveTrashAt(g, n.id);
          if (n.kind === 'user') {
            expect(eff).toBeNull();
            continue;
          }
          expect(le(eff, n.trashAt)).toBe(true);
          const owner = n.ownerId === null ? undefined : byId.get(n.ownerId);
          if (owner?.kind === 'group') expect(le(eff, effectiveTrashAt(g, owner.id))).toBe(true);
          // the effective time is one of the trash_at values on the chain
          if (eff !== null) {
            const chain: (Date | null)[] = [n.trashAt];
            let cur = owner;
            while (cur?.kind === 'group') {
              chain.push(cur.trashAt);
              cur = cur.ownerId === null ? undefined : byId.get(cur.ownerId);
            }
            expect(chain.some((d) => d !== null && d.getTime() === eff.getTime())).toBe(true);
          }
        }
        const expected = g.nodes
          .filter((n) => n.kind === 'group' && effectiveTrashAt(g, n.id) !== null)
          .map((n) => ({ groupId: n.id, trashAt: effectiveTrashAt(g, n.id)! }))
          .sort((a, b) => compareIds(a.groupId, b.groupId));
        expect(computeTrashedGroups(g)).toEqual(expected);
      }),
      { numRuns: 200 },
    );
  });

  it('check agrees with the rule applied to computePermissions', () => {
    fc.assert(
      fc.property(graphArb, fc.integer({ min: -6, max: 6 }), (g, nowDays) => {
        const at = new Date(BASE + nowDays * DAY);
        const rows = new Map(computePermissions(g).map((x) => [rowKey(x), x]));
        const byId = new Map(g.nodes.map((n) => [n.id, n] as const));
        for (const u of g.nodes) {
          for (const x of g.nodes) {
            for (const L of [1, 2, 3] as const) {
              const eff = effectiveTrashAt(g, x.id);
              const hidden = x.kind !== 'user' && eff !== null && eff <= at;
              const direct = rows.get(JSON.stringify([u.id, x.id]));
              const o = x.ownerId === null ? undefined : byId.get(x.ownerId);
              const viaOwner = o ? rows.get(JSON.stringify([u.id, o.id])) : undefined;
              const expected =
                !hidden &&
                ((direct !== undefined && direct.level >= L) ||
                  (viaOwner !== undefined && viaOwner.level >= L && viaOwner.traverseOwned));
              expect(check(g, u.id, x.id, L, at)).toBe(expected);
            }
          }
        }
      }),
      { numRuns: 50 },
    );
  });
});
