// In a worker session, a pending queue of 24 changes or more that mixes
// removals with additions is applied in two batches, the removals first, or
// the additions when the last batch took removals, each part by the
// one-statement path when it has at most 64 changes
// (sql/functions/045_batch_split.sql); anywhere else apply_changes() takes
// the whole queue as one batch.
// Checked against the reference model: after the queue is drained the table
// equals a full recomputation, and between the two batches no row is above
// what the current graph gives; freshness tokens still mean "fully applied".
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { sql } from '../../src/db/pool.ts';
import { applyChanges, applyChangesOnSession, refresh, resetWorkerSession, useWorkerSession, type BatchResult } from '../../src/engine/apply.ts';
import { currentToken, isApplied } from '../../src/engine/freshness.ts';
import { verify } from '../../src/engine/verify.ts';
import * as model from '../reference/model.ts';
import type { Kind, Level, RefGraph } from '../reference/model.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { countPendingChanges, graphArbitrary, loadGraph, readPermissions, readTrashedGroups } from '../helpers/graph.ts';
import { GraphState, grantKey, mutationArbitrary, type Mutation } from '../helpers/mutations.ts';

/** More pending changes than this take the one-statement path whole (= _local_change_max_changes()). */
const LOCAL_MAX_CHANGES = 64;
/** The fewest pending changes a worker session splits (= _split_min_changes()). */
const SPLIT_MIN_CHANGES = 24;

describe('a large mixed queue is applied removals first', async () => {
  const { db } = await createTestDatabase();

  async function start(graph: RefGraph): Promise<GraphState> {
    await loadGraph(db, graph);
    await refresh(db);
    return new GraphState(graph);
  }

  async function expectTableMatches(state: GraphState, context: string): Promise<void> {
    const graph = state.snapshot();
    expect(await readPermissions(db), context).toEqual(model.computePermissions(graph));
    expect(await readTrashedGroups(db), context).toEqual(model.computeTrashedGroups(graph));
  }

  /** No stored row gives more than the model of the current graph does. */
  async function expectNoRowAbove(state: GraphState, context: string): Promise<void> {
    const expected = new Map(model.computePermissions(state.snapshot()).map((r) => [`${r.userId} ${r.targetId}`, r]));
    for (const row of await readPermissions(db)) {
      const want = expected.get(`${row.userId} ${row.targetId}`);
      expect(want, `${context}: ${row.userId} -> ${row.targetId} is stored, the graph gives nothing`).toBeDefined();
      expect(row.level, `${context}: ${row.userId} -> ${row.targetId}`).toBeLessThanOrEqual(want!.level);
    }
  }

  const pending = () => countPendingChanges(db);

  /** One batch as the worker applies it: its statement, on a connection made a worker session. */
  async function applyAsWorker(): Promise<BatchResult> {
    const result = await db.task(async (conn) => {
      await useWorkerSession(conn);
      try {
        return await applyChangesOnSession(conn);
      } finally {
        await resetWorkerSession(conn);
      }
    });
    // the result says whether it left a part of the queue pending
    expect(result.morePending).toBe((await pending()) > 0);
    return result;
  }

  /** Applies batches until nothing is pending; returns them. */
  async function drain(state: GraphState, context: string): Promise<BatchResult[]> {
    const batches: BatchResult[] = [];
    for (;;) {
      const result = await applyAsWorker();
      if (result.mode === 'none') return batches;
      batches.push(result);
      if ((await pending()) > 0) await expectNoRowAbove(state, `${context} (after batch ${batches.length})`);
      expect(batches.length, context).toBeLessThanOrEqual(2);
    }
  }

  // Grants and revocations, new users and objects; in one run of four also
  // any change (a queue with a node deletion or a trash change, which a
  // group's new owner is too, stays whole, as every other test's batches do).
  const churnOnly: fc.Arbitrary<Mutation> = fc.oneof(
    { weight: 6, arbitrary: fc.record({ type: fc.constant('grant' as const), tail: fc.nat(), head: fc.nat(), level: fc.constantFrom<Level>(1, 2, 3), source: fc.constantFrom('a', 'b') }) },
    { weight: 5, arbitrary: fc.record({ type: fc.constant('revoke' as const), pick: fc.nat() }) },
    { weight: 1, arbitrary: fc.record({ type: fc.constant('addNode' as const), kind: fc.constantFrom<Kind>('user', 'object'), owner: fc.option(fc.nat()), trash: fc.constant(null) }) },
  );
  const anyChange: fc.Arbitrary<Mutation> = fc.oneof({ weight: 10, arbitrary: churnOnly }, { weight: 1, arbitrary: mutationArbitrary });

  it('outside a worker session a large mixed queue is one batch: apply_changes() and applyChanges() apply every change they see', async () => {
    const objects = Array.from({ length: LOCAL_MAX_CHANGES + 6 }, (_, i) => o(`w${i}`));
    for (const apply of [
      async () => (await db.query(sql`select permgraph.apply_changes() as r`))[0].r as { mode: string; changes: number; more_pending: boolean },
      async () => { const b = await applyChanges(db); return { mode: b.mode, changes: b.changes, more_pending: b.morePending }; },
    ]) {
      const state = await start({ nodes: [u('erin'), u('finn'), g('crew'), o('memo'), ...objects], grants: [grant('erin', 2, 'crew'), grant('crew', 2, 'memo')] });
      await db.query(sql`delete from permgraph.grants where tail_id = 'erin' and head_id = 'crew'`);
      state.grants.delete(grantKey(grant('erin', 2, 'crew')));
      for (const x of objects) {
        await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('finn', ${x.id}, 1)`);
        const added = grant('finn', 1, x.id);
        state.grants.set(grantKey(added), added);
      }
      expect(await pending()).toBe(objects.length + 1);
      expect(await apply()).toMatchObject({ mode: 'incremental', changes: objects.length + 1, more_pending: false });
      expect(await pending()).toBe(0);
      await expectTableMatches(state, 'one batch');
    }
  });

  it.each(['removals', 'additions'])("a caller's own permgraph.batch_part = %s is ignored: applyChanges() takes the whole queue", async (part) => {
    const state = await start({ nodes: [u('gina'), u('hal'), g('ops'), o('log'), o('map')], grants: [grant('gina', 2, 'ops'), grant('ops', 2, 'log')] });
    await db.query(sql`delete from permgraph.grants where tail_id = 'gina' and head_id = 'ops'`);
    state.grants.delete(grantKey(grant('gina', 2, 'ops')));
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('hal', 'map', 1)`);
    state.grants.set(grantKey(grant('hal', 1, 'map')), grant('hal', 1, 'map'));
    const result = await db.task(async (conn) => {
      await conn.query(sql`select pg_catalog.set_config('permgraph.batch_part', ${part}, false)`);
      try {
        return await applyChanges(conn);
      } finally {
        await conn.query(sql`reset permgraph.batch_part`);
      }
    });
    expect(result).toMatchObject({ mode: 'incremental', local: true, changes: 2, morePending: false });
    expect(await pending()).toBe(0);
    await expectTableMatches(state, `session batch_part = ${part}`);
  });

  it('random queues of 24 to 120 changes, drained batch by batch, equal the model; a split batch takes exactly the removals', async () => {
    let split = 0;
    let localParts = 0;
    await fc.assert(
      fc.asyncProperty(
        graphArbitrary({ users: 8, groups: 10, objects: 5, grants: 30 }),
        fc.constantFrom(churnOnly, churnOnly, churnOnly, anyChange).chain((changes) => fc.array(changes, { minLength: SPLIT_MIN_CHANGES, maxLength: 120 })),
        async (graph, steps) => {
          const state = await start(graph);
          const log: string[] = [];
          for (const step of steps) log.push(await state.apply(db, step));
          const queued: { removals: number; all: number }[] = await db.query(sql`
            select count(*) filter (where old_level is not null and (new_level is null or new_level < old_level))::int as removals,
                   count(*)::int as all
            from permgraph.changes`);
          const context = log.join("; ");
          const batches = await drain(state, context);
          if (batches.length === 2) {
            split++;
            expect(batches[0]!.changes, context).toBe(queued[0]!.removals);
            expect(batches[0]!.changes + batches[1]!.changes, context).toBe(queued[0]!.all);
            expect(batches[1]!.mode, context).toBe('incremental');
            localParts += batches.filter((b) => b.local).length;
          }
          await expectTableMatches(state, context);
          expect((await verify(db)).differences, context).toEqual([]);
        },
      ),
      { numRuns: 60 },
    );
    expect(split).toBeGreaterThan(15);
    // parts of at most 64 changes were applied by the one-statement path
    expect(localParts).toBeGreaterThan(10);
  });

  it.each([
    ['a long run of additions (the ordinary path\'s split)', LOCAL_MAX_CHANGES + 6, false],
    ['a short run of additions (the one-statement path on each part)', SPLIT_MIN_CHANGES, true],
  ])('a removal on each side of %s: both are applied first, and the path through both is gone', async (_, additions, local) => {
    // alice -r1-> eng -r2-> ops -> doc: alice reaches doc only through r1 and r2.
    const objects = Array.from({ length: additions }, (_, i) => o(`x${i}`));
    const state = await start({
      nodes: [u('alice'), u('bob'), g('eng'), g('ops'), o('doc'), ...objects],
      grants: [grant('alice', 3, 'eng'), grant('eng', 3, 'ops'), grant('ops', 2, 'doc')],
    });
    const grants = () => [...state.grants.values()];
    await state.apply(db, { type: 'revoke', pick: grants().findIndex((x) => x.tailId === 'alice') }); // r1
    for (let i = 0; i < objects.length; i++) await state.apply(db, { type: 'grant', tail: 1, head: 5 + i, level: 1, source: 'a' }); // bob -> x_i
    await state.apply(db, { type: 'revoke', pick: grants().findIndex((x) => x.tailId === 'eng') }); // r2
    const batches = await drain(state, 'r1, additions, r2');
    expect(batches.map((b) => [b.changes, b.delta])).toEqual([[2, false], [objects.length, true]]);
    if (local) expect(batches.map((b) => b.local)).toEqual([true, true]);
    await expectTableMatches(state, 'r1, additions, r2');
  });

  it('random bursts of changes arriving between batches (alternating parts) drain to the model', async () => {
    const parts = { removals: 0, additions: 0 };
    await fc.assert(
      fc.asyncProperty(
        graphArbitrary({ users: 8, groups: 10, objects: 5, grants: 30 }),
        fc.array(
          fc.oneof(
            fc.array(churnOnly, { minLength: 1, maxLength: 10 }),
            fc.array(churnOnly, { minLength: SPLIT_MIN_CHANGES, maxLength: LOCAL_MAX_CHANGES }),
            fc.array(churnOnly, { minLength: LOCAL_MAX_CHANGES + 5, maxLength: 100 }),
          ),
          { minLength: 2, maxLength: 5 },
        ),
        async (graph, bursts) => {
          const state = await start(graph);
          const log: string[] = [];
          for (const burst of bursts) {
            for (const step of burst) log.push(await state.apply(db, step));
            const result = await applyAsWorker();
            // a split batch leaves the other part pending
            if (result.mode === 'incremental' && (await pending()) > 0) parts[result.delta ? 'additions' : 'removals']++;
          }
          for (let i = 0; i < 3 && (await applyAsWorker()).mode !== 'none'; i++);
          expect(await pending(), log.join('; ')).toBe(0);
          await expectTableMatches(state, log.join('; '));
        },
      ),
      { numRuns: 40 },
    );
    expect(parts.removals).toBeGreaterThan(5);
    expect(parts.additions).toBeGreaterThan(2);
  });

  it('removals that keep arriving do not leave the additions pending: the batch after a removals batch takes the additions', async () => {
    // (045_batch_split.sql, Alternation: a worker under a steady stream of both kinds took removals
    // batch after batch while the additions waited)
    const objects = Array.from({ length: LOCAL_MAX_CHANGES + 6 }, (_, i) => o(`z${i}`));
    const state = await start({
      nodes: [u('alice'), u('bob'), g('eng'), g('ops'), o('doc'), ...objects],
      grants: [grant('alice', 3, 'eng'), grant('eng', 3, 'ops'), grant('ops', 2, 'doc'), grant('bob', 1, 'eng')],
    });
    const grants = () => [...state.grants.values()];
    const additions = await db.tx(async (tx) => {
      for (let i = 0; i < objects.length; i++) await state.apply(tx, { type: 'grant', tail: 1, head: 5 + i, level: 1, source: 'a' }); // bob -> z_i
      return currentToken(tx);
    });
    await state.apply(db, { type: 'revoke', pick: grants().findIndex((x) => x.tailId === 'alice') }); // alice -/-> eng
    expect(await applyAsWorker()).toMatchObject({ mode: 'incremental', delta: false, changes: 1 });
    const late = await db.tx(async (tx) => {
      await state.apply(tx, { type: 'revoke', pick: grants().findIndex((x) => x.tailId === 'eng') }); // eng -/-> ops, meanwhile
      return currentToken(tx);
    });
    // the queue is mixed again: this time its additions go, and the new removal waits one batch
    expect(await applyAsWorker()).toMatchObject({ mode: 'incremental', delta: true, changes: objects.length });
    expect(await isApplied(db, additions)).toBe(true);
    expect(await isApplied(db, late)).toBe(false);
    expect(await applyAsWorker()).toMatchObject({ mode: 'incremental', delta: false, changes: 1 });
    expect(await isApplied(db, late)).toBe(true);
    await expectTableMatches(state, 'removal, additions, removal');
    expect((await verify(db)).differences).toEqual([]);
  });

  it('a token is applied once all its changes are: the removals batch leaves a writer that also added pending', async () => {
    const objects = Array.from({ length: LOCAL_MAX_CHANGES + 6 }, (_, i) => o(`y${i}`));
    const state = await start({ nodes: [u('carol'), u('dave'), g('team'), o('plan'), ...objects], grants: [grant('carol', 2, 'team'), grant('team', 2, 'plan')] });
    // one transaction removes carol from the team and shares y0 with dave; the others only share
    const mixed = await db.tx(async (tx) => {
      await tx.query(sql`delete from permgraph.grants where tail_id = 'carol' and head_id = 'team'`);
      await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('dave', 'y0', 1)`);
      return currentToken(tx);
    });
    state.grants.clear();
    for (const x of [grant('team', 2, 'plan'), grant('dave', 1, 'y0')]) state.grants.set(grantKey(x), x);
    let addOnly = '';
    for (let i = 1; i < objects.length; i++) {
      addOnly = await db.tx(async (tx) => {
        await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('dave', ${`y${i}`}, 1)`);
        return currentToken(tx);
      });
      const added = grant('dave', 1, `y${i}`);
      state.grants.set(grantKey(added), added);
    }
    const first = await applyAsWorker();
    expect(first).toMatchObject({ mode: 'incremental', changes: 1 });
    expect(await pending()).toBe(objects.length);
    expect(await isApplied(db, mixed)).toBe(false);
    expect(await isApplied(db, addOnly)).toBe(false);
    await expectNoRowAbove(state, 'after the removals');
    // carol's rows through the team are gone already
    expect((await readPermissions(db)).filter((r) => r.userId === 'carol' && r.targetId !== 'carol')).toEqual([]);
    expect(await applyAsWorker()).toMatchObject({ mode: 'incremental', delta: true, changes: objects.length });
    expect(await isApplied(db, mixed)).toBe(true);
    expect(await isApplied(db, addOnly)).toBe(true);
    await expectTableMatches(state, 'drained');
  });
});
