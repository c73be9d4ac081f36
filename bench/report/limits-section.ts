// The report's section on what limits each goal of issue 12 that a run
// missed. Where the run itself measured the limit (the CPU every change
// costs in the worker phases, the floors beside each measure), the figures
// come from it; the rest summarizes the profiles in bench/FINDINGS.md,
// which each line names.
import type { BacklogResult, RateResult } from '../measure/worker/phases.ts';
import { newestPhase, type Runs } from './provenance.ts';
import { formatValue } from './svg.ts';

const ms = (v: number) => formatValue(v, 'ms');
/** CPU seconds per change, in µs. */
export const us = (seconds: number) => `${Math.round(seconds * 1e6).toLocaleString('en-US')} µs`;

/** CPU per change of a rate phase, by group; null where /proc was not readable. */
export function cpuPerChange(r: RateResult): { worker: number; writers: number; client: number; observer: number; total: number } | null {
  const c = r.cpu;
  if (!c || c.workerBackendS === null || c.writerBackendsS === null || r.changes === 0) return null;
  const worker = c.workerBackendS / r.changes;
  const writers = c.writerBackendsS / r.changes;
  const client = c.benchProcessS / r.changes;
  const observer = (c.observerBackendS ?? 0) / r.changes;
  return { worker, writers, client, observer, total: worker + writers + client + observer };
}

/** Goal 4: the rate the measured CPU per change allows on the run's cores, from the fastest phase kept up. */
function throughputLimit(rates: RateResult[], goal: number): string | null {
  const measured = rates.flatMap((r) => {
    const cpu = cpuPerChange(r);
    return cpu ? [{ r, cpu }] : [];
  });
  const keptUp = measured.filter((m) => m.r.keptUp).sort((a, b) => b.r.offeredPerSecond - a.r.offeredPerSecond)[0];
  if (!keptUp) return null;
  const { r: kept, cpu } = keptUp;
  const cores = kept.cpu!.cores;
  const ceiling = Math.round(cores / cpu.total);
  const budget = Math.round((cores / goal) * 1e6);
  // The worker applies on one server backend: at most one core, whatever the machine has.
  const { r: fastest, cpu: { worker: workerAtFastest } } = measured.sort((a, b) => b.r.appliedPerSecond - a.r.appliedPerSecond)[0]!;
  const oneCore = Math.round(1 / workerAtFastest);
  const workerShare = fastest.cpu!.workerBackendS! / fastest.cpu!.seconds;
  return `**Goal 4 (throughput): CPU per change, and the worker's one core.** At ${kept.offeredPerSecond.toLocaleString('en-US')} changes/s (the fastest phase kept up, ${kept.changesPerTransaction} changes per writer transaction) every change cost ${us(cpu.total)} of CPU: the worker's server backend ${us(cpu.worker)} (its batches: region, recomputation, diff, writes), the writers' backends ${us(cpu.writers)} (the INSERT or DELETE, its statement triggers: validation, the edge, the change row, the audit row, and the commit), this benchmark's Node process ${us(cpu.client)} (the writers' and the worker's client side) and the lag observer ${us(cpu.observer)}. ${cores} cores at that cost carry about ${ceiling.toLocaleString('en-US')} changes/s, which is where lag stops staying bounded; ${goal.toLocaleString('en-US')}/s needs ${budget} µs per change for all of them together. A writer that commits one change per transaction pays its statement and commit per change; when writers fall behind and commit several per transaction, their share per change falls (the 5,000/s phase), and the worker's batches grow (bench/FINDINGS.md 21, 22, 31). Above that the worker itself is the limit: it applies on one server backend, so on one core at most. In the phase that applied the most (${fastest.appliedPerSecond.toLocaleString('en-US')}/s, offered ${fastest.offeredPerSecond.toLocaleString('en-US')}/s) its backend was busy ${Math.round(workerShare * 100)}% of a core at ${us(workerAtFastest)} per change (${Math.round(fastest.changes / Math.max(1, fastest.batches.count)).toLocaleString('en-US')} changes a batch on average), which one core turns into about ${oneCore.toLocaleString('en-US')} changes/s; ${goal.toLocaleString('en-US')}/s needs the worker at ${Math.round(1e6 / goal)} µs per change or less.`;
}

/**
 * Goal 4 against what the table must hold: the permission rows the rate
 * phases' incremental batches wrote per change, at the goal's rate, as a
 * share of one backend writing rows at the write floor measured in the same
 * run (INSERT … SELECT into the table's indexes, the cheapest way to write
 * them). Phases with a full recomputation are left out: its rows are the
 * whole table's, not the changes'.
 */
function writeFloorBound(rates: RateResult[], floorRowsPerSecond: number | null, goal: number): string | null {
  const incremental = rates.filter((r) => Object.keys(r.batches.modes).every((mode) => mode === 'incremental') && r.changes > 0);
  const changes = incremental.reduce((sum, r) => sum + r.changes, 0);
  if (!floorRowsPerSecond || changes === 0) return null;
  const perChange = incremental.reduce((sum, r) => sum + r.batches.rowsWritten, 0) / changes;
  const rowsPerSecond = goal * perChange;
  return ` The rows themselves bound it too: these phases' batches wrote ${perChange.toFixed(1)} permission rows per change (inserted, updated or deleted: a membership brings or takes the team's whole closure), so ${goal.toLocaleString('en-US')} changes/s are ${Math.round(rowsPerSecond).toLocaleString('en-US')} rows/s, ${Math.round((rowsPerSecond / floorRowsPerSecond) * 100)}% of the ${Math.round(floorRowsPerSecond).toLocaleString('en-US')} rows/s one backend inserts at the write floor of the same run (INSERT … SELECT into the same indexes). Deleting a row costs less than inserting one (no index entry is written), but the worker must also find every row it writes, and the writers and this benchmark's clients share the same ${rates[0]?.cpu?.cores ?? 2} cores.`;
}

/**
 * check()'s server-side medians (every shape and size) of the clean runs on
 * each machine, in the order the machines were first used: the machine,
 * its runs, and the lowest and highest median.
 */
function checkByMachine(runs: Runs): { machine: string; runs: number; min: number; max: number }[] {
  const byMachine = new Map<string, { runs: number; values: number[] }>();
  for (const { run } of runs) {
    if (run.git.dirty !== false) continue;
    const values = run.shapes.flatMap((s) => (s.reads ? [s.reads.check.server.permgraph.median] : []));
    if (!values.length) continue;
    const entry = byMachine.get(run.machine.platform) ?? { runs: 0, values: [] };
    entry.runs += 1;
    entry.values.push(...values);
    byMachine.set(run.machine.platform, entry);
  }
  return [...byMachine].map(([machine, { runs: n, values }]) => ({ machine, runs: n, min: Math.min(...values), max: Math.max(...values) }));
}

/** The check() goal on the machine of the newest runs, beside the machine before it. */
function checkLimit(runs: Runs, goalMs: number): string | null {
  const machines = checkByMachine(runs);
  const now = machines.at(-1);
  if (!now || now.max <= goalMs) return null;
  const before = machines.at(-2);
  const range = (m: { min: number; max: number }) => `${Math.round(m.min * 1000)}–${Math.round(m.max * 1000)} µs`;
  return `**check() < ${Math.round(goalMs * 1000)} µs: the machine.** On the machine of the newest runs (${now.machine}, ${now.runs} runs) check() read ${range(now)} server-side${before ? `; on the machine before it (${before.machine}, ${before.runs} runs) ${range(before)}. bench/FINDINGS.md 44 compares the two on code with the same check(): about 3× slower here, as is every fixed cost of a statement` : ''}. A check is a handful of primary-key probes, each its own statement in PL/pgSQL; starting those statements' plans is ~40% of its CPU, the probes themselves ~12% (FINDINGS 44), and one statement for the whole check was slower still (FINDINGS 42).`;
}

/** What the run measured that the section cites: the worker phases on org large, and the first pages timed in the server. */
export interface LimitInputs {
  largeOrgRates: RateResult[] | null;
  /** Rows per second of org large's write floor (the refresh phase of the same run). */
  largeOrgFloorRowsPerSecond: number | null;
  sustainedGoal: number;
  /** The check() goal, server side, ms. */
  checkGoalMs: number;
  /** Server-side medians of every first page measured (list_rows and list_targets, heaviest users, every shape), ms. */
  firstPagesServerMs: number[];
  /** check()'s server-side median of each shape in the report, ms: the paragraph on it only when one misses the goal. */
  checkServerMs: number[];
  /** Each shape's refresh-that-changes-nothing ÷ write floor, and its goal: the paragraph on it only when one misses. */
  noopVsFloor: number[];
  noopGoal: number;
  /** Org large's local changes: their p99, and the p99 of the same samples' server side (null: not recorded). */
  largeOrgLocalTail: LocalTail | null;
  /** Org large's backlog phase: the paragraph on goal 5 for a backlog only when its fresh writes' p99 misses 1 s. */
  largeOrgBacklog: BacklogResult | null;
}

/**
 * Goal 5 for a backlog: what fresh writes waited for while a worker caught
 * up. Null when the run measured none, or their p99 met the goal.
 */
function backlogLimit(b: BacklogResult): string | null {
  const fresh = b.fresh;
  if (!fresh || fresh.lag.p99 <= 1000) return null;
  const chunks = b.batches.chunks;
  const longest = b.batches.longestMs;
  return `**Goal 5 for a backlog (writes during a catch-up, lag p99 ≤ 1 s).** A worker started on ${b.changes.toLocaleString('en-US')} queued changes ${chunks?.count ? `handed them to a long job and drained it in ${ms(b.drainMs)} (${chunks.count} chunks, the longest ${ms(chunks.maxMs)})` : `drained them in ${ms(b.drainMs)}`}; a write committed every ${fresh.intervalMs} ms meanwhile waited a median ${ms(fresh.lag.median)}, p99 ${ms(fresh.lag.p99)}. ${longest === undefined ? '' : `The longest batch is the one that takes the backlog, ${ms(longest)}: `}every write committed while it runs waits for it. Its time moves by up to 2.6× between runs of nearly the same SQL (0.58-1.53 s, the slowest in a slow hour): it is the first read of the rows just committed, and sets their hint bits, a full-page image per page with data checksums on (FINDINGS 54, 56, 57).${slowestWrite(b)} That batch leaves the change rows where they are, hidden from later batches, and keeps one row per changed edge's tail for their tokens (bench/FINDINGS.md 53; moving each row into the job's table took 8-14 s a million); it reads them once, grouped by tail, having counted the queue only up to the batch's limit (FINDINGS 54), and walks up to the backlog's users. After it, a write waits for the batch that defers it and for the chunks of the users that it and the writes before it touch (oldest first; a chunk that holds an eighth of its bound ends with the write it is on, FINDINGS 57), each chunk at most the chunk bound and one user, recomputed from scratch (FINDINGS 52, 56). Such a user's rows, rewritten with all the backlog changed in them, take a chunk of their own, and while most users wait for the job nearly every write touches one. Less would need those rows written cheaper (inserting them into the table's two indexes is most of a chunk) or a write's own pairs made right before its users' other rows.`;
}

/** Where the slowest fresh write of a catch-up waited, from the run's timeline (empty when the run has none). */
function slowestWrite(b: BacklogResult): string {
  const writes = b.fresh?.writes;
  const took = b.timeline?.find(([, step]) => step === 'batch');
  if (!writes?.length || !took) return '';
  const [at, lag] = writes.reduce((worst, w) => (w[1] > worst[1] ? w : worst));
  const [tookEnded] = took;
  if (at > tookEnded) {
    // (what the worker ran between its commit and its token applied: the
    // first of them may have started before the commit)
    const meanwhile = (b.timeline ?? []).filter(([ended]) => ended > at && ended <= at + lag);
    const of = (kind: string) => meanwhile.filter(([, step]) => step === kind);
    const total = (steps: typeof meanwhile) => ms(steps.reduce((sum, [, , took]) => sum + took, 0));
    return ` The slowest write, committed ${ms(at)} after the worker started, after that batch, waited ${ms(lag)}: meanwhile the worker ended ${of('chunk').length} chunks (${total(of('chunk'))} in all) and ${of('batch').length} batches (${total(of('batch'))}).`;
  }
  return ` The slowest write, committed ${ms(at)} after the worker started, waited ${ms(lag)}: ${ms(tookEnded - at)} for that batch, then ${ms(at + lag - tookEnded)} for the batch that deferred it and the chunks of its users.`;
}

export interface LocalTail {
  p99: number;
  serverP99: number | null;
  goal: number;
}

/**
 * Goal 1's p99, when missed: whether the slowest changes were slow in
 * their statement or waited outside it (the commit's flush, the client).
 */
function localTailLimit({ p99, serverP99, goal }: LocalTail): string {
  const side = serverP99 === null
    ? 'This run did not record the server side of each sample.'
    : serverP99 * 2 <= p99
      ? `The server side of the same samples has a p99 of ${ms(serverP99)}: the slowest changes waited outside their statement, in their commit's flush or in this 2-core machine's clients, not in the engine.`
      : `The server side of the same samples has a p99 of ${ms(serverP99)}: the slowest changes were slow in their statement.`;
  return ` Its p99 on org large, ${ms(p99)}, is over the goal's ${goal} ms. ${side}`;
}

export function limitsSection(runs: Runs, { largeOrgRates, largeOrgFloorRowsPerSecond, sustainedGoal, checkGoalMs, firstPagesServerMs, checkServerMs, noopVsFloor, noopGoal, largeOrgLocalTail, largeOrgBacklog }: LimitInputs): string[] {
  const lines = ['## What limits the goals missed', ''];
  lines.push('**Goal 1 (a local change ≤ 4× a one-row commit).** A local change is one statement on the server, one round trip and one commit, like the floor; what the floor does not have is the statement. Profiled on org small (bench/FINDINGS.md 27): the round trip ~0.18 ms and the commit\'s flush ~0.4 ms (the floor\'s own costs), the call around the statement ~0.1 ms, the statement\'s fixed part 0.23 ms (0.31 ms for a batch that only adds: starting a plan of some hundred nodes, the checks that the path fits), and its work 0.5–1.5 ms for a region of 11–40 pairs (walks, diff and writes at 10–30 µs a pair, each a probe or an index entry). So 4× a 0.43–0.6 ms floor leaves ~1 ms for the statement, which a region of ~30 pairs already takes. Most of the statement\'s fixed part is starting its plan: in a profile of a backend applying local batches, the executor\'s start-up is 17% of its CPU, ~0.3 ms a batch, which a cached plan does not save (bench/FINDINGS.md 37). Write + apply adds the change\'s own commit, which is no plain INSERT either: the grant is validated, and writes its edge, a change row and an audit row (see goal 3), ~140 µs of statement triggers on a one-row write (FINDINGS 37); 6× leaves it ~0.5 ms.' + (largeOrgLocalTail && largeOrgLocalTail.p99 > largeOrgLocalTail.goal ? localTailLimit(largeOrgLocalTail) : ''), '');
  const capture = newestPhase(runs, 'capture')?.result;
  lines.push(`**Goal 3 (bulk insert ≤ 2× no triggers).** ${capture ? `Measured ${capture.ratio}×${capture.ratioWithoutAudit ? `, ${capture.ratioWithoutAudit}× with the audit log off (same rounds)` : ''}. ` : ''}The grants are not the only rows written: each also writes an edge and a change row, and, with the audit log on (the default), an audit row; four tables and eleven index entries against one table and two. On 100,000 grants (bench/FINDINGS.md 30, 41): the plain INSERT is mostly its foreign-key checks, which the grants pay too; capture adds the edges (a heap and two indexes) and the change rows, about as much as the plain INSERT's own rows and checks; the audit rows add a table with five indexes. The same code read 1.96–2.44× in seven runs on this host (stops 35 and 36). What would meet the goal is one table's writes fewer: without the audit rows, or without the audit log's four secondary indexes (1.7–1.9×), but those indexes are the log's reads by actor, node and time, and the cheaper kinds measured (GIN for nodes, BRIN for time) trade them (finding 41).`, '');
  const throughput = largeOrgRates ? throughputLimit(largeOrgRates, sustainedGoal) : null;
  if (throughput) lines.push(throughput + (writeFloorBound(largeOrgRates!, largeOrgFloorRowsPerSecond, sustainedGoal) ?? ''), '');
  const backlog = largeOrgBacklog ? backlogLimit(largeOrgBacklog) : null;
  if (backlog) lines.push(backlog, '');
  const pages = firstPagesServerMs.length ? `${ms(Math.min(...firstPagesServerMs))}–${ms(Math.max(...firstPagesServerMs))}` : 'not measured';
  lines.push(`**Goal 6 (first page ≤ 2 ms).** The first pages measured ${pages} on the server for the heaviest users of these runs (the "server side" rows in the details); the client medians add the round trip and, on this 2-core machine, the wait for a core, and move by ±1 ms between runs of the same code (bench/FINDINGS.md 24, 27). What the functions add over the page\'s own reads is ~0.4 ms: the catalog lookup of the application table (list_rows), reading the user\'s owners, choosing a plan, and planning the dynamic query, which is per call. The rest is the page itself. org\'s heaviest users see ~3% of the table through 300–400 owners: list_rows reads their owners\' rows only up to an id bound that the id column\'s histogram places past twice the page (~200 rows instead of ~2,900, bench/FINDINGS.md 39), but one index scan still steps from each owner\'s entries to the next, ~2 µs an owner (~0.8 ms for 408), and reading the 408 owners first costs ~0.3 ms; list_targets reads every child of those owners (one or two each) and probes the owner\'s row for each node of the page. Less would need the owners\' rows merged in id order without visiting every owner, which no PostgreSQL index scan does. Whole lists above budget are bound by reading the rows themselves: the unfiltered read of as many rows beside each.`, '');
  // (a section on the goals missed: these two only when this report's figures miss them; the
  // history of the machine alone made the check() paragraph appear with every shape at 55-58 µs)
  const check = checkServerMs.some((v) => v >= checkGoalMs) ? checkLimit(runs, checkGoalMs) : null;
  if (check) lines.push(check, '');
  if (noopVsFloor.some((v) => v > noopGoal)) lines.push('**Goal 7 (a refresh that changes nothing ≤ 0.5× the floor).** It recomputes every row and compares it with the stored one, writing nothing; its ratio to the floor moves with the machine\'s speed from run to run with the same code (wide small: 0.35–0.65× over five runs of one day, bench/FINDINGS.md 31), so it is met on a quiet run and missed on a slow one.');
  while (lines.at(-1) === '') lines.pop();
  return lines;
}
