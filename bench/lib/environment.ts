// What every result records about where it was measured.
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { sql, type Queryable } from '../../src/db/pool.ts';

export interface MachineInfo {
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  platform: string;
  node: string;
  /** 1, 5 and 15 minute load averages when the run started (other work on the machine skews figures). */
  loadAverage: number[];
}

export interface GitInfo {
  commit: string | null;
  dirty: boolean | null;
}

export interface PostgresInfo {
  version: string;
  settings: Record<string, string>;
}

/** Settings that influence the figures; all are recorded. */
const RECORDED_SETTINGS = [
  'jit', 'shared_buffers', 'work_mem', 'maintenance_work_mem', 'effective_cache_size', 'synchronous_commit',
  'fsync', 'full_page_writes', 'wal_level', 'max_wal_size', 'checkpoint_timeout', 'random_page_cost',
  'max_parallel_workers_per_gather', 'max_parallel_workers', 'max_connections', 'default_transaction_isolation',
  'autovacuum_naptime',
];

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    loadAverage: os.loadavg().map((v) => Math.round(v * 100) / 100),
  };
}

/** Read-only git queries; never changes the repository. */
export function gitInfo(): GitInfo {
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    // bench/results/ holds outputs (run files, the report), never what is measured
    const status = execFileSync('git', ['status', '--porcelain', '--', '.', ':(exclude)bench/results'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return { commit, dirty: status.trim().length > 0 };
  } catch {
    return { commit: null, dirty: null };
  }
}

/** A server's name and version from version()'s text: "PostgreSQL 18.4". */
export function postgresName(version: string): string {
  return version.split(' ').slice(0, 2).join(' ');
}

export async function postgresInfo(db: Queryable): Promise<PostgresInfo> {
  const [version] = await db.query(sql`select version() as v`);
  const rows: { name: string; setting: string; unit: string | null }[] = await db.query(
    sql`select name, setting, unit from pg_settings where name = any (${RECORDED_SETTINGS}) order by name`,
  );
  const settings: Record<string, string> = {};
  for (const row of rows) settings[row.name] = row.unit ? `${row.setting} (${row.unit})` : row.setting;
  return { version: String(version?.v ?? 'unknown'), settings };
}

/**
 * How fast this machine is right now, by fixed work timed beside the run:
 * the kernel string, cores and CPU model do not tell apart the hosts the
 * figures came from (two hosts reporting the same strings differed 3× in
 * every statement's fixed cost, bench/FINDINGS.md 44). Each is the fastest
 * of several repetitions, so another engineer's load moves it little.
 */
export interface Calibration {
  /** A fixed integer loop in this Node process (2·10⁷ steps), ms. */
  clientLoopMs: number;
  /** One trivial PL/pgSQL statement (PERFORM 1) on the server, µs: the fixed cost every statement pays. Null without a server. */
  serverStatementUs: number | null;
}

export async function calibrate(db: Queryable | null): Promise<Calibration> {
  let clientLoopMs = Infinity;
  for (let r = 0; r < 7; r++) {
    const started = performance.now();
    let x = 0;
    for (let i = 0; i < 2e7; i++) x = (x * 31 + i) | 0;
    clientLoopMs = Math.min(clientLoopMs, performance.now() - started);
    if (x === 0.5) clientLoopMs = -1; // (never: keeps the loop from being optimized away)
  }
  let serverStatementUs: number | null = null;
  if (db) {
    // (a temporary function: nothing is left in the database it runs in; db must hold one connection.
    // Best effort: a role without TEMP on DATABASE_URL's database records none)
    try {
      await db.query(sql`
        create or replace function pg_temp.bench_calibrate(n int) returns double precision language plpgsql as $fn$
        declare started timestamptz := clock_timestamp();
        begin
          for i in 1 .. n loop perform 1; end loop;
          return extract(epoch from clock_timestamp() - started) * 1e6 / n;
        end $fn$`);
      let best = Infinity;
      for (let r = 0; r < 5; r++) {
        const [row] = await db.query(sql`select pg_temp.bench_calibrate(20000) as us`);
        best = Math.min(best, Number(row?.us));
      }
      serverStatementUs = Math.round(best * 100) / 100;
    } catch {
      serverStatementUs = null;
    }
  }
  return { clientLoopMs: Math.round(clientLoopMs * 10) / 10, serverStatementUs };
}
