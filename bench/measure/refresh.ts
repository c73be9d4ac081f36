// 1. Full refresh against the write floor, in the same run.
import { sql, type Queryable } from '../../src/db/pool.ts';
import { refresh } from '../../src/engine/apply.ts';
import type { RunPlan } from '../lib/plan.ts';
import { progress } from '../lib/progress.ts';
import { roundSummary, summarize, type Summary } from '../lib/stats.ts';

export interface RefreshResult {
  rows: number;
  /** refresh() into an empty permissions table (every row written); ms. */
  fromEmpty: Summary;
  rowsPerSecond: number;
  /** refresh() on an up-to-date table (recompute and diff, nothing written); ms. */
  upToDate: Summary;
  writtenWhenUpToDate: number;
  /** INSERT … SELECT of the same rows into an empty table with the same indexes; ms. */
  writeFloor: Summary;
  floorRowsPerSecond: number;
  /** fromEmpty median / writeFloor median (goal: ≤ 1.5; upToDate median / writeFloor median: ≤ 0.5). */
  ratioToFloor: number;
}

/** Best effort: a checkpoint before each timed write keeps one run's dirty pages out of the next. */
async function settle(db: Queryable): Promise<void> {
  await db.query(sql`checkpoint`).catch(() => {});
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}

async function refreshFromEmpty(db: Queryable): Promise<number> {
  await db.query(sql`truncate permgraph.permissions`);
  await settle(db);
  return timed(() => refresh(db));
}

async function writeFloorOnce(db: Queryable): Promise<number> {
  await db.query(sql`truncate bench.floor`);
  await settle(db);
  return timed(() => db.query(sql`insert into bench.floor select * from bench.floor_src`));
}

async function prepareFloor(db: Queryable): Promise<void> {
  await db.query(sql`
    drop table if exists bench.floor, bench.floor_src;
    create table bench.floor_src as select * from permgraph.permissions;
    create table bench.floor (like permgraph.permissions including all);
    analyze bench.floor_src`);
}

export async function measureRefresh(db: Queryable, plan: RunPlan, firstSampleMs: number, rows: number): Promise<RefreshResult> {
  const fromEmpty = [firstSampleMs];
  const bar = progress('full refresh vs write floor', plan.refreshReps - 1 + plan.upToDateReps + plan.floorReps);
  const started = performance.now();
  for (let i = 1; i < plan.refreshReps && performance.now() - started + firstSampleMs < plan.refreshBudgetMs; i++) {
    fromEmpty.push(await refreshFromEmpty(db));
    bar.tick();
  }
  await db.query(sql`vacuum analyze permgraph.permissions`);
  const upToDate: number[] = [];
  let written = 0;
  for (let i = 0; i < plan.upToDateReps; i++) {
    await settle(db);
    const t = performance.now();
    const noop = await refresh(db);
    upToDate.push(performance.now() - t);
    written += noop.inserted + noop.updated + noop.deleted;
    bar.tick();
  }
  await prepareFloor(db);
  const floor: number[] = [];
  for (let i = 0; i < plan.floorReps; i++) {
    floor.push(await writeFloorOnce(db));
    bar.tick();
  }
  await db.query(sql`drop table bench.floor, bench.floor_src`);
  bar.done();
  const refreshSummary = roundSummary(summarize(fromEmpty));
  const floorSummary = roundSummary(summarize(floor));
  return {
    rows,
    fromEmpty: refreshSummary,
    rowsPerSecond: Math.round(rows / (refreshSummary.median / 1000)),
    upToDate: roundSummary(summarize(upToDate)),
    writtenWhenUpToDate: written,
    writeFloor: floorSummary,
    floorRowsPerSecond: Math.round(rows / (floorSummary.median / 1000)),
    ratioToFloor: Math.round((refreshSummary.median / floorSummary.median) * 100) / 100,
  };
}
