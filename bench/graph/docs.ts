// The application table of the listing benchmark: documents owned by groups,
// not registered as nodes (resolved through owner_id at query time).
import { sql, type Queryable } from '../../src/db/pool.ts';

export const MAX_DOCS = 1_000_000;
export const DOCS_PER_GROUP = 10;

/** Creates public.bench_docs with min(10 × groups, 1M) rows, owner i·7919 mod |groups| in id order. */
export async function createDocs(db: Queryable): Promise<number> {
  await db.query(sql`
    drop table if exists public.bench_docs;
    create table public.bench_docs (
      id bigint primary key,
      owner_id text collate "C" not null,
      title text not null
    )`);
  const [groups] = await db.query(sql`select count(*)::bigint as n from permgraph.nodes where kind = 'group'`);
  const total = Math.min(MAX_DOCS, DOCS_PER_GROUP * Number(groups?.n ?? 0));
  const groupCount = Number(groups?.n ?? 0);
  // An equality join (hashable): each doc's owner rank is computed on its own side.
  await db.query(sql`
    with g as (
      select id, (row_number() over (order by id) - 1)::bigint as rn from permgraph.nodes where kind = 'group'
    ), d as (
      select i, (i * 7919) % ${groupCount}::bigint as rn from generate_series(1, ${total}::bigint) as i
    )
    insert into public.bench_docs (id, owner_id, title)
    select d.i, g.id, 'document ' || d.i from d join g on g.rn = d.rn`);
  await db.query(sql`create index bench_docs_owner_idx on public.bench_docs (owner_id, id)`);
  // vacuumed as well as analyzed: a table at rest, as autovacuum leaves an
  // application's table after a bulk load (its visibility map set), not one
  // whose first autovacuum may start in the middle of the reads phase
  await db.query(sql`vacuum (analyze) public.bench_docs`);
  return total;
}
