// Worker end to end (src/worker): lag at offered change rates, the sustained
// rate, and memory while draining a backlog. Runs on a loaded graph (org by
// default); every change adds a member to a team the user could not see yet,
// so "applied" is observable as the new (user, team) row in permissions.
import { openPool, sql, type ConnectionPool, type Queryable } from '../src/db/pool.ts';
import { Worker } from '../src/worker/worker.ts';
import type { Size } from './graph/types.ts';
import { progress } from './lib/progress.ts';
import { round, roundSummary, summarize, type Summary } from './lib/stats.ts';

export interface WorkerPlan {
  rates: number[];
  rateSeconds: number;
  sustainedSeconds: number;
  backlog: number;
}

export const WORKER_PLANS: Record<Size, WorkerPlan> = {
  small: { rates: [10, 100], rateSeconds: 2, sustainedSeconds: 2, backlog: 1000 },
  large: { rates: [10, 100, 300], rateSeconds: 5, sustainedSeconds: 5, backlog: 5000 },
};

export interface RateResult {
  offeredPerSecond: number;
  achievedPerSecond: number;
  changes: number;
  /** Commit of the change to its row being visible to another session; ms. */
  lag: Summary;
  /** Batches the worker applied during this phase, by mode (incremental / full). */
  batchModes: Record<string, number>;
}

export interface WorkerResult {
  graph: string;
  rates: RateResult[];
  sustained: { changes: number; seconds: number; writerPerSecond: number; appliedPerSecond: number; drainAfterMs: number; batchModes: Record<string, number> };
  backlog: { changes: number; drainMs: number; batches: number; modes: Record<string, number>; rssDeltaMiB: number; heapDeltaMiB: number };
}

type Pair = [string, string];

/** Distinct (user, team) pairs with no permission row yet, deterministic order. */
async function freshPairs(db: Queryable, count: number): Promise<Pair[]> {
  const rows: { u: string; t: string }[] = await db.query(sql`
    select u.id as u, t.id as t
    from (select id from permgraph.nodes where kind = 'user' and id like 'u%' order by md5(id) limit 400) u
    cross join (select id from permgraph.nodes where kind = 'group' and id like 't%' order by md5(id) limit 200) t
    where not exists (select 1 from permgraph.permissions p where p.user_id = u.id and p.target_id = t.id)
    order by md5(u.id || t.id) limit ${count}`);
  return rows.map((r): Pair => [r.u, r.t]);
}

const addMember = (db: Queryable, [u, t]: Pair) =>
  db.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values (${u}, ${t}, 1, 'bench-worker')`);

/** Polls until every pair has a row; resolves with each pair's visibility time (performance.now()). */
class Watcher {
  private readonly pending = new Map<string, Pair>();
  private readonly seen = new Map<string, number>();
  private running = true;
  private readonly loop: Promise<void>;

  constructor(private readonly db: Queryable) {
    this.loop = this.poll();
  }

  watch(pair: Pair): void {
    this.pending.set(`${pair[0]}/${pair[1]}`, pair);
  }

  visibleAt(pair: Pair): number | undefined {
    return this.seen.get(`${pair[0]}/${pair[1]}`);
  }

  async drained(timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    while (this.pending.size > 0 && performance.now() < deadline) await sleep(5);
    return this.pending.size === 0;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  private async poll(): Promise<void> {
    while (this.running) {
      const pairs = [...this.pending.values()].slice(0, 5000);
      if (pairs.length > 0) {
        const rows: { u: string; t: string }[] = await this.db.query(sql`
          select p.user_id as u, p.target_id as t from permgraph.permissions p
          join unnest(${pairs.map((p) => p[0])}::text[], ${pairs.map((p) => p[1])}::text[]) as x(u, t)
            on p.user_id = x.u and p.target_id = x.t`);
        const now = performance.now();
        for (const row of rows) {
          const key = `${row.u}/${row.t}`;
          if (this.pending.delete(key)) this.seen.set(key, now);
        }
      }
      await sleep(2);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Counts the worker's batches by mode; take() returns the counts so far and starts again. */
class BatchCounter {
  private modes: Record<string, number> = {};

  constructor(worker: Worker) {
    worker.on('batch', (batch) => {
      this.modes[batch.mode] = (this.modes[batch.mode] ?? 0) + 1;
    });
  }

  take(): Record<string, number> {
    const modes = this.modes;
    this.modes = {};
    return modes;
  }
}

async function offeredRate(writer: ConnectionPool, watcher: Watcher, pairs: Pair[], rate: number, seconds: number): Promise<Omit<RateResult, 'batchModes'>> {
  const count = Math.max(1, Math.round(rate * seconds));
  const batch = pairs.splice(0, count);
  const committed: number[] = [];
  const started = performance.now();
  for (let i = 0; i < batch.length; i++) {
    const due = started + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    await addMember(writer, batch[i] as Pair);
    committed.push(performance.now());
    watcher.watch(batch[i] as Pair);
  }
  const achieved = batch.length / ((performance.now() - started) / 1000);
  await watcher.drained(60_000);
  const lags = batch.map((pair, i) => (watcher.visibleAt(pair) ?? Number.NaN) - (committed[i] as number)).filter(Number.isFinite);
  return { offeredPerSecond: rate, achievedPerSecond: round(achieved, 1), changes: batch.length, lag: roundSummary(summarize(lags)) };
}

async function sustained(writer: ConnectionPool, watcher: Watcher, pairs: Pair[], seconds: number): Promise<Omit<WorkerResult['sustained'], 'batchModes'>> {
  const started = performance.now();
  const deadline = started + seconds * 1000;
  let changes = 0;
  while (performance.now() < deadline && pairs.length > 0) {
    const pair = pairs.shift() as Pair;
    await addMember(writer, pair);
    watcher.watch(pair);
    changes++;
  }
  const writerDone = performance.now();
  await watcher.drained(120_000);
  const drained = performance.now();
  return {
    changes,
    seconds: round((writerDone - started) / 1000, 2),
    writerPerSecond: round(changes / ((writerDone - started) / 1000), 1),
    appliedPerSecond: round(changes / ((drained - started) / 1000), 1),
    drainAfterMs: round(drained - writerDone, 1),
  };
}

async function backlog(url: string, writer: ConnectionPool, pairs: Pair[], count: number): Promise<WorkerResult['backlog']> {
  const chosen = pairs.splice(0, count);
  await writer.tx(async (tx) => {
    for (const pair of chosen) await addMember(tx, pair);
  });
  const modes: Record<string, number> = {};
  let batches = 0;
  global.gc?.();
  const before = process.memoryUsage();
  let peakRss = before.rss;
  let peakHeap = before.heapUsed;
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed);
  }, 20);
  const worker = new Worker({ url, pollIntervalMs: 50 });
  const started = performance.now();
  worker.on('batch', (b) => {
    batches++;
    modes[b.mode] = (modes[b.mode] ?? 0) + 1;
  });
  await worker.start();
  const watcher = new Watcher(writer);
  for (const pair of chosen) watcher.watch(pair);
  await watcher.drained(600_000);
  const drainMs = performance.now() - started;
  await watcher.stop();
  await worker.stop();
  clearInterval(sampler);
  const mib = (bytes: number) => round(bytes / 2 ** 20, 1);
  return { changes: chosen.length, drainMs: round(drainMs, 1), batches, modes, rssDeltaMiB: mib(peakRss - before.rss), heapDeltaMiB: mib(peakHeap - before.heapUsed) };
}

/** Runs the worker benchmarks on the database at url (a loaded, refreshed graph). */
export async function measureWorkerOn(url: string, graph: string, size: Size): Promise<WorkerResult> {
  const plan = WORKER_PLANS[size];
  const writer = openPool(url, { poolSize: 2, applicationName: 'permgraph-bench-writer' });
  const bar = progress('worker end to end', plan.rates.length + 2);
  try {
    const needed = plan.rates.reduce((sum, r) => sum + r * plan.rateSeconds, 0) + 2000 * plan.sustainedSeconds + plan.backlog;
    const pairs = await freshPairs(writer, needed);
    const worker = new Worker({ url, pollIntervalMs: 1000 });
    const counter = new BatchCounter(worker);
    await worker.start();
    const watcher = new Watcher(writer);
    const rates: RateResult[] = [];
    try {
      for (const rate of plan.rates) {
        counter.take();
        const result = await offeredRate(writer, watcher, pairs, rate, plan.rateSeconds);
        rates.push({ ...result, batchModes: counter.take() });
        bar.tick();
      }
      const sustainedResult = { ...(await sustained(writer, watcher, pairs, plan.sustainedSeconds)), batchModes: counter.take() };
      bar.tick();
      await watcher.stop();
      await worker.stop();
      const backlogResult = await backlog(url, writer, pairs, Math.min(plan.backlog, pairs.length));
      bar.done();
      return { graph, rates, sustained: sustainedResult, backlog: backlogResult };
    } finally {
      await watcher.stop();
      await worker.stop();
    }
  } finally {
    await writer.dispose();
  }
}
