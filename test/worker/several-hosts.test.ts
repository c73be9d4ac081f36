// The LISTEN connection (src/worker/listener.ts) on a URL that lists several
// hosts, which the pool reads (it tries them in turn, like libpq) and
// node-pg alone does not: the worker and `changes --follow` must start on
// it, be woken by NOTIFY, and, when the host they listen on goes, move to
// the next listed host that answers rather than retry the dead one. The
// hosts are TCP proxies in front of the test server (two ports, one server:
// what NOTIFY reaches is the same), after a first one where nothing listens.
// Every worker and follower here polls once in ten minutes: only a
// notification wakes them within the test's waits.
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { CHANGES_LISTENER_APPLICATION_NAME, LISTENER_APPLICATION_NAME, WORKER_APPLICATION_NAME } from '../../src/constants.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import { applyChanges, type BatchResult } from '../../src/engine/apply.ts';
import { registerConsumer } from '../../src/engine/changes.ts';
import { verify } from '../../src/engine/verify.ts';
import type { Logger } from '../../src/logger.ts';
import { startListener } from '../../src/worker/listener.ts';
import { Worker } from '../../src/worker/worker.ts';
import * as model from '../reference/model.ts';
import { collect, spawnCli, waitUntil } from '../helpers/cli.ts';
import { ClusterSet, socketsOnly, socketUrl } from '../helpers/cluster.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { readPermissions } from '../helpers/graph.ts';
import { applyRandomMutations, GraphState, seedSmallGraph } from '../helpers/mutations.ts';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';

/** Longer than any wait of these tests: a poll never comes in time. */
const NEVER_MS = 600_000;

describe('the LISTEN connection on a URL listing several hosts', async () => {
  const { db, url } = await createTestDatabase();
  const cleanups: (() => Promise<unknown>)[] = [];

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  /** `url` with its host and port replaced by `hosts`, written as libpq reads them ('h1:p1,h2:p2', 'h1,h2:p'). */
  const listing = (hosts: string) => url.replace(`@${new URL(url).host}/`, `@${hosts}/`);

  /** Three proxies to the test server, and a URL listing first a port where nothing listens (1), then them. */
  async function threePorts(): Promise<{ a: TcpProxy; b: TcpProxy; c: TcpProxy; url: string }> {
    const [a, b, c] = [await startTcpProxy(url), await startTcpProxy(url), await startTcpProxy(url)];
    cleanups.push(() => a.close(), () => b.close(), () => c.close());
    const hostOf = (proxy: TcpProxy) => new URL(proxy.url).host;
    return { a, b, c, url: listing(`127.0.0.1:1,${hostOf(a)},${hostOf(b)},${hostOf(c)}`) };
  }

  /** A logger that keeps the messages it is given. */
  function recorder(): { logger: Logger; messages: () => string[]; count: (msg: string) => number } {
    const lines: string[] = [];
    const logger: Logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const messages = () => lines.map((line) => JSON.parse(line).msg as string);
    return { logger, messages, count: (msg) => messages().filter((m) => m === msg).length };
  }

  it('the listener starts where the first host is down, is woken by NOTIFY, and moves to the next host when its own goes', async () => {
    const channel = 'permgraph_test_several_hosts';
    const { a, b, c, url: several } = await threePorts();
    const { logger, count } = recorder();
    let wakes = 0;
    const listener = await startListener(several, () => wakes++, logger, { channel });
    cleanups.push(() => listener.close());
    const notified = async (what: string) => {
      const before = wakes;
      await db.query(sql`select pg_notify(${channel}, '')`);
      await waitUntil(async () => wakes > before, what);
    };
    await notified('a wake-up by NOTIFY');
    expect([a.connections(), b.connections(), c.connections()]).toEqual([1, 0, 0]);
    await a.close(); // the host it listens on goes (its connection closed, nothing listens there any more)
    await waitUntil(async () => count('listener connected') === 2, 'the listener to reconnect');
    expect([b.connections(), c.connections()]).toEqual([1, 0]);
    await notified('a wake-up by NOTIFY through the next host');
    // Its connection lost again, the listener starts over from the first
    // host, as libpq and the pool do: the first that answers (b again), not
    // the one after the host it was on.
    await db.query(sql`
      select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and application_name = ${LISTENER_APPLICATION_NAME}`);
    await waitUntil(async () => count('listener connected') === 3, 'the listener to reconnect again');
    expect([b.connections(), c.connections()]).toEqual([2, 0]);
    await notified('a wake-up by NOTIFY after reconnecting again');
  });

  it('after a loss the listener starts over from the first host, which answers again, not from the host it was on', async () => {
    const channel = 'permgraph_test_first_again';
    const [a, b] = [await startTcpProxy(url), await startTcpProxy(url)];
    cleanups.push(() => a.close(), () => b.close());
    const hostOf = (proxy: TcpProxy) => new URL(proxy.url).host;
    // The first host's server is down: a's connections are closed at once
    // (its upstream is a port where nothing listens).
    a.retarget(listing('127.0.0.1:1'));
    const { logger, count } = recorder();
    let wakes = 0;
    const listener = await startListener(listing(`${hostOf(a)},${hostOf(b)}`), () => wakes++, logger, { channel });
    cleanups.push(() => listener.close());
    expect([a.connections(), b.connections()]).toEqual([1, 1]);
    a.retarget(url); // the first host's server is back
    await db.query(sql`
      select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and application_name = ${LISTENER_APPLICATION_NAME}`);
    await waitUntil(async () => count('listener connected') === 2, 'the listener to reconnect');
    // the first host again, not b, where the lost connection was
    expect([a.connections(), b.connections()]).toEqual([2, 1]);
    const before = wakes;
    await db.query(sql`select pg_notify(${channel}, '')`);
    await waitUntil(async () => wakes > before, 'a wake-up by NOTIFY through the first host');
  });

  it('the listener on hosts that share a port (the first down) is woken by NOTIFY', async () => {
    const channel = 'permgraph_test_shared_port';
    const { hostname, port } = new URL(url);
    const { logger } = recorder();
    let wakes = 0;
    // (nothing listens on 127.0.0.2)
    const listener = await startListener(listing(`127.0.0.2,${hostname}:${port}`), () => wakes++, logger, { channel });
    cleanups.push(() => listener.close());
    const before = wakes;
    await db.query(sql`select pg_notify(${channel}, '')`);
    await waitUntil(async () => wakes > before, 'a wake-up by NOTIFY');
  });

  it('the listener on a URL listing Unix socket directories (host=/…/a,/…/b, nothing listening in the first) is woken by NOTIFY', async () => {
    // (before, the one host was written into the URL as a host name, which a
    // directory is not: the URL kept its list, read by node-pg as one socket path)
    const clusters = await ClusterSet.create();
    cleanups.push(() => clusters.stopAll());
    const [empty, dir] = [await clusters.socketDirectory('run-a'), await clusters.socketDirectory('run-b')];
    const server = await clusters.startFresh('b', socketsOnly(dir));
    const channel = 'permgraph_test_socket_directories';
    const { logger } = recorder();
    let wakes = 0;
    const listener = await startListener(socketUrl([empty, dir], server.port), () => wakes++, logger, { channel });
    cleanups.push(() => listener.close());
    const notifier = openPool(socketUrl([dir], server.port), { poolSize: 1 });
    cleanups.push(() => notifier.dispose());
    await notifier.query(sql`select pg_notify(${channel}, '')`);
    await waitUntil(async () => wakes > 0, 'a wake-up by NOTIFY through the second directory');
  });

  it('a worker on such a URL applies changes woken by NOTIFY, and still does once the host it listens on has gone', async () => {
    const state = await seedSmallGraph(db);
    const { a, b, url: several } = await threePorts();
    const { logger, count } = recorder();
    const worker = new Worker({ url: several, pollIntervalMs: NEVER_MS, standbyIntervalMs: 100, logger });
    cleanups.push(() => worker.stop());
    await worker.start();
    await waitUntil(async () => worker.role === 'active' && count('listener connected') === 1, 'the worker to start');
    await appliedAfterNotify(worker, state, 1);
    expect(b.connections()).toBe(0);
    // The worker's connection and its listener's both go with the first proxy.
    await a.close();
    await waitUntil(async () => count('listener connected') === 2 && count('holding the applier role') === 2, 'the worker and its listener to reconnect');
    expect(b.connections()).toBe(2);
    await appliedAfterNotify(worker, state, 2);
  });

  it('changes --follow on such a URL prints what batches commit, and still does once the host it listens on has gone', async () => {
    const state = await seedSmallGraph(db);
    await applyChanges(db);
    await registerConsumer(db, 'several');
    const { a, b, url: several } = await threePorts();
    const child = spawnCli(['--database-url', several, 'changes', '--consumer', 'several', '--follow', '--json', '--poll-interval', String(NEVER_MS)]);
    const done = collect(child);
    cleanups.push(async () => (child.exitCode === null ? (child.kill('SIGKILL'), done) : done));
    let stdout = '';
    child.stdout!.on('data', (chunk) => (stdout += chunk));
    const follower = async () => (await db.query(sql`
      select pid from pg_stat_activity where datname = current_database() and application_name = ${CHANGES_LISTENER_APPLICATION_NAME}`)) as { pid: number }[];
    await waitUntil(async () => (await follower()).length === 1, 'the follower to LISTEN');
    const first = (await follower())[0]!.pid;
    const printed = async (round: number) => {
      const lines = () => stdout.split('\n').filter((line) => line !== '');
      const before = lines().length;
      await applyRandomMutations(db, state, 5, 200 + round);
      const batch = await applyChanges(db);
      expect(batch.mode).not.toBe('none');
      await waitUntil(async () => lines().length > before, `round ${round}'s events to be printed`);
      // (acknowledged, so that no acknowledgement is under way when the proxy goes)
      await waitUntil(async () => (await db.query(sql`select count(*)::int as n from permgraph.permission_changes`))[0].n === 0, `round ${round}'s acknowledgement`);
    };
    await printed(1);
    expect(b.connections()).toBe(0);
    await a.close();
    await waitUntil(async () => {
      const rows = await follower();
      return rows.length === 1 && rows[0]!.pid !== first;
    }, 'the follower to LISTEN again');
    expect(b.connections()).toBeGreaterThan(0);
    await printed(2);
    child.kill('SIGTERM');
    expect((await done).code).toBe(0);
  });

  /**
   * Writes changes once the worker waits (its session idle after a batch,
   * nothing pending), and waits until a batch has applied them: only a
   * NOTIFY wakes it in time. Then the table must be what the reference
   * model and a full recomputation say.
   */
  async function appliedAfterNotify(worker: Worker, state: GraphState, round: number): Promise<void> {
    const pending = async () => (await db.query(sql`select count(*)::int as n from permgraph.changes`))[0].n as number;
    await waitUntil(async () => {
      const rows = await db.query(sql`
        select state, query from pg_stat_activity where datname = current_database() and application_name = ${WORKER_APPLICATION_NAME}`);
      return rows.length === 1 && rows[0].state === 'idle' && String(rows[0].query).includes('permgraph.apply_changes(') && (await pending()) === 0;
    }, `the worker to wait (round ${round})`);
    let applied = 0;
    const count = (batch: BatchResult) => void (applied += batch.changes);
    worker.on('batch', count);
    try {
      await applyRandomMutations(db, state, 10, 100 + round);
      await waitUntil(async () => applied > 0 && (await pending()) === 0, `the worker to apply round ${round}'s changes`);
    } finally {
      worker.off('batch', count);
    }
    expect(await readPermissions(db)).toEqual(model.computePermissions(state.snapshot()));
    expect((await verify(db)).differences).toEqual([]);
  }
});
