import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { openPool, sql } from '../../src/db/pool.ts';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { currentToken, waitFor } from '../../src/engine/freshness.ts';
import { verify } from '../../src/engine/verify.ts';
import * as model from '../../src/reference/model.ts';
import { createWorkerMetrics, serveMetrics } from '../../src/worker/metrics.ts';
import { Worker, type WorkerOptions } from '../../src/worker/worker.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { graphArbitrary, loadGraph, readPermissions } from '../helpers/graph.ts';
import { GraphState, mutationArbitrary } from '../helpers/mutations.ts';

describe('worker', async () => {
  const { db, url } = await createTestDatabase();
  const workers: Worker[] = [];

  async function startWorker(options: Partial<WorkerOptions> = {}): Promise<Worker> {
    const worker = new Worker({ url, pollIntervalMs: 200, standbyIntervalMs: 100, ...options });
    workers.push(worker);
    await worker.start();
    return worker;
  }

  afterEach(async () => {
    await Promise.all(workers.splice(0).map((w) => w.stop()));
  });

  /** Waits until nothing is pending, by token of a no-op marker transaction's predecessor. */
  async function settle(): Promise<void> {
    for (let i = 0; i < 500; i++) {
      const [row] = await db.query(sql`select count(*)::int as n from permgraph.changes`);
      if (row.n === 0) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error('worker did not drain the changes');
  }

  async function expectConverged(state: GraphState): Promise<void> {
    await settle();
    expect(await readPermissions(db)).toEqual(model.computePermissions(state.snapshot()));
    expect((await verify(db)).differences).toEqual([]);
  }

  async function seed(): Promise<GraphState> {
    const graph = fc.sample(graphArbitrary({ users: 10, groups: 12, objects: 5, grants: 40 }, 0.5), { numRuns: 1, seed: 42 })[0]!;
    await loadGraph(db, graph);
    await refresh(db);
    return new GraphState(graph);
  }

  async function mutate(state: GraphState, count: number, seedValue: number): Promise<void> {
    for (const m of fc.sample(mutationArbitrary, { numRuns: count, seed: seedValue })) await state.apply(db, m);
  }

  it('applies changes made with plain SQL, woken by NOTIFY; a token resolves after apply', async () => {
    const state = await seed();
    await startWorker({ pollIntervalMs: 60_000 }); // only notifications can wake it in time
    const token = await db.tx(async (tx) => {
      await tx.query(sql`insert into permgraph.nodes (id, kind) values ('fresh-user', 'user'), ('fresh-team', 'group')`);
      await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('fresh-user', 'fresh-team', 2)`);
      return currentToken(tx);
    });
    await waitFor(db, token, 20_000);
    expect(await readPermissions(db)).toContainEqual({ userId: 'fresh-user', targetId: 'fresh-team', level: 2, traverseOwned: true });
    state.nodes.set('fresh-user', { id: 'fresh-user', kind: 'user', ownerId: null, trashAt: null });
    state.nodes.set('fresh-team', { id: 'fresh-team', kind: 'group', ownerId: null, trashAt: null });
    state.grants.set('fresh', { tailId: 'fresh-user', headId: 'fresh-team', level: 2, source: 'default' });
    await mutate(state, 30, 1);
    await expectConverged(state);
  });

  it('converges by polling alone when LISTEN is disabled', async () => {
    const state = await seed();
    await startWorker({ listen: false, pollIntervalMs: 50 });
    await mutate(state, 30, 2);
    await expectConverged(state);
  });

  it('survives the server terminating the listener and worker backends while changes are written', async () => {
    const state = await seed();
    await startWorker({ pollIntervalMs: 60_000 }); // catching up after reconnect must not rely on polling
    for (let round = 0; round < 3; round++) {
      await mutate(state, 10, 10 + round);
      await db.query(sql`
        select pg_terminate_backend(pid) from pg_stat_activity
        where datname = current_database() and application_name in ('permgraph-listener', 'permgraph-worker')`);
      await mutate(state, 10, 20 + round);
    }
    await expectConverged(state);
  });

  it('runs one active applier; a standby takes over when it stops', async () => {
    const state = await seed();
    const first = await startWorker();
    const second = await startWorker();
    for (let i = 0; i < 50 && (first.role === undefined || second.role === undefined); i++) await new Promise((r) => setTimeout(r, 20));
    expect([first.role, second.role].sort()).toEqual(['active', 'standby']);
    const [active, standby] = first.role === 'active' ? [first, second] : [second, first];
    await mutate(state, 15, 3);
    await expectConverged(state);
    await active.stop();
    await mutate(state, 15, 4);
    await expectConverged(state);
    expect(standby.role).toBe('active');
  });

  it('never skips a change whose transaction commits after a later-captured one', async () => {
    const state = await seed();
    await startWorker({ pollIntervalMs: 50 });
    const slow = openPool(url, { poolSize: 1 });
    try {
      let releaseSlow!: () => void;
      const slowGate = new Promise<void>((resolve) => (releaseSlow = resolve));
      let slowCaptured!: () => void;
      const captured = new Promise<void>((resolve) => (slowCaptured = resolve));
      // The slow transaction captures its change first (lower id) but commits last.
      const slowTx = slow.tx(async (tx) => {
        await tx.query(sql`insert into permgraph.nodes (id, kind) values ('late-user', 'user')`);
        slowCaptured();
        await slowGate;
      });
      await captured;
      await mutate(state, 10, 5); // committed, captured after the slow one
      await settle(); // the worker applied everything committed so far
      releaseSlow();
      await slowTx;
      state.nodes.set('late-user', { id: 'late-user', kind: 'user', ownerId: null, trashAt: null });
      await expectConverged(state);
      expect(await readPermissions(db)).toContainEqual({ userId: 'late-user', targetId: 'late-user', level: 3, traverseOwned: true });
    } finally {
      await slow.dispose();
    }
  });

  it('a synchronous apply (what --once runs) applies what was committed before it started', async () => {
    const state = await seed();
    await mutate(state, 20, 6);
    const result = await applyChanges(db);
    expect(result.changes).toBeGreaterThan(0);
    const [row] = await db.query(sql`select count(*)::int as n from permgraph.changes`);
    expect(row.n).toBe(0);
    expect(await readPermissions(db)).toEqual(model.computePermissions(state.snapshot()));
  });

  it('serves Prometheus metrics of what it applied and of the backlog', async () => {
    const state = await seed();
    const worker = await startWorker({ pollIntervalMs: 50 });
    const server = await serveMetrics(createWorkerMetrics(worker, db), 0, '127.0.0.1');
    try {
      await mutate(state, 10, 7);
      await expectConverged(state);
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(body)?.[1]);
      expect(value('permgraph_changes_applied_total')).toBeGreaterThan(0);
      expect(value('permgraph_pending_changes')).toBe(0);
      expect(value('permgraph_oldest_pending_age_seconds')).toBe(0);
      expect(value('permgraph_worker_active')).toBe(1);
      expect(body).toMatch(/^permgraph_batches_total\{mode="incremental"\} [1-9]/m);
      expect(body).toMatch(/^permgraph_batch_duration_seconds_count [1-9]/m);
      expect(body).toMatch(/^permgraph_rows_written_total\{op="insert"\} \d+/m);
      expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);
    } finally {
      server.close();
    }
  });
});
