import { describe, expect, it } from 'vitest';
import { sql } from '../../src/db/pool.ts';
import { loadMigrations, migrate, schemaState } from '../../src/migrations/migrate.ts';
import { createTestDatabase } from '../helpers/database.ts';

describe('migrations', async () => {
  const { db } = await createTestDatabase();

  it('re-running is a no-op', async () => {
    expect(await migrate(db)).toEqual({ applied: [] });
    expect((await schemaState(db)).state).toBe('ok');
  });

  it('concurrent runs are safe', async () => {
    const results = await Promise.all([migrate(db), migrate(db), migrate(db)]);
    expect(results.every((r) => r.applied.length === 0)).toBe(true);
  });

  it('an applied file whose content changed is an error', async () => {
    const [first] = await loadMigrations();
    await db.query(sql`update permgraph.migrations set checksum = 'deadbeef' where version = ${first!.version}`);
    await expect(migrate(db)).rejects.toThrow(/was changed after it was applied/);
    await db.query(sql`update permgraph.migrations set checksum = ${first!.checksum} where version = ${first!.version}`);
  });

  it('a database ahead of the package is reported, not downgraded', async () => {
    await db.query(sql`insert into permgraph.migrations (version, name, checksum) values (999, '999_future.sql', 'x')`);
    expect((await schemaState(db)).state).toBe('ahead');
    await expect(migrate(db)).rejects.toThrow(/newer than the package/);
    await db.query(sql`delete from permgraph.migrations where version = 999`);
  });
});
