// Upgrading a database migrated by an earlier release: the migrations as they
// stood at commit d676c7c (their function definitions included) are applied
// the way that release applied them, the database gets data and pending
// changes, and the current `migrate` must then give exactly a fresh install's
// schema with a table that verify() finds correct.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { loadMigrations, migrate } from '../../src/migrations/migrate.ts';
import { dumpSchema } from '../../src/migrations/schema-dump.ts';
import { computePermissions } from '../../src/reference/model.ts';
import { createEmptyDatabase, createTestDatabase } from '../helpers/database.ts';
import { graphArbitrary, insertGrants, loadGraph, readPermissions } from '../helpers/graph.ts';

/** SHA-256 of sql/NNN_*.sql at commit d676c7c, the last release before sql/functions/. */
const RELEASED_AT_D676C7C: Record<string, string> = {
  '001_schema.sql': 'f0e7425a38240665e9f8888e942d7d120ae0e102d9cb6f666ba009b89a36968e',
  '002_integrity.sql': 'b2c06dc04757b6899ad96784f3c70ef62337947060e09ae41c143f84897175ff',
  '003_capture.sql': '682ea4fe2074d4b79c37e708c981b04ff988a1f8db70535b7eae72d341db2699',
  '004_compute.sql': '7ba50678954227cac18a2f2538e12287de36a02ff895ea944420effa0094cd20',
  '005_apply.sql': 'f2d41377e89fa226503bfb34c3a842fadd901a60e16f40d181328c54f541bbb4',
  '006_verify.sql': '0e6a8ee9675cc3340e63346f671b16c91e168d8f212082b3b216fa044213bdee',
  '007_freshness.sql': 'a262bd58e82014a8ad46157b1e844c450bda1858170aba36c99fc2d20bda6c5c',
  '008_roles_rls.sql': 'dc97e2aa7ad7de422992f7fcef58c7a6b522b94fe34a1056772f1a2d088786d2',
  '009_listing_explain.sql': '02f6a09e6486ede4c19a6eb1ac1f069c274b4debee1f2251c09d388b0c187bd0',
  '010_import_audit.sql': '42bad1f73c3d45767300a5e8db45c2400c935001e6a696f366a898d58e3a1c49',
  '011_edge_indexes.sql': 'bb41068f82f4f3286397aa14b807e6169c1eaa384b8ae04d69777cb62e82bbcc',
  '012_batch_plans.sql': 'e05f2ea10b0c3b59698938edbedaf0cf3c9ebcc1923caeae942fef34262c2a5e',
};

/** What the release's runner did: each file in order, recorded in permgraph.migrations, in one transaction. */
async function migrateAsReleased(db: Queryable): Promise<void> {
  const released = (await loadMigrations()).filter((m) => m.name in RELEASED_AT_D676C7C);
  await db.tx(async (tx) => {
    await tx.query(sql`
      create schema if not exists permgraph;
      create table if not exists permgraph.migrations (
        version integer primary key, name text not null, checksum text not null,
        applied_at timestamptz not null default now());`);
    for (const migration of released) {
      await tx.query(sql.__dangerous__rawValue(migration.text));
      await tx.query(sql`insert into permgraph.migrations (version, name, checksum)
                         values (${migration.version}, ${migration.name}, ${migration.checksum})`);
    }
  });
}

describe('upgrading a database migrated at d676c7c', async () => {
  const fresh = await createTestDatabase();
  const freshSchema = await dumpSchema(fresh.db);

  it('the released migrations keep their exact bytes', async () => {
    const files = Object.fromEntries((await loadMigrations()).map((m) => [m.name, m.checksum]));
    for (const [name, checksum] of Object.entries(RELEASED_AT_D676C7C)) expect(files[name], name).toBe(checksum);
  });

  it('gives a fresh install\'s schema, keeps the data and pending changes, and verifies clean', async () => {
    const graphs = fc.sample(graphArbitrary({ users: 8, groups: 10, objects: 6, grants: 40 }, 0.5), { numRuns: 1, seed: 913 });
    const graph = graphs[0]!;
    const old = await createEmptyDatabase();
    await migrateAsReleased(old.db);
    // Half the grants applied by the old engine, the other half pending at upgrade time.
    const half = Math.floor(graph.grants.length / 2);
    await loadGraph(old.db, { nodes: graph.nodes, grants: graph.grants.slice(0, half) });
    await old.db.query(sql`select permgraph.apply_changes()`);
    await insertGrants(old.db, graph.grants.slice(half));

    const result = await migrate(old.db);
    expect(result.applied.every((name) => !(name in RELEASED_AT_D676C7C))).toBe(true);
    expect(await dumpSchema(old.db)).toEqual(freshSchema);

    await old.db.query(sql`select permgraph.apply_changes()`);
    expect(await old.db.query(sql`select * from permgraph.verify()`)).toEqual([]);
    expect(await readPermissions(old.db)).toEqual(computePermissions(graph));
  });
});
