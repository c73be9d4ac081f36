// The two plans of the listings (sql/functions/120_listing.sql, _listing_scans):
// "rows" walks the user's permission rows, "scan" walks the nodes (or the
// application table) in id order probing the user's rows. The automatic
// choice depends on how much the user sees; here each plan is forced in turn
// with the setting permgraph.listing_plan, and both must give the reference
// model's answer, page by page, on the same graphs (expiring grants
// included), and the automatic choice must agree with them.
import type { Transaction } from '@databases/pg';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { listTargets, type Page, type TargetItem } from '../../src/app/listing.ts';
import { sql } from '../../src/db/pool.ts';
import { refresh } from '../../src/engine/apply.ts';
import * as model from '../reference/model.ts';
import type { Level, RefGraph } from '../reference/model.ts';
import { expectedRowAccess } from '../helpers/app-rows.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { PAST, graphArbitrary, loadGraph } from '../helpers/graph.ts';

const levelArb = fc.constantFrom<Level>(1, 2, 3);
const PLANS = ['rows', 'scan', null] as const;
type Plan = (typeof PLANS)[number];

function expectedTargets(graph: RefGraph, user: string, level: Level, now: Date, kind?: string): string[] {
  return graph.nodes
    .filter((n) => (kind === undefined || n.kind === kind) && model.check(graph, user, n.id, level, now))
    .map((n) => n.id)
    .sort(model.compareIds);
}

describe('listing plans: rows and scan give the same pages', async () => {
  const { db } = await createTestDatabase();

  /** Runs body in a transaction with permgraph.listing_plan set (null: the automatic choice). */
  async function withPlan<T>(plan: Plan, body: (tx: Transaction) => Promise<T>): Promise<T> {
    return db.tx(async (tx) => {
      await tx.query(sql`select set_config('permgraph.listing_plan', ${plan ?? ''}, true)`);
      return body(tx);
    });
  }

  async function allTargets(plan: Plan, user: string, level: Level, limit: number, kind?: 'user' | 'group' | 'object'): Promise<TargetItem[]> {
    return withPlan(plan, async (tx) => {
      const items: TargetItem[] = [];
      let after: string | null = null;
      for (;;) {
        const page: Page<TargetItem> = await listTargets(tx, user, { level, limit, after, kind });
        items.push(...page.items);
        if (page.next === null) return items;
        after = page.next;
      }
    });
  }

  async function allRows(plan: Plan, user: string, level: Level, limit: number): Promise<string[]> {
    return withPlan(plan, async (tx) => {
      const ids: string[] = [];
      let after: string | null = null;
      for (;;) {
        const rows: { id: string }[] = await tx.query(sql`
          select id from permgraph.list_rows(null::public.app_rows, 'id', 'owner_id', ${user}, ${level}::integer, ${after}::text, ${limit + 1}::integer)`);
        const page = rows.slice(0, limit).map((r) => r.id);
        ids.push(...page);
        if (rows.length <= limit) return ids;
        after = page[page.length - 1]!;
      }
    });
  }

  it('random graphs with expiring grants: list_targets, every kind, both plans, equal the model', async () => {
    await fc.assert(
      fc.asyncProperty(graphArbitrary({ users: 5, groups: 8, objects: 8, grants: 30 }, 0, true), levelArb, fc.integer({ min: 1, max: 4 }), async (graph, level, limit) => {
        await loadGraph(db, graph);
        await refresh(db);
        const now = new Date();
        for (const user of graph.nodes.filter((n) => n.kind === 'user')) {
          const expected = expectedTargets(graph, user.id, level, now);
          const byPlan = new Map<Plan, TargetItem[]>();
          for (const plan of PLANS) {
            const items = await allTargets(plan, user.id, level, limit);
            expect(items.map((t) => t.id), `${plan ?? 'auto'}: targets of ${user.id} at ${level}`).toEqual(expected);
            byPlan.set(plan, items);
            const objects = await allTargets(plan, user.id, level, limit, 'object');
            expect(objects.map((t) => t.id), `${plan ?? 'auto'}: objects of ${user.id}`).toEqual(expectedTargets(graph, user.id, level, now, 'object'));
          }
          // levels and kinds too
          expect(byPlan.get('scan')).toEqual(byPlan.get('rows'));
          expect(byPlan.get(null)).toEqual(byPlan.get('rows'));
        }
      }),
      { numRuns: 30 },
    );
  });

  it('one user sees almost everything, another almost nothing: the automatic choice and both plans agree with the model', async () => {
    await db.query(sql`drop table if exists public.app_rows`);
    await db.query(sql`create table public.app_rows (id text primary key, owner_id text)`);
    await db.query(sql`create index on public.app_rows (owner_id, id)`);
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ owner: fc.nat(39) }), { minLength: 0, maxLength: 12 }),
        fc.integer({ min: 8, max: 120 }),
        levelArb,
        async (extras, limit, level) => {
          // 40 groups; 'all' reads every one of them (through team 'everyone'), 'few' reads g7 only.
          const groups = Array.from({ length: 40 }, (_, i) => g(`g${String(i).padStart(2, '0')}`, null, i === 13 ? PAST : null));
          const objects = Array.from({ length: 200 }, (_, i) => o(`o${String(i).padStart(3, '0')}`, groups[(i * 7) % 40]!.id, i % 50 === 3 ? PAST : null));
          const graph: RefGraph = {
            nodes: [u('all'), u('few'), g('everyone'), ...groups, ...objects],
            grants: [
              grant('all', 3, 'everyone'),
              ...groups.map((gr) => grant('everyone', 2, gr.id)),
              grant('few', 1, 'g07'),
              ...[...new Set(extras.map((e) => e.owner))].filter((i) => i !== 7).map((i) => grant('few', 3, groups[i]!.id)),
            ],
          };
          await loadGraph(db, graph);
          await refresh(db);
          await db.query(sql`truncate public.app_rows`);
          // rows owned by groups, a user, nobody, and an id that is no node
          const rows = Array.from({ length: 300 }, (_, i) => ({ id: `r${String(i).padStart(3, '0')}`, ownerId: i % 97 === 5 ? null : i % 89 === 1 ? 'all' : groups[(i * 11) % 40]!.id }));
          await db.query(sql`insert into public.app_rows select * from unnest(${rows.map((r) => r.id)}::text[], ${rows.map((r) => r.ownerId)}::text[])`);
          await db.query(sql`analyze public.app_rows`);
          await db.query(sql`analyze permgraph.nodes`);
          const now = new Date();
          for (const user of ['all', 'few']) {
            const expected = expectedTargets(graph, user, level, now);
            const expectedRows = rows.filter((r) => expectedRowAccess(graph, new Set(), user, r, level, now)).map((r) => r.id);
            for (const plan of PLANS) {
              expect((await allTargets(plan, user, level, limit)).map((t) => t.id), `${plan ?? 'auto'}: ${user}`).toEqual(expected);
              expect(await allRows(plan, user, level, limit), `${plan ?? 'auto'}: rows of ${user}`).toEqual(expectedRows);
            }
          }
        },
      ),
      { numRuns: 6 },
    );
  }, 300_000);

  it('list_rows: superusers see every row their owner trash does not hide; a bad plan setting is refused', async () => {
    const graph: RefGraph = { nodes: [u('root'), u('ann'), g('team'), g('old', null, PAST)], grants: [grant('ann', 1, 'team')] };
    await loadGraph(db, graph);
    await db.query(sql`update permgraph.nodes set is_superuser = true where id = 'root'`);
    await refresh(db);
    await db.query(sql`drop table if exists public.app_rows`);
    await db.query(sql`create table public.app_rows (id text primary key, owner_id text)`);
    await db.query(sql`insert into public.app_rows values ('a', 'team'), ('b', 'old'), ('c', null), ('d', 'nobody')`);
    for (const plan of PLANS) {
      expect(await allRows(plan, 'root', 3, 2)).toEqual(['a', 'c', 'd']);
      expect(await allRows(plan, 'ann', 1, 2)).toEqual(['a']);
      expect(await allRows(plan, 'ann', 2, 2)).toEqual([]);
    }
    await expect(withPlan('sideways' as Plan, (tx) => listTargets(tx, 'ann'))).rejects.toThrow(/listing_plan must be rows or scan/);
  });
});
