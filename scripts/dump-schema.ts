// `npm run schema:dump`: installs the schema into a fresh database (on
// DATABASE_URL's server, or an embedded one) and writes sql/schema.sql, and
// records the function files' current versions in sql/function-history.json.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startEmbedded } from '../src/db/embedded.ts';
import { openPool, sql } from '../src/db/pool.ts';
import { FUNCTION_HISTORY_FILE, readFunctionHistory, withCurrentVersions, writeFunctionHistory } from '../src/migrations/function-history.ts';
import { loadFunctionFiles, migrate, SQL_DIR } from '../src/migrations/migrate.ts';
import { dumpSchema, SCHEMA_DUMP_PATH } from '../src/migrations/schema-dump.ts';

const scratch = await mkdtemp(path.join(tmpdir(), 'permgraph-dump-'));
const server = process.env.DATABASE_URL ? undefined : await startEmbedded({ dataDir: path.join(scratch, 'data') });
const serverUrl = process.env.DATABASE_URL ?? server!.url;
const database = `permgraph_dump_${process.pid}`;
const admin = openPool(serverUrl, { poolSize: 1 });
try {
  await admin.query(sql`create database ${sql.ident(database)}`);
  const url = new URL(serverUrl);
  url.pathname = `/${database}`;
  const db = openPool(url.toString(), { poolSize: 1 });
  try {
    await migrate(db);
    await writeFile(SCHEMA_DUMP_PATH, await dumpSchema(db));
    process.stdout.write(`wrote ${path.relative(process.cwd(), SCHEMA_DUMP_PATH)}\n`);
    // every version of the function files, the current ones last (src/migrations/function-history.ts)
    await writeFunctionHistory(SQL_DIR, withCurrentVersions(await readFunctionHistory(SQL_DIR), await loadFunctionFiles()));
    process.stdout.write(`wrote ${path.relative(process.cwd(), path.join(SQL_DIR, FUNCTION_HISTORY_FILE))}\n`);
  } finally {
    await db.dispose();
  }
} finally {
  await admin.query(sql`drop database if exists ${sql.ident(database)} with (force)`);
  await admin.dispose();
  await server?.stop();
  await rm(scratch, { recursive: true, force: true });
}
