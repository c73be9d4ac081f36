import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { WORKER_APPLICATION_NAME } from '../../src/constants.ts';
import type { RefGrant, RefGraph } from '../reference/model.ts';
import { g, grant, u } from './builders.ts';

/** The package's compiled CLI, built for this run by test/setup/global.ts. */
export const BIN = inject('cliBin');
/** The development entry (`npm start`, `npm run permgraph`): the same CLI through tsx. */
export const DEV_BIN = fileURLToPath(new URL('../../bin/permgraph.mjs', import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Starts the real CLI as a child process (DATABASE_URL removed, so only the flag counts), in `cwd` (default: this process's). */
export function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}, bin = BIN, { cwd }: { cwd?: string } = {}): ChildProcess {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  delete childEnv.DATABASE_URL;
  return spawn(process.execPath, [bin, ...args], { cwd, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
}

export function collect(child: ChildProcess): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk) => (stdout += chunk));
  child.stderr?.on('data', (chunk) => (stderr += chunk));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, bin = BIN, options: { cwd?: string } = {}): Promise<CliResult> {
  return collect(spawnCli(args, env, bin, options));
}

/** Polls predicate every 20 ms until it holds; fails after timeoutMs. */
export async function waitUntil(predicate: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Waits until the worker's batch waits for a lock (a test holds one the batch needs). */
export async function waitForWorkerBlocked(db: Queryable): Promise<void> {
  await waitUntil(async () => {
    const [row] = await db.query(sql`
      select count(*)::int as n from pg_stat_activity
      where datname = current_database() and application_name = ${WORKER_APPLICATION_NAME} and wait_event_type = 'Lock'`);
    return row.n === 1;
  }, 'the worker batch to wait for the lock');
}

/**
 * Waits until an import's statement waits for the lock it takes on nodes
 * and grants (a test holds one it needs); returns its backend's pid.
 */
export async function waitForImportBlocked(db: Queryable): Promise<number> {
  let pid = 0;
  await waitUntil(async () => {
    const [row] = await db.query(sql`
      select pid from pg_stat_activity
      where datname = current_database() and state = 'active' and wait_event_type = 'Lock'
        and query like '%permgraph._lock_tables_in_turn(%'`);
    pid = row?.pid ?? 0;
    return pid !== 0;
  }, 'the import to wait for its lock');
  return pid;
}

/** A graph whose batches take long enough to be interrupted: many users × many groups, through one team. */
export function wideGraph(users: number, groups: number): RefGraph {
  const nodes = [...Array.from({ length: users }, (_, i) => u(`u${i}`)), g('team'), ...Array.from({ length: groups }, (_, i) => g(`p${i}`))];
  const grants: RefGrant[] = [
    ...Array.from({ length: users }, (_, i) => grant(`u${i}`, 2, 'team')),
    ...Array.from({ length: groups }, (_, i) => grant('team', 1, `p${i}`)),
  ];
  return { nodes, grants };
}

/**
 * Starts a CLI worker on the database of `db`, SIGKILLs it once its batch (or
 * a chunk of a long job) is running, and returns when the server has ended
 * the worker's backend (its batch then committed whole or not at all).
 */
export async function killWorkerMidBatch(db: Queryable, url: string, options: { chunkPairs?: number } = {}): Promise<void> {
  // Without chunkPairs the worker applies every batch whole (a big change is one transaction);
  // with it, the worker is killed in a chunk of the long job the change becomes.
  const child = spawnCli(['--database-url', url, 'worker', '--poll-interval', '50', '--chunk-pairs', String(options.chunkPairs ?? 0)]);
  const done = collect(child);
  const running = options.chunkPairs === undefined ? '%apply_changes%' : '%apply_job_chunk%';
  await waitUntil(async () => {
    const rows = await db.query(sql`
      select 1 from pg_stat_activity
      where datname = current_database() and state = 'active' and query like ${running} and pid <> pg_backend_pid()`);
    return rows.length > 0;
  }, 'a batch to start');
  child.kill('SIGKILL');
  await done;
  await waitUntil(async () => {
    const rows = await db.query(sql`select 1 from pg_stat_activity where datname = current_database() and application_name = ${WORKER_APPLICATION_NAME}`);
    return rows.length === 0;
  }, 'the killed worker backend to go away');
}
