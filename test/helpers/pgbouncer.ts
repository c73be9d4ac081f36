// A PgBouncer in front of the test server, for the tests of what works
// through a connection pooler (test/pooler/). The binary is the system's
// (Debian: apt-get install pgbouncer, /usr/sbin/pgbouncer); where it is
// missing, as it may be in continuous integration, those tests skip and say
// why (PGBOUNCER_MISSING).
//
// One PgBouncer serves one database under two names, `transaction` and
// `session`, pooled in those modes, for the logins it is given (their
// passwords go into its auth file). A transaction pool holds one server
// session per login by default, so that every client of a login shares it,
// deterministically, as a busy production pool shares its sessions at
// random; a session pool holds ten per login (each client keeps one).
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from '../../src/db/embedded.ts';

export type PoolMode = 'transaction' | 'session';

export interface PgBouncer {
  /** The URL given (a login's, on the pooled database), pointing at PgBouncer's pool of that mode instead. */
  url(loginUrl: string, mode: PoolMode): string;
  /** What PgBouncer logged (its warnings included). */
  log(): string;
  /**
   * Rewrites the configuration with the `session` database pooled in `mode`
   * instead, and has PgBouncer reload it (SIGHUP), as an operator does;
   * resolves once it has. Its clients stay connected.
   */
  reload(sessionDatabaseMode: PoolMode): Promise<void>;
  stop(): Promise<void>;
}

/** Debian installs it to /usr/sbin, which a non-root PATH may lack. */
function findBinary(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin', '/usr/local/bin'];
  for (const dir of dirs.filter(Boolean)) {
    const candidate = path.join(dir, 'pgbouncer');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

const BINARY = findBinary();

/** Why the PgBouncer tests cannot run here (undefined: they can). */
export const PGBOUNCER_MISSING: string | undefined =
  BINARY === undefined ? 'no pgbouncer binary on PATH or in /usr/sbin (install it: apt-get install pgbouncer)' : undefined;

/**
 * The password a login whose URL has none (a server that trusts its
 * logins: `npm run test:postgres`) uses with PgBouncer, whose clients
 * always authenticate; the trusting server ignores it.
 */
/** What PgBouncer logs when it has read its configuration again. */
const RELOADED = 'got SIGHUP, re-reading config';

const NO_PASSWORD = 'permgraph-test-no-password';

/**
 * Starts PgBouncer on a free port in front of `databaseUrl`'s database, for
 * the logins whose URLs (with their passwords) are given. Stop it with
 * stop(); a process that exits stops it too.
 */
export async function startPgBouncer(
  databaseUrl: string,
  loginUrls: string[],
  {
    transactionPoolSize = 1,
    sessionPoolSize = 10,
    port: wanted,
  }: { transactionPoolSize?: number; sessionPoolSize?: number; /** default: a free one */ port?: number } = {},
): Promise<PgBouncer> {
  if (BINARY === undefined) throw new Error(PGBOUNCER_MISSING);
  const target = new URL(databaseUrl);
  const database = decodeURIComponent(target.pathname.slice(1));
  const port = wanted ?? (await freePort());
  // As root it runs as the `postgres` OS user (PgBouncer refuses root), who must read its files.
  const dir = await mkdtemp(path.join(tmpdir(), 'permgraph-pgbouncer-'));
  await chmod(dir, 0o755);
  const quote = (value: string) => `"${value.replaceAll('"', '""')}"`;
  const users = loginUrls.map((url) => new URL(url)).map((u) => `${quote(decodeURIComponent(u.username))} ${quote(decodeURIComponent(u.password) || NO_PASSWORD)}`);
  await writeFile(path.join(dir, 'userlist.txt'), `${users.join('\n')}\n`, { mode: 0o644 });
  const server = `host=${target.hostname} port=${target.port || 5432} dbname=${database}`;
  const ini = (sessionDatabaseMode: PoolMode) => [
    '[databases]',
    `transaction = ${server} pool_mode=transaction pool_size=${transactionPoolSize}`,
    `session = ${server} pool_mode=${sessionDatabaseMode} pool_size=${sessionPoolSize}`,
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${port}`,
    'unix_socket_dir =',
    'auth_type = scram-sha-256',
    `auth_file = ${path.join(dir, 'userlist.txt')}`,
    'max_client_conn = 500',
    // a client waiting for a server session fails within this (seconds), not after the default two minutes
    'query_wait_timeout = 20',
  ];
  const config = path.join(dir, 'pgbouncer.ini');
  await writeFile(config, `${ini('session').join('\n')}\n`, { mode: 0o644 });
  const asRoot = process.getuid?.() === 0;
  const child = spawn(BINARY, [...(asRoot ? ['-u', 'postgres'] : []), config], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (chunk) => (output += chunk));
  child.stderr?.on('data', (chunk) => (output += chunk));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM'); // immediate shutdown: clients are disconnected
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await waitForPort(child, port, () => output);
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    url(loginUrl, mode) {
      const pooled = new URL(loginUrl);
      pooled.password ||= NO_PASSWORD;
      pooled.hostname = '127.0.0.1';
      pooled.port = String(port);
      pooled.pathname = `/${mode}`;
      return pooled.toString();
    },
    log: () => output,
    async reload(sessionDatabaseMode) {
      await writeFile(config, `${ini(sessionDatabaseMode).join('\n')}\n`, { mode: 0o644 });
      const reloads = output.split(RELOADED).length;
      child.kill('SIGHUP');
      const deadline = Date.now() + 20_000;
      while (output.split(RELOADED).length === reloads) {
        if (Date.now() > deadline) throw new Error(`pgbouncer did not reload within 20 s:\n${output}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    stop,
  };
}

/** Resolves once PgBouncer accepts connections; fails if it exits first, with what it said. */
async function waitForPort(child: ChildProcess, port: number, output: () => string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`pgbouncer exited at start:\n${output()}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`pgbouncer did not listen on port ${port} within 20 s:\n${output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
