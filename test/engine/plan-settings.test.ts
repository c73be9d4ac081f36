// Functions that steer their plans by turning a planner method off must turn
// JIT off too. Before PostgreSQL 18 a disabled method still costs 1e10 where
// it is the only way to run a node (a LATERAL probe with nested loops off),
// far past jit_above_cost: on a server with JIT (the default where LLVM is
// installed) every call compiled its statements. The grants capture did so
// for a while: ~200 ms a one-row write on PostgreSQL 15, and the property
// tests timed out there. The embedded server of the tests (18) cannot show
// it, so the rule is checked in the catalog.
import { describe, expect, it } from 'vitest';
import { sql } from '../../src/db/pool.ts';
import { createTestDatabase } from '../helpers/database.ts';

describe('plan settings of the engine functions', () => {
  it('every function that turns a planner method off also turns JIT off', async () => {
    const { db } = await createTestDatabase();
    const rows: { function: string; settings: string[] }[] = await db.query(sql`
      select p.oid::regprocedure::text as function, p.proconfig as settings
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'permgraph'
        and exists (select 1 from unnest(p.proconfig) c where c ~ '^enable_[a-z_]+=off$')
      order by 1`);
    expect(rows.length).toBeGreaterThan(5); // the rule has something to check
    expect(rows.filter((r) => !r.settings.includes('jit=off')).map((r) => r.function)).toEqual([]);
  });
});
