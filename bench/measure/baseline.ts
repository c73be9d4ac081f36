// The baselines: the same questions answered at read time by a recursive walk
// over the graph's edges (permgraph.edges: grants and ownerships in one table
// indexed by tail and head, the best form an application could give its own
// graph; no materialized results), following docs/semantics.md. A walk over a
// UNION of grants and nodes would be slower (PostgreSQL cannot probe the
// ownership arm by index inside the recursion), which would flatter permgraph. Installed as functions in the bench schema of the bench
// database; nothing here reads permgraph.permissions.
import { sql, type Queryable } from '../../src/db/pool.ts';

/**
 * bench.rec_reach(user, level): every node a path from the user reaches using
 * only edges of at least that level, with whether the reaching path may
 * extend to what the node owns (groups: yes; users: last edge manage or the
 * user itself; objects: no). Paths start at the user and continue only out of
 * groups; UNION makes cycles terminate.
 */
const REACH = `
create or replace function bench.rec_reach(p_user text, p_level int)
returns table (node_id text, node_kind text, traverses boolean)
language sql stable as $fn$
  with recursive walk(node_id, node_kind, last_manage, is_start) as (
    select u.id, u.kind, true, true from permgraph.nodes u where u.id = p_user and u.kind = 'user'
    union
    select e.head_id, e.head_kind, e.level = 3, false
    from walk w
    join permgraph.edges e on e.tail_id = w.node_id
    where (w.node_kind = 'group' or w.is_start) and e.level >= p_level
  )
  select node_id, node_kind,
         bool_or(case node_kind when 'group' then true when 'object' then false else last_manage end)
  from walk group by node_id, node_kind
$fn$`;

/** bench.rec_hidden(node): trash at read time (own trash_at, or a group above it). */
const HIDDEN = `
create or replace function bench.rec_hidden(p_id text) returns boolean
language sql stable as $fn$
  with recursive up(id, kind, owner_id, trash_at) as (
    select n.id, n.kind, n.owner_id, n.trash_at from permgraph.nodes n where n.id = p_id and n.kind <> 'user'
    union all
    select n.id, n.kind, n.owner_id, n.trash_at from up join permgraph.nodes n on n.id = up.owner_id
    where n.kind = 'group' and up.owner_id <> up.id
  )
  select exists (select 1 from up where trash_at <= now())
$fn$`;

/** bench.rec_check(user, target, level): check() answered by walking (stops at the first match). */
const CHECK = `
create or replace function bench.rec_check(p_user text, p_target text, p_level int) returns boolean
language plpgsql stable as $fn$
declare
  target_owner text;
begin
  select owner_id into target_owner from permgraph.nodes where id = p_target;
  if not found or bench.rec_hidden(p_target) then
    return false;
  end if;
  return exists (
    with recursive walk(node_id, node_kind, last_manage, is_start) as (
      select u.id, u.kind, true, true from permgraph.nodes u where u.id = p_user and u.kind = 'user'
      union
      select e.head_id, e.head_kind, e.level = 3, false
      from walk w
      join permgraph.edges e on e.tail_id = w.node_id
      where (w.node_kind = 'group' or w.is_start) and e.level >= p_level
    )
    select 1 from walk
    where node_id = p_target
       or (node_id = target_owner and (node_kind = 'group' or (node_kind = 'user' and last_manage))));
end $fn$`;

/** bench.rec_viewers(target): users who can read the target, by walking grants and ownership backwards. */
const VIEWERS = `
create or replace function bench.rec_viewers(p_target text) returns table (user_id text)
language sql stable as $fn$
  with recursive back(node_id, node_kind) as (
    select n.id, n.kind from permgraph.nodes n where n.id = p_target
    union
    select e.tail_id, e.tail_kind
    from back b
    join permgraph.edges e on e.head_id = b.node_id
    where b.node_kind = 'group' or b.node_id = p_target
  )
  select distinct node_id from back where node_kind = 'user' and not bench.rec_hidden(p_target)
$fn$`;

/** Times n calls of permgraph.check or bench.rec_check inside the server; one duration (ms) per call. */
const TIMER = `
create or replace function bench.time_checks(p_recursive boolean, p_users text[], p_targets text[], p_level int)
returns double precision[]
language plpgsql as $fn$
declare
  durations double precision[] := '{}';
  started timestamptz;
  allowed boolean;
begin
  for i in 1 .. coalesce(array_length(p_users, 1), 0) loop
    started := clock_timestamp();
    if p_recursive then
      allowed := bench.rec_check(p_users[i], p_targets[i], p_level);
    else
      allowed := permgraph.check(p_users[i], p_targets[i], p_level);
    end if;
    durations := durations || extract(epoch from clock_timestamp() - started) * 1000;
  end loop;
  return durations;
end $fn$`;

/**
 * Times n runs of a listing query ($1 the user) inside the server, its rows
 * counted there; one duration (ms) per run. On a shared machine the client's
 * round trip of a millisecond query mostly measures the CPU queue.
 */
const QUERY_TIMER = `
create or replace function bench.time_query(p_query text, p_user text, p_reps int)
returns double precision[]
language plpgsql as $fn$
declare
  durations double precision[] := '{}';
  started timestamptz;
  found_rows bigint;
begin
  for i in 1 .. p_reps loop
    started := clock_timestamp();
    execute 'select count(*) from (' || p_query || ') q' into found_rows using p_user;
    durations := durations || extract(epoch from clock_timestamp() - started) * 1000;
  end loop;
  return durations;
end $fn$`;

export async function installBaselines(db: Queryable): Promise<void> {
  for (const text of [REACH, HIDDEN, CHECK, VIEWERS, TIMER, QUERY_TIMER]) await db.query(sql.__dangerous__rawValue(text));
}

/**
 * Listing queries: $1 user, ordered by id; the first page adds LIMIT 100 (the
 * recursion) or asks list_rows for 100 rows. permgraph's side is
 * permgraph.list_rows (sql/functions/120_listing.sql), which chooses per call
 * among walking the user's owners, walking bench_docs in id order, and one
 * read of bench_docs against all the user's owners; the join it replaces
 * (docs/sql.md) is kept as LISTING_JOIN for comparison.
 */
export const LISTING = {
  permgraph: `
    select d.id, d.title from permgraph.list_rows(null::public.bench_docs, 'id', 'owner_id', $1::text, 1, null, 100000) d`,
  permgraphPage: `
    select d.id, d.title from permgraph.list_rows(null::public.bench_docs, 'id', 'owner_id', $1::text, 1, null, 100) d`,
  recursive: `
    select d.id, d.title from public.bench_docs d
    join (select node_id from bench.rec_reach($1, 1) where traverses and not bench.rec_hidden(node_id)) v
      on v.node_id = d.owner_id
    order by d.id`,
} as const;

/**
 * The floor of a whole list: as many rows of bench_docs, in id order, with no
 * permission filter at all ($1: how many). What reading and transferring
 * that many rows costs on this machine, whoever lists them. The filter on
 * the title keeps its server-side timing (bench.time_query counts the rows)
 * reading every title, as the client's read and every listing do: without
 * it, counting the rows was an index-only scan of the ids (tree: 4 ms,
 * against 25 ms with the titles; bench/FINDINGS.md 15).
 */
export const LISTING_FLOOR = `
    select d.id, d.title from public.bench_docs d where octet_length(d.title) >= 0 order by d.id limit $1::bigint`;

/**
 * The nodes the user may act on, as listTargets (src/app/listing.ts) reads
 * them: a first page (100 and one more, to know whether more follow) and
 * the whole list. $1: the user.
 */
export const TARGETS = {
  page: `select target_id, kind, level, valid_until from permgraph.list_targets($1::text, 1, null, null, 101)`,
  whole: `select target_id, kind, level, valid_until from permgraph.list_targets($1::text, 1, null, null, 100000)`,
} as const;

/** The documented join (docs/sql.md) the listing used before list_rows. */
export const LISTING_JOIN = `
    select d.id, d.title from public.bench_docs d
    where exists (select 1 from permgraph.permissions p
                  where p.user_id = $1 and p.target_id = d.owner_id and p.level >= 1 and p.traverse_owned)
      and not exists (select 1 from permgraph.trashed_groups t where t.group_id = d.owner_id and t.trash_at <= now())
    order by d.id`;

/** Who can read $1. */
export const VIEWERS_QUERY = {
  permgraph: `
    select p.user_id from permgraph.permissions p where p.target_id = $1 and p.level >= 1 and not permgraph.is_trashed($1)
    union
    select p.user_id from permgraph.nodes t
    join permgraph.permissions p on p.target_id = t.owner_id and p.traverse_owned and p.level >= 1
    where t.id = $1 and not permgraph.is_trashed($1)`,
  recursive: `select user_id from bench.rec_viewers($1)`,
} as const;
