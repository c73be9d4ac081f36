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

-- Whether some edge of the graph expires. Without one, every time inside
-- the engine is 'infinity': no row has a valid_until, permission_bounds
-- stays empty, and the shortcuts that rely on it (filling an empty table,
-- additions) are exact. One probe of edges_expiring_idx.
create or replace function permgraph._any_edge_expires() returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return exists (select 1 from permgraph.edges where expires_at is not null);
end $$;

-- Expiring grants (docs/semantics.md): the graph at time p_at leaves out
-- every edge whose expires_at <= p_at, and every row carries valid_until,
-- the earliest expiry at which it would change. A path is valid until the
-- earliest expiry on it ('infinity' inside the engine, null in the table), so
-- a walk state carries that time next to the path's level. Per pair (u, t),
-- for each level l, until_l = the latest time some path of level >= l stays
-- valid; the row's level L holds until until_L, and traverse_owned (true when
-- some path traverses) until traverse_until, the latest such path's time:
-- valid_until = least(until_L, traverse_until). For group rows the engine
-- also keeps until_l of the levels below L where it is later than
-- valid_until (permission_bounds): a recomputation seeded from such a row at
-- its region's border needs them. Without expiring grants every time is
-- 'infinity' and all of this collapses to one state per level, as before.

-- The row's valid_until from its per-level times (null = never).
create or replace function permgraph._valid_until(p_level smallint, p_until1 timestamptz, p_until2 timestamptz,
                                                  p_until3 timestamptz, p_traverse_until timestamptz) returns timestamptz
language sql immutable
return nullif(least(case p_level when 3 then p_until3 when 2 then p_until2 else p_until1 end, p_traverse_until),
              'infinity'::timestamptz);

-- What permission_bounds keeps of a group row for a level below its own
-- (p_of_level, 1 or 2): until when that level holds (p_until_of), when it
-- outlasts the level above it (p_until_above); null otherwise. Every
-- computation of rows writes its bound1 and bound2 with it.
create or replace function permgraph._level_bound(p_node_kind text, p_level smallint, p_of_level integer,
                                                  p_until_of timestamptz, p_until_above timestamptz) returns timestamptz
language sql immutable
return case when p_node_kind = 'group' and p_level > p_of_level and p_until_of > p_until_above then p_until_of end;

-- Every row of the table at the time in setting permgraph.compute_at
-- (set for the transaction by _compute_at below), in one
-- statement (one snapshot). First the closure of every group a user enters
-- directly (per node it reaches: the best level, and until when each level
-- and traversal hold), then each user's edges joined with the closures of
-- the groups they enter. Users share groups, so this is far less work than
-- walking from every user. Views, so that the callers below share one
-- definition and each plans it as part of its own statement (a view is
-- bound when created, whatever the reader's search_path; an SQL function
-- would be planned apart, or inlined only without its pinned search_path).
-- This one is exact whether or not edges expire; _computed_rows below uses
-- it only while some edge does.
create or replace view permgraph._computed_rows_expiring as
  with recursive live as not materialized (
    select tail_id, tail_kind, head_id, head_kind, level, coalesce(expires_at, 'infinity') as until
    from permgraph.edges
    where expires_at is null or expires_at > (select current_setting('permgraph.compute_at')::timestamptz)
  ), walk(group_id, node_id, node_kind, level, last_edge_manage, until) as (
    select e.tail_id, e.head_id, e.head_kind, e.level, e.level = 3 and e.head_kind = 'user', e.until
    from live e
    where e.tail_kind = 'group'
      -- only groups some user enters directly need a closure (a deep chain
      -- entered at a few places must not pay for the closure of every link)
      and e.tail_id in (select head_id from live where tail_kind = 'user' and head_kind = 'group')
    union
    select w.group_id, e.head_id, e.head_kind, least(w.level, e.level), e.level = 3 and e.head_kind = 'user', least(w.until, e.until)
    from walk w
    join live e on e.tail_id = w.node_id
    where w.node_kind = 'group'
  ), closure as (
    select group_id, node_id, node_kind, max(level) as level,
           max(until) as until1,
           max(until) filter (where level >= 2) as until2,
           max(until) filter (where level = 3) as until3,
           max(until) filter (where permgraph._path_traverses(node_kind, last_edge_manage)) as traverse_until
    from walk
    group by group_id, node_id, node_kind
  ), paths(user_id, node_id, node_kind, level, until1, until2, until3, traverse_until) as (
    select id, id, 'user', 3::smallint, 'infinity'::timestamptz, 'infinity'::timestamptz, 'infinity'::timestamptz, 'infinity'::timestamptz
    from permgraph.nodes where kind = 'user'
    union all
    select e.tail_id, e.head_id, e.head_kind, e.level, e.until,
           case when e.level >= 2 then e.until end,
           case when e.level = 3 then e.until end,
           case when permgraph._path_traverses(e.head_kind, e.level = 3) then e.until end
    from live e
    where e.tail_kind = 'user'
    union all
    -- (least() skips nulls: a level the closure lacks must stay null)
    select e.tail_id, c.node_id, c.node_kind, least(e.level, c.level), least(e.until, c.until1),
           case when e.level >= 2 and c.level >= 2 then least(e.until, c.until2) end,
           case when e.level = 3 and c.level = 3 then least(e.until, c.until3) end,
           case when c.traverse_until is not null then least(e.until, c.traverse_until) end
    from live e
    join closure c on c.group_id = e.head_id
    where e.tail_kind = 'user'
  ), per_pair as (
    select user_id, node_id as target_id, node_kind, max(level)::smallint as level,
           max(until1) as until1, max(until2) as until2, max(until3) as until3, max(traverse_until) as traverse_until
    from paths
    group by user_id, node_id, node_kind
  )
  select user_id, target_id, level, traverse_until is not null as traverse_owned,
         permgraph._valid_until(level, until1, until2, until3, traverse_until) as valid_until,
         permgraph._level_bound(node_kind, level, 1, until1, until2) as bound1,
         permgraph._level_bound(node_kind, level, 2, until2, until3) as bound2
  from per_pair;

-- The same computation when no edge expires: every time is 'infinity', so
-- valid_until and the bounds are null and traverse_owned is whether some
-- path traverses. Exact only while no edge expires. Built so that walks are
-- shared and every pair comes out once, with no per-pair aggregate over all
-- paths (bench/FINDINGS.md, finding 10):
-- - A hub is a node that more than one node enters (two distinct tails), or
--   that a user enters directly, or a user. Every other node (one tail, a
--   group, no user) is reached only through that tail, so from one hub at
--   most: the nearest hub above it.
-- - spans: from every group hub, the walk through groups that are not hubs,
--   stopping at hubs. Each non-hub node is in one span only, so the spans
--   together cost about one state per edge, however many users or entry
--   groups sit above (the walk per entry group repeated the 7,381 projects
--   of the tree shape under each of its teams, and the 1,000-group chain of
--   the deep shape under each of its 128 entry points).
-- - reach: from each group a user enters, the hubs it reaches along spans,
--   with the best level (a walk over hubs only).
-- - hub_rows: each user's row for every hub it reaches (itself included),
--   aggregated over its direct edges and their reach: small next to the table.
-- - the other rows: each user's row for a group hub, composed with that hub's
--   span. A non-hub node has one span, and hub_rows one row per (user, hub),
--   so each such pair comes out once: the diff can full-join it with the
--   stored table, and an empty table is filled without an aggregate.
-- Composition is exact: a path's level is the least of its edges, a pair's
-- the greatest over its paths, and whether a path traverses depends only on
-- its last edge (semantics.md), so (user -> hub) then (hub -> node) composes.
create or replace view permgraph._lasting_rows as
  with recursive hubs as materialized (
    select head_id as id, min(head_kind) as kind
    from permgraph.edges
    group by head_id
    having bool_or(tail_kind = 'user') or min(tail_id) <> max(tail_id) or min(head_kind) = 'user'
  ), spans(hub_id, node_id, node_kind, level, traverses) as (
    select e.tail_id, e.head_id, e.head_kind, e.level, permgraph._path_traverses(e.head_kind, e.level = 3 and e.head_kind = 'user')
    from permgraph.edges e
    where e.tail_id in (select id from hubs where kind = 'group')
    union
    select w.hub_id, e.head_id, e.head_kind, least(w.level, e.level),
           permgraph._path_traverses(e.head_kind, e.level = 3 and e.head_kind = 'user')
    from spans w
    join permgraph.edges e on e.tail_id = w.node_id
    where w.node_kind = 'group' and w.node_id not in (select id from hubs)
  ), span_best as materialized (
    -- (several states per node only through parallel edges)
    select hub_id, node_id, max(level) as level, bool_or(traverses) as traverses, node_id in (select id from hubs) as to_hub
    from spans
    group by hub_id, node_id
  ), reach(entry_id, hub_id, level, traverses) as (
    select distinct head_id, head_id, 3::smallint, true
    from permgraph.edges
    where tail_kind = 'user' and head_kind = 'group'
    union
    select r.entry_id, s.node_id, least(r.level, s.level), s.traverses
    from reach r
    join span_best s on s.hub_id = r.hub_id
    where s.to_hub
  ), hub_rows as materialized (
    select user_id, target_id, max(level)::smallint as level, bool_or(traverses) as traverse_owned
    from (
      select id as user_id, id as target_id, 3::smallint as level, true as traverses
      from permgraph.nodes
      where kind = 'user'
      union all
      select e.tail_id, e.head_id, e.level, permgraph._path_traverses(e.head_kind, e.level = 3)
      from permgraph.edges e
      where e.tail_kind = 'user' and e.head_kind <> 'group'
      union all
      select e.tail_id, r.hub_id, least(e.level, r.level), r.traverses
      from permgraph.edges e
      join reach r on r.entry_id = e.head_id
      where e.tail_kind = 'user'
    ) paths
    group by user_id, target_id
  )
  select user_id, target_id, level, traverse_owned
  from hub_rows
  union all
  select h.user_id, s.node_id, least(h.level, s.level), s.traverses
  from hub_rows h
  join span_best s on s.hub_id = h.target_id
  where not s.to_hub;

create or replace view permgraph._computed_rows_lasting as
  select user_id, target_id, level, traverse_owned,
         null::timestamptz as valid_until, null::timestamptz as bound1, null::timestamptz as bound2
  from permgraph._lasting_rows;

-- What a full computation reads: one of the two views above. Each branch
-- is gated by a one-time test (a condition on no row), so only one of them
-- runs: the other's walk never starts.
create or replace view permgraph._computed_rows as
  select * from permgraph._computed_rows_lasting where not permgraph._any_edge_expires()
  union all
  select * from permgraph._computed_rows_expiring where permgraph._any_edge_expires();

-- Sets the time _computed_rows computes at, for this transaction. A setting
-- is text, so the time is written in one form that reads back the same
-- whatever the session's DateStyle and TimeZone: UTC, ISO 8601. (p_at::text
-- follows the session: under DateStyle SQL its zone is an abbreviation, which
-- PostgreSQL 14-17 read from their own table, not from the session's zone:
-- IST under Asia/Kolkata came back as Israel's, 3.5 h later, and a full
-- recomputation left out grants that had hours to run.)
create or replace function permgraph._compute_at(p_at timestamptz) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform set_config('permgraph.compute_at',
                     case when isfinite(p_at) then to_char(p_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                          else p_at::text end,
                     true);
end $$;


-- Fresh statistics before a full computation: it often follows a bulk load,
-- before autovacuum has analyzed the edges, and without statistics the
-- planner nests loops over the whole edge table (287 s instead of ~65 s for
-- the first refresh of org large). Sampling costs well under a second
-- here; without the right to analyze, PostgreSQL only warns.
create or replace function permgraph._analyze_graph() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  analyze permgraph.nodes;
  analyze permgraph.edges;
end $$;

-- The full computation into pg_temp.permgraph_all, for _write_diff to compare.
create or replace function permgraph._compute_all(p_at timestamptz) returns void
language plpgsql
-- quiet the NOTICEs of drop table if exists
set client_min_messages = warning
set search_path = pg_catalog, pg_temp
set jit = off
as $$
begin
  perform permgraph._analyze_graph();
  drop table if exists pg_temp.permgraph_all;
  perform permgraph._compute_at(p_at);
  create temp table permgraph_all on commit drop as select * from permgraph._computed_rows;
  analyze pg_temp.permgraph_all;
end $$;

-- Filling an empty table needs no comparison: the computation is inserted
-- straight into permissions, in primary-key order, without a temporary copy
-- to write, analyze and join (the first refresh, and refresh after a
-- truncate). Events, while someone consumes, are then every row. Not used
-- while some edge expires: permission_bounds is filled from the temporary
-- copy.
-- The indexes are dropped first and built once after the insert: building
-- an index over sorted rows costs a fraction of inserting the same rows one
-- by one into it (tree small: 0.55 s with the three indexes maintained,
-- 0.2 s for the heap and three builds; bench/FINDINGS.md, finding 10). The
-- definitions are read from the catalog, so the migrations stay their one
-- definition. Dropping an index takes ACCESS EXCLUSIVE on the table until
-- commit: a reader then waits for the full table instead of reading the
-- empty one. The lock is only taken if no one holds any (NOWAIT): waiting
-- for a reader that itself waits for this transaction (a check, then a
-- write of nodes under our SHARE lock) would deadlock. Otherwise the rows
-- go in with their indexes maintained, as before.
create or replace function permgraph._fill_empty(p_at timestamptz, out inserted bigint)
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
as $$
begin
  perform permgraph._analyze_graph();
  perform permgraph._compute_at(p_at);
  -- (an empty table has no bounds either: left over if someone truncated permissions)
  delete from permgraph.permission_bounds;
  begin
    lock table permgraph.permissions in access exclusive mode nowait;
    perform permgraph._set_aside_permission_indexes();
  exception when lock_not_available then
    null;  -- someone reads the table: insert with the indexes maintained
  end;
  insert into permgraph.permissions (user_id, target_id, level, traverse_owned, valid_until)
  select c.user_id, c.target_id, c.level, c.traverse_owned, c.valid_until
  from permgraph._computed_rows c
  order by c.user_id, c.target_id;  -- key order: each index page is visited once, or the key's build reads it presorted
  get diagnostics inserted = row_count;
  perform permgraph._rebuild_set_aside('fill');  -- (nothing if the lock was not free)
  if permgraph._changes_begin_write() then
    insert into permgraph.permission_changes (user_id, target_id, new_level, new_traverse_owned, new_valid_until)
    select p.user_id, p.target_id, p.level, p.traverse_owned, p.valid_until from permgraph.permissions p;
  end if;
end $$;

-- Sets every index of permissions aside (015_work_tables.sql; the caller
-- holds ACCESS EXCLUSIVE on it) until _rebuild_set_aside('fill'): each
-- index's definition as the catalog prints it, then the primary key's
-- constraint over its index. Indexes of other constraints (none today) are
-- kept. Returns how many statements dropped them.
create or replace function permgraph._set_aside_permission_indexes() returns integer
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  key_name name;
  drops text[];
  rebuilds text[];
begin
  select k.conname into key_name
  from pg_constraint k where k.conrelid = 'permgraph.permissions'::regclass and k.contype = 'p';
  select array_agg(pg_get_indexdef(i.indexrelid) order by i.indexrelid) into rebuilds
  from pg_index i
  where i.indrelid = 'permgraph.permissions'::regclass
    and not exists (select 1 from pg_constraint k where k.conindid = i.indexrelid and k.contype <> 'p');
  rebuilds := rebuilds || format('alter table permgraph.permissions add constraint %I primary key using index %I', key_name, key_name);
  -- the key's constraint takes its index with it; then the indexes of no constraint
  select format('alter table permgraph.permissions drop constraint %I', key_name)
         || coalesce(array_agg(format('drop index %s', i.indexrelid::regclass) order by i.indexrelid), '{}')
  into drops
  from pg_index i
  where i.indrelid = 'permgraph.permissions'::regclass
    and not exists (select 1 from pg_constraint k where k.conindid = i.indexrelid);
  return permgraph._set_aside('fill', drops, rebuilds);
end $$;

-- Writes the computed rows into permissions, touching only rows whose value
-- (level, traverse_owned, valid_until) differs, and keeps permission_bounds.
-- With p_scoped (the incremental path), only the pairs listed in
-- pg_temp.permgraph_region are compared, against pg_temp.permgraph_rows:
-- each pair probes both by key, whatever the planner thinks of the size of
-- an unanalyzed temporary table (it guessed 850 rows for 6, and hashed a
-- scan of the whole permissions table to delete 22 rows). Otherwise (a full
-- recomputation) pg_temp.permgraph_all is full-joined with the whole table;
-- or, with p_lasting (no edge expires: the caller checks),
-- _computed_rows_lasting is, as it is produced: each of its pairs comes out
-- once, so there is no copy to write, analyze and join (bench/
-- FINDINGS.md, finding 10). One statement writes just the differing rows.
--
-- That statement, for one of the four sources ('scoped', 'users',
-- 'lasting', 'full'); $1: whether to record the change stream's events.
-- 'users' (a long job's chunk, 065_long_job.sql) compares every stored row
-- of the users in $2 with pg_temp.permgraph_rows, which holds all of theirs.
create or replace function permgraph._diff_statement(p_source text) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $body$
  select format($diff$
    with diff as (%s    ), deleted as (
      delete from permgraph.permissions p using diff d
      where d.is_gone and %2$s
      returning 1
    ), updated as (
      update permgraph.permissions p set level = d.level, traverse_owned = d.traverse_owned, valid_until = d.valid_until
      from diff d
      where not d.is_new and not d.is_gone and %2$s
      returning 1
    ), inserted as (
      insert into permgraph.permissions (user_id, target_id, level, traverse_owned, valid_until)
      select user_id, target_id, level, traverse_owned, valid_until from diff where is_new
      order by user_id, target_id  -- in primary-key order: each index page is visited once, not once per row
      returning 1
    ), recorded as (
      -- the change stream's events (170_changes.sql), only while a consumer is registered
      insert into permgraph.permission_changes (user_id, target_id, old_level, new_level, old_traverse_owned, new_traverse_owned,
                                                old_valid_until, new_valid_until)
      select user_id, target_id, old_level, level, old_traverse_owned, traverse_owned, old_valid_until, valid_until
      from diff where $1
    )
    select (select count(*) from inserted), (select count(*) from updated), (select count(*) from deleted)
    $diff$,
    case p_source when 'scoped' then $scoped$
      select r.user_id, r.target_id, n.level, n.traverse_owned, n.valid_until, p.user_id is null as is_new, n.user_id is null as is_gone,
             p.level as old_level, p.traverse_owned as old_traverse_owned, p.valid_until as old_valid_until, p.ctid as old_ctid
      from pg_temp.permgraph_region r
      left join pg_temp.permgraph_rows n on n.user_id = r.user_id and n.target_id = r.target_id
      left join permgraph.permissions p on p.user_id = r.user_id and p.target_id = r.target_id
      where (p.level, p.traverse_owned, p.valid_until) is distinct from (n.level, n.traverse_owned, n.valid_until)
        and r.user_id is not null
    $scoped$ else format($full$
      select coalesce(n.user_id, p.user_id) as user_id, coalesce(n.target_id, p.target_id) as target_id,
             n.level, n.traverse_owned, n.valid_until, p.user_id is null as is_new, n.user_id is null as is_gone,
             p.level as old_level, p.traverse_owned as old_traverse_owned, p.valid_until as old_valid_until%s
      from %s n
      full join %s p on p.user_id = n.user_id and p.target_id = n.target_id
      where (p.level, p.traverse_owned, p.valid_until) is distinct from (n.level, n.traverse_owned, n.valid_until)
    $full$,
      -- 'users': only their stored rows, each with its address
      case p_source when 'users' then ', p.old_ctid' else '' end,
      case p_source when 'lasting' then 'permgraph._computed_rows_lasting' when 'full' then 'pg_temp.permgraph_all'
                    when 'users' then 'pg_temp.permgraph_rows' end,
      case p_source when 'users' then '(select s.*, s.ctid as old_ctid from permgraph.permissions s where s.user_id = any($2))'
                    else 'permgraph.permissions' end) end,
    -- the stored row to delete or update: by its address where the diff
    -- read it (the scoped path: no second probe of the key per row; the
    -- applier lock and one snapshot keep the address valid), by key after a
    -- full join
    case when p_source in ('scoped', 'users') then 'p.ctid = d.old_ctid' else 'p.user_id = d.user_id and p.target_id = d.target_id' end)
$body$;

-- The incremental path's statement runs as static SQL in a PL/pgSQL
-- function of its own, generated here from the template above, so that
-- its plan is made once per session (planning it took 3 ms, more than
-- running it for a local change) and is held where no caller can reach it.
-- (It used to be a session-level prepared statement; but a caller of
-- apply_changes(), which runs as the schema's owner, could deallocate it
-- and prepare one of its own under the same name, then executed as the
-- owner: test/security/session-objects.test.ts.) Probes by key only: an
-- unanalyzed region must never turn into a hash join over permissions.
-- And no Memoize in front of the probe of the stored rows: its cache key
-- is a region pair, and the region holds each pair once (its unique key),
-- so it can never hit and only hashes every key (org large, removals of
-- 500 churn changes: 0 hits in 6,687 probes; the statement's median 62.5
-- ms without it against 67.5 with over 22 interleaved rounds each, a
-- small gain within the rounds' spread; bench/FINDINGS.md 32).
do $generate$
begin
  execute format($function$
    create or replace function permgraph._write_region_diff(p_recording boolean,
      out inserted bigint, out updated bigint, out deleted bigint)
    language plpgsql
    set search_path = pg_catalog, pg_temp
    set jit = off
    set enable_hashjoin = off
    set enable_mergejoin = off
    set enable_memoize = off
    set plan_cache_mode = force_generic_plan
    as %L
    $function$, format('begin %s into inserted, updated, deleted; end', permgraph._diff_statement('scoped')));
end $generate$;

-- A long job's chunk writes every row of a few users (065_long_job.sql): the
-- same statement, comparing all their stored rows with all their computed
-- ones. Those are thousands of rows a user after a backlog, and read whole
-- on both sides, so they are joined by hash, planned for the users at hand.
do $generate$
begin
  execute format($function$
    create or replace function permgraph._write_users_diff(p_recording boolean, p_users text[],
      out inserted bigint, out updated bigint, out deleted bigint)
    language plpgsql
    set search_path = pg_catalog, pg_temp
    set jit = off
    set plan_cache_mode = force_custom_plan
    as %L
    $function$, format('begin %s into inserted, updated, deleted; end', permgraph._diff_statement('users')));
end $generate$;

-- p_users: the rows of these users, all of them in pg_temp.permgraph_rows
-- (a long job's chunk); else p_scoped: the region's pairs; else all rows.
create or replace function permgraph._write_diff(p_scoped boolean, p_lasting boolean default false, p_users text[] default null,
  out inserted bigint, out updated bigint, out deleted bigint)
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  recording boolean := permgraph._changes_begin_write();
begin
  if p_users is not null then
    select d.inserted, d.updated, d.deleted into inserted, updated, deleted from permgraph._write_users_diff(recording, p_users) d;
  elsif p_scoped then
    select d.inserted, d.updated, d.deleted into inserted, updated, deleted from permgraph._write_region_diff(recording) d;
  else
    execute permgraph._diff_statement(case when p_lasting then 'lasting' else 'full' end)
      using recording into inserted, updated, deleted;
  end if;
  if p_lasting then
    delete from permgraph.permission_bounds;  -- no edge expires: no row has bounds
  else
    perform permgraph._write_bounds(p_scoped or p_users is not null, p_users);
  end if;
end $$;

-- permission_bounds follows the rows just written: of the users p_users,
-- in the region (scoped) or everywhere. Nothing to do, and nothing read,
-- while no edge expires and the table is empty (the usual case).
create or replace function permgraph._write_bounds(p_scoped boolean, p_users text[] default null) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  source text := case when p_scoped then 'pg_temp.permgraph_rows' else 'pg_temp.permgraph_all' end;
begin
  if not permgraph._any_edge_expires()
     and not exists (select 1 from permgraph.permission_bounds) then
    return;
  end if;
  if p_users is not null then
    delete from permgraph.permission_bounds b where b.user_id = any(p_users);
  elsif p_scoped then
    delete from permgraph.permission_bounds b using pg_temp.permgraph_region r
    where b.user_id = r.user_id and b.target_id = r.target_id;
  else
    delete from permgraph.permission_bounds;
  end if;
  -- The only text spliced in: one of two fixed table names.
  execute format($bounds$
    insert into permgraph.permission_bounds (user_id, target_id, level, valid_until)
    select n.user_id, n.target_id, b.level, b.valid_until
    from %s n
    cross join lateral (values (1::smallint, n.bound1), (2::smallint, n.bound2)) b(level, valid_until)
    where (n.bound1 is not null or n.bound2 is not null) and b.valid_until is not null
    $bounds$, source);
end $$;

-- A full recomputation written into permissions (refresh(), and batches too
-- large for a region): the cheapest of three ways that are exact for the
-- graph at hand. While some edge expires, the general computation is
-- copied to pg_temp.permgraph_all and compared (the bounds are written from
-- it). Otherwise an empty table is filled, and a filled one is compared with
-- the computation as it is produced.
create or replace function permgraph._write_all(p_at timestamptz,
  out inserted bigint, out updated bigint, out deleted bigint)
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
as $$
begin
  if permgraph._any_edge_expires() then
    perform permgraph._compute_all(p_at);
    select d.inserted, d.updated, d.deleted into inserted, updated, deleted from permgraph._write_diff(false) d;
  elsif not exists (select 1 from permgraph.permissions) then
    select f.inserted, 0, 0 into inserted, updated, deleted from permgraph._fill_empty(p_at) f;
  else
    perform permgraph._analyze_graph();
    select d.inserted, d.updated, d.deleted into inserted, updated, deleted from permgraph._write_diff(false, p_lasting => true) d;
  end if;
end $$;
