// How much a run repeats each measurement, per size.
import type { Size } from '../graph/types.ts';

export interface RunPlan {
  /** Full refresh into an empty table: at most this many samples (the load's refresh is the first) ... */
  refreshReps: number;
  /** ... and no new sample once the phase has spent this long. */
  refreshBudgetMs: number;
  /** refresh() of an up-to-date table (nothing to write). */
  upToDateReps: number;
  floorReps: number;
  /** Timed incremental applies per change kind (and per scope: random, probe). */
  changeReps: number;
  /** Applies per change kind counted row by row (write amplification). */
  auditReps: number;
  checkPairs: number;
  listingReps: number;
  /** Per measured query kind; slow baselines stop after this (at least 3 samples). */
  readBudgetMs: number;
  /** Recursion baselines: at least this many samples even past the budget. */
  minReps: number;
  /** Listings are measured for this many of the users with the most rows ... */
  heavyUsers: number;
  /** ... and "who can see" for this many of the most shared groups. */
  sharedTargets: number;
  throughputMs: number;
  concurrency: number[];
  /** Skip permgraph.verify() when a full refresh took longer than this. */
  verifyMaxRefreshMs: number;
}

export const PLANS: Record<Size, RunPlan> = {
  small: {
    refreshReps: 3,
    refreshBudgetMs: 10_000,
    upToDateReps: 3,
    floorReps: 3,
    changeReps: 10,
    auditReps: 2,
    checkPairs: 200,
    listingReps: 10,
    readBudgetMs: 1_000,
    minReps: 2,
    heavyUsers: 1,
    sharedTargets: 2,
    throughputMs: 500,
    concurrency: [1, 4],
    verifyMaxRefreshMs: 20_000,
  },
  large: {
    refreshReps: 2,
    refreshBudgetMs: 120_000,
    upToDateReps: 1,
    floorReps: 1,
    changeReps: 40,
    auditReps: 8,
    checkPairs: 1000,
    listingReps: 20,
    readBudgetMs: 5_000,
    minReps: 3,
    heavyUsers: 3,
    sharedTargets: 3,
    throughputMs: 4_000,
    concurrency: [1, 4],
    verifyMaxRefreshMs: 300_000,
  },
};
