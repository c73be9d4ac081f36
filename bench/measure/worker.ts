// Worker end to end (src/worker): lag from commit to applied at offered
// change rates, the highest rate the worker sustains, and its memory while
// draining a large backlog. Runs on a loaded, refreshed graph (org).
//
// The changes are churn that leaves the graph as it found it: each one toggles
// a pair, adding a grant or removing the one an earlier change added. Four in
// five share an object with a user (one permission row); one in five adds a
// user to a team or takes them out again (the team's closure: tens to hundreds
// of rows on org). Lag is observed with freshness tokens: a change's token
// (its transaction id) counts as applied once its change rows are gone, which
// happens in the worker's transaction that writes its permission rows.
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { openPool, sql, type ConnectionPool, type Queryable } from '../../src/db/pool.ts';
import { verify } from '../../src/engine/verify.ts';
import type { BatchResult } from '../../src/engine/apply.ts';
import { Worker } from '../../src/worker/worker.ts';
import type { Size } from '../graph/types.ts';
import { progress } from '../lib/progress.ts';
import { round, roundSummary, summarize, type Summary } from '../lib/stats.ts';

export interface WorkerPlan {
  /** Offered changes per second, one phase each ... */
  rates: number[];
  /** ... lasting this long. */
  rateSeconds: number;
  /** Then this many phases bisect between the highest rate kept up and the lowest not ... */
  searchSteps: number;
  /** ... lasting this long each. */
  searchSeconds: number;
  /** Writer connections (one change per transaction each). */
  writers: number;
  /** Changes committed with the worker stopped, then drained. */
  backlog: number;
  /** Give up waiting for a drain after this long. */
  drainTimeoutMs: number;
}

export const WORKER_PLANS: Record<Size, WorkerPlan> = {
  small: { rates: [100, 500, 2000], rateSeconds: 3, searchSteps: 2, searchSeconds: 2, writers: 4, backlog: 20_000, drainTimeoutMs: 120_000 },
  large: { rates: [100, 500, 2000], rateSeconds: 30, searchSteps: 3, searchSeconds: 15, writers: 4, backlog: 1_000_000, drainTimeoutMs: 900_000 },
};

/** The bisection stops when the bracket is this narrow (changes/s). */
const SEARCH_RESOLUTION = 100;
/** A phase keeps up when the p99 lag over its last third stays under this. */
const KEPT_UP_P99_MS = 1000;
/** A writer commits at most this many due changes in one transaction. */
const MAX_PER_TRANSACTION = 20;
/** One change in this many is a team membership; the others share an object. */
const MEMBERSHIP_EVERY = 5;

export interface BatchTotals {
  count: number;
  modes: Record<string, number>;
  changes: number;
  rowsWritten: number;
  /** Time spent inside apply_changes (server side). */
  busyMs: number;
}

export interface RateResult {
  offeredPerSecond: number;
  seconds: number;
  /** A bisection phase (after the plan's fixed rates). */
  search: boolean;
  /** What the writers managed (below offered when they could not keep the pace). */
  achievedPerSecond: number;
  changes: number;
  /** Mean changes per writer transaction (1 unless the writers fell behind the rate). */
  changesPerTransaction: number;
  /** Commit of a change (acknowledged to its writer) → its token applied; ms. */
  lag: Summary;
  /** p99 lag over the last third of the phase: growing lag shows here. */
  lastThirdP99: number;
  keptUp: boolean;
  /** Changes ÷ (first commit → last one applied). */
  appliedPerSecond: number;
  /** Last commit → every change applied. */
  drainAfterMs: number;
  drained: boolean;
  batches: BatchTotals;
}

export interface BacklogResult {
  changes: number;
  memberships: number;
  shares: number;
  /** Committing the backlog set-based, worker stopped. */
  commitMs: number;
  drainMs: number;
  drained: boolean;
  batches: BatchTotals;
  /** The worker process (Node): resident set and heap, peak and growth. */
  workerPeakRssMiB: number;
  workerRssDeltaMiB: number;
  workerHeapDeltaMiB: number;
  /** Peak private memory of the worker's server backend (Linux /proc, local server only). */
  backendPeakAnonMiB: number | null;
  /** Temporary files the database wrote while draining. */
  tempMiB: number;
}

export interface WorkerResult {
  graph: string;
  plan: WorkerPlan;
  mix: string;
  rates: RateResult[];
  /** Highest offered rate whose lag stayed bounded (fixed rates and bisection), and the highest rate the worker applied at. */
  sustained: { keptUpPerSecond: number | null; appliedPerSecond: number };
  backlog: BacklogResult;
  verify: { differences: number; pending: number } | { skipped: string };
}

type ToggleKind = 'membership' | 'share';

interface Pair {
  tail: string;
  head: string;
  level: number;
  present: boolean;
}

/**
 * The churn: pairs that have no permission row yet (so adding one changes
 * rows), cycled in a fixed order; each use flips the pair. Pools are sized so
 * that a pair is added once and removed once, far apart, over the run.
 */
class Churn {
  private used = { membership: 0, share: 0 };

  private constructor(private readonly pools: Record<ToggleKind, Pair[]>) {}

  static async load(db: Queryable, changes: number): Promise<Churn> {
    const { memberships, shares } = pairsFor(changes);
    return new Churn({ // one spare pair each for rounding
      membership: await freshPairs(db, 'group', 't%', memberships + 1),
      share: await freshPairs(db, 'object', '%', shares + 1),
    });
  }

  /** Commits changes first .. first+count-1 in one transaction; returns its freshness token. */
  async commit(db: Queryable, first: number, count: number): Promise<string> {
    const adds: Pair[] = [];
    const removes: Pair[] = [];
    for (let i = first; i < first + count; i++) {
      const kind: ToggleKind = i % MEMBERSHIP_EVERY === 0 ? 'membership' : 'share';
      const pool = this.pools[kind];
      const pair = pool[this.used[kind]++ % pool.length] as Pair;
      pair.present = !pair.present;
      (pair.present ? adds : removes).push(pair);
    }
    const [row] = await db.query(sql`
      with added as (
        insert into permgraph.grants (tail_id, head_id, level, source)
        select t, h, l, 'bench-churn'
        from unnest(${adds.map((p) => p.tail)}::text[], ${adds.map((p) => p.head)}::text[], ${adds.map((p) => p.level)}::smallint[]) as a(t, h, l)
        returning 1
      ), removed as (
        delete from permgraph.grants g
        using unnest(${removes.map((p) => p.tail)}::text[], ${removes.map((p) => p.head)}::text[]) as r(t, h)
        where g.tail_id = r.t and g.head_id = r.h and g.source = 'bench-churn'
        returning 1
      )
      select permgraph.current_token() as token, (select count(*) from added) + (select count(*) from removed) as done`);
    if (Number(row.done) !== count) throw new Error(`bench churn: ${row.done} of ${count} changes took effect (pairs out of step)`);
    return row.token as string;
  }
}

/** Pairs for `changes` churn changes of the mix, each added once and removed once. */
function pairsFor(changes: number): { memberships: number; shares: number } {
  const memberships = Math.floor(changes / MEMBERSHIP_EVERY / 2);
  return { memberships, shares: Math.floor(changes / 2) - memberships };
}

/** Distinct (user, head) pairs without a permission row, in a deterministic order. */
async function freshPairs(db: Queryable, headKind: 'group' | 'object', headPattern: string, count: number): Promise<Pair[]> {
  // Enough users and heads for count pairs, however many rows already exist.
  const side = Math.ceil(Math.sqrt(count * 2)) + 20;
  const rows: { u: string; h: string; level: number }[] = await db.query(sql`
    select u.id as u, h.id as h, 1 + (abs(hashtext(u.id || h.id)) % 3) as level
    from (select id from permgraph.nodes where kind = 'user' order by md5(id) limit ${side}) u
    cross join (select id from permgraph.nodes where kind = ${headKind} and id like ${headPattern} order by md5(id) limit ${side}) h
    where not exists (select 1 from permgraph.permissions p where p.user_id = u.id and p.target_id = h.id)
    order by md5(u.id || h.id) limit ${count}`);
  if (rows.length < count) throw new Error(`bench churn: only ${rows.length} fresh user→${headKind} pairs, ${count} needed`);
  return rows.map((r) => ({ tail: r.u, head: r.h, level: headKind === 'object' ? 1 : r.level, present: false }));
}

/** Polls which committed changes have been applied; times each one. */
class TokenWatcher {
  private readonly pending = new Map<string, (appliedAt: number) => void>();
  private running = true;
  private readonly loop: Promise<void>;

  constructor(private readonly db: Queryable, private readonly intervalMs = 10) {
    this.loop = this.poll();
  }

  /** Resolves with the time (performance.now()) the token was first seen applied. */
  applied(token: string): Promise<number> {
    return new Promise((resolve) => this.pending.set(token, resolve));
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  private async poll(): Promise<void> {
    while (this.running) {
      // The oldest first: a batch applies every change committed before it.
      // Checking the oldest few is enough: while they wait, newer ones do too.
      const tokens = [...this.pending.keys()].slice(0, 50);
      let allApplied = false;
      if (tokens.length > 0) {
        const rows: { token: string }[] = await this.db.query(sql`
          select distinct xact_id::text as token from permgraph.changes where xact_id = any(${tokens}::xid8[])`);
        const now = performance.now();
        const waiting = new Set(rows.map((r) => r.token));
        for (const token of tokens) {
          if (waiting.has(token)) continue;
          this.pending.get(token)?.(now);
          this.pending.delete(token);
        }
        allApplied = waiting.size === 0 && this.pending.size > 0;
      }
      if (!allApplied) await sleep(this.intervalMs);
    }
  }
}

const timeout = (ms: number) => sleep(ms, 'timeout' as const, { ref: false });

/** Batches the worker applied, with their end times, to be totalled per phase. */
class BatchLog {
  private readonly batches: { at: number; result: BatchResult }[] = [];

  listen(worker: Worker): void {
    worker.on('batch', (result) => this.batches.push({ at: performance.now(), result }));
  }

  totals(from: number, to: number): BatchTotals {
    const totals: BatchTotals = { count: 0, modes: {}, changes: 0, rowsWritten: 0, busyMs: 0 };
    for (const { at, result } of this.batches) {
      if (at < from || at > to) continue;
      totals.count++;
      totals.modes[result.mode] = (totals.modes[result.mode] ?? 0) + 1;
      totals.changes += result.changes;
      totals.rowsWritten += result.inserted + result.updated + result.deleted;
      totals.busyMs += result.ms;
    }
    totals.busyMs = round(totals.busyMs, 1);
    return totals;
  }
}

interface Committed {
  committedAt: number;
  appliedAt: Promise<number>;
}

const changesOf = (phase: Pick<Phase, 'rate' | 'seconds'>) => Math.max(1, Math.round(phase.rate * phase.seconds));

/**
 * Offers `rate` changes per second for the phase's duration, open loop: a free
 * writer commits every change already due, up to MAX_PER_TRANSACTION in one
 * transaction (as an application coalescing writes would), so the offered
 * rate holds even when single-change transactions cannot keep up with it.
 */
interface Phase {
  rate: number;
  seconds: number;
  search: boolean;
  /** Churn changes used before this phase. */
  first: number;
}

async function offerRate(writers: ConnectionPool, churn: Churn, watcher: TokenWatcher, log: BatchLog, plan: WorkerPlan, phase: Phase): Promise<RateResult> {
  const { rate, first } = phase;
  const total = changesOf(phase);
  const committed: Committed[] = [];
  const started = performance.now();
  let next = 0;
  let transactions = 0;
  const writer = async () => {
    while (next < total) {
      const due = Math.min(total, Math.floor(((performance.now() - started) * rate) / 1000) + 1) - next;
      if (due <= 0) {
        await sleep(started + (next * 1000) / rate - performance.now());
        continue;
      }
      const from = next;
      const count = Math.min(due, MAX_PER_TRANSACTION);
      next += count;
      const token = await churn.commit(writers, first + from, count);
      transactions++;
      const at = performance.now();
      const appliedAt = watcher.applied(token);
      for (let i = from; i < from + count; i++) committed[i] = { committedAt: at, appliedAt };
    }
  };
  await Promise.all(Array.from({ length: plan.writers }, writer));
  const lastCommit = performance.now();
  const all = Promise.all(committed.map((c) => c.appliedAt));
  const drained = (await Promise.race([all, timeout(plan.drainTimeoutMs)])) !== 'timeout';
  const appliedAt = drained ? await all : [];
  const finished = performance.now();
  const lags = appliedAt.map((at, i) => at - (committed[i] as Committed).committedAt);
  const lastThirdP99 = summarize(lags.slice(Math.floor((lags.length * 2) / 3))).p99;
  const lastApplied = appliedAt.length ? Math.max(...appliedAt) : finished;
  const achieved = total / ((lastCommit - started) / 1000);
  return {
    offeredPerSecond: rate,
    seconds: phase.seconds,
    search: phase.search,
    achievedPerSecond: round(achieved, 1),
    changes: total,
    changesPerTransaction: round(total / transactions, 2),
    lag: roundSummary(summarize(lags)),
    lastThirdP99: round(lastThirdP99, 1),
    // a rate the writers could not offer was not tested
    keptUp: drained && lastThirdP99 < KEPT_UP_P99_MS && achieved >= rate * 0.95,
    appliedPerSecond: round(total / ((lastApplied - started) / 1000), 1),
    drainAfterMs: round(finished - lastCommit, 1),
    drained,
    batches: log.totals(started, finished),
  };
}

/**
 * Commits `changes` churn changes set-based with the worker stopped: pairs
 * are added in one statement and removed in another (each row still passes
 * the capture triggers, as any application write does).
 */
async function commitBacklog(db: Queryable, changes: number): Promise<{ memberships: number; shares: number }> {
  const { memberships: membershipPairs, shares: sharePairs } = pairsFor(changes);
  const chunk = 50_000;
  for (const [headKind, pairs] of [['group', membershipPairs], ['object', sharePairs]] as const) {
    const side = Math.ceil(Math.sqrt(pairs));
    for (let offset = 0; offset < pairs; offset += chunk) {
      const size = Math.min(chunk, pairs - offset);
      await db.query(sql`
        insert into permgraph.grants (tail_id, head_id, level, source)
        select u.id, h.id, case when h.kind = 'group' then 1 + (abs(hashtext(u.id || h.id)) % 3) else 1 end, 'bench-backlog'
        from (select id, row_number() over (order by md5(id)) - 1 as n from permgraph.nodes where kind = 'user') u
        join (select id, kind, row_number() over (order by md5(id)) - 1 as n from permgraph.nodes
              where kind = ${headKind} and (kind = 'object' or id like 't%')) h
          on true
        where u.n < ${side} and h.n < ${side} and u.n * ${side} + h.n >= ${offset} and u.n * ${side} + h.n < ${offset + size}`);
    }
  }
  for (let removed = -1; removed !== 0;) {
    const rows: { n: string }[] = await db.query(sql`
      with gone as (
        delete from permgraph.grants g
        where (g.tail_id, g.head_id, g.source) in (
          select tail_id, head_id, source from permgraph.grants where source = 'bench-backlog' limit ${chunk})
        returning 1)
      select count(*) as n from gone`);
    removed = Number(rows[0]?.n ?? 0);
  }
  return { memberships: membershipPairs * 2, shares: sharePairs * 2 };
}

/** Samples memory of this process and of the worker's server backend. */
class MemorySampler {
  private readonly timer: NodeJS.Timeout;
  private readonly before = process.memoryUsage();
  peakRss = this.before.rss;
  peakHeap = this.before.heapUsed;
  backendPeakAnonKiB: number | null = null;
  private backendPids: number[] = [];

  constructor(private readonly db: Queryable) {
    this.timer = setInterval(() => this.sample(), 50);
  }

  async findBackends(): Promise<void> {
    if (this.backendPids.length > 0) return;
    const rows: { pid: number }[] = await this.db.query(sql`
      select pid from pg_stat_activity where application_name = 'permgraph-worker' and datname = current_database()`);
    this.backendPids = rows.map((r) => r.pid);
  }

  stop(): { workerPeakRssMiB: number; workerRssDeltaMiB: number; workerHeapDeltaMiB: number; backendPeakAnonMiB: number | null } {
    clearInterval(this.timer);
    this.sample();
    const mib = (bytes: number) => round(bytes / 2 ** 20, 1);
    return {
      workerPeakRssMiB: mib(this.peakRss),
      workerRssDeltaMiB: mib(this.peakRss - this.before.rss),
      workerHeapDeltaMiB: mib(this.peakHeap - this.before.heapUsed),
      backendPeakAnonMiB: this.backendPeakAnonKiB === null ? null : round(this.backendPeakAnonKiB / 1024, 1),
    };
  }

  private sample(): void {
    const m = process.memoryUsage();
    this.peakRss = Math.max(this.peakRss, m.rss);
    this.peakHeap = Math.max(this.peakHeap, m.heapUsed);
    for (const pid of this.backendPids) {
      const anon = backendAnonKiB(pid);
      if (anon !== null) this.backendPeakAnonKiB = Math.max(this.backendPeakAnonKiB ?? 0, anon);
    }
  }
}

/** RssAnon of a local process (null when the server is elsewhere or /proc is closed). */
function backendAnonKiB(pid: number): number | null {
  try {
    const match = /RssAnon:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

async function tempBytes(db: Queryable): Promise<number> {
  const [row] = await db.query(sql`select temp_bytes from pg_stat_database where datname = current_database()`);
  return Number(row?.temp_bytes ?? 0);
}

async function drainBacklog(url: string, db: Queryable, plan: WorkerPlan): Promise<BacklogResult> {
  const commitStarted = performance.now();
  const committed = await commitBacklog(db, plan.backlog);
  const commitMs = performance.now() - commitStarted;
  const [pending] = await db.query(sql`select count(*)::bigint as n from permgraph.changes`);
  global.gc?.();
  const memory = new MemorySampler(db);
  const tempBefore = await tempBytes(db);
  const log = new BatchLog();
  const worker = new Worker({ url, pollIntervalMs: 1000 });
  log.listen(worker);
  const started = performance.now();
  await worker.start();
  let drained = false;
  try {
    while (performance.now() - started < plan.drainTimeoutMs) {
      await memory.findBackends(); // the worker connects lazily, and may reconnect
      const [row] = await db.query(sql`select not exists (select 1 from permgraph.changes) as empty`);
      if (row.empty) {
        drained = true;
        break;
      }
      await sleep(100);
    }
  } finally {
    await worker.stop();
  }
  const drainMs = performance.now() - started;
  // pg_stat_database is updated when a backend reports; give it a moment.
  await sleep(600);
  return {
    changes: Number(pending.n),
    ...committed,
    commitMs: round(commitMs, 1),
    drainMs: round(drainMs, 1),
    drained,
    batches: log.totals(started, performance.now()),
    ...memory.stop(),
    tempMiB: round(((await tempBytes(db)) - tempBefore) / 2 ** 20, 1),
  };
}

/** Runs the worker benchmarks on the database at url (a loaded, refreshed graph). */
export async function measureWorkerOn(url: string, graph: string, size: Size, runVerify: boolean): Promise<WorkerResult> {
  const plan = WORKER_PLANS[size];
  const writers = openPool(url, { poolSize: plan.writers, applicationName: 'permgraph-bench-writer' });
  const observer = openPool(url, { poolSize: 1, applicationName: 'permgraph-bench-observer' });
  const bar = progress('worker end to end', plan.rates.length + plan.searchSteps + 1);
  try {
    const fixed = plan.rates.reduce((sum, rate) => sum + changesOf({ rate, seconds: plan.rateSeconds }), 0);
    const churn = await Churn.load(writers, fixed + plan.searchSteps * changesOf({ rate: Math.max(...plan.rates), seconds: plan.searchSeconds }));
    const log = new BatchLog();
    const worker = new Worker({ url, pollIntervalMs: 1000 });
    log.listen(worker);
    await worker.start();
    const watcher = new TokenWatcher(observer);
    const rates: RateResult[] = [];
    try {
      let first = 0;
      const run = async (rate: number, seconds: number, search: boolean) => {
        const result = await offerRate(writers, churn, watcher, log, plan, { rate, seconds, search, first });
        first += changesOf({ rate, seconds });
        rates.push(result);
        bar.tick();
        return result;
      };
      for (const rate of plan.rates) await run(rate, plan.rateSeconds, false);
      // Bisect between the highest rate kept up and the lowest one above it that was not.
      let low = Math.max(0, ...rates.filter((r) => r.keptUp).map((r) => r.offeredPerSecond));
      let high = Math.min(...rates.filter((r) => !r.keptUp && r.offeredPerSecond > low).map((r) => r.offeredPerSecond));
      for (let step = 0; step < plan.searchSteps && Number.isFinite(high) && high - low > SEARCH_RESOLUTION; step++) {
        const rate = Math.round((low + high) / 2 / 50) * 50;
        if ((await run(rate, plan.searchSeconds, true)).keptUp) low = rate;
        else high = rate;
      }
    } finally {
      await watcher.stop();
      await worker.stop();
    }
    const backlog = await drainBacklog(url, observer, plan);
    bar.tick();
    let checked: WorkerResult['verify'] = { skipped: 'a full recomputation is too slow on this graph (see refresh)' };
    if (runVerify) {
      const result = await verify(observer);
      checked = { differences: result.differences.length, pending: result.pendingChanges };
    }
    bar.done();
    const keptUp = rates.filter((r) => r.keptUp).map((r) => r.offeredPerSecond);
    return {
      graph,
      plan,
      mix: `churn: 1 in ${MEMBERSHIP_EVERY} changes adds or removes a team membership, the others share or unshare an object with a user`,
      rates,
      sustained: { keptUpPerSecond: keptUp.length ? Math.max(...keptUp) : null, appliedPerSecond: Math.max(...rates.map((r) => r.appliedPerSecond)) },
      backlog,
      verify: checked,
    };
  } finally {
    await writers.dispose();
    await observer.dispose();
  }
}
