// The floor under an import's rows/s (bench/measure/import.ts): the same
// rows written by a plain COPY, the CSV parsed by the server, into copies of
// nodes and grants that hold the same rows and have the same indexes and
// check constraints (CREATE TABLE … LIKE … INCLUDING ALL), but no triggers,
// no foreign keys and no edges (the engine's graph, one row per grant and
// per owned node, which the import writes too), with nothing validated.
// No import can write its rows faster on the same machine, so the ratio
// import ÷ floor shows how much of the gap is the import's own work.
import { createReadStream, createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { copyFile } from '../graph/load.ts';

const LEVELS: Record<string, string> = { read: '1', write: '2', manage: '3' };

export interface CopyFloor {
  rows: number;
  ms: number;
  rowsPerSecond: number;
}

/** Times the COPY of both files (grants with their levels as numbers, converted beforehand) in one transaction. */
export async function measureCopyFloor(db: Queryable, url: string, files: { nodes: { file: string }; grants: { file: string } }): Promise<CopyFloor> {
  const grants = `${files.grants.file}.floor.csv`;
  await numericLevels(files.grants.file, grants);
  await db.query(sql`
    drop schema if exists bench_floor cascade;
    create schema bench_floor;
    create table bench_floor.nodes (like permgraph.nodes including all);
    create table bench_floor.grants (like permgraph.grants including all);
    insert into bench_floor.nodes select * from permgraph.nodes;
    insert into bench_floor.grants select * from permgraph.grants;
    analyze bench_floor.nodes;
    analyze bench_floor.grants`);
  const client = new pg.Client({ connectionString: url, application_name: 'permgraph-bench-floor' });
  client.on('error', () => {}); // (the query in flight fails with it; unheard, the event crashed the process)
  await client.connect();
  try {
    const started = performance.now();
    await client.query('begin');
    await copyFile(client, 'copy bench_floor.nodes (id, kind, owner_id) from stdin with (format csv, header true)', files.nodes.file);
    await copyFile(client, 'copy bench_floor.grants (tail_id, head_id, level, source) from stdin with (format csv, header true)', grants);
    await client.query('commit');
    const ms = performance.now() - started;
    const [{ rows }] = await db.query(sql`
      select (select count(*) from bench_floor.nodes) + (select count(*) from bench_floor.grants)
           - (select count(*) from permgraph.nodes) - (select count(*) from permgraph.grants) as rows`);
    return { rows: Number(rows), ms: Math.round(ms), rowsPerSecond: Math.round(Number(rows) / (ms / 1000)) };
  } finally {
    await client.end();
    await db.query(sql`drop schema bench_floor cascade`);
  }
}

/** The grants file of writePair with each level name as its number (its lines hold no quotes). */
async function numericLevels(from: string, to: string): Promise<void> {
  const out = createWriteStream(to, { encoding: 'utf8' });
  for await (const line of createInterface({ input: createReadStream(from, { encoding: 'utf8' }), crlfDelay: Infinity })) {
    const cut = line.split(',');
    if (cut[2] !== undefined && LEVELS[cut[2]]) cut[2] = LEVELS[cut[2]]!;
    if (!out.write(`${cut.join(',')}\n`)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
}
