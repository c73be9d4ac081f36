-- permgraph 012: batch plans that hold on big batches and fresh loads.
--
-- Redefines functions of sql/004 and sql/005 (applied migrations are never
-- edited; these definitions replace theirs). Measured on the benchmark's
-- org large graph (5.6M rows; bench/FINDINGS.md, finding 9):
--   * _compute_all analyzes nodes and edges first: the first refresh after a
--     bulk load took 287 s without edge statistics, 64-84 s with them;
--   * _write_diff inserts new rows in primary-key order (a full refresh from
--     empty: 64 s instead of 80-88 s);
--   * _build_region hashes the joins of walk results (2,000 memberships:
--     6.5 s to 0.36 s) and indexes/analyzes the region only above 200 pairs;
--   * _compute_region starts from the region users' own edges and looks up
--     border levels by key (same batch: 7.0 s to 1.9 s);
--   * apply_changes: the change-count bound for a full recomputation is
--     100,000 (= DEFAULT_MAX_BATCH in src/engine/apply.ts); the region-size
--     guard does the real work.

-- Full computation into pg_temp.permgraph_new, in one statement (one snapshot).
-- First the closure of every group a user enters directly (best level to each
-- node it reaches, and whether some path ends with a manage edge), then each
-- user's edges joined with the closures of the groups they enter. Users share groups, so this is
-- far less work than walking from every user.
create or replace function permgraph._compute_all() returns void
language plpgsql
-- quiet the NOTICEs of drop table if exists
set client_min_messages = warning as $$
begin
  -- Fresh statistics first: a full recomputation often follows a bulk load,
  -- before autovacuum has analyzed the edges, and without statistics the
  -- planner nests loops over the whole edge table (287 s instead of ~65 s for
  -- the first refresh of org large). Sampling costs well under a second
  -- here; without the right to analyze, PostgreSQL only warns.
  analyze permgraph.nodes;
  analyze permgraph.edges;
  drop table if exists pg_temp.permgraph_new;
  create temp table permgraph_new on commit drop as
  with recursive walk(group_id, node_id, node_kind, level, last_edge_manage) as (
    select e.tail_id, e.head_id, e.head_kind, e.level, e.level = 3 and e.head_kind = 'user'
    from permgraph.edges e
    where e.tail_kind = 'group'
      -- only groups some user enters directly need a closure (a deep chain
      -- entered at a few places must not pay for the closure of every link)
      and e.tail_id in (select head_id from permgraph.edges where tail_kind = 'user' and head_kind = 'group')
    union
    select w.group_id, e.head_id, e.head_kind, least(w.level, e.level), e.level = 3 and e.head_kind = 'user'
    from walk w
    join permgraph.edges e on e.tail_id = w.node_id
    where w.node_kind = 'group'
  ), closure as (
    select group_id, node_id, node_kind, max(level) as level, bool_or(last_edge_manage) as last_edge_manage
    from walk
    group by group_id, node_id, node_kind
  ), paths as (
    select id as user_id, id as node_id, 'user' as node_kind, 3::smallint as level, true as last_edge_manage
    from permgraph.nodes where kind = 'user'
    union all
    select e.tail_id, e.head_id, e.head_kind, e.level, e.level = 3
    from permgraph.edges e
    where e.tail_kind = 'user'
    union all
    select e.tail_id, c.node_id, c.node_kind, least(e.level, c.level), c.last_edge_manage
    from permgraph.edges e
    join closure c on c.group_id = e.head_id
    where e.tail_kind = 'user'
  )
  select user_id, node_id as target_id, max(level)::smallint as level,
         bool_or(permgraph._path_traverses(node_kind, last_edge_manage)) as traverse_owned
  from paths
  group by user_id, node_id;
  analyze pg_temp.permgraph_new;
end $$;

-- Writes pg_temp.permgraph_new into permissions, touching only rows whose
-- value differs. With p_scoped, only pairs listed in pg_temp.permgraph_region
-- are compared (the incremental path); otherwise the whole table. One full
-- join finds the differences and one statement writes just those rows.
create or replace function permgraph._write_diff(p_scoped boolean,
  out inserted bigint, out updated bigint, out deleted bigint)
language plpgsql as $$
begin
  -- The only text spliced in is one of two fixed relation expressions.
  execute format($diff$
    with diff as (
      select coalesce(n.user_id, p.user_id) as user_id, coalesce(n.target_id, p.target_id) as target_id,
             n.level, n.traverse_owned, p.user_id is null as is_new, n.user_id is null as is_gone
      from pg_temp.permgraph_new n
      full join %s p on p.user_id = n.user_id and p.target_id = n.target_id
      where (p.level, p.traverse_owned) is distinct from (n.level, n.traverse_owned)
    ), deleted as (
      delete from permgraph.permissions p using diff d
      where d.is_gone and p.user_id = d.user_id and p.target_id = d.target_id
      returning 1
    ), updated as (
      update permgraph.permissions p set level = d.level, traverse_owned = d.traverse_owned
      from diff d
      where not d.is_new and not d.is_gone and p.user_id = d.user_id and p.target_id = d.target_id
      returning 1
    ), inserted as (
      insert into permgraph.permissions (user_id, target_id, level, traverse_owned)
      select user_id, target_id, level, traverse_owned from diff where is_new
      order by user_id, target_id  -- in primary-key order: each index page is visited once, not once per row
      returning 1
    )
    select (select count(*) from inserted), (select count(*) from updated), (select count(*) from deleted)
    $diff$,
    case when p_scoped
      then '(select p.* from permgraph.permissions p join pg_temp.permgraph_region r on r.user_id = p.user_id and r.target_id = p.target_id)'
      else 'permgraph.permissions' end)
  into inserted, updated, deleted;
end $$;

-- Pairs (user, target) a batch can affect: for each changed edge tail -> head,
-- every user with a path to the tail (through groups) times every node
-- reachable from the head (through groups), both in the union of the old and
-- new graphs (current edges plus the batch's changed pairs). Any pair outside
-- this region has the same paths before and after, so its stored row stands.
-- Returns false, creating nothing, when the region would exceed p_max_pairs.
create or replace function permgraph._build_region(p_max_pairs bigint) returns boolean
language plpgsql
-- The walks step through LATERAL lookups and the removed-edge test is a
-- scalar subquery: both are index probes under any setting. What is left are
-- the joins of walk results, which must hash: permgraph.changes is a queue,
-- usually analyzed while empty, so the planner expects one change and would
-- nest loops (6.5 s instead of 0.6 s for 2,000 memberships on org large).
set enable_nestloop = off
-- quiet the NOTICEs of drop table if exists
set client_min_messages = warning as $$
declare
  region_rows bigint;
begin
  drop table if exists pg_temp.permgraph_region;
  -- One statement (each temporary table costs a millisecond or more). When
  -- the region would be too large it holds only a (null, null) marker row.
  create temp table permgraph_region on commit drop as
  with recursive batch as (
    select distinct tail_id, tail_kind, head_id, head_kind
    from permgraph.changes where not trash_changed
  ), removed as (
    -- changed edges the current graph no longer has: with permgraph.edges they
    -- make the union of the old and new graphs (usually few, so the walks'
    -- per-node scans of this CTE stay cheap even for large batches of additions)
    -- (a scalar subquery: always an index probe, whatever the join settings)
    select b.tail_id, b.tail_kind, b.head_id, b.head_kind
    from batch b
    where not coalesce((select true from permgraph.edges e
                        where e.tail_id = b.tail_id and e.head_id = b.head_id limit 1), false)
  ), down(origin, node_id, node_kind) as (
    select distinct head_id, head_id, head_kind from batch
    union
    select d.origin, e.head_id, e.head_kind
    from down d
    cross join lateral (  -- the union graph: current edges and the removed ones
      select head_id, head_kind from permgraph.edges where tail_id = d.node_id
      union all
      select head_id, head_kind from removed where tail_id = d.node_id) e
    where d.node_kind = 'group'
  ), up(origin, node_id, node_kind) as (
    select distinct tail_id, tail_id, tail_kind from batch
    union
    select u.origin, e.tail_id, e.tail_kind
    from up u
    cross join lateral (
      select tail_id, tail_kind from permgraph.edges where head_id = u.node_id
      union all
      select tail_id, tail_kind from removed where head_id = u.node_id) e
    where u.node_kind = 'group'
  ), up_users as (
    select distinct origin, node_id as user_id from up where node_kind = 'user'
  ), estimate as (
    select coalesce(sum(uc.n * dc.n), 0) as pairs
    from batch c
    join (select origin, count(*) as n from up_users group by origin) uc on uc.origin = c.tail_id
    join (select origin, count(*) as n from down group by origin) dc on dc.origin = c.head_id
  )
  select distinct u.user_id, d.node_id as target_id
  from batch c
  join up_users u on u.origin = c.tail_id
  join down d on d.origin = c.head_id
  where (select pairs from estimate) <= p_max_pairs
  union all
  select null, null where (select pairs from estimate) > p_max_pairs;
  get diagnostics region_rows = row_count;
  if exists (select 1 from pg_temp.permgraph_region where user_id is null) then
    return false;
  end if;
  -- A single local change has a region of tens of pairs, probed faster by
  -- scanning than an index takes to build (the planner sizes an unanalyzed
  -- temporary table by its pages). Scans grow with the region, and every
  -- walk step probes it: from 200 pairs on, index and statistics (a batch of
  -- 100 churn changes, 1,316 pairs: compute 40 ms with them, 140-300 without).
  if region_rows > 200 then
    create unique index on pg_temp.permgraph_region (user_id, target_id);
    analyze pg_temp.permgraph_region;
  end if;
  return true;
end $$;

-- Recomputes the rows of the region into pg_temp.permgraph_new. Paths enter
-- the region either straight from the user or over an edge from a group
-- outside it, whose stored level is still right; once inside they never leave
-- (the region is closed under following edges out of groups).
create or replace function permgraph._compute_region() returns void
language plpgsql
-- quiet the NOTICEs of drop table if exists
-- regions are small next to the graph: walk them by index, never by hashing whole tables
set enable_hashjoin = off
set enable_mergejoin = off
set client_min_messages = warning as $$
declare
  computed bigint;
begin
  drop table if exists pg_temp.permgraph_new;
  create temp table permgraph_new on commit drop as
  with recursive walk(user_id, node_id, node_kind, level, last_edge_manage) as (
    -- the region's users' own edges into it (a user has few edges: start
    -- from them rather than probing the edges for every region pair)
    select u.id, e.head_id, e.head_kind, e.level, e.level = 3 and e.head_kind = 'user'
    from (select distinct user_id from pg_temp.permgraph_region) ru
    join permgraph.nodes u on u.id = ru.user_id and u.kind = 'user'
    cross join lateral (
      select e.head_id, e.head_kind, e.level from permgraph.edges e where e.tail_id = u.id offset 0) e
    where coalesce((select true from pg_temp.permgraph_region r
                    where r.user_id = u.id and r.target_id = e.head_id), false)
    union all
    select r.user_id, e.head_id, e.head_kind, least(e.stored_level, e.level), e.level = 3 and e.head_kind = 'user'
    from pg_temp.permgraph_region r
    -- per region pair: its in-edges from groups, each with the user's stored
    -- level on the group, looked up by key (a scalar subquery: joining the
    -- user's rows first would pair each region pair with all of them)
    cross join lateral (
      select e.head_id, e.head_kind, e.level, e.tail_id,
             (select p.level from permgraph.permissions p
              where p.user_id = r.user_id and p.target_id = e.tail_id) as stored_level
      from permgraph.edges e where e.head_id = r.target_id and e.tail_kind = 'group') e
    where e.stored_level is not null
      and not coalesce((select true from pg_temp.permgraph_region inside
                        where inside.user_id = r.user_id and inside.target_id = e.tail_id), false)
    union
    select w.user_id, e.head_id, e.head_kind, least(w.level, e.level), e.level = 3 and e.head_kind = 'user'
    from walk w
    join permgraph.edges e on e.tail_id = w.node_id
    where w.node_kind = 'group'
      -- probe the region per edge, as a scalar subquery (an EXISTS becomes a
      -- join that pairs every walk row with every region row of its user,
      -- quadratic in the region)
      and coalesce((select true from pg_temp.permgraph_region r
                    where r.user_id = w.user_id and r.target_id = e.head_id), false)
  ), paths as (
    select user_id, node_id, node_kind, level, last_edge_manage from walk
    union all
    select r.user_id, r.target_id, 'user', 3::smallint, true
    from pg_temp.permgraph_region r
    join permgraph.nodes u on u.id = r.user_id and u.kind = 'user'
    where r.target_id = r.user_id
  )
  select user_id, node_id as target_id, max(level)::smallint as level,
         bool_or(permgraph._path_traverses(node_kind, last_edge_manage)) as traverse_owned
  from paths
  group by user_id, node_id;
  get diagnostics computed = row_count;
  if computed > 200 then  -- (see _build_region)
    analyze pg_temp.permgraph_new;
  end if;
end $$;

-- Applies every pending change visible to this transaction, as one batch,
-- and marks them done. This is the only code path that writes permissions:
-- the worker, refresh() and tests all come through here.
--
-- Consistency: the batch and the graph must be read from the same state.
-- Under REPEATABLE READ (what the worker uses) the snapshot guarantees it and
-- writers are never blocked. Under READ COMMITTED every statement sees a new
-- snapshot, so nodes and grants are locked in SHARE mode for the duration
-- (writers wait; readers do not).
--
-- p_max_changes: more pending changes than this are applied by a full
-- recomputation instead. p_max_pairs: likewise for a larger affected region
-- (default: a quarter of the table, at least 50,000 pairs).
create or replace function permgraph.apply_changes(
  p_max_changes integer default 100000,  -- = DEFAULT_MAX_BATCH in src/engine/apply.ts
  p_max_pairs bigint default null,
  p_force_full boolean default false
) returns jsonb
language plpgsql as $$
declare
  started timestamptz := clock_timestamp();
  pending bigint;
  needs_full boolean;
  mode text;
  trash_roots text[];
  pairs bigint := null;
  diff record;
  max_pairs bigint := p_max_pairs;
  result jsonb;
begin
  perform pg_advisory_xact_lock(permgraph._applier_lock_key());
  if current_setting('transaction_isolation') = 'read committed' then
    lock table permgraph.nodes, permgraph.grants in share mode;
  end if;
  select count(*), coalesce(bool_or(tail_kind = '*'), false) into pending, needs_full from permgraph.changes;
  if pending = 0 and not p_force_full then
    return jsonb_build_object('mode', 'none', 'changes', 0);
  end if;
  if max_pairs is null then
    select greatest(50000, (reltuples * 0.25)::bigint) into max_pairs
    from pg_class where oid = 'permgraph.permissions'::regclass;
  end if;
  if p_force_full or needs_full or pending > p_max_changes or not permgraph._build_region(max_pairs) then
    mode := 'full';
    perform permgraph._compute_all();
    select * into diff from permgraph._write_diff(false);
    perform permgraph._refresh_trash(null);
  else
    mode := 'incremental';
    select count(*) into pairs from pg_temp.permgraph_region;
    if pairs > 0 then
      perform permgraph._compute_region();
      select * into diff from permgraph._write_diff(true);
    else
      select 0::bigint as inserted, 0::bigint as updated, 0::bigint as deleted into diff;
    end if;
    select array_agg(distinct head_id) into trash_roots from permgraph.changes where trash_changed;
    if trash_roots is not null then
      perform permgraph._refresh_trash(trash_roots);
    end if;
  end if;
  delete from permgraph.changes;  -- exactly the rows this snapshot saw (or all, with writers locked out)
  result := jsonb_build_object(
    'mode', mode, 'changes', pending, 'region_pairs', pairs,
    'inserted', diff.inserted, 'updated', diff.updated, 'deleted', diff.deleted,
    'ms', round((extract(epoch from clock_timestamp() - started) * 1000)::numeric, 3));
  update permgraph.applier_state set
    last_batch_at = now(), last_batch_mode = mode, last_batch_changes = pending,
    last_batch_ms = (result ->> 'ms')::double precision,
    rows_inserted = diff.inserted, rows_updated = diff.updated, rows_deleted = diff.deleted;
  return result;
end $$;
