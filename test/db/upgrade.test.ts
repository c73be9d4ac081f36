// Upgrading a database migrated by an earlier release: the migrations as they
// stood at commit d676c7c (their function definitions included) are applied
// the way that release applied them, the database gets data and pending
// changes, and the current `migrate` must then give exactly a fresh install's
// schema with a table that verify() finds correct.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { sql } from '../../src/db/pool.ts';
import { loadMigrations, migrate } from '../../src/migrations/migrate.ts';
import { migrateAsReleased, RELEASED_AT_D676C7C } from '../helpers/released.ts';
import { dumpSchema } from '../../src/migrations/schema-dump.ts';
import { computePermissions } from '../reference/model.ts';
import { createEmptyDatabase, createTestDatabase } from '../helpers/database.ts';
import { graphArbitrary, insertGrants, loadGraph, readPermissions } from '../helpers/graph.ts';

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
