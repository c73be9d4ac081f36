// Staging: rows are copied into permgraph.import_nodes / import_grants in
// batches, each its own transaction that also records the position reached
// in permgraph.import_runs (CSV: the record number; query: the last key).
//
// CSV: records are parsed here (src/app/csv.ts) and sent in arrays. A field
// holding a NUL byte, which PostgreSQL text cannot hold, makes its row
// invalid with that reason (the byte shown as "?"). Given the database's URL
// (ImportOptions.connectionUrl), a run that is not a dry run sends its
// batches with COPY instead, on a connection of its own (each batch still
// one transaction with its progress), the values escaped in COPY's text
// format: no SQL is built from them. A batch with a value too long to stage
// as it is (KEY_LIMIT, SOURCE_LIMIT) goes through the INSERT, which cuts it.
//
// Query: the operator's query is run once, read-only (inputs.ts), into a
// temporary table keyed like the staging table; batches are then taken from
// it by key (`key > last order by key`), so a resumed run re-runs the query
// for the rows after the last committed key only.
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import { connectClient } from '../../db/client-config.ts';
import { PINNED_SEARCH_PATH, sql, type Queryable } from '../../db/pool.ts';
import { readOnly, userQuery } from './inputs.ts';
import type { Prepared, RunContext, Step } from './types.ts';

type CsvInput = Extract<Prepared, { kind: 'csv' }>;
type QueryInput = Extract<Prepared, { kind: 'query' }>;

export async function stage(
  ctx: RunContext,
  step: Step,
  table: 'nodes' | 'grants',
  input: Prepared,
  lastKey: string | null,
  afterBatch: () => Promise<void>,
): Promise<void> {
  if (input.kind === 'csv') return stageCsv(ctx, step, table, input, lastKey, afterBatch);
  return stageQuery(ctx, step, table, lastKey, afterBatch);
}

/**
 * The staged columns of each table, in staging order; which of them an empty
 * field leaves out; and what an absent column or an empty field it leaves
 * out stages as (null: no owner, no trash time, no expiry; the default
 * source).
 */
const STAGED = {
  nodes: { columns: ['id', 'kind', 'owner_id', 'trash_at'], emptyIsAbsent: [false, false, true, true], absent: [null, null, null, null] },
  grants: {
    columns: ['tail_id', 'head_id', 'level', 'source', 'expires_at'],
    emptyIsAbsent: [false, false, false, true, true],
    absent: [null, null, null, 'default', null],
  },
} as const;

/**
 * An id longer than this is invalid (at most 256 characters), and one of a
 * megabyte would not fit in the staging tables' indexes: it is staged cut to
 * this length, with its problem worked out from the whole value as it is
 * staged. A source (any text) longer than SOURCE_LIMIT is refused alike.
 */
const KEY_LIMIT = 257;
const SOURCE_LIMIT = 1024;

/** Staged values from the raw ones of `t` (columns named as in the staging table, plus problem): long keys cut, their problem named. */
function capped(table: 'nodes' | 'grants', t: ReturnType<typeof sql.ident>) {
  const cut = (column: string, limit = KEY_LIMIT) =>
    sql`case when length(${t}.${sql.ident(column)}) > ${sql.__dangerous__rawValue(String(limit))}
             then left(${t}.${sql.ident(column)}, ${sql.__dangerous__rawValue(String(limit))}) else ${t}.${sql.ident(column)} end`;
  const long = (column: string) =>
    sql`when length(${t}.${sql.ident(column)}) > ${sql.__dangerous__rawValue(String(KEY_LIMIT))}
        then permgraph._import_id_problem(${column}, ${t}.${sql.ident(column)})`;
  if (table === 'nodes') {
    return sql`coalesce(${t}.problem, case ${long('id')} ${long('owner_id')} end), ${cut('id')}, ${t}.kind, ${cut('owner_id')}, ${t}.trash_at`;
  }
  return sql`coalesce(${t}.problem, case ${long('tail_id')} ${long('head_id')}
               when length(${t}.source) > ${sql.__dangerous__rawValue(String(SOURCE_LIMIT))}
               then pg_catalog.format('source %s is %s characters long (at most ${sql.__dangerous__rawValue(String(SOURCE_LIMIT))} in an import)',
                           permgraph._describe_id(${t}.source), length(${t}.source))
               -- (ids and a source within their lengths whose bytes together do not fit the grants' unique index)
               when permgraph._grant_key_problem(${t}.tail_id, ${t}.head_id, ${t}.source) is not null
               then permgraph._grant_key_problem(${t}.tail_id, ${t}.head_id, ${t}.source) end),
             ${cut('tail_id')}, ${cut('head_id')}, ${t}.level, ${cut('source', SOURCE_LIMIT)}, ${t}.expires_at`;
}

async function stageCsv(
  ctx: RunContext,
  step: Step,
  table: 'nodes' | 'grants',
  input: CsvInput,
  lastKey: string | null,
  afterBatch: () => Promise<void>,
): Promise<void> {
  const { columns, absent, emptyIsAbsent } = STAGED[table];
  const at = columns.map((c) => input.file.columns.indexOf(c));
  const names = sql.join(columns.map((c) => sql.ident(c)), sql`, `);
  const target = table === 'nodes'
    ? sql`permgraph.import_nodes (run, seq, line, problem, ${names})`
    : sql`permgraph.import_grants (run, seq, line, problem, ${names})`;
  let rows = 0;
  let batch = emptyBatch(columns.length);
  const copier = ctx.options.connectionUrl && !ctx.options.dryRun ? await copyConnection(step, ctx.options.connectionUrl) : null;
  const copyTarget = `permgraph.${table === 'nodes' ? 'import_nodes' : 'import_grants'} (run, seq, line, problem, ${columns.join(', ')})`;
  const flush = async (full: Batch, bytes: number) => {
    const { seqs, lines, problems, values } = full;
    ctx.checkInterrupted();
    if (copier && copyable(table, full)) {
      await copier.batch(copyTarget, copyText(ctx.name, full), ctx.name, String(seqs[seqs.length - 1]), seqs.length);
    } else await step((tx) =>
      tx.query(sql`
        with staged as (
          insert into ${target}
          select ${ctx.name}, t.seq, t.line, ${capped(table, sql.ident('t'))}
          from rows from (pg_catalog.unnest(${seqs}::bigint[]), pg_catalog.unnest(${lines}::bigint[]), pg_catalog.unnest(${problems}::text[]),
                          ${sql.join(values.map((v) => sql`pg_catalog.unnest(${v}::text[])`), sql`, `)})
            as t(seq, line, problem, ${names})
          returning 1
        )
        update permgraph.import_runs set last_key = ${String(seqs[seqs.length - 1])}, rows_done = rows_done + (select count(*) from staged),
          updated_at = now()
        where name = ${ctx.name}`),
    );
    rows += seqs.length;
    await afterBatch();
    ctx.options.onProgress?.({ phase: table, done: bytes, total: input.file.size, unit: 'bytes', rows });
  };
  // The next batch is parsed while the last one is written: the client's
  // parse and the server's COPY then run on two cores at once. At most one
  // batch is being written, and the next starts once it has committed (and
  // afterBatch has run), so the committed batches are always a prefix of
  // the file. (The file is read in small chunks, csv.ts, so that parsing one
  // holds up the writing transaction's round trips only briefly.)
  let writing: Promise<void> | null = null;
  const write = async (bytes: number) => {
    const full = batch;
    batch = emptyBatch(columns.length);
    if (writing) await writing;
    writing = flush(full, bytes);
    writing.catch(() => {}); // awaited before the next batch, or at the end
  };
  const skip = lastKey === null ? 0 : Number(lastKey);
  try {
    await readBatches();
    if (writing) await writing;
  } finally {
    // A failure while parsing (malformed CSV) waits for the batch in flight:
    // what runs next (abandon) drops what was staged.
    await (writing as Promise<void> | null)?.catch(() => {});
    await copier?.end();
  }
  ctx.options.onProgress?.({ phase: table, done: input.file.size, total: input.file.size, unit: 'bytes', rows });

  async function readBatches() {
    for await (const records of input.file.records(skip)) {
      for (const record of records) {
        let problem: string | null = null;
        for (let i = 0; i < columns.length; i++) {
          let value: string | null = at[i]! < 0 ? absent[i]! : record.values[at[i]!]!;
          if (value !== null && value.includes('\0')) {
            problem ??= `${columns[i]} contains a NUL byte (0x00), which PostgreSQL text cannot hold`;
            value = value.replaceAll('\0', '?');
          }
          if (value === '' && emptyIsAbsent[i]) value = absent[i]!;
          batch.values[i]!.push(value);
        }
        batch.seqs.push(record.index);
        batch.lines.push(record.line);
        batch.problems.push(problem);
        if (batch.seqs.length >= ctx.batchSize) await write(record.bytes);
      }
    }
    if (batch.seqs.length > 0) await write(input.file.size);
  }
}

/** Whether every value of a batch stages as it is (none needs the INSERT's cut). */
function copyable(table: 'nodes' | 'grants', batch: Batch): boolean {
  const limits = table === 'nodes' ? [KEY_LIMIT, 0, KEY_LIMIT, 0] : [KEY_LIMIT, KEY_LIMIT, 0, SOURCE_LIMIT, 0];
  for (let i = 0; i < limits.length; i++) {
    const limit = limits[i]!;
    if (limit === 0) continue;
    for (const value of batch.values[i]!) if (value !== null && value.length > limit) return false;
  }
  return true;
}

const COPY_ESCAPES: Record<string, string> = { '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** A value in COPY's text format: null as \N; backslash, newline, carriage return and tab escaped. */
export function copyValue(value: string | null): string {
  if (value === null) return '\\N';
  return /[\\\n\r\t]/.test(value) ? value.replace(/[\\\n\r\t]/g, (c) => COPY_ESCAPES[c]!) : value;
}

/** A batch as COPY text rows: run, seq, line, problem, then the staged columns. */
function copyText(run: string, { seqs, lines, problems, values }: Batch): string {
  const name = copyValue(run);
  const out: string[] = new Array(seqs.length);
  for (let r = 0; r < seqs.length; r++) {
    let line = `${name}\t${seqs[r]}\t${lines[r]}\t${copyValue(problems[r]!)}`;
    for (const column of values) line += `\t${copyValue(column[r]!)}`;
    out[r] = line;
  }
  return out.length ? `${out.join('\n')}\n` : '';
}

/**
 * A connection of its own for COPY (the import's pooled connections cannot
 * stream one), named like the run's connection (so what cancels the run's
 * statements by application name cancels its COPY too), with the same
 * pinned search_path and SSL settings (connectClient). Each batch: COPY and the run's progress, one transaction.
 */
async function copyConnection(step: Step, url: string) {
  const [{ application_name }] = await step((tx) => tx.query(sql`select current_setting('application_name') as application_name`));
  // (the first of the URL's hosts that takes it, as the pool's: node-pg alone reads one host)
  const client = await connectClient(url, String(application_name));
  client.on('error', () => {}); // a broken connection fails the batch's query, which reports it
  await client.query(`set search_path = ${PINNED_SEARCH_PATH.join(', ')}`);
  return {
    async batch(target: string, text: string, run: string, lastKey: string, rows: number) {
      await client.query('begin');
      try {
        await pipeline(
          (async function* () {
            yield text;
          })(),
          client.query(copyFrom(`copy ${target} from stdin`)),
        );
        await client.query('update permgraph.import_runs set last_key = $1, rows_done = rows_done + $2, updated_at = now() where name = $3', [
          lastKey,
          rows,
          run,
        ]);
        await client.query('commit');
      } catch (error) {
        await client.query('rollback').catch(() => {});
        throw error;
      }
    },
    end: () => client.end().catch(() => {}),
  };
}

interface Batch {
  seqs: number[];
  lines: number[];
  problems: (string | null)[];
  values: (string | null)[][];
}

function emptyBatch(columns: number): Batch {
  return { seqs: [], lines: [], problems: [], values: Array.from({ length: columns }, () => []) };
}

async function recordProgress(tx: Queryable, name: string, lastKey: string, rows: number): Promise<void> {
  await tx.query(sql`
    update permgraph.import_runs set last_key = ${lastKey}, rows_done = rows_done + ${rows}, updated_at = now()
    where name = ${name}`);
}

/**
 * A query's moment column (trash_at, expires_at) as the text staged for it,
 * empty text as none (as in a CSV). Through JSON rather than a cast to
 * text: a timestamptz becomes ISO 8601 with its offset whatever the
 * session's DateStyle (cast under `SQL, DMY` it would be
 * `31/01/2030 13:00:00 CET`, which no longer names one instant), a
 * timestamp without one stays without (and is refused, as in a CSV), a
 * date is YYYY-MM-DD (its midnight UTC, as in a CSV), and text stays as it
 * is.
 */
function momentText(column: ReturnType<typeof sql>) {
  return sql`nullif(pg_catalog.to_json(${column}) #>> '{}', '')`;
}

/** The temporary table a query's rows are read into (one per input table, per session). */
function sourceTable(table: 'nodes' | 'grants') {
  return table === 'nodes' ? sql`pg_temp.import_source_nodes` : sql`pg_temp.import_source_grants`;
}

/**
 * Runs the operator's query once, read-only, into its temporary table: the
 * rows after `lastKey` (all of them when null, including rows whose key is
 * null). Call outside of any transaction (a dry run calls it before its own).
 */
export async function readQuery(conn: Queryable, table: 'nodes' | 'grants', input: QueryInput, lastKey: string | null): Promise<void> {
  const target = sourceTable(table);
  if (table === 'nodes') {
    await conn.query(sql`
      drop table if exists ${target};
      create temp table import_source_nodes (problem text, id text collate "C", kind text, owner_id text collate "C", trash_at text)`);
  } else {
    await conn.query(sql`
      drop table if exists ${target};
      create temp table import_source_grants (problem text, tail_id text collate "C", head_id text collate "C", level text, source text collate "C",
                                              expires_at text)`);
  }
  const query = sql`(${sql.__dangerous__rawValue(input.query)}) as q`;
  const key = lastKey === null ? null : (JSON.parse(lastKey) as string[]);
  await readOnly(conn, input.label, async (tx) => {
    if (table === 'nodes') {
      const trash = input.optional.includes('trash_at') ? momentText(sql`q.trash_at`) : sql`null::text`;
      const after = key?.[0] ?? null;
      await userQuery(tx, sql`
        insert into ${target} (problem, id, kind, owner_id, trash_at)
        select ${capped('nodes', sql.ident('w'))}
        from (select null::text as problem, (q.id)::text collate "C" as id, (q.kind)::text as kind,
                     nullif((q.owner_id)::text, '') collate "C" as owner_id, ${trash} as trash_at
              from ${query}) w
        where ${after}::text is null or w.id > ${after}::text collate "C"`);
    } else {
      const source = input.optional.includes('source') ? sql`coalesce(nullif((q.source)::text, ''), 'default')` : sql`'default'::text`;
      const expiry = input.optional.includes('expires_at') ? momentText(sql`q.expires_at`) : sql`null::text`;
      const [t, h, s] = key ?? [null, null, null];
      await userQuery(tx, sql`
        insert into ${target} (problem, tail_id, head_id, level, source, expires_at)
        select ${capped('grants', sql.ident('w'))}
        from (select null::text as problem, (q.tail_id)::text collate "C" as tail_id, (q.head_id)::text collate "C" as head_id,
                     (q.level)::text as level, ${source} collate "C" as source, ${expiry} as expires_at
              from ${query}) w
        where ${t}::text is null
           or (w.tail_id, w.head_id, w.source) > (${t}::text collate "C", ${h}::text collate "C", ${s}::text collate "C")`);
    }
  });
  await conn.query(
    table === 'nodes'
      ? sql`create index on ${target} (id); analyze ${target}`
      : sql`create index on ${target} (tail_id, head_id, source); analyze ${target}`,
  );
}

/** Drops the temporary tables of readQuery. */
export async function dropQueryTables(conn: Queryable): Promise<void> {
  await conn.query(sql`drop table if exists pg_temp.import_source_nodes, pg_temp.import_source_grants`);
}

async function stageQuery(
  ctx: RunContext,
  step: Step,
  table: 'nodes' | 'grants',
  lastKey: string | null,
  afterBatch: () => Promise<void>,
): Promise<void> {
  const source = sourceTable(table);
  const total = ctx.options.onProgress ? Number((await step((tx) => tx.query(sql`select count(*) as n from ${source}`)))[0].n) : null;
  let key: string[] | null = lastKey === null ? null : (JSON.parse(lastKey) as string[]);
  let rows = 0;
  for (;;) {
    ctx.checkInterrupted();
    const staged = await step(async (tx) => {
      if (key === null) await stageNullKeys(tx, ctx.name, table);
      const page = table === 'nodes' ? await stageNodePage(tx, ctx, key) : await stageGrantPage(tx, ctx, key);
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
async function stageNodePage(tx: Queryable, ctx: RunContext, last: string[] | null) {
  const after = last?.[0] ?? null;
  const [row] = await tx.query(sql`
    with bound as (
      select max(p.id) as id from (
        select w.id from pg_temp.import_source_nodes w where w.id is not null and (${after}::text is null or w.id > ${after}::text)
        order by w.id limit ${ctx.batchSize}) p
    ),
    base as (select coalesce(max(seq), 0) as seq from permgraph.import_nodes where run = ${ctx.name}),
    ins as (
      insert into permgraph.import_nodes (run, seq, problem, id, kind, owner_id, trash_at)
      select ${ctx.name}, base.seq + row_number() over (order by w.id), w.problem, w.id, w.kind, w.owner_id, w.trash_at
      from pg_temp.import_source_nodes w, bound, base
      where w.id is not null and (${after}::text is null or w.id > ${after}::text) and w.id <= bound.id
      returning 1
    )
    select (select id from bound) as last, (select count(*) from ins) as rows`);
  return { last: [row.last as string], rows: Number(row.rows) };
}

async function stageGrantPage(tx: Queryable, ctx: RunContext, last: string[] | null) {
  const [t, h, s] = last ?? [null, null, null];
  const keyAfter = sql`(${t}::text is null or (w.tail_id, w.head_id, w.source) > (${t}::text collate "C", ${h}::text collate "C", ${s}::text collate "C"))`;
  const [row] = await tx.query(sql`
    with bound as (
      select p.tail_id, p.head_id, p.source from (
        select w.tail_id, w.head_id, w.source from pg_temp.import_source_grants w
        where w.tail_id is not null and w.head_id is not null and ${keyAfter}
        order by w.tail_id, w.head_id, w.source limit ${ctx.batchSize}) p
      order by p.tail_id desc, p.head_id desc, p.source desc limit 1
    ),
    base as (select coalesce(max(seq), 0) as seq from permgraph.import_grants where run = ${ctx.name}),
    ins as (
      insert into permgraph.import_grants (run, seq, problem, tail_id, head_id, level, source, expires_at)
      select ${ctx.name}, base.seq + row_number() over (order by w.tail_id, w.head_id, w.source),
             w.problem, w.tail_id, w.head_id, w.level, w.source, w.expires_at
      from pg_temp.import_source_grants w, bound, base
      where w.tail_id is not null and w.head_id is not null and ${keyAfter}
        and (w.tail_id, w.head_id, w.source) <= (bound.tail_id, bound.head_id, bound.source)
      returning 1
    )
    select b.tail_id, b.head_id, b.source, (select count(*) from ins) as rows from (select 1) one left join bound b on true`);
  return { last: [row.tail_id, row.head_id, row.source] as string[], rows: Number(row.rows) };
}

/** Rows whose key is null cannot be paged; they are staged once, as invalid rows, with the first page. */
async function stageNullKeys(tx: Queryable, name: string, table: 'nodes' | 'grants') {
  if (table === 'nodes') {
    await tx.query(sql`
      insert into permgraph.import_nodes (run, seq, id, kind, owner_id, trash_at, problem)
      select ${name}, -row_number() over (), w.id, w.kind, w.owner_id, w.trash_at, 'id is null'
      from pg_temp.import_source_nodes w where w.id is null
      on conflict do nothing`);
  } else {
    await tx.query(sql`
      insert into permgraph.import_grants (run, seq, tail_id, head_id, level, source, expires_at, problem)
      select ${name}, -row_number() over (), w.tail_id, w.head_id, w.level, w.source, w.expires_at,
             case when w.tail_id is null then 'tail_id is null' else 'head_id is null' end
      from pg_temp.import_source_grants w where w.tail_id is null or w.head_id is null
      on conflict do nothing`);
  }
}

/** Drops what a run staged. */
export async function discardStaging(db: Queryable, name: string): Promise<void> {
  await db.query(sql`select permgraph._import_discard_staging(${name})`);
}
