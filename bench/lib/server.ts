// The PostgreSQL the benchmark runs on: its own embedded server (default),
// the server of DATABASE_URL, or (--postgres <major>) a throwaway cluster of
// another major version with the embedded server's settings
// (scripts/lib/postgres-cluster.ts). Each graph gets a fresh database named
// permgraph_bench_<name>; no other database is touched.
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmbedded } from '../../src/db/embedded.ts';
import { openPool, sql, type ConnectionPool } from '../../src/db/pool.ts';
import { migrate } from '../../src/migrations/migrate.ts';
import { EMBEDDED_MAJOR, startCluster } from '../../scripts/lib/postgres-cluster.ts';

export const BENCH_DIR = fileURLToPath(new URL('../', import.meta.url));
export const RESULTS_DIR = path.join(BENCH_DIR, 'results');
export const TMP_DIR = path.join(RESULTS_DIR, 'tmp');

/** Server settings of the embedded server (recorded in every result). */
export const EMBEDDED_SETTINGS: Record<string, string> = {
  jit: 'off',
  shared_buffers: '2GB',
  work_mem: '64MB',
  maintenance_work_mem: '512MB',
  effective_cache_size: '8GB',
  max_wal_size: '8GB',
  checkpoint_timeout: '30min',
  max_connections: '60',
  // autovacuum_naptime is left at its default (1 min). Runs up to ab502cc
  // set 10 s, so that the change queue's dead rows were reclaimed sooner;
  // since batches read the queue from its low-water mark they no longer
  // read those rows (bench/FINDINGS.md 33, 35).
};

export interface BenchServer {
  url: string;
  /** cluster: a throwaway cluster of the major version asked for (--postgres). */
  origin: 'embedded' | 'DATABASE_URL' | 'cluster';
  stop(): Promise<void>;
}

/**
 * The server of a run: DATABASE_URL's when set (the runner refuses it with
 * a major version); else, for a major version
 * other than the embedded server's, a throwaway cluster of it with the
 * embedded server's settings (so that versions compare like for like);
 * else the embedded server.
 */
export async function startServer(postgresMajor?: string): Promise<BenchServer> {
  const fromEnv = process.env.DATABASE_URL;
  if (fromEnv) return { url: fromEnv, origin: 'DATABASE_URL', stop: async () => {} };
  if (postgresMajor && postgresMajor !== EMBEDDED_MAJOR) {
    // (progress on stderr, as every other line the runner prints but its results)
    const cluster = await startCluster({ major: postgresMajor, settings: EMBEDDED_SETTINGS, log: (line) => process.stderr.write(`  ${line}\n`) });
    // Stopped and deleted even when the process exits without stop() (an
    // uncaught error, a second signal): cluster.stop() is synchronous, as
    // an 'exit' listener must be. The embedded server has its own such hook.
    let stopped = false;
    const stop = () => {
      if (stopped) return;
      stopped = true;
      process.off('exit', stop);
      cluster.stop();
    };
    process.on('exit', stop);
    return { url: cluster.url, origin: 'cluster', stop: async () => stop() };
  }
  await mkdir(TMP_DIR, { recursive: true });
  const server = await startEmbedded({ dataDir: path.join(TMP_DIR, 'pgdata'), settings: EMBEDDED_SETTINGS });
  if (!server.ownedByUs) {
    // Another run's server on the same directory would carry other settings.
    throw new Error(`an embedded server already runs on ${TMP_DIR}/pgdata (another benchmark?); stop it first`);
  }
  return { url: server.url, origin: 'embedded', stop: () => server.stop() };
}

export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${encodeURIComponent(database)}`;
  return parsed.toString();
}

export interface BenchDatabase {
  name: string;
  url: string;
  db: ConnectionPool;
  drop(): Promise<void>;
}

/** The benchmark databases created and not dropped yet, for dropOpenDatabases(). */
const openDatabases = new Set<BenchDatabase>();

/**
 * Drops every benchmark database this process created and has not dropped
 * (best effort): a run interrupted by a signal leaves none behind on the
 * server, as a finished run leaves none without --keep. Returns their names.
 */
export async function dropOpenDatabases(): Promise<string[]> {
  const dropped: string[] = [];
  for (const bdb of [...openDatabases]) {
    await bdb.drop().then(() => dropped.push(bdb.name), () => {});
  }
  return dropped;
}

/** Drops and re-creates permgraph_bench_<name>, migrated, with jit off for every session. */
export async function freshDatabase(serverUrl: string, name: string): Promise<BenchDatabase> {
  const database = `permgraph_bench_${name.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}`;
  const admin = openPool(serverUrl, { poolSize: 1, applicationName: 'permgraph-bench' });
  try {
    await admin.query(sql`drop database if exists ${sql.ident(database)} with (force)`);
    await admin.query(sql`create database ${sql.ident(database)}`);
    await admin.query(sql`alter database ${sql.ident(database)} set jit = off`);
  } finally {
    await admin.dispose();
  }
  const url = withDatabase(serverUrl, database);
  const db = openPool(url, { poolSize: 8, applicationName: 'permgraph-bench' });
  const bdb: BenchDatabase = {
    name: database,
    url,
    db,
    drop: async () => {
      openDatabases.delete(bdb);
      await db.dispose().catch(() => {}); // (already disposed when a signal interrupts the run meanwhile)
      const again = openPool(serverUrl, { poolSize: 1, applicationName: 'permgraph-bench' });
      try {
        await again.query(sql`drop database if exists ${sql.ident(database)} with (force)`);
      } finally {
        await again.dispose();
      }
    },
  };
  openDatabases.add(bdb);
  await migrate(db);
  await db.query(sql`create schema if not exists bench`);
  return bdb;
}
