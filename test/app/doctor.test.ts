// runDoctor's server-settings check: what it reports comes from the settings
// the session really has (per-database settings included).
import { describe, expect, it } from 'vitest';
import { runDoctor } from '../../src/app/doctor.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import { createTestDatabase } from '../helpers/database.ts';

describe('doctor: server settings', async () => {
  const { db, url, name } = await createTestDatabase();

  async function settingsOf(): Promise<{ status: string; message: string }> {
    // A new connection: per-database settings apply at connect.
    const fresh = openPool(url, { poolSize: 1 });
    try {
      const checks = await runDoctor(fresh);
      const check = checks.find((c) => c.name === 'settings')!;
      return { status: check.status, message: check.message };
    } finally {
      await fresh.dispose();
    }
  }

  it('ok with the test server\'s settings; jit needs nothing', async () => {
    const check = await settingsOf();
    expect(check.status).toBe('ok');
    expect(check.message).toMatch(/^server settings suit permgraph \(jit = (on|off)/);
  });

  it('warns about settings that cut the worker off, and says what to do', async () => {
    await db.query(sql`alter database ${sql.ident(name)} set statement_timeout = '30s'`);
    try {
      const check = await settingsOf();
      expect(check.status).toBe('warn');
      expect(check.message).toMatch(/^statement_timeout = 30000 ms also cancels the worker's batches and refresh: set it per application role/);
    } finally {
      await db.query(sql`alter database ${sql.ident(name)} reset statement_timeout`);
    }
    expect((await settingsOf()).status).toBe('ok');
  });
});
