// The change stream's cost on the write path (sql/functions/170_changes.sql):
// the same changes of the org graph applied by the same batches with no
// consumer registered and with one, interleaved, counting the rows each
// batch writes per changed permission row, its WAL and its duration; then
// the same for refresh() repairing a tenth of the table and refilling it
// from empty. Pruning (at acknowledgement, off the write path) is measured
// apart, and so is the one check a batch makes when nobody consumes.
//   npm run bench -- --stream [--size large]     (or: npx tsx bench/measure/stream.ts)
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { applyChanges, refresh, type BatchResult } from '../../src/engine/apply.ts';
import { ackChanges, dropConsumer, registerConsumer } from '../../src/engine/changes.ts';
import { generateCsv } from '../generate.ts';
import { loadGraph } from '../graph/load.ts';
import type { Size } from '../graph/types.ts';
import { say } from '../lib/progress.ts';
import { createRng } from '../lib/rng.ts';
import { freshDatabase, startServer } from '../lib/server.ts';
import { round, summarize, type Summary } from '../lib/stats.ts';
import { makeChange, readPools, type ChangeKind } from './changes.ts';

const KINDS: ChangeKind[] = ['add member', 'remove member', 'change level', 'share project', 'unshare project', 'move subtree'];
const SAMPLES_PER_KIND: Record<Size, number> = { small: 12, large: 4 };
const CONSUMER = 'bench-stream';
const CHECK_CALLS = 20_000;

/** What one mode's batches wrote, summed over the batches. */
export interface WriteCost {
  batches: number;
  /** Rows of permissions the batches changed (inserted + updated + deleted). */
  changedRows: number;
  /** Events recorded (0 without a consumer). */
  events: number;
  /** (changed rows + events) / changed rows. */
  rowsWrittenPerChangedRow: number;
  walBytes: number;
  walBytesPerChangedRow: number;
  /** Client round trip of each batch, ms. */
  batchMs: Summary;
}

export interface StreamResult {
  graph: { size: Size; permissions: number };
  incremental: { without: WriteCost; with: WriteCost };
  refreshTenth: { without: WriteCost; with: WriteCost };
  refreshFromEmpty: { without: WriteCost; with: WriteCost };
  /** Acknowledging (and so pruning) the events of one batch. */
  prune: { events: number; walBytesPerEvent: number; ackMs: Summary };
  /** _changes_begin_write() with no consumer: the whole cost a batch pays for the stream then, µs per call. */
  checkMicros: number;
}

interface Sample {
  changed: number;
  events: number;
  walBytes: number;
  ms: number;
}

async function walPosition(db: Queryable): Promise<string> {
  const [row] = await db.query(sql`select pg_current_wal_insert_lsn()::text as lsn`);
  return row.lsn;
}

async function walSince(db: Queryable, lsn: string): Promise<number> {
  const [row] = await db.query(sql`select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), ${lsn}::pg_lsn)::bigint as bytes`);
  return Number(row.bytes);
}

async function eventCount(db: Queryable): Promise<number> {
  const [row] = await db.query(sql`select count(*)::bigint as n from permgraph.permission_changes`);
  return Number(row.n);
}

/** Runs one batch and measures it; with a consumer, then acknowledges its events (measured apart). */
async function measureBatch(db: Queryable, run: () => Promise<BatchResult>, consuming: boolean, prune: Sample[]): Promise<Sample> {
  const lsn = await walPosition(db);
  const started = performance.now();
  const result = await run();
  const ms = performance.now() - started;
  const walBytes = await walSince(db, lsn);
  const events = consuming ? await eventCount(db) : 0;
  if (events > 0) {
    const [last] = await db.query(sql`select max(seq) as seq from permgraph.permission_changes`);
    const ackLsn = await walPosition(db);
    const ackStarted = performance.now();
    await ackChanges(db, CONSUMER, Number(last.seq));
    prune.push({ changed: 0, events, ms: performance.now() - ackStarted, walBytes: await walSince(db, ackLsn) });
  }
  return { changed: result.inserted + result.updated + result.deleted, events, walBytes, ms };
}

function cost(samples: Sample[]): WriteCost {
  const changedRows = samples.reduce((sum, s) => sum + s.changed, 0);
  const events = samples.reduce((sum, s) => sum + s.events, 0);
  const walBytes = samples.reduce((sum, s) => sum + s.walBytes, 0);
  return {
    batches: samples.length,
    changedRows,
    events,
    rowsWrittenPerChangedRow: round((changedRows + events) / Math.max(1, changedRows), 3),
    walBytes,
    walBytesPerChangedRow: round(walBytes / Math.max(1, changedRows), 1),
    batchMs: summarize(samples.map((s) => s.ms)),
  };
}

/** Registers or drops the benchmark's consumer: the two modes. */
async function setConsuming(db: Queryable, on: boolean): Promise<void> {
  if (on) await registerConsumer(db, CONSUMER);
  else await dropConsumer(db, CONSUMER);
}

export async function measureStream(size: Size = 'small', seed = '1'): Promise<StreamResult> {
  const server = await startServer();
  try {
    const graphDir = (await generateCsv('org', size, seed)).dir;
    const bdb = await freshDatabase(server.url, `stream_org_${size}`);
    try {
      const db = bdb.db;
      const loaded = await loadGraph(db, bdb.url, graphDir);
      say(`stream: org ${size}, ${loaded.permissions} permission rows`);
      const pools = await readPools(db, 'random');
      const rng = createRng(`stream-${seed}`);
      const samples = { without: [] as Sample[], with: [] as Sample[] };
      const prune: Sample[] = [];
      // Each change (and its revert) is applied once in each mode, the order
      // alternating, so both modes write exactly the same permission rows.
      for (const kind of KINDS) {
        for (let i = 0; i < SAMPLES_PER_KIND[size]; i++) {
          const change = makeChange(kind, pools, rng);
          if (!change?.revert) continue;
          for (const consuming of i % 2 === 0 ? [false, true] : [true, false]) {
            await setConsuming(db, consuming);
            const into = consuming ? samples.with : samples.without;
            await db.query(change.apply);
            into.push(await measureBatch(db, () => applyChanges(db), consuming, prune));
            await db.query(change.revert);
            into.push(await measureBatch(db, () => applyChanges(db), consuming, prune));
          }
        }
      }
      // refresh() repairing a tenth of the rows (damaged behind the engine's back), then refilling the table from empty.
      const tenth = { without: [] as Sample[], with: [] as Sample[] };
      const empty = { without: [] as Sample[], with: [] as Sample[] };
      for (const consuming of [false, true, true, false, false, true]) {
        await setConsuming(db, consuming);
        await db.query(sql`
          update permgraph.permissions set level = case when level = 1 then 2 else 1 end
          where user_id <> target_id and hashtext(user_id || '/' || target_id) % 10 = 0`);
        (consuming ? tenth.with : tenth.without).push(await measureBatch(db, () => refresh(db), consuming, prune));
        await db.query(sql`truncate permgraph.permissions`);
        (consuming ? empty.with : empty.without).push(await measureBatch(db, () => refresh(db), consuming, prune));
      }
      // What a batch pays when nobody consumes: one call of the check.
      await setConsuming(db, false);
      const checkMicros = await db.tx(async (tx) => {
        const started = performance.now();
        // in the select list, a volatile function runs once per row
        await tx.query(sql`select count(*) filter (where permgraph._changes_begin_write()) from generate_series(1, ${CHECK_CALLS}::integer)`);
        return ((performance.now() - started) * 1000) / CHECK_CALLS;
      });
      const pruneEvents = prune.reduce((sum, s) => sum + s.events, 0);
      return {
        graph: { size, permissions: loaded.permissions },
        incremental: { without: cost(samples.without), with: cost(samples.with) },
        refreshTenth: { without: cost(tenth.without), with: cost(tenth.with) },
        refreshFromEmpty: { without: cost(empty.without), with: cost(empty.with) },
        prune: {
          events: pruneEvents,
          walBytesPerEvent: round(prune.reduce((sum, s) => sum + s.walBytes, 0) / Math.max(1, pruneEvents), 1),
          ackMs: summarize(prune.map((s) => s.ms)),
        },
        checkMicros: round(checkMicros, 2),
      };
    } finally {
      await bdb.drop();
    }
  } finally {
    await server.stop();
  }
}

export function formatStream(r: StreamResult): string {
  const row = (label: string, c: WriteCost) =>
    `  ${label.padEnd(16)} ${String(c.batches).padStart(4)} ${String(c.changedRows).padStart(10)} ${String(c.events).padStart(10)}` +
    ` ${c.rowsWrittenPerChangedRow.toFixed(2).padStart(12)} ${c.walBytesPerChangedRow.toFixed(0).padStart(12)}` +
    ` ${round(c.batchMs.median, 1).toFixed(1).padStart(10)}`;
  const ratio = (a: WriteCost, b: WriteCost) =>
    `  with / without: WAL ×${round(b.walBytes / Math.max(1, a.walBytes), 2)}, median batch ×${round(b.batchMs.median / a.batchMs.median, 2)}`;
  const section = (title: string, pair: { without: WriteCost; with: WriteCost }) => [
    title,
    row('no consumer', pair.without),
    row('one consumer', pair.with),
    ratio(pair.without, pair.with),
  ];
  return [
    `change stream write cost, org ${r.graph.size} (${r.graph.permissions} permission rows)`,
    `  ${''.padEnd(16)} ${'runs'.padStart(4)} ${'changed'.padStart(10)} ${'events'.padStart(10)} ${'rows/changed'.padStart(12)} ${'WAL B/row'.padStart(12)} ${'median ms'.padStart(10)}`,
    ...section('incremental batches (6 change kinds, each applied and reverted)', r.incremental),
    ...section('refresh() repairing a tenth of the rows', r.refreshTenth),
    ...section('refresh() from an empty table', r.refreshFromEmpty),
    `pruning at acknowledgement (off the write path): ${r.prune.events} events, ${r.prune.walBytesPerEvent} WAL bytes per event, ack median ${round(r.prune.ackMs.median, 1)} ms (max ${round(r.prune.ackMs.max, 1)} ms)`,
    `with no consumer, a batch pays one check: ${r.checkMicros} µs`,
  ].join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  say(formatStream(await measureStream()));
}
