// 2. Incremental apply per change kind: one committed change, then the timed
// permgraph.apply_changes() (through the engine's applyChanges()).
import { sql, type Queryable } from '../../src/db/pool.ts';
import { applyChanges, type BatchResult } from '../../src/engine/apply.ts';
import { verify } from '../../src/engine/verify.ts';
import type { RunPlan } from '../lib/plan.ts';
import { progress, say } from '../lib/progress.ts';
import { createRng, type Rng } from '../lib/rng.ts';
import { round, roundSummary, summarize, type Summary } from '../lib/stats.ts';
import { installAudit, readAudit, removeAudit, resetAudit } from './audit.ts';
import { CHANGE_KINDS, makeChange, readPools, type ChangeKind, type Pools, type Scope } from './changes.ts';
import { timeCommitFloor } from './commit-floor.ts';

export interface AuditResult {
  samples: number;
  written: number;
  changed: number;
  /** written / changed over the audited samples (null when nothing changed). */
  amplification: number | null;
}

export interface KindResult {
  kind: ChangeKind;
  scope: Scope;
  samples: number;
  /** Client time of applyChanges(): one statement, apply_local_changes(), for a batch the local path takes; else BEGIN … apply_changes() … COMMIT; ms. */
  latency: Summary;
  /** The applying function's own 'ms' (server side, before commit). */
  serverMs: Summary;
  modes: Record<string, number>;
  /** inserted + updated + deleted reported by apply_changes(). */
  written: Summary;
  regionPairs: Summary;
  audit: AuditResult | null;
  /** Up-to-date full refresh median / this kind's median latency. */
  speedupVsFullRefresh: number;
  examples: string[];
  /** Every latency sample (ms), for pooled percentiles in the report. */
  raw: number[];
  /** Rows each sample altered (inserted + updated + deleted), in the order of raw: a local change alters at most 100 ... */
  rawWritten?: number[];
  /** ... and the change's own commit + its apply, ms (goal 1's write + apply). */
  rawWriteAndApply?: number[];
  /** apply_changes()'s own ms of each sample, in the order of raw: tells a slow sample's server time from its wait on the client or the CPU queue. */
  rawServer?: number[];
  skipped?: string;
}

export interface IncrementalResult {
  kinds: KindResult[];
  /** A one-row INSERT + COMMIT into an indexed table, timed between the change kinds (commit-floor.ts). */
  commitFloor?: Summary;
  verify: { differences: number; pending: number } | { skipped: string };
}

interface Sample {
  clientMs: number;
  /** From sending the change's own statement to its apply's commit. */
  writeAndApplyMs: number;
  batch: BatchResult;
}

async function timedApply(db: Queryable, written: number): Promise<Sample> {
  const started = performance.now();
  const batch = await applyChanges(db);
  const done = performance.now();
  return { clientMs: done - started, writeAndApplyMs: done - written, batch };
}

/** One change: make it, time its apply, undo it (untimed). Null: no candidate. */
async function oneChange(db: Queryable, kind: ChangeKind, pools: Pools, rng: Rng, onApplied?: () => Promise<void>) {
  const change = makeChange(kind, pools, rng);
  if (!change) return null;
  const written = performance.now();
  await db.query(change.apply);
  const sample = await timedApply(db, written);
  await onApplied?.();
  if (change.revert) {
    await db.query(change.revert);
    await applyChanges(db);
  }
  return { ...sample, target: change.target };
}

/** Rows a sample's batch altered (inserted + updated + deleted). */
const rowsAltered = (s: Sample): number => s.batch.inserted + s.batch.updated + s.batch.deleted;

function summarizeKind(kind: ChangeKind, scope: Scope, samples: (Sample & { target: string })[], fullRefreshMs: number): KindResult {
  const modes: Record<string, number> = {};
  for (const s of samples) modes[s.batch.mode] = (modes[s.batch.mode] ?? 0) + 1;
  const latency = roundSummary(summarize(samples.map((s) => s.clientMs)));
  return {
    kind,
    scope,
    samples: samples.length,
    latency,
    serverMs: roundSummary(summarize(samples.map((s) => s.batch.ms))),
    modes,
    written: roundSummary(summarize(samples.map(rowsAltered))),
    regionPairs: roundSummary(summarize(samples.map((s) => s.batch.regionPairs ?? 0))),
    audit: null,
    speedupVsFullRefresh: round(fullRefreshMs / latency.median, 1),
    examples: samples.slice(0, 3).map((s) => s.target),
    raw: samples.map((s) => round(s.clientMs)),
    rawWritten: samples.map(rowsAltered),
    rawWriteAndApply: samples.map((s) => round(s.writeAndApplyMs)),
    rawServer: samples.map((s) => round(s.batch.ms)),
  };
}

async function latencyPhase(db: Queryable, scope: Scope, pools: Pools, plan: RunPlan, seed: string, fullRefreshMs: number, floor: number[]): Promise<KindResult[]> {
  const rng = createRng(`${seed}:changes:${scope}`);
  // (its own generator: the timed samples pick the same targets as before warm-ups existed)
  const warmUpRng = createRng(`${seed}:warm-up:${scope}`);
  const bar = progress(`incremental (${scope})`, CHANGE_KINDS.length * plan.changeReps);
  const results: KindResult[] = [];
  for (const kind of CHANGE_KINDS) {
    // One untimed change of the kind first, as the reads warm up each query:
    // a session's first change of a kind plans its statements and fills its
    // caches, which a pooled connection or the worker pays once, not per
    // change (deep small, trash project, 0 rows written each time: 3.0 ms for
    // the first, 1.3 ms for the next three). With 10 samples a kind on small,
    // that first one was the kind's max.
    await oneChange(db, kind, pools, warmUpRng);
    const samples: (Sample & { target: string })[] = [];
    for (let i = 0; i < plan.changeReps; i++) {
      const sample = await oneChange(db, kind, pools, rng);
      bar.tick();
      if (sample) samples.push(sample);
    }
    // between the kinds, so drift on a shared machine hits both alike
    floor.push(...(await timeCommitFloor(db, plan.changeReps)));
    results.push(
      samples.length
        ? summarizeKind(kind, scope, samples, fullRefreshMs)
        : { ...summarizeKind(kind, scope, [], fullRefreshMs), skipped: 'no candidate in this graph' },
    );
  }
  bar.done();
  const skipped = results.filter((r) => r.skipped).map((r) => r.kind);
  if (skipped.length) {
    say(`  incremental (${scope}): no candidate for ${skipped.join(', ')} (targets are found by id: users u…, teams t…, projects p…, objects o…; bench/README.md)`);
  }
  return results;
}

async function auditPhase(db: Queryable, scope: Scope, pools: Pools, plan: RunPlan, seed: string, results: KindResult[]): Promise<void> {
  const rng = createRng(`${seed}:audit:${scope}`);
  const bar = progress(`write amplification (${scope})`, CHANGE_KINDS.length * plan.auditReps);
  for (const result of results) {
    let written = 0;
    let changed = 0;
    let samples = 0;
    for (let i = 0; i < plan.auditReps; i++) {
      await resetAudit(db);
      const sample = await oneChange(db, result.kind, pools, rng, async () => {
        const counts = await readAudit(db);
        written += counts.written;
        changed += counts.changed;
      });
      bar.tick();
      if (sample) samples++;
    }
    if (samples) result.audit = { samples, written, changed, amplification: changed ? round(written / changed, 3) : null };
  }
  bar.done();
}

async function hasProbe(db: Queryable): Promise<boolean> {
  const [row] = await db.query(sql`select exists (select 1 from permgraph.nodes where id = 'xt0') as present`);
  return row?.present === true;
}

export async function measureIncremental(
  db: Queryable,
  plan: RunPlan,
  seed: string,
  fullRefreshMs: number,
  runVerify: boolean,
): Promise<IncrementalResult> {
  const scopes: Scope[] = (await hasProbe(db)) ? ['random', 'probe'] : ['random'];
  const kinds: KindResult[] = [];
  const pools = new Map<Scope, Pools>();
  const floor: number[] = [];
  for (const scope of scopes) {
    const scopePools = await readPools(db, scope);
    pools.set(scope, scopePools);
    kinds.push(...(await latencyPhase(db, scope, scopePools, plan, seed, fullRefreshMs, floor)));
  }
  const commitFloor = roundSummary(summarize(floor));
  await installAudit(db);
  try {
    for (const scope of scopes) {
      await auditPhase(db, scope, pools.get(scope) as Pools, plan, seed, kinds.filter((k) => k.scope === scope && !k.skipped));
    }
  } finally {
    await removeAudit(db);
  }
  if (!runVerify) return { kinds, commitFloor, verify: { skipped: 'a full recomputation is too slow on this graph (see refresh)' } };
  const bar = progress('verify (table = full recomputation)', 1);
  const checked = await verify(db);
  bar.done();
  return { kinds, commitFloor, verify: { differences: checked.differences.length, pending: checked.pendingChanges } };
}
