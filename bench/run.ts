// The benchmark runner: npm run bench [-- --size large] [--shape org,deep] [--graph DIR] [--seed N] [--postgres 15]
import { Command } from 'commander';
import { DEFAULT_CHUNK_PAIRS } from '../src/constants.ts';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ConnectionPool } from '../src/db/pool.ts';
import { generateCsv, DEFAULT_SEED } from './generate.ts';
import { createDocs } from './graph/docs.ts';
import { GraphInputError, loadGraph } from './graph/load.ts';
import { SHAPES, type Shape, type Size } from './graph/types.ts';
import { calibrate, gitInfo, machineInfo, postgresInfo, postgresName, type Calibration } from './lib/environment.ts';
import { PLANS, type RunPlan } from './lib/plan.ts';
import { say } from './lib/progress.ts';
import { summarize } from './lib/stats.ts';
import { SOLO_PHASES, type GraphInfo, type RunResult, type ShapeResult } from './lib/result.ts';
import { dropOpenDatabases, freshDatabase, RESULTS_DIR, startServer } from './lib/server.ts';
import { appliedMigrations } from '../src/migrations/migrate.ts';
import { isSupportedMajor, POSTGRES_BINARIES } from '../scripts/lib/postgres-cluster.ts';
import { measureIncremental } from './measure/incremental.ts';
import { measureReads } from './measure/reads.ts';
import { measureRefresh } from './measure/refresh.ts';
import { writeReport } from './report/report.ts';
import { formatValue } from './report/svg.ts';
import { measureWorkerOn } from './measure/worker/index.ts';

interface Options {
  size: Size;
  shapes: Shape[];
  graph?: string;
  seed: string;
  keep: boolean;
  skipReads: boolean;
  skipIncremental: boolean;
  worker: boolean;
  coldstart: boolean;
  stock: boolean;
  stream: boolean;
  expiry: boolean;
  capture: boolean;
  import: boolean;
  hol: boolean;
  scaling: boolean;
  workerChunkPairs: number | null;
  /** The major version of PostgreSQL to run on (a throwaway cluster); undefined: the embedded server. */
  postgres?: string;
}

function parseOptions(): Options {
  const program = new Command()
    .name('bench')
    .description('permgraph benchmarks against the write floor and read-time recursion (see bench/README.md)')
    .option('--size <size>', 'small or large', 'small')
    .option('--shape <shapes>', `comma-separated: ${SHAPES.join(',')}`, SHAPES.join(','))
    .option('--graph <dir>', 'measure an external nodes.csv/grants.csv pair instead of generated shapes')
    .option('--seed <seed>', 'generator seed', DEFAULT_SEED)
    .option('--keep', 'keep the benchmark databases afterwards (the shapes\', --import\'s, --hol\'s and --scaling\'s; refused with --coldstart, --stock, --capture, --stream and --expiry)', false)
    .option('--skip-reads', 'skip the read benchmarks', false)
    .option('--skip-incremental', 'skip the incremental benchmarks', false)
    .option('--no-worker', 'skip the worker end-to-end benchmarks')
    .option('--worker-chunk-pairs <n>', 'the worker benchmarks\' chunk bound (Worker chunkPairs; 0: off, batches applied whole)', String(DEFAULT_CHUNK_PAIRS))
    .option('--coldstart', 'only measure the CLI cold start against bare node (bench/measure/coldstart.ts), then exit', false)
    .option('--stock', 'only measure one change on a server with default settings (jit on) against jit off (bench/measure/single-change.ts), then exit', false)
    .option('--stream', 'only measure the change stream\'s write cost, with and without a consumer, on org (--size; bench/measure/stream.ts), then exit', false)
    .option('--expiry', 'only measure the expiry lag with the worker daemon on org (--size; bench/measure/expiry.ts), then exit', false)
    .option('--capture', 'only measure one INSERT of 100,000 grants against a plain table with the same indexes (bench/measure/capture.ts), then exit', false)
    .option('--import', 'only measure permgraph import at three sizes (--size) onto a database holding data (bench/measure/import.ts); saved and reported', false)
    .option('--hol', 'only measure head-of-line blocking: a huge grant on org (--size) with a stream of small changes, chunking off and on (bench/measure/hol.ts); saved and reported', false)
    .option('--scaling', 'only measure the same changes on org small and org large side by side, in two databases of one server (bench/measure/scaling.ts; both sizes, so no --size); saved and reported', false)
    .option('--postgres <major>', `run on a throwaway cluster of this major version of PostgreSQL (${Object.keys(POSTGRES_BINARIES).join(', ')}) with the embedded server's settings; the report compares it with the embedded one`)
    .parse();
  const o = program.opts<{ size: string; shape: string; graph?: string; seed: string; keep: boolean; skipReads: boolean; skipIncremental: boolean; worker: boolean; coldstart: boolean; stock: boolean; stream: boolean; expiry: boolean; capture: boolean; import: boolean; hol: boolean; scaling: boolean; workerChunkPairs: string; postgres?: string }>();
  // (commander's error: the message and exit code 1, no stack trace)
  const refuse: (message: string) => never = (message) => program.error(`bench: ${message}`);
  if (o.size !== 'small' && o.size !== 'large') refuse(`--size must be small or large, got ${o.size}`);
  if (o.scaling && program.getOptionValueSource('size') === 'cli') refuse('--scaling measures org small and org large side by side: drop --size');
  if (!/^\d+$/.test(o.workerChunkPairs)) refuse(`--worker-chunk-pairs must be a whole number, got ${o.workerChunkPairs}`);
  const shapes = o.shape.split(',').map((s) => s.trim()).filter(Boolean);
  for (const s of shapes) if (!SHAPES.includes(s as Shape)) refuse(`unknown shape ${s}; use ${SHAPES.join(', ')}`);
  // (an empty list ran nothing and saved an empty result as a run; a shape beside --graph was ignored)
  if (shapes.length === 0) refuse(`--shape needs at least one of ${SHAPES.join(', ')}`);
  if (o.graph !== undefined && program.getOptionValueSource('shape') === 'cli') refuse('--graph measures that CSV pair instead of the generated shapes: drop --shape');
  // (they ran and dropped or deleted everything, --keep or not)
  if (o.keep && (o.coldstart || o.stock || o.capture || o.stream || o.expiry)) {
    refuse('--keep keeps the databases of the shapes\' runs, --import, --hol and --scaling; --coldstart has none, --stock and --capture delete the servers they start, --stream and --expiry drop theirs');
  }
  if (o.postgres !== undefined) {
    if (!isSupportedMajor(o.postgres)) refuse(`--postgres must be a major version of PostgreSQL: ${Object.keys(POSTGRES_BINARIES).join(', ')} (got ${o.postgres})`);
    if (process.env.DATABASE_URL) refuse('--postgres starts a server of its own: unset DATABASE_URL, or drop --postgres');
    if (o.keep) refuse('--keep keeps the databases, and --postgres deletes its cluster afterwards: run that version yourself and point DATABASE_URL at it');
    if (o.coldstart || o.stock || o.stream || o.expiry || o.capture) {
      refuse('--postgres applies to the shapes\' runs, --import, --hol and --scaling; --coldstart, --stock, --stream, --expiry and --capture start servers of their own');
    }
  }
  return { size: o.size, shapes: shapes as Shape[], graph: o.graph, seed: o.seed, keep: o.keep, skipReads: o.skipReads, skipIncremental: o.skipIncremental, worker: o.worker, coldstart: o.coldstart, stock: o.stock, stream: o.stream, expiry: o.expiry, capture: o.capture, import: o.import, hol: o.hol, scaling: o.scaling,
    workerChunkPairs: o.workerChunkPairs === '0' ? null : Number(o.workerChunkPairs), postgres: o.postgres };
}

interface Target {
  name: string;
  dir: string;
  source: GraphInfo['source'];
  generateMs: number | null;
}

async function targets(options: Options): Promise<Target[]> {
  if (options.graph) {
    const dir = path.resolve(options.graph);
    return [{ name: path.basename(dir), dir, source: 'csv', generateMs: null }];
  }
  const out: Target[] = [];
  for (const shape of options.shapes) {
    const started = performance.now();
    say(`generating ${shape} (${options.size}, seed ${options.seed})`);
    const generated = await generateCsv(shape, options.size, options.seed);
    out.push({ name: shape, dir: generated.dir, source: 'generated', generateMs: Math.round(performance.now() - started) });
  }
  return out;
}

async function measureShape(serverUrl: string, target: Target, options: Options, plan: RunPlan): Promise<ShapeResult> {
  const started = performance.now();
  say(`\n== ${target.name} (${options.size})`);
  const bdb = await freshDatabase(serverUrl, `${target.name}_${options.size}`);
  try {
    const migrations = await appliedMigrations(bdb.db);
    const loaded = await loadGraph(bdb.db, bdb.url, target.dir);
    say(`  loaded ${loaded.nodes} nodes, ${loaded.grants} grants in ${(loaded.loadMs / 1000).toFixed(1)}s; ` +
      `refresh wrote ${loaded.permissions} permission rows in ${(loaded.refreshMs / 1000).toFixed(1)}s`);
    const docs = await createDocs(bdb.db);
    const graph: GraphInfo = {
      name: target.name, source: target.source, dir: target.source === 'csv' ? target.dir : path.relative(process.cwd(), target.dir), nodes: loaded.nodes,
      grants: loaded.grants, permissions: loaded.permissions, docs, generateMs: target.generateMs, loadMs: Math.round(loaded.loadMs),
    };
    const refresh = await measureRefresh(bdb.db, plan, loaded.refreshMs, loaded.permissions);
    const runVerify = refresh.fromEmpty.max <= plan.verifyMaxRefreshMs;
    const incremental = options.skipIncremental
      ? null
      : await measureIncremental(bdb.db, plan, options.seed, refresh.upToDate.median, runVerify);
    const reads = options.skipReads ? null : await measureReads(bdb.db, bdb.url, plan);
    const worker = options.worker && target.name === 'org' ? await measureWorkerOn(bdb.url, target.name, options.size, runVerify, options.workerChunkPairs) : null;
    return { shape: target.name, size: options.size, migrations: migrations.map((m) => `${m.name}:${m.checksum.slice(0, 12)}`), graph, refresh, incremental, reads, worker, durationMs: Math.round(performance.now() - started) };
  } finally {
    if (options.keep) await bdb.db.dispose();
    else await bdb.drop();
  }
}

/** The run's figures, on stdout (progress and everything else the runner says go to stderr). */
function out(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** A few lines per measured graph: the headline figures (REPORT.md has them all). */
function formatShape(s: ShapeResult): string {
  const f = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? 'n/a' : formatValue(v, 'ms'));
  const lines = [`${s.shape} (${s.size}): ${s.graph.nodes.toLocaleString('en-US')} nodes, ${s.graph.grants.toLocaleString('en-US')} grants, ${s.graph.permissions.toLocaleString('en-US')} permission rows`,
    `  refresh from empty ${f(s.refresh.fromEmpty.median)} (${s.refresh.ratioToFloor}× the write floor), up to date ${f(s.refresh.upToDate.median)}`];
  if (s.incremental) {
    const local = s.incremental.kinds.filter((k) => k.scope === 'random' && !k.skipped).flatMap((k) => k.raw.filter((_, i) => (k.rawWritten?.[i] ?? Infinity) <= 100));
    const median = local.length ? summarize(local).median : Number.NaN;
    const floor = s.incremental.commitFloor?.median;
    lines.push(`  random local changes (≤ 100 rows): median ${f(median)} of ${local.length}${floor ? `, ${(median / floor).toFixed(1)}× the one-row commit (${f(floor)})` : ''}`);
  }
  if (s.reads) lines.push(`  check() server side ${f(s.reads.check.server.permgraph.median)} (recursion ${f(s.reads.check.server.recursive.median)})`);
  return lines.join('\n');
}

async function saveRun(run: RunResult): Promise<string> {
  const dir = path.join(RESULTS_DIR, 'runs');
  await mkdir(dir, { recursive: true });
  const stamp = run.startedAt.replace(/[:.]/g, '-');
  const phase = SOLO_PHASES.find((p) => run[p] !== undefined) ?? 'none';
  const file = path.join(dir, `${stamp}-${run.size}-${run.shapes.map((s) => s.shape).join('_') || phase}.json`);
  await writeFile(file, `${JSON.stringify(run, null, 1)}\n`);
  return file;
}

async function withPool<T>(url: string, fn: (db: ConnectionPool) => Promise<T>): Promise<T> {
  const { openPool } = await import('../src/db/pool.ts');
  const db = openPool(url, { poolSize: 1, applicationName: 'permgraph-bench' });
  try {
    return await fn(db);
  } finally {
    await db.dispose();
  }
}

/** The phases that start their own server (or none): measured, printed, and saved as a run of their own. */
async function runSoloPhase(options: Options): Promise<Partial<RunResult> | null> {
  if (options.coldstart) {
    const { COLDSTART_GRAPH, formatColdStart, measureColdStart } = await import('./measure/coldstart.ts');
    const { sql } = await import('../src/db/pool.ts');
    // (a server and a database for the cases that connect)
    const server = await startServer();
    try {
      const bdb = await freshDatabase(server.url, 'coldstart');
      try {
        const { user, group } = COLDSTART_GRAPH;
        await bdb.db.query(sql`insert into permgraph.nodes (id, kind) values (${user}, 'user'), (${group}, 'group')`);
        await bdb.db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values (${user}, ${group}, 1)`);
        await bdb.db.query(sql`select permgraph.apply_changes()`);
        const coldstart = measureColdStart({ url: bdb.url });
        out(formatColdStart(coldstart));
        return { coldstart };
      } finally {
        await bdb.drop();
      }
    } finally {
      await server.stop();
    }
  }
  if (options.stock) {
    const { formatStockServer, measureStockServer } = await import('./measure/single-change.ts');
    const stock = await measureStockServer(options.seed);
    out(formatStockServer(stock));
    return { stock };
  }
  if (options.capture) {
    const { formatCapture, measureCapture } = await import('./measure/capture.ts');
    const capture = await measureCapture();
    out(formatCapture(capture));
    return { capture };
  }
  return null;
}

async function main(): Promise<void> {
  const options = parseOptions();
  const machine = machineInfo();
  const git = gitInfo(); // at the start: the sql/ files are read by migrate() when the run starts
  const plan = PLANS[options.size];
  const startedAt = new Date();
  let calibration: Calibration | undefined;
  const envelope = (extra: Partial<RunResult>): RunResult => {
    const finishedAt = new Date();
    return {
      version: 1, startedAt: startedAt.toISOString(), finishedAt: finishedAt.toISOString(),
      durationMs: finishedAt.getTime() - startedAt.getTime(), size: options.size, seed: options.seed,
      command: process.argv.slice(2).join(' '), git, machine: { ...machine, loadAverageAtEnd: machineInfo().loadAverage },
      postgres: null, server: 'own', plan, ...(calibration ? { calibration } : {}), shapes: [], ...extra,
    };
  };
  // The server a run starts (assigned below; the phases run alone stop their own).
  let stopping: Promise<void> | null = null;
  let stopServer: () => Promise<void> = async () => {};
  // On, not once, for the whole shutdown: a second signal (tsx relays the
  // terminal's SIGINT to this process again when it does not answer within
  // 30 ms, as when a cluster's synchronous pg_ctl stop holds the event loop)
  // found no listener and killed the process mid-stop, leaving the
  // throwaway cluster's directory behind. Installed before any phase: the
  // embedded servers of the phases run alone are stopped by their 'exit' hook.
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    say(`interrupted (${signal}): ${options.keep ? '' : 'dropping the benchmark databases, '}stopping the benchmark server`);
    void (async () => {
      if (!options.keep) await dropOpenDatabases();
      await stopServer();
    })().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const soloPhase = await runSoloPhase(options);
  if (soloPhase) {
    calibration = await calibrate(null); // (their servers are gone: the client's loop only)
    const file = await saveRun(envelope(soloPhase));
    const report = await writeReport();
    out(`\nresults: ${path.relative(process.cwd(), file)}\nreport:  ${path.relative(process.cwd(), report)}`);
    return;
  }
  if (options.stream) {
    const { formatStream, measureStream } = await import('./measure/stream.ts');
    out(formatStream(await measureStream(options.size, options.seed)));
    return;
  }
  if (options.expiry) {
    const { formatExpiry, measureExpiry } = await import('./measure/expiry.ts');
    out(formatExpiry(await measureExpiry(options.size, options.seed)));
    return;
  }
  const list = options.import || options.hol || options.scaling ? [] : await targets(options);
  const server = await startServer(options.postgres);
  stopServer = () => (stopping ??= server.stop());
  const shapes: ShapeResult[] = [];
  try {
    const postgres = await withPool(server.url, postgresInfo);
    calibration = await withPool(server.url, calibrate);
    say(`${postgresName(postgres.version)} (${server.origin}), jit=${postgres.settings.jit}`);
    for (const target of list) shapes.push(await measureShape(server.url, target, options, plan));
    let imported: RunResult['import'];
    if (options.import) {
      const { IMPORT_SIZES, measureImport } = await import('./measure/import.ts');
      say(`\n== import (${options.size}): ${IMPORT_SIZES[options.size].map((n) => n.toLocaleString('en-US')).join(', ')} nodes, each with as many grants`);
      imported = await measureImport(server.url, IMPORT_SIZES[options.size], { keep: options.keep });
    }
    let hol: RunResult['hol'];
    if (options.hol) {
      const { measureHol, formatHol } = await import('./measure/hol.ts');
      say(`\n== head-of-line blocking (org ${options.size})`);
      hol = await measureHol(server.url, options.size, options.seed, { keep: options.keep });
      out(formatHol(hol));
    }
    let scaling: RunResult['scaling'];
    if (options.scaling) {
      const { measureScaling, formatScaling } = await import('./measure/scaling.ts');
      say('\n== small against large, side by side (org)');
      scaling = await measureScaling(server.url, options.seed, { keep: options.keep });
      out(formatScaling(scaling));
    }
    const run = envelope({ postgres, server: server.origin, shapes, ...(imported ? { import: imported } : {}), ...(hol ? { hol } : {}), ...(scaling ? { scaling } : {}) });
    const file = await saveRun(run);
    const report = await writeReport();
    for (const shape of shapes) out(formatShape(shape));
    out(`\nresults: ${path.relative(process.cwd(), file)}\nreport:  ${path.relative(process.cwd(), report)} (${(run.durationMs / 1000).toFixed(0)}s in all)`);
  } finally {
    await stopServer();
  }
}

/** Set once a signal interrupts the run: its handler exits (130) once the databases are dropped and the server stopped. */
let interrupted = false;

main().catch((error: unknown) => {
  // (the queries the interruption cut short fail meanwhile: not the error to show)
  if (interrupted) return;
  // A problem with the input (a CSV pair) is told without a stack trace.
  const text = error instanceof GraphInputError ? error.message : error instanceof Error ? (error.stack ?? error.message) : String(error);
  process.stderr.write(`bench: ${text}\n`);
  process.exit(1);
});
