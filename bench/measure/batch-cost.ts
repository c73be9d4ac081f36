// What one batch costs the worker's backend per change, by batch size and
// kind (the worker benchmark's churn: additions, removals, both). A scratch
// profile for bench/FINDINGS.md (finding 8), run on a database kept by
// `npm run bench -- --size large --shape org --keep`:
//
//   npx tsx bench/measure/batch-cost.ts [sizes, default 64,500,2000,5000]
//
// Each batch is made and applied inside a REPEATABLE READ transaction that
// is rolled back (removals: their additions are committed and applied first,
// and taken back afterwards), so the graph ends as it started. The figure is
// the backend's CPU time (/proc: the server must be local), less sensitive
// to other work on the machine than wall time.
import { readFileSync } from 'node:fs';
import { sql, openPool, type Queryable } from '../../src/db/pool.ts';
import { startServer, withDatabase } from '../lib/server.ts';
import { resetWorkerSession, useWorkerSession } from '../../src/engine/apply.ts';
import { Churn } from './worker/workload.ts';

const DATABASE = 'permgraph_bench_org_large';
const REPEATS = 2;

function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

interface Sample { cpuMs: number; wallMs: number; serverMs: number; mode: string }

async function timed(db: Queryable, pid: number, query: ReturnType<typeof sql>): Promise<{ cpuMs: number; wallMs: number; rows: any[] }> {
  const cpu = cpuMs(pid);
  const t = performance.now();
  const rows = await db.query(query);
  return { cpuMs: cpuMs(pid) - cpu, wallMs: performance.now() - t, rows };
}

const APPLY = sql`select permgraph.apply_changes() as r`;

/**
 * Applies `n` changes of `kind` in `batches` equal batches, in a rolled-back
 * transaction; `split`: the mixed changes as two batches, the additions
 * first (an add-only prefix), then the removals.
 */
async function batchCost(pool: ReturnType<typeof openPool>, kind: 'adds' | 'removes' | 'mixed', n: number, batches = 1, split = false): Promise<Sample> {
  return pool.task(async (conn) => {
    // the worker's session: a large mixed queue is split as the worker splits it
    await useWorkerSession(conn);
    const [{ pid }] = await conn.query(sql`select pg_backend_pid() as pid`);
    // removals and the mixed batch's removed half: additions committed and applied first
    const present = kind === 'adds' ? 0 : kind === 'removes' ? n : n / 2;
    if (present > 0) {
      await (await Churn.load(conn, 2 * present)).commit(conn, 0, present);
      await conn.query(APPLY);
    }
    const fresh = await Churn.load(conn, 2 * n);
    let added = 0;
    const add = async (count: number) => {
      await fresh.commit(conn, added, count);
      added += count;
    };
    // (in insertion order, so about one in five is a membership, as added)
    const remove = (count: number) => conn.query(sql`
      delete from permgraph.grants where (tail_id, head_id, source) in (
        select tail_id, head_id, source from permgraph.grants where source = 'bench-churn' limit ${count})`);
    // until nothing is pending: a worker session applies a large mixed queue in two batches (045_batch_split.sql)
    const apply = async (sample: Sample) => {
      const modes: string[] = [];
      for (;;) {
        const { cpuMs: c, wallMs: w, rows } = await timed(conn, pid, APPLY);
        sample.cpuMs += c;
        sample.wallMs += w;
        if (rows[0].r.mode === 'none') break;
        sample.serverMs += Number(rows[0].r.ms);
        modes.push(`${rows[0].r.mode}${rows[0].r.delta ? '/delta' : ''}${rows[0].r.local ? '/local' : ''}`);
      }
      sample.mode = modes.join('+');
    };
    await conn.query(sql`begin isolation level repeatable read`);
    const sample: Sample = { cpuMs: 0, wallMs: 0, serverMs: 0, mode: '' };
    try {
      const per = n / batches;
      for (let b = 0; b < batches; b++) {
        if (kind === 'adds') await add(per);
        else if (kind === 'removes') await remove(per);
        else if (split) {
          await add(per / 2);
          await apply(sample);
          await remove(per / 2);
        } else {
          await remove(per / 2);
          await add(per / 2);
        }
        await apply(sample);
      }
    } finally {
      await conn.query(sql`rollback`);
    }
    if (present > 0) {
      await conn.query(sql`delete from permgraph.grants where source = 'bench-churn'`);
      await conn.query(APPLY);
    }
    await resetWorkerSession(conn);
    return sample;
  });
}

async function main(): Promise<void> {
  const sizes = (process.argv[2] ?? '64,500,2000,5000').split(',').filter(Boolean).map(Number);
  const server = await startServer();
  const pool = openPool(withDatabase(server.url, DATABASE), { poolSize: 1, applicationName: 'permgraph-bench-batch-cost' });
  try {
    // (an interrupted run may have left committed churn behind)
    await pool.query(sql`delete from permgraph.grants where source = 'bench-churn'`);
    await pool.query(APPLY);
    console.log('kind\tchanges\tbatches\tmode\tcpu ms/change\twall ms/change\tserver ms (sum)');
    for (const n of sizes) {
      for (let r = 0; r < REPEATS; r++) {
        for (const kind of ['adds', 'removes', 'mixed'] as const) {
          const s = await batchCost(pool, kind, n);
          console.log(`${kind}\t${n}\t1\t${s.mode}\t${(s.cpuMs / n).toFixed(3)}\t${(s.wallMs / n).toFixed(3)}\t${s.serverMs.toFixed(0)}`);
        }
      }
    }
    // the same 10,000 changes as one batch or capped into several
    for (let r = 0; r < REPEATS; r++) {
      for (const [kind, batches, split] of [['adds', 1, false], ['adds', 5, false], ['adds', 20, false], ['removes', 1, false], ['removes', 5, false], ['removes', 20, false], ['mixed', 1, false], ['mixed', 1, true], ['mixed', 5, true]] as const) {
        const s = await batchCost(pool, kind, 10_000, batches, split);
        console.log(`${kind}${split ? ' split adds|removes' : ''}\t10000\t${batches}\t${s.mode}\t${(s.cpuMs / 10_000).toFixed(3)}\t${(s.wallMs / 10_000).toFixed(3)}\t${s.serverMs.toFixed(0)}`);
      }
    }
  } finally {
    await pool.dispose();
    await server.stop();
  }
}

await main();
