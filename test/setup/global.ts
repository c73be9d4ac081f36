// Starts one PostgreSQL for the whole run (DATABASE_URL's server, or an
// embedded one on a free port), migrates a template database, and hands its
// name to the test files, which each clone it (see test/helpers/database.ts).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { startEmbedded, type EmbeddedServer } from '../../src/db/embedded.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import { migrate } from '../../src/migrations/migrate.ts';
import { withDatabase } from '../helpers/url.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    pgServerUrl: string;
    pgTemplate: string;
  }
}

interface TestServer {
  serverUrl: string;
  template: string;
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
  const { serverUrl, template, teardown } = await shared.server;
  project.provide('pgServerUrl', serverUrl);
  project.provide('pgTemplate', template);
  return async () => {
    shared.users -= 1;
    if (shared.users === 0) {
      delete registry[SHARED];
      await teardown();
    }
  };
}

async function startServer(): Promise<TestServer> {
  let server: EmbeddedServer | undefined;
  let scratch: string | undefined;
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
  const template = `permgraph_template_${process.pid}_${Date.now()}`;
  const admin = openPool(serverUrl, { poolSize: 1 });
  await admin.query(sql`create database ${sql.ident(template)}`);
  const templateDb = openPool(withDatabase(serverUrl, template), { poolSize: 1 });
  try {
    await migrate(templateDb);
  } finally {
    await templateDb.dispose();
  }
  const teardown = async () => {
    await admin.query(sql`drop database if exists ${sql.ident(template)} with (force)`);
    await admin.dispose();
    await server?.stop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  };
  return { serverUrl, template, teardown };
}
