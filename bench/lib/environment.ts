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
