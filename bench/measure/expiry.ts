// Expiry lag with the daemon: how long after a grant's expiry the worker has
// recomputed the rows it changed, with no write to wake it. On the org graph,
// memberships (user -> team) and shares (team -> project) get expiry times a
// fixed step apart starting a few seconds ahead; one batch gives the rows
// their valid_until; then a Worker runs as `permgraph worker` does (default
// poll interval, LISTEN on) and every batch it commits is timed. Reads deny
// an expired row from its valid_until on, so this lag only delays a lower
// level reappearing, never access ending.
// An expiry that changes no row (another path gives the same) has nothing to
// apply and is not counted. Lag of an expiry time t = when the first batch
// that started after t had committed (its 'batch' event) - t.
//   npm run bench -- --expiry [--size large]     (or: npx tsx bench/measure/expiry.ts)
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { applyChanges, type BatchResult } from '../../src/engine/apply.ts';
import { verify } from '../../src/engine/verify.ts';
import { Worker } from '../../src/worker/worker.ts';
import { DEFAULT_POLL_INTERVAL_MS } from '../../src/constants.ts';
import { generateCsv } from '../generate.ts';
import { loadGraph } from '../graph/load.ts';
import type { Size } from '../graph/types.ts';
import { say } from '../lib/progress.ts';
import { createRng } from '../lib/rng.ts';
import { freshDatabase, startServer } from '../lib/server.ts';
import { round, summarize, type Summary } from '../lib/stats.ts';
import { readPools } from './changes.ts';

const EXPIRING: Record<Size, number> = { small: 200, large: 200 };
const LEAD_MS = 5_000; // the first expiry, after the batch that sets them
const STEP_MS = 97; // apart from each other (not a multiple of the poll interval)

export interface ExpiryResult {
  graph: { size: Size; permissions: number };
  grants: number;
  /** Expiry times that change some row (the others have nothing to apply). */
  effective: number;
  pollIntervalMs: number;
  lagMs: Summary;
  batches: number;
  expiredRowsPerBatch: Summary;
  batchServerMs: Summary;
  verifyDifferences: number;
}

interface TimedBatch {
  committedAt: number;
  result: BatchResult;
}

async function effectiveExpiries(db: Queryable): Promise<number[]> {
  const rows: { t: Date }[] = await db.query(sql`select distinct valid_until as t from permgraph.permissions where valid_until is not null`);
  return rows.map((r) => r.t.getTime()).sort((a, b) => a - b);
}

export async function measureExpiry(size: Size = 'small', seed = '1'): Promise<ExpiryResult> {
  const server = await startServer();
  try {
    const graphDir = (await generateCsv('org', size, seed)).dir;
    const bdb = await freshDatabase(server.url, `expiry_org_${size}`);
    try {
      const db = bdb.db;
      const loaded = await loadGraph(db, bdb.url, graphDir);
      say(`expiry: org ${size}, ${loaded.permissions} permission rows`);
      const pools = await readPools(db, 'random');
      const rng = createRng(`expiry-${seed}`);
      const candidates = [...pools.memberships, ...pools.shares];
      for (let i = candidates.length - 1; i > 0; i--) {
        const j = rng.int(0, i);
        [candidates[i], candidates[j]] = [candidates[j]!, candidates[i]!];
      }
      const picked = candidates.slice(0, EXPIRING[size]);
      const first = Math.ceil((Date.now() + LEAD_MS) / 1000) * 1000;
      await db.tx(async (tx) => {
        for (const [i, g] of picked.entries()) {
          await tx.query(sql`update permgraph.grants set expires_at = ${new Date(first + i * STEP_MS)}
                             where tail_id = ${g.tail} and head_id = ${g.head} and source = ${g.source}`);
        }
      });
      await applyChanges(db);
      const expiries = await effectiveExpiries(db);
      if (expiries.length === 0 || expiries[0]! <= Date.now()) throw new Error('expiry: the expiries were set too late; raise LEAD_MS');
      say(`expiry: ${picked.length} grants expire from ${new Date(first).toISOString()}, ${STEP_MS} ms apart; ${expiries.length} change some row`);

      const batches: TimedBatch[] = [];
      const worker = new Worker({ url: bdb.url });
      worker.on('batch', (result) => batches.push({ committedAt: Date.now(), result }));
      await worker.start();
      const last = expiries[expiries.length - 1]!;
      while (Date.now() < last + 3_000) await new Promise((resolve) => setTimeout(resolve, 200));
      await worker.stop();

      const applying = batches.filter((b) => b.result.expired > 0);
      const lags = expiries.map((t) => {
        const batch = applying.find((b) => b.committedAt - b.result.ms >= t);
        if (!batch) throw new Error(`expiry: no batch applied the expiry at ${new Date(t).toISOString()}`);
        return batch.committedAt - t;
      });
      const { differences } = await verify(db);
      return {
        graph: { size, permissions: loaded.permissions },
        grants: picked.length,
        effective: expiries.length,
        pollIntervalMs: DEFAULT_POLL_INTERVAL_MS,
        lagMs: summarize(lags),
        batches: applying.length,
        expiredRowsPerBatch: summarize(applying.map((b) => b.result.expired)),
        batchServerMs: summarize(applying.map((b) => b.result.ms)),
        verifyDifferences: differences.length,
      };
    } finally {
      await bdb.drop();
    }
  } finally {
    await server.stop();
  }
}

export function formatExpiry(r: ExpiryResult): string {
  const ms = (s: Summary) => `median ${round(s.median, 1)} ms, p95 ${round(s.p95, 1)} ms, p99 ${round(s.p99, 1)} ms, max ${round(s.max, 1)} ms`;
  return [
    `expiry lag with the worker daemon, org ${r.graph.size} (${r.graph.permissions} permission rows)`,
    `  ${r.grants} grants expiring ${STEP_MS} ms apart, ${r.effective} of them changing rows; worker defaults (poll ${r.pollIntervalMs} ms, LISTEN)`,
    `  lag from expiry to the recomputed rows committed: ${ms(r.lagMs)}`,
    `  ${r.batches} batches applied expiries: ${round(r.expiredRowsPerBatch.median, 1)} rows each (median), server ${ms(r.batchServerMs)}`,
    `  verify() afterwards: ${r.verifyDifferences} differences`,
  ].join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  say(formatExpiry(await measureExpiry()));
}
