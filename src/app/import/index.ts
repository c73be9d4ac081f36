// Bulk import of nodes and grants from CSV files or from SQL queries over the
// application's own tables.
//
// The phases, each in its own module:
//
// 1. Stage (staging.ts): rows are copied into permgraph.import_nodes / import_grants in
//    batches, each its own transaction that also records the position
//    reached in permgraph.import_runs (CSV: the record number; query: the
//    last key, paged with `key > last order by key`, never OFFSET). A run
//    interrupted here continues after its last committed batch (`resume`).
// 2. Validate (validate.ts; set-based, sql/functions/150_import.sql): every bad
//    row gets its reason.
// 3. Load + refresh (load.ts), in ONE transaction: upsert the valid rows with change
//    capture and per-row audit off, write one audit row for the run, and run
//    permgraph.refresh() once. A crash here rolls the whole step back; resume
//    redoes it. So the graph is never half-loaded.
import { createHash } from 'node:crypto';
import { DEFAULT_IMPORT_BATCH_SIZE, IMPORT_LOCK_CLASS } from '../../constants.ts';
import { sql, type Queryable } from '../../db/pool.ts';
import { InvalidInputError } from '../../errors.ts';
import { canonicalJson, describeInput, fileFingerprints, GRANT_COLUMNS, NODE_COLUMNS, prepare } from './inputs.ts';
import { loadRun } from './load.ts';
import { discardStaging, stage } from './staging.ts';
import type { ImportOptions, ImportSummary, RunContext, RunRow, Step } from './types.ts';

export {
  describeProblem,
  ImportRejectedError,
  type ImportOptions,
  type ImportPhase,
  type ImportProblem,
  type ImportProgress,
  type ImportSource,
  type ImportSummary,
  type OnInvalid,
  type TableCounts,
} from './types.ts';

class DryRunRollback extends Error {
  constructor(readonly summary: ImportSummary) {
    super('dry run');
  }
}

/** Runs an import; see the file comment. Throws InvalidInputError for bad inputs (nothing written). */
export async function importGraph(db: Queryable, options: ImportOptions): Promise<ImportSummary> {
  if (!options.nodes && !options.grants) throw new InvalidInputError('nothing to import: give nodes and/or grants');
  if (options.resume && options.restart) throw new InvalidInputError('--resume and --restart exclude each other');
  if (options.dryRun && options.resume) throw new InvalidInputError('a dry run cannot resume: it writes nothing to resume from');
  const batchSize = options.batchSize ?? DEFAULT_IMPORT_BATCH_SIZE;
  if (!Number.isInteger(batchSize) || batchSize <= 0) throw new InvalidInputError(`batch size must be a positive integer, got ${batchSize}`);
  if (options.onInvalid && options.onInvalid !== 'skip' && options.onInvalid !== 'fail') {
    throw new InvalidInputError(`on-invalid must be skip or fail, got "${String(options.onInvalid)}"`);
  }

  const inputs = { nodes: describeInput(options.nodes), grants: describeInput(options.grants) };
  const name = options.name ?? `import-${createHash('sha256').update(JSON.stringify(inputs)).digest('hex').slice(0, 10)}`;
  if (name.trim() === '') throw new InvalidInputError('the import name must not be empty');
  // Everything about the inputs is checked before anything is written.
  const nodes = options.nodes ? await prepare(db, options.nodes, NODE_COLUMNS, 'nodes') : null;
  const grants = options.grants ? await prepare(db, options.grants, GRANT_COLUMNS, 'grants') : null;
  const fingerprint = { ...inputs, files: await fileFingerprints([options.nodes, options.grants]) };

  return db.task(async (conn) => {
    const [lock] = await conn.query(sql`select pg_try_advisory_lock(${IMPORT_LOCK_CLASS}::int, hashtext(${name})) as ok`);
    if (!lock?.ok) throw new InvalidInputError(`import "${name}" is running in another session`);
    try {
      const context: RunContext = { name, options, batchSize, nodes, grants };
      if (options.dryRun) {
        try {
          await conn.tx(async (tx) => {
            const dryName = `${name} (dry run ${process.pid})`;
            await tx.query(sql`delete from permgraph.import_runs where name = ${dryName}`);
            await tx.query(sql`insert into permgraph.import_runs (name, inputs, phase) values (${dryName}, ${fingerprint}, 'nodes')`);
            const summary = await runPhases({ ...context, name: dryName }, (fn) => fn(tx), 'nodes', null, false);
            throw new DryRunRollback({ ...summary, name });
          });
        } catch (error) {
          if (error instanceof DryRunRollback) return error.summary;
          throw error;
        }
        throw new Error('unreachable: the dry run transaction always rolls back');
      }
      const run = await startRun(conn, name, fingerprint, options);
      const step: Step = (fn) => conn.tx(fn);
      return await runPhases(context, step, run.phase, run.last_key, options.resume === true);
    } finally {
      await conn.query(sql`select pg_advisory_unlock(${IMPORT_LOCK_CLASS}::int, hashtext(${name}))`);
    }
  });
}

/** Creates the run's row, or finds the interrupted one to resume (refusing surprises). */
async function startRun(conn: Queryable, name: string, fingerprint: unknown, options: ImportOptions): Promise<RunRow> {
  return conn.tx(async (tx) => {
    const [existing]: RunRow[] = await tx.query(sql`select * from permgraph.import_runs where name = ${name} for update`);
    if (existing && options.resume) {
      if (existing.phase === 'done') throw new InvalidInputError(`import "${name}" already finished; nothing to resume`);
      if (existing.phase === 'failed') throw new InvalidInputError(`import "${name}" failed; run it again without --resume`);
      if (canonicalJson(existing.inputs) !== canonicalJson(fingerprint)) {
        throw new InvalidInputError(`import "${name}" was started with other inputs (or its files changed since); use --restart to start over`);
      }
      return existing;
    }
    if (options.resume) throw new InvalidInputError(`no import named "${name}" to resume`);
    if (existing && !options.restart && existing.phase !== 'done' && existing.phase !== 'failed') {
      throw new InvalidInputError(
        `import "${name}" was interrupted (phase ${existing.phase}, ${existing.rows_done} row(s) staged): pass --resume to continue it or --restart to start over`,
      );
    }
    await discardStaging(tx, name);
    const [row] = await tx.query(sql`
      insert into permgraph.import_runs (name, inputs, phase) values (${name}, ${fingerprint}, 'nodes')
      on conflict (name) do update set inputs = excluded.inputs, phase = 'nodes', last_key = null, rows_done = 0,
        started_at = now(), updated_at = now(), finished_at = null, summary = null
      returning *`);
    return row as RunRow;
  });
}

async function runPhases(ctx: RunContext, step: Step, phase: RunRow['phase'], lastKey: string | null, resumed: boolean): Promise<ImportSummary> {
  let batches = 0;
  const afterBatch = async () => {
    batches += 1;
    await ctx.options.afterBatch?.(batches);
  };
  try {
    if (phase === 'nodes') {
      if (ctx.nodes) await stage(ctx, step, 'nodes', ctx.nodes, lastKey, afterBatch);
      await step((tx) => tx.query(sql`update permgraph.import_runs set phase = 'grants', last_key = null, updated_at = now() where name = ${ctx.name}`));
      phase = 'grants';
      lastKey = null;
    }
    if (phase === 'grants') {
      if (ctx.grants) await stage(ctx, step, 'grants', ctx.grants, lastKey, afterBatch);
      await step((tx) => tx.query(sql`update permgraph.import_runs set phase = 'load', last_key = null, updated_at = now() where name = ${ctx.name}`));
    }
  } catch (error) {
    if (error instanceof InvalidInputError) await abandon(ctx, step, error.message);
    throw error;
  }
  return loadRun(ctx, step, resumed);
}

/** A bad input found while staging (malformed CSV): drop what was staged and mark the run failed. */
async function abandon(ctx: RunContext, step: Step, reason: string): Promise<void> {
  if (ctx.options.dryRun) return; // the transaction rolls back anyway
  await step(async (tx) => {
    await discardStaging(tx, ctx.name);
    await tx.query(sql`
      update permgraph.import_runs set phase = 'failed', finished_at = now(), updated_at = now(),
        summary = ${{ error: reason }} where name = ${ctx.name}`);
  });
}
