// Bulk import of nodes and grants from CSV files or from SQL queries over the
// application's own tables.
//
// The phases, each in its own module:
//
// 1. Stage (staging.ts): rows are copied into permgraph.import_nodes / import_grants in
//    batches, each its own transaction that also records the position
//    reached in permgraph.import_runs (CSV: the record number; query: the
//    last key; the query itself runs read-only, see inputs.ts). A run
//    interrupted here continues after its last committed batch (`resume`).
// 2. Validate (validate.ts; set-based, sql/functions/150_import.sql): every bad
//    row gets its reason.
// 3. Load + refresh (load.ts), in ONE transaction: upsert the valid rows with
//    change capture and per-row audit off, write one audit row for the run, and
//    run permgraph.refresh() once. A crash here rolls the whole step back; resume
//    redoes it. So the graph is never half-loaded.
//
// Interrupting (options.signal) cancels the statement the run has on the
// server (pg_cancel_backend, from another connection of the pool), so no
// query outlives the run; the run stays resumable.
//
// All of it needs a server session of its own for the run: the run's lock
// is a session's advisory lock, a query's rows wait in a temporary table,
// the COPY connection sets its session's search_path (staging.ts), and the
// interrupt cancels by that session's process id. A transaction pooler hands the session to
// other clients between the run's transactions and may give the run another
// one for the next: the lock, the tables and the path would pass to them
// (of two query imports sharing a session, one loaded the other's rows; the
// path reached the login's other clients), the unlock could reach another
// session and leave the run locked out for good, and an interrupt would
// cancel whichever client's statement ran on the first session. Given the
// URL (connectionUrl), the run refuses such a pooler before it starts
// (sharedSessionError, src/db/pooler.ts).
import { createHash } from 'node:crypto';
import { isConnectionPool } from '@databases/pg';
import { DEFAULT_IMPORT_BATCH_SIZE, IMPORT_LOCK_CLASS } from '../../constants.ts';
import { sql, type Queryable } from '../../db/pool.ts';
import { connectionPath, sharedSessionError } from '../../db/pooler.ts';
import { InvalidInputError, SqlState, sqlStateOf } from '../../errors.ts';
import { canonicalJson, describeInput, fileFingerprints, GRANT_COLUMNS, NODE_COLUMNS, prepare } from './inputs.ts';
import { loadRun } from './load.ts';
import { discardStaging, dropQueryTables, readQuery, stage } from './staging.ts';
import { ImportInterruptedError, type ImportOptions, type ImportSummary, type RunContext, type RunRow, type Step } from './types.ts';

export {
  describeProblem,
  ImportInterruptedError,
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

/**
 * Runs an import; see the file comment. Throws InvalidInputError for bad
 * inputs (nothing written), SharedSessionError when options.connectionUrl
 * goes through a transaction pooler (nothing run), ImportRejectedError for
 * invalid rows (unless onInvalid is 'skip'), ImportInterruptedError when
 * options.signal fires.
 */
export async function importGraph(db: Queryable, options: ImportOptions): Promise<ImportSummary> {
  if (!options.nodes && !options.grants) throw new InvalidInputError('nothing to import: give nodes and/or grants');
  if (options.resume && options.restart) throw new InvalidInputError('--resume and --restart exclude each other');
  if (options.dryRun && options.resume) throw new InvalidInputError('a dry run cannot resume: it writes nothing to resume from');
  const batchSize = options.batchSize ?? DEFAULT_IMPORT_BATCH_SIZE;
  if (!Number.isInteger(batchSize) || batchSize <= 0) throw new InvalidInputError(`batch size must be a positive integer, got ${batchSize}`);
  if (options.onInvalid && options.onInvalid !== 'skip' && options.onInvalid !== 'fail') {
    throw new InvalidInputError(`on-invalid must be skip or fail, got "${String(options.onInvalid)}"`);
  }
  if (options.actor !== undefined && options.actor.trim() === '') throw new InvalidInputError('the actor must not be empty');

  const inputs = { nodes: describeInput(options.nodes), grants: describeInput(options.grants) };
  const name = options.name ?? `import-${createHash('sha256').update(JSON.stringify(inputs)).digest('hex').slice(0, 10)}`;
  if (name.trim() === '') throw new InvalidInputError('the import name must not be empty');
  const dryRun = options.dryRun === true;
  if (options.connectionUrl !== undefined && (await connectionPath(options.connectionUrl)) === 'shared') {
    throw sharedSessionError('the import', SHARED_SESSION_REASON);
  }
  const interrupt = interruption(db, name, dryRun, options.signal);
  try {
    interrupt.check();
    return await db.task(async (conn) => {
      // Everything about the inputs is checked before anything is written.
      const nodes = options.nodes ? await prepare(conn, options.nodes, NODE_COLUMNS, 'nodes') : null;
      const grants = options.grants ? await prepare(conn, options.grants, GRANT_COLUMNS, 'grants') : null;
      const fingerprint = { ...inputs, files: await fileFingerprints([options.nodes, options.grants]) };
      const [lock] = await conn.query(sql`select pg_try_advisory_lock(${IMPORT_LOCK_CLASS}::int, hashtext(${name})) as ok, pg_backend_pid() as pid`);
      if (!lock?.ok) throw new InvalidInputError(`import "${name}" is running in another session`);
      interrupt.watch(Number(lock.pid));
      try {
        const context: RunContext = { name, options, batchSize, nodes, grants, checkInterrupted: interrupt.check };
        interrupt.check();
        if (dryRun) {
          // The queries run read-only before the transaction that rolls back.
          if (nodes?.kind === 'query') await readQuery(conn, 'nodes', nodes, null);
          if (grants?.kind === 'query') await readQuery(conn, 'grants', grants, null);
          try {
            await conn.tx(async (tx) => {
              const dryName = `${name} (dry run ${process.pid})`;
              await tx.query(sql`delete from permgraph.import_runs where name = ${dryName}`);
              await tx.query(sql`insert into permgraph.import_runs (name, inputs, phase) values (${dryName}, ${fingerprint}, 'nodes')`);
              const summary = await runPhases(conn, { ...context, name: dryName }, (fn) => fn(tx), 'nodes', null, false);
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
        return await runPhases(conn, context, step, run.phase, run.last_key, options.resume === true);
      } catch (error) {
        throw interrupt.explain(error);
      } finally {
        await interrupt.stop();
        await uncancelled(() => dropQueryTables(conn));
        await uncancelled(() => conn.query(sql`select pg_advisory_unlock(${IMPORT_LOCK_CLASS}::int, hashtext(${name}))`));
      }
    });
  } finally {
    await interrupt.stop();
  }
}

/** Why an import refuses a transaction pooler (see the file comment). */
const SHARED_SESSION_REASON =
  "an import keeps its run's lock, its query's rows (a temporary table) and its search_path on its server session, and is interrupted by " +
  "cancelling that session's statement, which such a pooler would share with its other clients, or lose between the import's transactions";

/** Runs a clean-up statement again if the last cancel of an interrupted run reached it (it may arrive late). */
async function uncancelled<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    if (sqlStateOf(error) !== SqlState.queryCanceled) throw error;
    return run();
  }
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

async function runPhases(
  conn: Queryable,
  ctx: RunContext,
  step: Step,
  phase: RunRow['phase'],
  lastKey: string | null,
  resumed: boolean,
): Promise<ImportSummary> {
  let batches = 0;
  const afterBatch = async () => {
    batches += 1;
    await ctx.options.afterBatch?.(batches);
  };
  try {
    for (const table of ['nodes', 'grants'] as const) {
      if (phase !== table) continue;
      const input = ctx[table];
      if (input?.kind === 'query' && !ctx.options.dryRun) await readQuery(conn, table, input, lastKey);
      if (input) await stage(ctx, step, table, input, lastKey, afterBatch);
      const next = table === 'nodes' ? 'grants' : 'load';
      await step((tx) => tx.query(sql`update permgraph.import_runs set phase = ${next}, last_key = null, updated_at = now() where name = ${ctx.name}`));
      phase = next;
      lastKey = null;
    }
  } catch (error) {
    if (error instanceof InvalidInputError) await abandon(ctx, step, error.message);
    throw error;
  }
  return loadRun(ctx, step, resumed);
}

/** A bad input found while staging (malformed CSV, a failing query): drop what was staged and mark the run failed. */
async function abandon(ctx: RunContext, step: Step, reason: string): Promise<void> {
  if (ctx.options.dryRun) return; // the transaction rolls back anyway
  await step(async (tx) => {
    await discardStaging(tx, ctx.name);
    await tx.query(sql`
      update permgraph.import_runs set phase = 'failed', finished_at = now(), updated_at = now(),
        summary = ${{ error: reason }} where name = ${ctx.name}`);
  });
}

/**
 * What the run does about its signal: check() throws once it fired; watch()
 * names the run's backend, whose running statement is then cancelled from
 * another connection of the pool, again every 250 ms until stop() (a cancel
 * that lands between two statements is lost); explain() turns the error that
 * the cancelled statement raised into ImportInterruptedError.
 */
function interruption(db: Queryable, name: string, dryRun: boolean, signal: AbortSignal | undefined) {
  let pid: number | null = null;
  let timer: NodeJS.Timeout | null = null;
  let pending: Promise<unknown> = Promise.resolve();
  const reason = () => {
    const r: unknown = signal?.reason;
    return typeof r === 'string' ? r : r instanceof Error && r.name !== 'AbortError' ? r.message : 'aborted';
  };
  const cancel = () => {
    if (pid === null || !isConnectionPool(db)) return;
    pending = db.query(sql`select pg_catalog.pg_cancel_backend(${pid}::integer)`).catch(() => {});
  };
  const onAbort = () => {
    cancel();
    timer ??= setInterval(cancel, 250);
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  return {
    check(): void {
      if (signal?.aborted) throw new ImportInterruptedError(name, dryRun, reason());
    },
    watch(backend: number): void {
      pid = backend;
      if (signal?.aborted) onAbort();
    },
    explain(error: unknown): unknown {
      if (!signal?.aborted || error instanceof ImportInterruptedError) return error;
      return Object.assign(new ImportInterruptedError(name, dryRun, reason()), { cause: error });
    },
    async stop(): Promise<void> {
      signal?.removeEventListener('abort', onAbort);
      if (timer) clearInterval(timer);
      timer = null;
      pid = null;
      await pending;
    },
  };
}
