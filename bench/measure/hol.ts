// Head-of-line blocking: one grant that creates a huge number of rows (a big
// team granted onto a group owning many groups) while a steady stream of small
// changes flows, with the worker applied whole (chunking off, the old
// behaviour) and in chunks (sql/functions/065_long_job.sql), side by side on
// the same graph. The stream is the worker benchmark's churn (shares and
// memberships of users outside the big team, so none of it waits for the job
// by design); each change's lag is commit -> its token applied (its change
// rows gone from permgraph.changes and permgraph.long_job_changes).
//   npm run bench -- --hol [--size large] [--keep]    (saved and reported; --keep keeps its database)
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_CHUNK_PAIRS } from '../../src/constants.ts';
import { openPool, sql, type ConnectionPool, type Queryable } from '../../src/db/pool.ts';
import { applyChanges } from '../../src/engine/apply.ts';
import { applyJobChunk, type ChunkResult } from '../../src/engine/long-job.ts';
import { verify } from '../../src/engine/verify.ts';
import { Worker } from '../../src/worker/worker.ts';
import { generateCsv } from '../generate.ts';
import { loadGraph } from '../graph/load.ts';
import type { Size } from '../graph/types.ts';
import { say } from '../lib/progress.ts';
import { freshDatabase } from '../lib/server.ts';
import { round, roundSummary, summarize, type Summary } from '../lib/stats.ts';
import { TokenWatcher } from './worker/observers.ts';
import { Churn } from './worker/workload.ts';

export interface HolPlan {
  /** Members of the big team (users outside the churn's) ... */
  teamMembers: number;
  /** ... granted onto a group that owns this many groups: rows = members x (groups + 1). */
  ownedGroups: number;
  /** Small changes per second in the background, one per transaction. */
  streamPerSecond: number;
  /** The stream runs this long before the big grant, and this long after it is applied. */
  marginSeconds: number;
  /** Give up waiting for the big grant after this long. */
  timeoutMs: number;
}

export const HOL_PLANS: Record<Size, HolPlan> = {
  small: { teamMembers: 2_000, ownedGroups: 1_000, streamPerSecond: 50, marginSeconds: 5, timeoutMs: 600_000 },
  // (the issue's grant was 40M rows; 2M is what runs twice in minutes here, on a table 2.5 times larger than small's)
  large: { teamMembers: 10_000, ownedGroups: 200, streamPerSecond: 50, marginSeconds: 5, timeoutMs: 1_200_000 },
};

const WRITERS = 4;

export interface HolModeResult {
  /** The worker's chunk bound (pairs); null: off, the grant is one batch. */
  chunkPairs: number | null;
  /** Big grant committed -> its token applied. */
  bigGrantMs: number;
  /** Stream changes committed while the big grant was pending, and their lag (commit -> applied), ms. */
  during: { changes: number; lag: Summary };
  /** Every stream change of the phase. */
  all: { changes: number; lag: Summary };
  /** The longest transaction of the worker while the grant was pending (a batch or a chunk), server side, ms. */
  longestTransactionMs: number;
  /** The long job's figures (chunking on). */
  job: { chunks: number; users: number; rowsWritten: number; chunkMs: Summary; deferred: number } | null;
}

export interface HolResult {
  size: Size;
  plan: HolPlan;
  permissionsBefore: number;
  /** Rows the big grant creates. */
  bigGrantRows: number;
  modes: HolModeResult[];
  verify: { differences: number };
}

/** The big team (users the churn never picks: it takes the first by md5, the team the last) and the owned groups. */
async function buildScenario(db: Queryable, plan: HolPlan): Promise<void> {
  await db.tx(async (tx) => {
    await tx.query(sql`insert into permgraph.nodes (id, kind) values ('hol-team', 'group'), ('hol-parent', 'group')`);
    await tx.query(sql`
      insert into permgraph.nodes (id, kind, owner_id)
      select 'hol-g' || i, 'group', 'hol-parent' from generate_series(1, ${plan.ownedGroups}) i`);
    await tx.query(sql`
      insert into permgraph.grants (tail_id, head_id, level, source)
      select id, 'hol-team', 2, 'hol' from permgraph.nodes where kind = 'user' order by md5(id) desc limit ${plan.teamMembers}`);
  });
  // applied whole, before anything is measured (members x 1 row, owned groups: none yet)
  await applyChanges(db);
}

/** Commits the big grant (or its revocation); returns its token. */
async function bigGrant(db: Queryable, grant: boolean): Promise<string> {
  return db.tx(async (tx) => {
    if (grant) await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('hol-team', 'hol-parent', 1, 'hol')`);
    else await tx.query(sql`delete from permgraph.grants where tail_id = 'hol-team' and head_id = 'hol-parent'`);
    const [row] = await tx.query(sql`select permgraph.current_token() as token`);
    return row.token as string;
  });
}

/** An open-loop stream of churn changes, one per transaction, until stop(). */
class Stream {
  readonly changes: { committedAt: number; appliedAt: Promise<number> }[] = [];
  private stopped = false;
  private readonly done: Promise<void>;

  constructor(writers: ConnectionPool, churn: Churn, watcher: TokenWatcher, perSecond: number) {
    const started = performance.now();
    let next = 0;
    const writer = async () => {
      while (!this.stopped) {
        const due = started + (next * 1000) / perSecond;
        if (due > performance.now()) {
          await sleep(due - performance.now());
          continue;
        }
        const index = next++;
        const token = await churn.commit(writers, index, 1);
        this.changes.push({ committedAt: performance.now(), appliedAt: watcher.applied(token) });
      }
    };
    this.done = Promise.all(Array.from({ length: WRITERS }, writer)).then(() => {});
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }
}

async function runMode(url: string, db: ConnectionPool, writers: ConnectionPool, churn: Churn, plan: HolPlan, chunkPairs: number | null): Promise<HolModeResult> {
  const observer = openPool(url, { poolSize: 1, applicationName: 'permgraph-bench-observer' });
  const watcher = new TokenWatcher(observer);
  const transactions: { at: number; ms: number }[] = [];
  const chunks: ChunkResult[] = [];
  const worker = new Worker({ url, chunkPairs });
  worker.on('batch', (b) => transactions.push({ at: performance.now(), ms: b.ms }));
  worker.on('chunk', (c) => (chunks.push(c), transactions.push({ at: performance.now(), ms: c.ms })));
  await worker.start();
  const stream = new Stream(writers, churn, watcher, plan.streamPerSecond);
  try {
    await sleep(plan.marginSeconds * 1000);
    const token = await bigGrant(db, true);
    const committed = performance.now();
    // (the timeout's timer cancelled once the race is decided: left running,
    // it kept the process alive for up to timeoutMs after the results)
    const timeout = new AbortController();
    const applied = await Promise.race([
      watcher.applied(token),
      sleep(plan.timeoutMs, 'timeout' as const, { signal: timeout.signal }).catch(() => 'cancelled' as const),
    ]).finally(() => timeout.abort());
    if (typeof applied !== 'number') throw new Error(`hol: the big grant was not applied within ${plan.timeoutMs} ms (chunkPairs ${chunkPairs})`);
    await sleep(plan.marginSeconds * 1000);
    await stream.stop();
    const lags = await Promise.all(stream.changes.map(async (c) => ({ committedAt: c.committedAt, lag: (await c.appliedAt) - c.committedAt })));
    const during = lags.filter((l) => l.committedAt >= committed && l.committedAt <= applied);
    const job = chunkPairs === null ? null : await jobFigures(db, chunks);
    return {
      chunkPairs,
      bigGrantMs: round(applied - committed, 1),
      during: { changes: during.length, lag: roundSummary(summarize(during.map((l) => l.lag))) },
      all: { changes: lags.length, lag: roundSummary(summarize(lags.map((l) => l.lag))) },
      longestTransactionMs: round(Math.max(0, ...transactions.filter((t) => t.at >= committed && t.at <= applied + 1).map((t) => t.ms)), 1),
      job,
    };
  } finally {
    await stream.stop();
    await worker.stop();
    await watcher.stop();
    await observer.dispose(); // (was left open: one idle connection per mode until the database was dropped)
  }
}

async function jobFigures(db: Queryable, chunks: ChunkResult[]): Promise<HolModeResult['job']> {
  const [job] = await db.query(sql`select * from permgraph.long_job`);
  return {
    chunks: Number(job.chunks),
    users: Number(job.users_total),
    rowsWritten: Number(job.rows_inserted) + Number(job.rows_updated) + Number(job.rows_deleted),
    chunkMs: roundSummary(summarize(chunks.map((c) => c.ms))),
    deferred: Number(job.deferred),
  };
}

/** Takes the big grant back, applied in chunks without the stream (not measured). */
async function revokeBigGrant(db: Queryable): Promise<void> {
  await bigGrant(db, false);
  let active = (await applyChanges(db, { chunkPairs: DEFAULT_CHUNK_PAIRS })).longJobActive;
  while (active) active = !(await applyJobChunk(db)).finished;
}

/** The rows the big grant gave (nobody reaches hol-parent or what it owns otherwise). */
const grantRows = async (db: Queryable) =>
  Number((await db.query(sql`select count(*)::bigint as n from permgraph.permissions where target_id = 'hol-parent' or target_id like 'hol-g%'`))[0].n);

const count = async (db: Queryable) => Number((await db.query(sql`select count(*)::bigint as n from permgraph.permissions`))[0].n);

/** `keep`: the database is kept afterwards (the org graph with the scenario, the big grant revoked), as --keep keeps the shapes'. */
export async function measureHol(serverUrl: string, size: Size, seed: string, options: { keep?: boolean } = {}): Promise<HolResult> {
  const plan = HOL_PLANS[size];
  const graphDir = (await generateCsv('org', size, seed)).dir;
  const bdb = await freshDatabase(serverUrl, `hol_org_${size}`);
  const writers = openPool(bdb.url, { poolSize: WRITERS, applicationName: 'permgraph-bench-writer' });
  try {
    const db = bdb.db;
    const loaded = await loadGraph(db, bdb.url, graphDir);
    await buildScenario(db, plan);
    const permissionsBefore = await count(db);
    say(`hol: org ${size}, ${permissionsBefore} permission rows; hol-team (${plan.teamMembers} members) -> hol-parent (owns ${plan.ownedGroups} groups)`);
    // enough churn for both modes at the planned rate, cycled if a mode runs longer
    const churn = await Churn.load(writers, plan.streamPerSecond * 600);
    const modes: HolModeResult[] = [];
    let bigGrantRows = 0;
    for (const chunkPairs of [null, DEFAULT_CHUNK_PAIRS]) {
      say(`hol: chunking ${chunkPairs === null ? 'off (one batch)' : `on (${chunkPairs} pairs)`}, stream ${plan.streamPerSecond}/s`);
      const result = await runMode(bdb.url, db, writers, churn, plan, chunkPairs);
      bigGrantRows = await grantRows(db);
      say(`  big grant ${result.bigGrantMs} ms; stream lag during it: p50 ${result.during.lag.median} p95 ${result.during.lag.p95} p99 ${result.during.lag.p99} ms (${result.during.changes} changes)`);
      modes.push(result);
      await revokeBigGrant(db);
    }
    const { differences } = await verify(db);
    void loaded;
    return { size, plan, permissionsBefore, bigGrantRows, modes, verify: { differences: differences.length } };
  } finally {
    await writers.dispose();
    if (options.keep) {
      await bdb.db.dispose();
      say(`hol: kept the database ${bdb.name}`);
    } else {
      await bdb.drop();
    }
  }
}

export function formatHol(r: HolResult): string {
  const lag = (s: Summary) => `p50 ${round(s.median, 1)}, p95 ${round(s.p95, 1)}, p99 ${round(s.p99, 1)}, max ${round(s.max, 1)} ms`;
  return [
    `head-of-line blocking, org ${r.size} (${r.permissionsBefore} rows): one grant creating ${r.bigGrantRows} rows, stream ${r.plan.streamPerSecond} changes/s`,
    ...r.modes.map((m) => [
      `  chunking ${m.chunkPairs === null ? 'off' : `on (${m.chunkPairs} pairs)`}: big grant applied in ${(m.bigGrantMs / 1000).toFixed(1)} s; longest worker transaction ${m.longestTransactionMs} ms`,
      `    stream lag while it was pending (${m.during.changes} changes): ${lag(m.during.lag)}`,
      `    stream lag over the phase (${m.all.changes} changes): ${lag(m.all.lag)}`,
      ...(m.job ? [`    long job: ${m.job.chunks} chunks, ${m.job.users} users, ${m.job.rowsWritten} rows written, chunk ${lag(m.job.chunkMs)}, ${m.job.deferred} changes waited for it`] : []),
    ].join('\n')),
    `  verify() afterwards: ${r.verify.differences} differences`,
  ].join('\n');
}
