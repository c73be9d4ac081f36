// Validation (set-based, in SQL: permgraph._import_validate in
// sql/functions/150_import.sql): every bad staged row gets its reason; the
// counts and the first problems make the summary. Levels are resolved here,
// with the library's one level parser, for each distinct level text the
// run's grants hold: 1..3, read/write/manage, or a role of the catalog.
import { DEFAULT_IMPORT_MAX_PROBLEMS } from '../../constants.ts';
import { sql, type Queryable } from '../../db/pool.ts';
import { isLevelInput, parseLevel } from '../../levels.ts';
import type { ImportProblem, ImportSummary, RunContext, TableCounts } from './types.ts';

/** A summary before loading: what was read and what is invalid. */
export type ValidatedRun = Omit<ImportSummary, 'loaded' | 'refresh'>;

/** Each distinct level text of the run's grants: its level, or why it is none. */
export type LevelMap = Record<string, number | string>;

/** Validates the run's staged rows (inside the load's transaction) and counts them. */
export async function validateRun(tx: Queryable, ctx: RunContext, resumed: boolean, levels: LevelMap): Promise<ValidatedRun> {
  const [{ counts }] = await tx.query(sql`select permgraph._import_validate(${ctx.name}, ${JSON.stringify(levels)}::jsonb) as counts`);
  const invalid = Number(counts.nodes_invalid) + Number(counts.grants_invalid);
  // (Looking for problems where the counts found none would read every staged row again: ~0.2 s at 1M + 1M.)
  const problems = invalid > 0 ? await listProblems(tx, ctx, ctx.options.maxProblems ?? DEFAULT_IMPORT_MAX_PROBLEMS) : [];
  return {
    name: ctx.name,
    dryRun: ctx.options.dryRun === true,
    resumed,
    onInvalid: ctx.options.onInvalid ?? 'fail',
    invalid,
    problems,
    nodes: tableCounts(Number(counts.nodes_valid) + Number(counts.nodes_invalid), Number(counts.nodes_invalid)),
    grants: tableCounts(Number(counts.grants_valid) + Number(counts.grants_invalid), Number(counts.grants_invalid)),
  };
}

/** Resolves every distinct level text of the run's staged grants. */
export async function resolveLevels(tx: Queryable, name: string): Promise<LevelMap> {
  const texts: { level: string }[] = await tx.query(sql`
    select distinct level from permgraph.import_grants where run = ${name} and problem is null and level is not null`);
  if (texts.length === 0) return {};
  const roles = new Map<string, number>(
    (await tx.query(sql`select name, level from permgraph.roles`)).map((r: { name: string; level: number }) => [r.name, r.level]),
  );
  const known = roles.size ? [...roles.keys()].sort().join(', ') : 'none (run `permgraph roles sync FILE`)';
  const levels: LevelMap = {};
  for (const { level: text } of texts) levels[text] = resolveLevel(text, roles, known);
  return levels;
}

/** A level as everywhere else (parseLevel), or a role of the catalog; else why not. */
function resolveLevel(text: string, roles: Map<string, number>, known: string): number | string {
  if (text.trim() === '') return 'level is empty';
  if (isLevelInput(text) && text.length <= 64) {
    try {
      return parseLevel(text);
    } catch (error) {
      return (error as Error).message;
    }
  }
  const role = roles.get(text);
  if (role !== undefined) return role;
  const shown = text.length > 64 ? `${JSON.stringify(text.slice(0, 64))}… (${text.length} characters)` : JSON.stringify(text);
  return `level must be 1 (read), 2 (write), 3 (manage) or a role of the catalog, got ${shown}; known roles: ${known}`;
}

function tableCounts(read: number, invalid: number): TableCounts {
  return { read, invalid, inserted: 0, updated: 0, unchanged: 0 };
}

/** The first problems of each table, each with where its row came from (a CSV line, or a query row's key). */
async function listProblems(tx: Queryable, ctx: RunContext, limit: number): Promise<ImportProblem[]> {
  const label = (input: RunContext['nodes']) => (input?.kind === 'csv' ? input.label : '');
  const rows: { tbl: 'nodes' | 'grants'; line: number | null; key: string; problem: string }[] = await tx.query(sql`
    (select 'nodes' as tbl, line, seq, 0 as ord, problem,
            case when id is null then pg_catalog.format('row with null id (kind %s, owner_id %s)', permgraph._describe_id(kind), permgraph._describe_id(owner_id))
                 else pg_catalog.format('id %s', permgraph._describe_id(id)) end as key
     from permgraph.import_nodes where run = ${ctx.name} and problem is not null
     order by seq limit ${limit})
    union all
    (select 'grants', line, seq, 1, problem,
            pg_catalog.format('grant %s -> %s (source %s)', permgraph._describe_id(tail_id), permgraph._describe_id(head_id), permgraph._describe_id(source))
     from permgraph.import_grants where run = ${ctx.name} and problem is not null
     order by seq limit ${limit})
    order by ord, seq limit ${limit}`);
  return rows.map((r) => ({
    table: r.tbl,
    origin: r.line === null ? r.key : `${label(r.tbl === 'nodes' ? ctx.nodes : ctx.grants)} line ${r.line}`,
    line: r.line === null ? null : Number(r.line),
    problem: r.problem,
  }));
}
