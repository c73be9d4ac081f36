// Bulk import of nodes and grants from CSV files or from SQL queries over the
// application's own tables.
//
// 1. Stage: rows are copied into permgraph.import_nodes / import_grants in
//    batches, each its own transaction that also records the position
//    reached in permgraph.import_runs (CSV: the record number; query: the
//    last key, paged with `key > last order by key`, never OFFSET). A run
//    interrupted here continues after its last committed batch (`resume`).
// 2. Validate (set-based, sql/010): every bad row gets its reason.
// 3. Load + refresh, in ONE transaction: upsert the valid rows with change
//    capture and per-row audit off, write one audit row for the run, and run
//    permgraph.refresh() once. A crash here rolls the whole step back; resume
//    redoes it. So the graph is never half-loaded.
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { sql, type Queryable } from '../db/pool.ts';
import type { Transaction } from '@databases/pg';
import { InvalidInputError, sqlStateOf } from '../errors.ts';
import { openCsv, type CsvFile } from './csv.ts';

export type ImportSource = { file: string } | { query: string };
export type OnInvalid = 'skip' | 'fail';
export type ImportPhase = 'nodes' | 'grants' | 'validate' | 'load';

export interface ImportOptions {
  /** CSV with header id,kind,owner_id[,trash_at], or a query returning those columns. */
  nodes?: ImportSource;
  /** CSV with header tail_id,head_id,level[,source], or a query returning those columns. */
  grants?: ImportSource;
  /** Names the run for resuming; default: derived from the inputs. */
  name?: string;
  /** Continue an interrupted run after its last committed batch. */
  resume?: boolean;
  /** Discard an interrupted run of the same name and start over. */
  restart?: boolean;
  /** Validate everything and count what would change; write nothing. */
  dryRun?: boolean;
  /** skip (default): load the valid rows; fail: load nothing if any row is invalid. */
  onInvalid?: OnInvalid;
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
    super(`import "${summary.name}" refused: ${summary.invalid} invalid row(s), nothing loaded (first: ${describeProblem(summary.problems[0])})`);
  }
}

export function describeProblem(p: ImportProblem | undefined): string {
  return p ? `${p.origin}: ${p.problem}` : 'none';
}

const NODE_COLUMNS = { required: ['id', 'kind', 'owner_id'], optional: ['trash_at'] } as const;
const GRANT_COLUMNS = { required: ['tail_id', 'head_id', 'level'], optional: ['source'] } as const;
/** Advisory lock class of import runs (the other key is hashtext(name)): one process per run. */
const IMPORT_LOCK_CLASS = 7238010;
const DEFAULT_BATCH = 10_000;

/** An input made ready: CSV opened with its header checked, or a query with its columns probed. */
type Prepared =
  | { kind: 'csv'; file: CsvFile; label: string; optional: boolean }
  | { kind: 'query'; query: string; optional: boolean };

interface RunRow {
  name: string;
  inputs: unknown;
  phase: 'nodes' | 'grants' | 'load' | 'done' | 'failed';
  last_key: string | null;
  rows_done: number;
  summary: ImportSummary | null;
}

type Step = <T>(fn: (tx: Transaction | Queryable) => Promise<T>) => Promise<T>;

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
  const batchSize = options.batchSize ?? DEFAULT_BATCH;
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

interface RunContext {
  name: string;
  options: ImportOptions;
  batchSize: number;
  nodes: Prepared | null;
  grants: Prepared | null;
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

async function discardStaging(db: Queryable, name: string): Promise<void> {
  await db.query(sql`delete from permgraph.import_nodes where run = ${name}`);
  await db.query(sql`delete from permgraph.import_grants where run = ${name}`);
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

// ---------------------------------------------------------------------------
// Staging

async function stage(
  ctx: RunContext,
  step: Step,
  table: 'nodes' | 'grants',
  input: Prepared,
  lastKey: string | null,
  afterBatch: () => Promise<void>,
): Promise<void> {
  if (input.kind === 'csv') return stageCsv(ctx, step, table, input, lastKey, afterBatch);
  return stageQuery(ctx, step, table, input, lastKey, afterBatch);
}

async function stageCsv(
  ctx: RunContext,
  step: Step,
  table: 'nodes' | 'grants',
  input: Extract<Prepared, { kind: 'csv' }>,
  lastKey: string | null,
  afterBatch: () => Promise<void>,
): Promise<void> {
  let rows = 0;
  let batch: { index: number; origin: string; values: (string | null)[] }[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    const last = batch[batch.length - 1]!.index;
    const seqs = batch.map((r) => r.index);
    const origins = batch.map((r) => r.origin);
    const column = (i: number) => batch.map((r) => r.values[i] ?? null);
    await step(async (tx) => {
      if (table === 'nodes') {
        await tx.query(sql`
          insert into permgraph.import_nodes (run, seq, origin, id, kind, owner_id, trash_at)
          select ${ctx.name}, * from unnest(${seqs}::bigint[], ${origins}::text[], ${column(0)}::text[], ${column(1)}::text[],
                                            ${column(2)}::text[], ${column(3)}::text[])`);
      } else {
        await tx.query(sql`
          insert into permgraph.import_grants (run, seq, origin, tail_id, head_id, level, source)
          select ${ctx.name}, * from unnest(${seqs}::bigint[], ${origins}::text[], ${column(0)}::text[], ${column(1)}::text[],
                                            ${column(2)}::text[], ${column(3)}::text[])`);
      }
      await recordProgress(tx, ctx.name, String(last), batch.length);
    });
    rows += batch.length;
    batch = [];
    await afterBatch();
  };
  const skip = lastKey === null ? 0 : Number(lastKey);
  const label = input.label;
  for await (const record of input.file.records(skip)) {
    const f = record.fields;
    const values =
      table === 'nodes'
        ? [f.id ?? null, f.kind ?? null, emptyToNull(f.owner_id), emptyToNull(f.trash_at)]
        : [f.tail_id ?? null, f.head_id ?? null, f.level ?? null, emptyToNull(f.source) ?? 'default'];
    batch.push({ index: record.index, origin: `${label} line ${record.line}`, values });
    if (batch.length >= ctx.batchSize) {
      await flush();
      ctx.options.onProgress?.({ phase: table, done: record.bytes, total: input.file.size, unit: 'bytes', rows });
    }
  }
  await flush();
  ctx.options.onProgress?.({ phase: table, done: input.file.size, total: input.file.size, unit: 'bytes', rows });
}

function emptyToNull(value: string | undefined): string | null {
  return value === undefined || value === '' ? null : value;
}

async function recordProgress(tx: Queryable, name: string, lastKey: string, rows: number): Promise<void> {
  await tx.query(sql`
    update permgraph.import_runs set last_key = ${lastKey}, rows_done = rows_done + ${rows}, updated_at = now()
    where name = ${name}`);
}

/** The operator's query, wrapped as a subquery whose columns have the types and collation keys need. */
function wrapped(table: 'nodes' | 'grants', input: Extract<Prepared, { kind: 'query' }>) {
  // The query is the operator's own SQL, run as given: that is the interface.
  const inner = sql`(${sql.__dangerous__rawValue(input.query)}) as q`;
  if (table === 'nodes') {
    const trash = input.optional ? sql`(q.trash_at)::text` : sql`null::text`;
    return sql`(select (q.id)::text collate "C" as id, (q.kind)::text as kind,
                       nullif((q.owner_id)::text, '') collate "C" as owner_id, ${trash} as trash_at
                from ${inner})`;
  }
  const source = input.optional ? sql`coalesce(nullif((q.source)::text, ''), 'default')` : sql`'default'::text`;
  return sql`(select (q.tail_id)::text collate "C" as tail_id, (q.head_id)::text collate "C" as head_id,
                     (q.level)::text as level, ${source} collate "C" as source
              from ${inner})`;
}

async function stageQuery(
  ctx: RunContext,
  step: Step,
  table: 'nodes' | 'grants',
  input: Extract<Prepared, { kind: 'query' }>,
  lastKey: string | null,
  afterBatch: () => Promise<void>,
): Promise<void> {
  const w = wrapped(table, input);
  const total = ctx.options.onProgress ? Number((await step((tx) => tx.query(sql`select count(*) as n from ${w} w`)))[0].n) : null;
  let key: string[] | null = lastKey === null ? null : (JSON.parse(lastKey) as string[]);
  let rows = 0;
  for (;;) {
    const staged = await step(async (tx) => {
      if (key === null) await stageNullKeys(tx, ctx.name, table, input);
      const page = table === 'nodes' ? await stageNodePage(tx, ctx, w, key) : await stageGrantPage(tx, ctx, w, key);
      if (page.rows > 0) await recordProgress(tx, ctx.name, JSON.stringify(page.last), page.rows);
      return page;
    });
    if (staged.rows === 0) break;
    key = staged.last;
    rows += staged.rows;
    await afterBatch();
    ctx.options.onProgress?.({ phase: table, done: rows, total, unit: 'rows', rows });
  }
}

/**
 * One keyset page: the rows whose key is after `last` and at most the
 * batchSize-th key, so rows sharing the boundary key land in the same page
 * (a `key > last` page cut in the middle of equal keys would lose rows).
 */
async function stageNodePage(tx: Queryable, ctx: RunContext, w: ReturnType<typeof wrapped>, last: string[] | null) {
  const after = last?.[0] ?? null;
  const [row] = await tx.query(sql`
    with bound as (
      select max(p.id) as id from (
        select w.id from ${w} w where w.id is not null and (${after}::text is null or w.id > ${after}::text)
        order by w.id limit ${ctx.batchSize}) p
    ),
    base as (select coalesce(max(seq), 0) as seq from permgraph.import_nodes where run = ${ctx.name}),
    ins as (
      insert into permgraph.import_nodes (run, seq, origin, id, kind, owner_id, trash_at)
      select ${ctx.name}, base.seq + row_number() over (order by w.id), format('id "%s"', w.id), w.id, w.kind, w.owner_id, w.trash_at
      from ${w} w, bound, base
      where w.id is not null and (${after}::text is null or w.id > ${after}::text) and w.id <= bound.id
      returning 1
    )
    select (select id from bound) as last, (select count(*) from ins) as rows`);
  return { last: [row.last as string], rows: Number(row.rows) };
}

async function stageGrantPage(tx: Queryable, ctx: RunContext, w: ReturnType<typeof wrapped>, last: string[] | null) {
  const [t, h, s] = last ?? [null, null, null];
  const keyAfter = sql`(${t}::text is null or (w.tail_id, w.head_id, w.source) > (${t}::text collate "C", ${h}::text collate "C", ${s}::text collate "C"))`;
  const [row] = await tx.query(sql`
    with bound as (
      select p.tail_id, p.head_id, p.source from (
        select w.tail_id, w.head_id, w.source from ${w} w
        where w.tail_id is not null and w.head_id is not null and ${keyAfter}
        order by w.tail_id, w.head_id, w.source limit ${ctx.batchSize}) p
      order by p.tail_id desc, p.head_id desc, p.source desc limit 1
    ),
    base as (select coalesce(max(seq), 0) as seq from permgraph.import_grants where run = ${ctx.name}),
    ins as (
      insert into permgraph.import_grants (run, seq, origin, tail_id, head_id, level, source)
      select ${ctx.name}, base.seq + row_number() over (order by w.tail_id, w.head_id, w.source),
             format('grant "%s" -> "%s" (source %s)', w.tail_id, w.head_id, w.source),
             w.tail_id, w.head_id, w.level, w.source
      from ${w} w, bound, base
      where w.tail_id is not null and w.head_id is not null and ${keyAfter}
        and (w.tail_id, w.head_id, w.source) <= (bound.tail_id, bound.head_id, bound.source)
      returning 1
    )
    select b.tail_id, b.head_id, b.source, (select count(*) from ins) as rows from (select 1) one left join bound b on true`);
  return { last: [row.tail_id, row.head_id, row.source] as string[], rows: Number(row.rows) };
}

/** Rows whose key is null cannot be paged; they are staged once, as invalid rows, with the first page. */
async function stageNullKeys(tx: Queryable, name: string, table: 'nodes' | 'grants', input: Extract<Prepared, { kind: 'query' }>) {
  const w = wrapped(table, input);
  if (table === 'nodes') {
    await tx.query(sql`
      insert into permgraph.import_nodes (run, seq, origin, id, kind, owner_id, trash_at, problem)
      select ${name}, -row_number() over (), format('row with null id (kind %s, owner_id %s)', w.kind, coalesce(w.owner_id, 'null')),
             w.id, w.kind, w.owner_id, w.trash_at, 'id is null'
      from ${w} w where w.id is null
      on conflict do nothing`);
  } else {
    await tx.query(sql`
      insert into permgraph.import_grants (run, seq, origin, tail_id, head_id, level, source, problem)
      select ${name}, -row_number() over (),
             format('grant %s -> %s (source %s)', coalesce('"' || w.tail_id || '"', 'null'), coalesce('"' || w.head_id || '"', 'null'), w.source),
             w.tail_id, w.head_id, w.level, w.source, case when w.tail_id is null then 'tail_id is null' else 'head_id is null' end
      from ${w} w where w.tail_id is null or w.head_id is null
      on conflict do nothing`);
  }
}

// ---------------------------------------------------------------------------
// Validate, load, refresh

async function loadRun(ctx: RunContext, step: Step, resumed: boolean): Promise<ImportSummary> {
  const failOnInvalid = ctx.options.onInvalid === 'fail';
  const setTrash = ctx.nodes?.optional ?? false;
  const outcome = await step(async (tx) => {
    await ctx.options.onProgress?.({ phase: 'validate', done: 0, total: null, unit: 'rows', rows: 0 });
    const [{ counts }] = await tx.query(sql`select permgraph._import_validate(${ctx.name}) as counts`);
    const problems = await listProblems(tx, ctx.name, ctx.options.maxProblems ?? 20);
    const invalid = Number(counts.nodes_invalid) + Number(counts.grants_invalid);
    const base = {
      name: ctx.name,
      dryRun: ctx.options.dryRun === true,
      resumed,
      invalid,
      problems,
      nodes: tableCounts(Number(counts.nodes_valid) + Number(counts.nodes_invalid), Number(counts.nodes_invalid)),
      grants: tableCounts(Number(counts.grants_valid) + Number(counts.grants_invalid), Number(counts.grants_invalid)),
    };
    if (failOnInvalid && invalid > 0) return { rejected: true as const, summary: { ...base, loaded: false, refresh: null } };
    ctx.options.onProgress?.({ phase: 'load', done: 0, total: null, unit: 'rows', rows: 0 });
    const [{ loaded }] = await tx.query(sql`select permgraph._import_load(${ctx.name}, ${setTrash}) as loaded`);
    const nodes = { ...base.nodes, inserted: Number(loaded.nodes_inserted), updated: Number(loaded.nodes_updated), unchanged: Number(loaded.nodes_unchanged) };
    const grants = { ...base.grants, inserted: Number(loaded.grants_inserted), updated: Number(loaded.grants_updated), unchanged: Number(loaded.grants_unchanged) };
    if (ctx.options.dryRun) return { rejected: false as const, summary: { ...base, nodes, grants, loaded: false, refresh: null } };
    // One summary audit row instead of a row per change (per-row audit is off during the load).
    await tx.query(sql`
      insert into permgraph.audit_log (action, source, details)
      values ('import', ${ctx.name}, ${{ nodes, grants, invalid, on_invalid: ctx.options.onInvalid ?? 'skip' }})`);
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
    if (!ctx.options.dryRun) await step((tx) => finishRun(tx, ctx.name, 'failed', outcome.summary));
    if (ctx.options.dryRun) return outcome.summary;
    throw new ImportRejectedError(outcome.summary);
  }
  return outcome.summary;
}

function tableCounts(read: number, invalid: number): TableCounts {
  return { read, invalid, inserted: 0, updated: 0, unchanged: 0 };
}

async function finishRun(tx: Queryable, name: string, phase: 'done' | 'failed', summary: ImportSummary): Promise<void> {
  await discardStaging(tx, name);
  await tx.query(sql`
    update permgraph.import_runs set phase = ${phase}, finished_at = now(), updated_at = now(), last_key = null, summary = ${summary}
    where name = ${name}`);
}

async function listProblems(tx: Queryable, name: string, limit: number): Promise<ImportProblem[]> {
  const rows: { tbl: 'nodes' | 'grants'; origin: string; problem: string }[] = await tx.query(sql`
    (select 'nodes' as tbl, origin, problem, seq, 0 as ord from permgraph.import_nodes where run = ${name} and problem is not null
     order by seq limit ${limit})
    union all
    (select 'grants', origin, problem, seq, 1 from permgraph.import_grants where run = ${name} and problem is not null
     order by seq limit ${limit})
    order by ord, seq limit ${limit}`);
  return rows.map((r) => ({ table: r.tbl, origin: r.origin, problem: r.problem }));
}

// ---------------------------------------------------------------------------
// Inputs

function describeInput(input: ImportSource | undefined): { file: string } | { query: string } | null {
  if (!input) return null;
  if ('file' in input && 'query' in input) throw new InvalidInputError('give a file or a query for each input, not both');
  if ('file' in input) return { file: path.resolve(input.file) };
  if (typeof input.query !== 'string' || input.query.trim() === '') throw new InvalidInputError('an import query must not be empty');
  return { query: input.query };
}

async function fileFingerprints(inputs: (ImportSource | undefined)[]): Promise<Record<string, { size: number; mtimeMs: number }>> {
  const out: Record<string, { size: number; mtimeMs: number }> = {};
  for (const input of inputs) {
    if (input && 'file' in input) {
      const s = await stat(input.file);
      out[path.resolve(input.file)] = { size: s.size, mtimeMs: Math.trunc(s.mtimeMs) };
    }
  }
  return out;
}

/** JSON with object keys sorted, so a value compares equal after a round trip through jsonb. */
function canonicalJson(value: unknown): string {
  const sortKeys = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sortKeys);
    if (v && typeof v === 'object') {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
    }
    return v;
  };
  return JSON.stringify(sortKeys(value));
}

async function prepare(
  db: Queryable,
  input: ImportSource,
  shape: { required: readonly string[]; optional: readonly string[] },
  table: 'nodes' | 'grants',
): Promise<Prepared> {
  if ('file' in input) {
    const file = await openCsv(input.file, shape);
    return { kind: 'csv', file, label: path.basename(input.file), optional: file.columns.includes(shape.optional[0]!) };
  }
  const query = input.query;
  const probe = async (columns: readonly string[]) => {
    const list = sql.join(columns.map((c) => sql`q.${sql.ident(c)}`), sql`, `);
    await db.query(sql`select ${list} from (${sql.__dangerous__rawValue(query)}) as q limit 0`);
  };
  try {
    await probe(shape.required);
  } catch (error) {
    const state = sqlStateOf(error);
    const reason = error instanceof Error ? error.message : String(error);
    if (state === '42703') {
      throw new InvalidInputError(`the ${table} query must return columns ${shape.required.join(', ')}${shape.optional.map((c) => ` [, ${c}]`).join('')}: ${reason}`);
    }
    if (state?.startsWith('42')) throw new InvalidInputError(`the ${table} query is not valid SQL: ${reason}`);
    throw error;
  }
  let optional = true;
  try {
    await probe(shape.optional);
  } catch (error) {
    if (sqlStateOf(error) !== '42703') throw error;
    optional = false;
  }
  return { kind: 'query', query, optional };
}
