// permgraph import's load locks: by default nodes and grants are locked
// against writers (SHARE ROW EXCLUSIVE) and the per-statement checks skip
// their FOR KEY SHARE locks; with `exclusive` the foreign keys into nodes
// are dropped for the load and come back exactly as they were, validated,
// whether the import commits or fails. Both locks are taken before
// validating, so the load, whose per-statement integrity triggers are off,
// writes what validation checked against the graph as it stays.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { SQLQuery } from '@databases/pg';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { runDoctor } from '../../src/app/doctor.ts';
import { importGraph, ImportRejectedError } from '../../src/app/import/index.ts';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { waitForImportBlocked, waitUntil } from '../helpers/cli.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { loadGraph, readGraph, readPermissions } from '../helpers/graph.ts';
import * as model from '../reference/model.ts';
import type { RefGraph } from '../reference/model.ts';

const scratch = await mkdtemp(path.join(tmpdir(), 'permgraph-import-locks-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));
let counter = 0;

async function writeText(name: string, text: string): Promise<string> {
  const file = path.join(scratch, `${counter++}-${name}`);
  await writeFile(file, text);
  return file;
}

/** Every constraint of nodes and grants as the catalog has it (names, definitions, flags), in one order. */
async function constraints(db: Queryable) {
  return db.query(sql`
    select c.conrelid::regclass::text as rel, c.conname as name, pg_get_constraintdef(c.oid) as def, c.contype as type,
           c.condeferrable as deferrable, c.condeferred as deferred, c.convalidated as validated, c.confdeltype as on_delete,
           c.confupdtype as on_update, c.conislocal as local
    from pg_constraint c
    where c.conrelid in ('permgraph.nodes'::regclass, 'permgraph.grants'::regclass)
    order by 1, 2`);
}

describe('permgraph import: load locks and foreign keys', async () => {
  const { db } = await createTestDatabase();
  const graph: RefGraph = {
    nodes: [u('ann'), u('bob'), g('eng', 'ann'), o('doc', 'eng')],
    grants: [grant('bob', 2, 'eng'), grant('ann', 1, 'doc')],
  };
  const nodesCsv = 'id,kind,owner_id\ndoc,object,eng\neng,group,ann\nann,user,\nbob,user,\n';
  const grantsCsv = 'tail_id,head_id,level\nbob,eng,write\nann,doc,read\n';

  it('an exclusive import restores the foreign keys exactly, after a load, a dry run and a failed load', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const before = await constraints(db);
    expect(before.filter((c) => c.type === 'f').map((c) => `${c.name}: ${c.def}`)).toEqual([
      'grants_head_exists: FOREIGN KEY (head_id) REFERENCES permgraph.nodes(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED',
      'grants_tail_exists: FOREIGN KEY (tail_id) REFERENCES permgraph.nodes(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED',
      'nodes_owner_exists: FOREIGN KEY (owner_id) REFERENCES permgraph.nodes(id) DEFERRABLE INITIALLY DEFERRED',
    ]);
    const files = { nodes: { file: await writeText('nodes.csv', nodesCsv) }, grants: { file: await writeText('grants.csv', grantsCsv) } };

    const dry = await importGraph(db, { ...files, exclusive: true, dryRun: true });
    expect(dry).toMatchObject({ loaded: false, invalid: 0, nodes: { inserted: 4 }, grants: { inserted: 2 } });
    expect(await constraints(db)).toEqual(before);

    // A load that fails after the foreign keys were dropped (a trigger refuses one grant): all of it rolls back.
    await db.query(sql`
      create function public.refuse_doc() returns trigger language plpgsql as $$
      begin raise exception 'refused by test' using errcode = 'P0001'; end $$;
      create trigger refuse_doc before insert on permgraph.grants for each row when (new.head_id = 'doc') execute function public.refuse_doc()`);
    await expect(importGraph(db, { ...files, name: 'failing', exclusive: true })).rejects.toThrow('refused by test');
    await db.query(sql`drop trigger refuse_doc on permgraph.grants; drop function public.refuse_doc()`);
    expect(await constraints(db)).toEqual(before);
    const [{ nodes }] = await db.query(sql`select count(*)::int as nodes from permgraph.nodes`);
    expect(nodes).toBe(0);

    const summary = await importGraph(db, { ...files, name: 'exclusive', exclusive: true });
    expect(summary).toMatchObject({ loaded: true, invalid: 0 });
    expect(await constraints(db)).toEqual(before);
    expect(await readPermissions(db)).toEqual(model.computePermissions(graph));
    // The restored foreign keys work: deleting a node cascades to its grants, a dangling owner is refused at commit.
    await db.query(sql`delete from permgraph.grants where head_id = 'doc'`);
    await expect(db.query(sql`alter table permgraph.nodes disable trigger user; update permgraph.nodes set owner_id = 'ghost' where id = 'doc'`))
      .rejects.toThrow(/nodes_owner_exists/);
    await db.query(sql`alter table permgraph.nodes enable trigger user`);
  });

  it('restoring validates the foreign keys set-based: a row without its node fails the transaction', async () => {
    await loadGraph(db, graph);
    const before = await constraints(db);
    const error = await db
      .tx(async (tx) => {
        expect((await tx.query(sql`select permgraph._import_drop_foreign_keys() as n`))[0].n).toBe(3);
        expect((await constraints(tx)).filter((c) => c.type === 'f')).toEqual([]);
        // Past the triggers (as only the owner can): a grant whose tail does not exist.
        await tx.query(sql`alter table permgraph.grants disable trigger user`);
        await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('ghost', 'eng', 1)`);
        await tx.query(sql`select permgraph._rebuild_set_aside('import')`);
      })
      .catch((e: unknown) => e);
    expect(String(error)).toMatch(/violates foreign key constraint "grants_tail_exists"/);
    expect(await constraints(db)).toEqual(before);
  });

  it('the load checks skip FOR KEY SHARE only while this transaction holds a lock that keeps nodes from being deleted', async () => {
    await loadGraph(db, graph);
    // Whether this transaction locked a node row (its xmax: set by the FOR KEY SHARE of a check).
    const lockedBy = async (tx: Queryable, sqlText: ReturnType<typeof sql>) => {
      await tx.query(sqlText);
      await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('ann', 'eng', 1, 'probe')`);
      await tx.query(sql`insert into permgraph.nodes (id, kind, owner_id) values ('new-doc', 'object', 'bob')`);
      const [row] = await tx.query(sql`
        with me as (select (pg_current_xact_id()::text::numeric % 4294967296)::text as xid)
        select (select xmax::text = me.xid from permgraph.nodes where id = 'eng') as grant_end,
               (select xmax::text = me.xid from permgraph.nodes where id = 'bob') as owner,
               permgraph._nodes_locked_against_deletes() as skipped
        from me`);
      return row;
    };
    const rollback = new Error('rollback');
    const run = (setup: ReturnType<typeof sql>) =>
      db.tx(async (tx) => {
        const row = await lockedBy(tx, setup);
        throw Object.assign(rollback, { row });
      }).catch((e: { row?: unknown }) => e.row as { grant_end: boolean; owner: boolean; skipped: boolean });
    // The capture of inserted rows locks the nodes it reads in any case
    // (_captured_ends); the load turns it off and writes its edges itself. Off
    // here too, committed (turned off inside a case, its lock would count).
    const captures = (verb: SQLQuery) =>
      db.query(sql`alter table permgraph.grants ${verb} trigger grants_capture_inserted; alter table permgraph.nodes ${verb} trigger nodes_capture_inserted`);
    await captures(sql`disable`);
    onTestFinished(async () => {
      await captures(sql`enable`);
    });
    // The setting alone (without the lock) changes nothing: the ends are locked.
    const settingOnly = await run(sql`select set_config('permgraph.nodes_locked', 'on', true)`);
    expect(settingOnly).toEqual({ grant_end: true, owner: true, skipped: false });
    // The lock alone: nothing tells the checks to look for it; they lock as always.
    const lockOnly = await run(sql`lock table permgraph.nodes, permgraph.grants in share row exclusive mode`);
    expect(lockOnly).toEqual({ grant_end: true, owner: true, skipped: false });
    // Both, as the import's load: no row lock is taken.
    const both = await run(sql`lock table permgraph.nodes, permgraph.grants in share row exclusive mode; select set_config('permgraph.nodes_locked', 'on', true)`);
    expect(both).toEqual({ grant_end: false, owner: false, skipped: true });
    // A weaker lock (ROW EXCLUSIVE lets others delete) does not count.
    const weak = await run(sql`lock table permgraph.nodes in row exclusive mode; select set_config('permgraph.nodes_locked', 'on', true)`);
    expect(weak).toEqual({ grant_end: true, owner: true, skipped: false });
  });

  it('a default import lets readers read during its load; an exclusive one makes them wait', async () => {
    for (const exclusive of [false, true]) {
      await loadGraph(db, graph);
      const files = { nodes: { file: await writeText('nodes.csv', nodesCsv) }, grants: { file: await writeText('grants.csv', grantsCsv.replace('write', 'manage')) } };
      // The import's refresh waits on a lock held here; meanwhile another connection tries to read nodes.
      const readerBlocked = await db.task(async (holder) => {
        await holder.query(sql`begin`);
        await holder.query(sql`lock table permgraph.permissions in exclusive mode`);
        const running = importGraph(db, { ...files, name: `readers-${exclusive}`, exclusive });
        try {
          for (let i = 0; i < 400; i++) {
            const [row] = await db.query(sql`
              select count(*)::int as n from pg_stat_activity
              where datname = current_database() and wait_event_type = 'Lock' and query like '%permgraph.refresh()%' and pid <> pg_backend_pid()`);
            if (row.n > 0) break;
            await new Promise((r) => setTimeout(r, 25));
          }
          return await db.tx(async (reader) => {
            await reader.query(sql`set local lock_timeout = '300ms'`);
            return reader.query(sql`select count(*) from permgraph.nodes`).then(() => false, (e: unknown) => /lock timeout/.test(String(e)));
          });
        } finally {
          await holder.query(sql`commit`);
          await running;
        }
      });
      expect(readerBlocked).toBe(exclusive);
    }
  });

  /** The load's per-statement integrity triggers, each with whether it is on (pg_trigger.tgenabled 'O'). */
  async function statementChecks(q: Queryable) {
    return q.query(sql`
      select t.tgname as name, t.tgenabled = 'O' as enabled from pg_trigger t
      where t.tgrelid in ('permgraph.nodes'::regclass, 'permgraph.grants'::regclass) and t.tgname like '%validate_inserted'
         or t.tgrelid in ('permgraph.nodes'::regclass, 'permgraph.grants'::regclass) and t.tgname like '%validate_updated'
         or t.tgrelid in ('permgraph.nodes'::regclass, 'permgraph.grants'::regclass) and t.tgname like '%capture_inserted' -- the load writes its edges itself
      order by 1`);
  }

  /** The row checks of the foreign keys into nodes (PostgreSQL's internal triggers on nodes and grants), whether each is on. */
  async function referenceChecks(q: Queryable) {
    return q.query(sql`
      select c.conname as name, p.proname as check, t.tgenabled = 'O' as enabled
      from pg_trigger t join pg_constraint c on c.oid = t.tgconstraint join pg_proc p on p.oid = t.tgfoid
      where c.contype = 'f' and c.confrelid = 'permgraph.nodes'::regclass and t.tgrelid = c.conrelid
        and p.proname in ('RI_FKey_check_ins', 'RI_FKey_check_upd')
      order by 1, 2`);
  }

  it('the default load turns the foreign keys\' row checks off inside its own transaction (as a superuser only), and what it loads keeps them', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const on = await referenceChecks(db);
    expect(on.map((t) => `${t.name} ${t.check} ${t.enabled}`)).toEqual(
      ['grants_head_exists', 'grants_tail_exists', 'nodes_owner_exists'].flatMap((fk) => [`${fk} RI_FKey_check_ins true`, `${fk} RI_FKey_check_upd true`]),
    );
    // What the load's own statements see: a statement trigger of the test's records how many row checks are on.
    await db.query(sql`
      create table public.seen_checks (tbl text, enabled bigint);
      create function public.record_checks() returns trigger language plpgsql as $$
      begin
        insert into public.seen_checks
        select tg_table_name, count(*) filter (where t.tgenabled = 'O')
        from pg_trigger t join pg_constraint c on c.oid = t.tgconstraint
        where c.contype = 'f' and c.confrelid = 'permgraph.nodes'::regclass and t.tgrelid = c.conrelid
          and t.tgfoid in ('pg_catalog."RI_FKey_check_ins"'::regproc, 'pg_catalog."RI_FKey_check_upd"'::regproc);
        return null;
      end $$;
      create trigger record_checks after insert on permgraph.nodes for each statement execute function public.record_checks();
      create trigger record_checks after insert on permgraph.grants for each statement execute function public.record_checks()`);
    try {
      const files = { nodes: { file: await writeText('nodes.csv', nodesCsv) }, grants: { file: await writeText('grants.csv', grantsCsv) } };
      expect(await importGraph(db, { ...files, name: 'reference-checks' })).toMatchObject({ loaded: true, invalid: 0 });
      expect(await db.query(sql`select tbl, enabled from public.seen_checks order by tbl`)).toEqual([
        { tbl: 'grants', enabled: 0 },
        { tbl: 'nodes', enabled: 0 },
      ]);
    } finally {
      await db.query(sql`
        drop trigger record_checks on permgraph.nodes; drop trigger record_checks on permgraph.grants;
        drop function public.record_checks(); drop table public.seen_checks`);
    }
    expect(await referenceChecks(db)).toEqual(on);
    expect(await readPermissions(db)).toEqual(model.computePermissions(graph));
    // Every reference the load wrote holds: the foreign keys validate again from scratch.
    await db.query(sql`
      update pg_constraint set convalidated = false where conname in ('grants_head_exists', 'grants_tail_exists', 'nodes_owner_exists');
      alter table permgraph.grants validate constraint grants_head_exists;
      alter table permgraph.grants validate constraint grants_tail_exists;
      alter table permgraph.nodes validate constraint nodes_owner_exists`);
    // And after the import the foreign keys check rows again (with the engine's own statement check out of the way).
    await expect(
      db.tx(async (tx) => {
        await tx.query(sql`set constraints all immediate; alter table permgraph.nodes disable trigger nodes_validate_inserted`);
        await tx.query(sql`insert into permgraph.nodes (id, kind, owner_id) values ('stray', 'object', 'nobody')`);
      }),
    ).rejects.toThrow('nodes_owner_exists');
    // A role that is not a superuser may not turn internal triggers off: the load then keeps them on.
    await db.query(sql`do $$ begin if not exists (select 1 from pg_roles where rolname = 'import_not_superuser') then create role import_not_superuser; end if; end $$`);
    const kept = await db.tx(async (tx) => {
      await tx.query(sql`grant usage on schema permgraph to import_not_superuser; grant execute on function permgraph._import_reference_checks(boolean) to import_not_superuser`);
      await tx.query(sql`set local role import_not_superuser`);
      const [{ disabled }] = await tx.query(sql`select permgraph._import_reference_checks(false) as disabled`);
      await tx.query(sql`reset role`);
      return { disabled, checks: await referenceChecks(tx) };
    });
    expect(kept).toEqual({ disabled: false, checks: on });
  });

  it('a writer that commits while the import waits for its lock is validated against: the cycle it closes with the input is refused', async () => {
    for (const exclusive of [false, true]) {
      const stored: RefGraph = { nodes: [u('ann'), g('a', 'ann'), g('b', 'ann'), o('doc', 'b')], grants: [grant('ann', 1, 'a')] };
      await loadGraph(db, stored);
      // The input moves b under a; the writer, meanwhile, moves a under b: together, a cycle.
      const files = { nodes: { file: await writeText('nodes.csv', 'id,kind,owner_id\nb,group,a\n') } };
      const outcome = await db.task(async (writer) => {
        await writer.query(sql`begin`);
        await writer.query(sql`update permgraph.nodes set owner_id = 'b' where id = 'a'`);
        const running = importGraph(db, { ...files, name: `raced-${exclusive}`, exclusive }).catch((e: unknown) => e);
        await waitForImportBlocked(db);
        await writer.query(sql`commit`);
        return running;
      });
      expect(outcome).toBeInstanceOf(ImportRejectedError);
      const problems = (outcome as ImportRejectedError).summary.problems;
      expect(problems).toHaveLength(1);
      expect(problems[0]).toMatchObject({ table: 'nodes', line: 2 });
      expect(problems[0]!.problem).toMatch(/^ownership cycle: "[ab]" -> "[ab]" -> "[ab]"/);
      // Nothing of the input was written: the graph is the stored one with the writer's change (applied here: no worker runs).
      await db.query(sql`select permgraph.apply_changes()`);
      const after: RefGraph = { ...stored, nodes: [u('ann'), g('a', 'b'), g('b', 'ann'), o('doc', 'b')] };
      expect(await readPermissions(db)).toEqual(model.computePermissions(after));
      expect(await statementChecks(db)).toEqual(
        ['grants_capture_inserted', 'grants_validate_inserted', 'grants_validate_updated', 'nodes_capture_inserted', 'nodes_validate_inserted', 'nodes_validate_updated'].map((name) => ({
          name,
          enabled: true,
        })),
      );
    }
  });

  it('an import beside a writer that wrote a grant and then writes a node: the import waits, and both go through', async () => {
    for (const exclusive of [false, true]) {
      await loadGraph(db, graph);
      const files = { nodes: { file: await writeText('nodes.csv', nodesCsv) }, grants: { file: await writeText('grants.csv', grantsCsv.replace('write', 'manage')) } };
      const outcome = await db.task(async (writer) => {
        await writer.query(sql`begin`);
        await writer.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('bob', 'doc', 1, 'writer')`);
        const running = importGraph(db, { ...files, name: `beside-a-writer-${exclusive}`, exclusive }).then(
          () => 'imported',
          (e: unknown) => String(e),
        );
        await waitForImportBlocked(db);
        // (taking nodes and grants in one statement, the import held nodes here and waited for
        // grants: deadlock detected, in the import or in this writer)
        const wrote = await writer.query(sql`insert into permgraph.nodes (id, kind) values ('carol', 'user')`).then(
          () => 'written',
          (e: unknown) => String(e),
        );
        await writer.query(sql`${wrote === 'written' ? sql`commit` : sql`rollback`}`);
        return { wrote, imported: await running };
      });
      expect(outcome).toEqual({ wrote: 'written', imported: 'imported' });
      await db.query(sql`select permgraph.apply_changes()`);
      const after = await readGraph(db);
      expect(after.nodes.map((n) => n.id).sort()).toEqual(['ann', 'bob', 'carol', 'doc', 'eng']);
      expect(await readPermissions(db)).toEqual(model.computePermissions(after));
    }
  });

  it('the load turns its integrity triggers off only inside its own transaction, and only after validating in it', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const on = await statementChecks(db);
    expect(on.map((t) => t.name)).toEqual([
      'grants_capture_inserted', 'grants_validate_inserted', 'grants_validate_updated', 'nodes_capture_inserted', 'nodes_validate_inserted', 'nodes_validate_updated',
    ]);
    expect(on.map((t) => t.enabled)).toEqual([true, true, true, true, true, true]);
    const files = { nodes: { file: await writeText('nodes.csv', nodesCsv) }, grants: { file: await writeText('grants.csv', grantsCsv) } };
    for (const exclusive of [false, true]) {
      await loadGraph(db, { nodes: [], grants: [] });
      expect(await importGraph(db, { ...files, name: `dry-${exclusive}`, exclusive, dryRun: true })).toMatchObject({ invalid: 0 });
      expect(await statementChecks(db)).toEqual(on);
      await db.query(sql`
        create function public.refuse_doc() returns trigger language plpgsql as $$
        begin raise exception 'refused by test' using errcode = 'P0001'; end $$;
        create trigger refuse_doc before insert on permgraph.grants for each row when (new.head_id = 'doc') execute function public.refuse_doc()`);
      await expect(importGraph(db, { ...files, name: `failing-${exclusive}`, exclusive })).rejects.toThrow('refused by test');
      await db.query(sql`drop trigger refuse_doc on permgraph.grants; drop function public.refuse_doc()`);
      expect(await statementChecks(db)).toEqual(on);
      expect((await referenceChecks(db)).every((t) => t.enabled)).toBe(true);
      expect(await importGraph(db, { ...files, name: `loaded-${exclusive}`, exclusive })).toMatchObject({ loaded: true, invalid: 0 });
      expect(await statementChecks(db)).toEqual(on);
      expect(await readPermissions(db)).toEqual(model.computePermissions(graph));
      // After the import the triggers check again: an object cannot hold a grant.
      await expect(db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('doc', 'eng', 1)`)).rejects.toThrow(
        'grant tail "doc" is an object',
      );
      // And a node and a grant written after it get their edges from the capture triggers again.
      await db.query(sql`insert into permgraph.nodes (id, kind, owner_id) values (${`after-${exclusive}`}, 'group', 'ann')`);
      await db.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('bob', 'doc', 1, ${`after-${exclusive}`})`);
      expect(await db.query(sql`
        select tail_id, head_id, tail_kind, head_kind, level from permgraph.edges
        where (head_id = ${`after-${exclusive}`} and source = '') or (tail_id = 'bob' and head_id = 'doc' and source = ${`after-${exclusive}`})
        order by 1, 2`)).toEqual([
        { tail_id: 'ann', head_id: `after-${exclusive}`, tail_kind: 'user', head_kind: 'group', level: 3 },
        { tail_id: 'bob', head_id: 'doc', tail_kind: 'user', head_kind: 'object', level: 1 },
      ]);
    }
    // Without validating first, in the same transaction, the load refuses to run.
    await expect(db.tx((tx) => tx.query(sql`select permgraph._import_load('never', false, false, '{}'::jsonb)`))).rejects.toThrow(
      'permgraph: _import_load(never) must run after _import_validate, in the same transaction',
    );
  });

  /** Every index of nodes, grants and edges: name, definition, and its relation's oid (a new one once built again). */
  async function indexes(q: Queryable) {
    return q.query(sql`
      select c.relname as name, pg_get_indexdef(i.indexrelid) as def, i.indexrelid::bigint as oid, i.indisunique as unique
      from pg_index i join pg_class c on c.oid = i.indexrelid
      where i.indrelid in ('permgraph.nodes'::regclass, 'permgraph.grants'::regclass, 'permgraph.edges'::regclass)
      order by 1`);
  }
  const withoutOids = (list: { name: string; def: string }[]) => list.map(({ name, def }) => ({ name, def }));

  it('an exclusive import that writes many rows for what the tables hold builds their secondary indexes again after its load, as they were', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const before = await indexes(db);
    expect(before.filter((i) => !i.unique).map((i) => i.name)).toEqual([
      'edges_expiring_idx', 'edges_group_in_idx', 'edges_head_idx', 'grants_head_idx', 'nodes_owner_idx', 'nodes_superusers_idx', 'nodes_trash_at_idx',
    ]);
    const files = { nodes: { file: await writeText('nodes.csv', nodesCsv) }, grants: { file: await writeText('grants.csv', grantsCsv) } };
    // A dry run and a failed load roll the drop back: the very same indexes.
    await importGraph(db, { ...files, name: 'dry-indexes', exclusive: true, dryRun: true });
    expect(await indexes(db)).toEqual(before);
    await db.query(sql`
      create function public.refuse_doc() returns trigger language plpgsql as $$
      begin raise exception 'refused by test' using errcode = 'P0001'; end $$;
      create trigger refuse_doc before insert on permgraph.grants for each row when (new.head_id = 'doc') execute function public.refuse_doc()`);
    await expect(importGraph(db, { ...files, name: 'failing-indexes', exclusive: true })).rejects.toThrow('refused by test');
    await db.query(sql`drop trigger refuse_doc on permgraph.grants; drop function public.refuse_doc()`);
    expect(await indexes(db)).toEqual(before);

    // Into empty tables: every secondary index is built again (a new relation), with its definition; the unique ones stay.
    expect(await importGraph(db, { ...files, name: 'large-indexes', exclusive: true })).toMatchObject({ loaded: true, invalid: 0 });
    const rebuilt = await indexes(db);
    expect(withoutOids(rebuilt)).toEqual(withoutOids(before));
    for (const [i, index] of rebuilt.entries()) expect(index.oid === before[i]!.oid).toBe(index.unique);
    expect(await readPermissions(db)).toEqual(model.computePermissions(graph));
    // The rebuilt indexes hold every row: each one, read alone, finds what the table holds.
    await db.tx(async (tx) => {
      await tx.query(sql`set local enable_seqscan = off; set local enable_bitmapscan = off`);
      const [{ n }] = await tx.query(sql`select count(*)::int as n from permgraph.grants where head_id >= ''`);
      expect(n).toBe(graph.grants.length);
      const [{ owned }] = await tx.query(sql`select count(*)::int as owned from permgraph.nodes where owner_id >= ''`);
      expect(owned).toBe(graph.nodes.filter((x) => x.ownerId !== null).length);
    });

    // A run small for what the tables hold keeps them (maintained row by row).
    const many: RefGraph = { nodes: [...graph.nodes, ...Array.from({ length: 40 }, (_, i) => o(`d${i}`, 'eng'))], grants: graph.grants };
    await loadGraph(db, many);
    await db.query(sql`analyze permgraph.nodes, permgraph.grants`);
    const kept = await indexes(db);
    const small = { grants: { file: await writeText('grants.csv', 'tail_id,head_id,level\nbob,d7,read\n') } };
    expect(await importGraph(db, { ...small, name: 'small-indexes', exclusive: true })).toMatchObject({ loaded: true, invalid: 0 });
    expect(await indexes(db)).toEqual(kept);
    expect(await readPermissions(db)).toEqual(model.computePermissions({ ...many, grants: [...many.grants, grant('bob', 1, 'd7')] }));
  });

  // The import's load pauses on an advisory lock the test holds (a statement
  // trigger of the test's own on nodes), with the import's table locks held.
  // fn is given `paused()`, which waits until the load is there, and
  // `resume()`, which lets it go on.
  const PAUSE_KEY = 7238999002;
  interface LoadPause {
    paused(): Promise<void>;
    resume(): Promise<void>;
  }
  async function withLoadPaused<T>(fn: (pause: LoadPause) => Promise<T>): Promise<T> {
    await db.query(sql`
      create function public.pause_load() returns trigger language plpgsql as $$
      begin perform pg_advisory_xact_lock(7238999002); return null; end $$; -- (PAUSE_KEY: a function body takes no parameter)
      create trigger pause_load after insert on permgraph.nodes for each statement execute function public.pause_load()`);
    try {
      return await db.task(async (holder) => {
        await holder.query(sql`select pg_advisory_lock(${PAUSE_KEY}::bigint)`);
        let held = true;
        const resume = async () => {
          if (!held) return;
          held = false;
          await holder.query(sql`select pg_advisory_unlock(${PAUSE_KEY}::bigint)`);
        };
        const paused = () => waitUntil(async () => (await lockWaits()).paused === 1, 'the import to pause in its load');
        try {
          return await fn({ paused, resume });
        } finally {
          await resume();
        }
      });
    } finally {
      await db.query(sql`drop trigger pause_load on permgraph.nodes; drop function public.pause_load()`);
    }
  }

  /** How many sessions of this database wait for a lock: on the pause (advisory) and on anything else. */
  async function lockWaits(): Promise<{ paused: number; others: number }> {
    const [row] = await db.query(sql`
      select count(*) filter (where wait_event = 'advisory')::int as paused,
             count(*) filter (where wait_event <> 'advisory')::int as others
      from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`);
    return row;
  }

  /**
   * A batch, as each caller runs it, without the library's retries (a
   * deadlock shows): plain SQL's apply_changes() under READ COMMITTED; the
   * library's and the worker's REPEATABLE READ batch, which locks the turn
   * before its snapshot (inApplierTurn); and the local path's one statement.
   */
  const BATCHES = {
    'read committed': sql`begin; select permgraph.apply_changes(); commit`,
    'repeatable read': sql`begin isolation level repeatable read; lock table permgraph.applier_turn in exclusive mode; select permgraph.apply_changes(); commit`,
    'local path': sql`select permgraph.apply_local_changes()`,
  };
  type BatchKind = keyof typeof BATCHES;

  function runBatch(kind: BatchKind): Promise<string> {
    return db.task((conn) =>
      conn.query(BATCHES[kind]).then(
        () => 'applied',
        async (e: unknown) => {
          await conn.query(sql`rollback`);
          return String(e);
        },
      ),
    );
  }

  it('an import whose refresh comes after a batch that waits for its tables: neither deadlocks (the import takes the applier\'s turn with its tables)', async () => {
    const outcomes: unknown[] = [];
    for (const exclusive of [false, true]) {
      for (const batch of Object.keys(BATCHES) as BatchKind[]) {
        await loadGraph(db, graph);
        // A change the batch has to apply, so that it reads the graph.
        await db.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('bob', 'doc', 1, 'pending')`);
        // (with a new node: the load inserts nodes, where it pauses)
        const files = { nodes: { file: await writeText('nodes.csv', `${nodesCsv}carol,user,\n`) }, grants: { file: await writeText('grants.csv', grantsCsv.replace('write', 'manage')) } };
        const outcome = await withLoadPaused(async ({ paused, resume }) => {
          const imported = importGraph(db, { ...files, name: `turn-${exclusive}-${batch}`, exclusive }).then(
            () => 'imported',
            (e: unknown) => String(e),
          );
          await paused();
          let settled = false;
          const applied = runBatch(batch).finally(() => (settled = true));
          // The batch waits: for the import's tables while it held the applier's
          // turn (and the import's refresh then waited for that turn: deadlock
          // detected), or for the turn itself, holding nothing. (Had the import
          // not taken the turn, a REPEATABLE READ batch would read past its
          // SHARE ROW EXCLUSIVE locks and end.)
          await waitUntil(async () => settled || (await lockWaits()).others === 1, 'the batch to wait for a lock the import holds, or end');
          await resume();
          return { imported: await imported, applied: await applied };
        });
        outcomes.push({ exclusive, batch, ...outcome });
        const after = await readGraph(db);
        expect(after.grants.filter((x) => x.source === 'pending').map((x) => `${x.tailId} ${x.level} ${x.headId}`)).toEqual(['bob 1 doc']);
        expect(await readPermissions(db)).toEqual(model.computePermissions(after));
      }
    }
    expect(outcomes).toEqual(
      [false, true].flatMap((exclusive) => Object.keys(BATCHES).map((batch) => ({ exclusive, batch, imported: 'imported', applied: 'applied' }))),
    );
  });

  it('doctor names an import that a batch has waited for over a second as holding a batch\'s lock', async () => {
    await loadGraph(db, graph);
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('bob', 'doc', 1, 'pending')`);
    const files = { nodes: { file: await writeText('nodes.csv', `${nodesCsv}carol,user,\n`) } };
    const seen = await withLoadPaused(async ({ paused, resume }) => {
      const imported = importGraph(db, { ...files, name: 'doctor-turn' });
      await paused();
      const [{ pid }] = await db.query(sql`select pid from pg_stat_activity where datname = current_database() and wait_event = 'advisory'`);
      const applied = runBatch('repeatable read');
      await waitUntil(async () => {
        const [{ waited }] = await db.query(sql`
          select coalesce(bool_or(waitstart < now() - interval '1.2 seconds'), false) as waited
          from pg_locks where not granted and relation = 'permgraph.applier_turn'::regclass`);
        return waited === true;
      }, 'the batch to wait over a second for the turn');
      const worker = (await runDoctor(db)).find((c) => c.name === 'worker')!;
      await resume();
      const outcome = { imported: await imported.then(() => 'imported'), applied: await applied };
      return { outcome, pid: Number(pid), worker };
    });
    expect(seen.outcome).toEqual({ imported: 'imported', applied: 'applied' });
    expect(seen.worker.status).toBe('warn');
    expect(seen.worker.message).toContain(`pid ${seen.pid} (`);
    expect(seen.worker.message).toContain("a batch's lock");
    expect(seen.worker.message).toContain('as an import does from its validation to its commit');
  });

  it('a dry run does not take the applier\'s turn: the worker\'s batches apply while it validates', async () => {
    await loadGraph(db, graph);
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('bob', 'doc', 1, 'pending')`);
    const files = { nodes: { file: await writeText('nodes.csv', `${nodesCsv}carol,user,\n`) } };
    await withLoadPaused(async ({ paused, resume }) => {
      const dry = importGraph(db, { ...files, name: 'dry-turn', dryRun: true });
      await paused();
      // (a batch that waited for a turn the dry run held would wait until it ended)
      const orWaiting = (batch: Promise<string>) =>
        Promise.race([batch, new Promise<string>((resolve) => setTimeout(() => resolve('still waiting after 20 s'), 20_000))]);
      expect(await orWaiting(runBatch('repeatable read'))).toBe('applied');
      expect(await orWaiting(runBatch('local path'))).toBe('applied');
      await resume();
      expect(await dry).toMatchObject({ loaded: false, invalid: 0 });
    });
    expect(await readPermissions(db)).toEqual(model.computePermissions(await readGraph(db)));
  });
});
