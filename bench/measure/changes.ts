// The change kinds of the incremental benchmark. Each picks its target with
// the run's seeded Rng from pools read once from the graph, makes the change
// with plain SQL, and knows how to undo it (so the graph stays the same
// from one sample to the next), except deletes.
import { sql, type Queryable, type SQLQuery } from '@databases/pg';
import type { Rng } from '../lib/rng.ts';

export const CHANGE_KINDS = [
  'add member',
  'remove member',
  'change level',
  'share project',
  'unshare project',
  'move subtree',
  'trash project',
  'delete node',
] as const;
export type ChangeKind = (typeof CHANGE_KINDS)[number];

/** random: anywhere in the graph; probe: inside the fixed-size x… cluster (same on every size). */
export type Scope = 'random' | 'probe';

export interface Change {
  target: string;
  apply: SQLQuery;
  revert: SQLQuery | null;
}

interface GrantRef {
  tail: string;
  head: string;
  source: string;
  level: number;
}

/** What the change kinds pick from, read once per graph and scope. */
export interface Pools {
  users: string[];
  teams: string[];
  projects: string[];
  memberships: GrantRef[];
  shares: GrantRef[];
  owner: Map<string, string | null>;
  /** Projects and objects that own nothing (deletable). */
  leaves: string[];
  grantPairs: Set<string>;
}

const pairKey = (tail: string, head: string) => `${tail}\u0000${head}`;

export async function readPools(db: Queryable, scope: Scope): Promise<Pools> {
  const x = scope === 'probe' ? 'x' : '';
  const like = (letter: string) => `${x}${letter}%`;
  const ids = async (kind: string, letter: string): Promise<string[]> =>
    (await db.query(sql`select id from permgraph.nodes where kind = ${kind} and id like ${like(letter)} order by id`)).map(
      (r: { id: string }) => r.id,
    );
  const grants = async (tailLetter: string, headLetter: string): Promise<GrantRef[]> =>
    db.query(sql`
      select tail_id as tail, head_id as head, source, level from permgraph.grants
      where tail_id like ${like(tailLetter)} and head_id like ${like(headLetter)} order by tail_id, head_id, source`);
  const owners: { id: string; owner_id: string | null }[] = await db.query(
    sql`select id, owner_id from permgraph.nodes where kind <> 'object' and id like ${like('')} order by id`,
  );
  const leaves: { id: string }[] = await db.query(sql`
    select n.id from permgraph.nodes n
    where (n.id like ${like('p')} or n.id like ${like('o')})
      and not exists (select 1 from permgraph.nodes c where c.owner_id = n.id)
    order by n.id`);
  const allPairs: { tail_id: string; head_id: string }[] = await db.query(
    sql`select tail_id, head_id from permgraph.grants where tail_id like ${like('')}`,
  );
  return {
    users: await ids('user', 'u'),
    teams: await ids('group', 't'),
    projects: await ids('group', 'p'),
    memberships: await grants('u', 't'),
    shares: await grants('t', 'p'),
    owner: new Map(owners.map((o) => [o.id, o.owner_id])),
    leaves: leaves.map((l) => l.id),
    grantPairs: new Set(allPairs.map((p) => pairKey(p.tail_id, p.head_id))),
  };
}

/** Tries pick() until accept() holds (at most 50 times). */
function pickWhere<T>(pick: () => T, accept: (value: T) => boolean): T | null {
  for (let i = 0; i < 50; i++) {
    const value = pick();
    if (accept(value)) return value;
  }
  return null;
}

function isUnder(pools: Pools, node: string, ancestor: string): boolean {
  for (let at: string | null | undefined = node, hops = 0; at && hops < 10_000; at = pools.owner.get(at), hops++) {
    if (at === ancestor) return true;
  }
  return false;
}

const nextLevel = (level: number) => (level % 3) + 1;

function addMember(p: Pools, rng: Rng): Change | null {
  const pair = pickWhere(
    () => [rng.pick(p.users), rng.pick(p.teams)] as const,
    ([u, t]) => !p.grantPairs.has(pairKey(u, t)),
  );
  if (!pair) return null;
  const [u, t] = pair;
  return {
    target: `${u} -> ${t}`,
    apply: sql`insert into permgraph.grants (tail_id, head_id, level, source) values (${u}, ${t}, 1, 'bench')`,
    revert: sql`delete from permgraph.grants where tail_id = ${u} and head_id = ${t} and source = 'bench'`,
  };
}

function removeGrant(g: GrantRef): Change {
  return {
    target: `${g.tail} -> ${g.head}`,
    apply: sql`delete from permgraph.grants where tail_id = ${g.tail} and head_id = ${g.head} and source = ${g.source}`,
    revert: sql`insert into permgraph.grants (tail_id, head_id, level, source) values (${g.tail}, ${g.head}, ${g.level}, ${g.source})`,
  };
}

function changeLevel(g: GrantRef): Change {
  const where = sql`tail_id = ${g.tail} and head_id = ${g.head} and source = ${g.source}`;
  return {
    target: `${g.tail} -> ${g.head}`,
    apply: sql`update permgraph.grants set level = ${nextLevel(g.level)} where ${where}`,
    revert: sql`update permgraph.grants set level = ${g.level} where ${where}`,
  };
}

function share(p: Pools, rng: Rng): Change | null {
  const pair = pickWhere(
    () => [rng.pick(p.teams), rng.pick(p.projects)] as const,
    ([t, pr]) => !p.grantPairs.has(pairKey(t, pr)),
  );
  if (!pair) return null;
  const [t, pr] = pair;
  return {
    target: `${t} -> ${pr}`,
    apply: sql`insert into permgraph.grants (tail_id, head_id, level, source) values (${t}, ${pr}, 1, 'bench')`,
    revert: sql`delete from permgraph.grants where tail_id = ${t} and head_id = ${pr} and source = 'bench'`,
  };
}

function moveSubtree(p: Pools, rng: Rng): Change | null {
  const pair = pickWhere(
    () => [rng.pick(p.projects), rng.pick(p.projects)] as const,
    ([moved, to]) => moved !== to && p.owner.get(moved) !== to && !isUnder(p, to, moved),
  );
  if (!pair) return null;
  const [moved, to] = pair;
  const from = p.owner.get(moved) ?? null;
  return {
    target: `${moved}: ${from} => ${to}`,
    apply: sql`update permgraph.nodes set owner_id = ${to} where id = ${moved}`,
    revert: sql`update permgraph.nodes set owner_id = ${from} where id = ${moved}`,
  };
}

function trash(p: Pools, rng: Rng): Change {
  const project = rng.pick(p.projects);
  return {
    target: project,
    apply: sql`update permgraph.nodes set trash_at = now() - interval '1 second' where id = ${project}`,
    revert: sql`update permgraph.nodes set trash_at = null where id = ${project}`,
  };
}

/** Drops a node about to be deleted from every pool, so later changes never pick it. */
function forget(p: Pools, node: string): void {
  p.projects = p.projects.filter((id) => id !== node);
  p.shares = p.shares.filter((g) => g.head !== node && g.tail !== node);
  p.memberships = p.memberships.filter((g) => g.head !== node && g.tail !== node);
  p.owner.delete(node);
}

function deleteNode(p: Pools, rng: Rng): Change | null {
  if (p.leaves.length === 0) return null;
  const index = Math.floor(rng.next() * p.leaves.length);
  const [node] = p.leaves.splice(index, 1) as [string];
  forget(p, node);
  return { target: node, apply: sql`delete from permgraph.nodes where id = ${node}`, revert: null };
}

/** A change of this kind, or null when the graph offers no candidate. */
export function makeChange(kind: ChangeKind, p: Pools, rng: Rng): Change | null {
  switch (kind) {
    case 'add member':
      return p.users.length && p.teams.length ? addMember(p, rng) : null;
    case 'remove member':
      return p.memberships.length ? removeGrant(rng.pick(p.memberships)) : null;
    case 'change level':
      return p.memberships.length ? changeLevel(rng.pick(p.memberships)) : null;
    case 'share project':
      return p.teams.length && p.projects.length ? share(p, rng) : null;
    case 'unshare project':
      return p.shares.length ? removeGrant(rng.pick(p.shares)) : null;
    case 'move subtree':
      return p.projects.length > 1 ? moveSubtree(p, rng) : null;
    case 'trash project':
      return p.projects.length ? trash(p, rng) : null;
    case 'delete node':
      return deleteNode(p, rng);
  }
}
