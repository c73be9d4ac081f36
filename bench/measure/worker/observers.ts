// What a worker benchmark watches: when each change's token is applied, the
// batches the worker reports, memory of this process and of the worker's
// server backend, and temporary files.
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BatchResult } from '../../../src/engine/apply.ts';
import { WORKER_APPLICATION_NAME } from '../../../src/constants.ts';
import { sql, type Queryable } from '../../../src/db/pool.ts';
import type { Worker } from '../../../src/worker/worker.ts';
import { round } from '../../lib/stats.ts';

export interface BatchTotals {
  count: number;
  modes: Record<string, number>;
  changes: number;
  rowsWritten: number;
  /** Time spent inside apply_changes (server side). */
  busyMs: number;
  /** The longest batch (server side; absent in runs before it was kept). */
  longestMs?: number;
  /** Chunks of long jobs applied meanwhile, and their time inside apply_job_chunk (absent in runs before they were counted). */
  chunks?: { count: number; busyMs: number; maxMs: number };
}

/** Up to this many outstanding tokens, a poll probes them all at once. */
const PROBE_ALL_UP_TO = 50;

/**
 * Polls which committed changes have been applied; times each one.
 *
 * A token counts as applied once no change row of its transaction is left
 * in permgraph.changes or permgraph.long_job_changes (a long job's changes,
 * and those waiting for it: sql/functions/065_long_job.sql). Every token is
 * seen applied at the first poll after the transaction that applied it,
 * however many are outstanding. (A poll used to probe only the oldest 50,
 * so a backlog of N tokens applied by one batch took N / 50 polls to be
 * seen, and the later ones' lag grew with the backlog.)
 *
 * Up to PROBE_ALL_UP_TO outstanding tokens, a poll probes them all in one
 * query. Beyond that it stays exact without probing them all at every poll
 * (200 per 10 ms took server CPU the worker needed: bench/FINDINGS.md 8):
 * change rows go only in a transaction that applies them, and each such
 * transaction updates permgraph.applier_state (every batch that writes, at
 * its end: 060_apply.sql, 170_changes.sql) or permgraph.long_job (the chunk
 * that ends a job). Their rows' versions (xmin) are the poll's marker. A
 * poll reads the marker and probes the tokens added since the last poll;
 * only when the marker has moved while older tokens wait are all
 * outstanding tokens probed again. So each token is probed once when it
 * arrives and once per applying transaction while it waits. With no token
 * outstanding the watcher sends nothing. (A horizon of the lowest pending
 * transaction id alone would not be exact: a long job's change keeps the
 * lowest id pending while later ones are applied, as in --hol.)
 *
 * A token is timed at the moment the answer that showed it applied came
 * back (its snapshot is no later), or, when the full probe found the marker
 * unchanged since the poll before it, at that poll's answer: whatever
 * applied it had committed by then.
 */
export class TokenWatcher {
  /** Outstanding tokens, oldest first, each with its place in the order of registration. */
  private readonly pending = new Map<string, { resolve: (appliedAt: number) => void; order: number }>();
  private registered = 0;
  /** Outstanding tokens not probed yet. */
  private fresh: string[] = [];
  /** The marker of the snapshot in which every outstanding token not in fresh was last seen pending. */
  private marker: string | null = null;
  private running = true;
  private readonly loop: Promise<void>;

  constructor(private readonly db: Queryable, private readonly intervalMs = 10, private readonly probeAllUpTo = PROBE_ALL_UP_TO) {
    this.loop = this.poll();
  }

  /** Resolves with the time (performance.now()) the token was first seen applied. */
  applied(token: string): Promise<number> {
    return new Promise((resolve) => {
      this.pending.set(token, { resolve, order: this.registered++ });
      this.fresh.push(token);
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  private async poll(): Promise<void> {
    while (this.running) {
      if (this.pending.size > 0 && this.pending.size <= this.probeAllUpTo) {
        // few outstanding: all of them in one query, as cheap as the marker's
        const all = [...this.pending.keys()];
        this.fresh = [];
        const seen = await this.probe(all);
        this.resolve(all, seen.waiting, seen.at);
        this.marker = seen.marker;
      } else if (this.pending.size > 0) {
        // (every token registered before this poll's first query was committed before its snapshot)
        const before = this.registered;
        const fresh = this.fresh;
        this.fresh = [];
        const older = this.pending.size - fresh.length;
        const first = await this.probe(fresh);
        this.resolve(fresh, first.waiting, first.at);
        if (older > 0 && first.marker !== this.marker) {
          // something was applied since the older tokens were seen pending: any of them may be
          const known = [...this.pending].filter(([, p]) => p.order < before).map(([token]) => token);
          const full = await this.probe(known);
          this.resolve(known, full.waiting, full.marker === first.marker ? first.at : full.at);
          this.marker = full.marker;
        } else {
          this.marker = first.marker;
        }
      }
      await sleep(this.intervalMs);
    }
  }

  /** The marker and, of `tokens`, those still pending, in one snapshot; `at`: when the answer came back. */
  private async probe(tokens: string[]): Promise<{ marker: string; waiting: Set<string>; at: number }> {
    const rows: { marker: string; waiting: string[] }[] = await this.db.query(sql`
      select coalesce((select xmin::text from permgraph.applier_state), '-') || '/' || coalesce((select xmin::text from permgraph.long_job), '-') as marker,
             array(select t::text from unnest(${tokens}::xid8[]) t
                   where exists (select 1 from permgraph.changes c where c.xact_id = t)
                      or exists (select 1 from permgraph.long_job_changes l where l.xact_id = t)) as waiting`);
    const at = performance.now();
    const row = rows[0] as { marker: string; waiting: string[] };
    return { marker: row.marker, waiting: new Set(row.waiting), at };
  }

  private resolve(tokens: string[], waiting: Set<string>, at: number): void {
    for (const token of tokens) {
      if (waiting.has(token)) continue;
      this.pending.get(token)?.resolve(at);
      this.pending.delete(token);
    }
  }
}

/** Batches the worker applied, with their end times, to be totalled per phase. */
export class BatchLog {
  private readonly batches: { at: number; result: BatchResult }[] = [];
  private readonly chunks: { at: number; ms: number }[] = [];

  listen(worker: Worker): void {
    worker.on('batch', (result) => this.batches.push({ at: performance.now(), result }));
    worker.on('chunk', (chunk) => this.chunks.push({ at: performance.now(), ms: chunk.ms }));
  }

  totals(from: number, to: number): BatchTotals {
    const totals: BatchTotals = { count: 0, modes: {}, changes: 0, rowsWritten: 0, busyMs: 0, longestMs: 0 };
    for (const { at, result } of this.batches) {
      if (at < from || at > to) continue;
      totals.count++;
      totals.modes[result.mode] = (totals.modes[result.mode] ?? 0) + 1;
      totals.changes += result.changes;
      totals.rowsWritten += result.inserted + result.updated + result.deleted;
      totals.busyMs += result.ms;
      totals.longestMs = Math.max(totals.longestMs ?? 0, result.ms);
    }
    totals.busyMs = round(totals.busyMs, 1);
    const chunks = this.chunks.filter(({ at }) => at >= from && at <= to);
    totals.chunks = {
      count: chunks.length,
      busyMs: round(chunks.reduce((sum, c) => sum + c.ms, 0), 1),
      maxMs: round(chunks.reduce((max, c) => Math.max(max, c.ms), 0), 1),
    };
    return totals;
  }

  /** Every batch and chunk that ended between from and to: when it ended (ms after from), which, and its server ms. */
  timeline(from: number, to: number): [endedMs: number, step: 'batch' | 'chunk', ms: number][] {
    const steps: [number, 'batch' | 'chunk', number][] = [
      ...this.batches.map(({ at, result }) => [at, 'batch', result.ms] as [number, 'batch', number]),
      ...this.chunks.map(({ at, ms }) => [at, 'chunk', ms] as [number, 'chunk', number]),
    ];
    return steps
      .filter(([at]) => at >= from && at <= to)
      .sort((a, b) => a[0] - b[0])
      .map(([at, step, ms]) => [round(at - from, 0), step, round(ms, 1)]);
  }
}

/** Samples memory of this process and of the worker's server backend. */
export class MemorySampler {
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
      select pid from pg_stat_activity where application_name = ${WORKER_APPLICATION_NAME} and datname = current_database()`);
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

export async function tempBytes(db: Queryable): Promise<number> {
  const [row] = await db.query(sql`select temp_bytes from pg_stat_database where datname = current_database()`);
  return Number(row?.temp_bytes ?? 0);
}
