// Starts one PostgreSQL for the whole run (DATABASE_URL's server, or an
// embedded one on a free port), migrates a template database, and hands its
// name to the test files, which each clone it (see test/helpers/database.ts).
// Meanwhile it compiles the CLI the tests run (see buildCli).
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { TestProject } from 'vitest/node';
import { startEmbedded, type EmbeddedServer } from '../../src/db/embedded.ts';
import { openPool, sql, type ConnectionPool } from '../../src/db/pool.ts';
import { migrate } from '../../src/migrations/migrate.ts';
import { withDatabase } from '../helpers/url.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    pgServerUrl: string;
    pgTemplate: string;
    /** In the names of this run's test databases and logins (test/helpers), so that its teardown tells them from another run's on a shared server. */
    pgRunTag: string;
    cliBin: string;
  }
}

interface TestServer {
  serverUrl: string;
  template: string;
  runTag: string;
  cliBin: string;
  rebuildCli: () => Promise<void>;
  teardown: () => Promise<void>;
}

/**
 * Every project of vitest.config.ts runs this setup in the one main process,
 * each loading this module afresh: the first starts the server and the
 * template, the others share them (through globalThis), and the last
 * teardown stops them.
 */
const SHARED = Symbol.for('permgraph.test.server');
type Shared = { server: Promise<TestServer>; users: number };
const registry = globalThis as { [SHARED]?: Shared };

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const shared = (registry[SHARED] ??= { server: startServer(), users: 0 });
  shared.users += 1;
  const { serverUrl, template, runTag, cliBin, rebuildCli, teardown } = await shared.server;
  project.provide('pgServerUrl', serverUrl);
  project.provide('pgTemplate', template);
  project.provide('pgRunTag', runTag);
  project.provide('cliBin', cliBin);
  // (watch mode: src/ may have changed since the build)
  project.onTestsRerun(rebuildCli);
  return async () => {
    shared.users -= 1;
    if (shared.users === 0) {
      delete registry[SHARED];
      await teardown();
    }
  };
}

async function startServer(): Promise<TestServer> {
  const [database, cli] = await Promise.allSettled([startDatabase(), buildCli()]);
  if (database.status === 'rejected' || cli.status === 'rejected') {
    // (whichever side did start is undone: no server or scratch left behind)
    if (database.status === 'fulfilled') await database.value.teardown();
    if (cli.status === 'fulfilled') await cli.value.remove();
    throw database.status === 'rejected' ? database.reason : (cli as PromiseRejectedResult).reason;
  }
  return {
    serverUrl: database.value.serverUrl,
    template: database.value.template,
    runTag: database.value.runTag,
    cliBin: cli.value.bin,
    rebuildCli: cli.value.rebuild,
    teardown: async () => {
      try {
        await database.value.teardown();
      } finally {
        await cli.value.remove();
      }
    },
  };
}

const REPO = fileURLToPath(new URL('../../', import.meta.url));

/**
 * The CLI the tests spawn is the package's own build, dist/cli/main.js as
 * `npx permgraph` runs it with plain node: what ships is what is tested, and
 * it starts in half the time of the development entry (bin/permgraph.mjs,
 * which compiles src/ through tsx at every start; test/cli/cli.test.ts runs
 * it too). Compiled from this checkout's src/ at every run, into a scratch
 * package beside which sql/, node_modules and package.json are those of the
 * checkout, so a test never runs a stale dist/ (in watch mode it is built
 * again before every rerun). Type errors do not stop it: `npm test` reports
 * them (tsc --noEmit) before any test runs, and a single test file should
 * run while another part of src/ is being edited.
 */
async function buildCli(): Promise<{ bin: string; rebuild: () => Promise<void>; remove: () => Promise<void> }> {
  const root = await mkdtemp(path.join(tmpdir(), 'permgraph-cli-'));
  const remove = () => rm(root, { recursive: true, force: true });
  const bin = path.join(root, 'dist/cli/main.js');
  const rebuild = async () => {
    await rm(path.join(root, 'dist'), { recursive: true, force: true });
    const tsc = path.join(REPO, 'node_modules/typescript/bin/tsc');
    const args = [tsc, '-p', 'tsconfig.build.json', '--outDir', path.join(root, 'dist'), '--noEmitOnError', 'false'];
    const output = await promisify(execFile)(process.execPath, args, { cwd: REPO }).catch((error: { stdout?: string; stderr?: string }) => error);
    if (!existsSync(bin)) {
      throw new Error(`compiling the CLI for the tests (tsc ${args.slice(1).join(' ')}) emitted nothing:\n${output.stdout ?? ''}${output.stderr ?? ''}`);
    }
  };
  try {
    await rebuild();
    await symlink(path.join(REPO, 'sql'), path.join(root, 'sql'));
    await symlink(path.join(REPO, 'node_modules'), path.join(root, 'node_modules'));
    await copyFile(path.join(REPO, 'package.json'), path.join(root, 'package.json'));
  } catch (error) {
    await remove();
    throw error;
  }
  return { bin, rebuild, remove };
}

async function startDatabase(): Promise<{ serverUrl: string; template: string; runTag: string; teardown: () => Promise<void> }> {
  let server: EmbeddedServer | undefined;
  let scratch: string | undefined;
  let admin: ConnectionPool | undefined;
  const template = `permgraph_template_${process.pid}_${Date.now()}`;
  const runTag = randomBytes(3).toString('hex');
  // (also what a failed start undoes: nothing is left running or on disk)
  const teardown = async () => {
    const left = admin ? await leftBehind(admin, runTag).catch(() => []) : [];
    await admin?.query(sql`drop database if exists ${sql.ident(template)} with (force)`).catch(() => {});
    await admin?.dispose();
    await server?.stop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
    if (left.length > 0) {
      process.exitCode = 1; // (vitest reports an error of a teardown, but exits 0)
      throw new Error(`the tests left behind what test/helpers made for them (a helper called where its clean-up never runs?): ${left.join(', ')}`);
    }
  };
  try {
    let serverUrl = process.env.DATABASE_URL;
    if (!serverUrl) {
      scratch = await mkdtemp(path.join(tmpdir(), 'permgraph-test-'));
      server = await startEmbedded({
        dataDir: path.join(scratch, 'data'),
        // Durability is irrelevant for a throw-away test server; speed is not.
        settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', max_connections: '300' },
      });
      serverUrl = server.url;
    }
    admin = openPool(serverUrl, { poolSize: 1 });
    await admin.query(sql`create database ${sql.ident(template)}`);
    const templateDb = openPool(withDatabase(serverUrl, template), { poolSize: 1 });
    try {
      await migrate(templateDb);
    } finally {
      await templateDb.dispose();
    }
    return { serverUrl, template, runTag, teardown };
  } catch (error) {
    await teardown();
    throw error;
  }
}

/**
 * The test databases (test/helpers/database.ts) and login roles
 * (test/helpers/logins.ts) of this run still on the server once every file
 * has run: each helper drops what it made after its test or file, so what
 * is left was never cleaned up (as under a hook that never ran: afterAll()
 * inside a test). Their names carry the run's tag, so that another run on
 * a shared DATABASE_URL server, before this one or at the same time, is
 * never counted.
 */
async function leftBehind(admin: ConnectionPool, runTag: string): Promise<string[]> {
  const rows = await admin.query(sql`
    select 'database ' || datname as what from pg_database where datname like ${`permgraph\\_test\\_${runTag}\\_%`}
    union all
    select 'role ' || rolname from pg_roles where rolname like ${`login\\_${runTag}\\_%`}
    order by 1`);
  return rows.map((row: { what: string }) => row.what);
}
