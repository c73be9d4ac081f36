// runDoctor's server-settings check: what it reports comes from the settings
// the session really has (per-database settings included). And its queue
// check: a pending change below the queue's low-water mark (never applied,
// until a refresh) fails; a table that is mostly dead space is reported.
import { describe, expect, it } from 'vitest';
import { runDoctor } from '../../src/app/doctor.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import { QUEUE_DEAD_SPACE_PAGES } from '../../src/constants.ts';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { verify } from '../../src/engine/verify.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { runCli } from '../helpers/cli.ts';
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
      expect(check.message).toMatch(/^statement_timeout = 30000 ms also cancels refresh, import and worker --once \(the worker's own session runs without it\): set it per application role/);
    } finally {
      await db.query(sql`alter database ${sql.ident(name)} reset statement_timeout`);
    }
    expect((await settingsOf()).status).toBe('ok');
  });

  it('says when the change queue\'s table is mostly dead space (batches skip it); a vacuumed queue says nothing of it', async () => {
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
      expect(Number(pages)).toBeGreaterThan(QUEUE_DEAD_SPACE_PAGES);
      const bloated = await queue();
      expect(bloated.status).toBe('ok');
      expect(bloated.message).toMatch(/^the change queue's table holds [\d,]+ pages \([\d.]+ MB\) for 0 pending change\(s\), mostly dead rows that batches skip .* until autovacuum reclaims them$/);
      // a backlog that large is not dead space: its rows are pending
      await db.query(sql`
        insert into permgraph.changes (tail_id, head_id, tail_kind, head_kind, new_level)
        select 'late' || i, 'x', 'user', 'object', 1 from generate_series(1, 20 * ${Number(pages)}) i`);
      expect((await queue()).message).not.toMatch(/dead/);
      // nor when a long job holds it as its backlog (hidden from batches, so not pending): the message says so
      await db.query(sql`insert into permgraph.long_job (chunk_pairs, backlog_snapshot) values (1, pg_current_snapshot())`);
      const held = await queue();
      expect(held.message).toMatch(new RegExp(`for 0 pending change\\(s\\) and ${(20 * Number(pages)).toLocaleString('en-US')} row\\(s\\) of a long job's backlog$`));
      await db.query(sql`delete from permgraph.long_job`);
      await db.query(sql`delete from permgraph.changes where tail_id like 'late%'`);
      await db.query(sql`vacuum permgraph.changes`);
      expect(await queue()).toMatchObject({ status: 'ok' });
      expect((await queue()).message).not.toMatch(/dead/);
    } finally {
      await db.query(sql`alter table permgraph.changes reset (autovacuum_enabled)`);
    }
  });

  it('fails when a pending change lies below the queue\'s low-water mark, which no batch reads; a refresh applies it', async () => {
    const queue = async () => (await runDoctor(db)).find((c) => c.name === 'queue')!;
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('lw_user', 'user'), ('lw_doc', 'object') on conflict do nothing`);
    await applyChanges(db);
    expect(await queue()).toMatchObject({ status: 'ok' });
    // a grant whose change row says it was written before the mark: what a
    // batch that set the mark too high would leave behind
    await db.tx(async (tx) => {
      await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('lw_user', 'lw_doc', 1)`);
      await tx.query(sql`update permgraph.changes set xact_id = '3' where tail_id = 'lw_user'`);
    });
    await applyChanges(db);
    expect((await verify(db)).differences).not.toEqual([]);
    const stuck = await queue();
    expect(stuck.status).toBe('fail');
    expect(stuck.message).toMatch(/^1 pending change\(s\) lie below the change queue's low-water mark, .*`permgraph refresh` applies them/);
    await refresh(db);
    expect(await queue()).toMatchObject({ status: 'ok' });
    expect((await verify(db)).differences).toEqual([]);
  });

  it('counts a long job in the backlog: its changes left the queue, but their tokens wait for it', async () => {
    // Found with a worker restarted on a backlog with big team grants in it:
    // while its job ran, doctor said "no pending changes" whatever the wait.
    const backlog = async () => (await runDoctor(db, { maxLagSeconds: 1 })).find((c) => c.name === 'backlog')!;
    const members = Array.from({ length: 10 }, (_, i) => `lj_m${i}`);
    const groups = Array.from({ length: 10 }, (_, i) => `lj_p${i}`);
    await db.tx(async (tx) => {
      await tx.query(sql`insert into permgraph.nodes (id, kind) select unnest(${members}::text[]), 'user'`);
      await tx.query(sql`insert into permgraph.nodes (id, kind) values ('lj_team', 'group'), ('lj_parent', 'group')`);
      await tx.query(sql`insert into permgraph.nodes (id, kind, owner_id) select unnest(${groups}::text[]), 'group', 'lj_parent'`);
      await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) select unnest(${members}::text[]), 'lj_team', 2`);
    });
    await applyChanges(db);
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('lj_team', 'lj_parent', 1)`); // 110 pairs
    expect(await applyChanges(db, { chunkPairs: 30 })).toMatchObject({ longJobActive: true, toLongJob: 1 });
    await new Promise((r) => setTimeout(r, 1200));
    const during = await backlog();
    expect(during.status).toBe('warn');
    expect(during.message).toMatch(/^no pending changes; a long job holds changes whose tokens wait for it, the oldest 1\.\d s old \(10 of 10 users left\) \(over 1 s/);
    await refresh(db); // (ends the job)
    expect(await backlog()).toMatchObject({ status: 'ok', message: 'no pending changes' });
  });

  it("names a session that may not apply changes but holds the applier's locks, which stalls every worker", async () => {
    const worker = (await runDoctor(db)).find((c) => c.name === 'worker')!;
    expect(worker.message).not.toMatch(/may not apply changes/);
    const [{ key }] = await db.query(sql`select permgraph._applier_role_key() as key`);
    // any login can take an advisory lock: this one has no permgraph role at all
    const intruder = await createLogin(db, url, 'lock_squatter');
    const reader = await createLogin(db, url, 'slow_registrar', 'permgraph_reader');
    await intruder.db.task(async (squatter) => {
      await squatter.query(sql`select pg_advisory_lock(${key}::bigint)`);
      await reader.db.tx(async (registering) => {
        await registering.query(sql`select permgraph.register_consumer('held-open')`);
        const check = (await runDoctor(db)).find((c) => c.name === 'worker')!;
        expect(check.status).toBe('warn');
        expect(check.message).toMatch(new RegExp(`^session\\(s\\) hold the applier's locks, so batches wait: `));
        expect(check.message).toContain(`(role ${intruder.name}, application "permgraph-test-lock_squatter", the applier role's lock, idle since `);
        expect(check.message).toMatch(/the applier role's lock, idle since [^)]*, may not apply changes\)/);
        expect(check.message).toContain(`(role ${reader.name}, application "permgraph-test-slow_registrar", a batch's lock, idle in transaction since `);
        const status = (await runCli(['--database-url', url, 'status'])).stdout;
        expect(status).toContain(`\nblocking:         backend pid `);
        expect(status).toContain(`(role ${intruder.name}, "permgraph-test-lock_squatter") holds the applier role's lock and may not apply changes: batches wait for it\n`);
        await registering.query(sql`select permgraph.drop_consumer('held-open')`);
      });
      await squatter.query(sql`select pg_advisory_unlock(${key}::bigint)`);
    });
    expect((await runDoctor(db)).find((c) => c.name === 'worker')!.message).not.toMatch(/may not apply changes/);
  });

  it('names a session that may apply changes but sits idle in a transaction holding a batch\'s lock; not one that is only between statements', async () => {
    const worker = async () => (await runDoctor(db)).find((c) => c.name === 'worker')!;
    await db.tx(async (operator) => {
      await operator.query(sql`set local application_name = 'forgotten_psql'`);
      // when its transaction started, in UTC to the microsecond, as status and doctor must show it whatever their zone
      const [{ since }] = await operator.query(sql`
        select to_char(xact_start at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as since from pg_stat_activity where pid = pg_backend_pid()`);
      await operator.query(sql`select permgraph.apply_changes()`);
      // just after its statement: a gap the worker's own batches have too
      expect((await worker()).message).not.toMatch(/forgotten_psql/);
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const check = await worker();
      expect(check.status).toBe('warn');
      expect(check.message).toMatch(/^session\(s\) hold the applier's locks, so batches wait: pid \d+ \(role [^,]+, application "forgotten_psql", a batch's lock, idle in transaction since [^)]+\)\. /);
      expect(check.message).not.toMatch(/may not apply changes/);
      expect(check.message).toContain('one left open after apply_changes()');
      const status = (await runCli(['--database-url', url, 'status'])).stdout;
      expect(status).toMatch(/\nblocking: {9}backend pid \d+ \(role [^,]+, "forgotten_psql"\) holds a batch's lock, idle in transaction: batches wait for it\n/);
      // read by sessions in St. John's (-03:30): the same instant, in UTC
      await db.query(sql`alter database ${sql.ident(name)} set timezone = 'America/St_Johns'`);
      const zoned = openPool(url, { poolSize: 1 });
      try {
        expect((await zoned.query(sql`select current_setting('timezone') as zone`))[0].zone).toBe('America/St_Johns');
        expect((await runDoctor(zoned)).find((c) => c.name === 'worker')!.message).toContain(`application "forgotten_psql", a batch's lock, idle in transaction since ${since})`);
        const json = JSON.parse((await runCli(['--database-url', url, '--json', 'status'])).stdout);
        expect(json.blockingSessions).toEqual([expect.objectContaining({ applicationName: 'forgotten_psql', since })]);
      } finally {
        await zoned.dispose();
        await db.query(sql`alter database ${sql.ident(name)} reset timezone`);
      }
    });
    expect((await worker()).message).not.toMatch(/forgotten_psql/);
  });

  it("counts the applier's turn, the table lock a batch takes before its snapshot, as a batch's lock: its holder is named once", async () => {
    const worker = async () => (await runDoctor(db)).find((c) => c.name === 'worker')!;
    await db.tx(async (operator) => {
      await operator.query(sql`set local application_name = 'turn_taker'`);
      // what the library's batch does first (src/engine/applier-turn.ts), left open
      await operator.query(sql`lock table permgraph.applier_turn in exclusive mode`);
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const check = await worker();
      expect(check.status).toBe('warn');
      expect(check.message.match(/application "turn_taker", a batch's lock, idle in transaction since /g)).toHaveLength(1);
    });
    // and a batch, which holds the turn and the applier lock, once too
    await db.tx(async (operator) => {
      await operator.query(sql`set local application_name = 'turn_taker'`);
      await operator.query(sql`select permgraph.apply_changes()`);
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      expect((await worker()).message.match(/application "turn_taker"/g)).toHaveLength(1);
    });
    expect((await worker()).message).not.toMatch(/turn_taker/);
  });

  it('names a session holding a batch\'s lock that another has waited for over a second, busy or not (pg_locks shows waits to any login)', async () => {
    const worker = async () => (await runDoctor(db)).find((c) => c.name === 'worker')!;
    const [holder, waiter] = [openPool(url, { poolSize: 1, applicationName: 'long_refresh' }), openPool(url, { poolSize: 1 })];
    let waiting: Promise<unknown> | undefined;
    try {
      await holder.tx(async (tx) => {
        await tx.query(sql`select pg_advisory_xact_lock(permgraph._applier_lock_key())`);
        const busy = tx.query(sql`select pg_sleep(2.5)`); // active, not idle: only the waiting tells
        await new Promise((resolve) => setTimeout(resolve, 100));
        expect((await worker()).message).not.toMatch(/long_refresh/); // nobody waits yet
        waiting = waiter.query(sql`select permgraph.apply_changes()`);
        await new Promise((resolve) => setTimeout(resolve, 1_500));
        const check = await worker();
        expect(check.status).toBe('warn');
        expect(check.message).toMatch(/pid \d+ \(role [^,]+, application "long_refresh", a batch's lock, active since [^)]+\)/);
        await busy;
      });
      await waiting; // (it ran once the holder committed)
    } finally {
      await Promise.all([holder.dispose(), waiter.dispose()]);
    }
    expect((await worker()).message).not.toMatch(/long_refresh/);
  });

  it('runs every check for a login granted only permgraph_worker or permgraph_reader; what it may not read is a warning, not an error', async () => {
    for (const role of ['permgraph_worker', 'permgraph_reader']) {
      const login = await createLogin(db, url, role.replace('permgraph_', 'doctor_'), role);
      const checks = await runDoctor(login.db);
      expect(checks.map((c) => c.name), role).toEqual(['schema', 'indexes', 'rights', 'owner', 'settings', 'worker', 'backlog', 'table', 'queue', 'stream', 'imports', 'rls']);
      expect(checks.find((c) => c.name === 'queue'), role).toMatchObject({ status: 'ok' });
      expect(checks.find((c) => c.name === 'rls'), role).toMatchObject({ status: 'ok' });
      expect(checks.find((c) => c.name === 'imports'), role).toMatchObject({
        status: 'warn',
        message: "not checked: this login may not read permgraph.import_runs (run doctor as the schema's owner to see interrupted imports)",
      });
    }
  });

  it('warns of a partition attached after enable_rls, which reads its rows past the policies, until enable_rls runs again', async () => {
    const rls = () => runDoctor(db).then((checks) => checks.find((c) => c.name === 'rls')!);
    await db.query(sql`create table public.doctor_docs (id text, owner_id text) partition by hash (id)`);
    await db.query(sql`create table public.doctor_docs_0 partition of public.doctor_docs for values with (modulus 2, remainder 0)`);
    try {
      await db.query(sql`select permgraph.enable_rls('public.doctor_docs', 'id', 'owner_id')`);
      expect(await rls()).toMatchObject({ status: 'ok' });
      await db.query(sql`create table public.doctor_docs_1 partition of public.doctor_docs for values with (modulus 2, remainder 1)`);
      expect(await rls()).toEqual({
        name: 'rls',
        status: 'warn',
        message:
          '1 partition(s) or child table(s) lack the row-level security policies of the table above them, so a query naming one reads all its rows: ' +
          'public.doctor_docs_1 (under public.doctor_docs). Run permgraph.enable_rls on public.doctor_docs again, with the same arguments: it puts the policies on every table below',
      });
      await db.query(sql`select permgraph.enable_rls('public.doctor_docs', 'id', 'owner_id')`);
      expect(await rls()).toMatchObject({ status: 'ok' });
    } finally {
      await db.query(sql`drop table public.doctor_docs`);
    }
  });

  it("fails the owner check when the schema's owner may not read the cluster's identity, which every batch after a server start needs", async () => {
    const owner = () => runDoctor(db).then((checks) => checks.find((c) => c.name === 'owner')!);
    const deployer = await createLogin(db, url, 'deployer');
    await db.query(sql`alter schema permgraph owner to ${sql.ident(deployer.name)}`);
    try {
      expect((await owner()).message).not.toMatch(/pg_control_system/);
      // what a hardened server does (pg_catalog's rights are the database's own)
      await db.query(sql`revoke execute on function pg_catalog.pg_control_system() from public`);
      try {
        const check = await owner();
        expect(check.status).toBe('fail');
        expect(check.message).toContain(`grant execute on function pg_catalog.pg_control_system() to ${deployer.name}`);
      } finally {
        await db.query(sql`grant execute on function pg_catalog.pg_control_system() to public`);
      }
    } finally {
      await db.query(sql`alter schema permgraph owner to current_user`);
    }
  });
});
