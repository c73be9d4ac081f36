// The worker benchmark's backlog (bench/measure/worker/workload.ts,
// commitBacklog): the changes it commits and the pairs it leaves added,
// checked against the change queue and the grants table, and the queue
// applied and verified against a full recomputation.
import { describe, expect, it } from 'vitest';
import { sql } from '../../src/db/pool.ts';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { verify } from '../../src/engine/verify.ts';
import { backlogPlan, commitBacklog } from '../../bench/measure/worker/workload.ts';
import { createTestDatabase } from '../helpers/database.ts';

describe('the worker benchmark backlog', async () => {
  const { db } = await createTestDatabase();
  await db.query(sql`
    insert into permgraph.nodes (id, kind)
    select 'u' || i, 'user' from generate_series(1, 40) i
    union all select 't' || i, 'group' from generate_series(1, 20) i
    union all select 'o' || i, 'object' from generate_series(1, 60) i`);
  await refresh(db);

  const left = async () => {
    const rows: { kind: string; n: number }[] = await db.query(sql`
      select h.kind, count(distinct (g.tail_id, g.head_id))::int as n
      from permgraph.grants g join permgraph.nodes h on h.id = g.head_id
      where g.source = 'bench-backlog' group by h.kind`);
    return Object.fromEntries(rows.map((r) => [r.kind, r.n]));
  };
  const queued = async () => Number((await db.query(sql`select count(*)::bigint as n from permgraph.changes`))[0].n);

  it('splits a kind\'s changes into pairs added and removed, a share of those added left', () => {
    expect(backlogPlan(200, 0)).toEqual({ added: 100, removed: 100 });
    expect(backlogPlan(200, 1)).toEqual({ added: 200, removed: 0 });
    // a quarter: 114 added, 86 removed, 28 left (28 / 114 = 0.246)
    expect(backlogPlan(200, 0.25)).toEqual({ added: 114, removed: 86 });
    expect(() => backlogPlan(200, 1.5)).toThrow(/between 0 and 1/);
  });

  it('commits every change it counts, leaves a quarter of the pairs it added, and the queue applies cleanly', async () => {
    const committed = await commitBacklog(db, 1000, 0.25);
    // 1,000 changes: 200 memberships (114 added, 86 removed), 800 shares (457 added, 343 removed)
    expect(committed).toEqual({ memberships: 200, shares: 800, keptPairs: 28 + 114 });
    expect(await queued()).toBe(1000);
    expect(await left()).toEqual({ group: 28, object: 114 });
    await applyChanges(db);
    expect(await queued()).toBe(0);
    expect((await verify(db)).differences).toEqual([]);
  });

  it('with nothing kept, removes every pair it added: a queue with no net effect', async () => {
    await db.query(sql`delete from permgraph.grants where source = 'bench-backlog'`);
    await applyChanges(db);
    const before: { n: number }[] = await db.query(sql`select count(*)::int as n from permgraph.permissions`);
    expect(await commitBacklog(db, 1000, 0)).toEqual({ memberships: 200, shares: 800, keptPairs: 0 });
    expect(await queued()).toBe(1000);
    expect(await left()).toEqual({});
    await applyChanges(db);
    expect(await db.query(sql`select count(*)::int as n from permgraph.permissions`)).toEqual(before);
  });
});
