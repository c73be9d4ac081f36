// permgraph import: what an import query may do (one statement, read-only,
// schema-qualified names), the one id rule, NUL bytes, levels by name, and
// interruption.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { importGraph, ImportInterruptedError, ImportRejectedError } from '../../src/app/import/index.ts';
import { singleStatement, userQuery } from '../../src/app/import/inputs.ts';
import { syncRoles } from '../../src/app/catalog.ts';
import { openPool, sql, type Queryable } from '../../src/db/pool.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { waitForImportBlocked } from '../helpers/cli.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { loadGraph, readPermissions } from '../helpers/graph.ts';
import * as model from '../reference/model.ts';
import type { RefGraph } from '../reference/model.ts';

const scratch = await mkdtemp(path.join(tmpdir(), 'permgraph-import-safety-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));
let counter = 0;

async function writeText(name: string, text: string | Buffer): Promise<string> {
  const file = path.join(scratch, `${counter++}-${name}`);
  await writeFile(file, text);
  return file;
}

async function counts(db: Queryable) {
  const [row] = await db.query(sql`
    select (select count(*) from permgraph.nodes)::int as nodes, (select count(*) from permgraph.grants)::int as grants,
           (select count(*) from permgraph.audit_log)::int as audit,
           (select count(*) from permgraph.import_nodes)::int as staged_nodes, (select count(*) from permgraph.import_grants)::int as staged_grants`);
  return row;
}

async function relationExists(db: Queryable, name: string): Promise<boolean> {
  const [{ found }] = await db.query(sql`select to_regclass(${name}) is not null as found`);
  return found;
}

describe('permgraph import: queries, ids, levels, interruption', async () => {
  const { db, url } = await createTestDatabase();

  it('an import query runs as one read-only statement: the injection of issue 10 creates nothing', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const before = await counts(db);
    const injection = "select 'a' as id, 'user' as kind, null as owner_id limit 0; create table public.injected (a int); select 'b' as id, 'user' as kind, null as owner_id";
    for (const dryRun of [true, false]) {
      await expect(importGraph(db, { nodes: { query: injection }, dryRun })).rejects.toThrow(
        'the nodes query must be a single statement: a second one starts after the ";" at character 59',
      );
    }
    // Balanced parentheses around the subquery do not help either.
    const balanced = "select 'a' as id, 'user' as kind, null as owner_id) as q; create table public.injected (a int); select * from (select 1";
    await expect(importGraph(db, { grants: { query: balanced }, dryRun: true })).rejects.toThrow(/the grants query must be a single statement/);
    expect(await relationExists(db, 'public.injected')).toBe(false);
    // Beneath the check, the driver sends such a statement alone, with a parameter: PostgreSQL refuses a second one.
    await expect(userQuery(db, sql`select ${1}::int; create table public.injected (a int)`)).rejects.toThrow(/cannot insert multiple commands into a prepared statement/);
    expect(await relationExists(db, 'public.injected')).toBe(false);
    // A function that writes fails: the query's transaction is READ ONLY.
    await db.query(sql`
      create function public.sneaky() returns text language plpgsql as $$
      begin create table public.sneaky_table (a int); return 'x'; end $$`);
    await expect(importGraph(db, { nodes: { query: "select public.sneaky() as id, 'user' as kind, null as owner_id" } })).rejects.toThrow(
      /^the nodes query tried to write: cannot execute CREATE TABLE in a read-only transaction \(import queries run in a READ ONLY transaction\)$/,
    );
    expect(await relationExists(db, 'public.sneaky_table')).toBe(false);
    expect(await counts(db)).toEqual(before);
    const [{ failed }] = await db.query(sql`select count(*)::int as failed from permgraph.import_runs where phase not in ('done', 'failed')`);
    expect(failed).toBe(0);
    // Session settings the query changes do not outlive it.
    await db.query(sql`create table public.people (id text)`);
    await db.query(sql`insert into public.people values ('pat')`);
    const summary = await importGraph(db, {
      nodes: { query: "select id, 'user' as kind, null as owner_id from public.people where pg_catalog.set_config('search_path', 'public', false) is not null" },
    });
    expect(summary.nodes).toMatchObject({ inserted: 1 });
    await db.task(async (conn) => {
      const [{ path: searchPath }] = await conn.query(sql`select pg_catalog.current_setting('search_path') as path`);
      expect(searchPath).toBe('pg_catalog, pg_temp');
    });
  });

  it('tables are named with their schema: an unqualified one is refused with an error that says so', async () => {
    await db.query(sql`create table if not exists public.app_users (login text)`);
    await expect(importGraph(db, { nodes: { query: "select login as id, 'user' as kind, null as owner_id from app_users" } })).rejects.toThrow(
      'the nodes query failed: relation "app_users" does not exist (import queries run with search_path = pg_catalog, pg_temp: name tables with their schema, e.g. public.app_users)',
    );
    await expect(importGraph(db, { nodes: { query: "select login as id, 'user' as kind, null as owner_id from public.app_users" }, dryRun: true }))
      .resolves.toMatchObject({ dryRun: true });
    // A trailing semicolon and a trailing comment are fine.
    await expect(importGraph(db, { nodes: { query: "select login as id, 'user' as kind, null as owner_id from public.app_users; -- all of them" }, dryRun: true }))
      .resolves.toMatchObject({ dryRun: true });
    await expect(importGraph(db, { nodes: { query: "select login as id, 'user' as kind, null as owner_id from public.app_users -- all" }, dryRun: true }))
      .resolves.toMatchObject({ dryRun: true });
    // Inside the caller's transaction a query cannot have a READ ONLY transaction of its own.
    await expect(db.tx((tx) => importGraph(tx, { nodes: { query: "select 'x' as id, 'user' as kind, null as owner_id" } }))).rejects.toThrow(
      /runs in a READ ONLY transaction of its own: import from a connection or a pool, not inside a transaction/,
    );
  });

  it("on a pool that keeps the login's search_path, the query runs with the import's path, and the connection keeps its own", async () => {
    // An application's own pool (Permgraph.fromPool), or Permgraph.connect() through a pooler: nothing pins the path.
    const own = openPool(url, { poolSize: 1, pinSearchPath: false });
    const sessionPath = async () => (await own.query(sql`select pg_catalog.current_setting('search_path') as path`))[0].path;
    try {
      const loginPath = await sessionPath();
      expect(loginPath).toBe('"$user", public');
      await db.query(sql`create table if not exists public.app_users (login text)`);
      await db.query(sql`insert into public.app_users values ('own-pool-user')`);
      await expect(importGraph(own, { nodes: { query: "select login as id, 'user' as kind, null as owner_id from app_users" } })).rejects.toThrow(
        'the nodes query failed: relation "app_users" does not exist (import queries run with search_path = pg_catalog, pg_temp',
      );
      // (before, the import pinned the path of the pool's connection for good: the application's unqualified names then failed on it)
      expect(await sessionPath()).toBe(loginPath);
      const summary = await importGraph(own, { nodes: { query: "select login as id, 'user' as kind, null as owner_id from public.app_users" }, onInvalid: 'skip' });
      expect(summary.nodes).toMatchObject({ read: 1, invalid: 0 });
      expect(await sessionPath()).toBe(loginPath);
      // What the query sets for the session itself is undone too.
      await importGraph(own, {
        nodes: { query: "select login as id, 'user' as kind, null as owner_id from public.app_users where pg_catalog.set_config('search_path', 'pg_temp', false) is not null" },
      });
      expect(await sessionPath()).toBe(loginPath);
    } finally {
      await own.dispose();
    }
  });

  it('a ";" inside strings, quoted names, dollar quotes or comments does not end the statement', () => {
    const single = [
      "select 'a;b' as id",
      "select E'it\\'s; fine' as id",
      'select 1 as "semi;colon"',
      'select $$;$$ as id, $tag$ ; $tag$ as kind',
      'select 1 -- ; not a statement\n as id',
      'select /* ; /* nested ; */ still */ 1 as id',
      "select 'it''s;' as id;",
      'select 1 as id;  -- trailing',
    ];
    for (const query of single) expect(() => singleStatement(query, 'nodes'), query).not.toThrow();
    expect(singleStatement("select 'a;b' as id;", 'nodes')).toBe("select 'a;b' as id\n");
    const multiple = ["select 'a' as id; select 1", 'select $$x$$ as id; drop table t', "select E'\\\\'; select 1", 'select 1 /* c */; select 2'];
    for (const query of multiple) expect(() => singleStatement(query, 'nodes'), query).toThrow(/must be a single statement/);
  });

  it('the inline id test of validation is permgraph._id_problem exactly (property)', async () => {
    const ids = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.string({ maxLength: 40 }).map((s) => s.replace(/\0/g, '')),
      fc.integer({ min: 250, max: 262 }).map((n) => 'x'.repeat(n)),
      fc.constantFrom('', ' ', '\u007f', '\u0085', '\u00a0', 'a\tb', 'é'.repeat(256), 'é'.repeat(257)),
    ).map((s) => s.replace(/\0/g, '\u0001'));
    await fc.assert(
      fc.asyncProperty(fc.array(ids, { minLength: 1, maxLength: 50 }), async (values) => {
        const rows: { id: string; inline: boolean; rule: boolean; message: string | null }[] = await db.query(sql`
          select s.id, (s.id is null or length(s.id) not between 1 and 256 or s.id ~ '[[:cntrl:]]') as inline,
                 permgraph._id_problem(s.id) is not null as rule, permgraph._import_id_problem('id', s.id) as message
          from unnest(${values}::text[]) s(id)`);
        for (const r of rows) {
          expect(r.inline, JSON.stringify(r.id)).toBe(r.rule);
          expect(r.message !== null, JSON.stringify(r.id)).toBe(r.rule);
        }
      }),
      { numRuns: 50 },
    );
  });

  it('odd ids are refused with their line and column, and long ones are cut in messages', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const huge = 'h'.repeat(1_000_000);
    const nodes = await writeText(
      'nodes.csv',
      ['id,kind,owner_id', 'ok,user,', ',user,', `${huge},user,`, '"tab\there",user,', `child,group,${huge}`, 'x'.repeat(256) + ',user,'].join('\n'),
    );
    const grants = await writeText('grants.csv', ['tail_id,head_id,level', `ok,${huge},1`, ',ok,1', 'ok,ok,1'].join('\n'));
    const error = await importGraph(db, { nodes: { file: nodes }, grants: { file: grants }, maxProblems: 20 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ImportRejectedError);
    const summary = (error as ImportRejectedError).summary;
    const cut = `"${'h'.repeat(64)}…" (1000000 characters)`;
    const rule = '(an id is 1 to 256 characters with no control characters)';
    expect(summary.problems.map((p) => `${p.table} line ${p.line}: ${p.problem}`)).toEqual([
      `nodes line 3: id "" is empty ${rule}`,
      `nodes line 4: id ${cut} is 1000000 characters long (at most 256) ${rule}`,
      `nodes line 5: id "tab?here" contains a control character ${rule}`,
      `nodes line 6: owner_id ${cut} is 1000000 characters long (at most 256) ${rule}`,
      `grants line 2: head_id ${cut} is 1000000 characters long (at most 256) ${rule}`,
      `grants line 3: tail_id "" is empty ${rule}`,
    ]);
    expect((error as Error).message.length).toBeLessThan(400);
    expect(await counts(db)).toMatchObject({ nodes: 0, grants: 0, staged_nodes: 0, staged_grants: 0 });
    // The same rule as SQL: a 256-character id is fine, and so are the valid rows when skipping.
    const skipped = await importGraph(db, { nodes: { file: nodes }, grants: { file: grants }, onInvalid: 'skip' });
    expect(skipped.nodes).toMatchObject({ invalid: 4, inserted: 2 });
    expect(skipped.grants).toMatchObject({ invalid: 2, inserted: 1 });
  });

  it('a NUL byte is an error of its line; the run fails whole and leaves nothing staged', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const nodes = await writeText('nodes.csv', Buffer.from('id,kind,owner_id\nann,user,\nb\0b,user,\ncat,us\0er,\n'));
    const grants = await writeText('grants.csv', Buffer.from('tail_id,head_id,level,source\nann,cat,1,s\0rc\n'));
    const error = await importGraph(db, { nodes: { file: nodes }, grants: { file: grants }, name: 'nul', batchSize: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ImportRejectedError);
    expect((error as ImportRejectedError).summary.problems.map((p) => `${p.origin}: ${p.problem}`)).toEqual([
      `${path.basename(nodes)} line 3: id contains a NUL byte (0x00), which PostgreSQL text cannot hold`,
      `${path.basename(nodes)} line 4: kind contains a NUL byte (0x00), which PostgreSQL text cannot hold`,
      `${path.basename(grants)} line 2: source contains a NUL byte (0x00), which PostgreSQL text cannot hold`,
    ]);
    const [run] = await db.query(sql`select phase from permgraph.import_runs where name = 'nul'`);
    expect(run.phase).toBe('failed');
    expect(await counts(db)).toMatchObject({ nodes: 0, grants: 0, staged_nodes: 0, staged_grants: 0 });
    const skipped = await importGraph(db, { nodes: { file: nodes }, grants: { file: grants }, name: 'nul', onInvalid: 'skip' });
    expect(skipped.nodes).toMatchObject({ read: 3, invalid: 2, inserted: 1 });
  });

  it('levels by name (read, write, manage) and catalog roles, in a CSV and in a query', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    await syncRoles(db, { roles: [{ name: 'viewer', level: 1 }, { name: 'editor', level: 2 }], operations: [] });
    const graph: RefGraph = {
      nodes: [u('ann'), u('bob'), g('eng'), g('ops', 'eng'), o('doc', 'ops')],
      grants: [grant('ann', 1, 'eng', 'a'), grant('ann', 2, 'ops', 'b'), grant('bob', 3, 'eng', 'c'), grant('bob', 2, 'ops', 'd'), grant('bob', 1, 'doc', 'e')],
    };
    const nodes = await writeText('nodes.csv', 'id,kind,owner_id\nann,user,\nbob,user,\neng,group,\nops,group,eng\ndoc,object,ops\n');
    const grants = await writeText('grants.csv', 'tail_id,head_id,level,source\nann,eng,read,a\nann,ops,editor,b\nbob,eng,manage,c\nbob,ops, 2 ,d\nbob,doc,viewer,e\n');
    const summary = await importGraph(db, { nodes: { file: nodes }, grants: { file: grants } });
    expect(summary).toMatchObject({ loaded: true, invalid: 0 });
    expect(await readPermissions(db)).toEqual(model.computePermissions(graph));

    await loadGraph(db, { nodes: [], grants: [] });
    await db.query(sql`create table public.shares (who text, what text, how text)`);
    await db.query(sql`insert into public.shares values ('ann', 'eng', 'read'), ('ann', 'ops', 'editor'), ('bob', 'eng', '3'), ('bob', 'ops', 'write'), ('bob', 'doc', 'viewer')`);
    const fromQuery = await importGraph(db, {
      nodes: { file: nodes },
      grants: { query: "select who as tail_id, what as head_id, how as level, 'q' as source from public.shares" },
    });
    expect(fromQuery).toMatchObject({ loaded: true, invalid: 0 });
    expect(await readPermissions(db)).toEqual(model.computePermissions(graph));

    const bad = await writeText('grants.csv', 'tail_id,head_id,level\nann,eng,owner\nann,ops,4\nbob,eng,\n');
    const error = await importGraph(db, { nodes: { file: nodes }, grants: { file: bad } }).catch((e: unknown) => e);
    expect((error as ImportRejectedError).summary.problems.map((p) => `line ${p.line}: ${p.problem}`)).toEqual([
      'line 2: level must be 1 (read), 2 (write), 3 (manage) or a role of the catalog, got "owner"; known roles: editor, viewer',
      'line 3: level must be 1 (read), 2 (write) or 3 (manage), got "4"',
      'line 4: level is empty',
    ]);
  });

  it('interrupted while a statement runs: the statement is cancelled, the run resumes to the reference state', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const graph: RefGraph = { nodes: [u('ann'), g('eng', 'ann'), o('doc', 'eng')], grants: [grant('ann', 2, 'eng')] };
    const nodes = await writeText('nodes.csv', 'id,kind,owner_id\ndoc,object,eng\neng,group,ann\nann,user,\n');
    const grants = await writeText('grants.csv', 'tail_id,head_id,level\nann,eng,write\n');
    const options = { nodes: { file: nodes }, grants: { file: grants }, name: 'cancelled' };
    const controller = new AbortController();
    // The import's lock before validating waits for this one: the run's statement is running on the server when the signal comes.
    const outcome = await db.tx(async (locker) => {
      await locker.query(sql`lock table permgraph.nodes in access exclusive mode`);
      const running = importGraph(db, { ...options, signal: controller.signal }).catch((e: unknown) => e);
      await waitForImportBlocked(db);
      controller.abort('SIGINT');
      const error = await running;
      // No statement of the run is left behind (it would still wait for the lock this transaction holds).
      const [{ waiting }] = await db.query(sql`
        select count(*)::int as waiting from pg_stat_activity where datname = current_database() and query like '%permgraph._lock_tables_in_turn(%' and state = 'active'
          and pid <> pg_backend_pid()`);
      return { error, waiting };
    });
    expect(outcome.error).toBeInstanceOf(ImportInterruptedError);
    expect((outcome.error as Error).message).toBe('import "cancelled" interrupted (SIGINT); nothing was loaded: run the same command with --resume to continue');
    expect(outcome.waiting).toBe(0);
    const [run] = await db.query(sql`select phase, rows_done from permgraph.import_runs where name = 'cancelled'`);
    expect(run).toEqual({ phase: 'load', rows_done: 4 });
    expect((await counts(db)).nodes).toBe(0);
    const resumed = await importGraph(db, { ...options, resume: true });
    expect(resumed).toMatchObject({ loaded: true, resumed: true, invalid: 0 });
    expect(await readPermissions(db)).toEqual(model.computePermissions(graph));
    // A signal that has fired already stops a run before it starts.
    await expect(importGraph(db, { ...options, name: 'never', signal: AbortSignal.abort('SIGTERM') })).rejects.toThrow(
      'import "never" interrupted (SIGTERM); nothing was loaded: run the same command with --resume to continue',
    );
    await expect(importGraph(db, { ...options, dryRun: true, signal: AbortSignal.abort('SIGTERM') })).rejects.toThrow(
      'dry run of import "cancelled" interrupted (SIGTERM); nothing was written',
    );
  });
});
