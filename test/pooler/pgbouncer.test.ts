// permgraph through PgBouncer, as an operator runs it: applications reach
// the database through a transaction pooler (or a session pooler), with
// real non-superuser logins, and the worker connects directly
// (docs/operations.md, "Connection poolers"). Skipped, saying why, where
// the pgbouncer binary is missing.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Permgraph } from '../../src/client.ts';
import { IMPORT_LOCK_CLASS, LISTENER_APPLICATION_NAME, POOLER_CHECK_TIMEOUT_MS } from '../../src/constants.ts';
import { SharedSessionError } from '../../src/errors.ts';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { Worker, type WorkerOptions } from '../../src/worker/worker.ts';
import { collect, runCli, spawnCli, waitUntil } from '../helpers/cli.ts';
import { createEmptyDatabase, createTestDatabase } from '../helpers/database.ts';
import { createLogin } from '../helpers/logins.ts';
import { PGBOUNCER_MISSING, startPgBouncer, type PoolMode } from '../helpers/pgbouncer.ts';
import { startTcpProxy } from '../helpers/tcp-proxy.ts';

/** The sessions holding the applier role's advisory lock (the active worker's, or one left behind). */
async function applierRoleHolders(db: Queryable): Promise<number[]> {
  const rows = await db.query(sql`
    select l.pid from pg_locks l
    where l.locktype = 'advisory' and l.granted and l.objsubid = 1
      and l.database = (select oid from pg_database where datname = current_database())
      and ((l.classid::bigint << 32) | l.objid::bigint) = permgraph._applier_role_key()`);
  return rows.map((r: { pid: number }) => r.pid);
}

/** One statement on a plain node-pg client of its own: an application's own connection through the pooler. */
async function onOwnConnection<T extends Record<string, unknown>>(url: string, text: string): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(text)).rows[0]!;
  } finally {
    await client.end();
  }
}

/**
 * What a server session keeps for its next client, as a client of the
 * pooler's one server session for a login sees it: settings made with SET
 * (not those PgBouncer itself sets for each client: application_name,
 * client_encoding…), advisory locks, temporary tables, prepared statements
 * and LISTEN channels.
 */
async function sessionState(url: string): Promise<Record<string, unknown>> {
  return onOwnConnection(url, `
    select
      (select coalesce(json_agg(name || ' = ' || setting order by name), '[]') from pg_catalog.pg_settings
        where source = 'session'
          and name not in ('application_name', 'client_encoding', 'DateStyle', 'IntervalStyle', 'TimeZone', 'standard_conforming_strings')) as settings,
      (select coalesce(json_agg(l.classid || '/' || l.objid || '/' || l.objsubid), '[]') from pg_catalog.pg_locks l
        where l.pid = pg_catalog.pg_backend_pid() and l.locktype = 'advisory') as advisory_locks,
      (select coalesce(json_agg(c.relname order by c.relname), '[]') from pg_catalog.pg_class c
        where c.relnamespace = pg_catalog.pg_my_temp_schema()) as temporary_relations,
      (select coalesce(json_agg(p.name), '[]') from pg_catalog.pg_prepared_statements p) as prepared,
      (select coalesce(json_agg(c), '[]') from pg_catalog.pg_listening_channels() c) as listening`);
}

/**
 * Other clients of a pool (`url`), each holding one of its server sessions
 * from its first statement on (session pooling), or waiting for one: a
 * pool its own clients use up.
 */
function sessionHolders(url: string): { occupy(): Promise<{ answered: Promise<unknown> }>; free(): Promise<unknown> } {
  const clients: pg.Client[] = [];
  return {
    async occupy() {
      const client = new pg.Client({ connectionString: url });
      client.on('error', () => {});
      clients.push(client);
      await client.connect();
      const answered = client.query('select 1');
      answered.catch(() => {});
      return { answered };
    },
    free: () => Promise.all(clients.splice(0).map((client) => client.end().catch(() => {}))),
  };
}

/** What the worker's connections, and its listener's, log once when a pooler keeps them waiting for a server session. */
const WAITING_FOR_SESSION = /^waiting for a server session: new connections are let in, but their statements wait, as behind a connection pooler/;

if (PGBOUNCER_MISSING) {
  it.skip(`through PgBouncer: skipped, ${PGBOUNCER_MISSING}`, () => {});
} else {
  describe('through PgBouncer', async () => {
    const { db: owner, url } = await createTestDatabase();
    const writer = await createLogin(owner, url, 'writer', 'permgraph_writer');
    const reader = await createLogin(owner, url, 'reader', 'permgraph_reader');
    const workerLogin = await createLogin(owner, url, 'worker', 'permgraph_worker');
    const appLogin = await createLogin(owner, url, 'app', 'permgraph_writer');
    // (the schema's owner too, as imports run)
    const bouncer = await startPgBouncer(url, [writer.url, reader.url, workerLogin.url, appLogin.url, url]);
    afterAll(() => bouncer.stop());
    const scratch = await mkdtemp(path.join(tmpdir(), 'permgraph-pooler-'));
    afterAll(() => rm(scratch, { recursive: true, force: true }));

    const opened: { close(): Promise<void> }[] = [];
    const workers: Worker[] = [];
    afterEach(async () => {
      await Promise.all(workers.splice(0).map((w) => w.stop()));
      await Promise.all(opened.splice(0).map((c) => c.close()));
    });
    async function connect(loginUrl: string, mode: PoolMode | 'direct'): Promise<Permgraph> {
      const pg = await Permgraph.connect({ databaseUrl: mode === 'direct' ? loginUrl : bouncer.url(loginUrl, mode), poolSize: 4 });
      opened.push(pg);
      return pg;
    }
    /** The worker as docs/operations.md has it run: its own login, connected directly. */
    async function directWorker(): Promise<Worker> {
      const worker = new Worker({ url: workerLogin.url, pollIntervalMs: 200, standbyIntervalMs: 100 });
      workers.push(worker);
      await worker.start();
      await waitUntil(async () => worker.role === 'active', 'the direct worker to take the applier role');
      return worker;
    }

    describe.each(['transaction', 'session'] as const)('the application API in %s pooling', (mode) => {
      it('writes, waits for its writes, checks, lists, explains, audits and follows the change stream, with writer and reader logins', async () => {
        await directWorker();
        const app = await connect(writer.url, mode);
        const ask = await connect(reader.url, mode);
        const p = `${mode}-`; // ids of this mode's graph
        const [alice, bob, eng, roadmap, spec] = ['alice', 'bob', 'eng', 'roadmap', 'spec'].map((id) => p + id);
        await app.addNode(alice!, 'user');
        await app.addNode(bob!, 'user');
        await app.addNode(eng!, 'group');
        await app.addNode(roadmap!, 'group', { ownerId: eng });
        await app.addNode(spec!, 'object', { ownerId: roadmap });
        const consumer = `${p}search-index`;
        expect((await ask.registerConsumer(consumer)).created).toBe(true);

        // read-your-writes through the pooler: waitFor, and a check that waits for a token itself
        await app.waitFor(await app.grant(alice!, eng!, 'write', { source: 'admin-ui' }));
        expect(await ask.check(alice!, spec!, 'write')).toBe(true);
        expect(await ask.check(alice!, spec!, 'manage')).toBe(false);
        expect(await ask.check(bob!, spec!, 'read', { atLeastAsFreshAs: await app.grant(bob!, roadmap!, 'read') })).toBe(true);
        expect(await ask.checkMany(bob!, [spec!, eng!, roadmap!, `${p}nobody`], 'read')).toEqual([true, false, true, false]);
        expect(await ask.can(alice!, { id: 'row-1', ownerId: roadmap! }, 'write')).toBe(true);
        // (objects are reached through their owner: alice's listing is her own row, eng, roadmap and spec)
        expect((await ask.listTargets(alice!, { level: 'write' })).items.map((i) => [i.id, i.level])).toEqual([
          [alice, 3], [eng, 2], [roadmap, 2], [spec, 2],
        ]);
        expect((await ask.listUsers(spec!)).items.map((i) => [i.id, i.level])).toEqual([[alice, 2], [bob, 1]]);
        const why = await ask.explain(bob!, spec!, 'read');
        expect(why.allowed).toBe(true);
        expect(why.path.map((edge) => [edge.tail, edge.head])).toEqual([[bob, roadmap], [roadmap, spec]]);

        // a sync of one source, a write as a declared actor, a revocation
        const synced = await app.syncGrants(`${p}ldap`, [{ tail: bob!, head: eng!, level: 'read' }]);
        expect(synced).toMatchObject({ inserted: 1, updated: 0, deleted: 0 });
        await app.waitFor(synced.token);
        expect(await ask.check(bob!, eng!, 'read')).toBe(true);
        await app.asActor(`${p}carol@example.com`, () => app.grant(bob!, roadmap!, 'manage', { source: 'review' }));
        const { entries } = await ask.audit({ actor: `${p}carol@example.com` });
        expect(entries.map((e) => [e.action, e.dbRole])).toEqual([['grant', writer.name]]);
        await app.waitFor(await app.revoke(bob!, roadmap!, { source: 'review' }));
        expect(await ask.check(bob!, spec!, 'manage')).toBe(false);

        // the change stream: every event since the registration, then nothing left once acknowledged
        const seen: string[] = [];
        for await (const batch of ask.changes(consumer)) {
          seen.push(...batch.events.map((e) => `${e.op} ${e.userId} ${e.targetId}`));
          await batch.ack();
        }
        expect(seen).toContain(`insert ${alice} ${eng}`);
        expect(seen).toContain(`insert ${bob} ${roadmap}`);
        expect((await ask.consumerStatus()).find((c) => c.consumer === consumer)).toMatchObject({ lagEvents: 0 });
        // following: woken by NOTIFY in session pooling, by its polling in transaction pooling (notifications are lost there)
        const follower = new AbortController();
        const followed = (async () => {
          const events: string[] = [];
          for await (const batch of ask.changes(consumer, { follow: true, pollIntervalMs: 100, signal: follower.signal })) {
            events.push(...batch.events.map((e) => `${e.op} ${e.userId} ${e.targetId}`));
            await batch.ack();
            if (events.includes(`update ${bob} ${eng}`)) follower.abort();
          }
          return events;
        })();
        // (one batch raises bob on eng and on roadmap, which eng owns: one transaction, read together)
        await app.waitFor(await app.grant(bob!, eng!, 'write', { source: 'promotion' }));
        expect((await followed).sort()).toEqual([`update ${bob} ${eng}`, `update ${bob} ${roadmap}`]);
        expect(await ask.dropConsumer(consumer)).toBe(true);
      });

      it('the command line: grant, check, explain and `worker --once` as the worker login', async () => {
        const p = `cli-${mode}-`;
        await owner.query(sql`insert into permgraph.nodes (id, kind) values (${`${p}dana`}, 'user'), (${`${p}ops`}, 'group')`);
        const granted = await runCli(['grant', `${p}dana`, `${p}ops`, 'write', '--database-url', bouncer.url(writer.url, mode)]);
        expect(granted.code, granted.stderr).toBe(0);
        const once = await runCli(['worker', '--once', '--database-url', bouncer.url(workerLogin.url, mode)]);
        expect(once.code, once.stderr).toBe(0);
        const checked = await runCli(['check', `${p}dana`, `${p}ops`, 'write', '--database-url', bouncer.url(reader.url, mode)]);
        expect([checked.code, checked.stdout.trim()]).toEqual([0, 'yes']);
        const explained = await runCli(['explain', `${p}dana`, `${p}ops`, '--database-url', bouncer.url(reader.url, mode)]);
        expect(explained.stdout).toContain(`${p}dana -[write, default]-> ${p}ops`);
      });

      it('the command line: Ctrl-C cancels the statement it runs through the pooler, and exits 130', async () => {
        // (before, in transaction pooling, the interrupt's pg_cancel_backend query waited for the pool's one server
        // session, which the interrupted statement held: the command never stopped)
        const p = `ctrl-c-${mode}-`;
        await owner.query(sql`insert into permgraph.nodes (id, kind) values (${`${p}erin`}, 'user'), (${`${p}docs`}, 'group')`);
        const lockWaiters = () =>
          owner.query(sql`
            select pid from pg_stat_activity
            where datname = current_database() and usename = ${reader.name} and wait_event_type = 'Lock'`);
        // The permission table locked on a direct connection: the check waits for it, on the server.
        await owner.tx(async (tx) => {
          await tx.query(sql`lock table permgraph.permissions in access exclusive mode`);
          const child = spawnCli(['check', `${p}erin`, `${p}docs`, 'read', '--database-url', bouncer.url(reader.url, mode)]);
          const done = collect(child);
          try {
            await waitUntil(async () => (await lockWaiters()).length > 0, 'the check to wait for the lock');
            child.kill('SIGINT');
            await waitUntil(async () => child.exitCode !== null, 'the command to exit');
            expect(await done).toEqual({ code: 130, stdout: '', stderr: 'permgraph: interrupted by SIGINT\n' });
          } finally {
            child.kill('SIGKILL');
          }
          // Its statement was cancelled, while the lock is still held: nothing waits for it any more.
          await waitUntil(async () => (await lockWaiters()).length === 0, 'the statement to be cancelled');
          const [held] = await tx.query(sql`
            select count(*)::int as n from pg_locks
            where locktype = 'relation' and relation = 'permgraph.permissions'::regclass and mode = 'AccessExclusiveLock' and granted
              and database = (select oid from pg_database where datname = current_database())`);
          expect(held.n).toBe(1);
        });
        // The pooler took the cancel request in its stride: it still serves (PgBouncer 1.18 exited, "bad client state",
        // when the requesting connection closed before it had passed the request on).
        expect(await onOwnConnection(bouncer.url(reader.url, mode), 'select 1 as one')).toEqual({ one: 1 });
        expect(bouncer.log()).not.toContain('FATAL');
      });
    });

    describe('the worker', () => {
      it('refuses a transaction pooler, naming it, and takes no lock there: two such workers never both hold the applier role', async () => {
        // (before the refusal both took the role: the pooler ran both advisory locks on the one server session they shared)
        const pooled = [0, 1].map(() => new Worker({ url: bouncer.url(workerLogin.url, 'transaction'), pollIntervalMs: 200, standbyIntervalMs: 100 }));
        workers.push(...pooled);
        const outcomes = await Promise.allSettled(pooled.map((w) => w.start()));
        expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected']);
        for (const outcome of outcomes) {
          expect(String((outcome as PromiseRejectedResult).reason)).toMatch(/transaction pool.*connect the worker directly/);
        }
        expect(pooled.map((w) => w.role)).toEqual([undefined, undefined]);
        expect(await applierRoleHolders(owner)).toEqual([]);
        // and nothing is left on the pooler's server session that would keep a worker connected directly waiting as a standby
        await directWorker();
        // The command line says so and exits 1.
        const cli = await runCli(['worker', '--database-url', bouncer.url(workerLogin.url, 'transaction')]);
        expect(cli.code).toBe(1);
        expect(cli.stderr).toMatch(/^permgraph: this URL goes through a transaction pooler .*connect the worker directly/m);
      });

      it('stops by itself, saying why, when it finds the transaction pooler only once the server answers', async () => {
        // The pooler's port, with nothing listening on it yet when the worker starts.
        const later = await startPgBouncer(url, [workerLogin.url]);
        const pooledUrl = later.url(workerLogin.url, 'transaction');
        const port = Number(new URL(pooledUrl).port);
        await later.stop();
        const worker = new Worker({ url: pooledUrl, listen: false, pollIntervalMs: 200, standbyIntervalMs: 100 });
        workers.push(worker);
        const stopped = new Promise<void>((resolve) => worker.once('stopped', resolve));
        await worker.start(); // (nothing answers: the worker starts, and retries)
        const back = await startPgBouncer(url, [workerLogin.url], { port });
        try {
          await stopped;
        } finally {
          await back.stop();
        }
        expect(worker.failure).toBeInstanceOf(SharedSessionError);
        expect(worker.failure?.message).toMatch(/transaction pool.*connect the worker directly/);
        expect(worker.role).toBeUndefined();
        expect(await applierRoleHolders(owner)).toEqual([]);
      });

      /** A worker whose log lines are kept: said(message) counts those saying it. */
      function loggedWorker(options: WorkerOptions): { worker: Worker; lines: Record<string, any>[]; said: (message: string) => number; stopped: Promise<void> } {
        const lines: Record<string, any>[] = [];
        const worker = new Worker({ ...options, logger: pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) }) });
        workers.push(worker);
        const stopped = new Promise<void>((resolve) => worker.once('stopped', resolve));
        return { worker, lines, said: (message) => lines.filter((line) => line.msg === message).length, stopped };
      }
      const HOLDING = 'holding the applier role';
      /** Ends the server sessions holding the applier role, as a failover or a restarted server would. */
      async function breakRoleHolders(): Promise<void> {
        for (const pid of await applierRoleHolders(owner)) await owner.query(sql`select pg_terminate_backend(${pid})`);
      }

      it('asks again when it reconnects: its session pool reloaded as a transaction pool and its session broken, it stops, saying why, rather than take the role there', async () => {
        // (before, it reconnected and took the role again, on a server session the pooler now shares)
        const own = await startPgBouncer(url, [workerLogin.url]);
        try {
          // (polling seldom: its connection is still on its server session when that ends, and the pooler closes it)
          const { worker, said, stopped } = loggedWorker({ url: own.url(workerLogin.url, 'session'), listen: false, pollIntervalMs: 5_000, standbyIntervalMs: 100 });
          await worker.start();
          await waitUntil(async () => worker.role === 'active', 'the worker to take the role');
          await waitUntil(async () => {
            const sessions = await owner.query(sql`select state, query from pg_stat_activity where pid = any(${await applierRoleHolders(owner)}::int[])`);
            return sessions.length === 1 && sessions[0].state === 'idle' && sessions[0].query.includes('apply_changes');
          }, 'the worker to wait for its next poll, its first batch applied');
          await own.reload('transaction');
          await breakRoleHolders();
          await waitUntil(async () => worker.failure !== undefined || said(HOLDING) > 1, 'the worker to stop, or to take the role again');
          expect(said(HOLDING)).toBe(1);
          expect(worker.failure).toBeInstanceOf(SharedSessionError);
          expect(worker.failure?.message).toMatch(/transaction pool.*connect the worker directly/);
          await stopped;
          expect(worker.role).toBeUndefined();
          expect(await applierRoleHolders(owner)).toEqual([]);
        } finally {
          await own.stop();
        }
      });

      it("alone on its server session after a reload, its connection to the pooler reset: it stops at its reconnect, and ends that session, which still held the applier role's lock", async () => {
        // (before, it stopped and left the lock on the pooler's idle server session, where a transaction pool
        // resets nothing: a worker connected directly then waited as a standby until the pooler closed it)
        const own = await startPgBouncer(url, [workerLogin.url]);
        // (between the worker and the pooler: a network that resets its connections)
        const proxy = await startTcpProxy(own.url(workerLogin.url, 'session'));
        try {
          const { worker, said, stopped } = loggedWorker({ url: proxy.url, listen: false, pollIntervalMs: 5_000, standbyIntervalMs: 100 });
          await worker.start();
          await waitUntil(async () => worker.role === 'active', 'the worker to take the role');
          const [holder] = await applierRoleHolders(owner);
          await own.reload('transaction');
          const [{ reloadedAt }] = await owner.query(sql`select clock_timestamp() as "reloadedAt"`);
          // Its poll after the reload: once it is answered, the pooler gives the worker's server session back to its
          // pool between the worker's statements, and back to the worker, alone on it, for each. The next poll is 5 s away.
          await waitUntil(async () => {
            const [session] = await owner.query(sql`select state, query_start from pg_stat_activity where pid = ${holder}::int`);
            return session?.state === 'idle' && session.query_start > reloadedAt;
          }, 'the worker to poll after the reload');
          expect(worker.failure).toBeUndefined();
          proxy.reset();
          await stopped;
          expect(said(HOLDING)).toBe(1);
          expect(worker.failure).toBeInstanceOf(SharedSessionError);
          expect(worker.failure?.message).toMatch(/transaction pool.*connect the worker directly/);
          // (its end may have been asked on that very session, which the pooler gave its new connection: it ends as it answers)
          await waitUntil(async () => (await owner.query(sql`select pid from pg_stat_activity where pid = ${holder}::int`)).length === 0, 'its server session to end');
          expect(await applierRoleHolders(owner)).toEqual([]);
        } finally {
          await proxy.close();
          await own.stop();
        }
        // nothing of its is left on the pooler's sessions to keep a worker connected directly waiting
        await directWorker();
      });

      it("ends no session that no longer holds the applier role: its connection reset in session pooling, the pool reloaded before it reconnects, another client on its old session", async () => {
        const own = await startPgBouncer(url, [workerLogin.url]);
        const proxy = await startTcpProxy(own.url(workerLogin.url, 'session'));
        const others: pg.Client[] = [];
        try {
          // (polling seldom: its connection is reset between two statements, and the pooler resets its session rather than close it)
          const { worker, said, stopped } = loggedWorker({ url: proxy.url, listen: false, pollIntervalMs: 5_000, standbyIntervalMs: 100 });
          await worker.start();
          await waitUntil(async () => worker.role === 'active', 'the worker to take the role');
          const [holder] = await applierRoleHolders(owner);
          const sessionOf = async () => (await owner.query(sql`select state, query from pg_stat_activity where pid = ${holder}::int`))[0];
          await waitUntil(async () => {
            const session = await sessionOf();
            return session?.state === 'idle' && session.query.includes('apply_changes');
          }, 'the worker to wait for its next poll, its first batch applied');
          // Its connection reset, and its next ones held: the session pooler resets its server session, lock and all.
          proxy.stall({ newConnections: 'hold' });
          proxy.reset();
          await waitUntil(async () => (await sessionOf())?.query === 'DISCARD ALL', 'the pooler to reset its server session');
          expect(await applierRoleHolders(owner)).toEqual([]);
          await own.reload('transaction');
          // Other clients of the login, each in a transaction on a server session of the pool, until one is on the worker's old one.
          let onIt: pg.Client | undefined;
          while (onIt === undefined) {
            const other = new pg.Client({ connectionString: own.url(workerLogin.url, 'session') });
            other.on('error', () => {});
            others.push(other);
            await other.connect();
            await other.query('begin');
            if ((await other.query('select pg_backend_pid() as pid')).rows[0].pid === holder) onIt = other;
          }
          for (const other of others) if (other !== onIt) await other.query('rollback');
          proxy.resume();
          await stopped;
          expect(worker.failure).toBeInstanceOf(SharedSessionError);
          expect(said('its earlier server session no longer holds the applier role')).toBe(1);
          // The other client's transaction on it goes on.
          expect((await onIt.query('select pg_backend_pid() as pid')).rows).toEqual([{ pid: holder }]);
          await onIt.query('commit');
        } finally {
          await Promise.all(others.map((other) => other.end().catch(() => {})));
          await proxy.close();
          await own.stop();
        }
      });

      it('stops at its next batch, without running it, when the pooler moves its connection to another server session, and ends the session its lock is on', async () => {
        // (before, its batches ran on whichever session the pooler gave it, while its lock and settings stayed on the old one)
        const own = await startPgBouncer(url, [workerLogin.url]);
        const other = new pg.Client({ connectionString: own.url(workerLogin.url, 'session') });
        other.on('error', () => {});
        try {
          const { worker, stopped } = loggedWorker({ url: own.url(workerLogin.url, 'session'), listen: false, pollIntervalMs: 200, standbyIntervalMs: 100 });
          let batches = 0;
          worker.on('batch', () => batches++);
          await worker.start();
          await waitUntil(async () => worker.role === 'active', 'the worker to take the role');
          const [holder] = await applierRoleHolders(owner);
          await own.reload('transaction');
          // Another client of the login takes the worker's server session, once the pooler has let go of it between two batches.
          // (Or the worker's own next poll is moved first, and it stops and ends that session before the other client gets it.)
          await other.connect();
          let otherHasIt = false;
          await waitUntil(async () => {
            if (worker.failure !== undefined) return true;
            await other.query('begin');
            if ((await other.query('select pg_backend_pid() as pid')).rows[0].pid === holder) return (otherHasIt = true);
            await other.query('rollback');
            return false;
          }, "the other client to get the worker's server session, or the worker to stop");
          await owner.query(sql`insert into permgraph.nodes (id, kind) values ('moved-user', 'user')`);
          await waitUntil(async () => worker.failure !== undefined || batches > 0, 'the worker to stop, or to apply the change elsewhere');
          expect(batches).toBe(0);
          expect(worker.failure).toBeInstanceOf(SharedSessionError);
          expect(worker.failure?.message).toMatch(
            new RegExp(`^this URL goes through a transaction pooler \\(its connection was moved from server session ${holder} to \\d+\\): .*connect the worker directly`),
          );
          await stopped;
          // Its session, lock and settings with it, is gone (and the other client's transaction on it too).
          expect(await applierRoleHolders(owner)).toEqual([]);
          if (otherHasIt) await expect(other.query('select 1')).rejects.toThrow();
        } finally {
          await other.end().catch(() => {});
          await own.stop();
        }
      });

      it('two workers on a session pool reloaded as a transaction pool: neither holds the applier role there, both stop saying why, and no lock is left', async () => {
        // (before, the standby took the role once the active one's session broke, while that one reconnected and took it too)
        const own = await startPgBouncer(url, [workerLogin.url]);
        try {
          const sessionUrl = own.url(workerLogin.url, 'session');
          const pair = [0, 1].map(() => loggedWorker({ url: sessionUrl, listen: false, pollIntervalMs: 200, standbyIntervalMs: 100 }));
          const [first, second] = pair.map((p) => p.worker) as [Worker, Worker];
          await first.start();
          await waitUntil(async () => first.role === 'active', 'the first worker to take the role');
          await second.start();
          await waitUntil(async () => second.role === 'standby', 'the second worker to wait as a standby');
          await own.reload('transaction');
          await breakRoleHolders();
          const holding = () => pair.reduce((n, p) => n + p.said(HOLDING), 0);
          await waitUntil(async () => (first.failure !== undefined && second.failure !== undefined) || holding() > 1, 'both workers to stop, or one to take the role again');
          expect(holding()).toBe(1);
          for (const worker of [first, second]) {
            expect(worker.failure).toBeInstanceOf(SharedSessionError);
            expect(worker.failure?.message).toMatch(/transaction pool.*connect the worker directly/);
          }
          await Promise.all(pair.map((p) => p.stopped));
          expect(await applierRoleHolders(owner)).toEqual([]);
        } finally {
          await own.stop();
        }
        // nothing of theirs is left on the pooler's sessions to keep a worker connected directly waiting
        await directWorker();
      });

      it("says it waits for a server session while a full session pool keeps it queued, at start and when it reconnects, and takes the role once one is free", async () => {
        const own = await startPgBouncer(url, [workerLogin.url], { sessionPoolSize: 3 });
        const sessionUrl = own.url(workerLogin.url, 'session');
        // (other clients of the login, each holding one of the pool's three server sessions, or waiting for one)
        const { occupy, free } = sessionHolders(sessionUrl);
        const WAITING = WAITING_FOR_SESSION;
        try {
          for (const { answered } of await Promise.all([occupy(), occupy(), occupy()])) await answered;
          const { worker, lines } = loggedWorker({
            url: sessionUrl, listen: false, pollIntervalMs: 200, standbyIntervalMs: 100, watchdog: { checkIntervalMs: 500, checkTimeoutMs: 500 },
          });
          const starting = worker.start();
          // At start: the check of how it connects finds no server session to answer it.
          await waitUntil(async () => lines.length > 0, 'the worker to say something');
          // (before: "Query read timeout")
          expect(lines[0]).toMatchObject({
            msg: "could not check how the worker's connections reach the server; asking again when it connects",
            err: { message: expect.stringMatching(/^no server session answered within 2 s, though the connection was let in: a connection pooler whose server sessions are all in use/) },
          });
          await free();
          await starting;
          await waitUntil(async () => worker.role === 'active', 'the worker to take the role');

          // Full again, a third client queued for the next free session; then the worker's session breaks and it reconnects into the queue.
          for (const { answered } of await Promise.all([occupy(), occupy()])) await answered;
          const queued = (await occupy()).answered;
          const seen = lines.length;
          await breakRoleHolders();
          const since = () => lines.slice(seen);
          // (before, nothing was said until PgBouncer gave up on the connection: "query_wait_timeout")
          await waitUntil(async () => since().some((line) => WAITING.test(line.msg) || /query_wait_timeout/.test(line.err?.message ?? '')), 'the worker to say why it waits');
          expect(since().filter((line) => line.level >= 40).map((line) => line.msg)).toEqual([
            'lost the connection to the database; retrying',
            expect.stringMatching(WAITING),
          ]);
          await queued;
          await free();
          await waitUntil(async () => worker.role === 'active', 'the worker to take the role again');
          expect(since().some((line) => /stopped answering/.test(line.msg))).toBe(false);
        } finally {
          await free();
          await own.stop();
        }
      });

      it('starts while a full session pool queues its LISTEN connection: applies changes by polling meanwhile, says once that the listener waits for a server session, and listens once one is free; the same when the listener reconnects', async () => {
        // (before, start() failed: the LISTEN got no answer within its check time, "Query read timeout")
        const own = await startPgBouncer(url, [workerLogin.url], { sessionPoolSize: 2 });
        const sessionUrl = own.url(workerLogin.url, 'session');
        const holders = sessionHolders(sessionUrl);
        try {
          // One of the pool's two sessions is another client's: the worker's own connection gets the other, its LISTEN none.
          await (await holders.occupy()).answered;
          const { worker, lines, said } = loggedWorker({
            url: sessionUrl, pollIntervalMs: 200, standbyIntervalMs: 100, watchdog: { checkIntervalMs: 500, checkTimeoutMs: 500 },
          });
          const applied: string[] = [];
          worker.on('batch', () => applied.push('batch'));
          await worker.start();
          await waitUntil(async () => worker.role === 'active', 'the worker to take the role');
          const waiting = () => lines.filter((line) => WAITING_FOR_SESSION.test(line.msg));
          await waitUntil(async () => waiting().length > 0, 'the listener to say that it waits for a server session');
          // Meanwhile the worker polls and applies on its own connection.
          await owner.query(sql`insert into permgraph.nodes (id, kind) values ('queued-listener-user', 'user')`);
          await waitUntil(async () => applied.length > 0, 'the worker to apply the change');
          expect(await owner.query(sql`select level from permgraph.permissions where user_id = 'queued-listener-user'`)).toEqual([{ level: 3 }]);
          expect(said('listener connected')).toBe(0);
          await holders.free();
          await waitUntil(async () => said('listener connected') === 1, 'the listener to connect once a session is free');
          // It listens on a server session of its own now.
          const listening = await owner.query(sql`
            select query from pg_stat_activity where datname = current_database() and application_name = ${LISTENER_APPLICATION_NAME}`);
          expect(listening).toEqual([{ query: expect.stringMatching(/^(LISTEN |SELECT pg_backend_pid)/) }]);
          // Said once; nothing failed, nothing stopped.
          expect(waiting()).toHaveLength(1);
          expect(waiting()[0]).toMatchObject({ level: 40, operation: 'LISTEN' });
          expect(lines.filter((line) => line.level >= 50)).toEqual([]);
          expect(lines.some((line) => line.msg === 'listener reconnecting')).toBe(false);
          expect(worker.failure).toBeUndefined();

          // Full again, another client queued for the next free session; then the listener's session breaks, and the queued client gets one.
          const queued = (await holders.occupy()).answered;
          const seen = lines.length;
          await owner.query(sql`
            select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and application_name = ${LISTENER_APPLICATION_NAME}`);
          await queued;
          const since = () => lines.slice(seen);
          await waitUntil(async () => since().some((line) => WAITING_FOR_SESSION.test(line.msg)), 'the listener to say again that it waits');
          await holders.free();
          await waitUntil(async () => said('listener connected') === 2, 'the listener to connect again once a session is free');
          expect(since().filter((line) => line.level >= 40).map((line) => line.msg)).toEqual(['listener reconnecting', expect.stringMatching(WAITING_FOR_SESSION)]);
          expect(worker.role).toBe('active');
        } finally {
          await holders.free();
          await own.stop();
        }
      });

      it('runs in session pooling: one applier, a standby that takes over when it stops or is killed', async () => {
        const sessionUrl = bouncer.url(workerLogin.url, 'session');
        const first = new Worker({ url: sessionUrl, pollIntervalMs: 200, standbyIntervalMs: 100 });
        const second = new Worker({ url: sessionUrl, pollIntervalMs: 200, standbyIntervalMs: 100 });
        workers.push(first, second);
        await first.start();
        await waitUntil(async () => first.role === 'active', 'the first worker to take the role');
        await second.start();
        await waitUntil(async () => second.role === 'standby', 'the second worker to wait as a standby');
        expect(await applierRoleHolders(owner)).toHaveLength(1);
        await first.stop();
        await waitUntil(async () => second.role === 'active', 'the standby to take over');
        await second.stop();
        expect(await applierRoleHolders(owner)).toEqual([]);
        // A worker killed outright: the pooler sees its client gone and resets the server session (DISCARD ALL), lock and all.
        const killed = spawnCli(['worker', '--database-url', sessionUrl]);
        try {
          await waitUntil(async () => (await applierRoleHolders(owner)).length === 1, 'the command line worker to take the role');
        } finally {
          killed.kill('SIGKILL');
        }
        await directWorker();
      });
    });

    describe('following the change stream', () => {
      it('`changes --follow` while a full session pool queues its LISTEN connection: prints what it polls, says once that it waits for a server session, listens once one is free, and stops at SIGINT', async () => {
        // (before, it exited 1 once its LISTEN got no answer within its check time: "Query read timeout")
        await directWorker();
        const own = await startPgBouncer(url, [reader.url], { sessionPoolSize: 2 });
        const followerUrl = own.url(reader.url, 'session');
        const holders = sessionHolders(followerUrl);
        const child = spawnCli(['changes', '--consumer', 'queued-follower', '--register', '--follow', '--poll-interval', '200', '--log-level', 'info', '--log-format', 'json', '--database-url', followerUrl]);
        let stdout = '';
        let stderr = '';
        child.stdout?.on('data', (chunk) => (stdout += chunk));
        child.stderr?.on('data', (chunk) => (stderr += chunk));
        const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
        const logged = () => stderr.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as Record<string, any>);
        const running = () => child.exitCode === null && child.signalCode === null;
        try {
          // One of the pool's two sessions is another client's: the follower's reads get the other, its LISTEN none.
          await (await holders.occupy()).answered;
          await waitUntil(async () => stderr.includes('registered consumer queued-follower') || !running(), 'the follower to register');
          await owner.query(sql`insert into permgraph.nodes (id, kind) values ('queued-follower-user', 'user')`);
          await waitUntil(async () => stdout.includes('insert queued-follower-user -> queued-follower-user') || !running(), `the follower to print the event (stderr: ${stderr})`);
          await waitUntil(async () => logged().some((line) => WAITING_FOR_SESSION.test(line.msg)) || !running(), 'the follower to say that its listener waits');
          expect(running(), stderr).toBe(true);
          expect(logged().some((line) => line.msg === 'listener connected')).toBe(false);
          await holders.free();
          await waitUntil(async () => logged().some((line) => line.msg === 'listener connected') || !running(), 'the listener to connect once a session is free');
          expect(running(), stderr).toBe(true);
          child.kill('SIGINT');
          expect(await exited).toBe(0);
          expect(logged().filter((line) => WAITING_FOR_SESSION.test(line.msg))).toHaveLength(1);
          expect(logged().filter((line) => line.level >= 50)).toEqual([]);
        } finally {
          child.kill('SIGKILL');
          await holders.free();
          await own.stop();
        }
      });
    });

    describe('session state', () => {
      it("leaves the pooler's server sessions as it found them: an application's own connection keeps its login's search_path", async () => {
        const reference = await onOwnConnection<{ search_path: string }>(appLogin.url, 'show search_path'); // the login's own, directly
        // (connected directly, permgraph pins its own path for its connections)
        const direct = await connect(appLogin.url, 'direct');
        expect(await direct.db.query(sql`select current_setting('search_path') as search_path`)).toEqual([{ search_path: 'pg_catalog, pg_temp' }]);
        const app = await connect(appLogin.url, 'transaction');
        await app.addNode('state-user', 'user');
        expect(await app.check('state-user', 'state-user', 'read')).toBe(false); // (not applied: no worker runs here)
        // The transaction pool has one server session for this login: permgraph's connections used it just now.
        const seen = await onOwnConnection<{ search_path: string }>(bouncer.url(appLogin.url, 'transaction'), 'show search_path');
        expect(seen).toEqual(reference);
      });

      it('refresh, verify and migrate work through a transaction pooler and leave its server session as they found it', async () => {
        // (each is one transaction: nothing of theirs outlives it on the session)
        const pooled = bouncer.url(url, 'transaction'); // the owner's pool: one server session
        const before = await sessionState(pooled);
        expect(before).toEqual({ settings: [], advisory_locks: [], temporary_relations: [], prepared: [], listening: [] });
        // (what one client leaves there, the next one sees)
        await onOwnConnection(pooled, "select pg_catalog.set_config('work_mem', '7MB', false)");
        expect(await sessionState(pooled)).toMatchObject({ settings: ['work_mem = 7168'] });
        await onOwnConnection(pooled, 'reset work_mem');
        expect(await sessionState(pooled)).toEqual(before);
        // a user with read on a group that owns another: the refresh writes her rows for both
        await owner.query(sql`insert into permgraph.nodes (id, kind) values ('state-ann', 'user'), ('state-team', 'group')`);
        await owner.query(sql`insert into permgraph.nodes (id, kind, owner_id) values ('state-sub', 'group', 'state-team')`);
        await owner.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('state-ann', 'state-team', 1)`);
        const refreshed = await runCli(['refresh', '--database-url', pooled]);
        expect(refreshed.code, refreshed.stderr).toBe(0);
        expect(await sessionState(pooled)).toEqual(before);
        expect(await owner.query(sql`select target_id, level from permgraph.permissions where user_id = 'state-ann' order by target_id`)).toEqual([
          { target_id: 'state-ann', level: 3 }, { target_id: 'state-sub', level: 1 }, { target_id: 'state-team', level: 1 },
        ]);
        const verified = await runCli(['verify', '--database-url', pooled]);
        expect([verified.code, verified.stdout.trim()]).toEqual([0, 'ok: the table equals a full recomputation']);
        expect(await sessionState(pooled)).toEqual(before);
        // migrate: with nothing to do, and a whole schema on a database that has none
        const current = await runCli(['migrate', '--database-url', pooled]);
        expect([current.code, current.stdout.trim()]).toEqual([0, 'schema is up to date']);
        expect(await sessionState(pooled)).toEqual(before);
        const empty = await createEmptyDatabase();
        const fresh = await startPgBouncer(empty.url, [empty.url]);
        try {
          const emptyPooled = fresh.url(empty.url, 'transaction');
          const emptyBefore = await sessionState(emptyPooled);
          const migrated = await runCli(['migrate', '--database-url', emptyPooled]);
          expect(migrated.code, migrated.stderr).toBe(0);
          expect(await sessionState(emptyPooled)).toEqual(emptyBefore);
          expect((await runCli(['status', '--database-url', emptyPooled])).stdout).toMatch(/^schema: +ok/m);
        } finally {
          await fresh.stop();
        }
      });
    });

    describe('import', () => {
      /** A table of the application's, the source of a query import: people `${prefix}1`…`${prefix}5`. */
      async function people(prefix: string): Promise<{ query: string; ids: string[] }> {
        const name = `${prefix.replaceAll('-', '_')}people`;
        const table = sql.ident('public', name);
        await owner.query(sql`create table ${table} (login text)`);
        await owner.query(sql`insert into ${table} select ${prefix} || g from generate_series(1, 5) g`);
        const ids = (await owner.query(sql`select login from ${table} order by login`)).map((r: { login: string }) => r.login);
        return { query: `select login as id, 'user' as kind, null as owner_id from public.${name}`, ids };
      }
      /** A nodes CSV of users `${prefix}1`…`${prefix}4`. */
      async function csv(prefix: string): Promise<{ file: string; ids: string[] }> {
        const ids = [1, 2, 3, 4].map((i) => `${prefix}${i}`);
        const file = path.join(scratch, `${prefix}nodes.csv`);
        await writeFile(file, `id,kind,owner_id\n${ids.map((id) => `${id},user,`).join('\n')}\n`);
        return { file, ids };
      }
      const nodesLike = async (prefix: string) =>
        (await owner.query(sql`select id from permgraph.nodes where starts_with(id, ${prefix}) order by id`)).map((r: { id: string }) => r.id);
      const importLocks = () =>
        owner.query(sql`
          select pid from pg_locks
          where locktype = 'advisory' and classid = ${IMPORT_LOCK_CLASS} and database = (select oid from pg_database where datname = current_database())`);
      const runsNamed = (name: string) => owner.query(sql`select phase from permgraph.import_runs where name = ${name}`);

      it('refuses a transaction pooler, naming it, before it writes or sets anything: by the API and the command line', async () => {
        // What the owner login's other clients get from the pooler's one server session for it.
        const left = () => sessionState(bouncer.url(url, 'transaction'));
        const before = await left();
        const source = await people('tx-query-');
        const importer = await connect(url, 'transaction');
        const outcome = await importer.importGraph({ nodes: { query: source.query }, name: 'tx-query' }).then(
          (summary) => `loaded ${summary.nodes.inserted}`,
          (error: unknown) => error,
        );
        // (before the refusal the import ran: it loaded, and its query's search_path stayed on the pooler's session for the login's other clients)
        expect(await left()).toEqual(before);
        expect(await nodesLike('tx-query-')).toEqual([]);
        expect(outcome).toBeInstanceOf(SharedSessionError);
        expect(String((outcome as Error).message)).toMatch(/^this URL goes through a transaction pooler .*connect the import directly to PostgreSQL, or through a pooler in session mode/);
        expect(await runsNamed('tx-query')).toEqual([]);
        expect(await importLocks()).toEqual([]);

        // The command line (CSV, staged with COPY on a connection of its own) says so and exits 1.
        const input = await csv('tx-csv-');
        const cli = await runCli(['import', '--nodes', input.file, '--name', 'tx-csv', '--database-url', bouncer.url(url, 'transaction')]);
        expect(await left()).toEqual(before);
        expect(await nodesLike('tx-csv-')).toEqual([]);
        expect([cli.code, cli.stderr]).toEqual([1, expect.stringMatching(/^permgraph: this URL goes through a transaction pooler .*connect the import directly/m)]);
        expect(await runsNamed('tx-csv')).toEqual([]);
        expect(await importLocks()).toEqual([]);
      });

      it.each(['session', 'direct'] as const)('runs %s: a query import by the API and a CSV import by the command line load their rows', async (mode) => {
        const source = await people(`${mode}-query-`);
        const importer = await connect(url, mode);
        const summary = await importer.importGraph({ nodes: { query: source.query }, name: `${mode}-query`, batchSize: 2 });
        expect(summary).toMatchObject({ loaded: true, nodes: { read: 5, inserted: 5, invalid: 0 } });
        expect(await nodesLike(`${mode}-query-`)).toEqual(source.ids);
        const input = await csv(`${mode}-csv-`);
        const cliUrl = mode === 'direct' ? url : bouncer.url(url, mode);
        const cli = await runCli(['import', '--nodes', input.file, '--name', `${mode}-csv`, '--batch-size', '2', '--database-url', cliUrl]);
        expect(cli.code, cli.stderr).toBe(0);
        expect(await nodesLike(`${mode}-csv-`)).toEqual(input.ids);
        expect(await runsNamed(`${mode}-csv`)).toEqual([{ phase: 'done' }]);
        expect(await importLocks()).toEqual([]);
      });
    });

    describe('connecting', () => {
      it("waits, like any statement, while the transaction pool's sessions are all in use, rather than failing its check of how it connects", async () => {
        const pooled = bouncer.url(appLogin.url, 'transaction');
        // Another client of the login holds the pool's one server session in a transaction.
        const holder = new pg.Client({ connectionString: pooled });
        holder.on('error', () => {});
        await holder.connect();
        try {
          await holder.query('begin');
          await holder.query('select 1');
          let settled = false;
          const connecting = Permgraph.connect({ databaseUrl: pooled, poolSize: 2 })
            .then((app) => (opened.push(app), app), (error: unknown) => error)
            .finally(() => (settled = true));
          // (held past the check's wait for a second connection's session, then given back)
          const heldUntil = Date.now() + POOLER_CHECK_TIMEOUT_MS + 1_000;
          await waitUntil(async () => settled || Date.now() > heldUntil, 'the session to have been held long enough');
          await holder.query('commit');
          const app = await connecting;
          expect(app).toBeInstanceOf(Permgraph);
          expect(await (app as Permgraph).db.query(sql`select current_user as login`)).toEqual([{ login: appLogin.name }]);
        } finally {
          await holder.end().catch(() => {});
        }
      });
    });

    describe('doctor', () => {
      it('tells a transaction pooler (where the worker and imports cannot run) from a session pooler and a direct connection', async () => {
        const found: Record<string, unknown> = {};
        for (const where of ['direct', 'session', 'transaction'] as const) {
          const checks = await (await connect(reader.url, where)).doctor();
          found[where] = checks.find((c) => c.name === 'pooling');
        }
        expect(found).toEqual({
          direct: { name: 'pooling', status: 'ok', message: expect.stringMatching(/^direct to PostgreSQL/) },
          session: { name: 'pooling', status: 'ok', message: expect.stringMatching(/^through a connection pooler that kept/) },
          transaction: { name: 'pooling', status: 'warn', message: expect.stringMatching(/^through a transaction pooler.*the worker and imports refuse it: connect the worker and imports directly/) },
        });
      });
    });
  });
}
