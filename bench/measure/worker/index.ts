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
// happens in the worker's transaction that writes its permission rows. The
// backlog is the same mix, committed with the worker stopped, but a quarter
// of the pairs it adds stay added (workload.ts, commitBacklog): its drain
// writes rows.
//
// workload.ts is the churn, observers.ts what is watched, phases.ts the rate and
// backlog phases; this file plans and runs them.
import { DEFAULT_CHUNK_PAIRS, DEFAULT_POLL_INTERVAL_MS } from '../../../src/constants.ts';
import { openPool } from '../../../src/db/pool.ts';
import { verify } from '../../../src/engine/verify.ts';
import { Worker } from '../../../src/worker/worker.ts';
import type { Size } from '../../graph/types.ts';
import { progress } from '../../lib/progress.ts';
import { OBSERVER_APPLICATION_NAME, WRITER_APPLICATION_NAME } from './cpu.ts';
import { BatchLog, TokenWatcher } from './observers.ts';
import { changesOf, drainBacklog, offerRate, type BacklogResult, type RateResult, type WorkerPlan } from './phases.ts';
import { Churn, MEMBERSHIP_EVERY } from './workload.ts';

export type { BacklogResult, RateResult, WorkerPlan } from './phases.ts';
export type { BatchTotals } from './observers.ts';

export const WORKER_PLANS: Record<Size, WorkerPlan> = {
  small: { rates: [100, 500, 2000], rateSeconds: 3, searchSteps: 2, searchSeconds: 2, present: 2_000, writers: 4, backlog: 20_000, backlogKept: 0.25, drainTimeoutMs: 120_000 },
  // (large also offers goal 4's 5,000/s: bisection only runs below the lowest rate not kept up)
  large: { rates: [100, 500, 2000, 5000], rateSeconds: 30, searchSteps: 3, searchSeconds: 15, present: 20_000, writers: 4, backlog: 1_000_000, backlogKept: 0.25, drainTimeoutMs: 900_000 },
};

/** The bisection stops when the bracket is this narrow (changes/s). */
const SEARCH_RESOLUTION = 100;
export interface WorkerResult {
  graph: string;
  plan: WorkerPlan;
  mix: string;
  rates: RateResult[];
  /** Highest offered rate whose lag stayed bounded (fixed rates and bisection), and the highest rate the worker applied at. */
  sustained: { keptUpPerSecond: number | null; appliedPerSecond: number };
  backlog: BacklogResult;
  verify: { differences: number; pending: number } | { skipped: string };
  /** The worker's chunk bound (WorkerOptions.chunkPairs; null: off). Absent in runs before long jobs. */
  chunkPairs?: number | null;
}

/** Runs the worker benchmarks on the database at url (a loaded, refreshed graph). */
export async function measureWorkerOn(url: string, graph: string, size: Size, runVerify: boolean, chunkPairs: number | null = DEFAULT_CHUNK_PAIRS): Promise<WorkerResult> {
  const plan = WORKER_PLANS[size];
  const writers = openPool(url, { poolSize: plan.writers, applicationName: WRITER_APPLICATION_NAME });
  const observer = openPool(url, { poolSize: 1, applicationName: OBSERVER_APPLICATION_NAME });
  const bar = progress('worker end to end', plan.rates.length + plan.searchSteps + 1);
  try {
    const fixed = plan.rates.reduce((sum, rate) => sum + changesOf({ rate, seconds: plan.rateSeconds }), 0);
    const total = fixed + plan.searchSteps * changesOf({ rate: Math.max(...plan.rates), seconds: plan.searchSeconds });
    const churn = await Churn.load(writers, total, { seed: plan.present });
    const log = new BatchLog();
    const worker = new Worker({ url, pollIntervalMs: DEFAULT_POLL_INTERVAL_MS, chunkPairs });
    log.listen(worker);
    await worker.start();
    const watcher = new TokenWatcher(observer);
    // the pairs the first removals take, applied before anything is timed
    await watcher.applied(await churn.seed(writers));
    const rates: RateResult[] = [];
    let first = 0;
    try {
      const run = async (rate: number, seconds: number, search: boolean) => {
        const result = await offerRate(writers, observer, churn, watcher, log, plan, { rate, seconds, search, first });
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
    const backlog = await drainBacklog(url, observer, plan, chunkPairs, { writers, churn, first });
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
      mix: `churn: 1 in ${MEMBERSHIP_EVERY} changes adds or removes a team membership, the others share or unshare an object with a user; half additions, half removals in every phase (${plan.present} changes' pairs added first)`,
      rates,
      sustained: { keptUpPerSecond: keptUp.length ? Math.max(...keptUp) : null, appliedPerSecond: Math.max(...rates.map((r) => r.appliedPerSecond)) },
      backlog,
      verify: checked,
      chunkPairs,
    };
  } finally {
    await writers.dispose();
    await observer.dispose();
  }
}
