// Validate, load and refresh, in ONE transaction: upsert the valid rows with
// change capture and per-row audit off, write one audit row for the run, and
// run permgraph.refresh() once. A crash here rolls the whole step back; resume
// redoes it. So the graph is never half-loaded.
import { sql, type Queryable } from '../../db/pool.ts';
import { setActor } from '../audit.ts';
import { discardStaging } from './staging.ts';
import { ImportRejectedError, type ImportSummary, type RunContext, type Step } from './types.ts';
import { resolveLevels, validateRun } from './validate.ts';

/** Validates the staged rows, then loads the valid ones and refreshes (unless refused or a dry run). */
export async function loadRun(ctx: RunContext, step: Step, resumed: boolean): Promise<ImportSummary> {
  const onInvalid = ctx.options.onInvalid ?? 'fail';
  const setTrash = ctx.nodes?.optional.includes('trash_at') ?? false;
  const setExpiry = ctx.grants?.optional.includes('expires_at') ?? false;
  // The staged rows' statistics, before any statement plans over them (in a
  // transaction of its own: ANALYZE's lock would otherwise wait for, and
  // hold up, other imports until this long one ends).
  ctx.checkInterrupted();
  await step((tx) => tx.query(sql`analyze permgraph.import_nodes; analyze permgraph.import_grants`));
  const outcome = await step(async (tx) => {
    await ctx.options.onProgress?.({ phase: 'validate', done: 0, total: null, unit: 'rows', rows: 0 });
    // Locked before validating: what validation finds about the stored
    // graph then holds until the import commits, so the load need not check
    // it again (permgraph._import_load).
    await lockForImport(tx, ctx.options.exclusive === true, ctx.options.dryRun !== true);
    const levels = await resolveLevels(tx, ctx.name);
    ctx.checkInterrupted();
    const base = await validateRun(tx, ctx, resumed, levels);
    const invalid = base.invalid;
    if (onInvalid === 'fail' && invalid > 0) return { rejected: true as const, summary: { ...base, loaded: false, refresh: null } };
    ctx.checkInterrupted();
    ctx.options.onProgress?.({ phase: 'load', done: 0, total: null, unit: 'rows', rows: 0 });
    if (ctx.options.exclusive) {
      await tx.query(sql`select permgraph._import_drop_foreign_keys()`);
      await tx.query(sql`select permgraph._import_drop_indexes(${ctx.name})`);
    }
    const [{ loaded }] = await tx.query(sql`select permgraph._import_load(${ctx.name}, ${setTrash}, ${setExpiry}, ${JSON.stringify(levels)}::jsonb) as loaded`);
    // the indexes first, then the foreign keys, validated once
    if (ctx.options.exclusive) await tx.query(sql`select permgraph._rebuild_set_aside('import')`);
    const nodes = { ...base.nodes, inserted: Number(loaded.nodes_inserted), updated: Number(loaded.nodes_updated), unchanged: Number(loaded.nodes_unchanged) };
    const grants = { ...base.grants, inserted: Number(loaded.grants_inserted), updated: Number(loaded.grants_updated), unchanged: Number(loaded.grants_unchanged) };
    if (ctx.options.dryRun) return { rejected: false as const, summary: { ...base, nodes, grants, loaded: false, refresh: null } };
    // One summary audit row instead of a row per change (per-row audit is off during the load).
    if (ctx.options.actor !== undefined) await setActor(tx, ctx.options.actor);
    await tx.query(sql`
      insert into permgraph.audit_log (action, source, details)
      values ('import', ${ctx.name}, ${{ nodes, grants, invalid, on_invalid: onInvalid }})`);
    ctx.checkInterrupted();
    const [{ result }] = await tx.query(sql`select permgraph.refresh() as result`);
    const refresh = {
      mode: String(result.mode),
      inserted: Number(result.inserted ?? 0),
      updated: Number(result.updated ?? 0),
      deleted: Number(result.deleted ?? 0),
      ms: Number(result.ms ?? 0),
    };
    const summary: ImportSummary = { ...base, nodes, grants, loaded: true, refresh };
    await finishRun(tx, ctx.name, 'done', summary);
    return { rejected: false as const, summary };
  });
  if (outcome.rejected) {
    if (ctx.options.dryRun) return outcome.summary;
    await step((tx) => finishRun(tx, ctx.name, 'failed', outcome.summary));
    throw new ImportRejectedError(outcome.summary);
  }
  return outcome.summary;
}

/**
 * Locks nodes and grants for the rest of the import's last transaction
 * (validation, load and refresh), before anything else, so that the
 * refresh's SHARE locks later cannot deadlock with a writer that got one of
 * them in between; one table at a time, never waiting for one while holding
 * another (permgraph._lock_tables_in_turn: all at once, in one order, they
 * deadlocked with a writer or reader that held one and then wanted another):
 * - by default SHARE ROW EXCLUSIVE: concurrent writers wait until the import
 *   commits (they would wait for the refresh anyway), readers do not. No
 *   node can be deleted meanwhile, so the per-statement checks of the load
 *   skip locking the nodes they look up (FOR KEY SHARE:
 *   permgraph._nodes_locked_against_deletes, which checks that this lock is
 *   held), and, for a superuser, the foreign keys' row checks are off for
 *   the load (permgraph._import_reference_checks): validation has checked
 *   every owner and grant end, and nothing can delete a node before the
 *   commit;
 * - exclusive: ACCESS EXCLUSIVE, readers wait too (and readers of edges,
 *   the worker's graph): the foreign keys into nodes are dropped for the
 *   load and added back, and validated set-based, after it
 *   (permgraph._import_drop_foreign_keys); for a large run, the secondary
 *   indexes of the three tables are built again after it
 *   (permgraph._import_drop_indexes). Taken at once rather than
 *   raised from SHARE ROW EXCLUSIVE after validating: raising it would
 *   deadlock with a reader that then tries to write.
 * With the tables, in the same turn, an import that will refresh takes the
 * applier's turn, which every batch takes before it touches the graph: at
 * the refresh, after the tables, it deadlocked with a batch that held the
 * turn and waited for them (bench/FINDINGS.md 62). Batches wait from here
 * until the import commits; its refresh applies what they would have. A
 * dry run does not refresh, and leaves the turn to them.
 */
async function lockForImport(tx: Queryable, exclusive: boolean, refreshes: boolean): Promise<void> {
  if (exclusive) await tx.query(sql`select permgraph._lock_tables_in_turn(array['permgraph.nodes', 'permgraph.grants', 'permgraph.edges']::regclass[], 'access exclusive', ${refreshes})`);
  else await tx.query(sql`select permgraph._lock_tables_in_turn(array['permgraph.nodes', 'permgraph.grants']::regclass[], 'share row exclusive', ${refreshes})`);
  await tx.query(sql`select set_config('permgraph.nodes_locked', 'on', true)`);
}

async function finishRun(tx: Queryable, name: string, phase: 'done' | 'failed', summary: ImportSummary): Promise<void> {
  await discardStaging(tx, name);
  await tx.query(sql`
    update permgraph.import_runs set phase = ${phase}, finished_at = now(), updated_at = now(), last_key = null, summary = ${summary}
    where name = ${name}`);
}
