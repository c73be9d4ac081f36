// Loads any nodes.csv / grants.csv pair with COPY into staging tables, then
// into permgraph.nodes (owners first, whatever the file order) and
// permgraph.grants in one transaction with change capture off, and runs one
// full refresh after.
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { refresh, type BatchResult } from '../../src/engine/apply.ts';
import { GRANTS_FILE, NODES_FILE } from './csv.ts';

export interface LoadResult {
  nodes: number;
  grants: number;
  loadMs: number;
  refreshMs: number;
  refresh: BatchResult;
  permissions: number;
}

const STAGE_SQL = `
  create temp table stage_nodes (id text collate "C", kind text, owner_id text collate "C") on commit drop;
  create temp table stage_grants (tail_id text collate "C", head_id text collate "C", level smallint, source text) on commit drop;`;

const COPY_NODES = 'copy pg_temp.stage_nodes (id, kind, owner_id) from stdin with (format csv, header true)';
const COPY_GRANTS = 'copy pg_temp.stage_grants (tail_id, head_id, level, source) from stdin with (format csv, header true)';

/** Inserts staged nodes in order of ownership depth, so every owner exists before what it owns. */
const INSERT_NODES = `
  with recursive depth(id, d) as (
    select s.id, 0 from pg_temp.stage_nodes s
    where s.owner_id is null or s.owner_id = s.id
       or not exists (select 1 from pg_temp.stage_nodes o where o.id = s.owner_id)
    union all
    select s.id, depth.d + 1 from depth join pg_temp.stage_nodes s on s.owner_id = depth.id and s.owner_id <> s.id
  )
  insert into permgraph.nodes (id, kind, owner_id)
  select s.id, s.kind, s.owner_id from pg_temp.stage_nodes s join depth using (id) order by depth.d`;

const INSERT_GRANTS = `
  insert into permgraph.grants (tail_id, head_id, level, source)
  select tail_id, head_id, level, coalesce(source, 'default') from pg_temp.stage_grants`;

/** COPY statement, fed with the bytes of file. */
export async function copyFile(client: pg.Client, statement: string, file: string): Promise<void> {
  await pipeline(createReadStream(file), client.query(copyFrom(statement)));
}

/** A problem with the CSV pair given (as opposed to the server or the benchmark): told without a stack trace. */
export class GraphInputError extends Error {}

const HEADERS = { [NODES_FILE]: 'id,kind,owner_id', [GRANTS_FILE]: 'tail_id,head_id,level,source' } as const;

/**
 * The file's header must name the columns in their order: COPY's `header`
 * only skips the first line, so a grants.csv with head_id before tail_id
 * would load every grant reversed without a word.
 */
async function checkHeader(dir: string, name: keyof typeof HEADERS): Promise<void> {
  const file = path.join(dir, name);
  let first: string;
  try {
    const handle = await open(file);
    try {
      const { buffer, bytesRead } = await handle.read(Buffer.alloc(4096), 0, 4096, 0);
      first = buffer.subarray(0, bytesRead).toString('utf8').split(/\r?\n/)[0] ?? '';
    } finally {
      await handle.close();
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new GraphInputError(`${file} does not exist: a graph directory holds ${NODES_FILE} and ${GRANTS_FILE} (bench/README.md, "CSV format")`);
    }
    throw error;
  }
  const columns = first.replace(/^\uFEFF/, '').split(',').map((c) => c.trim().replace(/^"(.*)"$/, '$1')).join(',');
  if (columns !== HEADERS[name]) {
    throw new GraphInputError(`${file}: the header must be ${HEADERS[name]} (columns in that order), got ${JSON.stringify(first.slice(0, 80))}`);
  }
}

/** SQLSTATE classes that mean the data was refused: data exceptions, integrity constraints, permgraph's own checks. */
const INPUT_ERROR_CLASSES = ['22', '23', 'P0'];

/** Runs step; an error of the server about the data becomes a GraphInputError naming the file (and, for COPY, its line). */
async function about<T>(file: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (error) {
    const e = error as { code?: unknown; where?: unknown; message?: unknown };
    if (typeof e.code === 'string' && INPUT_ERROR_CLASSES.includes(e.code.slice(0, 2))) {
      // (COPY's context names the file's line: "COPY stage_grants, line 3, column level: \"read\""; a
      // trigger's names a line of its function, not of the file)
      const line = typeof e.where === 'string' ? /^COPY \S+, (line \d+(?:, column \w+)?)/.exec(e.where)?.[1] : undefined;
      throw new GraphInputError(`${file}${line ? `, ${line}` : ''}: ${String(e.message)}; nothing loaded`);
    }
    throw error;
  }
}

/** Loads dir/nodes.csv and dir/grants.csv into an empty permgraph schema at url. */
async function copyIn(url: string, dir: string): Promise<{ nodes: number; grants: number }> {
  await checkHeader(dir, NODES_FILE);
  await checkHeader(dir, GRANTS_FILE);
  const nodesFile = path.join(dir, NODES_FILE);
  const grantsFile = path.join(dir, GRANTS_FILE);
  const client = new pg.Client({ connectionString: url, application_name: 'permgraph-bench-load' });
  client.on('error', () => {}); // (the query in flight fails with it; unheard, the event crashed the process)
  await client.connect();
  try {
    await client.query('begin');
    await client.query("set local permgraph.capture = 'off'");
    await client.query(STAGE_SQL);
    await about(nodesFile, () => copyFile(client, COPY_NODES, nodesFile));
    await about(grantsFile, () => copyFile(client, COPY_GRANTS, grantsFile));
    await client.query('create index on pg_temp.stage_nodes (owner_id); analyze pg_temp.stage_nodes');
    const staged = await client.query('select count(*)::int as n from pg_temp.stage_nodes');
    if (staged.rows[0].n === 0) throw new GraphInputError(`${nodesFile} holds no node: nothing to measure`);
    const nodes = await about(nodesFile, () => client.query(INSERT_NODES));
    if (nodes.rowCount !== staged.rows[0].n) {
      throw new GraphInputError(`${staged.rows[0].n - (nodes.rowCount ?? 0)} node(s) of ${nodesFile} are in an ownership cycle; nothing loaded`);
    }
    const grants = await about(grantsFile, () => client.query(INSERT_GRANTS));
    await about(grantsFile, () => client.query('commit'));
    return { nodes: nodes.rowCount ?? 0, grants: grants.rowCount ?? 0 };
  } catch (error) {
    await client.query('rollback').catch(() => {});
    throw error;
  } finally {
    await client.end();
  }
}

export async function loadGraph(db: Queryable, url: string, dir: string): Promise<LoadResult> {
  const started = performance.now();
  const counts = await copyIn(url, dir);
  await db.query(sql`analyze permgraph.nodes; analyze permgraph.grants`);
  const loadMs = performance.now() - started;
  const refreshStarted = performance.now();
  const result = await refresh(db);
  const refreshMs = performance.now() - refreshStarted;
  await db.query(sql`vacuum analyze permgraph.permissions`);
  const [count] = await db.query(sql`select count(*)::bigint as n from permgraph.permissions`);
  return { ...counts, loadMs, refreshMs, refresh: result, permissions: Number(count?.n ?? 0) };
}
