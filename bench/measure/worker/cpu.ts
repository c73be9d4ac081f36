// CPU time per process group over a phase of the worker benchmark, from
// /proc (a local server only): the worker's server backend, the writers'
// backends (their statements and capture triggers), the lag observer's, the
// rest of the server (WAL writer, checkpointer, autovacuum, ...), this
// Node process (writers' and worker's client side, the observer's loop),
// and the whole machine (other engineers' work included). Goal 4 puts the
// writers and the worker on the same two cores: this says who used them.
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { WORKER_APPLICATION_NAME } from '../../../src/constants.ts';
import { sql, type Queryable } from '../../../src/db/pool.ts';
import { round } from '../../lib/stats.ts';

/** application_name of the benchmark's writer and observer pools (phases.ts / index.ts). */
export const WRITER_APPLICATION_NAME = 'permgraph-bench-writer';
export const OBSERVER_APPLICATION_NAME = 'permgraph-bench-observer';

type Group = 'worker' | 'writers' | 'observer' | 'otherServer';

export interface CpuUse {
  /** Wall time of the phase (s). */
  seconds: number;
  /** CPU seconds of each group over the phase (null: /proc not readable, e.g. a remote server). */
  workerBackendS: number | null;
  writerBackendsS: number | null;
  observerBackendS: number | null;
  otherServerS: number | null;
  benchProcessS: number;
  /** All CPU time the machine spent (every process, other users' too) and its cores. */
  machineBusyS: number | null;
  cores: number;
}

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** utime + stime of a process in seconds, null when unreadable. */
function processCpuS(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after the command name (which may hold spaces) in parentheses
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
  } catch {
    return null;
  }
}

function machineBusyS(): number | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] as string;
    const [user, nice, system, , , irq, softirq, steal] = line.split(/\s+/).slice(1).map(Number) as number[];
    return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / TICKS_PER_SECOND;
  } catch {
    return null;
  }
}

async function serverPids(db: Queryable): Promise<Map<number, Group>> {
  // (every process of the server: client backends and background ones)
  const rows: { pid: number; application_name: string | null }[] = await db.query(sql`
    select pid, application_name from pg_stat_activity`);
  const groupOf: Record<string, Group> = {
    [WORKER_APPLICATION_NAME]: 'worker', [WRITER_APPLICATION_NAME]: 'writers', [OBSERVER_APPLICATION_NAME]: 'observer',
  };
  return new Map(rows.map((r) => [r.pid, groupOf[r.application_name ?? ''] ?? 'otherServer']));
}

/** Starts measuring; stop() returns each group's CPU seconds since. */
export async function startCpuMeter(db: Queryable): Promise<{ stop(): Promise<CpuUse> }> {
  const started = performance.now();
  const startPids = await serverPids(db);
  const before = new Map<number, number | null>([...startPids.keys()].map((pid) => [pid, processCpuS(pid)]));
  const benchBefore = process.cpuUsage();
  const machineBefore = machineBusyS();
  return {
    async stop(): Promise<CpuUse> {
      const seconds = (performance.now() - started) / 1000;
      const pids = await serverPids(db);
      for (const [pid, group] of startPids) if (!pids.has(pid)) pids.set(pid, group);
      const totals: Record<Group, number | null> = { worker: 0, writers: 0, observer: 0, otherServer: 0 };
      for (const [pid, group] of pids) {
        const now = processCpuS(pid);
        if (now === null) {
          if (!before.has(pid)) continue; // gone before we saw it
          totals[group] = null;           // gone during the phase, or /proc unreadable
          continue;
        }
        // a backend that connected during the phase counts from its start
        const then = before.has(pid) ? before.get(pid) : 0;
        if (then === null || then === undefined || totals[group] === null) totals[group] = null;
        else totals[group] = (totals[group] as number) + (now - then);
      }
      const bench = process.cpuUsage(benchBefore);
      const machineAfter = machineBusyS();
      const r = (v: number | null) => (v === null ? null : round(v, 2));
      return {
        seconds: round(seconds, 2),
        workerBackendS: r(totals.worker),
        writerBackendsS: r(totals.writers),
        observerBackendS: r(totals.observer),
        otherServerS: r(totals.otherServer),
        benchProcessS: round((bench.user + bench.system) / 1e6, 2),
        machineBusyS: machineBefore === null || machineAfter === null ? null : round(machineAfter - machineBefore, 2),
        cores: cpus().length,
      };
    },
  };
}
