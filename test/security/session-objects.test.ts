// A worker's own session objects must never run with the engine's rights.
// apply_changes() is SECURITY DEFINER: it runs as the schema's owner, in the
// caller's session. Anything of that session it reuses by name, the caller
// could have made first: a temporary table with a trigger (fired as the
// owner when the engine writes to it) or a prepared statement (executed as
// the owner). A worker login tries both; neither may run its code as the
// owner, and a batch afterwards still leaves the table equal to the model.
import { describe, expect, it } from 'vitest';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { computePermissions, type RefGraph } from '../reference/model.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { loadGraph, readPermissions } from '../helpers/graph.ts';
import { createLogin } from '../helpers/logins.ts';
import { failureOf } from '../helpers/failure.ts';

const graph: RefGraph = {
  nodes: [u('alice'), u('bob'), u('carol'), g('eng'), g('ops'), g('roadmap', 'eng'), o('doc', 'eng'), o('runbook', 'ops')],
  grants: [grant('alice', 2, 'eng'), grant('bob', 1, 'eng'), grant('carol', 3, 'ops')],
};

/**
 * One batch on this session, as the worker runs it. Small batches take the
 * one-statement path, which uses no work table; localPairs 0 makes them
 * take the ordinary one, whose work tables are what is tried here.
 */
async function applyOn(session: Queryable, localPairs: number | null = null): Promise<void> {
  await session.query(sql`begin isolation level repeatable read`);
  try {
    await session.query(sql`select permgraph.apply_changes(p_local_pairs => ${localPairs}::bigint)`);
    await session.query(sql`commit`);
  } catch (error) {
    await session.query(sql`rollback`);
    throw error;
  }
}

describe('session objects of the caller never run as the owner', async () => {
  const { db: owner, url } = await createTestDatabase();
  await loadGraph(owner, graph);
  await owner.query(sql`select permgraph.refresh()`);
  // A sequence, not a table: nextval is not undone by a rollback, so a planted
  // function that ran inside a batch which then failed is still seen.
  await owner.query(sql`create sequence public.planted_runs; grant usage on sequence public.planted_runs to public`);
  const writer = await createLogin(owner, url, 'writer', 'permgraph_writer');
  const worker = await createLogin(owner, url, 'worker', 'permgraph_worker');

  /** How many times planted code ran (as anyone). */
  async function plantedRuns(): Promise<number> {
    const [{ runs }] = await owner.query(sql`select case when is_called then last_value else 0 end::int as runs from public.planted_runs`);
    return runs;
  }

  let grants = [...graph.grants];
  async function grantAs(tailId: string, level: 1 | 2 | 3, headId: string): Promise<void> {
    await writer.db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values (${tailId}, ${headId}, ${level})`);
    grants.push(grant(tailId, level, headId));
  }
  async function revokeAs(tailId: string, headId: string): Promise<void> {
    await writer.db.query(sql`delete from permgraph.grants where tail_id = ${tailId} and head_id = ${headId}`);
    grants = grants.filter((x) => !(x.tailId === tailId && x.headId === headId));
  }
  async function expectModel(): Promise<void> {
    expect(await readPermissions(owner)).toEqual(computePermissions({ nodes: graph.nodes, grants }));
  }

  it('a temporary table named like the engine\'s work table, with a trigger, is refused', async () => {
    await worker.db.task(async (session) => {
      await session.query(sql`
        create temp table permgraph_region (user_id text collate "C", target_id text collate "C");
        create unique index on pg_temp.permgraph_region (user_id, target_id);
        create function pg_temp.planted() returns trigger language plpgsql as $$
        begin
          perform nextval('public.planted_runs');
          return null;
        end $$;
        create trigger planted after insert or delete on pg_temp.permgraph_region
          for each statement execute function pg_temp.planted()`);
      // A batch that only adds uses no work table (050_region.sql, _write_additions): it
      // applies, and the planted table is never written.
      await grantAs('bob', 1, 'ops');
      await applyOn(session, 0);
      expect(await plantedRuns()).toBe(0);
      // A removal recomputes its region in the work tables: refused.
      await revokeAs('carol', 'ops');
      const error = await failureOf(applyOn(session, 0));
      expect(error.code).toBe('42501');
      expect(error.message).toMatch(/pg_temp\.permgraph_region/);
      expect(await plantedRuns()).toBe(0);
      // The one-statement path of small batches reads no table of the session: it applies.
      await applyOn(session);
      await expectModel();
      // Once the caller's own table is gone, the ordinary path runs and is right.
      await session.query(sql`drop table pg_temp.permgraph_region`);
      await revokeAs('bob', 'ops');
      await applyOn(session, 0);
    });
    expect(await plantedRuns()).toBe(0);
    await expectModel();
  });

  it('so is one named like the table where a refresh keeps the indexes it set aside', async () => {
    await owner.query(sql`truncate permgraph.permissions`); // the next refresh fills an empty table, indexes set aside
    await worker.db.task(async (session) => {
      await session.query(sql`
        create temp table permgraph_set_aside (purpose text, call integer, position bigint, statement text);
        create function pg_temp.planted_statement() returns trigger language plpgsql as $$
        begin
          perform nextval('public.planted_runs');
          new.statement := 'select 1';  -- an index never built again
          return new;
        end $$;
        create trigger planted before insert on pg_temp.permgraph_set_aside
          for each row execute function pg_temp.planted_statement()`);
      const error = await failureOf(session.query(sql`select permgraph.refresh()`));
      expect(error.code).toBe('42501');
      expect(error.message).toMatch(/pg_temp\.permgraph_set_aside/);
      await session.query(sql`drop table pg_temp.permgraph_set_aside`);
      await session.query(sql`select permgraph.refresh()`);
    });
    expect(await plantedRuns()).toBe(0);
    const indexes = await owner.query(sql`select indexname from pg_indexes where schemaname = 'permgraph' and tablename = 'permissions' order by 1`);
    expect(indexes.length).toBeGreaterThanOrEqual(2);
    await expectModel();
  });

  it('a prepared statement named like the engine\'s is never executed as the owner', async () => {
    // The name under which the engine used to prepare its incremental diff, and
    // whatever a batch leaves prepared in the session now.
    const [{ former }] = await owner.query(sql`
      select 'permgraph_write_diff_' || left(md5(permgraph._diff_statement('scoped')), 16) as former`);
    let batch: { mode?: string; inserted?: number; deleted?: number } = {};
    await worker.db.task(async (session) => {
      await grantAs('alice', 1, 'ops');
      await applyOn(session);
      const prepared = await session.query(sql`select name from pg_prepared_statements`);
      const names = [...new Set([former as string, ...prepared.map((p) => p.name as string)])];
      await session.query(sql`
        create function pg_temp.planted_count() returns bigint language plpgsql as $$
        begin
          perform nextval('public.planted_runs');
          return 0;
        end $$`);
      for (const name of names) {
        const [{ statement }] = await session.query(sql`
          select format('prepare %I(boolean) as select pg_temp.planted_count(), 0::bigint, 0::bigint', ${name}::text) as statement`);
        if (prepared.some((p) => p.name === name)) await session.query(sql`deallocate ${sql.ident(name)}`);
        await session.query(sql.__dangerous__rawValue(statement));
      }
      await revokeAs('bob', 'eng');
      await grantAs('carol', 1, 'eng');
      await session.query(sql`begin isolation level repeatable read`);
      [{ batch }] = await session.query(sql`select permgraph.apply_changes() as batch`);
      await session.query(sql`commit`);
    });
    expect(await plantedRuns()).toBe(0);
    // (the incremental diff ran, and wrote)
    expect(batch.mode).toBe('incremental');
    expect((batch.inserted ?? 0) + (batch.deleted ?? 0)).toBeGreaterThan(0);
    await expectModel();
  });
});
