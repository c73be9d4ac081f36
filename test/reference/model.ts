/**
 * Independent pure-TypeScript reference model of the permission semantics in
 * docs/semantics.md. It is the oracle for tests: small and
 * exhaustive rather than fast. It deliberately shares no code with the SQL
 * engine.
 *
 * Decisions where the spec leaves room (see also the comments below):
 * - Grants or owner ids naming an id that is not a registered node are ignored
 *   (an edge needs both ends to be nodes; the spec says grant heads are nodes).
 * - Duplicate node ids are a malformed graph and throw.
 * - Ownership cycles cannot exist (the spec says they are refused); the trash
 *   walk still stops on one, so the model terminates on any input.
 * - check(): only x's own effective trash hides x (the spec's text: "a group or
 *   object whose effective trash time is <= now() is hidden"). The owner o used
 *   by the owner check is not separately tested for trash; for a group/object x
 *   owned by a trashed group, x's effective trash already covers it.
 * - check() with a user id that is not a user node, or an unknown target, is
 *   false.
 */

export type Kind = 'user' | 'group' | 'object';
export type Level = 1 | 2 | 3;
export interface RefNode {
  id: string;
  kind: Kind;
  ownerId: string | null;
  trashAt: Date | null;
}
export interface RefGrant {
  tailId: string;
  headId: string;
  level: Level;
  source: string;
  /** null or absent = never expires. */
  expiresAt?: Date | null;
}
export interface RefGraph {
  nodes: readonly RefNode[];
  grants: readonly RefGrant[];
}
export interface PermissionRow {
  userId: string;
  targetId: string;
  level: Level;
  traverseOwned: boolean;
  /** The earliest expiry at which this row would change or vanish; null = never. */
  validUntil: Date | null;
}
type RowValue = Omit<PermissionRow, 'validUntil'>;
export interface TrashedGroupRow {
  groupId: string;
  trashAt: Date;
}

/** Byte-wise comparison of the UTF-8 encodings (PostgreSQL's C collation). */
export function compareIds(a: string, b: string): number {
  const c = Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
  return c < 0 ? -1 : c > 0 ? 1 : 0;
}

interface Edge {
  head: string;
  level: Level;
}

interface Indexed {
  byId: Map<string, RefNode>;
  /** tail -> outgoing edges: ownership edges and grants (identity handled apart). */
  out: Map<string, Edge[]>;
}

function index(graph: RefGraph): Indexed {
  const byId = new Map<string, RefNode>();
  for (const n of graph.nodes) {
    if (byId.has(n.id)) throw new Error(`reference model: duplicate node id ${JSON.stringify(n.id)}`);
    byId.set(n.id, n);
  }
  const out = new Map<string, Edge[]>();
  const add = (tail: string, head: string, level: Level): void => {
    if (!byId.has(tail) || !byId.has(head)) return; // dangling: ignored (see header)
    let list = out.get(tail);
    if (!list) out.set(tail, (list = []));
    list.push({ head, level });
  };
  // 1. Ownership: owner -> node at 3, only for nodes of kind user or group.
  for (const n of graph.nodes) {
    if ((n.kind === 'user' || n.kind === 'group') && n.ownerId !== null) add(n.ownerId, n.id, 3);
  }
  // 3. Grants: parallel edges are kept as they are (max over paths handles them).
  for (const g of graph.grants) add(g.tailId, g.headId, g.level);
  return { byId, out };
}

/**
 * Rows for one user u. Widest-path relaxation (max over paths of min edge
 * level): u is the start (its value is 3, the top level, so min() is the edge
 * level); only groups are expanded afterwards. A node's value only increases
 * and is bounded by 3, so the work list empties even on cycles.
 */
function rowsForUser(ix: Indexed, u: string): RowValue[] {
  const best = new Map<string, Level>();
  const work: string[] = [];
  const relax = (head: string, level: Level): void => {
    const prev = best.get(head) ?? 0;
    if (level > prev) {
      best.set(head, level);
      if (ix.byId.get(head)?.kind === 'group') work.push(head);
    }
  };
  for (const e of ix.out.get(u) ?? []) relax(e.head, e.level);
  while (work.length > 0) {
    const g = work.pop()!;
    const lg = best.get(g)!;
    for (const e of ix.out.get(g) ?? []) relax(e.head, Math.min(lg, e.level) as Level);
  }

  // Tails from which a path can leave: u itself (as the start) and every group
  // reached. Any edge out of one of them ends some path.
  const tails = [u, ...[...best.keys()].filter((id) => ix.byId.get(id)!.kind === 'group')];
  // traverse_owned for user targets: some path's last edge has level 3.
  const managedUsers = new Set<string>();
  for (const t of tails) {
    for (const e of ix.out.get(t) ?? []) {
      if (e.level === 3 && ix.byId.get(e.head)!.kind === 'user') managedUsers.add(e.head);
    }
  }

  const rows: RowValue[] = [];
  for (const [target, level] of best) {
    if (target === u) continue; // identity row below
    const kind = ix.byId.get(target)!.kind;
    const traverseOwned = kind === 'group' ? true : kind === 'object' ? false : managedUsers.has(target);
    rows.push({ userId: u, targetId: target, level, traverseOwned });
  }
  // 2. Identity: (u, u, 3, true) always (dominates any path back to u).
  rows.push({ userId: u, targetId: u, level: 3, traverseOwned: true });
  return rows;
}

/** The graph at time `at`: without the grants whose expiresAt <= at. */
export function graphAt(graph: RefGraph, at: Date): RefGraph {
  return { nodes: graph.nodes, grants: graph.grants.filter((g) => g.expiresAt == null || g.expiresAt.getTime() > at.getTime()) };
}

function rowsAt(graph: RefGraph, at: Date): RowValue[] {
  const ix = index(graphAt(graph, at));
  const rows: RowValue[] = [];
  for (const n of graph.nodes) if (n.kind === 'user') rows.push(...rowsForUser(ix, n.id));
  return rows;
}

/** A row's pair as one string: the key of rows by pair. */
export const rowKey = (r: { userId: string; targetId: string }): string => `${r.userId}\u0000${r.targetId}`;

/** The order of rows the model returns: by user, then target, byte-wise. */
export const compareRows = (a: PermissionRow, b: PermissionRow): number => compareIds(a.userId, b.userId) || compareIds(a.targetId, b.targetId);

/**
 * All rows of permgraph.permissions at time `at` (default: now), sorted by
 * (userId, targetId) with compareIds. valid_until by brute force, straight
 * from its definition: the graph is evaluated again at every later expiry
 * time, and a row's valid_until is the first of them at which the row differs
 * (or is gone).
 */
export function computePermissions(graph: RefGraph, at: Date = new Date()): PermissionRow[] {
  const now = rowsAt(graph, at);
  const later = expiryTimes(graph, at).map((time) => ({ time, rows: new Map(rowsAt(graph, time).map((r) => [rowKey(r), r] as const)) }));
  const rows: PermissionRow[] = now.map((r) => {
    const change = later.find(({ rows: then }) => {
      const t = then.get(rowKey(r));
      return !t || t.level !== r.level || t.traverseOwned !== r.traverseOwned;
    });
    return { ...r, validUntil: change ? change.time : null };
  });
  rows.sort(compareRows);
  return rows;
}

/** The expiry times of the graph's grants after `at`, in order. */
export function expiryTimes(graph: RefGraph, at: Date): Date[] {
  return [...new Set(graph.grants.flatMap((g) => (g.expiresAt != null && g.expiresAt.getTime() > at.getTime() ? [g.expiresAt.getTime()] : [])))]
    .sort((a, b) => a - b)
    .map((t) => new Date(t));
}

function minDate(a: Date | null, b: Date | null): Date | null {
  if (a === null) return b;
  if (b === null) return a;
  return a.getTime() <= b.getTime() ? a : b;
}

/** Group: earliest trash_at over itself and its chain of group owners (a user owner ends the chain). */
function groupEffectiveTrash(byId: Map<string, RefNode>, groupId: string): Date | null {
  let result: Date | null = null;
  const seen = new Set<string>();
  let cur = byId.get(groupId);
  while (cur && cur.kind === 'group' && !seen.has(cur.id)) {
    seen.add(cur.id);
    result = minDate(result, cur.trashAt);
    cur = cur.ownerId === null ? undefined : byId.get(cur.ownerId);
  }
  return result;
}

function effectiveTrashIndexed(byId: Map<string, RefNode>, id: string): Date | null {
  const n = byId.get(id);
  if (!n || n.kind === 'user') return null; // users are never trashed
  if (n.kind === 'group') return groupEffectiveTrash(byId, id);
  // object: own trash_at and, when the owner is a group, the owner's effective trash
  const owner = n.ownerId === null ? undefined : byId.get(n.ownerId);
  const inherited = owner && owner.kind === 'group' ? groupEffectiveTrash(byId, owner.id) : null;
  return minDate(n.trashAt, inherited);
}

/** Effective trash time of any node (group/object per spec; users and unknown ids: null). */
export function effectiveTrashAt(graph: RefGraph, id: string): Date | null {
  return effectiveTrashIndexed(index(graph).byId, id);
}

/** Every group whose effective trash time is not null, sorted by groupId (compareIds). */
export function computeTrashedGroups(graph: RefGraph): TrashedGroupRow[] {
  const { byId } = index(graph);
  const rows: TrashedGroupRow[] = [];
  for (const n of graph.nodes) {
    if (n.kind !== 'group') continue;
    const t = groupEffectiveTrash(byId, n.id);
    if (t !== null) rows.push({ groupId: n.id, trashAt: t });
  }
  rows.sort((a, b) => compareIds(a.groupId, b.groupId));
  return rows;
}

/**
 * "May user read/write/manage x at level L": a row (u, x) with level >= L, or x
 * has an owner o and a row (u, o) with level >= L and traverse_owned; and x is
 * not hidden (effective trash <= now). Users are never hidden. Unknown ids -> false.
 * Grants expired by `now` are not part of the graph.
 */
export function check(graph: RefGraph, userId: string, targetId: string, level: Level, now: Date): boolean {
  const ix = index(graphAt(graph, now));
  const user = ix.byId.get(userId);
  const target = ix.byId.get(targetId);
  if (!user || user.kind !== 'user' || !target) return false;
  const trash = effectiveTrashIndexed(ix.byId, targetId);
  if (trash !== null && trash.getTime() <= now.getTime()) return false;
  const rows = new Map(rowsForUser(ix, userId).map((r) => [r.targetId, r] as const));
  const direct = rows.get(targetId);
  if (direct && direct.level >= level) return true;
  if (target.ownerId !== null) {
    const viaOwner = rows.get(target.ownerId);
    if (viaOwner && viaOwner.level >= level && viaOwner.traverseOwned) return true;
  }
  return false;
}
