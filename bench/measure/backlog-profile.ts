// Where a backlog's long job spends its time (bench/FINDINGS.md 51): the
// batch that moves a backlog into a long job, then chunks of the job
// alternating with batches of one fresh grant each, as the worker runs
// them. A scratch profile, on a fresh database of the benchmark's org graph:
//
//   npx tsx bench/measure/backlog-profile.ts [small|large] [changes, default 80000] [steps, default 4]
//
// The backlog is the worker benchmark's (commitBacklog: churn, a quarter of
// its pairs kept). Each step runs in its own transaction with
// track_functions on, and prints its wall time, the engine's result, and
// the permgraph functions that took the most time in it, by their own time
// (pg_stat_xact_user_functions: PL/pgSQL functions; SQL functions that the
// planner inlines count in their caller).
import type { SQLQuery } from '@databases/pg';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { DEFAULT_CHUNK_PAIRS, DEFAULT_MAX_BATCH } from '../../src/constants.ts';
import { generateCsv } from '../generate.ts';
import { loadGraph } from '../graph/load.ts';
import type { Size } from '../graph/types.ts';
import { freshDatabase, startServer } from '../lib/server.ts';
import { commitBacklog } from './worker/workload.ts';

const TOP_FUNCTIONS = 6;

async function profile(db: Queryable, label: string, query: SQLQuery): Promise<void> {
  await db.tx(async (tx) => {
    await tx.query(sql`set local track_functions = 'all'`);
    const started = performance.now();
    const [{ result }] = await tx.query(query);
    const wallMs = performance.now() - started;
    const functions: { name: string; calls: number; self_ms: number }[] = await tx.query(sql`
      select funcname as name, calls, round(self_time::numeric, 1)::float8 as self_ms
      from pg_stat_xact_user_functions where schemaname = 'permgraph'
      order by self_time desc limit ${TOP_FUNCTIONS}`);
    console.log(`${label}: ${wallMs.toFixed(1)} ms ${JSON.stringify(result)}`);
    for (const f of functions) console.log(`    ${f.name} ×${f.calls}: ${f.self_ms} ms`);
  });
}

const [sizeArg = 'small', changesArg = '80000', stepsArg = '4'] = process.argv.slice(2);
if (sizeArg !== 'small' && sizeArg !== 'large') throw new Error(`size must be small or large, got ${sizeArg}`);
const size: Size = sizeArg;
const changes = Number(changesArg);
const steps = Number(stepsArg);
if (!Number.isInteger(changes) || changes < 1) throw new Error(`changes must be a whole number above 0, got ${changesArg}`);
if (!Number.isInteger(steps) || steps < 0) throw new Error(`steps must be a whole number, got ${stepsArg}`);

const server = await startServer();
try {
  const graph = await generateCsv('org', size, '1');
  const bdb = await freshDatabase(server.url, `backlog_profile_${size}`);
  try {
    const loaded = await loadGraph(bdb.db, bdb.url, graph.dir);
    console.log(`org ${size}: ${loaded.permissions} permission rows`);
    const started = performance.now();
    const backlog = await commitBacklog(bdb.db, changes, 0.25);
    console.log(`backlog of ${changes} changes committed in ${Math.round(performance.now() - started)} ms: ${JSON.stringify(backlog)}`);
    // as the worker applies (its defaults): a backlog above either limit becomes a long job
    const batch = sql`select permgraph.apply_changes(p_max_changes => ${DEFAULT_MAX_BATCH}, p_chunk_pairs => ${DEFAULT_CHUNK_PAIRS}) as result`;
    await profile(bdb.db, 'batch (the backlog)', batch);
    const [{ user, object }] = await bdb.db.query(sql`
      select (select id from permgraph.nodes where kind = 'user' order by id desc limit 1) as user,
             (select id from permgraph.nodes where kind = 'object' order by id limit 1) as object`);
    for (let step = 1; step <= steps; step++) {
      await profile(bdb.db, `chunk ${step}`, sql`select permgraph.apply_job_chunk() as result`);
      await bdb.db.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values (${user}, ${object}, 1, ${`backlog-profile-${step}`})`);
      await profile(bdb.db, `batch ${step} (one fresh grant)`, batch);
    }
  } finally {
    await bdb.drop();
  }
} finally {
  await server.stop();
}
