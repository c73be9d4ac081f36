// Writers never make the worker's batch fail, and unrelated writers never
// wait for each other (findings 5 and 6 of the security review), nor for
// a login that has no permgraph role (findings 7 and 8), through real login roles.
import { IsolationLevel } from '@databases/pg';
import { describe, expect, it } from 'vitest';
import { sql } from '../../src/db/pool.ts';
import { syncGrants } from '../../src/app/sync-grants.ts';
import { computePermissions } from '../reference/model.ts';
import type { RefGraph } from '../reference/model.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { loadGraph, readPermissions } from '../helpers/graph.ts';
import { createLogin } from '../helpers/logins.ts';
import { failureOf } from '../helpers/failure.ts';

const graph: RefGraph = {
  nodes: [u('alice'), u('bob'), u('carl'), g('eng'), g('ops'), g('roadmap', 'eng'), o('doc', 'eng')],
  grants: [grant('alice', 2, 'eng'), grant('bob', 1, 'eng'), grant('carl', 3, 'ops'), grant('ops', 1, 'roadmap')],
};

describe('writers and the worker', async () => {
  const { db: owner, url } = await createTestDatabase();
  await loadGraph(owner, graph);
  await owner.query(sql`select permgraph.refresh()`);
  const writer = await createLogin(owner, url, 'delwriter', 'permgraph_writer');
  const otherWriter = await createLogin(owner, url, 'otherwriter', 'permgraph_writer');
  const worker = await createLogin(owner, url, 'delworker', 'permgraph_worker');
  const reader = await createLogin(owner, url, 'delreader', 'permgraph_reader');
  const nobody = await createLogin(owner, url, 'delnobody');

  describe('finding 5: deleting nodes', () => {
    it('a delete committed during a repeatable-read batch does not make the batch fail', async () => {
      await writer.db.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('bob', 'eng', 3, 'boost')`);
      const batch = worker.db.tx(
        async (tx) => {
          // The batch's snapshot is taken before the delete commits ...
          await tx.query(sql`select count(*) from permgraph.changes`);
          await writer.db.query(sql`delete from permgraph.nodes where id = 'bob'`);
          // ... and it then writes rows of the deleted user (its new grant).
          const [{ result }] = await tx.query(sql`select permgraph.apply_changes() as result`);
          return result;
        },
        { isolationLevel: IsolationLevel.REPEATABLE_READ },
      );
      await expect(batch).resolves.toMatchObject({ mode: 'incremental' });
      // bob's rows, including those the batch just wrote, are unreadable.
      expect(await reader.db.query(sql`select * from permgraph.effective_permissions where user_id = 'bob'`)).toEqual([]);
      expect(await reader.db.query(sql`select permgraph.check('bob', 'roadmap', 1) as allowed`)).toEqual([{ allowed: false }]);
      await worker.db.query(sql`select permgraph.apply_changes()`);
      const expected = computePermissions({
        nodes: graph.nodes.filter((n) => n.id !== 'bob'),
        grants: graph.grants.filter((gr) => gr.tailId !== 'bob'),
      });
      expect(await readPermissions(owner)).toEqual(expected);
      expect(await owner.query(sql`select * from permgraph.deleted_nodes`)).toEqual([]);
    });

    it('a user re-created with a deleted user\'s id inherits nothing, before and after the worker runs', async () => {
      await writer.db.tx(async (tx) => {
        await tx.query(sql`delete from permgraph.nodes where id = 'alice'`);
      });
      await writer.db.query(sql`insert into permgraph.nodes (id, kind) values ('alice', 'user')`);
      // No batch has run: the old alice's rows are still stored, and unreadable.
      const [{ stored }] = await owner.query(sql`select count(*)::int as stored from permgraph.permissions where user_id = 'alice'`);
      expect(stored).toBeGreaterThan(1);
      for (const target of ['eng', 'roadmap', 'alice']) {
        expect(await reader.db.query(sql`select permgraph.check('alice', ${target}, 1) as allowed`)).toEqual([{ allowed: false }]);
      }
      expect(await reader.db.query(sql`select * from permgraph.list_targets('alice', 1, null, null, 10)`)).toEqual([]);
      await worker.db.query(sql`select permgraph.apply_changes()`);
      const expected = computePermissions({
        nodes: graph.nodes.filter((n) => n.id !== 'bob'),
        grants: graph.grants.filter((gr) => gr.tailId !== 'bob' && gr.tailId !== 'alice'),
      });
      expect(await readPermissions(owner)).toEqual(expected);
      expect(await reader.db.query(sql`select permgraph.check('alice', 'alice', 3) as allowed`)).toEqual([{ allowed: true }]);
    });

    it('continuous deletes while the worker applies: every batch succeeds and the table ends exact', async () => {
      const ids = Array.from({ length: 60 }, (_, i) => `temp${i}`);
      await writer.db.query(sql`insert into permgraph.nodes (id, kind) select unnest(${ids}::text[]), 'user'`);
      await writer.db.query(sql`insert into permgraph.grants (tail_id, head_id, level) select unnest(${ids}::text[]), 'eng', 1`);
      await worker.db.query(sql`select permgraph.apply_changes()`);
      let deleting = true;
      const deleter = (async () => {
        for (const id of ids) {
          await writer.db.query(sql`delete from permgraph.nodes where id = ${id}`);
          await otherWriter.db.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('carl', 'eng', 1, ${id})`);
        }
        deleting = false;
      })();
      let batches = 0;
      while (deleting) {
        await worker.db.tx((tx) => tx.query(sql`select permgraph.apply_changes()`), { isolationLevel: IsolationLevel.REPEATABLE_READ });
        batches++;
      }
      await deleter;
      await worker.db.query(sql`select permgraph.apply_changes()`);
      expect(batches).toBeGreaterThan(0);
      expect(await worker.db.query(sql`select * from permgraph.verify()`)).toEqual([]);
      await otherWriter.db.query(sql`delete from permgraph.grants where tail_id = 'carl' and head_id = 'eng'`);
      await worker.db.query(sql`select permgraph.apply_changes()`);
    });
  });

  describe('finding 6: owned inserts do not wait for each other', () => {
    it('objects and nodes with owners are inserted while another transaction holds an owned insert and an owner change', async () => {
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      let started!: () => void;
      const holding = new Promise<void>((resolve) => (started = resolve));
      const first = writer.db.tx(async (tx) => {
        await tx.query(sql`insert into permgraph.nodes (id, kind, owner_id) values ('plan1', 'object', 'eng'), ('team1', 'group', 'eng')`);
        await tx.query(sql`update permgraph.nodes set owner_id = 'carl' where id = 'ops'`);
        started();
        await held;
      });
      await holding;
      // Were these to wait for the first transaction, the lock timeout would fail them.
      await otherWriter.db.tx(async (tx) => {
        await tx.query(sql`set local lock_timeout = '5s'`);
        await tx.query(sql`insert into permgraph.nodes (id, kind, owner_id) values ('plan2', 'object', 'eng')`);
        await tx.query(sql`insert into permgraph.nodes (id, kind, owner_id) values ('team2', 'group', 'eng'), ('sub2', 'group', 'team2')`);
        await tx.query(sql`insert into permgraph.nodes (id, kind) values ('loner', 'group')`);
      });
      // A second owner change of a group is what must wait (it could close a cycle).
      const waiting = otherWriter.db.tx(async (tx) => {
        await tx.query(sql`set local lock_timeout = '200ms'`);
        await tx.query(sql`update permgraph.nodes set owner_id = 'eng' where id = 'loner'`);
      });
      await expect(waiting).rejects.toMatchObject({ code: '55P03' });
      release();
      await first;
      expect(await owner.query(sql`select id, owner_id from permgraph.nodes where id in ('plan1', 'plan2', 'team2', 'sub2') order by id`)).toEqual([
        { id: 'plan1', owner_id: 'eng' },
        { id: 'plan2', owner_id: 'eng' },
        { id: 'sub2', owner_id: 'team2' },
        { id: 'team2', owner_id: 'eng' },
      ]);
    });
  });
  describe('finding 7: no other login can hold the lock that owner changes wait for', () => {
    it('a login with no permgraph role holding the former advisory key, or trying the lock itself, stops no owner change', async () => {
      await owner.query(sql`insert into permgraph.nodes (id, kind) values ('moved', 'group')`);
      // (the key owner changes of users and groups serialized on: pg_advisory_lock is every login's)
      const formerKey = 7238001001;
      await nobody.db.task(async (session) => {
        await session.query(sql`select pg_catalog.pg_advisory_lock(${formerKey}::bigint)`);
        try {
          await writer.db.tx(async (tx) => {
            await tx.query(sql`set local lock_timeout = '2s'`);
            await tx.query(sql`update permgraph.nodes set owner_id = 'eng' where id = 'moved'`);
            // the change holds no advisory lock, which another login could have taken first
            const advisory = await tx.query(sql`
              select count(*)::int as n from pg_catalog.pg_locks where locktype = 'advisory' and pid = pg_catalog.pg_backend_pid()`);
            expect(advisory).toEqual([{ n: 0 }]);
          });
          // the lock they take now, nobody but the schema's owner can
          for (const login of [nobody, reader, writer]) {
            const refused = await failureOf(login.db.tx((tx) => tx.query(sql`lock table permgraph._ownership_change_lock in access share mode`)));
            expect(refused.code, login.name).toBe('42501');
          }
        } finally {
          await session.query(sql`select pg_catalog.pg_advisory_unlock(${formerKey}::bigint)`);
        }
      });
      expect(await owner.query(sql`select owner_id from permgraph.nodes where id = 'moved'`)).toEqual([{ owner_id: 'eng' }]);
      await writer.db.query(sql`delete from permgraph.nodes where id = 'moved'`);
      await worker.db.query(sql`select permgraph.apply_changes()`);
    });
  });

  describe('finding 8: no other login can hold the lock that syncs of a grant source wait for', () => {
    /** The pid of `login`'s session that waits for a lock, once it does (for 10 s at most). */
    async function waitingPid(login: string): Promise<number> {
      for (const deadline = Date.now() + 10_000; Date.now() < deadline;) {
        const [row] = await owner.query(sql`
          select pid from pg_catalog.pg_stat_activity where usename = ${login} and wait_event_type = 'Lock'`);
        if (row) return row.pid as number;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      throw new Error(`no session of ${login} waits for a lock`);
    }

    it('a login with no permgraph role holding the former advisory key stops no sync; two syncs of one source still take turns', async () => {
      // (the key syncGrants of the source 'ldap' serialized on: pg_advisory_lock is every login's)
      const [{ key }] = await owner.query(sql`select pg_catalog.hashtextextended('permgraph.sync_grants:ldap', 0) as key`);
      await nobody.db.task(async (session) => {
        await session.query(sql`select pg_catalog.pg_advisory_lock(${key}::bigint)`);
        try {
          await writer.db.task(async (conn) => {
            await conn.query(sql`set lock_timeout = '2s'`);
            const result = await syncGrants(conn, 'ldap', [{ tail: 'carl', head: 'roadmap', level: 1 }]);
            expect(result).toMatchObject({ inserted: 1 });
          });
        } finally {
          await session.query(sql`select pg_catalog.pg_advisory_unlock(${key}::bigint)`);
        }
      });
      // the lock they take now, nobody but a writer's call of the function (and the owner) can
      for (const login of [nobody, reader]) {
        const refused = await failureOf(login.db.query(sql`select permgraph._lock_grant_source('ldap')`));
        expect(refused.code, login.name).toBe('42501');
      }
      for (const login of [nobody, reader, writer]) {
        const refused = await failureOf(login.db.tx((tx) => tx.query(sql`select 1 from permgraph.grant_source_locks for update`)));
        expect(refused.code, login.name).toBe('42501');
      }
      // one sync of 'ldap' holds the source; a second waits for it, a sync of another source does not
      let released!: () => void;
      const holding = writer.db.tx(async (tx) => {
        await tx.query(sql`select permgraph._lock_grant_source('ldap')`);
        await new Promise<void>((resolve) => (released = resolve));
      });
      await new Promise((resolve) => setTimeout(resolve, 50));
      await syncGrants(otherWriter.db, 'hr', [{ tail: 'alice', head: 'ops', level: 1 }]);
      const second = syncGrants(otherWriter.db, 'ldap', []);
      await waitingPid(otherWriter.name);
      released();
      await holding;
      expect(await second).toMatchObject({ deleted: 1 });
      await syncGrants(otherWriter.db, 'hr', []);
      await worker.db.query(sql`select permgraph.apply_changes()`);
    });
  });
});
