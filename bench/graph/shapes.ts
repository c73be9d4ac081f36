// The graph shapes. Each generator is a pure function of its parameters and
// an Rng: the same seed gives the same rows in the same order, hence
// byte-identical CSV files.
import { createRng, zipfSampler, type Rng } from '../lib/rng.ts';
import { GraphBuilder, type Level, type Shape, type Size } from './types.ts';

export interface OrgParams { users: number }
export interface TreeParams { users: number; branching: number; depth: number }
export interface DeepParams { users: number; chain: number }
export interface WideParams { users: number; projects: number }
export interface CyclicParams { users: number }

export interface ShapeParams {
  org: OrgParams;
  tree: TreeParams;
  deep: DeepParams;
  wide: WideParams;
  cyclic: CyclicParams;
}

/** The size knob of every shape. `large` wide is the full 100,000 × 1,000 (100M rows). */
export const SIZES: Record<Size, ShapeParams> = {
  small: {
    org: { users: 3000 },
    tree: { users: 24, branching: 9, depth: 4 },
    deep: { users: 100, chain: 1000 },
    wide: { users: 1000, projects: 100 },
    cyclic: { users: 2000 },
  },
  large: {
    org: { users: 60000 },
    tree: { users: 300, branching: 9, depth: 4 },
    deep: { users: 2000, chain: 1000 },
    wide: { users: 100000, projects: 1000 },
    cyclic: { users: 40000 },
  },
};

/** Member levels: read 60%, write 30%, manage 10%. */
function memberLevel(rng: Rng): Level {
  const x = rng.next();
  return x < 0.6 ? 1 : x < 0.9 ? 2 : 3;
}

function anyLevel(rng: Rng): Level {
  return rng.int(1, 3) as Level;
}

/**
 * A project tree under owner: the root, then at each depth up to `fanout[d]`
 * children per project (chosen at random). Returns the ids created.
 */
function projectTree(g: GraphBuilder, rng: Rng, owner: string, next: () => string, fanout: readonly number[]): string[] {
  const root = g.node(next(), 'group', owner);
  const all = [root];
  let level = [root];
  for (const most of fanout) {
    const below: string[] = [];
    for (const parent of level) {
      const count = rng.int(0, most);
      for (let i = 0; i < count; i++) below.push(g.node(next(), 'group', parent));
    }
    all.push(...below);
    level = below;
  }
  return all;
}

function counter(prefix: string): () => string {
  let n = 0;
  return () => `${prefix}${n++}`;
}

/**
 * A fixed-size cluster, identical at every size, on which the same local
 * changes are measured on small and large graphs (ids start with x).
 */
function probeCluster(g: GraphBuilder): void {
  for (let i = 0; i < 15; i++) g.node(`xu${i}`, 'user');
  for (let i = 0; i < 3; i++) g.node(`xt${i}`, 'group');
  const nextProject = counter('xp');
  const fixed = { next: () => 0.5, int: (min: number, max: number) => Math.floor((min + max + 1) / 2), chance: () => true, pick: <T>(xs: readonly T[]) => xs[0] as T };
  const treeA = projectTree(g, fixed, 'xt0', nextProject, [3, 3]);
  const treeB = projectTree(g, fixed, 'xt1', nextProject, [3, 3]);
  for (let i = 0; i < 10; i++) g.grant(`xu${i}`, 'xt0', ((i % 3) + 1) as Level, 'member');
  for (let i = 5; i < 13; i++) g.grant(`xu${i}`, 'xt1', ((i % 3) + 1) as Level, 'member');
  for (let i = 10; i < 15; i++) g.grant(`xu${i}`, 'xt2', 1, 'member');
  g.grant('xt2', treeA[0] as string, 1, 'share');
  g.grant('xt1', treeA[4] as string, 2, 'share');
  g.grant('xt0', treeB[1] as string, 1, 'share');
  for (let i = 0; i < 10; i++) {
    const id = g.node(`xo${i}`, 'object', treeB[i % treeB.length] as string);
    g.grant(`xu${i}`, id, 1, 'direct');
  }
}

/** Users in nested teams (depth ≤ 5, power-law sizes), project trees, shares, managed users, objects. */
export function orgGraph(p: OrgParams, rng: Rng): GraphBuilder {
  const g = new GraphBuilder();
  const users = Array.from({ length: p.users }, (_, i) => g.node(`u${i}`, 'user'));
  const teamCount = Math.max(10, Math.floor(p.users / 20));
  const teams: string[] = [];
  const byDepth: string[][] = [[], [], [], [], []];
  for (let i = 0; i < teamCount; i++) {
    const owner = rng.chance(0.3) ? rng.pick(users) : null;
    const id = g.node(`t${i}`, 'group', owner);
    teams.push(id);
    const depth = i < 5 ? 0 : rng.int(0, 4);
    const parents = byDepth[depth - 1];
    if (depth > 0 && parents && parents.length > 0) g.grant(id, rng.pick(parents), memberLevel(rng), 'nest');
    (byDepth[parents && parents.length > 0 ? depth : 0] as string[]).push(id);
  }
  const team = zipfSampler(rng, teamCount, 1.0);
  for (const user of users) {
    let count = 1;
    while (count < 4 && rng.chance(0.45)) count++;
    for (let k = 0; k < count; k++) g.grant(user, teams[team()] as string, memberLevel(rng), 'member');
  }
  const nextProject = counter('p');
  const projects: string[] = [];
  const roots: string[] = [];
  for (const user of users) {
    if (!rng.chance(0.5)) continue;
    const tree = projectTree(g, rng, user, nextProject, [3, 2, 1]);
    roots.push(tree[0] as string);
    projects.push(...tree);
  }
  for (const t of teams) {
    const trees = rng.int(1, 3);
    for (let k = 0; k < trees; k++) {
      const tree = projectTree(g, rng, t, nextProject, [3, 2, 1]);
      roots.push(tree[0] as string);
      projects.push(...tree);
    }
  }
  for (const t of teams) {
    const shares = rng.int(1, 3);
    for (let k = 0; k < shares; k++) g.grant(t, rng.chance(0.7) ? rng.pick(roots) : rng.pick(projects), rng.chance(0.7) ? 1 : 2, 'share');
  }
  for (const user of users) if (rng.chance(0.01)) g.grant(rng.pick(teams), user, 3, 'manage');
  const nextObject = counter('o');
  for (let i = 0; i < Math.floor(p.users / 2); i++) {
    const id = g.node(nextObject(), 'object', rng.pick(projects));
    if (rng.chance(0.4)) g.grant(rng.chance(0.7) ? rng.pick(users) : rng.pick(teams), id, anyLevel(rng), 'direct');
  }
  probeCluster(g);
  return g;
}

/** Arvados' permission perf test: one user-owned project over a 9-ary tree 4 levels deep (7,381 projects). */
export function treeGraph(p: TreeParams, rng: Rng): GraphBuilder {
  const g = new GraphBuilder();
  g.node('u0', 'user');
  const users = Array.from({ length: p.users }, (_, i) => g.node(`u${i + 1}`, 'user'));
  const teams = Array.from({ length: 10 }, (_, i) => g.node(`t${i}`, 'group'));
  const nextProject = counter('p');
  const levels: string[][] = [[g.node(nextProject(), 'group', 'u0')]];
  for (let d = 1; d <= p.depth; d++) {
    const below: string[] = [];
    for (const parent of levels[d - 1] as string[]) for (let k = 0; k < p.branching; k++) below.push(g.node(nextProject(), 'group', parent));
    levels.push(below);
  }
  for (const user of users) {
    g.grant(user, rng.pick(teams), memberLevel(rng), 'member');
    if (rng.chance(0.3)) g.grant(user, rng.pick(teams), memberLevel(rng), 'member');
  }
  const root = (levels[0] as string[])[0] as string;
  teams.forEach((t, i) => {
    const head = i < 4 ? root : rng.pick(levels[i < 7 ? 1 : 2] as string[]);
    g.grant(t, head, anyLevel(rng), 'share');
  });
  return g;
}

/** A chain of nested groups (t_i is a member of t_{i+1}), each owning a project; users enter at any depth. */
export function deepGraph(p: DeepParams, rng: Rng): GraphBuilder {
  const g = new GraphBuilder();
  const users = Array.from({ length: p.users }, (_, i) => g.node(`u${i}`, 'user'));
  const chain = Array.from({ length: p.chain }, (_, i) => g.node(`t${i}`, 'group'));
  for (let i = 0; i + 1 < p.chain; i++) {
    const level: Level = i % 250 === 249 ? 1 : i % 100 === 99 ? 2 : 3;
    g.grant(chain[i] as string, chain[i + 1] as string, level, 'nest');
  }
  chain.forEach((t, i) => {
    const project = g.node(`p${i}`, 'group', t);
    if (i % 10 === 0) g.node(`p${i}s`, 'group', project);
    if (i % 5 === 0) g.node(`o${i}`, 'object', project);
  });
  for (const user of users) {
    g.grant(user, rng.pick(chain), memberLevel(rng), 'member');
    if (rng.chance(0.2)) g.grant(user, rng.pick(chain), memberLevel(rng), 'member');
  }
  for (let i = 0; i < p.chain; i += 5) if (rng.chance(0.5)) g.grant(rng.pick(users), `o${i}`, anyLevel(rng), 'direct');
  for (let i = 0; i < p.chain; i += 50) g.grant(chain[i] as string, `p${rng.int(0, p.chain - 1)}`, anyLevel(rng), 'share');
  return g;
}

/** One team of many users granted on many projects, plus a few small teams and unshared projects. */
export function wideGraph(p: WideParams, rng: Rng): GraphBuilder {
  const g = new GraphBuilder();
  const admin = g.node('u0', 'user');
  const members = Array.from({ length: p.users }, (_, i) => g.node(`u${i + 1}`, 'user'));
  for (let i = 0; i < 10; i++) g.node(`u${p.users + 1 + i}`, 'user');
  const teams = Array.from({ length: 6 }, (_, i) => g.node(`t${i}`, 'group'));
  const projects: string[] = [];
  for (let i = 0; i < p.projects + 20; i++) projects.push(g.node(`p${i}`, 'group', admin));
  for (let i = 0; i < p.projects; i += 10) projects.push(g.node(`p${i}c`, 'group', `p${i}`));
  for (const user of members) g.grant(user, teams[0] as string, memberLevel(rng), 'member');
  for (let i = 0; i < p.projects; i++) g.grant(teams[0] as string, `p${i}`, 1, 'share');
  for (let t = 1; t < teams.length; t++) {
    for (let k = 0; k < 20; k++) g.grant(rng.pick(members), teams[t] as string, memberLevel(rng), 'member');
    for (let k = 0; k < 3; k++) g.grant(teams[t] as string, rng.pick(projects), anyLevel(rng), 'share');
  }
  return g;
}

/** Teams in grant cycles of length 3–8, a few grants across cycles, team-owned project trees. */
export function cyclicGraph(p: CyclicParams, rng: Rng): GraphBuilder {
  const g = new GraphBuilder();
  const users = Array.from({ length: p.users }, (_, i) => g.node(`u${i}`, 'user'));
  const teams = Array.from({ length: Math.max(12, Math.floor(p.users / 10)) }, (_, i) => g.node(`t${i}`, 'group'));
  let start = 0;
  while (start < teams.length) {
    const length = Math.min(rng.int(3, 8), teams.length - start);
    for (let k = 0; k < length; k++) g.grant(teams[start + k] as string, teams[start + ((k + 1) % length)] as string, anyLevel(rng), 'cycle');
    start += length;
  }
  for (const t of teams) if (rng.chance(0.03)) g.grant(t, rng.pick(teams), anyLevel(rng), 'cross');
  const nextProject = counter('p');
  const projects: string[] = [];
  for (const t of teams) {
    const trees = rng.int(1, 2);
    for (let k = 0; k < trees; k++) projects.push(...projectTree(g, rng, t, nextProject, [3, 1]));
  }
  for (const user of users) {
    g.grant(user, rng.pick(teams), memberLevel(rng), 'member');
    if (rng.chance(0.3)) g.grant(user, rng.pick(teams), memberLevel(rng), 'member');
  }
  for (const t of teams) if (rng.chance(0.3)) g.grant(t, rng.pick(projects), anyLevel(rng), 'share');
  return g;
}

/** The graph of a shape at a size, from seed. */
export function generate(shape: Shape, size: Size, seed: string | number): GraphBuilder {
  const rng = createRng(`${seed}:${shape}:${size}`);
  const params = SIZES[size];
  switch (shape) {
    case 'org':
      return orgGraph(params.org, rng);
    case 'tree':
      return treeGraph(params.tree, rng);
    case 'deep':
      return deepGraph(params.deep, rng);
    case 'wide':
      return wideGraph(params.wide, rng);
    case 'cyclic':
      return cyclicGraph(params.cyclic, rng);
  }
}
