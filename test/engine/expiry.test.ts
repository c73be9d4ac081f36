// Expiring grants in the engine: valid_until as docs/semantics.md defines it,
// by the full recomputation and by the incremental path, and expiries applied
// by a batch with no other change. The oracle is the reference model, which
// finds valid_until by brute force (the graph evaluated again at every later
// expiry); the engine computes it in one walk. Time is stepped with
// applyChanges({ at }), which computes the graph as of a later time.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { sql } from '../../src/db/pool.ts';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { verify } from '../../src/engine/verify.ts';
import * as model from '../reference/model.ts';
import type { RefGraph } from '../reference/model.ts';
import { expiring, g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { EXPIRIES, graphArbitrary, loadGraph, readPermissions, readTrashedGroups, wholeSecondAfter } from '../helpers/graph.ts';
import { expiringMutationArbitrary, GraphState } from '../helpers/mutations.ts';

const HOUR = 3600 * 1000;

describe('expiring grants', async () => {
  const { db } = await createTestDatabase();

  async function expectTableAt(graph: RefGraph, time: Date, context: string): Promise<void> {
    expect(await readPermissions(db), context).toEqual(model.computePermissions(graph, time));
    expect(await readTrashedGroups(db), context).toEqual(model.computeTrashedGroups(graph));
    expect((await verify(db, { at: time })).differences, context).toEqual([]);
  }

  it("the semantics' example: a write grant expiring next to a read grant that does not", async () => {
    const ten = wholeSecondAfter(Date.now() + HOUR);
    const graph: RefGraph = { nodes: [u('u'), g('g')], grants: [expiring('u', 2, 'g', ten, 'w'), grant('u', 1, 'g', 'r')] };
    await loadGraph(db, graph);
    await refresh(db);
    const row = async () => (await readPermissions(db)).find((r) => r.targetId === 'g');
    expect(await row()).toEqual({ userId: 'u', targetId: 'g', level: 2, traverseOwned: true, validUntil: ten });
    // Nothing else changes: the expiry alone makes a batch recompute the row.
    const batch = await applyChanges(db, { at: ten });
    expect(batch).toMatchObject({ mode: 'incremental', changes: 0, expired: 1, updated: 1 });
    expect(await row()).toEqual({ userId: 'u', targetId: 'g', level: 1, traverseOwned: true, validUntil: null });
    expect((await applyChanges(db, { at: ten })).mode).toBe('none');
  });

  it('valid_until is the earliest expiry that changes the row, not the earliest on its paths', async () => {
    const [h1, h2, h3] = EXPIRIES as [Date, Date, Date];
    const graph: RefGraph = {
      nodes: [u('a'), u('b'), g('team'), g('project', 'team'), o('doc', 'project')],
      grants: [
        expiring('a', 3, 'team', h1, 's1'), // the manage path ends at h1...
        expiring('a', 3, 'team', h2, 's2'), // ...but a parallel one holds it until h2
        grant('a', 1, 'team', 's3'),
        expiring('b', 3, 'a', h3), // b manages user a until h3: traverse_owned ends then
        grant('b', 1, 'a', 'r'),
        expiring('team', 2, 'doc', h1),
      ],
    };
    await loadGraph(db, graph);
    await refresh(db);
    const rows = await readPermissions(db);
    const find = (userId: string, targetId: string) => rows.find((r) => r.userId === userId && r.targetId === targetId);
    expect(find('a', 'team')).toMatchObject({ level: 3, validUntil: h2 });
    expect(find('a', 'project')).toMatchObject({ level: 3, validUntil: h2 });
    expect(find('a', 'doc')).toMatchObject({ level: 2, traverseOwned: false, validUntil: h1 });
    expect(find('b', 'a')).toMatchObject({ level: 3, traverseOwned: true, validUntil: h3 });
    await expectTableAt(graph, new Date(), 'now');
    for (const time of EXPIRIES) {
      await applyChanges(db, { at: time });
      await expectTableAt(graph, time, `at ${time.toISOString()}`);
    }
  });

  it('a grant that has already expired gives nothing, and one moved into the past is taken away', async () => {
    const graph: RefGraph = { nodes: [u('u'), g('g')], grants: [expiring('u', 2, 'g', new Date(Date.now() - HOUR))] };
    await loadGraph(db, graph);
    await refresh(db);
    expect((await readPermissions(db)).map((r) => r.targetId)).toEqual(['u']);
    await db.query(sql`update permgraph.grants set expires_at = ${EXPIRIES[0]!}`);
    await applyChanges(db);
    expect((await readPermissions(db)).find((r) => r.targetId === 'g')).toMatchObject({ level: 2, validUntil: EXPIRIES[0] });
    await db.query(sql`update permgraph.grants set expires_at = now() - interval '1 second'`);
    await applyChanges(db);
    expect((await readPermissions(db)).map((r) => r.targetId)).toEqual(['u']);
  });

  it('a region seeded from a group whose lower level outlasts its row (permission_bounds)', async () => {
    const [h1] = EXPIRIES as [Date];
    // (u, g) is write until h1 and read for ever; t is reached from g by a read
    // grant, so (u, t) is read for ever. Revoking h -> t recomputes (u, t)
    // from its border g, whose row alone says "until h1".
    const graph: RefGraph = {
      nodes: [u('u'), g('g'), g('h'), g('t')],
      grants: [expiring('u', 2, 'g', h1, 'w'), grant('u', 1, 'g', 'r'), grant('g', 1, 't'), grant('u', 1, 'h'), grant('h', 1, 't')],
    };
    await loadGraph(db, graph);
    await refresh(db);
    const state = new GraphState(graph);
    await state.apply(db, { type: 'revoke', pick: graph.grants.findIndex((x) => x.tailId === 'h') });
    const batch = await applyChanges(db);
    expect(batch.regionPairs).toBeGreaterThan(0);
    await expectTableAt(state.snapshot(), new Date(), 'after revoking h -> t');
    expect((await readPermissions(db)).find((r) => r.targetId === 't')).toMatchObject({ level: 1, validUntil: null });
  });

  it('one batch that revokes both links of a chain u -> g1 -> g2 takes both rows away', async () => {
    // With an expiring grant in the graph the batch is not taken by the one-statement path: its
    // region is walked (_build_region), upward through the union of the old and new graphs. The
    // row (u, g2) has its only path through both revoked edges.
    const graph: RefGraph = {
      nodes: [u('u'), u('v'), g('g1'), g('g2'), g('x')],
      grants: [grant('u', 2, 'g1'), grant('g1', 1, 'g2'), expiring('v', 1, 'x', EXPIRIES[2]!)],
    };
    await loadGraph(db, graph);
    await refresh(db);
    const state = new GraphState(graph);
    for (const [tail, head] of [['u', 'g1'], ['g1', 'g2']]) {
      await state.apply(db, { type: 'revoke', pick: [...state.grants.values()].findIndex((x) => x.tailId === tail && x.headId === head) });
    }
    expect(await applyChanges(db)).toMatchObject({ mode: 'incremental', changes: 2 });
    await expectTableAt(state.snapshot(), new Date(), 'after revoking u -> g1 and g1 -> g2');
  });

  it('a read path through a group does not keep the write level valid: valid_until is when the write grant expires', async () => {
    // u writes g directly until h1; u also reads h, and h writes g, so u reads g through h for
    // ever. At h1 the row falls to read: valid_until is h1, whatever the read path's times.
    const [h1] = EXPIRIES as [Date];
    const graph: RefGraph = {
      nodes: [u('u'), g('g'), g('h')],
      grants: [expiring('u', 2, 'g', h1), grant('u', 1, 'h'), grant('h', 2, 'g')],
    };
    await loadGraph(db, graph);
    await refresh(db);
    expect((await readPermissions(db)).find((r) => r.targetId === 'g')).toEqual({ userId: 'u', targetId: 'g', level: 2, traverseOwned: true, validUntil: h1 });
    await expectTableAt(graph, new Date(), 'now');
    await applyChanges(db, { at: h1 });
    await expectTableAt(graph, h1, 'at h1');
  });

  it('apply_changes refuses a time in the past', async () => {
    await expect(applyChanges(db, { at: new Date(Date.now() - HOUR) })).rejects.toThrow(/in the past/);
  });

  it('full recomputation: random graphs with expiring grants equal the model at now and at every expiry', async () => {
    await fc.assert(
      fc.asyncProperty(graphArbitrary({ users: 6, groups: 8, objects: 4, grants: 30 }, 0, true), async (graph) => {
        await loadGraph(db, graph);
        await refresh(db);
        await expectTableAt(graph, new Date(), 'after refresh');
        for (const time of EXPIRIES) {
          await refresh(db, { at: time });
          await expectTableAt(graph, time, `refresh at ${time.toISOString()}`);
        }
      }),
      { numRuns: 40 },
    );
  });

  it.each([
    ['sparse', { users: 6, groups: 8, objects: 4, grants: 30 }, 0],
    // few nodes, many grants: parallel paths of different levels and expiries everywhere
    ['dense', { users: 3, groups: 5, objects: 2, grants: 40 }, 0.7],
  ] as const)('incremental (%s graphs): random changes (expiries set, moved, removed) and the passing of time equal the model', async (_, size, minFraction) => {
    await fc.assert(
      fc.asyncProperty(
        graphArbitrary(size, minFraction, true),
        fc.array(fc.tuple(expiringMutationArbitrary, fc.boolean()), { minLength: 1, maxLength: 20 }),
        fc.array(fc.nat({ max: 2 }), { minLength: 0, maxLength: 3 }),
        async (graph, steps, timeSteps) => {
          await loadGraph(db, graph);
          await refresh(db);
          const state = new GraphState(graph);
          const log: string[] = [];
          for (const [index, [mutation, endBatch]] of steps.entries()) {
            log.push(await state.apply(db, mutation));
            if (endBatch || index === steps.length - 1) {
              await applyChanges(db);
              await expectTableAt(state.snapshot(), new Date(), log.join('; '));
            }
          }
          // Then time passes: each batch applies the expiries due by then, and nothing else.
          for (const step of [...new Set(timeSteps)].sort()) {
            const time = EXPIRIES[step]!;
            const batch = await applyChanges(db, { at: time });
            expect(batch.mode, log.join('; ')).not.toBe('full');
            await expectTableAt(state.snapshot(), time, `${log.join('; ')}; at ${time.toISOString()}`);
          }
        },
      ),
      { numRuns: 45 },
    );
  });
});
