// Plans captured with auto_explain (row counts, never times), for tests that
// hold a statement's work to the size of its input whatever the statistics.
import pg from 'pg';

export interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Function Name'?: string;
  'Index Name'?: string;
  'Actual Rows'?: number;
  'Actual Loops'?: number;
  'Rows Removed by Filter'?: number;
  'Rows Removed by Join Filter'?: number;
  'Rows Removed by Index Recheck'?: number;
  Plans?: PlanNode[];
}

export interface CapturedPlan {
  query: string;
  plan: PlanNode;
}

/** The rows a plan node handles in all: rows out plus rows thrown away, over all loops (EXPLAIN gives per-loop averages). */
export function work(node: PlanNode): number {
  const loops = node['Actual Loops'] ?? 1;
  const removed = (node['Rows Removed by Filter'] ?? 0) + (node['Rows Removed by Join Filter'] ?? 0) + (node['Rows Removed by Index Recheck'] ?? 0);
  return ((node['Actual Rows'] ?? 0) + removed) * loops;
}

/** The plan node that handles the most rows, and how many. */
export function heaviest(node: PlanNode): { type: string; relation?: string; rows: number } {
  let best: { type: string; relation?: string; rows: number } = { type: node['Node Type'], relation: node['Relation Name'], rows: work(node) };
  for (const child of node.Plans ?? []) {
    const h = heaviest(child);
    if (h.rows > best.rows) best = h;
  }
  return best;
}

/**
 * Runs `run` on a connection of its own with auto_explain logging every
 * statement, nested ones included (those inside SQL and PL/pgSQL functions),
 * and returns their plans with actual row counts.
 */
export async function capturePlans(url: string, run: (client: pg.Client) => Promise<void>): Promise<CapturedPlan[]> {
  const client = new pg.Client({ connectionString: url });
  const plans: CapturedPlan[] = [];
  client.on('notice', (notice) => {
    const text = notice.message ?? '';
    const json = text.indexOf('{');
    if (!text.startsWith('duration:') || json < 0) return;
    const parsed = JSON.parse(text.slice(json)) as { 'Query Text': string; Plan: PlanNode };
    plans.push({ query: parsed['Query Text'], plan: parsed.Plan });
  });
  await client.connect();
  try {
    await client.query(`set search_path = pg_catalog, pg_temp; load 'auto_explain';
      set auto_explain.log_min_duration = 0; set auto_explain.log_analyze = on; set auto_explain.log_timing = off;
      set auto_explain.log_nested_statements = on; set auto_explain.log_format = json; set auto_explain.log_level = notice`);
    await run(client);
  } finally {
    await client.end();
  }
  return plans;
}

/** One line naming a statement in an assertion message. */
export function describeQuery(query: string): string {
  return query.replace(/\s+/g, ' ').slice(0, 160);
}
