// Staging: rows are copied into permgraph.import_nodes / import_grants in
// batches, each its own transaction that also records the position reached
// in permgraph.import_runs (CSV: the record number; query: the last key,
// paged with `key > last order by key`, never OFFSET).
import { sql, type Queryable } from '../../db/pool.ts';
import type { Prepared, RunContext, Step } from './types.ts';

export async function stage(
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

/** Drops what a run staged. */
export async function discardStaging(db: Queryable, name: string): Promise<void> {
  await db.query(sql`delete from permgraph.import_nodes where run = ${name}`);
  await db.query(sql`delete from permgraph.import_grants where run = ${name}`);
}
