// The phases of a worker benchmark: offering a rate of churn open loop and
// timing each change from commit to applied, and draining a large backlog.
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_POLL_INTERVAL_MS } from '../../../src/constants.ts';
import { sql, type ConnectionPool, type Queryable } from '../../../src/db/pool.ts';
import { Worker } from '../../../src/worker/worker.ts';
import { round, roundSummary, summarize, type Summary } from '../../lib/stats.ts';
import { startCpuMeter, type CpuUse } from './cpu.ts';
import { BatchLog, MemorySampler, TokenWatcher, tempBytes, type BatchTotals } from './observers.ts';
import { commitBacklog, type Churn } from './workload.ts';

export interface WorkerPlan {
  /** Offered changes per second, one phase each ... */
  rates: number[];
  /** ... lasting this long. */
  rateSeconds: number;
  /** Then this many phases bisect between the highest rate kept up and the lowest not ... */
  searchSteps: number;
  /** ... lasting this long each. */
  searchSeconds: number;
  /**
   * Churn changes' worth of pairs added (and applied) before the first
   * phase, which the removals take from: every phase is then half additions,
   * half removals (workload.ts, the balanced order).
   */
  present: number;
  /** Writer connections (one change per transaction each). */
  writers: number;
  /** Changes committed with the worker stopped, then drained. */
  backlog: number;
  /** Of the backlog's pairs, the share left added (the rest are added and removed again: workload.ts, backlogPlan). */
  backlogKept: number;
  /** Give up waiting for a drain after this long. */
  drainTimeoutMs: number;
}

/** A phase keeps up when the p99 lag over its last third stays under this. */
const KEPT_UP_P99_MS = 1000;
/** A writer commits at most this many due changes in one transaction. */
const MAX_PER_TRANSACTION = 20;
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
  /** CPU seconds per process group from the phase's start to its last change applied (absent in older runs). */
  cpu?: CpuUse;
}

export interface BacklogResult {
  changes: number;
  /** Membership and share changes committed (additions and removals). */
  memberships: number;
  shares: number;
  /** Pairs the backlog left added: its net effect (absent in runs before it had one: every pair was removed again). */
  keptPairs?: number;
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
  /** The worker's batches and chunks, as they ended (absent in runs before it): see BatchLog.timeline. */
  timeline?: [endedMs: number, step: 'batch' | 'chunk', ms: number][];
  /**
   * Fresh writes during the drain: one churn change at a time, every
   * intervalMs from the worker's start until the backlog is drained, each
   * timed from its commit to its token applied (absent in runs before it).
   */
  fresh?: {
    intervalMs: number;
    changes: number;
    lag: Summary;
    /** Each write: when it committed, ms after the worker's start, and its lag (absent in runs before it). */
    writes?: [committedMs: number, lagMs: number][];
  };
}

/** How often a fresh change is committed while a backlog drains. */
const FRESH_INTERVAL_MS = 250;

/** What a fresh writer needs: the churn and where in it the rate phases stopped. */
export interface FreshWrites {
  writers: ConnectionPool;
  churn: Churn;
  first: number;
}

const timeout = (ms: number) => sleep(ms, 'timeout' as const, { ref: false });

interface Committed {
  committedAt: number;
  appliedAt: Promise<number>;
}

export const changesOf = (phase: Pick<Phase, 'rate' | 'seconds'>) => Math.max(1, Math.round(phase.rate * phase.seconds));

/**
 * Offers `rate` changes per second for the phase's duration, open loop: a free
 * writer commits every change already due, up to MAX_PER_TRANSACTION in one
 * transaction (as an application coalescing writes would), so the offered
 * rate holds even when single-change transactions cannot keep up with it.
 */
export interface Phase {
  rate: number;
  seconds: number;
  search: boolean;
  /** Churn changes used before this phase. */
  first: number;
}

export async function offerRate(writers: ConnectionPool, observer: Queryable, churn: Churn, watcher: TokenWatcher, log: BatchLog, plan: WorkerPlan, phase: Phase): Promise<RateResult> {
  const { rate, first } = phase;
  const total = changesOf(phase);
  const committed: Committed[] = [];
  const cpu = await startCpuMeter(observer);
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
  const cpuUse = await cpu.stop();
  const lags = appliedAt.map((at, i) => at - (committed[i] as Committed).committedAt);
  const lastThirdP99 = summarize(lags.slice(Math.floor((lags.length * 2) / 3))).p99;
  // (reduce, not Math.max(...): 150,000 arguments overflow the stack at 5,000/s for 30 s)
  const lastApplied = appliedAt.length ? appliedAt.reduce((a, b) => Math.max(a, b)) : finished;
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
    cpu: cpuUse,
  };
}

/** No change waits: queued, or held by a long job (its backlog's rows included, until the job's last chunks delete them). */
export async function backlogDrained(db: Queryable): Promise<boolean> {
  const [row] = await db.query(sql`
    select not exists (select 1 from permgraph.changes) and not exists (select 1 from permgraph.long_job_changes) as empty`);
  return row.empty;
}

export async function drainBacklog(url: string, db: Queryable, plan: WorkerPlan, chunkPairs: number | null, freshWrites: FreshWrites): Promise<BacklogResult> {
  const commitStarted = performance.now();
  const committed = await commitBacklog(db, plan.backlog, plan.backlogKept);
  const commitMs = performance.now() - commitStarted;
  const [pending] = await db.query(sql`select count(*)::bigint as n from permgraph.changes`);
  global.gc?.();
  const memory = new MemorySampler(db);
  const tempBefore = await tempBytes(db);
  const log = new BatchLog();
  const worker = new Worker({ url, pollIntervalMs: DEFAULT_POLL_INTERVAL_MS, chunkPairs });
  log.listen(worker);
  const started = performance.now();
  await worker.start();
  const fresh = new FreshWriter(db, freshWrites, started);
  let drained = false;
  try {
    while (performance.now() - started < plan.drainTimeoutMs) {
      await memory.findBackends(); // the worker connects lazily, and may reconnect
      if (await backlogDrained(db)) {
        drained = true;
        break;
      }
      await sleep(100);
    }
  } finally {
    await fresh.stop();
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
    timeline: log.timeline(started, performance.now()),
    ...memory.stop(),
    tempMiB: round(((await tempBytes(db)) - tempBefore) / 2 ** 20, 1),
    fresh: fresh.result(),
  };
}

/**
 * Commits one churn change every FRESH_INTERVAL_MS until stopped, and times
 * each from its commit to its token applied: what an application writing
 * while the worker catches up waits for.
 */
export class FreshWriter {
  private readonly watcher: TokenWatcher;
  private readonly lags: Promise<[number, number]>[] = [];
  private running = true;
  private readonly loop: Promise<void>;
  private settled: [number, number][] = [];

  /** `since`: the worker's start, which each write's commit is timed from. */
  constructor(observer: Queryable, private readonly writes: FreshWrites, private readonly since: number) {
    this.watcher = new TokenWatcher(observer);
    this.loop = this.write();
  }

  private async write(): Promise<void> {
    for (let i = 0; this.running; i++) {
      const token = await this.writes.churn.commit(this.writes.writers, this.writes.first + i, 1);
      const committedAt = performance.now();
      this.lags.push(this.watcher.applied(token).then((at) => [committedAt - this.since, at - committedAt]));
      await sleep(FRESH_INTERVAL_MS);
    }
  }

  /** Stops writing and waits for every fresh change to be applied (the worker still runs). */
  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    this.settled = await Promise.all(this.lags);
    await this.watcher.stop();
  }

  result(): NonNullable<BacklogResult['fresh']> {
    return {
      intervalMs: FRESH_INTERVAL_MS,
      changes: this.settled.length,
      lag: roundSummary(summarize(this.settled.map(([, lag]) => lag))),
      writes: this.settled.map(([at, lag]) => [round(at, 0), round(lag, 1)]),
    };
  }
}
