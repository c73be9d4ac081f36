// The import's types: its options and summary (public), and what its
// phases share (the run's context and how a phase runs one transaction).
import type { Transaction } from '@databases/pg';
import type { Queryable } from '../../db/pool.ts';
import { InvalidInputError, PermgraphError } from '../../errors.ts';
import type { CsvFile } from '../csv.ts';

export type ImportSource = { file: string } | { query: string };
export type OnInvalid = 'skip' | 'fail';
export type ImportPhase = 'nodes' | 'grants' | 'validate' | 'load';

export interface ImportOptions {
  /** CSV with header id,kind,owner_id[,trash_at], or a query returning those columns; trash_at (and a grant's expires_at) is ISO 8601 with its offset, or a date alone (its midnight UTC, as parseExactMoment reads it), empty for none. */
  nodes?: ImportSource;
  /** CSV with header tail_id,head_id,level[,source][,expires_at], or a query returning those columns. */
  grants?: ImportSource;
  /** Names the run for resuming; default: derived from the inputs. */
  name?: string;
  /** Continue an interrupted run after its last committed batch. */
  resume?: boolean;
  /** Discard an interrupted run of the same name and start over. */
  restart?: boolean;
  /** Validate everything and count what would change; write nothing. */
  dryRun?: boolean;
  /** fail (default): load nothing if any row is invalid; skip: load the valid rows. */
  onInvalid?: OnInvalid;
  /** Recorded as the actor of the run's audit row (permgraph.actor; default: the setting, else the database role). */
  actor?: string;
  /**
   * Aborting it interrupts the run: the statement running on the server is
   * cancelled, the current batch rolls back, and the run stays resumable
   * (ImportInterruptedError). A dry run is simply abandoned.
   */
  signal?: AbortSignal;
  /**
   * Load with nodes and grants locked against readers too (ACCESS EXCLUSIVE
   * until the import commits), so that the foreign keys into nodes can be
   * dropped for the load and checked once, set-based, after it, instead of
   * row by row: faster for large imports, unless the import runs as a
   * superuser (its default load then skips those row checks anyway, see
   * docs/cli.md). Default: writers wait during the load, readers do not.
   */
  exclusive?: boolean;
  /**
   * The database's connection URL (as the pool's). The run first asks how
   * it reaches the server, and refuses a transaction pooler
   * (SharedSessionError: the run needs a server session of its own; see
   * index.ts). CSV rows are then staged with COPY, on a connection of its
   * own, instead of INSERT batches (faster; the same rows, batches and
   * progress); not by a dry run. Without it, neither: a pool through a
   * transaction pooler is not noticed.
   */
  connectionUrl?: string;
  /** Rows per staging transaction (default 10,000). */
  batchSize?: number;
  /** How many problems the summary lists (default 20). */
  maxProblems?: number;
  onProgress?: (progress: ImportProgress) => void;
  /** Called after each committed staging batch (tests use it to simulate a crash). */
  afterBatch?: (batchesCommitted: number) => void | Promise<void>;
}

export interface ImportProgress {
  phase: ImportPhase;
  /** Bytes (CSV) or rows (query) done in this phase, and the total when known. */
  done: number;
  total: number | null;
  unit: 'bytes' | 'rows';
  /** Rows staged in this phase so far. */
  rows: number;
}

export interface ImportProblem {
  table: 'nodes' | 'grants';
  /** Where the row came from: `nodes.csv line 7`, or `id "abc"` for a query. */
  origin: string;
  /** The row's line in its CSV file (null for a query's row). */
  line: number | null;
  problem: string;
}

export interface TableCounts {
  read: number;
  invalid: number;
  inserted: number;
  updated: number;
  unchanged: number;
}

export interface ImportSummary {
  name: string;
  dryRun: boolean;
  resumed: boolean;
  /** Nothing was loaded: a dry run, or invalid rows under onInvalid = 'fail'. */
  loaded: boolean;
  /** What invalid rows do: fail (nothing is loaded) or skip (the valid rest is). */
  onInvalid: OnInvalid;
  nodes: TableCounts;
  grants: TableCounts;
  invalid: number;
  problems: ImportProblem[];
  /** What permgraph.refresh() wrote (null for a dry run or a failed run). */
  refresh: { mode: string; inserted: number; updated: number; deleted: number; ms: number } | null;
}

/** Invalid rows with onInvalid = 'fail': nothing was loaded; the summary lists the problems. */
export class ImportRejectedError extends InvalidInputError {
  override name = 'ImportRejectedError';
  constructor(readonly summary: ImportSummary) {
    super(
      `import "${summary.name}" refused: ${summary.invalid} invalid row(s), nothing loaded (first: ${describeProblem(summary.problems[0])}); ` +
        'fix them, or pass --on-invalid skip to load the valid rows',
    );
  }
}

/** The run was interrupted (ImportOptions.signal): its committed batches stay staged, and a resume continues after them. */
export class ImportInterruptedError extends PermgraphError {
  override name = 'ImportInterruptedError';
  constructor(
    readonly runName: string,
    readonly dryRun: boolean,
    readonly reason: string,
  ) {
    super(
      dryRun
        ? `dry run of import "${runName}" interrupted (${reason}); nothing was written`
        : `import "${runName}" interrupted (${reason}); nothing was loaded: run the same command with --resume to continue`,
    );
  }
}

export function describeProblem(p: ImportProblem | undefined): string {
  return p ? `${p.origin}: ${p.problem}` : 'none';
}

/** An input made ready: CSV opened with its header checked, or a query with its columns probed. */
export type Prepared =
  | { kind: 'csv'; file: CsvFile; label: string; optional: readonly string[] }
  | { kind: 'query'; query: string; optional: readonly string[]; label: string };

export interface RunRow {
  name: string;
  inputs: unknown;
  phase: 'nodes' | 'grants' | 'load' | 'done' | 'failed';
  last_key: string | null;
  rows_done: number;
  summary: ImportSummary | null;
}

/** Runs one step of the import in its own transaction (or, for a dry run, in the one transaction that rolls back). */
export type Step = <T>(fn: (tx: Transaction | Queryable) => Promise<T>) => Promise<T>;

/** What every phase of one run needs. */
export interface RunContext {
  name: string;
  options: ImportOptions;
  batchSize: number;
  nodes: Prepared | null;
  grants: Prepared | null;
  /** Throws ImportInterruptedError once the run's signal has fired (called between statements). */
  checkInterrupted: () => void;
}
