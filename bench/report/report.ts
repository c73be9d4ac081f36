// Builds bench/results/REPORT.md and bench/results/charts/*.svg from the
// newest result of every (size, shape) in bench/results/runs/.
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { RunResult, ShapeResult } from '../lib/result.ts';
import { RESULTS_DIR } from '../lib/server.ts';
import { summarize } from '../lib/stats.ts';
import type { KindResult } from '../measure/incremental.ts';
import type { WorkerResult } from '../measure/worker/index.ts';
import { holSection } from './hol-section.ts';
import { cpuPerChange, limitsSection, us, type LocalTail } from './limits-section.ts';
import { newestPhase, runSource, type Runs } from './provenance.ts';
import { APPLY_VS_COMMIT_GOAL, CAPTURE_GOAL, soloSection, STOCK_SERVER_GOAL, WRITE_AND_APPLY_VS_COMMIT_GOAL } from './solo-section.ts';
import { formatValue, renderBarChart } from './svg.ts';
import { embeddedFirst, majorOf, versionsSection, type VersionFigures } from './versions-section.ts';
import { postgresName } from '../lib/environment.ts';
import { EMBEDDED_MAJOR } from '../../scripts/lib/postgres-cluster.ts';
import { DEFAULT_CHUNK_PAIRS } from '../../src/constants.ts';

/** The phases of a (size, shape) measured by a full run, each of which may come from a different run. */
const SHAPE_PHASES = ['refresh', 'incremental', 'reads', 'worker'] as const;
type ShapePhase = (typeof SHAPE_PHASES)[number];

interface Entry {
  /** The newest run of this (size, shape): its graph and refresh. */
  run: RunResult;
  file: string;
  shape: ShapeResult;
  /** The run file each phase's figures come from. */
  from: Record<ShapePhase, string>;
}

const ms = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? 'n/a' : formatValue(v, 'ms'));
/** A time judged against a goal: to the millisecond where rounding would make it read as the goal itself. */
const againstGoal = (v: number, goalMs: number) => (v !== goalMs && ms(v) === ms(goalMs) ? `${Math.round(v).toLocaleString('en-US')} ms` : ms(v));
const num = (v: number) => v.toLocaleString('en-US');
/**
 * A percentile, where the samples can tell it from their maximum: nearest
 * rank, p95 needs 20 samples and p99 100 (below, both are the maximum, a
 * single sample, often a session's first); '–' otherwise, the max column
 * beside it says the rest.
 */
const p95 = (s: { n: number; p95: number } | null | undefined) => (s && s.n >= 20 ? ms(s.p95) : '–');
const p99 = (s: { n: number; p99: number } | null | undefined) => (s && s.n >= 100 ? ms(s.p99) : '–');
const times = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? 'n/a' : `${v >= 100 ? Math.round(v) : v}×`);

async function loadRuns(): Promise<{ run: RunResult; file: string }[]> {
  const dir = path.join(RESULTS_DIR, 'runs');
  const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.json')).sort();
  const runs = [];
  for (const file of files) runs.push({ run: JSON.parse(await readFile(path.join(dir, file), 'utf8')) as RunResult, file });
  return runs;
}

/**
 * The newest measurement of every (size, shape), in a stable order, each
 * phase from the newest run that measured it: a run that skipped a phase
 * (`--skip-reads`, `--no-worker`, ...) does not hide the last figures of
 * that phase. Runs made from a tree with uncommitted changes stay in runs/
 * but never feed the report: its figures must belong to a commit someone
 * can check out. A worker phase run with another chunk bound than the
 * worker's default (--worker-chunk-pairs) is a variant, measured beside
 * the default for comparison: it does not stand for the worker either.
 */
function latest(runs: { run: RunResult; file: string }[]): Entry[] {
  const byKey = new Map<string, Entry>();
  for (const { run, file } of runs) {
    if (run.git.dirty !== false) continue;
    for (const measured of run.shapes) {
      // (an external pair, --graph DIR, is named after its directory: one named org is not the generated org)
      const key = `${external(measured) ? 'csv:' : ''}${measured.size}/${measured.shape}`;
      const before = byKey.get(key);
      const shape = { ...measured };
      // (runs before the bound was recorded ran the default)
      if (shape.worker && shape.worker.chunkPairs !== undefined && shape.worker.chunkPairs !== DEFAULT_CHUNK_PAIRS) shape.worker = null;
      const from = Object.fromEntries(SHAPE_PHASES.map((p) => [p, file])) as Record<ShapePhase, string>;
      for (const phase of ['incremental', 'reads', 'worker'] as const) {
        if (shape[phase] !== null || !before || before.shape[phase] === null) continue;
        Object.assign(shape, { [phase]: before.shape[phase] });
        from[phase] = before.from[phase];
      }
      byKey.set(key, { run, file, shape, from });
    }
  }
  const order = ['org', 'tree', 'deep', 'wide', 'cyclic'];
  const rank = (e: Entry) => (order.indexOf(e.shape.shape) + 1 || 99) + (e.shape.size === 'large' ? 100 : 0);
  return [...byKey.values()].sort((a, b) => rank(a) - rank(b));
}

/** A graph measured from a CSV pair given with --graph, not a generated shape. */
const external = (shape: ShapeResult): boolean => shape.graph.source === 'csv';

function kinds(e: Entry, scope: 'random' | 'probe'): KindResult[] {
  return (e.shape.incremental?.kinds ?? []).filter((k) => k.scope === scope && !k.skipped);
}

function pooled(e: Entry, scope: 'random' | 'probe') {
  return summarize(kinds(e, scope).flatMap((k) => k.raw));
}

function worstAmplification(e: Entry, scope: 'random' | 'probe'): number | null {
  const values = kinds(e, scope).map((k) => k.audit?.amplification).filter((v): v is number => typeof v === 'number');
  return values.length ? Math.max(...values) : null;
}

/** check() on the server, ms (the goal of the issue that introduced it). */
const CHECK_GOAL_MS = 0.1;

/** Issue 12, goal 1: a change that alters at most this many rows is local ... */
const LOCAL_CHANGE_ROWS = 100;
/** ... and the p99 of local changes on org large stays at or under this. */
const LOCAL_P99_GOAL_MS = 20;

/**
 * The random local changes of a shape (at most LOCAL_CHANGE_ROWS rows
 * altered): their apply latencies, and where the run timed the one-row
 * commit floor between them, the medians of apply and of write + apply ÷
 * that floor. Null for runs that did not record rows per sample.
 */
function localChanges(e: Entry): {
  n: number; apply: number; p99: number;
  /** p99 of the same samples' server side (null: the run did not record it), telling a slow statement from a stall outside it. */
  serverP99: number | null;
  vsCommit: { floor: number; applyRatio: number; writeAndApplyRatio: number } | null;
} | null {
  const list = kinds(e, 'random');
  if (!list.length || !list.every((k) => k.rawWritten)) return null;
  const apply: number[] = [];
  const writeAndApply: number[] = [];
  const server: number[] = [];
  for (const k of list) {
    k.raw.forEach((v, i) => {
      if (k.rawWritten![i]! > LOCAL_CHANGE_ROWS) return;
      apply.push(v);
      if (k.rawWriteAndApply) writeAndApply.push(k.rawWriteAndApply[i]!);
      if (k.rawServer) server.push(k.rawServer[i]!);
    });
  }
  if (!apply.length) return null;
  const a = summarize(apply);
  const floor = e.shape.incremental?.commitFloor;
  const ratio = (v: number) => Math.round((v / floor!.median) * 10) / 10;
  const vsCommit = floor && writeAndApply.length === apply.length
    ? { floor: floor.median, applyRatio: ratio(a.median), writeAndApplyRatio: ratio(summarize(writeAndApply).median) }
    : null;
  const serverP99 = server.length === apply.length ? summarize(server).p99 : null;
  return { n: a.n, apply: a.median, p99: a.p99, serverP99, vsCommit };
}

/** Org large's local changes' p99 against the goal, with the server side of the same samples (the limits section). */
function largeOrgLocalTail(largeOrg: Entry | undefined): LocalTail | null {
  const local = largeOrg ? localChanges(largeOrg) : null;
  return local ? { p99: local.p99, serverP99: local.serverP99, goal: LOCAL_P99_GOAL_MS } : null;
}

function firstPageWorst(e: Entry): number | null {
  const values = (e.shape.reads?.listings ?? []).map((l) => l.firstPage.permgraph.median);
  return values.length ? Math.max(...values) : null;
}

/** The slowest whole listing among the heaviest users, with its size and its floor where measured (issue 12, goal 6). */
function wholeListWorst(e: Entry): { ms: number; rows: number; floor: number | null } | null {
  const values = (e.shape.reads?.listings ?? []).map((l) => ({ ms: l.whole.permgraph.median, rows: l.visibleDocs, floor: l.wholeFloor?.median ?? null }));
  return values.length ? values.reduce((a, b) => (b.ms > a.ms ? b : a)) : null;
}

/** list_targets (the user's nodes) for the heaviest users: the slowest first page and whole list. */
function targetsWorst(e: Entry): { firstPage: number; whole: number; rows: number } | null {
  const values = (e.shape.reads?.listings ?? []).flatMap((l) => (l.targets ? [l.targets] : []));
  if (!values.length) return null;
  const slowest = values.reduce((a, b) => (b.whole.median > a.whole.median ? b : a));
  return { firstPage: Math.max(...values.map((t) => t.firstPage.median)), whole: slowest.whole.median, rows: slowest.rows };
}

/** Smallest speed-up (recursion ÷ permgraph) per read query kind. */
function speedups(e: Entry): Record<'check' | 'first page' | 'whole list' | 'who can see', number | null> {
  const r = e.shape.reads;
  const min = (values: number[]) => (values.filter(Number.isFinite).length ? Math.min(...values.filter(Number.isFinite)) : null);
  return {
    check: r ? r.check.server.speedup : null,
    'first page': min((r?.listings ?? []).map((l) => l.firstPage.speedup)),
    'whole list': min((r?.listings ?? []).map((l) => l.whole.speedup)),
    'who can see': min((r?.viewers ?? []).map((v) => v.latency.speedup)),
  };
}

function header(runs: { run: RunResult; file: string }[], entries: Entry[]): string[] {
  const used = [...new Set(entries.flatMap((e) => Object.values(e.from)))].sort();
  const lines = ['# permgraph benchmark report', '', `Generated ${new Date().toISOString()} from the newest result of each phase of each size and shape in \`bench/results/runs/\` (${runs.length} run files).`, '', '| run file | commit | size | PostgreSQL | machine | speed: client loop / server statement | load average (start → end) | duration |', '|---|---|---|---|---|---|---|---|'];
  for (const file of used) {
    const run = runs.find((r) => r.file === file)?.run as RunResult;
    const commit = run.git.commit ? `${run.git.commit.slice(0, 10)}${run.git.dirty ? ' (uncommitted changes)' : ''}` : 'unknown';
    lines.push(`| ${file} | ${commit} | ${run.size} | ${run.postgres ? postgresName(run.postgres.version) : 'its own server'} (${run.server}) | ${run.machine.cpus} cores, ${run.machine.memoryGiB} GiB, ${run.machine.cpuModel}, ${run.machine.platform} | ${speed(run)} | ${run.machine.loadAverage?.[0] ?? '?'} → ${run.machine.loadAverageAtEnd?.[0] ?? '?'} | ${(run.durationMs / 1000).toFixed(0)} s |`);
  }
  lines.push(...settingsLines(used.map((file) => ({ file, run: runs.find((r) => r.file === file)?.run as RunResult }))));
  return lines;
}

/** The run's calibration (bench/lib/environment.ts): the same strings above have been hosts 3× apart. */
const speed = (run: RunResult): string => {
  const c = run.calibration;
  return c ? `${c.clientLoopMs} ms / ${c.serverStatementUs === null ? 'n/a' : `${c.serverStatementUs} µs`}` : 'not recorded';
};

/** The server settings of the runs used: one line when they agree, else one per run file. */
function settingsLines(used: { file: string; run: RunResult }[]): string[] {
  const listed = (run: RunResult) => Object.entries(run.postgres?.settings ?? {}).map(([k, v]) => `\`${k}=${v}\``).join(', ');
  const withSettings = used.filter((u) => u.run.postgres);
  const distinct = new Set(withSettings.map((u) => listed(u.run)));
  if (distinct.size === 0) return [];
  if (distinct.size === 1) return ['', `Server settings: ${[...distinct][0]}.`];
  return withSettings.flatMap((u) => ['', `Server settings of ${u.file}: ${listed(u.run)}.`]);
}

function summaryTable(entries: Entry[]): string[] {
  const lines = [
    '## Summary', '',
    'Latencies are medians unless marked. "incr." pools every random change of every kind (client time of `applyChanges()`: one statement, `apply_local_changes()`, for a batch the local path takes, else BEGIN, `apply_changes()`, COMMIT), local or not; a p95 is shown from 20 samples and a p99 from 100 ("–" below: nearest rank would give the maximum, one sample); "local ÷ commit" is the median of the random changes altering at most 100 rows ÷ a one-row INSERT + COMMIT into an indexed table timed between them (issue 12, goal 1: ≤ 4×). Speed-ups (×) are read-time recursion ÷ permgraph: check() server side, and the smallest over the measured users / targets for the others.', '',
    '| shape | size | permission rows | full refresh | rows/s | write floor | refresh ÷ floor | no-op ÷ floor | incr. median | incr. p99 | local ÷ commit | worst write ampl. | check() server | first page | check × | first page × | whole list × | who can see × |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const e of entries) {
    const r = e.shape.refresh;
    const p = pooled(e, 'random');
    const x = speedups(e);
    lines.push(`| ${e.shape.shape} | ${e.shape.size} | ${num(e.shape.graph.permissions)} | ${ms(r.fromEmpty.median)} | ${num(r.rowsPerSecond)} | ${ms(r.writeFloor.median)} | ${r.ratioToFloor} | ${upToDateRatio(r)} | ${ms(p.median)} | ${p99(p)} | ${times(localChanges(e)?.vsCommit?.applyRatio)} | ${worstAmplification(e, 'random') ?? 'n/a'} | ${ms(e.shape.reads?.check.server.permgraph.median)} | ${ms(firstPageWorst(e))} | ${times(x.check)} | ${times(x['first page'])} | ${times(x['whole list'])} | ${times(x['who can see'])} |`);
  }
  return lines;
}

/** Goal 7 (issue 12): a full refresh from empty, and one that changes nothing, against the write floor. */
const REFRESH_GOAL = 1.5;
const NOOP_REFRESH_GOAL = 0.5;
/** Refresh of an up-to-date table ÷ write floor (medians). */
const upToDateRatio = (r: Entry['shape']['refresh']): number => Math.round((r.upToDate.median / r.writeFloor.median) * 100) / 100;

type Status = 'met' | 'MISSED' | 'not measured';
const status = (ok: boolean | null): Status => (ok === null ? 'not measured' : ok ? 'met' : 'MISSED');

/** Issue 12, goal 4: the worker keeps up with this many changes/s on org large. */
const SUSTAINED_GOAL = 5000;

function goals(entries: Entry[], runs: { run: RunResult; file: string }[]): string[] {
  const rows: [string, string, string, Status][] = [];
  for (const e of entries) {
    const r = e.shape.refresh;
    rows.push([`full refresh from empty ≤ ${REFRESH_GOAL}× the write floor`, `${e.shape.shape} ${e.shape.size}`, `${r.ratioToFloor}×`, status(r.ratioToFloor <= REFRESH_GOAL)]);
    const noop = upToDateRatio(r);
    rows.push([`refresh that changes nothing ≤ ${NOOP_REFRESH_GOAL}× the write floor`, `${e.shape.shape} ${e.shape.size}`, `${noop}×`, status(noop <= NOOP_REFRESH_GOAL)]);
  }
  for (const e of entries) {
    const local = localChanges(e);
    const r = local?.vsCommit;
    const where = `${e.shape.shape} ${e.shape.size}, random changes ≤ ${LOCAL_CHANGE_ROWS} rows${local && r ? ` (${local.n}; floor ${ms(r.floor)})` : ''}`;
    rows.push([`local change applies in ≤ ${APPLY_VS_COMMIT_GOAL}× a one-row insert + commit (goal 1)`, where, local && r ? `${r.applyRatio}× (${ms(local.apply)})` : 'n/a', status(r ? r.applyRatio <= APPLY_VS_COMMIT_GOAL : null)]);
    rows.push([`write + apply ≤ ${WRITE_AND_APPLY_VS_COMMIT_GOAL}× it (goal 1)`, where, r ? `${r.writeAndApplyRatio}×` : 'n/a', status(r ? r.writeAndApplyRatio <= WRITE_AND_APPLY_VS_COMMIT_GOAL : null)]);
  }
  const stock = newestPhase(runs, 'stock')?.result;
  // (--stock times every sampled change, local or not: not the ≤ 100-row selection of the rows above)
  const stockWhere = `org small, --stock: every sampled change${stock ? ` (median ${stock.rowsAltered} rows altered)` : ''}`;
  rows.push([`local change applies in ≤ ${APPLY_VS_COMMIT_GOAL}× a one-row insert + commit (goal 1)`, stockWhere, stock ? `${stock.applyVsFloor}×` : 'n/a', status(stock ? stock.applyVsFloor <= APPLY_VS_COMMIT_GOAL : null)]);
  rows.push([`write + apply ≤ ${WRITE_AND_APPLY_VS_COMMIT_GOAL}× it (goal 1)`, stockWhere, stock ? `${stock.writeAndApplyVsFloor}×` : 'n/a', status(stock ? stock.writeAndApplyVsFloor <= WRITE_AND_APPLY_VS_COMMIT_GOAL : null)]);
  rows.push([`one change on a default server (jit on) ≤ ${STOCK_SERVER_GOAL}× with jit off (issue 11)`, 'org small, --stock', stock ? `${stock.ratio}×` : 'n/a', status(stock ? stock.ratio <= STOCK_SERVER_GOAL : null)]);
  const largeOrg = entries.find((e) => e.shape.shape === 'org' && e.shape.size === 'large');
  const local = largeOrg ? localChanges(largeOrg) : null;
  rows.push([`p99 of local changes ≤ ${LOCAL_P99_GOAL_MS} ms (goal 1)`, largeOrg ? `org large, random changes ≤ ${LOCAL_CHANGE_ROWS} rows${local ? ` (${local.n})` : ''}` : 'org large not run', local ? (local.n >= 100 ? `${p99(local)}${local.serverP99 === null ? '' : ` (server side ${ms(local.serverP99)})`}` : `n/a (${local.n} changes; a p99 needs 100)`) : 'n/a', status(local && local.n >= 100 ? local.p99 <= LOCAL_P99_GOAL_MS : null)]);
  if (largeOrg) {
    const amp = worstAmplification(largeOrg, 'random');
    rows.push(['write amplification < 1.05', 'org large, random changes', `${amp ?? 'n/a'} (worst kind)`, status(amp === null ? null : amp < 1.05)]);
  }
  const capture = newestPhase(runs, 'capture')?.result;
  rows.push([`bulk insert of 100,000 grants ≤ ${CAPTURE_GOAL}× with no triggers (goal 3)`, '--capture', capture ? `${capture.ratio}×` : 'n/a', status(capture ? capture.ratio <= CAPTURE_GOAL : null)]);
  const worker = largeOrg ? workerOf(largeOrg) : null;
  const workerWhere = worker ? 'org large, churn' : 'org large not run';
  const at500 = worker?.rates.find((r) => r.offeredPerSecond === 500);
  // "kept up" is the p99 over a phase's last third (lag that grows shows there); the whole phase's p99 beside it,
  // since it may be far above 1 s (org large at 2,000/s: 733 ms over the last third, 5.8 s over the phase)
  const kept = worker?.rates.filter((r) => r.keptUp && r.offeredPerSecond === worker.sustained.keptUpPerSecond)[0];
  const keptLag = kept ? ` (lag p99 ${ms(kept.lastThirdP99)} over its last third, ${ms(kept.lag.p99)} over the whole phase)` : '';
  rows.push([`worker sustains ≥ ${num(SUSTAINED_GOAL)} changes/s, lag p99 ≤ 1 s over each phase's last third (goal 4)`, workerWhere, worker ? `kept up to ${worker.sustained.keptUpPerSecond ?? 'none'}/s offered${keptLag}; applied at most ${worker.sustained.appliedPerSecond}/s` : 'n/a',
    worker ? status((worker.sustained.keptUpPerSecond ?? 0) >= SUSTAINED_GOAL) : 'not measured']);
  rows.push(['lag p99 < 1 s at 500 changes/s', workerWhere, at500 ? p99(at500.lag) : 'n/a', at500 ? status(at500.drained && at500.lag.p99 < 1000) : 'not measured']);
  // (goal 5 for a backlog: writes made while a worker catches up after an outage; FINDINGS 50, 51)
  const fresh = worker?.backlog.fresh;
  rows.push(['writes during a backlog\'s drain: lag p99 ≤ 1 s (goal 5)', worker ? `org large, ${num(worker.backlog.changes)}-change backlog${worker.chunkPairs === null ? ', chunking off' : ''}` : workerWhere,
    fresh ? `${fresh.lag.n >= 100 ? againstGoal(fresh.lag.p99, 1000) : p99(fresh.lag)} (median ${ms(fresh.lag.median)}, ${fresh.changes} writes)` : 'n/a', fresh ? status(fresh.lag.p99 <= 1000) : 'not measured']);
  for (const e of entries) {
    const check = e.shape.reads?.check.server.permgraph.median;
    rows.push([`check() < ${ms(CHECK_GOAL_MS)} server-side`, `${e.shape.shape} ${e.shape.size}`, ms(check), status(check === undefined ? null : check < CHECK_GOAL_MS)]);
  }
  for (const e of entries) {
    const page = firstPageWorst(e);
    rows.push(['first page of a listing < 2 ms (list_rows)', `${e.shape.shape} ${e.shape.size} (heaviest users)`, ms(page), status(page === null ? null : page < 2)]);
  }
  for (const e of entries) {
    const t = targetsWorst(e);
    rows.push(['first page of a listing < 2 ms (list_targets)', `${e.shape.shape} ${e.shape.size} (heaviest users)`, t ? ms(t.firstPage) : 'n/a', status(t ? t.firstPage < 2 : null)]);
  }
  for (const e of entries) {
    // issue 12: a full listing of 14,785 objects in <= 20 ms; bigger lists are held to the same rate
    const whole = wholeListWorst(e);
    const budget = whole === null ? null : 20 * Math.max(1, whole.rows / 14785);
    // (the floor: as many rows of the app table read in id order with no permission filter, through the same client)
    rows.push(['whole listing ≤ 20 ms per 14,785 rows (list_rows)', `${e.shape.shape} ${e.shape.size} (heaviest users${whole ? `, ${whole.rows.toLocaleString('en-US')} rows` : ''})`,
      whole ? `${ms(whole.ms)}${whole.floor !== null ? ` (unfiltered read of as many rows: ${ms(whole.floor)})` : ''}` : 'n/a', status(whole === null || budget === null ? null : whole.ms <= budget)]);
    const t = targetsWorst(e);
    const targetsBudget = t ? 20 * Math.max(1, t.rows / 14785) : null;
    rows.push(['whole listing ≤ 20 ms per 14,785 rows (list_targets)', `${e.shape.shape} ${e.shape.size} (heaviest users${t ? `, ${t.rows.toLocaleString('en-US')} nodes` : ''})`,
      t ? ms(t.whole) : 'n/a', status(t && targetsBudget !== null ? t.whole <= targetsBudget : null)]);
  }
  for (const e of entries.filter((x) => x.shape.shape === 'deep' || x.shape.shape === 'org')) {
    for (const [query, s] of Object.entries(speedups(e))) {
      rows.push(['≥ 100× faster than read-time recursion', `${e.shape.shape} ${e.shape.size}: ${query}`, times(s), status(s === null ? null : s >= 100)]);
    }
  }
  return ['## Goals', '', '| goal | where | measured | status |', '|---|---|---:|---|', ...rows.map((r) => `| ${r.join(' | ')} |`)];
}

/**
 * Whether a change costs what its region costs whatever the graph's size:
 * the same probe-cluster changes on org small and org large. Side by side
 * (`--scaling`: one server, ABBA) when measured; else from the newest
 * small and large runs, which ran hours apart on a host whose speed moves
 * (their calibrations say by how much), so their latencies compare loosely.
 */
function scaling(entries: Entry[], runs: Runs): string[] {
  const lines = ['## Cost follows the affected subgraph', ''];
  const side = newestPhase(runs, 'scaling');
  if (side) {
    const r = side.result;
    lines.push(
      `${runSource(side.run, side.file)} The same changes inside the fixed-size probe cluster (ids \`x…\`, identical at every size) on org small (${num(r.graphs.small.permissions)} rows) and org large (${num(r.graphs.large.permissions)} rows), in two databases of one server, applied to each in turn (ABBA), ${r.samplesPerKind} of each kind on each. Equal regions and writes at equal cost mean the cost does not grow with the graph, and a small graph pays no more than a large one (issue 12). Server side: the applying function's own time.`,
      '',
      '| org: change | small median | large median | small ÷ large | server side, small | large | small ÷ large | region small / large | written small / large |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    );
    for (const k of r.kinds) {
      lines.push(`| ${k.kind} | ${ms(k.small.latency.median)} | ${ms(k.large.latency.median)} | ${k.latencyRatio}× | ${ms(k.small.serverMs.median)} | ${ms(k.large.serverMs.median)} | ${k.serverRatio}× | ${k.small.regionPairs.median} / ${k.large.regionPairs.median} | ${k.small.written.median} / ${k.large.written.median} |`);
    }
    lines.push(`| all kinds pooled | | | **${r.pooled.latencyRatio}×** | | | **${r.pooled.serverRatio}×** | | |`);
    return lines;
  }
  const small = entries.find((e) => e.shape.shape === 'org' && e.shape.size === 'small');
  const large = entries.find((e) => e.shape.shape === 'org' && e.shape.size === 'large');
  if (!small || !large) return [...lines, 'Not available yet: `npm run bench -- --scaling` measures org small and org large side by side.'];
  lines.push(
    'The same changes inside the fixed-size probe cluster (ids `x…`, identical at every size) on the small and the large graph, from the newest run of each: runs at different times, whose host speeds differ as their calibrations in the table at the top say. `npm run bench -- --scaling` measures them side by side.', '',
    '| org: change | small median | large median | small region | large region | small written | large written |', '|---|---:|---:|---:|---:|---:|---:|',
  );
  for (const k of kinds(small, 'probe')) {
    const l = kinds(large, 'probe').find((x) => x.kind === k.kind);
    lines.push(`| ${k.kind} | ${ms(k.latency.median)} | ${ms(l?.latency.median)} | ${k.regionPairs.median} | ${l?.regionPairs.median ?? 'n/a'} | ${k.written.median} | ${l?.written.median ?? 'n/a'} |`);
  }
  return lines;
}

/** Which run each phase of a shape comes from, when they are not all one. */
function sourcesOf(e: Entry): string[] {
  const measured = SHAPE_PHASES.filter((p) => e.shape[p] !== null);
  if (new Set(measured.map((p) => e.from[p])).size <= 1) return [];
  return [`Phases from different runs: ${measured.map((p) => `${p} ${e.from[p]}`).join('; ')}.`, ''];
}

function refreshSection(e: Entry): string[] {
  const r = e.shape.refresh;
  const g = e.shape.graph;
  return [
    `${num(g.nodes)} nodes, ${num(g.grants)} grants, ${num(g.permissions)} permission rows, ${num(g.docs)} documents; CSV loaded with COPY in ${ms(g.loadMs)}.`, '',
    '| full refresh | n | min | median | p95 | max | rows/s |', '|---|---:|---:|---:|---:|---:|---:|',
    `| refresh() into an empty table | ${r.fromEmpty.n} | ${ms(r.fromEmpty.min)} | ${ms(r.fromEmpty.median)} | ${p95(r.fromEmpty)} | ${ms(r.fromEmpty.max)} | ${num(r.rowsPerSecond)} |`,
    `| write floor (INSERT … SELECT, same indexes) | ${r.writeFloor.n} | ${ms(r.writeFloor.min)} | ${ms(r.writeFloor.median)} | ${p95(r.writeFloor)} | ${ms(r.writeFloor.max)} | ${num(r.floorRowsPerSecond)} |`,
    `| refresh() on an up-to-date table (wrote ${r.writtenWhenUpToDate} rows) | ${r.upToDate.n} | ${ms(r.upToDate.min)} | ${ms(r.upToDate.median)} | ${p95(r.upToDate)} | ${ms(r.upToDate.max)} | |`,
    '', `Refresh ÷ write floor: **${r.ratioToFloor}×** from empty, **${upToDateRatio(r)}×** on an up-to-date table.`,
  ];
}

function incrementalSection(e: Entry, chart: string): string[] {
  const inc = e.shape.incremental;
  if (!inc) return ['Incremental: not run.'];
  const lines = [
    '| scope | change | n | median | p95 | p99 | max | server median | modes | written (median) | region pairs (median) | audited: written / changed | write ampl. | × faster than full refresh |',
    '|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|',
  ];
  for (const k of inc.kinds) {
    if (k.skipped) {
      lines.push(`| ${k.scope} | ${k.kind} | 0 | ${k.skipped} | | | | | | | | | | |`);
      continue;
    }
    const modes = Object.entries(k.modes).map(([m, n]) => `${m} ${n}`).join(', ');
    const audit = k.audit ? `${k.audit.written} / ${k.audit.changed} (${k.audit.samples})` : 'n/a';
    lines.push(`| ${k.scope} | ${k.kind} | ${k.samples} | ${ms(k.latency.median)} | ${p95(k.latency)} | ${p99(k.latency)} | ${ms(k.latency.max)} | ${ms(k.serverMs.median)} | ${modes} | ${k.written.median} | ${k.regionPairs.median} | ${audit} | ${k.audit?.amplification ?? 'n/a'} | ${times(k.speedupVsFullRefresh)} |`);
  }
  const v = inc.verify;
  lines.push('', 'skipped' in v ? `Verification: skipped (${v.skipped}).` : `Verification after all changes (\`permgraph.verify()\`): **${v.differences} difference(s)**.`);
  lines.push('', `![incremental latency](${chart})`);
  return lines;
}

function readsSection(e: Entry, chart: string): string[] {
  const r = e.shape.reads;
  if (!r) return ['Reads: not run.'];
  const c = r.check;
  const lines = [
    `check(): ${c.pairs} pairs (${c.allowed} allowed); permgraph and recursion disagree on **${c.disagreements}**${c.compared !== undefined && c.compared < c.pairs ? ` of the ${c.compared} the recursion answered within its time budget (the speed-ups are taken over those)` : ''}.`, '',
    '| query | permgraph median | p95 | p99 | recursion median | p95 | speed-up | answers agree |', '|---|---:|---:|---:|---:|---:|---:|---|',
    `| check(), server side | ${ms(c.server.permgraph.median)} | ${p95(c.server.permgraph)} | ${p99(c.server.permgraph)} | ${ms(c.server.recursive.median)} | ${p95(c.server.recursive)} | ${times(c.server.speedup)} | ${c.disagreements === 0 ? 'yes' : 'NO'} |`,
    `| check(), client round trip | ${ms(c.client.permgraph.median)} | ${p95(c.client.permgraph)} | ${p99(c.client.permgraph)} | ${ms(c.client.recursive.median)} | ${p95(c.client.recursive)} | ${times(c.client.speedup)} | |`,
  ];
  for (const l of r.listings) {
    lines.push(`| first page (100) for ${l.user} | ${ms(l.firstPage.permgraph.median)} | ${p95(l.firstPage.permgraph)} | ${p99(l.firstPage.permgraph)} | ${ms(l.firstPage.recursive.median)} | ${p95(l.firstPage.recursive)} | ${times(l.firstPage.speedup)} | ${l.agree ? 'yes' : 'NO'} |`);
    lines.push(`| whole list (${num(l.visibleDocs)} docs) for ${l.user} | ${ms(l.whole.permgraph.median)} | ${p95(l.whole.permgraph)} | ${p99(l.whole.permgraph)} | ${ms(l.whole.recursive.median)} | ${p95(l.whole.recursive)} | ${times(l.whole.speedup)} | ${l.agree ? 'yes' : 'NO'} |`);
    for (const [label, timed] of [['first page (100), server side', l.firstPageServer], ['whole list, server side', l.wholeServer]] as const) {
      if (timed) lines.push(`| ${label} for ${l.user} | ${ms(timed.permgraph.median)} | ${p95(timed.permgraph)} | ${p99(timed.permgraph)} | ${ms(timed.recursive.median)} | ${p95(timed.recursive)} | ${times(timed.speedup)} | |`);
    }
    if (l.wholeFloor) lines.push(`| floor: ${num(l.visibleDocs)} docs read in id order, no permission filter (client; server ${ms(l.wholeFloorServer?.median)}) | ${ms(l.wholeFloor.median)} | ${p95(l.wholeFloor)} | ${p99(l.wholeFloor)} | | | | |`);
    if (l.targets) {
      const t = l.targets;
      lines.push(`| list_targets first page (100) for ${l.user} (server ${ms(t.firstPageServer.median)}) | ${ms(t.firstPage.median)} | ${p95(t.firstPage)} | ${p99(t.firstPage)} | | | | |`);
      lines.push(`| list_targets whole list (${num(t.rows)} nodes) for ${l.user} (server ${ms(t.wholeServer.median)}) | ${ms(t.whole.median)} | ${p95(t.whole)} | ${p99(t.whole)} | | | | |`);
    }
  }
  for (const v of r.viewers) {
    lines.push(`| who can see ${v.target} (${num(v.viewers)} users) | ${ms(v.latency.permgraph.median)} | ${p95(v.latency.permgraph)} | ${p99(v.latency.permgraph)} | ${ms(v.latency.recursive.median)} | ${p95(v.latency.recursive)} | ${times(v.latency.speedup)} | ${v.agree ? 'yes' : 'NO'} |`);
  }
  lines.push('', '| connections | check() per second (permgraph) | per second (recursion) |', '|---:|---:|---:|');
  for (const t of c.throughput) lines.push(`| ${t.connections} | ${num(t.permgraphPerSecond)} | ${t.recursivePerSecond === null ? '' : num(t.recursivePerSecond)} |`);
  lines.push('', `![read latency](${chart})`);
  return lines;
}

/** Worker results of this shape, when measured with the current format. */
/** The worker's phases, by offered rate (bisection phases fall between the fixed rates). */
function workerOf(e: Entry): WorkerResult | null {
  const w = e.shape.worker;
  if (!w || !('plan' in w)) return null;
  return { ...w, rates: [...w.rates].sort((a, b) => a.offeredPerSecond - b.offeredPerSecond) };
}

function workerSection(e: Entry, chart: string | null): string[] {
  const w = workerOf(e);
  if (!w) return [];
  const p = w.plan;
  const lines = ['', '#### Worker end to end', '',
    `The \`src/worker\` Worker runs in-process. Changes are ${w.mix}; ${p.writers} writer connections offer them open loop at a fixed rate for ${p.rateSeconds} s (then up to ${p.searchSteps ?? 0} bisection phases of ${p.searchSeconds ?? 0} s between the highest rate kept up and the lowest not), a free writer committing every change already due in one transaction (1 per transaction unless the writers fell behind; the mean is in the table). Lag = commit acknowledged to the writer → its freshness token applied (polled every 10 ms by another session). "Kept up": p99 lag over the phase's last third under 1 s.`, '',
    '| offered changes/s | achieved | changes | per transaction | lag median | p95 | p99 | max | last-third p99 | kept up | applied/s | drained after | batches | rows written | worker busy |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|'];
  const modes = (m: Record<string, number>) => Object.entries(m).map(([k, n]) => `${k} ${n}`).join(', ') || 'none';
  for (const r of w.rates) {
    lines.push(`| ${num(r.offeredPerSecond)}${r.search ? ' (bisection)' : ''} | ${r.achievedPerSecond} | ${num(r.changes)} | ${r.changesPerTransaction} | ${ms(r.lag.median)} | ${p95(r.lag)} | ${p99(r.lag)} | ${ms(r.lag.max)} | ${ms(r.lastThirdP99)} | ${r.keptUp ? 'yes' : 'NO'} | ${r.appliedPerSecond} | ${r.drained ? ms(r.drainAfterMs) : 'not drained'} | ${r.batches.count}: ${modes(r.batches.modes)} | ${num(r.batches.rowsWritten)} | ${ms(r.batches.busyMs)} |`);
  }
  const measured = w.rates.map((r) => ({ r, cpu: cpuPerChange(r) })).filter((x) => x.cpu !== null);
  if (measured.length) {
    lines.push('', 'Who used the cores: CPU time of each process group from the phase\'s start to its last change applied, per change, and the cores the whole machine kept busy meanwhile (anyone\'s work).', '',
      '| offered changes/s | worker\'s backend | writers\' backends | benchmark process (clients) | lag observer | all, per change | machine busy (cores) |',
      '|---:|---:|---:|---:|---:|---:|---:|');
    for (const { r, cpu } of measured) {
      const busy = r.cpu?.machineBusyS == null ? 'n/a' : (r.cpu.machineBusyS / r.cpu.seconds).toFixed(2);
      lines.push(`| ${num(r.offeredPerSecond)}${r.search ? ' (bisection)' : ''} | ${us(cpu!.worker)} | ${us(cpu!.writers)} | ${us(cpu!.client)} | ${us(cpu!.observer)} | ${us(cpu!.total)} | ${busy} of ${r.cpu!.cores} |`);
    }
  }
  const s = w.sustained;
  lines.push('', `Sustained: lag stayed bounded up to **${s.keptUpPerSecond === null ? 'none of the offered rates' : `${num(s.keptUpPerSecond)} changes/s`}** offered; the highest rate applied was **${s.appliedPerSecond} changes/s**.`);
  const b = w.backlog;
  lines.push('', `Backlog: **${num(b.changes)} changes** (${num(b.shares)} object shares and unshares, ${num(b.memberships)} membership adds and removes, committed set-based in ${ms(b.commitMs)} with the worker stopped; ${backlogNet(b)}) ${b.drained ? `drained in **${ms(b.drainMs)}**` : `NOT drained within ${ms(b.drainMs)}`} in ${b.batches.count} batches (${modes(b.batches.modes)}, ${num(b.batches.rowsWritten)} rows written${b.batches.longestMs === undefined ? '' : `, the longest ${ms(b.batches.longestMs)}`})${b.batches.chunks?.count ? ` and ${b.batches.chunks.count} long-job chunks (${ms(b.batches.chunks.busyMs)} in all, the longest ${ms(b.batches.chunks.maxMs)})` : ''}. Worker process peak RSS **${b.workerPeakRssMiB} MiB** (+${b.workerRssDeltaMiB} MiB, heap +${b.workerHeapDeltaMiB} MiB); its server backend's peak private memory ${b.backendPeakAnonMiB === null ? 'n/a (server not local)' : `${b.backendPeakAnonMiB} MiB`}; temporary files ${b.tempMiB} MiB.`);
  if (b.fresh) {
    const f = b.fresh;
    lines.push('', `Fresh writes while it drained: one change every ${f.intervalMs} ms from the worker's start, ${num(f.changes)} in all; commit → token applied median **${ms(f.lag.median)}**, p99 **${ms(f.lag.p99)}**, max ${ms(f.lag.max)} (what an application writing during the catch-up waits for).`);
  }
  const v = w.verify;
  lines.push('', 'skipped' in v ? `Verification: skipped (${v.skipped}).` : `Verification after the worker phases (\`permgraph.verify()\`): **${v.differences} difference(s)**, ${v.pending} pending.`);
  if (chart) lines.push('', `![worker lag](${chart})`);
  return lines;
}

/** What the backlog leaves behind (runs before it left anything: every pair added and removed again). */
function backlogNet(b: WorkerResult['backlog']): string {
  if (b.keptPairs === undefined) {
    return 'every pair is added and then removed again: the backlog\'s net effect is nil, so its drain tells what a long queue costs, not what writing its changes\' rows would';
  }
  return `most pairs are added and then removed again, and ${num(b.keptPairs)} stay added: the drain reads the whole queue and writes the rows of those`;
}

async function charts(e: Entry, dir: string): Promise<{ incremental: string; reads: string; lag: string | null }> {
  const base = `${e.shape.shape}-${e.shape.size}`;
  const incremental = `charts/incremental-${base}.svg`;
  const reads = `charts/reads-${base}.svg`;
  const random = kinds(e, 'random');
  const probe = kinds(e, 'probe');
  const names = [...new Set([...random, ...probe].map((k) => k.kind))];
  await writeFile(path.join(dir, incremental), renderBarChart({
    title: `${e.shape.shape} (${e.shape.size}): incremental apply latency per change kind (median)`,
    unit: 'ms',
    series: [{ name: 'random target', color: '#4e79a7' }, { name: 'probe cluster', color: '#f28e2b' }, { name: 'full refresh', color: '#bab0ac' }],
    groups: [
      ...names.map((n) => ({ label: n, values: [random.find((k) => k.kind === n)?.latency.median ?? null, probe.find((k) => k.kind === n)?.latency.median ?? null, null] })),
      { label: 'full refresh (up to date)', values: [null, null, e.shape.refresh.upToDate.median] },
    ],
  }));
  const r = e.shape.reads;
  const groups = r
    ? [
        { label: 'check() (server)', values: [r.check.server.permgraph.median, r.check.server.recursive.median] },
        { label: 'check() (client)', values: [r.check.client.permgraph.median, r.check.client.recursive.median] },
        ...r.listings.slice(0, 1).flatMap((l) => [
          { label: `first page (${l.user})`, values: [l.firstPage.permgraph.median, l.firstPage.recursive.median] },
          { label: `whole list (${l.user})`, values: [l.whole.permgraph.median, l.whole.recursive.median] },
        ]),
        ...r.viewers.slice(0, 1).map((v) => ({ label: `who can see ${v.target}`, values: [v.latency.permgraph.median, v.latency.recursive.median] })),
      ]
    : [];
  await writeFile(path.join(dir, reads), renderBarChart({
    title: `${e.shape.shape} (${e.shape.size}): read latency, permgraph vs read-time recursion (median)`,
    unit: 'ms',
    series: [{ name: 'permgraph', color: '#59a14f' }, { name: 'recursive query', color: '#e15759' }],
    groups,
  }));
  const w = workerOf(e);
  let lag: string | null = null;
  if (w) {
    lag = `charts/worker-lag-${base}.svg`;
    await writeFile(path.join(dir, lag), renderBarChart({
      title: `${e.shape.shape} (${e.shape.size}): worker lag, commit → applied, per offered rate`,
      unit: 'ms',
      series: [{ name: 'median', color: '#4e79a7' }, { name: 'p99', color: '#e15759' }],
      groups: w.rates.map((r) => ({ label: `${num(r.offeredPerSecond)} changes/s`, values: [r.lag.median, r.lag.p99] })),
    }));
  }
  return { incremental, reads, lag };
}

/** Target of issue 11: imports validated and loaded at 50,000 rows/s or more. */
const IMPORT_TARGET_ROWS_PER_SECOND = 50_000;

/** The newest `--import` measurement of a clean commit (bench/measure/import.ts; see latest()). */
function importSection(all: { run: RunResult; file: string }[]): string[] {
  const lines = ['## Import', ''];
  // the embedded server's newest, then each other version's (--import --postgres <major>)
  const majors = [...new Set(all.filter((r) => r.run.import !== undefined).map(versionOf))].sort(embeddedFirst(EMBEDDED_MAJOR));
  const found = majors.flatMap((major) => newestPhase(all.filter((r) => versionOf(r) === major), 'import') ?? []);
  if (!found.length) return [...lines, 'Not measured yet: `npm run bench -- --import [--size large]`.'];
  for (const measured of found) lines.push(...importRun(measured), '');
  return lines.slice(0, -1);
}

/** One `--import` run's figures. */
function importRun({ run, file, result: r }: { run: RunResult; file: string; result: NonNullable<RunResult['import']> }): string[] {
  const lines: string[] = [];
  const h = r.history;
  lines.push(
    `${runSource(run, file)} On ${run.postgres ? postgresName(run.postgres.version) : 'PostgreSQL'}. ` +
      `Each size is imported with \`importGraph\` (what \`permgraph import\` runs) into a fresh database that already holds ${num(h.nodes)} nodes and ${num(h.grants)} grants: ` +
      `${h.imports} earlier imports of ${num(h.nodesPerImport)} nodes and as many grants, ${num(h.otherNodes)} nodes written otherwise, and staging statistics taken while the staging tables were empty ` +
      '(where validation used to go quadratic: 5,001 nodes took 15.6 s, 20,001 took 7 min 17 s in issue 11). ' +
      'Rows/s counts nodes + grants over staging, validation and load; the refresh that follows in the same transaction is the engine\'s full recomputation.',
    '',
    'Mode: `default` is `permgraph import` (writers wait during its validation and load, readers do not); `exclusive` is `permgraph import --exclusive` ' +
      '(readers wait too; the foreign keys into nodes are dropped for the load and validated once after it, and for a large load the secondary indexes are built once after it).',
    '',
    'Floor: the same rows written by a plain `COPY` (CSV parsed by the server) into copies of nodes and grants holding the same rows, with the same indexes and check constraints, ' +
      'but no triggers, no foreign keys, no edges and no validation (bench/measure/import-floor.ts), measured in the same database just before the import; ' +
      '"× floor" is how many times longer the import takes.',
    '',
    '| nodes | grants | mode | stage | validate | load | rows/s | COPY floor rows/s | × floor | refresh | rows/s with refresh | permission rows | ≥ 50,000 rows/s |',
    '|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  );
  for (const c of r.cases) {
    const floor = c.floor ? num(c.floor.rowsPerSecond) : '–';
    const ratio = c.floor ? `${(c.floor.rowsPerSecond / c.rowsPerSecond).toFixed(1)}×` : '–';
    lines.push(`| ${num(c.nodes)} | ${num(c.grants)} | ${c.mode ?? 'default'} | ${ms(c.stageMs)} | ${ms(c.validateMs)} | ${ms(c.loadMs)} | **${num(c.rowsPerSecond)}** | ${floor} | ${ratio} | ${ms(c.refreshMs)} | ${num(c.rowsPerSecondWithRefresh)} | ${num(c.permissionRows)} | ${status(c.rowsPerSecond >= IMPORT_TARGET_ROWS_PER_SECOND)} |`);
  }
  return lines;
}

/** Server-side medians of the heaviest users' first pages, list_rows and list_targets, every shape (ms). */
function firstPagesServer(entries: Entry[]): number[] {
  return entries.flatMap((e) => (e.shape.reads?.listings ?? []).flatMap((l) => [l.firstPageServer?.permgraph.median, l.targets?.firstPageServer.median]))
    .filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
}

/** One (size, shape) of one version, for the section on other versions of PostgreSQL. */
function versionFigures(e: Entry): VersionFigures {
  const r = e.shape.refresh;
  const listings = e.shape.reads?.listings ?? [];
  const worker = workerOf(e);
  const worst = (values: (number | undefined)[]) => {
    const found = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
    return found.length ? Math.max(...found) : null;
  };
  return {
    shape: e.shape.shape,
    size: e.shape.size,
    file: e.file,
    version: e.run.postgres ? postgresName(e.run.postgres.version).split(' ')[1]! : '?',
    refreshVsFloor: r.ratioToFloor,
    noopVsFloor: upToDateRatio(r),
    incrementalMedian: e.shape.incremental ? pooled(e, 'random').median : null,
    localVsCommit: localChanges(e)?.vsCommit?.applyRatio ?? null,
    checkServer: e.shape.reads?.check.server.permgraph.median ?? null,
    firstPageServer: worst(listings.map((l) => l.firstPageServer?.permgraph.median)),
    targetsFirstPageServer: worst(listings.map((l) => l.targets?.firstPageServer.median)),
    wholeListServer: worst(listings.map((l) => l.wholeServer?.permgraph.median)),
    settings: e.run.postgres?.settings ?? {},
    worker: worker ? { keptUp: worker.sustained.keptUpPerSecond, applied: worker.sustained.appliedPerSecond } : null,
  };
}

/** The other major versions measured, each with its newest figures. */
function otherVersions(all: { run: RunResult; file: string }[]): VersionFigures[] {
  const majors = [...new Set(all.map((r) => majorOf(r.run)))].filter((m): m is string => m !== null && m !== EMBEDDED_MAJOR);
  return majors.flatMap((major) => latest(all.filter((r) => majorOf(r.run) === major)).filter((e) => !external(e.shape)).map(versionFigures));
}

/** A run's major version of PostgreSQL; a phase that started a server of its own counts as the embedded server's. */
const versionOf = (r: { run: RunResult }): string => majorOf(r.run) ?? EMBEDDED_MAJOR;

/** A section's lines and the blank line after them; nothing for an empty section. */
const paragraph = (lines: string[]): string[] => (lines.length ? [...lines, ''] : []);

/** Writes REPORT.md and the charts; returns the report's path. */
export async function writeReport(): Promise<string> {
  const all = await loadRuns();
  // The report is the embedded server's; runs on other versions only go to
  // their own section (phases that started servers of their own have none).
  const runs = all.filter((r) => versionOf(r) === EMBEDDED_MAJOR);
  // The summary, the goals and the comparisons are the generated shapes'; a
  // graph given with --graph (any CSV pair, named after its directory) only
  // gets its details, at the end.
  const measured = latest(runs);
  const entries = measured.filter((e) => !external(e.shape));
  const externals = measured.filter((e) => external(e.shape));
  await mkdir(path.join(RESULTS_DIR, 'charts'), { recursive: true });
  const largeOrg = entries.find((e) => e.shape.shape === 'org' && e.shape.size === 'large');
  const largeOrgRates = largeOrg ? workerOf(largeOrg)?.rates ?? null : null;
  const largeOrgBacklog = largeOrg ? workerOf(largeOrg)?.backlog ?? null : null;
  const lines = [...header(runs, entries), '', ...summaryTable(entries), '', ...goals(entries, runs), '', ...limitsSection(runs, { largeOrgRates, largeOrgFloorRowsPerSecond: largeOrg?.shape.refresh.floorRowsPerSecond ?? null, sustainedGoal: SUSTAINED_GOAL, checkGoalMs: CHECK_GOAL_MS, firstPagesServerMs: firstPagesServer(entries),
    checkServerMs: entries.flatMap((e) => (e.shape.reads ? [e.shape.reads.check.server.permgraph.median] : [])),
    noopVsFloor: entries.map((e) => upToDateRatio(e.shape.refresh)), noopGoal: NOOP_REFRESH_GOAL, largeOrgLocalTail: largeOrgLocalTail(largeOrg), largeOrgBacklog }), '', ...scaling(entries, runs), '', ...soloSection(runs), '', ...importSection(all), '', ...holSection(all, EMBEDDED_MAJOR), '',
    ...paragraph(versionsSection(EMBEDDED_MAJOR, [...entries.map(versionFigures), ...otherVersions(all)])),
    'Engine problems found while building these benchmarks, with EXPLAIN evidence: [bench/FINDINGS.md](../FINDINGS.md).', '', '## Details'];
  for (const e of entries) {
    const chart = await charts(e, RESULTS_DIR);
    lines.push('', `### ${e.shape.shape} (${e.shape.size})`, '', ...sourcesOf(e), ...refreshSection(e), '', '#### Incremental', '', ...incrementalSection(e, chart.incremental), '', '#### Reads', '', ...readsSection(e, chart.reads), ...workerSection(e, chart.lag));
  }
  if (externals.length) {
    lines.push('', '## Graphs given as CSV (`--graph`)', '', 'Measured like the shapes above, but left out of the summary and the goals: any pair of files, named after its directory. The change kinds pick their targets by the generators\' id conventions (users `u…`, teams `t…`, projects `p…`, objects `o…`); a kind with no candidate is skipped.');
    for (const e of externals) {
      const chart = await charts({ ...e, shape: { ...e.shape, shape: `csv-${e.shape.shape}` } }, RESULTS_DIR);
      lines.push('', `### ${e.shape.shape} (from ${e.shape.graph.dir})`, '', `${runSource(e.run, e.file)}`, '', ...sourcesOf(e), ...refreshSection(e), '', '#### Incremental', '', ...incrementalSection(e, chart.incremental), '', '#### Reads', '', ...readsSection(e, chart.reads));
    }
  }
  const file = path.join(RESULTS_DIR, 'REPORT.md');
  await writeFile(file, `${lines.join('\n')}\n`);
  return file;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  writeReport().then((file) => process.stdout.write(`${file}\n`));
}
