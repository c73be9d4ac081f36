import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { LISTENER_APPLICATION_NAME, WORKER_APPLICATION_NAME } from '../../src/constants.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import { applyChanges, refresh, type BatchResult } from '../../src/engine/apply.ts';
import { currentToken, isApplied, waitFor } from '../../src/engine/freshness.ts';
import { applyJobChunk } from '../../src/engine/long-job.ts';
import { verify } from '../../src/engine/verify.ts';
import * as model from '../reference/model.ts';
import { createWorkerMetrics, serveMetrics } from '../../src/worker/metrics.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { retryDelay, Worker, workerIdleLimitMs, type WorkerOptions } from '../../src/worker/worker.ts';
import { expiring, g, grant, o, u } from '../helpers/builders.ts';
import { collect, runCli, spawnCli, waitForWorkerBlocked, waitUntil } from '../helpers/cli.ts';
import { createLogin } from '../helpers/logins.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { clearLongJobs, loadGraph, readPermissions, wholeSecondAfter } from '../helpers/graph.ts';
import { applyRandomMutations, GraphState, grantKey, seedSmallGraph } from '../helpers/mutations.ts';

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

  const seed = () => seedSmallGraph(db);
  const mutate = (state: GraphState, count: number, seedValue: number) => applyRandomMutations(db, state, count, seedValue);

  it('applies an expiry on time by itself: a timer to the earliest valid_until, no write and no polling', async () => {
    // u writes g until two seconds from now, and reads it for ever.
    const expiresAt = wholeSecondAfter(Date.now() + 2000);
    const graph = { nodes: [u('u'), g('g')], grants: [expiring('u', 2, 'g', expiresAt, 'w'), grant('u', 1, 'g', 'r')] };
    await loadGraph(db, graph);
    await refresh(db);
    const worker = await startWorker({ pollIntervalMs: 600_000, listen: false }); // neither a poll nor a notification comes in time
    const expiredBatch = new Promise<BatchResult>((resolve) => {
      worker.on('batch', (batch) => {
        if (batch.expired > 0) resolve(batch);
      });
    });
    const batch = await Promise.race([
      expiredBatch,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no batch applied the expiry')), 30_000)),
    ]);
    expect(batch).toMatchObject({ mode: 'incremental', changes: 0, expired: 1, updated: 1 });
    expect(Date.now()).toBeGreaterThanOrEqual(expiresAt.getTime());
    expect(await readPermissions(db)).toEqual(model.computePermissions(graph));
    expect((await readPermissions(db)).find((r) => r.targetId === 'g')).toMatchObject({ level: 1, validUntil: null });
  });

  it('an idle worker waits for a notification or its poll interval: it does not poll the database in a loop', async () => {
    // With no row expiring, apply_changes said the next expiry was 0 ms away (greatest() skipped the
    // null), and the worker polled every millisecond: ~500 transactions a second doing nothing.
    await loadGraph(db, { nodes: [u('u'), g('g')], grants: [grant('u', 1, 'g')] });
    await refresh(db);
    await startWorker({ pollIntervalMs: 600_000 });
    await new Promise((r) => setTimeout(r, 500));
    // (transactions committed in this database; backends report them at least once a second)
    const commits = async () => {
      await db.query(sql`select pg_stat_clear_snapshot()`);
      const [row] = await db.query(sql`select xact_commit::bigint as n from pg_stat_database where datname = current_database()`);
      return Number(row.n);
    };
    const before = await commits();
    await new Promise((r) => setTimeout(r, 2500));
    expect((await commits()) - before).toBeLessThan(50);
  });

  it('applies changes made with plain SQL, woken by NOTIFY; a token resolves after apply', async () => {
    const state = await seed();
    await startWorker({ pollIntervalMs: 60_000 }); // only notifications can wake it in time
    const token = await db.tx(async (tx) => {
      await tx.query(sql`insert into permgraph.nodes (id, kind) values ('fresh-user', 'user'), ('fresh-team', 'group')`);
      await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('fresh-user', 'fresh-team', 2)`);
      return currentToken(tx);
    });
    await waitFor(db, token, 20_000);
    expect(await readPermissions(db)).toContainEqual({ userId: 'fresh-user', targetId: 'fresh-team', level: 2, traverseOwned: true, validUntil: null });
    state.nodes.set('fresh-user', u('fresh-user'));
    state.nodes.set('fresh-team', g('fresh-team'));
    state.grants.set('fresh', grant('fresh-user', 2, 'fresh-team'));
    await mutate(state, 30, 1);
    await expectConverged(state);
  });

  it('drains a large mixed queue, split into removals and additions, without waiting for a notification or a poll', async () => {
    // One transaction, one notification: the worker's first batch takes the removal and says more is
    // pending (045_batch_split.sql); the additions must follow at once, not at the next poll.
    const objects = Array.from({ length: 70 }, (_, i) => `doc${i}`);
    const graph = { nodes: [u('ann'), u('ben'), g('crew'), o('memo'), ...objects.map((id) => o(id))], grants: [grant('ann', 2, 'crew'), grant('crew', 2, 'memo')] };
    await loadGraph(db, graph);
    await refresh(db);
    const batches: BatchResult[] = [];
    const worker = await startWorker({ pollIntervalMs: 600_000 });
    worker.on('batch', (batch) => batches.push(batch));
    await new Promise((r) => setTimeout(r, 500)); // idle: its start-up wake-ups (connected, first look) are spent
    const token = await db.tx(async (tx) => {
      await tx.query(sql`delete from permgraph.grants where tail_id = 'ann' and head_id = 'crew'`);
      for (const id of objects) await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('ben', ${id}, 1)`);
      return currentToken(tx);
    });
    await waitFor(db, token, 20_000);
    expect(batches.map((b) => [b.changes, b.morePending])).toEqual([[1, true], [objects.length, false]]);
    const expected = { nodes: graph.nodes, grants: [grant('crew', 2, 'memo'), ...objects.map((id) => grant('ben', 1, id))] };
    expect(await readPermissions(db)).toEqual(model.computePermissions(expected));
  });

  it('applies batches while a writer holds an open transaction: one snapshot per batch statement, no lock on writers', async () => {
    // The worker sends each batch as one statement in its own transaction. Its
    // session must make that transaction REPEATABLE READ: under READ COMMITTED
    // apply_changes() locks nodes and grants against writers, and would wait
    // here for the open writer below, so the committed change would never apply.
    const state = await seed();
    await startWorker({ pollIntervalMs: 50 });
    const writer = openPool(url, { poolSize: 1 });
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let holding!: () => void;
    const held = new Promise<void>((resolve) => (holding = resolve));
    let writerOpen = true;
    const open = writer.tx(async (tx) => {
      await tx.query(sql`insert into permgraph.nodes (id, kind) values ('late-user', 'user')`);
      holding();
      // (gives up after a while: a worker that locks would otherwise wait for ever)
      await Promise.race([released, new Promise((resolve) => setTimeout(resolve, 8_000))]);
      writerOpen = false;
    });
    try {
      await held;
      const token = await db.tx(async (tx) => {
        await tx.query(sql`insert into permgraph.nodes (id, kind) values ('early-user', 'user'), ('early-team', 'group')`);
        await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('early-user', 'early-team', 3)`);
        return currentToken(tx);
      });
      await waitFor(db, token, 20_000);
      expect(writerOpen).toBe(true);
    } finally {
      release();
      await open;
      await writer.dispose();
    }
    state.nodes.set('late-user', u('late-user'));
    state.nodes.set('early-user', u('early-user'));
    state.nodes.set('early-team', g('early-team'));
    const early = grant('early-user', 3, 'early-team');
    state.grants.set(grantKey(early), early);
    await mutate(state, 20, 7);
    await expectConverged(state);
  });

  it('converges by polling alone when LISTEN is disabled', async () => {
    const state = await seed();
    await startWorker({ listen: false, pollIntervalMs: 50 });
    await mutate(state, 30, 2);
    await expectConverged(state);
  });

  /** The worker's and its listener's backends, once both are connected and none is one of `gone`. */
  async function workerBackends(gone: readonly number[]): Promise<{ pid: number; app: string }[]> {
    for (let i = 0; i < 1000; i++) {
      const rows: { pid: number; app: string }[] = await db.query(sql`
        select pid, application_name as app from pg_stat_activity
        where datname = current_database() and application_name = any(${[LISTENER_APPLICATION_NAME, WORKER_APPLICATION_NAME]}::text[])
          and pid <> all(${gone}::int[])
        order by application_name`);
      if (rows.length === 2 && rows[0]!.app !== rows[1]!.app) return rows;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error('the worker and its listener did not (re)connect');
  }

  it('survives the server terminating the listener and worker backends while changes are written', async () => {
    const state = await seed();
    const worker = await startWorker({ pollIntervalMs: 60_000 }); // catching up after reconnect must not rely on polling
    let failures = 0;
    worker.on('error', () => failures++);
    const metrics = createWorkerMetrics(worker, db);
    const killed: number[] = [];
    for (let round = 0; round < 3; round++) {
      await mutate(state, 10, 10 + round);
      // Fresh connections of both (not the ones killed in an earlier round), then kill exactly those.
      const backends = await workerBackends(killed);
      const terminated: { app: string; done: boolean }[] = await db.query(sql`
        select application_name as app, pg_terminate_backend(pid) as done from pg_stat_activity
        where pid = any(${backends.map((b) => b.pid)}::int[]) order by application_name`);
      expect(terminated, `round ${round}`).toEqual([
        { app: LISTENER_APPLICATION_NAME, done: true },
        { app: WORKER_APPLICATION_NAME, done: true },
      ]);
      killed.push(...backends.map((b) => b.pid));
      await mutate(state, 10, 20 + round);
    }
    await expectConverged(state);
    // The worker noticed every lost connection and came back on a new one as the active applier.
    expect(failures).toBeGreaterThanOrEqual(3);
    expect(await metrics.metrics()).toMatch(new RegExp(`^permgraph_worker_errors_total ${failures}$`, 'm'));
    expect(worker.role).toBe('active');
    await workerBackends(killed);
  });

  it('a stopping worker closes its listener first: the server dropping it meanwhile starts no reconnect', async () => {
    // Ctrl-C under `npm start` reaches the embedded server too, which ends
    // every connection while the worker finishes its last batch.
    const state = await seed();
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const worker = await startWorker({ logger, pollIntervalMs: 60_000 });
    const [listener] = (await workerBackends([])).filter((b) => b.app === LISTENER_APPLICATION_NAME);
    let stopped: Promise<void> | undefined;
    await db.tx(async (tx) => {
      // The worker's next batch waits for this lock, so stop() has a batch to wait for.
      await tx.query(sql`lock table permgraph.permissions in access exclusive mode`);
      await mutate(state, 5, 77);
      await waitForWorkerBlocked(db);
      stopped = worker.stop();
      await db.query(sql`select pg_terminate_backend(pid) from pg_stat_activity where pid = ${listener!.pid}`);
      await new Promise((r) => setTimeout(r, 800)); // longer than the listener's retry interval
    });
    await stopped;
    const messages = lines.map((line) => JSON.parse(line).msg as string);
    expect(messages).not.toContain('listener reconnecting');
    // The last batch committed or rolled back whole: what it left pending applies cleanly.
    await applyChanges(db);
    expect(await readPermissions(db)).toEqual(model.computePermissions(state.snapshot()));
  });

  it('a stop that must wait for the running batch says so, with how long it has run', async () => {
    // A backlog's batch can take minutes: an operator whose SIGTERM seems
    // ignored must learn that the worker is finishing a batch, not hung.
    const state = await seed();
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const worker = await startWorker({ logger, pollIntervalMs: 60_000 });
    let stopped: Promise<void> | undefined;
    await db.tx(async (tx) => {
      // The worker's next batch waits for this lock: stop() has a batch to wait for.
      await tx.query(sql`lock table permgraph.permissions in access exclusive mode`);
      await mutate(state, 5, 78);
      await waitForWorkerBlocked(db);
      await new Promise((r) => setTimeout(r, 300));
      stopped = worker.stop();
      await waitUntil(async () => lines.some((l) => JSON.parse(l).msg === 'stopping once the running batch has committed'), 'the stop to say what it waits for');
    });
    await stopped;
    const entries = lines.map((line) => JSON.parse(line) as { msg: string; operation?: string; runningMs?: number });
    const waiting = entries.find((e) => e.msg === 'stopping once the running batch has committed')!;
    expect(waiting.operation).toBe('a batch');
    expect(waiting.runningMs).toBeGreaterThanOrEqual(300);
    // The batch it waited for committed or rolled back whole: what it left
    // pending applies cleanly.
    await applyChanges(db);
    expect(await readPermissions(db)).toEqual(model.computePermissions(state.snapshot()));
    // An idle worker stops at once and says nothing of the kind.
    const idle = await startWorker({ logger, pollIntervalMs: 60_000 });
    lines.length = 0;
    await idle.stop();
    expect(lines.map((l) => JSON.parse(l).msg)).not.toContain('stopping once the running batch has committed');
  });

  it('refuses to start for a login that may not be a worker, with a reason that names the role to grant; so does the CLI', async () => {
    const reader = await createLogin(db, url, 'not_a_worker', 'permgraph_reader');
    const worker = new Worker({ url: reader.url, listen: false });
    await expect(worker.start()).rejects.toThrow(`${reader.name} may not run the worker: grant it permgraph_worker (it may not execute the engine's functions)`);
    // a login with no permgraph role at all (no USAGE on the schema) is told the same
    const stranger = await createLogin(db, url, 'no_role');
    await expect(new Worker({ url: stranger.url, listen: false }).start()).rejects.toThrow(`${stranger.name} may not run the worker: grant it permgraph_worker`);
    // a server that cannot be reached is not a refusal: the worker starts, as a standby, and retries
    const unreachable = new Worker({ url: 'postgres://nobody:x@127.0.0.1:1/none', listen: false, standbyIntervalMs: 50 });
    await unreachable.start();
    await waitUntil(async () => unreachable.role === 'standby', 'the unreachable worker to wait as a standby');
    await unreachable.stop();
    const cli = await runCli(['--database-url', reader.url, 'worker']);
    expect(cli).toMatchObject({ code: 1, stderr: expect.stringContaining(`permgraph: ${reader.name} may not run the worker: grant it permgraph_worker`) });
    // a one-shot command's refusal by PostgreSQL says which login it needs
    const once = await runCli(['--database-url', reader.url, 'worker', '--once']);
    expect(once).toMatchObject({ code: 1, stderr: 'permgraph: permission denied for function apply_local_changes: `permgraph worker` needs a login granted permgraph_worker (docs/security.md)\n' });
    const refreshed = await runCli(['--database-url', reader.url, '--json', 'refresh']);
    expect(JSON.parse(refreshed.stderr)).toEqual({
      error: { message: 'permission denied for table applier_turn: `permgraph refresh` needs a login granted permgraph_worker (docs/security.md)', code: 'database', exitCode: 1, sqlState: '42501' },
    });
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
    expect(active.role).toBeUndefined(); // stopped: neither the applier nor waiting to be
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
      state.nodes.set('late-user', u('late-user'));
      await expectConverged(state);
      expect(await readPermissions(db)).toContainEqual({ userId: 'late-user', targetId: 'late-user', level: 3, traverseOwned: true, validUntil: null });
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

  it('a standby takes over from a frozen active worker: its idle session ends itself, though its kernel keeps the connection up', async () => {
    // (SIGSTOP: a paused container or VM. Nothing goes unacknowledged and
    // keepalives are answered, so only the session's own idle limit ends it.)
    expect(workerIdleLimitMs({ pollIntervalMs: 200, standbyIntervalMs: 100 })).toBe(10_400);
    const state = await seed();
    const frozen = spawnCli(['--database-url', url, 'worker', '--poll-interval', '200', '--standby-interval', '100']);
    const exited = collect(frozen);
    try {
      await waitUntil(async () => (await db.query(sql`
        select 1 from pg_stat_activity a join pg_locks l on l.pid = a.pid and l.locktype = 'advisory' and l.granted
        where a.application_name = ${WORKER_APPLICATION_NAME} and a.datname = current_database()`)).length > 0, 'the CLI worker to take the role');
      frozen.kill('SIGSTOP');
      const standby = await startWorker({ standbyIntervalMs: 100 });
      await mutate(state, 5, 77);
      await waitUntil(async () => standby.role === 'active', 'the standby to take over', 60_000);
      await expectConverged(state);
      // thawed, the old one finds its session gone and waits as a standby; it stops cleanly
      frozen.kill('SIGCONT');
      frozen.kill('SIGTERM');
      expect((await exited).code).toBe(0);
    } finally {
      frozen.kill('SIGKILL');
      await exited;
    }
  });

  it('a login whose default statement_timeout would cancel its batches: the worker runs without it, and with dead-peer detection', async () => {
    const login = await createLogin(db, url, 'timed_worker', 'permgraph_worker');
    await db.query(sql`alter role ${sql.ident(login.name)} set statement_timeout = '50ms'`);
    await db.query(sql`alter role ${sql.ident(login.name)} set lock_timeout = '10ms'`);
    const state = await seed();
    // a batch that waits 300 ms for the batch lock, and must not be cancelled for it
    const holder = openPool(url, { poolSize: 1 });
    try {
      const worker = new Worker({ url: login.url, pollIntervalMs: 100 });
      workers.push(worker);
      const failures: string[] = [];
      worker.on('error', (error) => failures.push(error.message));
      await holder.tx(async (tx) => {
        await tx.query(sql`select pg_advisory_xact_lock(permgraph._applier_lock_key())`);
        await worker.start();
        await mutate(state, 10, 41);
        await new Promise((r) => setTimeout(r, 300)); // the worker's batch waits for the lock meanwhile
      });
      await expectConverged(state);
      // neither timeout cancelled a batch (each would have been a failure, retried)
      expect(failures).toEqual([]);
    } finally {
      await holder.dispose();
    }
  });

  it('after failures in a row, each retry waits twice as long as the one before, up to 30 s', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 100].map((n) => retryDelay(1000, n))).toEqual([1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
    expect(retryDelay(60_000, 3)).toBe(60_000); // a standby interval above the cap is kept
  });

  it("a long job's chunk that keeps failing is retried after ever longer waits: the batch before each retry does not make its failures count as new", async () => {
    // 8 members onto a group owning 6 others, in chunks of 12 pairs: a long job
    const members = Array.from({ length: 8 }, (_, i) => u(`cm${i}`));
    const graph = {
      nodes: [...members, g('cteam'), g('cparent'), ...Array.from({ length: 6 }, (_, i) => g(`cp${i}`, 'cparent'))],
      grants: members.map((m) => grant(m.id, 2, 'cteam')),
    };
    await loadGraph(db, graph);
    await clearLongJobs(db);
    await refresh(db);
    // (any failure that hits chunks alone: a full disk, temp_file_limit; here a trigger on one row)
    await db.query(sql`
      create function public.fail_one_chunk() returns trigger language plpgsql as $$
      begin
        if new.user_id = 'cm7' and new.target_id = 'cparent' then raise exception 'a chunk-only failure'; end if;
        return new;
      end $$`);
    await db.query(sql`create trigger fail_one_chunk before insert or update on permgraph.permissions for each row execute function public.fail_one_chunk()`);
    const lines: { msg: string; failuresInARow?: number; retryInMs?: number }[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const failures = () => lines.filter((l) => l.msg === 'applying changes failed; retrying');
    try {
      await startWorker({ logger, chunkPairs: 12, standbyIntervalMs: 20 });
      await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('cteam', 'cparent', 3)`);
      await waitUntil(async () => failures().length >= 4, 'four failures of the chunk');
      expect(failures().slice(0, 4).map((l) => [l.failuresInARow, l.retryInMs])).toEqual([[1, 20], [2, 40], [3, 80], [4, 160]]);
    } finally {
      await db.query(sql`drop trigger fail_one_chunk on permgraph.permissions`);
      await db.query(sql`drop function public.fail_one_chunk()`);
    }
    // the next try succeeds, and the job ends with the table the model's
    await waitUntil(async () => lines.some((l) => l.msg === 'finished long job'), 'the long job to finish');
    await settle();
    expect(await readPermissions(db)).toEqual(model.computePermissions({ ...graph, grants: [...graph.grants, grant('cteam', 3, 'cparent')] }));
  });

  /** Waits until no connection of a worker (its own or its listener's) is left on the server. */
  async function workerConnectionsClosed(): Promise<void> {
    await waitUntil(async () => {
      const rows = await db.query(sql`
        select 1 from pg_stat_activity where datname = current_database()
          and application_name = any(${[LISTENER_APPLICATION_NAME, WORKER_APPLICATION_NAME]}::text[])`);
      return rows.length === 0;
    }, 'the worker\'s connections to close');
  }

  it('refuses an interval no timer can hold (Node fires one past 2^31 - 1 ms at once: the worker polled in a loop), or one that is no whole positive number', () => {
    for (const [option, value] of [['pollIntervalMs', 2 ** 31], ['standbyIntervalMs', 0], ['pollIntervalMs', 1.5], ['standbyIntervalMs', Number.NaN]] as const) {
      expect(() => new Worker({ url, [option]: value }), `${option} ${value}`).toThrow(
        new InvalidInputError(`${option} must be a whole number of milliseconds from 1 to 2147483647 (about 24 days), got ${value}`),
      );
    }
  });

  it('stop() during start() stops the worker once started: no role taken, no listener left', async () => {
    const worker = new Worker({ url, pollIntervalMs: 100 });
    workers.push(worker);
    const starting = worker.start();
    const stopping = worker.stop();
    await starting;
    await stopping;
    expect(worker.role).toBeUndefined();
    await workerConnectionsClosed();
  });

  it('start() twice is one start; a stopped worker does not start again', async () => {
    const worker = new Worker({ url, pollIntervalMs: 100 });
    workers.push(worker);
    const [first, second] = [worker.start(), worker.start()];
    expect(second).toBe(first);
    await first;
    await waitUntil(async () => worker.role === 'active', 'the worker to take the role');
    await worker.stop();
    await expect(worker.start()).rejects.toThrow(/this worker was stopped: create a new Worker to start again/);
    await workerConnectionsClosed();
  });

  it('a notification with any payload only wakes the worker: no error logged for one that is not JSON', async () => {
    const state = await seed();
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const worker = await startWorker({ logger, pollIntervalMs: 60_000 });
    await waitUntil(async () => lines.some((l) => l.includes('listener connected')), 'the listener to connect');
    await mutate(state, 5, 43);
    await db.query(sql`select pg_notify('permgraph_changes', 'not json {')`);
    await expectConverged(state);
    expect(worker.role).toBe('active');
    expect(lines.filter((l) => JSON.parse(l).level >= 50)).toEqual([]);
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
      // a scrape's query string (Prometheus' `params`) is not another path
      expect(await (await fetch(`http://127.0.0.1:${port}/metrics?module=permgraph`)).text()).toMatch(/^permgraph_worker_active 1$/m);
    } finally {
      server.close();
    }
  });

  it('the lag metric counts the changes a long job holds: their tokens wait for it, though the queue is empty', async () => {
    // Found restarting a worker on a backlog with a big grant in it: for the
    // minute its long job ran, oldest_pending_age_seconds read 0 while
    // readers waited for 6,000 tokens, and the alert on it stayed quiet.
    const members = Array.from({ length: 10 }, (_, i) => u(`m${i}`));
    await loadGraph(db, {
      nodes: [...members, g('team'), g('parent'), ...Array.from({ length: 10 }, (_, i) => g(`p${i}`, 'parent'))],
      grants: members.map((m) => grant(m.id, 2, 'team')),
    });
    await clearLongJobs(db);
    await refresh(db);
    const token = await db.tx(async (tx) => {
      await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('team', 'parent', 1)`); // 110 pairs
      return currentToken(tx);
    });
    await new Promise((r) => setTimeout(r, 1100));
    expect(await applyChanges(db, { chunkPairs: 30 })).toMatchObject({ longJobActive: true, toLongJob: 1 });
    const registry = createWorkerMetrics(new Worker({ url, listen: false }), db);
    const value = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    const during = await registry.metrics();
    expect(value(during, 'permgraph_pending_changes')).toBe(0); // the queue itself is empty
    expect(await isApplied(db, token)).toBe(false);
    expect(value(during, 'permgraph_oldest_pending_age_seconds')).toBeGreaterThanOrEqual(1);
    for (let i = 0; i < 50 && !(await applyJobChunk(db)).finished; i++);
    expect(await isApplied(db, token)).toBe(true);
    expect(value(await registry.metrics(), 'permgraph_oldest_pending_age_seconds')).toBe(0);
  });

  it('metrics answer while the database does not: database_up 0, the worker\'s own series, no value for what is read from it', async () => {
    const gone = new URL(url);
    gone.port = '1'; // nothing listens there: connections are refused at once
    const unreachable = openPool(gone.toString(), { poolSize: 1 });
    try {
      // (the pool retries a refused connection for ~10 s: the scrape answers after its own time limit, 5 s)
      const text = await createWorkerMetrics(new Worker({ url, listen: false }), unreachable).metrics();
      expect(text).toMatch(/^permgraph_database_up 0$/m);
      expect(text).toMatch(/^permgraph_worker_active 0$/m);
      expect(text).toMatch(/^permgraph_changes_applied_total 0$/m);
      // (prom-client writes NaN as "Nan", which Prometheus reads as NaN: it ignores case)
      expect(text).toMatch(/^permgraph_pending_changes nan$/im);
      expect(text).toMatch(/^permgraph_long_job_active nan$/im);
      expect(text).toMatch(/^# TYPE permgraph_change_stream_lag_events gauge\n(?!permgraph_change_stream_lag_events)/m);
      expect(await createWorkerMetrics(new Worker({ url, listen: false }), db).metrics()).toMatch(/^permgraph_database_up 1$/m);
    } finally {
      void unreachable.dispose().catch(() => {}); // (resolves once its connection attempts give up)
    }
  });
});
