// Row-level security on an application table (permgraph.enable_rls in
// sql/functions/110_rls.sql), exercised through a real login role granted
// permgraph_reader and the app table's own privileges, nothing else: the
// policies run with exactly what an application's login has. Outcomes are
// compared with the reference model, with and without matchRowId.
import type { Transaction } from '@databases/pg';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { disableRowLevelSecurity, enableRowLevelSecurity, setSuperuser } from '../../src/app/rls.ts';
import { sql } from '../../src/db/pool.ts';
import { refresh } from '../../src/engine/apply.ts';
import { InvalidInputError } from '../../src/errors.ts';
import type { Level, RefGraph } from '../reference/model.ts';
import { u, g, o, grant } from '../helpers/builders.ts';
import { expectedRowAccess, type AppRow } from '../helpers/app-rows.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { FUTURE, PAST, graphArbitrary, loadGraph } from '../helpers/graph.ts';
import { createLogin } from '../helpers/logins.ts';

/** Ends a transaction by rolling it back, keeping what the body computed. */
class Rollback extends Error {}

const sortIds = (ids: string[]) => [...ids].sort();

/** An id no generated or fixed graph uses: how a row looks to the rule when its own id is not matched. */
const NOT_A_NODE = 'row id matched by no node';

describe('row-level security through permgraph.enable_rls', async () => {
  const { db, url } = await createTestDatabase();
  const app = await createLogin(db, url, 'rls_app', 'permgraph_reader');

  beforeAll(async () => {
    await db.query(sql`create table public.docs (id text primary key, owner_id text, title text not null default '')`);
    await db.query(sql`grant select, insert, update, delete on public.docs to ${sql.ident(app.name)}`);
    // What UPDATE and DELETE really changed, seen from outside the policies:
    // an owner-run trigger notes every row a statement changed, and by which transaction.
    await db.query(sql`create table public.docs_touched (op text not null, id text not null, xact xid8 not null default pg_current_xact_id())`);
    await db.query(sql`grant select on public.docs_touched to ${sql.ident(app.name)}`);
    await db.query(sql`
      create function public.docs_note_touched() returns trigger
      language plpgsql security definer set search_path = pg_catalog, pg_temp
      as $$ begin insert into public.docs_touched (op, id) values (lower(tg_op), old.id); return null; end $$`);
    await db.query(sql`create trigger docs_touched after update or delete on public.docs for each row execute function public.docs_note_touched()`);
    await enableRowLevelSecurity(db, 'public.docs', 'id', 'owner_id');
  });

  /** Runs body as the app's login with permgraph.user_id set (or unset), then rolls everything back. */
  async function asApp<T>(userId: string | null, body: (tx: Transaction) => Promise<T>): Promise<T> {
    let result: T | undefined;
    try {
      await app.db.tx(async (tx) => {
        if (userId !== null) await tx.query(sql`select set_config('permgraph.user_id', ${userId}, true)`);
        result = await body(tx);
        throw new Rollback();
      });
    } catch (error) {
      if (!(error instanceof Rollback)) throw error;
    }
    return result as T;
  }

  /** Runs a statement inside a savepoint that is then rolled back, so each probe starts from the same rows. */
  async function probe<T>(tx: Transaction, body: () => Promise<T>): Promise<T | Error> {
    await tx.query(sql`savepoint probe`);
    try {
      return await body();
    } catch (error) {
      return error as Error;
    } finally {
      await tx.query(sql`rollback to savepoint probe`);
    }
  }

  async function setRows(rows: AppRow[]): Promise<void> {
    await db.query(sql`delete from public.docs`);
    if (rows.length === 0) return;
    await db.query(sql`insert into public.docs (id, owner_id) select * from unnest(${rows.map((r) => r.id)}::text[], ${rows.map((r) => r.ownerId)}::text[])`);
  }

  const idsOf = async (tx: Transaction, query: ReturnType<typeof sql>) => sortIds((await tx.query(query)).map((r: { id: string }) => r.id));

  interface Observed {
    selected: string[];
    updated: string[];
    deleted: string[];
    inserted: (string | null)[];
  }

  /** What the user can do: rows selected, rows UPDATE and DELETE really changed, owners an INSERT is allowed with. */
  async function observe(userId: string | null, insertOwners: (string | null)[]): Promise<Observed> {
    return asApp(userId, async (tx) => {
      const selected = await idsOf(tx, sql`select id from public.docs`);
      const updated = await probe(tx, async () => {
        await tx.query(sql`update public.docs set title = 'touched'`);
        return idsOf(tx, sql`select id from public.docs_touched where op = 'update' and xact = pg_current_xact_id()`);
      });
      const deleted = await probe(tx, async () => {
        await tx.query(sql`delete from public.docs`);
        return idsOf(tx, sql`select id from public.docs_touched where op = 'delete' and xact = pg_current_xact_id()`);
      });
      const inserted: (string | null)[] = [];
      for (const owner of insertOwners) {
        const outcome = await probe(tx, () => tx.query(sql`insert into public.docs (id, owner_id) values ('fresh-row', ${owner})`));
        if (outcome instanceof Error) expect(outcome.message).toMatch(/new row violates row-level security policy for table "docs"/);
        else inserted.push(owner);
      }
      if (updated instanceof Error || deleted instanceof Error) throw updated instanceof Error ? updated : deleted;
      return { selected, updated, deleted, inserted };
    });
  }

  /**
   * What the model allows. Without matchRowId a row's own id means nothing
   * to the rule: it is judged as a row that is no node, owned by its owner column.
   */
  function expected(graph: RefGraph, superusers: ReadonlySet<string>, userId: string, rows: AppRow[], insertOwners: (string | null)[], matchRowId: boolean): Observed {
    const now = new Date();
    const judged = (r: AppRow): AppRow => (matchRowId ? r : { id: NOT_A_NODE, ownerId: r.ownerId });
    const allowed = (level: Level) => sortIds(rows.filter((r) => expectedRowAccess(graph, superusers, userId, judged(r), level, now)).map((r) => r.id));
    return {
      selected: allowed(1),
      updated: allowed(2),
      deleted: allowed(3),
      // A new row: write on its owner (no direct grant can name an id that does not exist yet).
      inserted: insertOwners.filter((owner) => expectedRowAccess(graph, superusers, userId, { id: NOT_A_NODE, ownerId: owner }, 2, now)),
    };
  }

  for (const matchRowId of [false, true]) {
    it(`random graphs, superusers and rows (matchRowId ${matchRowId}): SELECT, UPDATE, DELETE and INSERT do exactly what the model allows`, async () => {
      await enableRowLevelSecurity(db, 'public.docs', 'id', 'owner_id', { matchRowId });
      const scenario = fc.record({
        graph: graphArbitrary({ users: 5, groups: 7, objects: 5, grants: 25 }),
        superPicks: fc.array(fc.nat(), { maxLength: 2 }),
        rowPicks: fc.array(fc.record({ registered: fc.boolean(), pick: fc.nat(), owner: fc.option(fc.nat(), { freq: 5 }) }), { maxLength: 15 }),
      });
      await fc.assert(
        fc.asyncProperty(scenario, async ({ graph, superPicks, rowPicks }) => {
          await loadGraph(db, graph);
          await refresh(db);
          const users = graph.nodes.filter((n) => n.kind === 'user').map((n) => n.id);
          const superusers = new Set(superPicks.map((i) => users[i % users.length]!));
          for (const id of superusers) await setSuperuser(db, id, true);
          const owners = [...graph.nodes.filter((n) => n.kind !== 'object').map((n) => n.id), 'not-a-node'];
          // Rows whose id is a node's keep that node's owner in their owner column, as an app
          // that registers its rows keeps them in step; the others get any owner.
          const rows = new Map<string, AppRow>();
          rowPicks.forEach(({ registered, pick, owner }, i) => {
            const node = graph.nodes[pick % graph.nodes.length]!;
            if (registered) rows.set(node.id, { id: node.id, ownerId: node.ownerId });
            else rows.set(`row${i}`, { id: `row${i}`, ownerId: owner === null ? null : owners[owner % owners.length]! });
          });
          const appRows = [...rows.values()];
          await setRows(appRows);
          const insertOwners = [...owners, null];
          for (const userId of [...users, 'not-a-user']) {
            expect(await observe(userId, insertOwners), userId).toEqual(expected(graph, superusers, userId, appRows, insertOwners, matchRowId));
          }
        }),
        { numRuns: 12 },
      );
    });
  }

  describe('fixed cases', () => {
    // ann writes eng, which owns the trashed project old; bob has a direct grant on the object node d1.
    const graph: RefGraph = {
      nodes: [u('ann'), u('bob'), u('root'), g('eng'), g('old', 'eng', PAST), g('later', 'eng', FUTURE), o('d1', null)],
      grants: [grant('ann', 2, 'eng'), grant('bob', 1, 'd1')],
    };
    const rows: AppRow[] = [
      { id: 'r-eng', ownerId: 'eng' },
      { id: 'r-old', ownerId: 'old' },
      { id: 'r-later', ownerId: 'later' },
      { id: 'r-bob', ownerId: 'bob' },
      { id: 'r-none', ownerId: null },
      { id: 'd1', ownerId: null },
    ];

    beforeAll(async () => {
      await loadGraph(db, graph);
      await refresh(db);
      await setSuperuser(db, 'root', true);
      await setRows(rows);
      await enableRowLevelSecurity(db, 'public.docs', 'id', 'owner_id');
    });

    it('ann sees what eng owns (not the trashed project), bob his own rows; a row\'s own id is not matched', async () => {
      const ann = await observe('ann', ['eng', 'old', 'bob', null]);
      expect(ann).toEqual({ selected: ['r-eng', 'r-later'], updated: ['r-eng', 'r-later'], deleted: [], inserted: ['eng'] });
      // d1 is a node bob may read, but the row d1 is matched through its owner column only
      const bob = await observe('bob', ['eng', 'bob']);
      expect(bob).toEqual({ selected: ['r-bob'], updated: ['r-bob'], deleted: ['r-bob'], inserted: ['bob'] });
    });

    it('a row whose id equals a group id is not visible to the group\'s readers unless matchRowId', async () => {
      await db.query(sql`insert into public.docs (id, owner_id) values ('eng', 'bob')`);
      try {
        // ann may write the group eng, not what bob owns
        expect((await observe('ann', [])).selected).toEqual(['r-eng', 'r-later']);
        expect((await observe('bob', [])).selected).toEqual(['eng', 'r-bob']);
        await enableRowLevelSecurity(db, 'public.docs', 'id', 'owner_id', { matchRowId: true });
        expect((await observe('ann', [])).selected).toEqual(['eng', 'r-eng', 'r-later']);
        expect((await observe('bob', [])).selected).toEqual(['d1', 'eng', 'r-bob']);
      } finally {
        await enableRowLevelSecurity(db, 'public.docs', 'id', 'owner_id');
        await db.query(sql`delete from public.docs where id = 'eng'`);
      }
      expect((await observe('ann', [])).selected).toEqual(['r-eng', 'r-later']);
    });

    it('a superuser sees and touches everything except trashed rows', async () => {
      expect(await observe('root', ['eng', 'old', null])).toEqual({
        selected: ['d1', 'r-bob', 'r-eng', 'r-later', 'r-none'],
        updated: ['d1', 'r-bob', 'r-eng', 'r-later', 'r-none'],
        deleted: ['d1', 'r-bob', 'r-eng', 'r-later', 'r-none'],
        inserted: ['eng', null],
      });
    });

    it('no user set, an empty user or an unknown user: no rows at all', async () => {
      const nothing = { selected: [], updated: [], deleted: [], inserted: [] };
      expect(await observe(null, ['eng'])).toEqual(nothing);
      expect(await observe('', ['eng'])).toEqual(nothing);
      expect(await observe('nobody', ['eng'])).toEqual(nothing);
    });

    it('`set permgraph.user_id` works like set_config', async () => {
      const seen = await asApp(null, async (tx) => {
        await tx.query(sql`set local permgraph.user_id = 'ann'`);
        return idsOf(tx, sql`select id from public.docs`);
      });
      expect(seen).toEqual(['r-eng', 'r-later']);
    });

    it('an update may not move a row to an owner the user cannot write', async () => {
      const outcome = await asApp('ann', (tx) => probe(tx, () => tx.query(sql`update public.docs set owner_id = 'bob' where id = 'r-eng'`)));
      expect(outcome).toBeInstanceOf(Error);
      expect((outcome as Error).message).toMatch(/new row violates row-level security policy/);
    });

    it('enable_rls is idempotent; disable_rls removes the policies and keeps others', async () => {
      await enableRowLevelSecurity(db, 'public.docs', 'id', 'owner_id');
      await enableRowLevelSecurity(db, 'public.docs', 'id', 'owner_id');
      const policies = async () => (await db.query(sql`select policyname from pg_policies where tablename = 'docs' order by 1`)).map((r: { policyname: string }) => r.policyname);
      expect(await policies()).toEqual(['permgraph_delete', 'permgraph_insert', 'permgraph_select', 'permgraph_update']);

      await disableRowLevelSecurity(db, 'public.docs');
      expect(await policies()).toEqual([]);
      expect((await observe('nobody', [])).selected).toHaveLength(rows.length); // RLS off: every row
      await db.query(sql`create policy app_own on public.docs for select using (title = 'public')`);
      await enableRowLevelSecurity(db, 'public.docs', 'id', 'owner_id');
      await disableRowLevelSecurity(db, 'public.docs');
      expect(await policies()).toEqual(['app_own']);
      expect((await db.query(sql`select relrowsecurity from pg_class where oid = 'public.docs'::regclass`))[0].relrowsecurity).toBe(true);
      await db.query(sql`drop policy app_own on public.docs`);
      await enableRowLevelSecurity(db, 'public.docs', 'id', 'owner_id');
      expect((await observe('ann', [])).selected).toEqual(['r-eng', 'r-later']);
    });

    it("a login that owns its table (not permgraph's owner) installs and removes the policies itself", async () => {
      // the application's own login, granted permgraph_reader, owning a table in its own schema
      const schema = `app_${app.name}`;
      await db.query(sql`create schema ${sql.ident(schema)} authorization ${sql.ident(app.name)}`);
      const table = `${schema}.own_docs`;
      await app.db.query(sql`create table ${sql.ident(schema, 'own_docs')} (id text primary key, owner_id text)`);
      await app.db.query(sql`insert into ${sql.ident(schema, 'own_docs')} values ('x-eng', 'eng'), ('x-bob', 'bob'), ('x-old', 'old')`);
      const viewer = await createLogin(db, url, 'rls_viewer', 'permgraph_reader');
      await app.db.query(sql`grant usage on schema ${sql.ident(schema)} to ${sql.ident(viewer.name)}`);
      await app.db.query(sql`grant select on ${sql.ident(schema, 'own_docs')} to ${sql.ident(viewer.name)}`);
      const seen = (user: string) =>
        viewer.db.tx(async (tx) => {
          await tx.query(sql`select set_config('permgraph.user_id', ${user}, true)`);
          return idsOf(tx, sql`select id from ${sql.ident(schema, 'own_docs')}`);
        });

      await enableRowLevelSecurity(app.db, table, 'id', 'owner_id');
      expect(await seen('ann')).toEqual(['x-eng']);
      expect(await seen('bob')).toEqual(['x-bob']);
      await disableRowLevelSecurity(app.db, table);
      expect(await seen('ann')).toEqual(['x-bob', 'x-eng', 'x-old']);
      // its table only: permgraph's owner's table stays out of its reach
      await expect(enableRowLevelSecurity(app.db, 'public.docs', 'id', 'owner_id')).rejects.toThrow(/must be owner of (table|relation) docs/);
    });

    it('a partitioned table: every partition carries the policies, one attached later once enable_rls runs again; an inheriting child too', async () => {
      // PostgreSQL applies a table's policies to queries naming it, not to
      // those naming a partition: each of these must filter on its own.
      await db.query(sql`create table public.pdocs (id text not null, owner_id text, region text not null) partition by list (region)`);
      await db.query(sql`create table public.pdocs_eu partition of public.pdocs for values in ('eu')`);
      await db.query(sql`create table public.pdocs_us partition of public.pdocs for values in ('us') partition by list (owner_id)`);
      await db.query(sql`create table public.pdocs_us_rest partition of public.pdocs_us default`);
      const placed: (AppRow & { region: string })[] = [
        { id: 'p-eng', ownerId: 'eng', region: 'eu' },
        { id: 'p-none', ownerId: null, region: 'eu' },
        { id: 'p-bob', ownerId: 'bob', region: 'us' },
        { id: 'p-later', ownerId: 'later', region: 'us' },
        { id: 'p-old', ownerId: 'old', region: 'asia' },
      ];
      const insert = (region: string) =>
        db.query(sql`insert into public.pdocs (id, owner_id, region)
                     select id, owner_id, ${region} from unnest(${placed.filter((r) => r.region === region).map((r) => r.id)}::text[],
                                                                 ${placed.filter((r) => r.region === region).map((r) => r.ownerId)}::text[]) as x(id, owner_id)`);
      await insert('eu');
      await insert('us');
      await db.query(sql`grant select on all tables in schema public to ${sql.ident(app.name)}`);
      await enableRowLevelSecurity(db, 'public.pdocs', 'id', 'owner_id');
      const now = new Date();
      const seen = (user: string, table: string) => asApp(user, (tx) => idsOf(tx, sql`select id from ${sql.ident('public', table)}`));
      const allowed = (user: string, region?: string) =>
        sortIds(placed.filter((r) => (region === undefined || r.region === region) && expectedRowAccess(graph, new Set(['root']), user, { id: NOT_A_NODE, ownerId: r.ownerId }, 1, now)).map((r) => r.id));
      const unprotected = async () => db.query(sql`select unprotected::text, under::text from permgraph._rls_unprotected() where under = 'public.pdocs'::regclass`);
      for (const user of ['ann', 'bob', 'root']) {
        expect(await seen(user, 'pdocs_eu'), user).toEqual(allowed(user, 'eu'));
        expect(await seen(user, 'pdocs_us'), user).toEqual(allowed(user, 'us'));
        expect(await seen(user, 'pdocs_us_rest'), user).toEqual(allowed(user, 'us'));
      }
      expect(await unprotected()).toEqual([]);

      // a partition attached afterwards is open until enable_rls runs again, and the catalog check names it
      await db.query(sql`create table public.pdocs_asia partition of public.pdocs for values in ('asia')`);
      await db.query(sql`grant select on public.pdocs_asia to ${sql.ident(app.name)}`);
      await insert('asia');
      expect(await unprotected()).toEqual([{ unprotected: 'public.pdocs_asia', under: 'public.pdocs' }]);
      expect(await seen('ann', 'pdocs_asia')).toEqual(['p-old']);
      await enableRowLevelSecurity(db, 'public.pdocs', 'id', 'owner_id');
      expect(await unprotected()).toEqual([]);
      expect(await seen('ann', 'pdocs_asia')).toEqual(allowed('ann', 'asia'));
      expect(await seen('ann', 'pdocs')).toEqual(allowed('ann'));

      // inheritance: a child reads its rows past its parent's policies the same way
      await db.query(sql`create table public.docs_archive () inherits (public.docs)`);
      await db.query(sql`grant select on public.docs_archive to ${sql.ident(app.name)}`);
      await db.query(sql`insert into public.docs_archive (id, owner_id) values ('a-eng', 'eng'), ('a-bob', 'bob')`);
      try {
        expect(await db.query(sql`select unprotected::text, under::text from permgraph._rls_unprotected() where under = 'public.docs'::regclass`)).toEqual([
          { unprotected: 'public.docs_archive', under: 'public.docs' },
        ]);
        await enableRowLevelSecurity(db, 'public.docs', 'id', 'owner_id');
        expect(await seen('ann', 'docs_archive')).toEqual(['a-eng']);
        expect(await seen('bob', 'docs_archive')).toEqual(['a-bob']);
      } finally {
        await db.query(sql`drop table public.docs_archive`);
      }

      // disable_rls takes them off every table it put them on
      await disableRowLevelSecurity(db, 'public.pdocs');
      expect(await db.query(sql`select count(*)::int as n from pg_policies where tablename like 'pdocs%'`)).toEqual([{ n: 0 }]);
      expect(await seen('ann', 'pdocs_eu')).toEqual(['p-eng', 'p-none']);
      await db.query(sql`drop table public.pdocs`);
    });

    it('with matchRowId, non-text ids are compared as text (a bigint id registered as node "42")', async () => {
      await db.query(sql`insert into permgraph.nodes (id, kind) values ('42', 'object')`);
      await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('bob', '42', 1)`);
      await refresh(db);
      await db.query(sql`create table public.tickets (num bigint primary key, project varchar(20) collate "POSIX")`);
      await db.query(sql`insert into public.tickets values (41, 'eng'), (42, null), (43, null)`);
      await db.query(sql`grant select on public.tickets to ${sql.ident(app.name)}`);
      await enableRowLevelSecurity(db, 'public.tickets', 'num', 'project', { matchRowId: true });
      const seen = async (user: string) =>
        asApp(user, async (tx) => (await tx.query(sql`select num from public.tickets order by num`)).map((r: { num: number }) => r.num));
      expect(await seen('bob')).toEqual([42]);
      expect(await seen('ann')).toEqual([41]);
      expect(await seen('root')).toEqual([41, 42, 43]);
      await enableRowLevelSecurity(db, 'public.tickets', 'num', 'project');
      expect(await seen('bob')).toEqual([]);
    });

    it('an owner column may be omitted (null) only with matchRowId: direct grants only', async () => {
      await db.query(sql`create table public.notes (id text primary key)`);
      await db.query(sql`insert into public.notes values ('d1'), ('r-eng')`);
      await db.query(sql`grant select on public.notes to ${sql.ident(app.name)}`);
      await expect(enableRowLevelSecurity(db, 'public.notes', 'id', null)).rejects.toThrow(
        /^enable_rls on public\.notes without an owner column would let only superusers through: name the owner column, or match rows by their own id \(p_match_row_id => true\)$/,
      );
      expect(await db.query(sql`select count(*)::int as n from pg_policies where tablename = 'notes'`)).toEqual([{ n: 0 }]);
      await enableRowLevelSecurity(db, 'public.notes', 'id', null, { matchRowId: true });
      expect(await asApp('bob', (tx) => idsOf(tx, sql`select id from public.notes`))).toEqual(['d1']);
      expect(await asApp('ann', (tx) => idsOf(tx, sql`select id from public.notes`))).toEqual([]);
    });

    it('permgraph\'s own tables are refused (their policies would read them: every read would recurse)', async () => {
      for (const table of ['permgraph.nodes', 'permgraph.permissions', 'permgraph.grants']) {
        await expect(enableRowLevelSecurity(db, table, 'id', null, { matchRowId: true })).rejects.toThrow(
          new RegExp(`^${table.replace('.', '\\.')} is one of permgraph's own tables: the policies read them, so row-level security on them would make every read recurse; enable_rls is for application tables$`),
        );
      }
      await expect(db.query(sql`select permgraph.enable_rls('permgraph.nodes', 'id', 'owner_id')`)).rejects.toThrow(/permgraph\.nodes is one of permgraph's own tables/);
      await expect(disableRowLevelSecurity(db, 'permgraph.nodes')).rejects.toThrow(/permgraph\.nodes is one of permgraph's own tables/);
      expect(await db.query(sql`select count(*)::int as n from pg_policies where schemaname = 'permgraph'`)).toEqual([{ n: 0 }]);
      expect(await db.query(sql`select count(*)::int as n from pg_class where relnamespace = 'permgraph'::regnamespace and relrowsecurity`)).toEqual([{ n: 0 }]);
      // reads of permgraph's tables and of the app table still work
      expect((await observe('ann', [])).selected).toEqual(['r-eng', 'r-later']);
    });

    it('bad input: unknown or unqualified table, unknown column, a view, reserved names; nothing is installed', async () => {
      await expect(enableRowLevelSecurity(db, 'public.no_such_table', 'id', 'owner_id')).rejects.toThrow(/^table "public\.no_such_table" does not exist$/);
      await expect(enableRowLevelSecurity(db, 'docs', 'id', 'owner_id')).rejects.toThrow(
        /^table "docs" not found: give it with its schema \(e\.g\. "public\.docs"\); permgraph's connections search no schema but pg_catalog$/,
      );
      await expect(enableRowLevelSecurity(db, 'public..docs', 'id', 'owner_id')).rejects.toThrow(/^"public\.\.docs" is not a table name$/);
      await expect(enableRowLevelSecurity(db, 'public.docs', 'id', 'owner')).rejects.toThrow(/^table public\.docs has no column "owner"$/);
      await expect(enableRowLevelSecurity(db, 'public.docs', 'ident', 'owner_id')).rejects.toBeInstanceOf(InvalidInputError);
      await db.query(sql`create view public.docs_view as select * from public.docs`);
      await expect(enableRowLevelSecurity(db, 'public.docs_view', 'id', 'owner_id')).rejects.toThrow(/^public\.docs_view is not a table; row-level security applies to tables only$/);
      await db.query(sql`create table public.permgraph_things (id text, owner_id text)`);
      await expect(enableRowLevelSecurity(db, 'public.permgraph_things', 'id', 'owner_id')).rejects.toThrow(/names starting with permgraph_ are reserved/);
      await expect(db.query(sql`select permgraph.enable_rls('public.docs', null, 'owner_id')`)).rejects.toThrow('permgraph: enable_rls needs a table and an id column');
      await expect(db.query(sql`select permgraph.enable_rls('public.docs', 'id', 'owner_id', null)`)).rejects.toThrow('permgraph: enable_rls: p_match_row_id must be true or false, not null');
      expect(await db.query(sql`select count(*)::int as n from pg_policies where tablename in ('docs_view', 'permgraph_things')`)).toEqual([{ n: 0 }]);
      // the failed re-installs above left docs' policies as they were
      expect((await observe('ann', [])).selected).toEqual(['r-eng', 'r-later']);
    });
  });
});
