// Random sequences of graph changes, applied both to the database (plain SQL,
// as any application would) and to an in-memory copy for the reference model.
import fc from 'fast-check';
import { sql, type Queryable } from '../../src/db/pool.ts';
import type { Kind, Level, RefGrant, RefGraph, RefNode } from '../reference/model.ts';
import { refresh } from '../../src/engine/apply.ts';
import { expiryArbitrary, FUTURE, graphArbitrary, loadGraph, PAST } from './graph.ts';

export type Mutation =
  /** reuse: the id of a node deleted earlier, if there is one (its kind may differ), instead of a new id. */
  | { type: 'addNode'; kind: Kind; owner: number | null; trash: Date | null; reuse?: number | null }
  | { type: 'deleteNode'; pick: number }
  | { type: 'setOwner'; pick: number; owner: number | null }
  | { type: 'setTrash'; pick: number; trash: Date | null }
  | { type: 'grant'; tail: number; head: number; level: Level; source: string; expiresAt?: Date | null }
  | { type: 'setExpiry'; pick: number; expiresAt: Date | null }
  | { type: 'revoke'; pick: number };

const trashArb = fc.constantFrom<Date | null>(null, null, PAST, FUTURE);

/** A node added; reuse draws whether it takes a deleted node's id (null: a new one) and which. */
const addNodeArb = (reuse: fc.Arbitrary<number | null>) =>
  fc.record({
    type: fc.constant('addNode' as const),
    kind: fc.constantFrom<Kind>('user', 'group', 'group', 'object'),
    owner: fc.option(fc.nat()),
    trash: trashArb,
    reuse,
  });
const deleteNodeArb = fc.record({ type: fc.constant('deleteNode' as const), pick: fc.nat() });

export const mutationArbitrary: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 2, arbitrary: addNodeArb(fc.option(fc.nat(), { freq: 3 })) },
  { weight: 1, arbitrary: deleteNodeArb },
  { weight: 2, arbitrary: fc.record({ type: fc.constant('setOwner' as const), pick: fc.nat(), owner: fc.option(fc.nat()) }) },
  { weight: 1, arbitrary: fc.record({ type: fc.constant('setTrash' as const), pick: fc.nat(), trash: trashArb }) },
  { weight: 5, arbitrary: fc.record({ type: fc.constant('grant' as const), tail: fc.nat(), head: fc.nat(), level: fc.constantFrom<Level>(1, 2, 3), source: fc.constantFrom('a', 'b') }) },
  { weight: 3, arbitrary: fc.record({ type: fc.constant('revoke' as const), pick: fc.nat() }) },
);

/**
 * The same changes with nodes deleted, and their ids made again, about four
 * times as often: what a long job's tombstones must get right
 * (065_long_job.sql).
 */
export const remakingMutationArbitrary: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 2, arbitrary: mutationArbitrary },
  { weight: 1, arbitrary: deleteNodeArb },
  { weight: 1, arbitrary: addNodeArb(fc.nat()) },
);

/** The same changes, where grants also get, change and lose expiry times. */
export const expiringMutationArbitrary: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 9, arbitrary: mutationArbitrary },
  { weight: 3, arbitrary: fc.record({ type: fc.constant('grant' as const), tail: fc.nat(), head: fc.nat(), level: fc.constantFrom<Level>(1, 2, 3), source: fc.constantFrom('a', 'b'), expiresAt: expiryArbitrary }) },
  { weight: 2, arbitrary: fc.record({ type: fc.constant('setExpiry' as const), pick: fc.nat(), expiresAt: expiryArbitrary }) },
);

/** The model's copy of the graph, mutated in step with the database. */
export class GraphState {
  readonly nodes = new Map<string, RefNode>();
  readonly grants = new Map<string, RefGrant>();
  private counter = 0;
  /** Ids of deleted nodes, which an addNode may take again. */
  private readonly deleted: string[] = [];

  /** idPrefix starts the ids of the nodes it adds: writers at work side by side each use their own. */
  constructor(
    graph: RefGraph,
    private readonly idPrefix = 'n',
  ) {
    this.reload(graph);
  }

  /** Takes the graph as it is now (after a write that failed), keeping the ids used and deleted so far. */
  reload(graph: RefGraph): void {
    this.nodes.clear();
    this.grants.clear();
    for (const n of graph.nodes) this.nodes.set(n.id, { ...n });
    for (const g of graph.grants) this.grants.set(grantKey(g), { ...g });
  }

  snapshot(): RefGraph {
    return { nodes: [...this.nodes.values()].map((n) => ({ ...n })), grants: [...this.grants.values()].map((g) => ({ ...g })) };
  }

  /** Applies one mutation to the database and the model; invalid picks become no-ops. Returns a description. */
  async apply(db: Queryable, m: Mutation): Promise<string> {
    const nodes = [...this.nodes.values()];
    const pickNode = (i: number, filter: (n: RefNode) => boolean = () => true) => {
      const candidates = nodes.filter(filter);
      return candidates.length ? candidates[i % candidates.length]! : undefined;
    };
    switch (m.type) {
      case 'addNode': {
        const reused = m.reuse == null || this.deleted.length === 0 ? undefined : this.deleted.splice(m.reuse % this.deleted.length, 1)[0];
        const id = reused ?? `${this.idPrefix}${this.counter++}_${m.kind[0]}`;
        const owner = m.owner === null ? undefined : pickNode(m.owner, (n) => n.kind !== 'object');
        const node: RefNode = { id, kind: m.kind, ownerId: owner?.id ?? null, trashAt: m.kind === 'user' ? null : m.trash };
        await db.query(sql`insert into permgraph.nodes (id, kind, owner_id, trash_at) values (${id}, ${node.kind}, ${node.ownerId}, ${node.trashAt})`);
        this.nodes.set(id, node);
        return `add ${node.kind} ${id} owner=${node.ownerId}`;
      }
      case 'deleteNode': {
        const victim = pickNode(m.pick, (n) => !nodes.some((o) => o.ownerId === n.id && o.id !== n.id));
        if (!victim) return 'noop';
        await db.query(sql`delete from permgraph.nodes where id = ${victim.id}`);
        this.nodes.delete(victim.id);
        this.deleted.push(victim.id);
        for (const [key, g] of this.grants) if (g.tailId === victim.id || g.headId === victim.id) this.grants.delete(key);
        return `delete ${victim.id}`;
      }
      case 'setOwner': {
        const node = pickNode(m.pick);
        if (!node) return 'noop';
        const owner = m.owner === null ? undefined : pickNode(m.owner, (n) => n.kind !== 'object' && !this.ownsTransitively(node.id, n.id));
        if (owner?.id === node.id && node.kind !== 'user') return 'noop';
        await db.query(sql`update permgraph.nodes set owner_id = ${owner?.id ?? null} where id = ${node.id}`);
        node.ownerId = owner?.id ?? null;
        return `owner of ${node.id} := ${node.ownerId}`;
      }
      case 'setTrash': {
        const node = pickNode(m.pick, (n) => n.kind !== 'user');
        if (!node) return 'noop';
        await db.query(sql`update permgraph.nodes set trash_at = ${m.trash} where id = ${node.id}`);
        node.trashAt = m.trash;
        return `trash ${node.id} := ${m.trash?.toISOString()}`;
      }
      case 'grant': {
        const tail = pickNode(m.tail, (n) => n.kind !== 'object');
        const head = pickNode(m.head);
        if (!tail || !head) return 'noop';
        const expiresAt = m.expiresAt ?? null;
        await db.query(sql`
          insert into permgraph.grants (tail_id, head_id, level, source, expires_at)
          values (${tail.id}, ${head.id}, ${m.level}, ${m.source}, ${expiresAt})
          on conflict (tail_id, head_id, source) do update set level = excluded.level, expires_at = excluded.expires_at`);
        const g: RefGrant = { tailId: tail.id, headId: head.id, level: m.level, source: m.source, expiresAt };
        this.grants.set(grantKey(g), g);
        return `grant ${tail.id} -${m.level}-> ${head.id} (${m.source})${expiresAt ? ` until ${expiresAt.toISOString()}` : ''}`;
      }
      case 'setExpiry': {
        const grants = [...this.grants.values()];
        if (grants.length === 0) return 'noop';
        const g = grants[m.pick % grants.length]!;
        await db.query(sql`update permgraph.grants set expires_at = ${m.expiresAt}
                           where tail_id = ${g.tailId} and head_id = ${g.headId} and source = ${g.source}`);
        g.expiresAt = m.expiresAt;
        return `expiry of ${g.tailId} -> ${g.headId} (${g.source}) := ${m.expiresAt?.toISOString() ?? 'never'}`;
      }
      case 'revoke': {
        const grants = [...this.grants.values()];
        if (grants.length === 0) return 'noop';
        const g = grants[m.pick % grants.length]!;
        await db.query(sql`delete from permgraph.grants where tail_id = ${g.tailId} and head_id = ${g.headId} and source = ${g.source}`);
        this.grants.delete(grantKey(g));
        return `revoke ${g.tailId} -> ${g.headId} (${g.source})`;
      }
    }
  }

  /** Does `ancestor` own `id`, directly or through owners? (Setting id as ancestor's owner would then be a cycle.) */
  private ownsTransitively(ancestor: string, id: string): boolean {
    let current: string | null = id;
    const seen = new Set<string>();
    while (current !== null && !seen.has(current)) {
      if (current === ancestor) return true;
      seen.add(current);
      current = this.nodes.get(current)?.ownerId ?? null;
    }
    return false;
  }
}

export function grantKey(g: RefGrant): string {
  return `${g.tailId}\u0000${g.headId}\u0000${g.source}`;
}

/** The worker tests' starting point: one small random graph (always the same), loaded and refreshed. */
export async function seedSmallGraph(db: Queryable): Promise<GraphState> {
  const graph = fc.sample(graphArbitrary({ users: 10, groups: 12, objects: 5, grants: 40 }, 0.5), { numRuns: 1, seed: 42 })[0]!;
  await loadGraph(db, graph);
  await refresh(db);
  return new GraphState(graph);
}

/** count random mutations (the same ones for the same seed), applied to the database and to state. */
export async function applyRandomMutations(db: Queryable, state: GraphState, count: number, seed: number): Promise<void> {
  for (const m of fc.sample(mutationArbitrary, { numRuns: count, seed })) await state.apply(db, m);
}
