// What the operations tests (test/ops/) share: throwaway clusters of an
// installed PostgreSQL (scripts/lib/postgres-cluster.ts) with an
// application database in them, as an operator sets one up (an owner that
// is no superuser, one login per permgraph role), and the PostgreSQL tools
// and permgraph commands run against them.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { openPool, sql, type ConnectionPool, type Queryable } from '../../src/db/pool.ts';
import { migrate } from '../../src/migrations/migrate.ts';
import { startClusterWith, type Cluster, type PostgresBinaries, type StartOptions } from '../../scripts/lib/postgres-cluster.ts';
import * as model from '../reference/model.ts';
import type { RefGrant, RefGraph, RefNode } from '../reference/model.ts';
import { expiring, g, grant, o, u } from './builders.ts';
import { runCli } from './cli.ts';
import { withDatabase } from './url.ts';

/** Durability is irrelevant for throwaway clusters; speed is not. */
export const FAST = { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off' };
export const OWNER = 'permgraph_owner';
export const PASSWORD = 'backup-test';
/** The application's logins, one per permgraph role. */
export const LOGINS = { writer: 'app_web', worker: 'app_worker', reader: 'app_reader' } as const;

/** The URL of `database` on the cluster, as `user` (the clusters trust every login; the password is what a real one needs). */
export function urlOf(cluster: Cluster, database: string, user = 'postgres'): string {
  const url = new URL(withDatabase(cluster.url, database));
  url.username = user;
  if (user !== 'postgres') url.password = PASSWORD;
  return url.toString();
}

export interface Tool {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs one of the PostgreSQL client tools in `binaries`. */
export function tool(binaries: PostgresBinaries, name: string, args: string[]): Tool {
  const result = spawnSync(path.join(binaries.binDir, name), args, { encoding: 'utf8' });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** `permgraph doctor --json` as `url`'s login: its exit status and checks by name. */
export async function doctor(url: string): Promise<{ code: number | null; checks: Record<string, { status: string; message: string }> }> {
  const run = await runCli(['--database-url', url, '--json', 'doctor']);
  const { checks } = JSON.parse(run.stdout) as { checks: { name: string; status: string; message: string }[] };
  return { code: run.code, checks: Object.fromEntries(checks.map((c) => [c.name, { status: c.status, message: c.message }])) };
}

/** The table as the reference model computes it for `graph` now. */
export function expectedTable(graph: RefGraph): model.PermissionRow[] {
  return model.computePermissions(graph, new Date());
}

/** A write as `db`'s login in one transaction, with the transaction's freshness token. */
export async function tokenOf(db: Queryable, write: (tx: Queryable) => Promise<unknown>): Promise<string> {
  return db.tx(async (tx) => {
    await write(tx);
    const [{ token }] = await tx.query(sql`select permgraph.current_token() as token`);
    return token as string;
  });
}

/** A change consumer's unacknowledged events, as `db`'s login reads them: "seq user target" each. */
export async function readEvents(db: Queryable, consumer: string): Promise<string[]> {
  const events: { seq: string; user_id: string; target_id: string }[] =
    await db.query(sql`select seq, user_id, target_id from permgraph.read_changes(${consumer}, 100000)`);
  return events.map((e) => `${e.seq} ${e.user_id} ${e.target_id}`);
}

export async function isApplied(db: Queryable, token: string): Promise<boolean> {
  const [{ applied }] = await db.query(sql`select permgraph.is_applied(${token}) as applied`);
  return applied as boolean;
}

/**
 * Clusters started from `binaries` (with FAST settings) and pools opened on
 * them, all stopped and closed by close(); the clusters stop themselves at
 * exit too, should a set-up fail.
 */
export function clusterSet(binaries: PostgresBinaries) {
  const pools: ConnectionPool[] = [];
  const clusters: Cluster[] = [];
  return {
    open(url: string): ConnectionPool {
      const pool = openPool(url, { poolSize: 2 });
      pools.push(pool);
      return pool;
    },
    async start(options: StartOptions = {}, from = binaries): Promise<Cluster> {
      const cluster = await startClusterWith(from, { settings: FAST, ...options });
      clusters.push(cluster);
      return cluster;
    },
    async close(): Promise<void> {
      await Promise.all(pools.map((pool) => pool.dispose()));
      for (const cluster of clusters.reverse()) cluster.stop();
    },
  };
}

/** Moves the cluster's transaction ids `count` ahead, as a production server's are ahead of a fresh one's (each subtransaction that writes takes one). */
export async function burnTransactionIds(admin: Queryable, count: number): Promise<void> {
  await admin.query(sql`create table if not exists public.xid_burner (i integer)`);
  await admin.query(sql.__dangerous__rawValue(`
    do $$ begin for i in 1..${Number(count)} loop begin insert into public.xid_burner values (i); exception when others then null; end; end loop; end $$`));
}

/**
 * The application database `app` on `cluster`: created by its owner (no
 * superuser, CREATEROLE), migrated by that owner, and one login per
 * permgraph role (LOGINS). Pools on it, as each of them.
 */
export async function setUpApplication(cluster: Cluster, admin: Queryable, open: (url: string) => ConnectionPool) {
  await admin.query(sql.__dangerous__rawValue(`create role ${OWNER} login createrole password '${PASSWORD}'`));
  await admin.query(sql.__dangerous__rawValue(`create database app owner ${OWNER}`));
  const owner = open(urlOf(cluster, 'app', OWNER));
  await migrate(owner);
  for (const [role, login] of Object.entries(LOGINS)) {
    await owner.query(sql.__dangerous__rawValue(`create role ${login} login password '${PASSWORD}' in role permgraph_${role}`));
  }
  return {
    owner,
    writer: open(urlOf(cluster, 'app', LOGINS.writer)),
    worker: open(urlOf(cluster, 'app', LOGINS.worker)),
    reader: open(urlOf(cluster, 'app', LOGINS.reader)),
  };
}

/**
 * The graph both operations tests start from: users, a team owning a
 * project that owns a document, grants at each level, one expiring in an
 * hour and one `soon` (1.5 s after the call: the tests see it pass).
 */
export function startingGraph(): { soon: Date; nodes: RefNode[]; grants: RefGrant[] } {
  const soon = new Date(Date.now() + 1500);
  return {
    soon,
    nodes: [u('alice'), u('bob'), u('carol'), u('dave'), g('eng'), g('roadmap', 'eng'), o('spec', 'roadmap'), g('ops')],
    grants: [
      grant('alice', 2, 'eng'),
      grant('bob', 1, 'ops'),
      grant('ops', 3, 'carol'),
      expiring('carol', 3, 'eng', new Date(Date.now() + 3600_000)),
      expiring('dave', 2, 'roadmap', soon),
    ],
  };
}
