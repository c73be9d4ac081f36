// Row-level security on an application table (permgraph.enable_rls in
// sql/functions/110_rls.sql), exercised through a NON-superuser database role:
// the role running the tests is a superuser and would bypass RLS, so every
// query under test runs after `set local role`. Outcomes are compared with
// the reference model.
import { randomBytes } from 'node:crypto';
import type { Transaction } from '@databases/pg';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { disableRowLevelSecurity, enableRowLevelSecurity, setSuperuser } from '../../src/app/rls.ts';
import { sql } from '../../src/db/pool.ts';
import { refresh } from '../../src/engine/apply.ts';
import { InvalidInputError } from '../../src/errors.ts';
import * as model from '../../src/reference/model.ts';
import type { Level, RefGraph } from '../../src/reference/model.ts';
import { u, g, o, grant } from '../helpers/builders.ts';
import { expectedRowAccess, type AppRow } from '../helpers/app-rows.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { FUTURE, PAST, graphArbitrary, loadGraph } from '../helpers/graph.ts';

/** Ends a transaction by rolling it back, keeping what the body computed. */
class Rollback extends Error {}

const sortIds = (ids: string[]) => [...ids].sort();

describe('row-level security through permgraph.enable_rls', async () => {
  const { db } = await createTestDatabase();
  // Roles are cluster-wide: a name of our own, dropped after the file.
  const appRole = `permgraph_app_${randomBytes(5).toString('hex')}`;

  beforeAll(async () => {
    await db.query(sql`create role ${sql.ident(appRole)} login nosuperuser nobypassrls`);
    await db.query(sql`grant usage on schema permgraph to ${sql.ident(appRole)}`);
    await db.query(sql`grant select on permgraph.nodes, permgraph.permissions, permgraph.trashed_groups to ${sql.ident(appRole)}`);
    await db.query(sql`create table docs (id text primary key, owner_id text, title text not null default '')`);
    await db.query(sql`grant select, insert, update, delete on docs to ${sql.ident(appRole)}`);
    await enableRowLevelSecurity(db, 'docs', 'id', 'owner_id');
  });
  afterAll(async () => {
    await db.query(sql`drop owned by ${sql.ident(appRole)}`);
    await db.query(sql`drop role ${sql.ident(appRole)}`);
  });

  /** Runs body as the app role with permgraph.user_id set (or unset), then rolls everything back. */
  async function asApp<T>(userId: string | null, body: (tx: Transaction) => Promise<T>): Promise<T> {
    let result: T | undefined;
    try {
      await db.tx(async (tx) => {
        await tx.query(sql`set local role ${sql.ident(appRole)}`);
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
    await db.query(sql`delete from docs`);
    if (rows.length === 0) return;
    await db.query(sql`insert into docs (id, owner_id) select * from unnest(${rows.map((r) => r.id)}::text[], ${rows.map((r) => r.ownerId)}::text[])`);
  }

  interface Observed {
    selected: string[];
    updated: string[];
    deleted: string[];
    inserted: (string | null)[];
  }

  /**
   * What the user can do, seen from outside the policies where it matters:
   * rows changed by UPDATE and removed by DELETE are read back as the table
   * owner (RLS off), not through the RETURNING of the filtered statement.
   */
  async function observe(userId: string | null, rows: AppRow[], insertOwners: (string | null)[]): Promise<Observed> {
    return asApp(userId, async (tx) => {
      const selected = sortIds((await tx.query(sql`select id from docs`)).map((r: { id: string }) => r.id));
      const updated = await probe(tx, async () => {
        await tx.query(sql`update docs set title = 'touched'`);
        await tx.query(sql`reset role`);
        return sortIds((await tx.query(sql`select id from docs where title = 'touched'`)).map((r: { id: string }) => r.id));
      });
      const deleted = await probe(tx, async () => {
        await tx.query(sql`delete from docs`);
        await tx.query(sql`reset role`);
        const left = new Set((await tx.query(sql`select id from docs`)).map((r: { id: string }) => r.id));
        return sortIds(rows.map((r) => r.id).filter((id) => !left.has(id)));
      });
      const inserted: (string | null)[] = [];
      for (const owner of insertOwners) {
        const outcome = await probe(tx, () => tx.query(sql`insert into docs (id, owner_id) values ('fresh-row', ${owner})`));
        if (outcome instanceof Error) expect(outcome.message).toMatch(/new row violates row-level security policy for table "docs"/);
        else inserted.push(owner);
      }
      if (updated instanceof Error || deleted instanceof Error) throw updated instanceof Error ? updated : deleted;
      return { selected, updated, deleted, inserted };
    });
  }

  function expected(graph: RefGraph, superusers: ReadonlySet<string>, userId: string, rows: AppRow[], insertOwners: (string | null)[]): Observed {
    const now = new Date();
    const allowed = (level: Level) => sortIds(rows.filter((r) => expectedRowAccess(graph, superusers, userId, r, level, now)).map((r) => r.id));
    return {
      selected: allowed(1),
      updated: allowed(2),
      deleted: allowed(3),
      // A new row: write on its owner (no direct grant can name an id that does not exist yet).
      inserted: insertOwners.filter((owner) => expectedRowAccess(graph, superusers, userId, { id: 'fresh-row', ownerId: owner }, 2, now)),
    };
  }

  it('random graphs, superusers and rows: SELECT, UPDATE, DELETE and INSERT do exactly what the model allows', async () => {
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
        // Registered rows keep their node's owner in their owner column, as an app keeps them in step.
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
          expect(await observe(userId, appRows, insertOwners), userId).toEqual(expected(graph, superusers, userId, appRows, insertOwners));
        }
      }),
      { numRuns: 15 },
    );
  });

  describe('fixed cases', () => {
    // ann writes eng; eng owns the trashed project old and doc d1 is ann's own via a direct grant.
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
    });

    it('ann sees what eng owns (not the trashed project), bob his own rows and his direct grant', async () => {
      const ann = await observe('ann', rows, ['eng', 'old', 'bob', null]);
      expect(ann).toEqual({ selected: ['r-eng', 'r-later'], updated: ['r-eng', 'r-later'], deleted: [], inserted: ['eng'] });
      const bob = await observe('bob', rows, ['eng', 'bob']);
      expect(bob).toEqual({ selected: ['d1', 'r-bob'], updated: ['r-bob'], deleted: ['r-bob'], inserted: ['bob'] });
    });

    it('a superuser sees and touches everything except trashed rows', async () => {
      expect(await observe('root', rows, ['eng', 'old', null])).toEqual({
        selected: ['d1', 'r-bob', 'r-eng', 'r-later', 'r-none'],
        updated: ['d1', 'r-bob', 'r-eng', 'r-later', 'r-none'],
        deleted: ['d1', 'r-bob', 'r-eng', 'r-later', 'r-none'],
        inserted: ['eng', null],
      });
    });

    it('no user set, an empty user or an unknown user: no rows at all', async () => {
      const nothing = { selected: [], updated: [], deleted: [], inserted: [] };
      expect(await observe(null, rows, ['eng'])).toEqual(nothing);
      expect(await observe('', rows, ['eng'])).toEqual(nothing);
      expect(await observe('nobody', rows, ['eng'])).toEqual(nothing);
    });

    it('`set permgraph.user_id` works like set_config', async () => {
      const seen = await asApp(null, async (tx) => {
        await tx.query(sql`set local permgraph.user_id = 'ann'`);
        return sortIds((await tx.query(sql`select id from docs`)).map((r: { id: string }) => r.id));
      });
      expect(seen).toEqual(['r-eng', 'r-later']);
    });

    it('an update may not move a row to an owner the user cannot write', async () => {
      const outcome = await asApp('ann', (tx) => probe(tx, () => tx.query(sql`update docs set owner_id = 'bob' where id = 'r-eng'`)));
      expect(outcome).toBeInstanceOf(Error);
      expect((outcome as Error).message).toMatch(/new row violates row-level security policy/);
    });

    it('enable_rls is idempotent; disable_rls removes the policies and keeps others', async () => {
      await enableRowLevelSecurity(db, 'docs', 'id', 'owner_id');
      await enableRowLevelSecurity(db, 'docs', 'id', 'owner_id');
      const policies = async () => (await db.query(sql`select policyname from pg_policies where tablename = 'docs' order by 1`)).map((r: { policyname: string }) => r.policyname);
      expect(await policies()).toEqual(['permgraph_delete', 'permgraph_insert', 'permgraph_select', 'permgraph_update']);

      await disableRowLevelSecurity(db, 'docs');
      expect(await policies()).toEqual([]);
      expect((await observe('nobody', rows, [])).selected).toHaveLength(rows.length); // RLS off: every row
      await db.query(sql`create policy app_own on docs for select using (title = 'public')`);
      await enableRowLevelSecurity(db, 'docs', 'id', 'owner_id');
      await disableRowLevelSecurity(db, 'docs');
      expect(await policies()).toEqual(['app_own']);
      expect((await db.query(sql`select relrowsecurity from pg_class where oid = 'docs'::regclass`))[0].relrowsecurity).toBe(true);
      await db.query(sql`drop policy app_own on docs`);
      await enableRowLevelSecurity(db, 'docs', 'id', 'owner_id');
      expect((await observe('ann', rows, [])).selected).toEqual(['r-eng', 'r-later']);
    });

    it('non-text ids and owners are compared as text (a bigint id registered as node "42")', async () => {
      await db.query(sql`insert into permgraph.nodes (id, kind) values ('42', 'object')`);
      await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('bob', '42', 1)`);
      await refresh(db);
      await db.query(sql`create table tickets (num bigint primary key, project varchar(20) collate "POSIX")`);
      await db.query(sql`insert into tickets values (41, 'eng'), (42, null), (43, null)`);
      await db.query(sql`grant select on tickets to ${sql.ident(appRole)}`);
      await enableRowLevelSecurity(db, 'tickets', 'num', 'project');
      const seen = async (user: string) =>
        asApp(user, async (tx) => (await tx.query(sql`select num from tickets order by num`)).map((r: { num: number }) => r.num));
      expect(await seen('bob')).toEqual([42]);
      expect(await seen('ann')).toEqual([41]);
      expect(await seen('root')).toEqual([41, 42, 43]);
    });

    it('an owner column may be omitted (null): direct grants only', async () => {
      await db.query(sql`create table notes (id text primary key)`);
      await db.query(sql`insert into notes values ('d1'), ('r-eng')`);
      await db.query(sql`grant select on notes to ${sql.ident(appRole)}`);
      await enableRowLevelSecurity(db, 'notes', 'id', null);
      expect(await asApp('bob', async (tx) => (await tx.query(sql`select id from notes`)).map((r: { id: string }) => r.id))).toEqual(['d1']);
      expect(await asApp('ann', async (tx) => (await tx.query(sql`select id from notes`)).map((r: { id: string }) => r.id))).toEqual([]);
    });

    it('bad input: unknown table or column, a view, reserved names; nothing is installed', async () => {
      await expect(enableRowLevelSecurity(db, 'no_such_table', 'id', 'owner_id')).rejects.toThrow('table "no_such_table" does not exist');
      await expect(enableRowLevelSecurity(db, 'docs', 'id', 'owner')).rejects.toThrow(/^table docs has no column "owner"$/);
      await expect(enableRowLevelSecurity(db, 'docs', 'ident', 'owner_id')).rejects.toBeInstanceOf(InvalidInputError);
      await db.query(sql`create view docs_view as select * from docs`);
      await expect(enableRowLevelSecurity(db, 'docs_view', 'id', 'owner_id')).rejects.toThrow(/^docs_view is not a table; row-level security applies to tables only$/);
      await db.query(sql`create table permgraph_things (id text)`);
      await expect(enableRowLevelSecurity(db, 'permgraph_things', 'id', null)).rejects.toThrow(/names starting with permgraph_ are reserved/);
      await expect(db.query(sql`select permgraph.enable_rls('docs', null, 'owner_id')`)).rejects.toThrow('permgraph: enable_rls needs a table and an id column');
      expect(await db.query(sql`select count(*)::int as n from pg_policies where tablename in ('docs_view', 'permgraph_things')`)).toEqual([{ n: 0 }]);
      // the failed re-installs above left docs' policies as they were
      expect((await observe('ann', rows, [])).selected).toEqual(['r-eng', 'r-later']);
    });
  });
});
