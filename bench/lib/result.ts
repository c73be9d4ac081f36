// The shape of a result file (bench/results/runs/*.json).
import type { CaptureResult } from '../measure/capture.ts';
import type { ColdStartResult } from '../measure/coldstart.ts';
import type { HolResult } from '../measure/hol.ts';
import type { ScalingResult } from '../measure/scaling.ts';
import type { ImportResult } from '../measure/import.ts';
import type { IncrementalResult } from '../measure/incremental.ts';
import type { ReadsResult } from '../measure/reads.ts';
import type { RefreshResult } from '../measure/refresh.ts';
import type { StockServerResult } from '../measure/single-change.ts';
import type { WorkerResult } from '../measure/worker/index.ts';
import type { Calibration, GitInfo, MachineInfo, PostgresInfo } from './environment.ts';
import type { RunPlan } from './plan.ts';

export interface GraphInfo {
  /** A generated shape, or the directory name of an external CSV pair. */
  name: string;
  source: 'generated' | 'csv';
  dir: string;
  nodes: number;
  grants: number;
  permissions: number;
  docs: number;
  generateMs: number | null;
  loadMs: number;
}

export interface ShapeResult {
  shape: string;
  size: string;
  /** The engine measured: sql/ migrations applied to this graph's database (name:sha256 prefix). */
  migrations?: string[];
  graph: GraphInfo;
  refresh: RefreshResult;
  incremental: IncrementalResult | null;
  reads: ReadsResult | null;
  /** Worker end to end (org only). */
  worker: WorkerResult | null;
  durationMs: number;
  error?: string;
}

export interface RunResult {
  version: 1;
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  size: string;
  seed: string;
  command: string;
  git: GitInfo;
  machine: MachineInfo & { loadAverageAtEnd?: number[] };
  /** Null for a phase that starts its own server (--stock, --capture) or none (--coldstart); its result describes it. */
  postgres: PostgresInfo | null;
  /** cluster: a throwaway cluster of another major version (--postgres); own: the phase started its own server. */
  server: 'embedded' | 'DATABASE_URL' | 'cluster' | 'own';
  plan: RunPlan;
  /** Fixed work timed at the start of the run: which host, how fast (absent in older results). */
  calibration?: Calibration;
  shapes: ShapeResult[];
  /** `permgraph import` onto a database holding data (bench/measure/import.ts; `--import` runs only this). */
  import?: ImportResult;
  /** Head-of-line blocking: a huge grant with a stream of small changes, chunking off and on (bench/measure/hol.ts; `--hol` runs only this). */
  hol?: HolResult;
  /** The same probe changes on org small and org large side by side (bench/measure/scaling.ts; `--scaling` runs only this). */
  scaling?: ScalingResult;
  /** One change on a server with default settings, and against the one-row commit floor (`--stock`). */
  stock?: StockServerResult;
  /** One INSERT of 100,000 grants against a plain table (`--capture`). */
  capture?: CaptureResult;
  /** The CLI's cold start against bare node (`--coldstart`). */
  coldstart?: ColdStartResult;
}

/** The phases run alone, each saved as a run of its own. */
export const SOLO_PHASES = ['import', 'hol', 'scaling', 'stock', 'capture', 'coldstart'] as const;
