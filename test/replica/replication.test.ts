// Reads on replicas, with real clusters: a primary (wal_level = logical), a
// hot standby streaming from it, and a third cluster subscribing to the
// primary's permission table by logical replication (docs/replicas.md).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Permgraph } from '../../src/client.ts';
import { openPool, sql, type ConnectionPool, type Queryable } from '../../src/db/pool.ts';
import { applyChanges, STANDBY_REFUSAL } from '../../src/engine/apply.ts';
import { currentToken, FreshnessTimeoutError, isApplied, waitFor } from '../../src/engine/freshness.ts';
import { migrate } from '../../src/migrations/migrate.ts';
import { Worker } from '../../src/worker/worker.ts';
import { runCli } from '../helpers/cli.ts';
import * as model from '../reference/model.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { ClusterSet, currentWalLsn, pauseReplay, PRIMARY_SETTINGS, resumeReplay, until, waitForReplay, type Cluster } from '../helpers/cluster.ts';
import { loadGraph, readPermissions } from '../helpers/graph.ts';
import { parseBlocks, REPO, splitStatements } from '../docs/doctest.ts';

const APP_DB = 'app';
const READER = 'app_reader';
const READER_PASSWORD = 'app-reader-password';

/** Before: alice writes eng (so roadmap and spec through ownership); bob reads ops. */
const before: model.RefGraph = {
  nodes: [u('alice'), u('bob'), u('carol'), g('eng'), g('roadmap', 'eng'), o('spec', 'roadmap'), g('ops'), o('runbook', 'ops')],
  grants: [grant('alice', 2, 'eng'), grant('bob', 1, 'ops'), grant('ops', 3, 'carol')],
};
/** After one transaction: bob writes eng, alice's grant is gone, carol manages roadmap. */
const after: model.RefGraph = {
  nodes: before.nodes,
  grants: [grant('bob', 1, 'ops'), grant('ops', 3, 'carol'), grant('bob', 2, 'eng'), grant('carol', 3, 'roadmap')],
};

/** Then dave, a new user, reads ops. */
const withDave: model.RefGraph = { nodes: [...after.nodes, u('dave')], grants: [...after.grants, grant('dave', 1, 'ops')] };

/** The statements of docs/replicas.md's subscriber block that create its tables (all but `create subscription`). */
function documentedSubscriberTables(): string[] {
  const page = readFileSync(path.join(REPO, 'docs/replicas.md'), 'utf8');
  const block = parseBlocks(page).find((b) => b.lang === 'sql' && b.code.includes('create subscription'));
  if (!block) throw new Error('docs/replicas.md: no sql block with `create subscription` (the subscriber\'s tables)');
  const statements = splitStatements(block.code).map((s) => s.text).filter((text) => !/^\s*create subscription/i.test(text));
  expect(statements.some((text) => /create table permgraph\.applier_state/i.test(text))).toBe(true);
  return statements;
}

/** Every (user, node, level) for which check() says yes, as "user node level". */
async function allowed(db: Queryable, graph: model.RefGraph): Promise<string[]> {
  const users = graph.nodes.filter((n) => n.kind === 'user').map((n) => n.id);
  const rows: { triple: string }[] = await db.query(sql`
    select concat_ws(' ', u, t, l) as triple
    from unnest(${users}::text[]) u, unnest(${graph.nodes.map((n) => n.id)}::text[]) t, generate_series(1, 3) l
    where permgraph.check(u, t, l) order by 1`);
  return rows.map((r) => r.triple);
}

function expectedAllowed(graph: model.RefGraph): string[] {
  const now = new Date();
  const triples: string[] = [];
  for (const user of graph.nodes.filter((n) => n.kind === 'user')) {
    for (const target of graph.nodes) {
      for (const level of [1, 2, 3] as const) {
        if (model.check(graph, user.id, target.id, level, now)) triples.push(`${user.id} ${target.id} ${level}`);
      }
    }
  }
  return triples.sort();
}

describe('replicas', () => {
  let clusters: ClusterSet;
  let primaryCluster: Cluster;
  let standbyCluster: Cluster;
  let subscriberCluster: Cluster;
  /** The primary's app database, as its owner (the worker's and the writers' side). */
  let primary: ConnectionPool;
  /** The standby's app database as an application login granted permgraph_reader. */
  let standby: ConnectionPool;
  /** The standby as a superuser, to pause and resume replay. */
  let standbyAdmin: ConnectionPool;
  const pools: ConnectionPool[] = [];
  const open = (url: string) => {
    const pool = openPool(url, { poolSize: 2 });
    pools.push(pool);
    return pool;
  };

  beforeAll(async () => {
    clusters = await ClusterSet.create();
    // The subscriber's initdb runs while the primary is set up.
    [[primaryCluster, standbyCluster], subscriberCluster] = await settled(startPrimaryAndStandby(), clusters.startFresh('subscriber'));
    primary = open(primaryCluster.url(APP_DB));
    const readerUrl = new URL(standbyCluster.url(APP_DB));
    [readerUrl.username, readerUrl.password] = [READER, READER_PASSWORD];
    standby = open(readerUrl.toString());
    standbyAdmin = open(standbyCluster.url(APP_DB));
  });

  async function startPrimaryAndStandby(): Promise<[Cluster, Cluster]> {
    const cluster = await clusters.startFresh('primary', PRIMARY_SETTINGS);
    const admin = openPool(cluster.url(), { poolSize: 1 });
    try {
      await admin.query(sql`create database ${sql.ident(APP_DB)}`);
      const app = openPool(cluster.url(APP_DB), { poolSize: 1 });
      await migrate(app).finally(() => app.dispose());
      // A login role created on the primary exists on the standby too.
      await admin.query(sql.__dangerous__rawValue(`create role ${READER} login password '${READER_PASSWORD}' in role permgraph_reader`));
    } finally {
      await admin.dispose();
    }
    return [cluster, await clusters.startStandby(cluster, 'standby')];
  }

  afterAll(async () => {
    await Promise.all(pools.map((pool) => pool.dispose()));
    await clusters?.stopAll();
  });

  async function caughtUp(): Promise<void> {
    await waitForReplay(standbyAdmin, await currentWalLsn(primary));
  }

  it('a worker pointed at the standby refuses to start, naming the primary; so does worker --once', async () => {
    const worker = new Worker({ url: standbyCluster.url(APP_DB), listen: false });
    await expect(worker.start()).rejects.toThrow(STANDBY_REFUSAL);
    await worker.stop();
    const once = await runCli(['--database-url', standbyCluster.url(APP_DB), 'worker', '--once']);
    expect(once).toMatchObject({ code: 1, stderr: `permgraph: ${STANDBY_REFUSAL}\n` });
  });

  it('a token is applied on a standby only once it has replayed the batch that applied it', async () => {
    await loadGraph(primary, before);
    await applyChanges(primary);
    await caughtUp();
    expect(await standby.query(sql`select pg_is_in_recovery() as standby, current_user as login`)).toEqual([{ standby: true, login: READER }]);
    expect(await readPermissions(standby)).toEqual(model.computePermissions(before));
    expect(await allowed(standby, before)).toEqual(expectedAllowed(before));

    await pauseReplay(standbyAdmin);
    const token = await primary.tx(async (tx) => {
      await tx.query(sql`delete from permgraph.grants where tail_id = 'alice' and head_id = 'eng'`);
      await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('bob', 'eng', 2), ('carol', 'roadmap', 3)`);
      return currentToken(tx);
    });
    // A transaction that changed nothing permgraph captures.
    const idleToken = await primary.tx((tx) => currentToken(tx));
    expect(await isApplied(primary, token)).toBe(false);
    expect(await isApplied(primary, idleToken)).toBe(true);
    await applyChanges(primary);
    expect(await isApplied(primary, token)).toBe(true);
    expect(await allowed(primary, after)).toEqual(expectedAllowed(after));

    // The standby has replayed none of it: the token is not applied there,
    // and check() still gives the old answers.
    expect(await standbyAdmin.query(sql`select pg_get_wal_replay_pause_state() as state`)).toEqual([{ state: 'paused' }]);
    expect(await isApplied(standby, token)).toBe(false);
    expect(await isApplied(standby, idleToken)).toBe(false);
    expect(await allowed(standby, before)).toEqual(expectedAllowed(before));
    expect(await readPermissions(standby)).toEqual(model.computePermissions(before));
    const timedOut = await waitFor(standby, token, 200).catch((error: unknown) => error);
    expect(timedOut).toBeInstanceOf(FreshnessTimeoutError);
    expect((timedOut as Error).message).toMatch(/this server is a standby: has it replayed the batch/);

    // waitFor on the standby resolves once replay resumes and reaches the batch.
    const waited = waitFor(standby, token, 30_000);
    await resumeReplay(standbyAdmin);
    await waited;
    expect(await allowed(standby, after)).toEqual(expectedAllowed(after));
    await caughtUp();
    expect(await isApplied(standby, idleToken)).toBe(true);
    expect(await readPermissions(standby)).toEqual(model.computePermissions(after));
    expect(await readPermissions(primary)).toEqual(model.computePermissions(after));
    expect(await allowed(standby, after)).toEqual(expectedAllowed(after));
    // The other read functions answer there as on the primary; tokens are taken on the primary only.
    const reads = (db: Queryable) =>
      db.query(sql`select (select jsonb_agg(t) from permgraph.list_targets('bob', 1) t) as targets,
                          (select jsonb_agg(t) from permgraph.list_users('spec', 1) t) as users,
                          permgraph.explain('bob', 'spec', 2) as explained,
                          permgraph.can('carol', 'row-1', 'roadmap', 3) as can,
                          permgraph.status() as status`);
    expect(await reads(standby)).toEqual(await reads(primary));
    // So does the TypeScript client, given a pool on the standby.
    const [onStandby, onPrimary] = [Permgraph.fromPool(standby, standbyCluster.url(APP_DB)), Permgraph.fromPool(primary, primaryCluster.url(APP_DB))];
    expect(await onStandby.check('bob', 'spec', 'write')).toBe(true);
    expect(await onStandby.listTargets('bob', { level: 'write' })).toEqual(await onPrimary.listTargets('bob', { level: 'write' }));
    expect(await onStandby.explain('carol', 'spec', 'manage')).toEqual(await onPrimary.explain('carol', 'spec', 'manage'));
    await expect(standby.query(sql`select permgraph.current_token()`)).rejects.toThrow(/current_token\(\) names a writing transaction on the primary; this server is a standby/);
  });

  it('on a standby, a batch applies its tokens even while an older transaction keeps running on the primary', async () => {
    // A transaction with an id that stays open holds back the xmin of every
    // snapshot, on the standby too: there, only the batch's recorded snapshot
    // can say that a younger writer is done.
    const holder = open(primaryCluster.url(APP_DB));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let holding!: () => void;
    const held = new Promise<void>((resolve) => (holding = resolve));
    const old = holder.tx(async (tx) => {
      await tx.query(sql`select pg_current_xact_id()`);
      holding();
      await released;
    });
    await held;
    let idle = '';
    try {
      const token = await primary.tx(async (tx) => {
        await tx.query(sql`insert into permgraph.nodes (id, kind) values ('dave', 'user')`);
        await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('dave', 'ops', 1)`);
        return currentToken(tx);
      });
      await applyChanges(primary);
      // After the batch, a transaction that captures nothing: the primary
      // sees it committed; the standby, until the older transaction ends,
      // cannot tell it from one still running.
      idle = await primary.tx((tx) => currentToken(tx));
      await caughtUp();
      expect(await isApplied(standby, token)).toBe(true);
      expect(await allowed(standby, withDave)).toEqual(expectedAllowed(withDave));
      expect(await isApplied(primary, idle)).toBe(true);
      expect(await isApplied(standby, idle)).toBe(false);
    } finally {
      release();
      await old;
    }
    await waitFor(standby, idle, 30_000);
  });

  it('a publication of permgraph.permissions keeps a copy in another database equal to the table', async () => {
    // The subscriber's tables, as docs/replicas.md creates them (DDL is not
    // replicated): its block, run here, so that the page cannot fall behind
    // a column the primary's tables gained. The subscription is created
    // below, with this cluster's connection instead of the page's example.
    const subscriberAdmin = open(subscriberCluster.url());
    await subscriberAdmin.query(sql`create database ${sql.ident(APP_DB)}`);
    const subscriber = open(subscriberCluster.url(APP_DB));
    for (const statement of documentedSubscriberTables()) await subscriber.query(sql.__dangerous__rawValue(statement));

    // On the primary: the publication, and a role that may stream it and read the tables.
    await primary.query(sql`create publication permgraph_permissions for table permgraph.permissions, permgraph.applier_state`);
    await primary.query(sql.__dangerous__rawValue(`create role permgraph_publisher login replication password 'publisher-password' in role permgraph_reader`));
    const conninfo = `host=127.0.0.1 port=${primaryCluster.port} dbname=${APP_DB} user=permgraph_publisher password=publisher-password`;
    await subscriber.query(sql.__dangerous__rawValue(`create subscription permgraph_permissions connection '${conninfo}' publication permgraph_permissions`));
    const syncStates = () => subscriber.query(sql`select srrelid::regclass::text as rel, srsubstate as state from pg_subscription_rel`);
    await until('the subscription copies both tables', async () => (await syncStates()).filter((r) => r.state === 'r').length === 2, syncStates);
    expect(await readPermissions(subscriber)).toEqual(model.computePermissions(withDave));

    // A batch on the primary reaches the copy as one transaction, with the
    // snapshot that says which tokens it applied.
    const token = await primary.tx(async (tx) => {
      await tx.query(sql`insert into permgraph.nodes (id, kind) values ('erin', 'user')`);
      await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('erin', 'eng', 1), ('carol', 'ops', 1)`);
      await tx.query(sql`delete from permgraph.grants where tail_id = 'bob' and head_id = 'eng'`);
      return currentToken(tx);
    });
    const changed: model.RefGraph = {
      nodes: [...withDave.nodes, u('erin')],
      grants: [...withDave.grants.filter((x) => !(x.tailId === 'bob' && x.headId === 'eng')), grant('erin', 1, 'eng'), grant('carol', 1, 'ops')],
    };
    await applyChanges(primary);
    expect(await readPermissions(primary)).toEqual(model.computePermissions(changed));
    const appliedOnCopy = sql`select coalesce(bool_or(pg_visible_in_snapshot(${token}::xid8, last_batch_snapshot)), false) as applied from permgraph.applier_state`;
    await until(`token ${token} reaches the copy`, async () => (await subscriber.query(appliedOnCopy))[0].applied === true, syncStates);
    expect(await readPermissions(subscriber)).toEqual(await readPermissions(primary));
    await subscriber.query(sql`drop subscription permgraph_permissions`);
  });
});

/** Both results, once both have settled (so that nothing still starts after a failure is reported). */
async function settled<A, B>(a: Promise<A>, b: Promise<B>): Promise<[A, B]> {
  const [x, y] = await Promise.allSettled([a, b]);
  if (x.status === 'rejected') throw x.reason;
  if (y.status === 'rejected') throw y.reason;
  return [x.value, y.value];
}
