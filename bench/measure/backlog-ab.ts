// Two versions of one function file, side by side, on a backlog's catch-up
// (bench/FINDINGS.md 56): org (small or large) and the worker benchmark's
// backlog are loaded once into a template database; each round clones it
// (CREATE DATABASE … TEMPLATE, seconds for org large), loads one side's file
// into the clone, and drains the backlog with a worker as the benchmark runs
// it, while one fresh change is committed every 250 ms and timed from its
// commit to its token applied. Rounds alternate A B, B A, … so that the
// host's drift falls on both sides. A scratch measurement, on a server of
// its own:
//
//   npx tsx bench/measure/backlog-ab.ts A.sql B.sql [small|large] [rounds, default 3] [changes, default 1000000]
//
// e.g. A.sql from `git show <commit>:sql/functions/065_long_job.sql`, B.sql
// the working copy. The template has the working copy's functions; each
// side's file replaces its own. The fresh changes come from a churn of new
// pairs (all additions), the same in every round.
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_CHUNK_PAIRS, DEFAULT_POLL_INTERVAL_MS } from '../../src/constants.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import type { ChunkResult } from '../../src/engine/long-job.ts';
import { Worker } from '../../src/worker/worker.ts';
import { generateCsv } from '../generate.ts';
import { loadGraph } from '../graph/load.ts';
import type { Size } from '../graph/types.ts';
import { freshDatabase, startServer, withDatabase } from '../lib/server.ts';
import { backlogDrained, FreshWriter } from './worker/phases.ts';
import { Churn, commitBacklog } from './worker/workload.ts';

const CLONE = 'permgraph_bench_backlog_ab_clone';
// (one every 250 ms: enough for a catch-up of some 16 minutes)
const FRESH_CHANGES = 4_000;

interface Side {
  name: string;
  text: string;
}

/** Drains the clone's backlog with a worker while fresh changes are committed; prints one line. */
async function drain(url: string, side: Side, round: number): Promise<void> {
  const db = openPool(url, { poolSize: 6, applicationName: 'permgraph-bench' });
  try {
    await db.query(sql.__dangerous__rawValue(side.text));
    const churn = await Churn.load(db, FRESH_CHANGES);
    const chunks: ChunkResult[] = [];
    const worker = new Worker({ url, pollIntervalMs: DEFAULT_POLL_INTERVAL_MS, chunkPairs: DEFAULT_CHUNK_PAIRS });
    worker.on('chunk', (chunk) => chunks.push(chunk));
    const started = performance.now();
    await worker.start();
    const fresh = new FreshWriter(db, { writers: db, churn, first: 0 }, started);
    while (!(await backlogDrained(db))) await sleep(100);
    await fresh.stop();
    const drainS = (performance.now() - started) / 1000;
    await worker.stop();
    const { lag } = fresh.result();
    const longest = chunks.reduce((max, c) => Math.max(max, c.ms), 0);
    const largest = chunks.reduce((max, c) => Math.max(max, c.regionPairs), 0);
    console.log(
      `round ${round} ${side.name}: catch-up ${drainS.toFixed(1)} s; ${lag.n} writes: median ${lag.median.toFixed(0)}, p95 ${lag.p95.toFixed(0)}, ` +
        `p99 ${lag.p99.toFixed(0)}, max ${lag.max.toFixed(0)} ms; ${chunks.length} chunks, the longest ${longest.toFixed(0)} ms, the largest ${largest} pairs`,
    );
  } finally {
    await db.dispose();
  }
}

const [aFile, bFile, sizeArg = 'large', roundsArg = '3', changesArg = '1000000'] = process.argv.slice(2);
if (!aFile || !bFile) throw new Error('usage: backlog-ab.ts A.sql B.sql [small|large] [rounds] [changes]');
if (sizeArg !== 'small' && sizeArg !== 'large') throw new Error(`size must be small or large, got ${sizeArg}`);
const size: Size = sizeArg;
const rounds = Number(roundsArg);
const changes = Number(changesArg);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`rounds must be a whole number above 0, got ${roundsArg}`);
if (!Number.isInteger(changes) || changes < 1) throw new Error(`changes must be a whole number above 0, got ${changesArg}`);
const sides: [Side, Side] = [
  { name: 'A', text: await readFile(aFile, 'utf8') },
  { name: 'B', text: await readFile(bFile, 'utf8') },
];

const server = await startServer();
try {
  const graph = await generateCsv('org', size, '1');
  const template = await freshDatabase(server.url, `backlog_ab_${size}`);
  const admin = openPool(server.url, { poolSize: 1, applicationName: 'permgraph-bench' });
  try {
    const loaded = await loadGraph(template.db, template.url, graph.dir);
    const backlog = await commitBacklog(template.db, changes, 0.25);
    console.log(`org ${size}: ${loaded.permissions} permission rows; a backlog of ${changes} changes: ${JSON.stringify(backlog)}`);
    // (a template takes no connection while it is copied)
    await template.db.dispose();
    for (let round = 0; round < rounds; round++) {
      for (const side of round % 2 === 0 ? sides : [sides[1], sides[0]]) {
        await admin.query(sql`drop database if exists ${sql.ident(CLONE)} with (force)`);
        await admin.query(sql`create database ${sql.ident(CLONE)} template ${sql.ident(template.name)}`);
        await drain(withDatabase(server.url, CLONE), side, round);
      }
    }
    await admin.query(sql`drop database if exists ${sql.ident(CLONE)} with (force)`);
  } finally {
    await admin.dispose();
    await template.drop();
  }
} finally {
  await server.stop();
}
