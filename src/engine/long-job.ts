import { sql, type Queryable } from '../db/pool.ts';
import { withInputErrors } from '../errors.ts';
import { inApplierTurn } from './applier-turn.ts';

/** What one chunk of a long job did (sql/functions/065_long_job.sql). */
export interface ChunkResult {
  /** none: no long job is running; chunk: one chunk was applied. */
  mode: 'none' | 'chunk';
  /** Users whose rows this chunk recomputed. */
  users: number;
  /** Users the job has left after this chunk (0: the job is finished). */
  usersRemaining: number;
  /** Size of the chunk's region: every pair its users reach or have a row for. */
  regionPairs: number;
  inserted: number;
  updated: number;
  deleted: number;
  /**
   * Changes whose tokens this chunk let go before the job's end: made
   * during the job (they waited for it, and chunks take their users first),
   * or of a backlog the job took, once the chunks have recomputed every
   * user they touch.
   */
  released: number;
  /**
   * Rows of the job's backlog this chunk deleted from the change queue. A
   * backlog stays in the queue, hidden from batches, while the job runs; the
   * chunks after its last user delete its rows, a bounded number each, and
   * the last of them ends the job. Their tokens were applied already.
   */
  backlogCleared: number;
  /** This chunk ended the job: its changes' freshness tokens are applied. */
  finished: boolean;
  /** Server-side duration. */
  ms: number;
}

export interface ChunkOptions {
  /** The region to aim at (default: the job's chunk bound, the chunkPairs it was started with). */
  maxPairs?: number;
  /** Compute the graph as of this time instead of now (as ApplyOptions.at: not earlier, nor later unless the schema's owner asks). */
  at?: Date;
}

/**
 * Applies the next chunk of the running long job, if any, in one REPEATABLE
 * READ transaction whose snapshot follows the batch before it
 * (inApplierTurn): every row of a bounded set of the job's users is
 * recomputed from the current graph, and only differences are written.
 */
export async function applyJobChunk(db: Queryable, options: ChunkOptions = {}): Promise<ChunkResult> {
  const [row] = await withInputErrors(() =>
    inApplierTurn(db, (tx) =>
      tx.query(sql`
        select permgraph.apply_job_chunk(
          p_max_pairs => ${options.maxPairs ?? null}::bigint,
          p_at => ${options.at ?? null}::timestamptz) as result`),
    ),
  );
  const raw = row.result as Record<string, unknown>;
  return {
    mode: raw.mode as ChunkResult['mode'],
    users: Number(raw.users ?? 0),
    usersRemaining: Number(raw.users_remaining ?? 0),
    regionPairs: Number(raw.region_pairs ?? 0),
    inserted: Number(raw.inserted ?? 0),
    updated: Number(raw.updated ?? 0),
    deleted: Number(raw.deleted ?? 0),
    released: Number(raw.released ?? 0),
    backlogCleared: Number(raw.backlog_cleared ?? 0),
    finished: raw.finished === true,
    ms: Number(raw.ms ?? 0),
  };
}
