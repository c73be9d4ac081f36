// The statements the TypeScript side sends run in the caller's session,
// with the caller's rights and its search_path. Permgraph.connect() pins
// that path on a direct connection, but not behind a connection pooler
// (src/db/pool.ts), and Permgraph.fromPool() runs on the application's own
// pool, as it is. There, a login allowed to create objects in a schema on
// the path (public, on PostgreSQL 14 by default) could plant functions
// that match better than pg_catalog's polymorphic ones (unnest(anyarray),
// cardinality(anyarray), format(text, variadic "any")), or than those the
// client passes a literal of another type or a parameter of unknown type
// (hashtextextended(text, bigint) given 0, pg_advisory_xact_lock(bigint)
// given a parameter), and have them run as whoever calls the API: the
// application's login, or the schema's owner for an import or a
// migration. So the client's SQL names those functions by schema. Each
// entry point below runs through unpinned pools, on the logins' default
// path; no planted function may run, and the answers must be the model's.
import { beforeEach, describe, expect, it } from 'vitest';
import { ImportInterruptedError } from '../../src/app/import/types.ts';
import pg from 'pg';
import { Permgraph } from '../../src/client.ts';
import { createProbe } from '../../src/worker/probe.ts';
import { openPool, sql, type ConnectionPool } from '../../src/db/pool.ts';
import { computePermissions, type RefGraph } from '../reference/model.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { loadGraph } from '../helpers/graph.ts';
import { createLogin } from '../helpers/logins.ts';
import { clearPlantedCalls, plantedCalls, plantFunctions } from '../helpers/planted.ts';
import { waitForImportBlocked, waitUntil } from '../helpers/cli.ts';

const graph: RefGraph = {
  nodes: [u('alice'), u('bob'), g('eng'), g('secret'), o('doc', 'eng')],
  grants: [grant('alice', 2, 'eng'), grant('bob', 1, 'eng')],
};

/**
 * A pool as an application's own, or Permgraph.connect()'s behind a pooler:
 * nothing pinned, the login's default path ("$user", public). pg_catalog is
 * searched first, yet a function of public whose argument types match
 * exactly still beats a polymorphic one of pg_catalog.
 */
function unpinnedPool(url: string): ConnectionPool {
  return openPool(url, { poolSize: 2, pinSearchPath: false });
}

describe('the client\'s own SQL on an unpinned search path', async () => {
  const { db: owner, url } = await createTestDatabase();
  await loadGraph(owner, graph);
  await owner.query(sql`select permgraph.refresh()`);
  const app = await createLogin(owner, url, 'app', 'permgraph_writer');
  const mallory = await createLogin(owner, url, 'mallory', 'permgraph_writer');
  await owner.query(sql`grant create on schema public to ${sql.ident(mallory.name)}`);
  await plantFunctions(mallory.db);
  const appPool = unpinnedPool(app.url);
  const ownerPool = unpinnedPool(url);
  const asApp = Permgraph.fromPool(appPool, app.url);
  const asOwner = Permgraph.fromPool(ownerPool, url);

  beforeEach(async () => {
    await clearPlantedCalls(owner);
  });

  it('the pools resolve names through the default path, where the planted functions win', async () => {
    const [{ path }] = await appPool.query(sql`select current_setting('search_path') as path`);
    expect(path).toBe('"$user", public');
    const [{ n }] = await appPool.query(sql`select count(*)::int as n from unnest(${['a', 'b']}::text[])`);
    expect(n).toBe(2);
    expect(await plantedCalls(owner)).toEqual([{ caller: app.name, isSuperuser: false, what: 'unnest(text[])' }]);
  });

  it('checkMany, grant with an expiry, syncGrants: the model\'s answers, no planted call', async () => {
    const model = computePermissions(graph);
    const expected = ['eng', 'doc', 'secret', 'nowhere'].map((target) =>
      model.some((row) => row.userId === 'alice' && row.level >= 1 && (row.targetId === target || (target === 'doc' && row.targetId === 'eng' && row.traverseOwned))));
    expect(expected).toEqual([true, true, false, false]);
    expect(await asApp.checkMany('alice', ['eng', 'doc', 'secret', 'nowhere'], 'read')).toEqual(expected);
    await asApp.grant('bob', 'secret', 'read', { expiresIn: '1d' });
    const synced = await asApp.syncGrants('hr', [{ tail: 'alice', head: 'secret', level: 'write', expiresAt: new Date(Date.now() + 86_400_000) }]);
    expect(synced.inserted).toBe(1);
    const stored = await owner.query(sql`select tail_id, head_id, level, source from permgraph.grants where head_id = 'secret' order by 1`);
    expect(stored).toEqual([
      { tail_id: 'alice', head_id: 'secret', level: 2, source: 'hr' },
      { tail_id: 'bob', head_id: 'secret', level: 1, source: 'default' },
    ]);
    expect(await plantedCalls(owner)).toEqual([]);
  });

  it('migrate, as the owner, on an unpinned session: no planted call', async () => {
    expect(await asOwner.migrate()).toEqual({ applied: [], functions: [], rights: [] });
    expect(await plantedCalls(owner)).toEqual([]);
  });

  it('an import interrupted while its statement runs: cancelled, and no planted call runs as the owner', async () => {
    const controller = new AbortController();
    let settled = false;
    // (the run waits for this lock: its statement is running on the server when the signal comes)
    const { running } = await owner.tx(async (locker) => {
      await locker.query(sql`lock table permgraph.nodes in access exclusive mode`);
      const running = asOwner
        .importGraph({ nodes: { query: "select 'erin' as id, 'user' as kind, null::text as owner_id" }, name: 'interrupted', signal: controller.signal })
        .then(() => 'not interrupted', (e: unknown) => e)
        .finally(() => (settled = true));
      await waitForImportBlocked(owner);
      controller.abort('SIGINT');
      // cancelled (the run ends), or a planted function took the cancel's place (it waits on)
      await waitUntil(async () => settled || (await plantedCalls(owner)).length > 0, 'the import to be cancelled');
      return { running }; // (not awaited here: the run may wait for this transaction's lock)
    });
    expect(await plantedCalls(owner)).toEqual([]);
    expect(await running).toBeInstanceOf(ImportInterruptedError);
  });

  it('row-level security on an application table and the catalog sync: no planted call', async () => {
    await owner.query(sql`create table public.docs (id text primary key, owner_id text)`);
    await asOwner.enableRowLevelSecurity('public.docs', 'id', 'owner_id');
    await asOwner.disableRowLevelSecurity('public.docs');
    const result = await asOwner.syncRoles({ roles: [{ name: 'viewer', level: 1 }], operations: [{ name: 'view', level: 1 }] });
    expect(result.changes.length).toBeGreaterThan(0);
    expect(await owner.query(sql`select name, level from permgraph.roles order by 1`)).toContainEqual({ name: 'viewer', level: 1 });
    expect(await plantedCalls(owner)).toEqual([]);
  });

  it('an import with an invalid row skipped, as the owner: no planted call runs as the owner', async () => {
    const summary = await asOwner.importGraph({
      nodes: { query: "select 'carol' as id, 'user' as kind, null::text as owner_id" },
      grants: { query: "select * from (values ('carol', 'eng', '1'), ('carol', 'eng2', '1')) g(tail_id, head_id, level)" },
      onInvalid: 'skip',
    });
    expect(summary).toMatchObject({ loaded: true, invalid: 1 });
    const [carol] = await owner.query(sql`select count(*)::int as n from permgraph.grants where tail_id = 'carol'`);
    expect(carol.n).toBe(1);
    expect(await plantedCalls(owner)).toEqual([]);
  });

  it("the worker's probe, on its raw connection as the worker's login: no planted call, and the session it finds idle is ended", async () => {
    const workerLogin = await createLogin(owner, url, 'worker', 'permgraph_worker');
    // A session of the worker's login, idle while its worker would wait for an answer: stuck.
    const session = new pg.Client({ connectionString: workerLogin.url });
    session.on('error', () => {});
    await session.connect();
    try {
      // (temporary tables, as the worker's session holds its work tables: a
      // backend drops them as it exits, so it stays listed a while after the
      // signal, which "ended" must have waited out)
      await session.query(`do $$ begin for i in 1..400 loop execute format('create temp table work_%s (id text primary key)', i); end loop; end $$`);
      const {
        rows: [me],
      } = await session.query<{ pid: number; started: string }>(
        'select pg_backend_pid() as pid, extract(epoch from backend_start)::text as started from pg_stat_activity where pid = pg_backend_pid()',
      );
      const outcome = await createProbe(workerLogin.url, 10_000)({ pid: me!.pid, startedAt: me!.started }, 0);
      expect(outcome).toMatchObject({ kind: 'stuck', ended: true });
      expect(await owner.query(sql`select pid from pg_stat_activity where pid = ${me!.pid}::integer`)).toEqual([]);
    } finally {
      await session.end().catch(() => {});
    }
    expect(await plantedCalls(owner)).toEqual([]);
  });

  it('(afterwards) the pools are closed', async () => {
    await appPool.dispose();
    await ownerPool.dispose();
  });
});
