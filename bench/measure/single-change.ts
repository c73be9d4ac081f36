// What one local change costs, side by side with its baselines, on a
// PostgreSQL started with its default settings (jit = on):
// - the same graph and the same single changes in one database left at the
//   default and one with `jit = off`. permgraph's functions switch off what
//   they must themselves (jit, plan types), so the two should cost the same;
//   before they did, one change took ~700 ms on a default server against
//   ~4 ms with jit off;
// - the floor: a one-row INSERT and COMMIT into an indexed table, against
//   the change's apply (apply_changes in its own transaction) and against
//   write + apply (the change's own commit, then its apply).
//   npm run bench -- --stock          (or: npx tsx bench/measure/single-change.ts)
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmbedded } from '../../src/db/embedded.ts';
import { openPool, sql, type ConnectionPool } from '../../src/db/pool.ts';
import { applyChanges } from '../../src/engine/apply.ts';
import { migrate } from '../../src/migrations/migrate.ts';
import { generateCsv } from '../generate.ts';
import { loadGraph } from '../graph/load.ts';
import { postgresName } from '../lib/environment.ts';
import { say } from '../lib/progress.ts';
import { createRng } from '../lib/rng.ts';
import { TMP_DIR, withDatabase } from '../lib/server.ts';
import { round, summarize, type Summary } from '../lib/stats.ts';
import { makeChange, readPools, type ChangeKind } from './changes.ts';
import { timeCommitFloor } from './commit-floor.ts';

const KINDS: ChangeKind[] = ['add member', 'remove member', 'share project', 'unshare project'];
const SAMPLES_PER_KIND = 15;

export interface StockServerResult {
  server: { version: string; jit: string; jitAboveCost: string };
  /** Client round trip of one change's apply, per database; ms. */
  defaultSettings: Summary;
  jitOff: Summary;
  /** defaultSettings median / jitOff median: 1.0 means the stock server costs nothing extra. */
  ratio: number;
  /** One-row INSERT + COMMIT into an indexed table; ms. */
  floor: Summary;
  /** The change's own commit + its apply (jit-off database); ms. */
  writeAndApply: Summary;
  /** apply median / floor median, and write + apply median / floor median. */
  applyVsFloor: number;
  writeAndApplyVsFloor: number;
  /** Rows the sampled changes altered (inserted + updated + deleted), median. */
  rowsAltered: number;
}

interface ChangeSamples {
  apply: number[];
  writeAndApply: number[];
  rows: number[];
}

async function timeChanges(db: ConnectionPool, seed: string): Promise<ChangeSamples> {
  const pools = await readPools(db, 'random');
  const rng = createRng(seed);
  const samples: ChangeSamples = { apply: [], writeAndApply: [], rows: [] };
  for (const kind of KINDS) {
    for (let i = 0; i < SAMPLES_PER_KIND; i++) {
      const change = makeChange(kind, pools, rng);
      if (!change) continue;
      const written = performance.now();
      await db.query(change.apply);
      const started = performance.now();
      const batch = await applyChanges(db);
      const done = performance.now();
      samples.apply.push(done - started);
      samples.writeAndApply.push(done - written);
      samples.rows.push((batch.inserted ?? 0) + (batch.updated ?? 0) + (batch.deleted ?? 0));
      if (change.revert) {
        await db.query(change.revert);
        await applyChanges(db);
      }
    }
  }
  return samples;
}

async function graphDatabase(serverUrl: string, name: string, graphDir: string, jitOff: boolean): Promise<ConnectionPool> {
  const admin = openPool(serverUrl, { poolSize: 1, applicationName: 'permgraph-bench' });
  try {
    await admin.query(sql`drop database if exists ${sql.ident(name)} with (force)`);
    await admin.query(sql`create database ${sql.ident(name)}`);
    if (jitOff) await admin.query(sql`alter database ${sql.ident(name)} set jit = off`);
  } finally {
    await admin.dispose();
  }
  const url = withDatabase(serverUrl, name);
  const db = openPool(url, { poolSize: 2, applicationName: 'permgraph-bench' });
  await migrate(db);
  await loadGraph(db, url, graphDir);
  return db;
}

export async function measureStockServer(seed = 'stock'): Promise<StockServerResult> {
  const dataDir = path.join(TMP_DIR, 'pgdata-stock');
  await rm(dataDir, { recursive: true, force: true });
  // No settings at all: what `initdb` and a package manager's server give you.
  const server = await startEmbedded({ dataDir });
  try {
    const graph = await generateCsv('org', 'small', seed);
    const pools: ConnectionPool[] = [];
    try {
      const stock = await graphDatabase(server.url, 'permgraph_bench_stock_default', graph.dir, false);
      pools.push(stock);
      const jitOff = await graphDatabase(server.url, 'permgraph_bench_stock_jit_off', graph.dir, true);
      pools.push(jitOff);
      const [settings] = await stock.query(sql`select version() as version, current_setting('jit') as jit, current_setting('jit_above_cost') as jit_above_cost`);
      say(`stock server: ${postgresName(String(settings.version))}, jit=${settings.jit}, jit_above_cost=${settings.jit_above_cost}`);
      // Interleave the three so drift on a shared machine hits them alike.
      const defaultSamples: number[] = [];
      const jitOffSamples: ChangeSamples = { apply: [], writeAndApply: [], rows: [] };
      const floorSamples: number[] = [];
      for (let round_ = 0; round_ < 2; round_++) {
        defaultSamples.push(...(await timeChanges(stock, `${seed}-${round_}`)).apply);
        const off = await timeChanges(jitOff, `${seed}-${round_}`);
        jitOffSamples.apply.push(...off.apply);
        jitOffSamples.writeAndApply.push(...off.writeAndApply);
        jitOffSamples.rows.push(...off.rows);
        floorSamples.push(...(await timeCommitFloor(jitOff, KINDS.length * SAMPLES_PER_KIND)));
      }
      const defaultSettings = summarize(defaultSamples);
      const off = summarize(jitOffSamples.apply);
      const floor = summarize(floorSamples);
      const writeAndApply = summarize(jitOffSamples.writeAndApply);
      return {
        server: { version: String(settings.version), jit: settings.jit, jitAboveCost: settings.jit_above_cost },
        defaultSettings,
        jitOff: off,
        ratio: round(defaultSettings.median / off.median, 2),
        floor,
        writeAndApply,
        applyVsFloor: round(off.median / floor.median, 1),
        writeAndApplyVsFloor: round(writeAndApply.median / floor.median, 1),
        rowsAltered: summarize(jitOffSamples.rows).median,
      };
    } finally {
      await Promise.all(pools.map((p) => p.dispose()));
    }
  } finally {
    await server.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

export function formatStockServer(r: StockServerResult): string {
  const row = (name: string, s: Summary) => `  ${name.padEnd(22)} median ${round(s.median, 2)} ms, p95 ${round(s.p95, 2)} ms, max ${round(s.max, 2)} ms (n=${s.n})`;
  return [
    `one change on a stock server (jit=${r.server.jit}, jit_above_cost=${r.server.jitAboveCost})`,
    row('default settings', r.defaultSettings),
    row('database with jit=off', r.jitOff),
    `  default / jit=off: ${r.ratio}×`,
    row('one-row insert+commit', r.floor),
    row('write + apply', r.writeAndApply),
    `  apply / floor: ${r.applyVsFloor}×, write + apply / floor: ${r.writeAndApplyVsFloor}× (median ${r.rowsAltered} rows altered per change)`,
  ].join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  say(formatStockServer(await measureStockServer()));
}
