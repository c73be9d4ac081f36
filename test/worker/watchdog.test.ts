// The worker's own detection of a stalled network (src/worker/watchdog.ts):
// workers reach the server through a TCP proxy that can stall like a
// partition (test/helpers/tcp-proxy.ts), with the watchdog's intervals cut
// short. No assertion is about speed: the waits are for outcomes.
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { CONNECT_TIMEOUT_MS, WORKER_APPLICATION_NAME } from '../../src/constants.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import { applyChanges } from '../../src/engine/apply.ts';
import { verify } from '../../src/engine/verify.ts';
import { ConnectionStalledError } from '../../src/errors.ts';
import { silentLogger, type Logger } from '../../src/logger.ts';
import { startListener } from '../../src/worker/listener.ts';
import { createWorkerMetrics } from '../../src/worker/metrics.ts';
import { closeConnectionNow } from '../../src/db/close-connection.ts';
import { createProbe, type Probe, type ProbeOutcome } from '../../src/worker/probe.ts';
import { createServer, type Socket } from 'node:net';
import { migrate } from '../../src/migrations/migrate.ts';
import { ConnectionWatchdog } from '../../src/worker/watchdog.ts';
import { Worker, type WorkerOptions } from '../../src/worker/worker.ts';
import * as model from '../reference/model.ts';
import { waitForWorkerBlocked, waitUntil } from '../helpers/cli.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { readPermissions } from '../helpers/graph.ts';
import { ClusterSet, socketsOnly, socketUrl } from '../helpers/cluster.ts';
import { createLogin } from '../helpers/logins.ts';
import { applyRandomMutations, GraphState, seedSmallGraph } from '../helpers/mutations.ts';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';
import { startFakePostgres } from '../helpers/fake-postgres.ts';
import { withDatabase } from '../helpers/url.ts';

/** Short enough for tests; the probe's timeout is still far above a local connection's milliseconds. */
const WATCHDOG = { checkIntervalMs: 300, checkTimeoutMs: 3000, maxCheckIntervalMs: 1200 };

/** What the watchdog logs (at debug) of each probe that found the session alive. */
const ALIVE_MESSAGE = 'still waiting for the database; its session is alive';
const WAITING_FOR_SESSION =
  'waiting for a server session: new connections are let in, but their statements wait, as behind a connection pooler whose server sessions are all in use (or a server too busy to start one)';

/** What the worker logs when its watchdog closes a connection. */
const STALL_MESSAGE = "the database stopped answering the worker's connection: closing it to reconnect";

describe('the worker on a stalled network', async () => {
  const { db, url, name } = await createTestDatabase();
  const cleanups: (() => Promise<void>)[] = [];

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function proxyTo(target: string): Promise<TcpProxy> {
    const proxy = await startTcpProxy(target);
    cleanups.push(() => proxy.close());
    return proxy;
  }

  /** A worker, its log lines (debug and up) and the errors it survived. */
  async function startWorker(options: WorkerOptions): Promise<{ worker: Worker; messages: () => string[]; logs: () => Record<string, any>[]; errors: Error[] }> {
    const lines: string[] = [];
    const logger: Logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) });
    const worker = new Worker({ pollIntervalMs: 200, standbyIntervalMs: 100, watchdog: WATCHDOG, logger, ...options });
    const errors: Error[] = [];
    worker.on('error', (error) => errors.push(error));
    cleanups.push(() => worker.stop());
    await worker.start();
    await waitUntil(async () => worker.role === 'active', 'the worker to take the applier role');
    const logs = () => lines.map((line) => JSON.parse(line) as Record<string, any>);
    return { worker, errors, logs, messages: () => logs().map((entry) => entry.msg as string) };
  }

  const seed = () => seedSmallGraph(db);
  const mutate = (state: GraphState, count: number, seedValue: number) => applyRandomMutations(db, state, count, seedValue);

  /** Nothing pending, and the table is what the reference model and a full recomputation say. */
  async function expectConverged(state: GraphState): Promise<void> {
    await waitUntil(async () => (await db.query(sql`select count(*)::int as n from permgraph.changes`))[0].n === 0, 'the worker to drain the changes');
    expect(await readPermissions(db)).toEqual(model.computePermissions(state.snapshot()));
    expect((await verify(db)).differences).toEqual([]);
  }

  /** The pid of the worker's session on the server (not its listener's), once there is exactly one. */
  async function workerBackendPid(): Promise<number> {
    let pid = 0;
    await waitUntil(async () => {
      const rows = await db.query(sql`select pid from pg_stat_activity where datname = current_database() and application_name = ${WORKER_APPLICATION_NAME}`);
      pid = rows.length === 1 ? rows[0].pid : 0;
      return pid !== 0;
    }, "the worker's session");
    return pid;
  }

  /**
   * Runs `during` while another session holds a lock that the worker's next
   * batch waits for (changes are written, and the batch is seen waiting),
   * then releases it.
   */
  async function withBatchWaitingForLock(state: GraphState, seedValue: number, during: () => Promise<void>): Promise<void> {
    const holder = openPool(url, { poolSize: 1 });
    try {
      await holder.tx(async (tx) => {
        await tx.query(sql`lock table permgraph.permissions in access exclusive mode`);
        await mutate(state, 5, seedValue);
        await waitForWorkerBlocked(db);
        await during();
      });
    } finally {
      await holder.dispose();
    }
  }

  it('notices a partition during a batch, closes its connection and catches up once the network is back; the LISTEN connection too', async () => {
    const state = await seed();
    const proxy = await proxyTo(url);
    const { worker, errors, messages } = await startWorker({ url: proxy.url });
    const metrics = createWorkerMetrics(worker, db);
    await waitUntil(async () => messages().includes('listener connected'), 'the listener to connect');
    await withBatchWaitingForLock(state, 101, async () => {
      proxy.stall();
      // Nothing answers now: not the batch, not the probes, not the listener's check.
      await waitUntil(async () => errors.some((e) => e instanceof ConnectionStalledError), 'the worker to notice the stall');
      await waitUntil(async () => messages().includes('listener reconnecting'), 'the listener to notice the stall');
    });
    // The lock is released: the old session may commit its batch, whose answer the proxy holds.
    proxy.resume();
    await mutate(state, 5, 102);
    await expectConverged(state);
    await waitUntil(async () => worker.role === 'active', 'the worker to take the role again');
    expect(messages()).toContain(STALL_MESSAGE);
    const stall = errors.find((e) => e instanceof ConnectionStalledError)!;
    expect(stall.message).toMatch(/^the database stopped answering: a batch got no answer for [\d.]+ s, nor did 2 probe\(s\) over a new connection/);
    const text = await metrics.metrics();
    expect(Number(/^permgraph_worker_stalled_connections_total (\d+)$/m.exec(text)?.[1])).toBeGreaterThanOrEqual(1);
    expect(Number(/^permgraph_worker_errors_total (\d+)$/m.exec(text)?.[1])).toBe(errors.length);
  });

  it('a partition after a long busy batch, once the probes are at their longest interval, is still noticed', async () => {
    const state = await seed();
    const proxy = await proxyTo(url);
    const { errors, logs } = await startWorker({ url: proxy.url, listen: false });
    const atLongest = () => logs().filter((entry) => entry.msg === ALIVE_MESSAGE && entry.nextCheckInMs === WATCHDOG.maxCheckIntervalMs);
    await withBatchWaitingForLock(state, 801, async () => {
      await waitUntil(async () => atLongest().length >= 2, 'the probes to reach their longest interval');
      expect(errors).toEqual([]);
      proxy.stall();
      await waitUntil(async () => errors.some((e) => e instanceof ConnectionStalledError), 'the worker to notice the stall');
    });
    proxy.resume();
    await mutate(state, 5, 802);
    await expectConverged(state);
    expect(errors.find((e) => e instanceof ConnectionStalledError)?.message).toMatch(/^the database stopped answering: a batch got no answer for [\d.]+ s, nor did 2 probe\(s\) over a new connection/);
  });

  /** A batch that waits for a lock through many of the watchdog's intervals finishes on its first connection; returns the states the probes read. */
  async function expectLongBatchLeftAlone(workerUrl: string, seedValue: number): Promise<(string | null)[]> {
    const state = await seed();
    const proxy = await proxyTo(workerUrl);
    const { errors, messages, logs } = await startWorker({ url: proxy.url, listen: false });
    const pid = await workerBackendPid();
    const probed = () => logs().filter((entry) => entry.msg === ALIVE_MESSAGE);
    await withBatchWaitingForLock(state, seedValue, async () => {
      await waitUntil(async () => probed().length >= 5, 'the watchdog to probe the waiting batch');
    });
    await expectConverged(state);
    expect(errors).toEqual([]);
    expect(messages()).not.toContain(STALL_MESSAGE);
    expect(await workerBackendPid()).toBe(pid); // the same session all along
    return [...new Set(probed().map((entry) => entry.probe.state as string | null))];
  }

  it('leaves a batch that is merely long alone: its session is alive and busy, as a login that sees its own sessions can tell', async () => {
    const login = await createLogin(db, url, 'watched_worker', 'permgraph_worker');
    expect(await expectLongBatchLeftAlone(login.url, 201)).toEqual(['active']);
  });

  it('leaves it alone too for a login that cannot read its own session\'s state (its sessions switch role): there is a session, which is enough', async () => {
    const login = await createLogin(db, url, 'switching_worker', 'permgraph_worker');
    await db.query(sql`alter role ${sql.ident(login.name)} set role = 'permgraph_worker'`);
    expect(await expectLongBatchLeftAlone(login.url, 202)).toEqual([null]);
  });

  it("a connection that stalls alone while the server is reachable: the probe finds its session idle, ends it, and the worker goes on over a new one", async () => {
    // (a middlebox that lost one connection's state: that connection hangs, new ones pass)
    const login = await createLogin(db, url, 'stuck_worker', 'permgraph_worker');
    const state = await seed();
    const proxy = await proxyTo(login.url);
    const { worker, errors } = await startWorker({ url: proxy.url, listen: false });
    const pid = await workerBackendPid();
    proxy.stall({ newConnections: 'forward' });
    await mutate(state, 10, 301);
    // Applied while the old connection is still stalled: the probe ended its
    // session, so the applier role it held is free for the new one.
    await expectConverged(state);
    expect(worker.role).toBe('active');
    const stall = errors.find((e) => e instanceof ConnectionStalledError);
    expect(stall?.message).toMatch(new RegExp(`its session ${pid} has been idle( in transaction)? for [\\d.]+ s \\(the probe ended it\\)`));
    expect(await workerBackendPid()).not.toBe(pid);
    proxy.resume();
  });

  it('a connection that stalls during its set-up, before its session is known to ask about: closed once the set-up\'s time is up, and the worker goes on over a new one', async () => {
    const state = await seed();
    const proxy = await proxyTo(url);
    // (the set-up's first statement: that connection stalls there, new ones pass)
    proxy.stallWhen('default_transaction_isolation');
    const { errors } = await startWorker({ url: proxy.url, listen: false });
    const stall = errors.find((e) => e instanceof ConnectionStalledError);
    expect(stall?.message).toMatch(/^the database stopped answering: the session set-up got no answer for [\d.]+ s/);
    await mutate(state, 5, 351);
    await expectConverged(state);
    proxy.resume();
  });

  it('a connection that stalls alone during a batch whose session the server then ends: the probe finds it gone', async () => {
    const state = await seed();
    const proxy = await proxyTo(url);
    const { errors } = await startWorker({ url: proxy.url, listen: false });
    const pid = await workerBackendPid();
    await withBatchWaitingForLock(state, 401, async () => {
      proxy.stall({ newConnections: 'forward' });
      // what the server's keepalives do to a session whose client went silent
      await db.query(sql`select pg_terminate_backend(${pid}::int)`);
      await waitUntil(async () => errors.some((e) => e instanceof ConnectionStalledError), 'the worker to notice its session is gone');
    });
    await expectConverged(state);
    expect(errors.find((e) => e instanceof ConnectionStalledError)?.message).toContain(`the server has no session ${pid} any more`);
    proxy.resume();
  });

  it('a URL that lists several hosts: the probe asks the server the session is connected to, and a long batch is left alone', async () => {
    const state = await seed();
    const proxy = await startTcpProxy(url, { host: '127.0.0.3' });
    cleanups.push(() => proxy.close());
    // Nothing listens on 127.0.0.2 at that port: the worker's connection
    // goes to the second host, as libpq's would.
    const hosts = new URL(proxy.url);
    const severalHosts = proxy.url.replace(`@${hosts.host}/`, `@127.0.0.2,${hosts.host}/`);
    expect(severalHosts).toContain('@127.0.0.2,127.0.0.3:');
    const { errors, logs } = await startWorker({ url: severalHosts, listen: false });
    const pid = await workerBackendPid();
    const alive = () => logs().filter((entry) => entry.msg === ALIVE_MESSAGE);
    await withBatchWaitingForLock(state, 701, async () => {
      await waitUntil(async () => alive().length >= 3 || errors.length > 0, 'the watchdog to probe the waiting batch');
    });
    await expectConverged(state);
    expect(errors).toEqual([]);
    expect(await workerBackendPid()).toBe(pid);
  });

  it('a probe that reaches another server than its session\'s (a name, or a load balancer, that leads to several) takes nothing it finds there for its session', async () => {
    const clusters = await ClusterSet.create();
    cleanups.push(() => clusters.stopAll());
    const other = await clusters.startFresh('other');
    const otherAdmin = openPool(other.url(), { poolSize: 1 });
    await otherAdmin.query(sql`create database ${sql.ident(name)}`); // (the same name, empty: no session of the worker's there)
    // the worker's login and password there too, so that its probes get in,
    // as on a second server of one deployment (under `npm run test:postgres`
    // the suite's own server trusts its logins, and its URL has no password)
    const login = new URL(url);
    login.password ||= 'permgraph-test-password';
    const [{ statement }] = await otherAdmin.query(sql`
      select format('alter role %I password %L', ${decodeURIComponent(login.username)}::text, ${decodeURIComponent(login.password)}::text) as statement`);
    await otherAdmin.query(sql.__dangerous__rawValue(statement));
    await otherAdmin.dispose();
    const state = await seed();
    const proxy = await proxyTo(login.toString());
    const { errors, logs } = await startWorker({ url: proxy.url, listen: false });
    const pid = await workerBackendPid();
    proxy.retarget(withDatabase(other.url(), name)); // the probes' connections now reach the other server
    const probesSoFar = proxy.connections();
    await withBatchWaitingForLock(state, 702, async () => {
      await waitUntil(async () => proxy.connections() >= probesSoFar + 3 || errors.length > 0, 'the watchdog to probe the waiting batch');
    });
    await expectConverged(state);
    expect(errors).toEqual([]);
    expect(await workerBackendPid()).toBe(pid);
    expect(logs().filter((entry) => entry.probe?.kind === 'elsewhere').map((entry) => entry.msg)).toEqual([
      "still waiting for the database; a probe reached another server than its session's, so whether its session is alive is unknown",
    ]);
  });

  it('a URL that lists several socket directories: the probe asks the server the session reached there, not the URL, and a long batch is left alone', async () => {
    // Two servers on one port, each listening only on a socket directory of
    // its own. The first listed (a) has no database of the worker's name when
    // the worker connects, so its connection goes to the second (b), as
    // libpq's would; then a gets one, as a second server of one deployment
    // might, where the worker's session is not.
    const clusters = await ClusterSet.create();
    cleanups.push(() => clusters.stopAll());
    const dirs = { a: await clusters.socketDirectory('run-a'), b: await clusters.socketDirectory('run-b') };
    const b = await clusters.startFresh('b', socketsOnly(dirs.b));
    await clusters.startFresh('a', socketsOnly(dirs.a), b.port);
    const database = 'permgraph_sockets';
    const at = (directories: string[]) => socketUrl(directories, b.port, database);
    const createDatabase = async (dir: string) => {
      const admin = openPool(socketUrl([dir], b.port), { poolSize: 1 });
      await admin.query(sql`create database ${sql.ident(database)}`);
      await admin.dispose();
    };
    await createDatabase(dirs.b);
    const onB = openPool(at([dirs.b]), { poolSize: 4 });
    cleanups.push(() => onB.dispose());
    await migrate(onB);
    const state = await seedSmallGraph(onB);
    const { worker, errors, logs, messages } = await startWorker({ url: at([dirs.a, dirs.b]) });
    await waitUntil(async () => messages().includes('listener connected'), 'the listener to connect');
    const workerPid = async () =>
      (await onB.query(sql`select pid from pg_stat_activity where datname = current_database() and application_name = ${WORKER_APPLICATION_NAME}`)).map((r: { pid: number }) => r.pid);
    const [pid] = await workerPid();
    expect(pid, "the worker's session on b").toBeDefined();
    await createDatabase(dirs.a);
    const alive = () => logs().filter((entry) => entry.msg === ALIVE_MESSAGE);
    const holder = openPool(at([dirs.b]), { poolSize: 1 });
    try {
      await holder.tx(async (tx) => {
        await tx.query(sql`lock table permgraph.permissions in access exclusive mode`);
        await applyRandomMutations(onB, state, 5, 703);
        await waitForWorkerBlocked(onB);
        await waitUntil(async () => alive().length >= 3 || errors.length > 0, 'the watchdog to probe the waiting batch');
      });
    } finally {
      await holder.dispose();
    }
    await waitUntil(async () => (await onB.query(sql`select count(*)::int as n from permgraph.changes`))[0].n === 0, 'the worker to drain the changes');
    expect(errors).toEqual([]);
    expect(messages()).not.toContain(STALL_MESSAGE);
    expect(await readPermissions(onB)).toEqual(model.computePermissions(state.snapshot()));
    expect(await workerPid()).toEqual([pid]); // the same session all along
    expect(worker.role).toBe('active');
  });

  it('a probe under way when the statement is answered ends nothing: the worker may sit idle on that session next', async () => {
    // The statement was answered before the probe read the session (a client
    // slow to read its answer: the worker's event loop was busy); the session
    // is idle, legitimately, while the worker goes on without it.
    const pool = openPool(url, { poolSize: 1 });
    cleanups.push(() => pool.dispose());
    const probe = createProbe(url, 3000);
    const probes: Promise<ProbeOutcome>[] = [];
    let probeStarted!: () => void;
    const started = new Promise<void>((resolve) => (probeStarted = resolve));
    await pool.task(async (conn) => {
      const [me] = await conn.query(sql`select pid, extract(epoch from backend_start)::text as started from pg_stat_activity where pid = pg_backend_pid()`);
      const watchdog = new ConnectionWatchdog({
        timings: WATCHDOG,
        probe: (...args: Parameters<Probe>) => {
          const outcome = probe(...args);
          probes.push(outcome);
          probeStarted();
          return outcome;
        },
        closeConnection: () => closeConnectionNow(conn),
        logger: pino({ level: 'silent' }),
      });
      watchdog.identify({ pid: me.pid, startedAt: me.started });
      await watchdog.watch('a batch', async () => {
        await conn.query(sql`select 1`);
        await started; // the answer read only once the probe has started
      });
      await Promise.all(probes);
      await new Promise((r) => setTimeout(r, 100));
      expect((await conn.query(sql`select pg_backend_pid() as pid`))[0].pid).toBe(me.pid);
    });
    expect(probes.length).toBe(1);
  });

  it('stop() during a stalled batch returns without waiting for the network; what the batch did is whole', async () => {
    const state = await seed();
    const proxy = await proxyTo(url);
    const { worker, messages } = await startWorker({ url: proxy.url });
    await waitUntil(async () => messages().includes('listener connected'), 'the listener to connect');
    let stopped = false;
    await withBatchWaitingForLock(state, 501, async () => {
      proxy.stall();
      await new Promise((r) => setTimeout(r, 100)); // (the stall is under way before the stop)
      const stopping = worker.stop().then(() => (stopped = true));
      await waitUntil(async () => stopped, 'stop() to return', 60_000);
      await stopping;
    });
    expect(worker.role).toBeUndefined();
    proxy.resume();
    // The batch committed or rolled back whole: what it left pending applies cleanly.
    await waitUntil(async () => (await db.query(sql`select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name = ${WORKER_APPLICATION_NAME}`))[0].n === 0, "the old session to end");
    await applyChanges(db);
    expect(await readPermissions(db)).toEqual(model.computePermissions(state.snapshot()));
  });
});

describe('the watchdog decides from its probes', () => {
  /** A watchdog whose probes answer `outcomes` in turn (the last one again), over a statement that never ends unless closed. */
  async function watchHanging(
    outcomes: ProbeOutcome[],
    waitMs: number,
    { identified = true, logger = pino({ level: 'silent' }) as Logger } = {},
  ): Promise<{ closed: boolean; error: unknown; probes: number }> {
    let probes = 0;
    let fail!: (error: Error) => void;
    const hanging = new Promise<never>((_, reject) => (fail = reject));
    const watchdog = new ConnectionWatchdog({
      timings: { checkIntervalMs: 10, checkTimeoutMs: 10, maxCheckIntervalMs: 40 },
      probe: async () => outcomes[Math.min(probes++, outcomes.length - 1)]!,
      closeConnection: () => {
        fail(new Error('Connection terminated unexpectedly'));
        return true;
      },
      logger,
    });
    if (identified) watchdog.identify({ pid: 1, startedAt: null });
    let error: unknown;
    const watched = watchdog.watch('a batch', () => hanging).catch((e: unknown) => (error = e));
    await Promise.race([watched, new Promise((r) => setTimeout(r, waitMs))]);
    fail(new Error('ended by the test'));
    await watched;
    return { closed: error instanceof ConnectionStalledError, error, probes };
  }

  it('a session alive and busy, a server that refuses the probe or is slow to answer it, or another server than the session\'s, never closes the connection', async () => {
    expect(await watchHanging([{ kind: 'alive', state: 'active' }], 200)).toMatchObject({ closed: false });
    expect(await watchHanging([{ kind: 'refused', reason: 'too many clients already' }], 200)).toMatchObject({ closed: false });
    expect(await watchHanging([{ kind: 'slow', reason: 'logged in, then no answer within 10 ms' }], 200)).toMatchObject({ closed: false });
    expect(await watchHanging([{ kind: 'elsewhere', server: '10.0.0.2 port 5432' }], 200)).toMatchObject({ closed: false });
  });

  it('one unanswered probe is not a stall; two in a row are', async () => {
    const once = await watchHanging([{ kind: 'unanswered', reason: 'timeout' }, { kind: 'alive', state: 'active' }], 200);
    expect(once).toMatchObject({ closed: false });
    expect(once.probes).toBeGreaterThan(2);
    expect(await watchHanging([{ kind: 'unanswered', reason: 'timeout' }], 5_000)).toMatchObject({ closed: true, probes: 2 });
  });

  it('a session gone, or idle while the worker waits for it, is a stall at once', async () => {
    expect(await watchHanging([{ kind: 'gone' }], 5_000)).toMatchObject({ closed: true, probes: 1 });
    expect(await watchHanging([{ kind: 'stuck', state: 'idle', idleMs: 20, ended: true }], 5_000)).toMatchObject({ closed: true, probes: 1 });
  });

  it('after each probe that finds the session busy the next waits twice as long, up to the longest interval; a stall after that is met as before', async () => {
    const lines: Record<string, any>[] = [];
    const logger: Logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const busy: ProbeOutcome = { kind: 'alive', state: 'active' };
    const outcome = await watchHanging([busy, busy, busy, busy, busy, { kind: 'unanswered', reason: 'timeout' }], 10_000, { logger });
    expect(outcome).toMatchObject({ closed: true, probes: 7 });
    // (the check interval is 10 ms and the longest 40 ms)
    expect(lines.filter((entry) => entry.msg === ALIVE_MESSAGE).map((entry) => entry.nextCheckInMs)).toEqual([20, 40, 40, 40, 40]);
  });

  it('a statement before the session is known: the probe asks only whether a new connection is answered, and the statement is closed once its time is up', async () => {
    for (const outcome of [{ kind: 'answered' }, { kind: 'unanswered', reason: 'timeout' }, { kind: 'refused', reason: 'too many clients already' }] as ProbeOutcome[]) {
      const unknown = await watchHanging([outcome], 5_000, { identified: false });
      expect(unknown, outcome.kind).toMatchObject({ closed: true, probes: 1 });
      expect((unknown.error as Error).message).toMatch(/^the database stopped answering: a batch got no answer for [\d.]+ s, which takes milliseconds; closed the connection$/);
    }
  });

  it('a statement before the session is known, while new connections are let in but their statements wait (a pooler whose sessions are all in use): waited for, saying so once, not closed as a stall', async () => {
    // (before, it was closed as a stall once its time was up, and the worker reconnected into the same queue)
    const lines: Record<string, any>[] = [];
    const logger: Logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const queued = await watchHanging([{ kind: 'slow', reason: 'the server began to answer, then not within 10 ms' }], 300, { identified: false, logger });
    expect(queued).toMatchObject({ closed: false });
    expect(queued.probes).toBeGreaterThan(1);
    expect(lines.filter((entry) => entry.level >= 40).map((entry) => entry.msg)).toEqual([WAITING_FOR_SESSION]);
  });

  it('a statement that answers in time is never probed', async () => {
    let probes = 0;
    const watchdog = new ConnectionWatchdog({
      timings: { checkIntervalMs: 50, checkTimeoutMs: 50, maxCheckIntervalMs: 50 },
      probe: async () => (probes++, { kind: 'alive', state: 'active' }),
      closeConnection: () => true,
      logger: pino({ level: 'silent' }),
    });
    watchdog.identify({ pid: 1, startedAt: null });
    expect(await watchdog.watch('a batch', async () => 'done')).toBe('done');
    await new Promise((r) => setTimeout(r, 150));
    expect(probes).toBe(0);
  });
});

/**
 * A server that takes connections and says nothing (a host whose network
 * drops every packet after the handshake), or, with answerLogin, says only
 * that the client is logged in (AuthenticationOk) and nothing more: a server
 * too busy to start the session, or a connection pooler whose pool is full,
 * which queues the client until a server connection is free. `open` holds
 * the connections the client has not closed.
 */
async function startMuteServer({ answerLogin = false } = {}): Promise<{ url: string; open: Set<Socket>; connections: () => number; close: () => Promise<void> }> {
  const open = new Set<Socket>();
  const all = new Set<Socket>();
  const server = createServer((socket) => {
    open.add(socket);
    all.add(socket);
    socket.on('error', () => {});
    socket.once('close', () => open.delete(socket));
    socket.resume(); // (read, so that the client's close is seen)
    if (answerLogin) socket.once('data', () => socket.write(Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 0]))); // 'R', length 8, AuthenticationOk
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `postgres://someone@127.0.0.1:${port}/somedb`,
    open,
    connections: () => all.size,
    close: async () => {
      for (const socket of all) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('a probe tells a slow server from an unreachable one', () => {
  it('a server that answered the login but not in time is slow, not out of reach: the watchdog does not count it as unanswered', async () => {
    const server = await startMuteServer({ answerLogin: true });
    try {
      const outcome = await createProbe(server.url, 300)({ pid: 1, startedAt: null }, 300);
      expect(outcome.kind).toBe('slow');
      // (asking about no session: a connection's set-up, a queue in a pooler)
      expect((await createProbe(server.url, 300)(undefined, 300)).kind).toBe('slow');
    } finally {
      await server.close();
    }
  });

  it('one that never says anything is unanswered', async () => {
    const server = await startMuteServer();
    try {
      const outcome = await createProbe(server.url, 300)({ pid: 1, startedAt: null }, 300);
      expect(outcome.kind).toBe('unanswered');
    } finally {
      await server.close();
    }
  });

  it('a probe abandoned under way (its statement was answered) says so, not that the server refused it, and closes its connection', async () => {
    const server = await startMuteServer();
    try {
      const answered = new AbortController();
      const probing = createProbe(server.url, 60_000)({ pid: 1, startedAt: null }, 300, answered.signal);
      await waitUntil(async () => server.connections() === 1, 'the probe to connect');
      answered.abort();
      expect(await probing).toEqual({ kind: 'abandoned' });
      await waitUntil(async () => server.open.size === 0, 'the probe to close its connection');
    } finally {
      await server.close();
    }
  });

  it('under sslmode=prefer its one-time TLS check is bound by the probe too: it ends at the deadline, or when the probe is abandoned', async () => {
    // (the check asks whether the server takes TLS: a server that never
    // answers leaves it waiting; bounded on its own only by CONNECT_TIMEOUT_MS)
    const server = await startMuteServer();
    const url = `${server.url}?sslmode=prefer`;
    // (half the check's own timeout: had the probe not closed it, it would still be open)
    const closedByTheProbe = (what: string) => waitUntil(async () => server.open.size === 0, what, CONNECT_TIMEOUT_MS / 2);
    try {
      expect((await createProbe(url, 300)({ pid: 1, startedAt: null }, 300)).kind).toBe('unanswered');
      expect(server.connections()).toBe(1);
      await closedByTheProbe('the probe to close its TLS check at its deadline');

      const answered = new AbortController();
      const probing = createProbe(url, 60_000)({ pid: 1, startedAt: null }, 300, answered.signal);
      await waitUntil(async () => server.connections() === 2, 'the second probe to connect');
      answered.abort();
      expect(await probing).toEqual({ kind: 'abandoned' });
      await closedByTheProbe('the abandoned probe to close its TLS check');
    } finally {
      await server.close();
    }
  });
});

describe('the LISTEN connection, closed while it reconnects', () => {
  it('a reconnect that finishes after close() is closed without waiting for the server to answer its goodbye: LISTEN done, or refused', async () => {
    for (const listenAnswer of ['ok', 'error'] as const) {
      const server = await startFakePostgres();
      try {
        // (no check query during the test: its intervals are far longer)
        const listener = await startListener(server.url, () => {}, silentLogger, { checkIntervalMs: 600_000, checkTimeoutMs: 600_000 });
        server.holdNewConnections();
        server.dropAll(); // the listener reconnects, on a connection the server holds unanswered
        await waitUntil(async () => server.connections() === 2, 'the listener to reconnect');
        await listener.close();
        server.listenAnswer = listenAnswer;
        server.release(); // the reconnect finishes after close(): logged in, then its LISTEN answered
        // the server never answers the goodbye: the listener closes its socket itself
        await waitUntil(async () => server.open.size === 0, `the listener to close the connection it made after close() (LISTEN ${listenAnswer})`);
      } finally {
        await server.close();
      }
    }
  });
});
