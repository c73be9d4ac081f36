// Helpers of the package tests: child processes, their descendants, and a
// database of their own on the test server.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, inject } from 'vitest';
import { openPool, sql, type ConnectionPool } from '../../src/db/pool.ts';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * The environment of a process a user would start: no DATABASE_URL, no
 * NODE_OPTIONS (nothing may preload tsx), none of the npm_* variables that
 * `npm test` set for us, and this node first on PATH.
 */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (name === 'DATABASE_URL' || name === 'NODE_OPTIONS' || /^npm_/i.test(name) || name.startsWith('VITEST')) continue;
    env[name] = value;
  }
  env.PATH = `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ''}`;
  return { ...env, ...extra };
}

export function run(command: string, args: string[], options: SpawnOptions = {}): Promise<Run> {
  return collect(spawn(command, args, { env: cleanEnv(), ...options, stdio: ['ignore', 'pipe', 'pipe'] }));
}

export function collect(child: ChildProcess): Promise<Run> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk) => (stdout += chunk));
  child.stderr?.on('data', (chunk) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** Fails with the process's output unless it exited 0. */
export function expectOk(result: Run, what: string): Run {
  if (result.code !== 0) throw new Error(`${what} exited ${result.code ?? result.signal}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
  return result;
}

/** Parent pid of every process, from /proc (Linux). */
function parents(): Map<number, number> {
  const map = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      map.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone meanwhile
    }
  }
  return map;
}

export function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
  } catch {
    return '';
  }
}

/** Every live descendant of pid. */
export function descendants(pid: number): number[] {
  const byParent = parents();
  const found: number[] = [];
  const queue = [pid];
  while (queue.length) {
    const current = queue.shift()!;
    for (const [child, parent] of byParent) {
      if (parent === current) {
        found.push(child);
        queue.push(child);
      }
    }
  }
  return found;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie is dead; it only waits for its parent.
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

export const HAS_PROC = existsSync('/proc/self/stat');

export async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${encodeURIComponent(database)}`;
  return parsed.toString();
}

export interface OwnDatabase {
  url: string;
  db: ConnectionPool;
}

/** An empty database (no schema: the package's own migrate creates it), dropped after the file's tests. */
export async function createOwnDatabase(prefix: string): Promise<OwnDatabase> {
  const serverUrl = inject('pgServerUrl');
  const name = `${prefix}_${randomBytes(6).toString('hex')}`;
  const admin = openPool(serverUrl, { poolSize: 1 });
  await admin.query(sql`create database ${sql.ident(name)}`);
  const url = withDatabase(serverUrl, name);
  const db = openPool(url, { poolSize: 2 });
  afterAll(async () => {
    await db.dispose();
    await admin.query(sql`drop database if exists ${sql.ident(name)} with (force)`);
    await admin.dispose();
  });
  return { url, db };
}

/** The backend pid of the connection holding the applier role (the active worker), if any. */
export async function activeWorker(db: ConnectionPool): Promise<number | undefined> {
  const [row] = await db.query(sql`select to_regproc('permgraph.status') is not null as migrated`);
  if (!row.migrated) return undefined;
  const [status] = await db.query(sql`select permgraph.status() -> 'worker' ->> 'pid' as pid`);
  return status.pid === null ? undefined : Number(status.pid);
}
