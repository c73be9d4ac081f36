// runDoctor's server-settings check: what it reports comes from the settings
// the session really has (per-database settings included). And its queue
// check: a change queue whose table is mostly dead space.
import { describe, expect, it } from 'vitest';
import { runDoctor } from '../../src/app/doctor.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import { QUEUE_BLOAT_WARN_PAGES } from '../../src/constants.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { createLogin } from '../helpers/logins.ts';

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

  it('warns when the change queue\'s table is mostly dead space, and says what to do; a vacuumed queue is ok', async () => {
    const queue = async () => (await runDoctor(db)).find((c) => c.name === 'queue')!;
    expect(await queue()).toMatchObject({ status: 'ok' });
    // 60,000 change rows applied and gone, not yet vacuumed (autovacuum kept off this table meanwhile)
    await db.query(sql`alter table permgraph.changes set (autovacuum_enabled = false)`);
    try {
      await db.tx(async (tx) => {
        await tx.query(sql`
          insert into permgraph.changes (tail_id, head_id, tail_kind, head_kind, new_level)
          select 'gone' || i, 'x', 'user', 'object', 1 from generate_series(1, 60000) i`);
        await tx.query(sql`delete from permgraph.changes where tail_id like 'gone%'`);
      });
      const [{ pages }] = await db.query(sql`select pg_relation_size('permgraph.changes') / 8192 as pages`);
      expect(Number(pages)).toBeGreaterThan(QUEUE_BLOAT_WARN_PAGES);
      const bloated = await queue();
      expect(bloated.status).toBe('warn');
      expect(bloated.message).toMatch(/^the change queue's table holds [\d,]+ pages \([\d.]+ MB\) for 0 pending change\(s\): every batch reads it whole, .* autovacuum_naptime \(\w+\); .* lower it/);
      // a backlog that large is no warning: its rows are pending, not dead
      await db.query(sql`
        insert into permgraph.changes (tail_id, head_id, tail_kind, head_kind, new_level)
        select 'late' || i, 'x', 'user', 'object', 1 from generate_series(1, 20 * ${Number(pages)}) i`);
      expect(await queue()).toMatchObject({ status: 'ok' });
      await db.query(sql`delete from permgraph.changes where tail_id like 'late%'`);
      await db.query(sql`vacuum permgraph.changes`);
      expect(await queue()).toMatchObject({ status: 'ok' });
    } finally {
      await db.query(sql`alter table permgraph.changes reset (autovacuum_enabled)`);
    }
  });

  it('runs every check for a login granted only permgraph_worker or permgraph_reader; what it may not read is a warning, not an error', async () => {
    for (const role of ['permgraph_worker', 'permgraph_reader']) {
      const login = await createLogin(db, url, role.replace('permgraph_', 'doctor_'), role);
      const checks = await runDoctor(login.db);
      expect(checks.map((c) => c.name), role).toEqual(['schema', 'indexes', 'settings', 'worker', 'backlog', 'queue', 'imports']);
      expect(checks.find((c) => c.name === 'queue'), role).toMatchObject({ status: 'ok' });
      expect(checks.find((c) => c.name === 'imports'), role).toMatchObject({
        status: 'warn',
        message: "not checked: this login may not read permgraph.import_runs (run doctor as the schema's owner to see interrupted imports)",
      });
    }
  });
});
