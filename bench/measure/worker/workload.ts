// The churn a worker benchmark offers: changes that leave the graph as they
// found it. Each one toggles a pair, adding a grant or removing the one an
// earlier change added. Four in five share an object with a user (one
// permission row); one in five adds a user to a team or takes them out again
// (the team's closure: tens to hundreds of rows on org).
//
// Two orders. Toggle (the default): the pairs are cycled, so a first pass
// over them adds and a second removes. Balanced (the rate phases): pairs are
// added beforehand (seed()), then even changes add a fresh pair and odd ones
// remove the oldest present pair of their kind, so every stretch of the
// sequence is half additions, half removals. The rate phases used the toggle
// order until finding 21 (bench/FINDINGS.md): sized for the whole run, its
// first pass covered every fixed rate, so 5,000/s offered only additions
// (the cheap kind, semi-naive) and the bisection after it only removals.
import { sql, type Queryable } from '../../../src/db/pool.ts';

/** One change in this many is a team membership; the others share an object. */
export const MEMBERSHIP_EVERY = 5;

type ToggleKind = 'membership' | 'share';

interface Pair {
  tail: string;
  head: string;
  level: number;
  present: boolean;
}

/**
 * The churn: pairs that have no permission row yet (so adding one changes
 * rows), cycled in a fixed order; each use flips the pair. Pools are sized so
 * that a pair is added once and removed once, far apart, over the run.
 */
export class Churn {
  /** Pairs of each kind taken so far: toggle order, every use; balanced, the additions. */
  private used = { membership: 0, share: 0 };
  /** Balanced order: pairs of each kind removed so far (the present ones are pool[removed .. used)). */
  private removed = { membership: 0, share: 0 };

  private constructor(private readonly pools: Record<ToggleKind, Pair[]>, private readonly seedChanges: number | null) {}

  /**
   * Pairs for `changes` changes. `balanced.seed`: the balanced order, with
   * that many changes' worth of pairs added by seed() first.
   */
  static async load(db: Queryable, changes: number, balanced?: { seed: number }): Promise<Churn> {
    // (balanced: each change adds at most once every two changes, after the seed)
    const { memberships, shares } = balanced ? pairsFor(balanced.seed * 2 + changes + 2 * MEMBERSHIP_EVERY) : pairsFor(changes);
    return new Churn({ // one spare pair each for rounding
      membership: await freshPairs(db, 'group', 't%', memberships + 1),
      share: await freshPairs(db, 'object', '%', shares + 1),
    }, balanced?.seed ?? null);
  }

  /** Balanced order: commits the seed's additions (present before the first change); returns its token. */
  async seed(db: Queryable): Promise<string> {
    if (this.seedChanges === null) throw new Error('bench churn: seed() is for the balanced order');
    const adds: Pair[] = [];
    for (let i = 0; i < this.seedChanges; i++) adds.push(this.add(kindOf(i)));
    return this.write(db, adds, [], this.seedChanges);
  }

  /** Commits changes first .. first+count-1 in one transaction; returns its freshness token. */
  async commit(db: Queryable, first: number, count: number): Promise<string> {
    const adds: Pair[] = [];
    const removes: Pair[] = [];
    for (let i = first; i < first + count; i++) {
      const kind = kindOf(i);
      if (this.seedChanges === null) {
        const pool = this.pools[kind];
        const pair = pool[this.used[kind]++ % pool.length] as Pair;
        pair.present = !pair.present;
        (pair.present ? adds : removes).push(pair);
      } else if (i % 2 === 1 && this.removed[kind] < this.used[kind]) {
        removes.push(this.remove(kind));
      } else {
        adds.push(this.add(kind));
      }
    }
    return this.write(db, adds, removes, count);
  }

  /** Balanced order: the next fresh pair of `kind`, now present. */
  private add(kind: ToggleKind): Pair {
    const pool = this.pools[kind];
    if (this.used[kind] >= pool.length) throw new Error(`bench churn: out of fresh ${kind} pairs (${pool.length})`);
    const pair = pool[this.used[kind]++] as Pair;
    pair.present = true;
    return pair;
  }

  /** Balanced order: the oldest present pair of `kind`, now absent. */
  private remove(kind: ToggleKind): Pair {
    const pair = this.pools[kind][this.removed[kind]++] as Pair;
    pair.present = false;
    return pair;
  }

  /**
   * One transaction, one statement, as an application writes: an INSERT of
   * the additions, a DELETE of the removals, or both in one statement when a
   * writer that fell behind commits both kinds at once. (Until finding 31 a
   * transaction of one addition also ran an empty DELETE, whose statement
   * triggers fired too: ~30% of a writer's server CPU per change.)
   */
  private async write(db: Queryable, adds: Pair[], removes: Pair[], count: number): Promise<string> {
    if (count === 0) throw new Error('bench churn: a transaction of no change');
    const insert = sql`
      insert into permgraph.grants (tail_id, head_id, level, source)
      select t, h, l, 'bench-churn'
      from unnest(${adds.map((p) => p.tail)}::text[], ${adds.map((p) => p.head)}::text[], ${adds.map((p) => p.level)}::smallint[]) as a(t, h, l)`;
    const remove = sql`
      delete from permgraph.grants g
      using unnest(${removes.map((p) => p.tail)}::text[], ${removes.map((p) => p.head)}::text[]) as r(t, h)
      where g.tail_id = r.t and g.head_id = r.h and g.source = 'bench-churn'`;
    const token = sql`permgraph.current_token() as token`;
    const rows: { token: string }[] = await db.query(
      removes.length === 0 ? sql`${insert} returning ${token}`
      : adds.length === 0 ? sql`${remove} returning ${token}`
      : sql`with added as (${insert} returning 1), removed as (${remove} returning 1)
            select ${token} from (select 1 from added union all select 1 from removed) done`,
    );
    if (rows.length !== count) throw new Error(`bench churn: ${rows.length} of ${count} changes took effect (pairs out of step)`);
    return (rows[0] as { token: string }).token;
  }
}

/** One change in MEMBERSHIP_EVERY is a membership, by its place in the sequence. */
const kindOf = (i: number): ToggleKind => (i % MEMBERSHIP_EVERY === 0 ? 'membership' : 'share');

/** Pairs for `changes` churn changes of the mix, each added once and removed once. */
export function pairsFor(changes: number): { memberships: number; shares: number } {
  const memberships = Math.floor(changes / MEMBERSHIP_EVERY / 2);
  return { memberships, shares: Math.floor(changes / 2) - memberships };
}

/** Distinct (user, head) pairs without a permission row, in a deterministic order. */
async function freshPairs(db: Queryable, headKind: 'group' | 'object', headPattern: string, count: number): Promise<Pair[]> {
  // Enough users and heads for count pairs, however many rows already exist.
  const side = Math.ceil(Math.sqrt(count * 2)) + 20;
  const rows: { u: string; h: string; level: number }[] = await db.query(sql`
    select u.id as u, h.id as h, 1 + (abs(hashtext(u.id || h.id)) % 3) as level
    from (select id from permgraph.nodes where kind = 'user' order by md5(id) limit ${side}) u
    cross join (select id from permgraph.nodes where kind = ${headKind} and id like ${headPattern} order by md5(id) limit ${side}) h
    where not exists (select 1 from permgraph.permissions p where p.user_id = u.id and p.target_id = h.id)
    order by md5(u.id || h.id) limit ${count}`);
  if (rows.length < count) throw new Error(`bench churn: only ${rows.length} fresh user→${headKind} pairs, ${count} needed`);
  return rows.map((r) => ({ tail: r.u, head: r.h, level: headKind === 'object' ? 1 : r.level, present: false }));
}

/** Changes of each kind in a backlog of `changes` (the mix: one in MEMBERSHIP_EVERY is a membership). */
export function backlogKinds(changes: number): { memberships: number; shares: number } {
  const memberships = Math.floor(changes / MEMBERSHIP_EVERY);
  return { memberships, shares: changes - memberships };
}

/**
 * A backlog's `changes` changes of one kind as pairs added and pairs
 * removed again, so that `kept` of the pairs added stay (0: every pair is
 * removed again, the net effect is nil; 1: additions only). Added + removed
 * = changes; kept pairs = added - removed.
 */
export function backlogPlan(changes: number, kept: number): { added: number; removed: number } {
  if (!(kept >= 0 && kept <= 1)) throw new Error(`bench backlog: kept must be between 0 and 1, got ${kept}`);
  const added = Math.min(changes, Math.round(changes / (2 - kept)));
  return { added, removed: changes - added };
}

/**
 * Commits about `changes` churn changes set-based with the worker stopped:
 * per kind, pairs are added (in statements of 50,000), then, once grants
 * is analyzed, some of them removed again (backlogPlan), each row still
 * passing the capture triggers as any application write does. The pairs are a grid of users by teams or
 * objects (each in md5 order); pair i of the grid is user i / side with
 * head i % side. Returns the changes committed of each kind (rows the
 * statements wrote) and the pairs left added.
 */
export async function commitBacklog(db: Queryable, changes: number, kept: number): Promise<{ memberships: number; shares: number; keptPairs: number }> {
  const chunk = 50_000;
  const counts = backlogKinds(changes);
  const kinds = ([['group', 'memberships'], ['object', 'shares']] as const).map(([headKind, kind]) => {
    const { added, removed } = backlogPlan(counts[kind], kept);
    const side = Math.ceil(Math.sqrt(added));
    const grid = (from: number, to: number) => sql`
      select u.id as tail_id, h.id as head_id, h.kind as head_kind
      from (select id, row_number() over (order by md5(id)) - 1 as n from permgraph.nodes where kind = 'user') u
      join (select id, kind, row_number() over (order by md5(id)) - 1 as n from permgraph.nodes
            where kind = ${headKind} and (kind = 'object' or id like 't%')) h
        on true
      where u.n < ${side} and h.n < ${side} and u.n * ${side} + h.n >= ${from} and u.n * ${side} + h.n < ${to}`;
    return { kind, added, removed, grid, inserted: 0, deleted: 0 };
  });
  for (const k of kinds) {
    for (let from = 0; from < k.added; from += chunk) {
      const rows: { n: string }[] = await db.query(sql`
        with written as (
          insert into permgraph.grants (tail_id, head_id, level, source)
          select p.tail_id, p.head_id, case when p.head_kind = 'group' then 1 + (abs(hashtext(p.tail_id || p.head_id)) % 3) else 1 end, 'bench-backlog'
          from (${k.grid(from, Math.min(k.added, from + chunk))}) p
          returning 1)
        select count(*) as n from written`);
      k.inserted += Number(rows[0]?.n ?? 0);
    }
  }
  // Statistics that count the rows just added: with none ('bench-backlog'
  // estimated at one row) the removals joined grants to the grid in a
  // nested loop that computed the grid again for every row, 29 s for
  // 6,857 removals on org small.
  await db.query(sql`analyze permgraph.grants`);
  for (const k of kinds) {
    for (let from = 0; from < k.removed; from += chunk) {
      const rows: { n: string }[] = await db.query(sql`
        with gone as (
          delete from permgraph.grants g
          using (${k.grid(from, Math.min(k.removed, from + chunk))}) p
          where g.tail_id = p.tail_id and g.head_id = p.head_id and g.source = 'bench-backlog'
          returning 1)
        select count(*) as n from gone`);
      k.deleted += Number(rows[0]?.n ?? 0);
    }
  }
  const [memberships, shares] = kinds as [typeof kinds[number], typeof kinds[number]];
  return {
    memberships: memberships.inserted + memberships.deleted,
    shares: shares.inserted + shares.deleted,
    keptPairs: kinds.reduce((sum, k) => sum + k.inserted - k.deleted, 0),
  };
}
