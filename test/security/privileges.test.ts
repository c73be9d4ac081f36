// The security model, tried the way an attacker would, through real login
// roles: a writer who plants functions in public, forges internal rows or
// switches capture and auditing off; a reader; a worker; a login with no
// permgraph role at all. Every attack must fail and leave nothing written.
import { describe, expect, it } from 'vitest';
import { Worker } from '../../src/worker/worker.ts';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { verify } from '../../src/engine/verify.ts';
import { pruneAudit } from '../../src/app/audit.ts';
import { PermgraphError, PermissionDeniedError } from '../../src/errors.ts';
import { sql, type ConnectionPool, type Queryable } from '../../src/db/pool.ts';
import { computePermissions } from '../reference/model.ts';
import type { RefGraph } from '../reference/model.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { createEmptyDatabase, createTestDatabase } from '../helpers/database.ts';
import { insertGrants, insertNodes, loadGraph, readPermissions } from '../helpers/graph.ts';
import { createLogin } from '../helpers/logins.ts';
import { plantedCalls, plantFunctions, removePlanted } from '../helpers/planted.ts';
import { runCli } from '../helpers/cli.ts';
import { migrateAsReleased } from '../helpers/released.ts';
import { failureOf } from '../helpers/failure.ts';
import { expectedRowAccess } from '../helpers/app-rows.ts';

const graph: RefGraph = {
  nodes: [u('alice'), u('bob'), g('eng'), g('secret'), g('roadmap', 'eng'), o('doc', 'eng')],
  grants: [grant('alice', 2, 'eng'), grant('bob', 1, 'eng')],
};

/** Every table of the schema that only the owner may write. */
const INTERNAL_TABLES = [
  'permissions', 'changes', 'edges', 'audit_log', 'trashed_groups', 'deleted_nodes', 'applier_state',
  'roles', 'operations', 'migrations', 'function_files', 'import_runs', 'import_nodes', 'import_grants',
  'consumer_registrations', 'grant_source_locks',
];

async function counts(db: Queryable): Promise<Record<string, number>> {
  const result: Record<string, number> = {};
  for (const table of [...INTERNAL_TABLES, 'nodes', 'grants']) {
    const [row] = await db.query(sql`select count(*)::int as n from ${sql.ident('permgraph', table)}`);
    result[table] = row.n;
  }
  return result;
}

/** A trash change and every engine and query entry point, run by the superuser with public first in its path. */
async function runEverythingAsSuperuser(admin: ConnectionPool, writer: ConnectionPool): Promise<void> {
  await writer.query(sql`update permgraph.nodes set trash_at = now() + interval '1 day' where id = 'eng'`);
  await admin.tx(async (tx) => {
    await tx.query(sql`set local search_path = public, pg_catalog`);
    await tx.query(sql`select permgraph.apply_changes()`);
    await tx.query(sql`select permgraph.refresh()`);
    await tx.query(sql`select * from permgraph.verify()`);
    await tx.query(sql`select permgraph.check('alice', 'roadmap', 1), permgraph.can('alice', 'x', 'eng', 1), permgraph.is_trashed('doc')`);
  });
}

describe('security model through real login roles', async () => {
  const { db: owner, url } = await createTestDatabase();
  await loadGraph(owner, graph);
  await owner.query(sql`select permgraph.refresh()`);
  const reader = await createLogin(owner, url, 'reader', 'permgraph_reader');
  const writer = await createLogin(owner, url, 'writer', 'permgraph_writer');
  const worker = await createLogin(owner, url, 'worker', 'permgraph_worker');
  const nobody = await createLogin(owner, url, 'nobody');

  describe('a reader login with SELECT on an application table', () => {
    it('lists its rows with list_rows under every plan, the statistics read as the reader; the rows equal the model', async () => {
      const rows = ['eng', 'secret', 'roadmap', 'doc', null].flatMap((ownerId, k) =>
        Array.from({ length: 30 }, (_, i) => ({ id: `r${k}-${String(i).padStart(2, '0')}`, ownerId })));
      await owner.query(sql`create table public.reader_docs (id text primary key, owner_id text)`);
      await owner.query(sql`create index on public.reader_docs (owner_id, id)`);
      await owner.query(sql`insert into public.reader_docs select * from unnest(${rows.map((r) => r.id)}::text[], ${rows.map((r) => r.ownerId)}::text[])`);
      await owner.query(sql`analyze public.reader_docs`);
      await owner.query(sql`grant select on public.reader_docs to ${sql.ident(reader.name)}`);
      try {
        for (const user of ['alice', 'bob']) {
          const expected = rows.filter((r) => expectedRowAccess(graph, new Set(), user, r, 1, new Date())).map((r) => r.id);
          // (the fixture: eng's rows are visible to both, secret's to neither)
          expect([expected.some((id) => id.startsWith('r0-')), expected.some((id) => id.startsWith('r1-'))], user).toEqual([true, false]);
          for (const plan of ['', 'rows', 'scan', 'hash', 'ordered']) {
            const listed = await reader.db.tx(async (tx) => {
              await tx.query(sql`select set_config('permgraph.listing_plan', ${plan}, true)`);
              const page = await tx.query(sql`select id from permgraph.list_rows(null::public.reader_docs, 'id', 'owner_id', ${user}, 1, null, 1000)`);
              return page.map((r: { id: string }) => r.id);
            });
            expect(listed, `${plan || 'auto'} for ${user}`).toEqual(expected);
          }
        }
      } finally {
        await owner.query(sql`drop table public.reader_docs`);
      }
    });
  });

  describe('finding 1: planted functions never run with the engine\'s rights', () => {
    it('on the release before the fix, the attack works (so this test can see it)', async () => {
      const old = await createEmptyDatabase();
      await migrateAsReleased(old.db);
      await loadGraph(old.db, graph);
      await old.db.query(sql`select permgraph.apply_changes()`);
      const attacker = await createLogin(old.db, old.url, 'oldmallory');
      await old.db.query(sql`grant create on schema public to ${sql.ident(attacker.name)}`);
      await plantFunctions(attacker.db);
      await old.db.query(sql`update permgraph.nodes set trash_at = now() + interval '1 day' where id = 'eng'`);
      await old.db.tx(async (tx) => {
        await tx.query(sql`set local search_path = public, pg_catalog`);
        await tx.query(sql`select permgraph.apply_changes()`);
      });
      expect(await plantedCalls(old.db)).toContainEqual(expect.objectContaining({ caller: 'postgres', isSuperuser: true }));
    });

    it('now: no planted function runs, whatever the caller\'s search_path', async () => {
      const mallory = await createLogin(owner, url, 'mallory', 'permgraph_writer');
      await owner.query(sql`grant create on schema public to ${sql.ident(mallory.name)}`);
      await plantFunctions(mallory.db);
      await runEverythingAsSuperuser(owner, mallory.db);
      // The TypeScript side too: a batch through the API and the worker daemon.
      await mallory.db.query(sql`update permgraph.nodes set trash_at = null where id = 'eng'`);
      await applyChanges(owner);
      await mallory.db.query(sql`update permgraph.nodes set trash_at = now() + interval '2 days' where id = 'eng'`);
      const daemon = new Worker({ url, pollIntervalMs: 50 });
      const batch = new Promise((resolve) => daemon.once('batch', resolve));
      await daemon.start();
      expect(await batch).toMatchObject({ mode: 'incremental', changes: 1 });
      await daemon.stop();
      expect(await plantedCalls(owner)).toEqual([]);
      await removePlanted(owner);
    });

    it('every permgraph function pins its search_path (or has a body resolved when it was created)', async () => {
      const unpinned = await owner.query(sql`
        select p.oid::regprocedure::text as function
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = 'permgraph'
          and p.prosqlbody is null
          and not exists (select 1 from unnest(p.proconfig) c where c like 'search_path=%')
        order by 1`);
      expect(unpinned).toEqual([]);
      const [{ functions }] = await owner.query(sql`
        select count(*)::int as functions from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'permgraph'`);
      expect(functions).toBeGreaterThan(50);
    });
  });

  describe('finding 2: writers write nodes and grants, and nothing else', () => {
    it('no role but the owner can write any internal table', async () => {
      const before = await counts(owner);
      const firstColumns: { table_name: string; column_name: string }[] = await owner.query(sql`
        select distinct on (c.relname) c.relname as table_name, a.attname as column_name
        from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'permgraph' and a.attnum > 0 and a.attidentity = '' and not a.attisdropped
        order by c.relname, a.attnum`);
      const firstColumn = new Map(firstColumns.map((r) => [r.table_name, r.column_name]));
      for (const login of [reader, writer, worker, nobody]) {
        for (const table of INTERNAL_TABLES) {
          const column = sql.ident(firstColumn.get(table)!);
          for (const statement of [
            sql`delete from ${sql.ident('permgraph', table)}`,
            sql`truncate ${sql.ident('permgraph', table)}`,
            sql`update ${sql.ident('permgraph', table)} set ${column} = ${column}`,
            sql`insert into ${sql.ident('permgraph', table)} default values`,
          ]) {
            expect((await failureOf(login.db.query(statement))).code, `${login.name}: ${table}`).toBe('42501');
          }
        }
      }
      // The forgery of the report: an edge and a change row that no grant stands behind.
      for (const statement of [
        sql`insert into permgraph.edges (tail_id, head_id, source, level, tail_kind, head_kind) values ('bob', 'secret', 'x', 3, 'user', 'group')`,
        sql`insert into permgraph.changes (tail_id, head_id, tail_kind, head_kind, old_level, new_level) values ('bob', 'secret', 'user', 'group', null, 3)`,
        sql`insert into permgraph.permissions values ('bob', 'secret', 3, true)`,
        sql`insert into permgraph.audit_log (action, actor) values ('grant', 'alice')`,
        sql`insert into permgraph.audit_log (id, action) overriding system value values (1000000, 'grant')`,
      ]) {
        expect((await failureOf(writer.db.query(statement))).code).toBe('42501');
      }
      expect(await counts(owner)).toEqual(before);
      await applyChanges(owner);
      expect(await owner.query(sql`select * from permgraph.permissions where user_id = 'bob' and target_id = 'secret'`)).toEqual([]);
    });

    it('a login granted permgraph_worker runs the CLI worker and refresh; a writer may not', async () => {
      await writer.db.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('bob', 'secret', 2, 'cli')`);
      const once = await runCli(['worker', '--once', '--database-url', worker.url]);
      expect(once.stderr).toBe('');
      expect(once.code).toBe(0);
      expect(await worker.db.query(sql`select count(*)::int as n from permgraph.changes`)).toEqual([{ n: 0 }]);
      const refreshed = await runCli(['refresh', '--database-url', worker.url]);
      expect(refreshed.code).toBe(0);
      expect(await worker.db.query(sql`select * from permgraph.verify()`)).toEqual([]);
      const denied = await runCli(['refresh', '--database-url', writer.url]);
      expect(denied.code).toBe(1);
      // (PostgreSQL names what it refused first: the applier's turn, which a refresh locks before its snapshot)
      expect(denied.stderr).toMatch(/^permgraph: permission denied for table applier_turn: `permgraph refresh` needs a login granted permgraph_worker/);
      await writer.db.query(sql`delete from permgraph.grants where source = 'cli'`);
      await applyChanges(worker.db);
    });

    it('PUBLIC and logins without a permgraph role can neither read nor call anything', async () => {
      for (const statement of [
        sql`select * from permgraph.permissions`,
        sql`select permgraph.check('alice', 'eng', 1)`,
        sql`select permgraph.apply_changes()`,
        sql`insert into permgraph.nodes (id, kind) values ('intruder', 'user')`,
      ]) {
        expect((await failureOf(nobody.db.query(statement))).code).toBe('42501');
      }
      const executable = await owner.query(sql`
        select p.oid::regprocedure::text as function
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = 'permgraph' and has_function_privilege('public', p.oid, 'execute')`);
      expect(executable).toEqual([]);
    });

    it('a writer\'s changes are captured and audited; the worker login applies them; the result equals the model', async () => {
      await writer.db.query(sql`insert into permgraph.nodes (id, kind, owner_id) values ('carol', 'user', null), ('plan', 'object', 'roadmap')`);
      await writer.db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('carol', 'roadmap', 3)`);
      // The writer may not apply, the reader may not either, the worker may.
      expect((await failureOf(writer.db.query(sql`select permgraph.apply_changes()`))).code).toBe('42501');
      expect((await failureOf(reader.db.query(sql`select permgraph.refresh()`))).code).toBe('42501');
      // through the library: a PermissionDeniedError (a PermgraphError), the SQLSTATE kept
      // (each started only when awaited: a rejection nobody awaits yet would be unhandled)
      const refusals = [() => applyChanges(writer.db), () => refresh(reader.db), () => verify(writer.db), () => pruneAudit(writer.db, { olderThan: '365d' })];
      for (const refusal of refusals) {
        const error = await refusal().then(() => undefined, (e: unknown) => e);
        expect(error).toBeInstanceOf(PermissionDeniedError);
        expect(error).toBeInstanceOf(PermgraphError);
        expect(error).toMatchObject({ code: '42501', sqlState: '42501', message: expect.stringMatching(/^permission denied for (function|table) /) });
      }
      await applyChanges(worker.db);
      const expected = computePermissions({
        nodes: [...graph.nodes, u('carol'), o('plan', 'roadmap')],
        grants: [...graph.grants, grant('carol', 3, 'roadmap')],
      });
      expect(await readPermissions(owner)).toEqual(expected);
      await worker.db.query(sql`select permgraph.refresh()`);
      expect(await worker.db.query(sql`select * from permgraph.verify()`)).toEqual([]);
      // Readers read the table and ask questions.
      expect(await reader.db.query(sql`select permgraph.check('carol', 'plan', 3) as allowed`)).toEqual([{ allowed: true }]);
      const [{ n }] = await reader.db.query(sql`select count(*)::int as n from permgraph.effective_permissions where user_id = 'carol'`);
      expect(n).toBe(expected.filter((r) => r.userId === 'carol').length);
      // The audit names the login behind each change.
      const audit = await owner.query(sql`
        select action, head_id, actor, db_role from permgraph.audit_log where head_id in ('carol', 'plan', 'roadmap') and db_role <> 'postgres' order by id`);
      expect(audit).toEqual([
        { action: 'create_node', head_id: 'carol', actor: writer.name, db_role: writer.name },
        { action: 'create_node', head_id: 'plan', actor: writer.name, db_role: writer.name },
        { action: 'grant', head_id: 'roadmap', actor: writer.name, db_role: writer.name },
      ]);
      await writer.db.query(sql`delete from permgraph.grants where tail_id = 'carol'`);
      await writer.db.query(sql`delete from permgraph.nodes where id in ('carol', 'plan')`);
      await applyChanges(worker.db);
    });
  });

  describe('finding 3: capture and audit can only be switched off by the owner', () => {
    it('a writer who switches capture off is refused, and the grant stays', async () => {
      for (const setting of ['permgraph.capture', 'permgraph.audit']) {
        const before = await counts(owner);
        const error = await failureOf(
          writer.db.tx(async (tx) => {
            await tx.query(sql`select set_config(${setting}, 'off', true)`);
            await tx.query(sql`delete from permgraph.grants where tail_id = 'bob' and head_id = 'eng'`);
          }),
        );
        expect(error.code).toBe('42501');
        expect(error.message).toMatch(/only the owner of schema permgraph may switch/);
        expect(await counts(owner)).toEqual(before);
      }
      expect(await reader.db.query(sql`select permgraph.check('bob', 'roadmap', 1) as allowed`)).toEqual([{ allowed: true }]);
    });

    it('the owner may (what a bulk import does), and refresh then catches up', async () => {
      await owner.tx(async (tx) => {
        await tx.query(sql`set local permgraph.capture = 'off'`);
        await tx.query(sql`set local permgraph.audit = 'off'`);
        await insertNodes(tx, [u('dave')]);
        await insertGrants(tx, [grant('dave', 1, 'eng')]);
      });
      expect(await owner.query(sql`select * from permgraph.changes where tail_id = 'dave'`)).toEqual([]);
      expect(await owner.query(sql`select * from permgraph.audit_log where head_id = 'dave' or tail_id = 'dave'`)).toEqual([]);
      await worker.db.query(sql`select permgraph.refresh()`);
      expect(await reader.db.query(sql`select permgraph.check('dave', 'roadmap', 1) as allowed`)).toEqual([{ allowed: true }]);
    });
  });

  describe('finding 4: the audit log is append-only for everyone', () => {
    it('no role may update, delete or truncate it, the owner included; pruning is the owner\'s and is itself audited', async () => {
      const [{ n: before }] = await owner.query(sql`select count(*)::int as n from permgraph.audit_log`);
      expect(before).toBeGreaterThan(0);
      for (const statement of [
        sql`update permgraph.audit_log set actor = 'someone else'`,
        sql`delete from permgraph.audit_log`,
        sql`truncate permgraph.audit_log`,
      ]) {
        const error = await failureOf(owner.query(statement));
        expect(error.code).toBe('42501');
        expect(error.message).toMatch(/^permgraph: audit_log is append-only/);
      }
      // nor with the setting prune_audit_log once used to let its own DELETE through
      const forged = await failureOf(owner.tx(async (tx) => {
        await tx.query(sql`set local permgraph.pruning_audit_log = on`);
        await tx.query(sql`delete from permgraph.audit_log`);
      }));
      expect(forged.message).toMatch(/^permgraph: audit_log is append-only: DELETE is refused/);
      expect((await failureOf(writer.db.query(sql`select permgraph.prune_audit_log(now())`))).code).toBe('42501');
      const [{ pruned }] = await owner.query(sql`select permgraph.prune_audit_log(now() + interval '1 minute') as pruned`);
      expect(pruned).toBe(before);
      const rest = await owner.query(sql`select action, actor, details->>'entries' as entries from permgraph.audit_log`);
      expect(rest).toEqual([{ action: 'prune_audit', actor: 'postgres', entries: String(before) }]);
    });
  });
});
