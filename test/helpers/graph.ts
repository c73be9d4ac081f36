// Random graphs for property tests, and moving them in and out of the database.
import fc from 'fast-check';
import type { SQLQuery } from '@databases/pg';
import { sql, type Queryable } from '../../src/db/pool.ts';
import {
  compareIds,
  compareRows,
  type Kind,
  type Level,
  type PermissionRow,
  type RefGrant,
  type RefGraph,
  type RefNode,
  rowKey,
  type TrashedGroupRow,
} from '../reference/model.ts';

export const DAY = 24 * 3600 * 1000;
/** Fixed reference instants relative to the run, far enough from now() to be unambiguous. */
export const PAST = new Date(Date.now() - 30 * DAY);
export const FUTURE = new Date(Date.now() + 30 * DAY);
const HOUR = 3600 * 1000;
/** The first whole second at or after `ms` (whole seconds: JavaScript's milliseconds hold them exactly). */
export const wholeSecondAfter = (ms: number): Date => new Date(Math.ceil(ms / 1000) * 1000);
/**
 * Expiry times for grants: none (most often), past, and three future times
 * (whole seconds, so that JavaScript's milliseconds hold them exactly) that
 * a test can step through with applyChanges({ at }).
 */
export const EXPIRIES: readonly Date[] = [1, 2, 3].map((h) => wholeSecondAfter(Date.now() + h * HOUR));
export const expiryArbitrary: fc.Arbitrary<Date | null> = fc.constantFrom<Date | null>(null, null, null, PAST, ...EXPIRIES);

export interface GraphSize {
  users: number;
  groups: number;
  objects: number;
  grants: number;
}

/**
 * A random graph: owners form a forest (each node may be owned by an earlier
 * user or group, a user may own itself), grants are random (group cycles,
 * parallel grants from several sources, users granted to groups and to
 * users), some groups form a deep chain, and trash times are past or future.
 * With `expiring`, grants expire now and then (expiryArbitrary, or the
 * arbitrary given).
 */
export function graphArbitrary(max: GraphSize, minFraction = 0, expiring: boolean | fc.Arbitrary<Date | null> = false): fc.Arbitrary<RefGraph> {
  const count = (most: number, least: number) => fc.integer({ min: Math.max(least, Math.floor(most * minFraction)), max: most });
  return fc
    .record({
      users: count(max.users, 1),
      groups: count(max.groups, 0),
      objects: count(max.objects, 0),
      chain: fc.integer({ min: 0, max: Math.min(12, max.groups) }),
      seed: fc.integer(),
    })
    .chain(({ users, groups, objects, chain, seed }) => {
      const kinds: Kind[] = [
        ...Array<Kind>(users).fill('user'),
        ...Array<Kind>(groups).fill('group'),
        ...Array<Kind>(objects).fill('object'),
      ];
      return fc
        .record({
          order: fc.shuffledSubarray(kinds.map((_, i) => i), { minLength: kinds.length, maxLength: kinds.length }),
          owners: fc.array(fc.option(fc.nat(), { freq: 2 }), { minLength: kinds.length, maxLength: kinds.length }),
          selfOwned: fc.array(fc.boolean(), { minLength: kinds.length, maxLength: kinds.length }),
          trash: fc.array(fc.constantFrom<Date | null>(null, null, null, null, PAST, FUTURE), {
            minLength: kinds.length,
            maxLength: kinds.length,
          }),
          grants: fc.array(
            fc.record({
              tail: fc.nat(),
              head: fc.nat(),
              level: fc.constantFrom<Level>(1, 2, 3),
              source: fc.constantFrom('a', 'b', 'c'),
              expiresAt: expiring === true ? expiryArbitrary : expiring === false ? fc.constant<Date | null>(null) : expiring,
            }),
            { minLength: Math.floor(max.grants * minFraction), maxLength: max.grants },
          ),
          chainLevels: fc.array(fc.constantFrom<Level>(1, 2, 3), { minLength: chain, maxLength: chain }),
        })
        .map(({ order, owners, selfOwned, trash, grants, chainLevels }) =>
          buildGraph(kinds, order, owners, selfOwned, trash, grants, chainLevels, seed),
        );
    });
}

function nodeId(kind: Kind, index: number, seed: number): string {
  // Mixed case and a non-ASCII id now and then exercise byte-wise ordering.
  const prefix = { user: 'u', group: 'g', object: 'o' }[kind];
  return seed % 5 === 0 && index % 3 === 0 ? `${prefix.toUpperCase()}é${index}` : `${prefix}${index}`;
}

function buildGraph(
  kinds: Kind[],
  order: number[],
  owners: (number | null)[],
  selfOwned: boolean[],
  trash: (Date | null)[],
  grantSpecs: { tail: number; head: number; level: Level; source: string; expiresAt: Date | null }[],
  chainLevels: Level[],
  seed: number,
): RefGraph {
  const ids = kinds.map((kind, i) => nodeId(kind, i, seed));
  const nodes: RefNode[] = [];
  const placed: number[] = [];
  for (const [position, i] of order.entries()) {
    const kind = kinds[i]!;
    const possibleOwners = placed.filter((j) => kinds[j] !== 'object');
    const pick = owners[position];
    let ownerId: string | null = null;
    if (kind === 'user' && selfOwned[position]) ownerId = ids[i]!;
    else if (pick !== null && pick !== undefined && possibleOwners.length > 0) {
      ownerId = ids[possibleOwners[pick % possibleOwners.length]!]!;
    }
    nodes.push({ id: ids[i]!, kind, ownerId, trashAt: kind === 'user' ? null : (trash[position] ?? null) });
    placed.push(i);
  }
  const tails = kinds.flatMap((k, i) => (k === 'object' ? [] : [i]));
  const grants = new Map<string, RefGrant>();
  const add = (g: RefGrant) => grants.set(`${g.tailId}\u0000${g.headId}\u0000${g.source}`, g);
  for (const spec of grantSpecs) {
    add({
      tailId: ids[tails[spec.tail % tails.length]!]!,
      headId: ids[spec.head % ids.length]!,
      level: spec.level,
      source: spec.source,
      ...(spec.expiresAt ? { expiresAt: spec.expiresAt } : {}),
    });
  }
  const groups = kinds.flatMap((k, i) => (k === 'group' ? [i] : []));
  chainLevels.forEach((level, step) => {
    if (step + 1 < groups.length) add({ tailId: ids[groups[step]!]!, headId: ids[groups[step + 1]!]!, level, source: 'chain' });
  });
  return { nodes, grants: [...grants.values()] };
}

/** Replaces the database's graph with this one (nodes in owner-first order) and clears derived tables. */
export async function loadGraph(db: Queryable, graph: RefGraph): Promise<void> {
  await db.tx(async (tx) => {
    await tx.query(sql`truncate permgraph.grants, permgraph.nodes, permgraph.permissions, permgraph.trashed_groups`);
    await tx.query(sql`delete from permgraph.changes`);
    await insertNodes(tx, graph.nodes);
    await insertGrants(tx, graph.grants);
  });
}

export async function insertNodes(db: Queryable, nodes: readonly RefNode[]): Promise<void> {
  if (nodes.length === 0) return;
  await db.query(sql`
    insert into permgraph.nodes (id, kind, owner_id, trash_at)
    select id, kind, owner_id, trash_at from unnest(${nodes.map((n) => n.id)}::text[], ${nodes.map((n) => n.kind)}::text[],
                         ${nodes.map((n) => n.ownerId)}::text[], ${nodes.map((n) => n.trashAt)}::timestamptz[])
    with ordinality as t(id, kind, owner_id, trash_at, n) order by n`);
}

export async function insertGrants(db: Queryable, grants: readonly RefGrant[]): Promise<void> {
  if (grants.length === 0) return;
  // expires_at only when needed: the upgrade and security tests load graphs into schemas as released before it
  const expiring = grants.some((g) => g.expiresAt != null);
  await db.query(sql`
    insert into permgraph.grants (tail_id, head_id, level, source${expiring ? sql`, expires_at` : sql``})
    select * from unnest(${grants.map((g) => g.tailId)}::text[], ${grants.map((g) => g.headId)}::text[],
                         ${grants.map((g) => g.level)}::smallint[], ${grants.map((g) => g.source)}::text[]
                         ${expiring ? sql`, ${grants.map((g) => g.expiresAt ?? null)}::timestamptz[]` : sql``})`);
}

/** The graph the database holds now (in one snapshot when db is a transaction). */
export async function readGraph(db: Queryable): Promise<RefGraph> {
  const nodes: { id: string; kind: Kind; owner_id: string | null; trash_at: Date | null }[] = await db.query(
    sql`select id, kind, owner_id, trash_at from permgraph.nodes`,
  );
  const grants: { tail_id: string; head_id: string; level: Level; source: string; expires_at: Date | null }[] = await db.query(
    sql`select tail_id, head_id, level, source, expires_at from permgraph.grants`,
  );
  return {
    nodes: nodes.map((n) => ({ id: n.id, kind: n.kind, ownerId: n.owner_id, trashAt: n.trash_at })),
    grants: grants.map((x) => ({ tailId: x.tail_id, headId: x.head_id, level: x.level, source: x.source, expiresAt: x.expires_at })),
  };
}

/** Ends any long job without a trace (its tables emptied): a test's graph starts with none. */
export async function clearLongJobs(db: Queryable): Promise<void> {
  await db.query(sql`
    delete from permgraph.long_job_changes; delete from permgraph.long_job_users; delete from permgraph.long_job;
    delete from permgraph.long_job_backlog_tails; delete from permgraph.long_job_tombstone_waits`);
}

/** Rows by pair, each as its JSON text: two maps are equal when every pair has the same row. */
export const rowsByPair = (rows: readonly PermissionRow[]): Map<string, string> => new Map(rows.map((r) => [rowKey(r), JSON.stringify(r)]));

/** The rows readers see, by pair (the rows of deleted nodes are hidden until a batch removes them). */
export async function readVisibleRows(db: Queryable): Promise<Map<string, string>> {
  return rowsByPair(await readRows(db, sql`permgraph.effective_permissions`));
}

/** Every stored row, in the model's order. */
export async function readPermissions(db: Queryable): Promise<PermissionRow[]> {
  return (await readRows(db, sql`permgraph.permissions`)).sort(compareRows);
}

async function readRows(db: Queryable, table: SQLQuery): Promise<PermissionRow[]> {
  const rows: { user_id: string; target_id: string; level: Level; traverse_owned: boolean; valid_until: Date | null }[] = await db.query(
    sql`select user_id, target_id, level, traverse_owned, valid_until from ${table}`,
  );
  return rows.map((r) => ({ userId: r.user_id, targetId: r.target_id, level: r.level, traverseOwned: r.traverse_owned, validUntil: r.valid_until }));
}

export async function readTrashedGroups(db: Queryable): Promise<TrashedGroupRow[]> {
  const rows: { group_id: string; trash_at: Date }[] = await db.query(
    sql`select group_id, trash_at from permgraph.trashed_groups`,
  );
  return rows.map((r) => ({ groupId: r.group_id, trashAt: r.trash_at })).sort((a, b) => compareIds(a.groupId, b.groupId));
}

/** Change rows still in the queue, whatever the low-water mark says (a backlog a long job holds included). */
export async function countPendingChanges(db: Queryable): Promise<number> {
  return Number((await db.query(sql`select count(*) as n from permgraph.changes`))[0].n);
}
