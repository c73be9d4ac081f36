// Validation (set-based, in SQL: permgraph._import_validate in
// sql/functions/150_import.sql): every bad staged
// row gets its reason; the counts and the first problems make the summary.
import { DEFAULT_IMPORT_MAX_PROBLEMS } from '../../constants.ts';
import { sql, type Queryable } from '../../db/pool.ts';
import type { ImportProblem, ImportSummary, RunContext, TableCounts } from './types.ts';

/** A summary before loading: what was read and what is invalid. */
export type ValidatedRun = Omit<ImportSummary, 'loaded' | 'refresh'>;

/** Validates the run's staged rows (inside the load's transaction) and counts them. */
export async function validateRun(tx: Queryable, ctx: RunContext, resumed: boolean): Promise<ValidatedRun> {
  const [{ counts }] = await tx.query(sql`select permgraph._import_validate(${ctx.name}) as counts`);
  const problems = await listProblems(tx, ctx.name, ctx.options.maxProblems ?? DEFAULT_IMPORT_MAX_PROBLEMS);
  const invalid = Number(counts.nodes_invalid) + Number(counts.grants_invalid);
  return {
    name: ctx.name,
    dryRun: ctx.options.dryRun === true,
    resumed,
    invalid,
    problems,
    nodes: tableCounts(Number(counts.nodes_valid) + Number(counts.nodes_invalid), Number(counts.nodes_invalid)),
    grants: tableCounts(Number(counts.grants_valid) + Number(counts.grants_invalid), Number(counts.grants_invalid)),
  };
}

function tableCounts(read: number, invalid: number): TableCounts {
  return { read, invalid, inserted: 0, updated: 0, unchanged: 0 };
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
