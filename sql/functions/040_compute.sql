-- Computing the permission table from scratch, and writing the difference.
-- Walks follow permgraph.edges (kept by 020_capture.sql). The full refresh
-- walks from every user; the incremental path (050_region.sql) walks only
-- the affected region, seeded from the stored rows at the region's border.
-- Measured choices (bench/FINDINGS.md, finding 9): the full computation
-- analyzes nodes and edges first (287 s -> 64-84 s for the first refresh
-- after a bulk load of org large), and the diff inserts new rows in
-- primary-key order (64 s instead of 80-88 s from empty).
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

create or replace function permgraph._applier_lock_key() returns bigint
language sql immutable
set search_path = pg_catalog, pg_temp
as $$ select 7238001002::bigint $$;

-- traverse_owned of one path ending at a node of this kind (semantics.md).
-- An SQL-standard body instead of a SET search_path clause: the body is
-- resolved once, when it is created (under migrate's pinned path), and the
-- function stays inlinable, which matters because the full recomputation
-- evaluates it for every path of every user.
create or replace function permgraph._path_traverses(p_head_kind text, p_last_edge_manage boolean) returns boolean
language sql immutable
return case p_head_kind when 'group' then true when 'object' then false else p_last_edge_manage end;

-- Full computation into pg_temp.permgraph_all, in one statement (one snapshot).
-- First the closure of every group a user enters directly (best level to each
-- node it reaches, and whether some path ends with a manage edge), then each
-- user's edges joined with the closures of the groups they enter. Users share groups, so this is
-- far less work than walking from every user.
create or replace function permgraph._compute_all() returns void
language plpgsql
-- quiet the NOTICEs of drop table if exists
set client_min_messages = warning
set search_path = pg_catalog, pg_temp
set jit = off
as $$
begin
  -- Fresh statistics first: a full recomputation often follows a bulk load,
  -- before autovacuum has analyzed the edges, and without statistics the
  -- planner nests loops over the whole edge table (287 s instead of ~65 s for
  -- the first refresh of org large). Sampling costs well under a second
  -- here; without the right to analyze, PostgreSQL only warns.
  analyze permgraph.nodes;
  analyze permgraph.edges;
  drop table if exists pg_temp.permgraph_all;
  create temp table permgraph_all on commit drop as
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
  analyze pg_temp.permgraph_all;
end $$;

-- Writes the computed rows into permissions, touching only rows whose value
-- differs. With p_scoped (the incremental path), only the pairs listed in
-- pg_temp.permgraph_region are compared, against pg_temp.permgraph_new:
-- each pair probes both by key, whatever the planner thinks of the size of
-- an unanalyzed temporary table (it guessed 850 rows for 6, and hashed a
-- scan of the whole permissions table to delete 22 rows). Otherwise (a full
-- recomputation) pg_temp.permgraph_all is full-joined with the whole table.
-- One statement writes just the differing rows.
create or replace function permgraph._write_diff(p_scoped boolean,
  out inserted bigint, out updated bigint, out deleted bigint)
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
-- restored on exit, so that the scoped branch's set_config stays inside
set enable_hashjoin = on
set enable_mergejoin = on
as $$
begin
  if p_scoped then
    perform set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true);
  end if;
  -- The only text spliced in: one of two fixed queries, and true or false.
  execute format($diff$
    with diff as (%s    ), deleted as (
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
    ), recorded as (
      -- the change stream's events (170_changes.sql), only while a consumer is registered
      insert into permgraph.permission_changes (user_id, target_id, old_level, new_level, old_traverse_owned, new_traverse_owned)
      select user_id, target_id, old_level, level, old_traverse_owned, traverse_owned from diff where %s
    )
    select (select count(*) from inserted), (select count(*) from updated), (select count(*) from deleted)
    $diff$,
    case when p_scoped then $scoped$
      select r.user_id, r.target_id, n.level, n.traverse_owned, p.user_id is null as is_new, n.user_id is null as is_gone,
             p.level as old_level, p.traverse_owned as old_traverse_owned
      from pg_temp.permgraph_region r
      left join pg_temp.permgraph_new n on n.user_id = r.user_id and n.target_id = r.target_id
      left join permgraph.permissions p on p.user_id = r.user_id and p.target_id = r.target_id
      where (p.level, p.traverse_owned) is distinct from (n.level, n.traverse_owned)
        and r.user_id is not null
    $scoped$ else $full$
      select coalesce(n.user_id, p.user_id) as user_id, coalesce(n.target_id, p.target_id) as target_id,
             n.level, n.traverse_owned, p.user_id is null as is_new, n.user_id is null as is_gone,
             p.level as old_level, p.traverse_owned as old_traverse_owned
      from pg_temp.permgraph_all n
      full join permgraph.permissions p on p.user_id = n.user_id and p.target_id = n.target_id
      where (p.level, p.traverse_owned) is distinct from (n.level, n.traverse_owned)
    $full$ end,
    case when permgraph._changes_begin_write() then 'true' else 'false' end)
  into inserted, updated, deleted;
end $$;
