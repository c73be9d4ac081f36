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
}

/** Polls which committed changes have been applied; times each one. */
export class TokenWatcher {
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
        // (a long job's changes, and those waiting for it, are in long_job_changes: sql/functions/065_long_job.sql)
        const rows: { token: string }[] = await this.db.query(sql`
          select xact_id::text as token from permgraph.changes where xact_id = any(${tokens}::xid8[])
          union
          select xact_id::text from permgraph.long_job_changes where xact_id = any(${tokens}::xid8[])`);
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

/** Batches the worker applied, with their end times, to be totalled per phase. */
export class BatchLog {
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
