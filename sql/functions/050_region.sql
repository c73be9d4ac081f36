-- The incremental path: the region of (user, target) pairs a batch can
-- affect, and its recomputation seeded from stored rows at its border.
-- Its work tables are created once per session and emptied by each batch:
-- a batch writes no catalog rows (creating and dropping temporary tables
-- cost a millisecond or more each and bloated the catalog at high batch
-- rates), so the plans of its statements stay cached from batch to batch.
-- Measured choices (bench/FINDINGS.md, finding 9): walk results are joined by
-- hash (2,000 memberships: 6.5 s -> 0.36 s), the region is indexed and
-- analyzed only above 200 pairs, and the recompute starts from the region
-- users' own edges with border levels looked up by key (7.0 s -> 1.9 s).
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- The incremental path's work tables, created the first time a session
-- needs them, each with the index its probes use, and emptied by the next
-- batch rather than at commit: ON COMMIT DELETE ROWS truncates them and
-- rebuilds their indexes at every commit, which writes pg_class and so
-- invalidates every cached plan that reads them, and each batch re-planned
-- its large statements (2-4 ms each on org small). Deleted rows are dead
-- space that later inserts' page pruning reclaims; past 8 MB the tables
-- are truncated instead (a catalog write, after large batches only).
create or replace function permgraph._prepare_region_tables() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform permgraph._refuse_foreign_temp_table('permgraph_region'), permgraph._refuse_foreign_temp_table('permgraph_rows');
  if to_regclass('pg_temp.permgraph_region') is null then
    create temp table permgraph_region (
      user_id   text collate "C",
      target_id text collate "C"
    );
    create unique index permgraph_region_key on pg_temp.permgraph_region (user_id, target_id);
  end if;
  -- (named permgraph_rows: a session that ran an earlier release of this
  -- file has a permgraph_new without the expiry columns)
  if to_regclass('pg_temp.permgraph_rows') is null then
    create temp table permgraph_rows (
      user_id        text collate "C" not null,
      target_id      text collate "C" not null,
      level          smallint not null,
      traverse_owned boolean not null,
      valid_until    timestamptz,
      bound1         timestamptz,  -- see _compute_all (040_compute.sql)
      bound2         timestamptz
    );
    create unique index permgraph_rows_key on pg_temp.permgraph_rows (user_id, target_id);
  end if;
  if pg_relation_size('pg_temp.permgraph_region') + pg_relation_size('pg_temp.permgraph_rows') > 8 * 1024 * 1024 then
    truncate pg_temp.permgraph_region, pg_temp.permgraph_rows;
  else
    delete from pg_temp.permgraph_region;
    delete from pg_temp.permgraph_rows;
  end if;
end $$;

-- Pairs (user, target) a batch can affect: for each changed edge tail -> head,
-- every user with a path to the tail (through groups) times every node
-- reachable from the head (through groups), both in the union of the old and
-- new graphs (current edges plus the batch's changed pairs; the downward
-- walk needs only the current edges, see below). Any pair outside
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
set search_path = pg_catalog, pg_temp
set jit = off
-- One plan for every batch (see _compute_region)
set plan_cache_mode = force_generic_plan
as $$
declare
  region_rows bigint;
begin
  perform permgraph._prepare_region_tables();
  -- One statement. When the region would be too large it holds only a
  -- (null, null) marker row.
  insert into pg_temp.permgraph_region (user_id, target_id)
  with recursive batch as (
    select distinct tail_id, tail_kind, head_id, head_kind
    from permgraph._batch_changes where not trash_changed
  ), removed as (
    -- changed edges the current graph no longer has: with permgraph.edges they
    -- make the union of the old and new graphs
    -- (a scalar subquery: always an index probe, whatever the join settings)
    select b.tail_id, b.tail_kind, b.head_id, b.head_kind
    from batch b
    where not coalesce((select true from permgraph.edges e
                        where e.tail_id = b.tail_id and e.head_id = b.head_id limit 1), false)
  ), removed_into as (
    -- the removed edges by head, as one object looked up by key at each step
    -- of the upward walk (a CTE has no index: scanning the removed edges at
    -- every step made a batch of 2,000 removals quadratic)
    select coalesce(jsonb_object_agg(head_id, tails), '{}') as by_head
    from (select head_id, jsonb_agg(jsonb_build_array(tail_id, tail_kind)) as tails
          from removed group by head_id) r
  ), down(origin, node_id, node_kind) as (
    -- Downward through the current edges only. The region of each changed
    -- edge is every user upstream of its tail in the union graph times every
    -- node downstream of its head; walking only one side through the union
    -- graph gives the same pairs: on a union path u ... tail -> head ... t,
    -- take the last changed edge r on it; after r come only current edges
    -- (a removed edge is a changed one), so t is below r's head in the
    -- current graph while u is above r's tail in the union graph.
    select distinct head_id, head_id, head_kind from batch
    union
    select d.origin, e.head_id, e.head_kind
    from down d
    -- (offset 0: a subquery probed by index per node; flattened into a join
    -- it would hash all of edges at every step, nested loops being off here)
    cross join lateral (select head_id, head_kind from permgraph.edges where tail_id = d.node_id offset 0) e
    where d.node_kind = 'group'
  ), up(origin, node_id, node_kind) as (
    -- upward through the union graph: current edges and the removed ones
    select distinct tail_id, tail_id, tail_kind from batch
    union
    select u.origin, e.tail_id, e.tail_kind
    from up u
    cross join lateral (
      select tail_id, tail_kind from permgraph.edges where head_id = u.node_id
      union all
      select (t ->> 0) collate "C", t ->> 1
      from jsonb_array_elements((select by_head from removed_into) -> u.node_id) t) e
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
  -- Every walk step probes the region by its index. From 200 pairs on it
  -- also gets statistics (a batch of 100 churn changes, 1,316 pairs: compute
  -- 40 ms with them, 140-300 without); below, sampling would cost more than
  -- the walk.
  if region_rows > 200 then
    analyze pg_temp.permgraph_region;
  end if;
  return true;
end $$;

-- Recomputes the rows of the region at time p_at into pg_temp.permgraph_rows.
-- A path to a region pair (u, t) ends with an edge either straight from the
-- user or from a group h: when (u, h) is outside the region its stored row
-- is right (its paths did not change, and its valid_until is after p_at:
-- apply_changes puts every row whose valid_until has passed in the region),
-- and it seeds the walk with its level until its valid_until and, from
-- permission_bounds, each lower level until it lasts; when (u, h) is inside,
-- the walk reaches it first. So the walk only steps between region pairs.
create or replace function permgraph._compute_region(p_at timestamptz) returns void
language plpgsql
-- regions are small next to the graph: walk them by index, never by hashing whole tables
set enable_hashjoin = off
set enable_mergejoin = off
set search_path = pg_catalog, pg_temp
set jit = off
-- One plan for every batch: with its time as a parameter, the planner kept
-- making a custom plan for each batch (1.5 ms on org small) for the same
-- index probes. The settings above fix the plan's shape anyway.
set plan_cache_mode = force_generic_plan
as $$
declare
  computed bigint;
begin
  insert into pg_temp.permgraph_rows (user_id, target_id, level, traverse_owned, valid_until, bound1, bound2)
  with recursive walk(user_id, node_id, node_kind, level, last_edge_manage, until) as (
    -- the region's users' own edges into it (a user has few edges: start
    -- from them rather than probing the edges for every region pair)
    select u.id, e.head_id, e.head_kind, e.level, e.level = 3 and e.head_kind = 'user', e.until
    from (select distinct user_id from pg_temp.permgraph_region) ru
    join permgraph.nodes u on u.id = ru.user_id and u.kind = 'user'
    cross join lateral (
      select e.head_id, e.head_kind, e.level, coalesce(e.expires_at, 'infinity') as until
      from permgraph.edges e
      where e.tail_id = u.id and (e.expires_at is null or e.expires_at > p_at) offset 0) e
    where coalesce((select true from pg_temp.permgraph_region r
                    where r.user_id = u.id and r.target_id = e.head_id), false)
    union all
    select r.user_id, e.head_id, e.head_kind, least(s.level, e.level), e.level = 3 and e.head_kind = 'user', least(s.until, e.until)
    from pg_temp.permgraph_region r
    -- per region pair: its in-edges from groups outside the region...
    cross join lateral (
      select e.head_id, e.head_kind, e.level, e.tail_id, coalesce(e.expires_at, 'infinity') as until
      from permgraph.edges e
      where e.head_id = r.target_id and e.tail_kind = 'group' and (e.expires_at is null or e.expires_at > p_at)
        and not coalesce((select true from pg_temp.permgraph_region inside
                          where inside.user_id = r.user_id and inside.target_id = e.tail_id), false)) e
    -- ...each with the user's stored row on the group, looked up by key
    -- (joining the user's rows first would pair each region pair with all
    -- of them), and the lower levels' times when they last longer
    cross join lateral (
      select p.level, coalesce(p.valid_until, 'infinity') as until
      from permgraph.permissions p
      where p.user_id = r.user_id and p.target_id = e.tail_id
      union all
      select b.level, b.valid_until
      from permgraph.permission_bounds b
      where b.user_id = r.user_id and b.target_id = e.tail_id) s
    union
    select w.user_id, e.head_id, e.head_kind, least(w.level, e.level), e.level = 3 and e.head_kind = 'user',
           least(w.until, coalesce(e.expires_at, 'infinity'))
    from walk w
    join permgraph.edges e on e.tail_id = w.node_id
    where w.node_kind = 'group'
      and (e.expires_at is null or e.expires_at > p_at)
      -- probe the region per edge, as a scalar subquery (an EXISTS becomes a
      -- join that pairs every walk row with every region row of its user,
      -- quadratic in the region)
      and coalesce((select true from pg_temp.permgraph_region r
                    where r.user_id = w.user_id and r.target_id = e.head_id), false)
  ), paths as (
    select user_id, node_id, node_kind, level, last_edge_manage, until from walk
    union all
    select r.user_id, r.target_id, 'user', 3::smallint, true, 'infinity'::timestamptz
    from pg_temp.permgraph_region r
    join permgraph.nodes u on u.id = r.user_id and u.kind = 'user'
    where r.target_id = r.user_id
  ), per_pair as (
    select user_id, node_id as target_id, node_kind, max(level)::smallint as level,
           max(until) as until1,
           max(until) filter (where level >= 2) as until2,
           max(until) filter (where level = 3) as until3,
           max(until) filter (where permgraph._path_traverses(node_kind, last_edge_manage)) as traverse_until
    from paths
    group by user_id, node_id, node_kind
  )
  select user_id, target_id, level, traverse_until is not null,
         permgraph._valid_until(level, until1, until2, until3, traverse_until),
         permgraph._level_bound(node_kind, level, 1, until1, until2),
         permgraph._level_bound(node_kind, level, 2, until2, until3)
  from per_pair;
  get diagnostics computed = row_count;
  if computed > 200 then  -- (see _build_region)
    analyze pg_temp.permgraph_rows;
  end if;
end $$;

-- Whether this batch only adds: every captured change is a new edge (or a
-- node's identity or ownership edge), or replaces an edge by one of at
-- least its level; nothing is deleted, and nothing in the graph expires
-- (with expiries, a row's stored value does not say how long each of its
-- paths lasts, so it cannot be combined with new ones). Then every old path
-- still exists and the table only grows. Per pair of the batch's removed
-- edges, the current graph must still hold an edge of at least their best
-- level (the change rows do not say in which order an edge came and went).
create or replace function permgraph._batch_only_adds() returns boolean
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
-- (the queue from its low-water mark by the index: 045_batch_split.sql)
set enable_seqscan = off
as $$
begin
  return not exists (select 1 from permgraph._batch_changes where tail_kind = '*')
     and not permgraph._any_edge_expires()
     and not exists (select 1 from permgraph.permissions where valid_until is not null)
     and permgraph._batch_removes_nothing();
end $$;

-- Whether the batch's changes remove no path: no node deleted, and per pair
-- of the batch's removed edges, the current graph still holds an edge of at
-- least their best level (the change rows do not say in which order an edge
-- came and went). With nothing expiring (the callers' other tests), such a
-- batch only adds.
create or replace function permgraph._batch_removes_nothing() returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
set jit = off
-- (the queue from its low-water mark by the index: 045_batch_split.sql)
set enable_seqscan = off
as $$
begin
  return not exists (select 1 from permgraph.deleted_nodes)
     and not exists (select 1
                     from (select tail_id, head_id, max(old_level) as removed
                           from permgraph._batch_changes where old_level is not null
                           group by tail_id, head_id) r
                     where r.removed > coalesce((select max(e.level) from permgraph.edges e
                                                 where e.tail_id = r.tail_id and e.head_id = r.head_id), 0));
end $$;

-- The semi-naive path for a batch that only adds (_batch_only_adds): new
-- paths are the stored ones extended by an added edge, then by any edge out
-- of the groups they reach; a path is followed only while it raises the
-- stored row of the pair it reaches (a higher level, or for a user, the
-- traversal of what it owns), since a pair whose row stays the same passes
-- nothing new on. So the work is the rows that change plus one probe per
-- user upstream of each added edge, not users upstream x nodes downstream.
--
-- Computes and writes in one statement, with no work table: a row only
-- rises here, so the new row of a pair is its stored one raised by the
-- paths found, and the stored row the walk looked up says whether to
-- insert or update. A batch of 5,000
-- churn additions on org large (56k rows) spent about a third of its time
-- copying the rows into two work tables, analyzing them and joining them
-- back with permissions in the general diff (bench/FINDINGS.md, finding 8).
-- p_recording: whether to record the change stream's events. p_max_rows:
-- at most this many pairs may rise (null: no bound); the walk is read no
-- further than one more (it is evaluated as it is read), and then nothing is
-- written and pairs is null. The local path (055_local_change.sql) bounds
-- it, and falls back to the ordinary path when the bound is exceeded.
-- Returns the pairs whose rows rise and the rows inserted and updated
-- (deleted: always 0, the shape of the other writers' results).
--
-- p_local: the local path's batch in this one statement, as
-- _apply_local_batch does for the other batches (055_local_change.sql,
-- where the argument is): the statement also checks that the batch is one
-- the path takes (at most p_max_changes changes, no full recomputation,
-- _local_change_exact(), and _batch_removes_nothing(), all in its own
-- snapshot) and ends the batch:
-- the change rows it read are deleted and applier_state records its
-- figures and its snapshot. batch is then apply_changes' result (null
-- when it wrote nothing) and trash_roots the groups whose trash changed,
-- left to the caller (_finish_local_batch). So a batch that only adds is
-- one statement under READ COMMITTED too, and applyChanges() on a pool
-- applies it in one round trip: before, apply_local_changes() left it to
-- apply_changes() (BEGIN, the call and its statements, COMMIT after an
-- attempt that returned null; bench/FINDINGS.md, finding 20).
create or replace function permgraph._write_additions(p_recording boolean, p_max_rows bigint default null,
  p_local boolean default false, p_max_changes integer default null, p_started timestamptz default null,
  out pairs bigint, out inserted bigint, out updated bigint, out deleted bigint,
  out batch jsonb, out trash_roots text[])
language plpgsql
-- index probes per candidate, as in _compute_region
set enable_hashjoin = off
set enable_mergejoin = off
-- (and the queue from its low-water mark by the index: 045_batch_split.sql)
set enable_seqscan = off
set search_path = pg_catalog, pg_temp
set jit = off
set plan_cache_mode = force_generic_plan
as $$
begin
  with recursive pending as (
    -- (p_local) one row, the batch's size, when the local path takes it
    select n as changes from permgraph._local_batch_size(p_max_changes) n
    where n is not null and permgraph._batch_removes_nothing()
  ), takes as (
    select not p_local or exists (select 1 from pending) as ok
  ), added as (
    -- the current edges of the pairs the batch added to (an edge added and
    -- raised in the same batch is seeded once, at its level now)
    select e.tail_id, e.tail_kind, e.head_id, e.head_kind, e.level
    from (select distinct tail_id, head_id from permgraph._batch_changes
          where new_level is not null and (select ok from takes)) c
    cross join lateral (select e.tail_id, e.tail_kind, e.head_id, e.head_kind, e.level
                        from permgraph.edges e
                        where e.tail_id = c.tail_id and e.head_id = c.head_id) e
    union all
    -- identity edges are not in edges: a new user's own row
    select c.tail_id, 'user', c.head_id, 'user', 3::smallint
    from permgraph._batch_changes c
    where c.tail_id = c.head_id and c.tail_kind = 'user' and c.new_level is not null and (select ok from takes)
  ), candidate(user_id, node_id, node_kind, level, last_edge_manage) as (
    -- an added edge out of a user starts that user's paths (its identity edge too)
    select a.tail_id, a.head_id, a.head_kind, a.level, a.level = 3 and a.head_kind = 'user'
    from added a
    where a.tail_kind = 'user'
    union all
    -- an added edge out of a group extends every stored path to the group
    select p.user_id, a.head_id, a.head_kind, least(p.level, a.level), a.level = 3 and a.head_kind = 'user'
    from added a
    join permgraph.permissions p on p.target_id = a.tail_id
    where a.tail_kind = 'group'
  ), walk(user_id, node_id, node_kind, level, last_edge_manage, old_level, old_traverse) as (
    -- A path is followed while it raises the stored row of the pair it
    -- reaches: there is none, its level is lower, or the node is a user this
    -- path's last edge manages while the row does not traverse. Each step
    -- looks the stored row up by key once and carries it along (the
    -- writes below need it; looking it up again per pair cost ~20% of a
    -- batch of 5,000 churn additions). (offset 0 keeps the lookup a
    -- subplan probing the whole key (user, target): as a join the planner
    -- parameterises the probe by one side only and filters the target's
    -- rows by user: 682k rows read to answer 30k probes on org small. The
    -- test is written out: as a function it would not be inlined.)
    select c.user_id, c.node_id, c.node_kind, c.level, c.last_edge_manage, s.level, s.traverse_owned
    from candidate c
    left join lateral (select p.level, p.traverse_owned from permgraph.permissions p
                       where p.user_id = c.user_id and p.target_id = c.node_id offset 0) s on true
    where s.level is null or s.level < c.level
       or (not s.traverse_owned and permgraph._path_traverses(c.node_kind, c.last_edge_manage))
    union
    select w.user_id, e.node_id, e.node_kind, e.level, e.last_edge_manage, s.level, s.traverse_owned
    from walk w
    cross join lateral (
      select e.head_id as node_id, e.head_kind as node_kind, least(w.level, e.level) as level,
             e.level = 3 and e.head_kind = 'user' as last_edge_manage
      from permgraph.edges e where e.tail_id = w.node_id) e
    left join lateral (select p.level, p.traverse_owned from permgraph.permissions p
                       where p.user_id = w.user_id and p.target_id = e.node_id offset 0) s on true
    where w.node_kind = 'group'
      and (s.level is null or s.level < e.level
           or (not s.traverse_owned and permgraph._path_traverses(e.node_kind, e.last_edge_manage)))
  ), walk_bounded as materialized (
    select * from walk limit p_max_rows + 1  -- (limit null: all)
  ), fits as (
    select (select ok from takes) and (p_max_rows is null or count(*) <= p_max_rows) as ok from walk_bounded
  ), diff as materialized (
    -- per pair: the stored row raised by the paths found (each of them
    -- raises it, so every pair here changes; its stored row is the same in
    -- all of its walk rows)
    select user_id, node_id as target_id, greatest(max(level), max(old_level))::smallint as level,
           coalesce(bool_or(old_traverse), false) or bool_or(permgraph._path_traverses(node_kind, last_edge_manage)) as traverse_owned,
           max(old_level) is null as is_new, max(old_level) as old_level, bool_or(old_traverse) as old_traverse_owned
    from walk_bounded
    where (select ok from fits)
    group by user_id, node_id
  ), inserted as (
    insert into permgraph.permissions (user_id, target_id, level, traverse_owned)
    select user_id, target_id, level, traverse_owned from diff where is_new
    order by user_id, target_id  -- in primary-key order (see _diff_statement)
    returning 1
  ), updated as (
    update permgraph.permissions p set level = d.level, traverse_owned = d.traverse_owned
    from diff d
    where not d.is_new and p.user_id = d.user_id and p.target_id = d.target_id
    returning 1
  ), unbound as (
    -- no edge expires on this path, so a raised row has no lower levels
    -- that outlast it (and permission_bounds is normally empty: one probe)
    delete from permgraph.permission_bounds b using diff d
    where (select exists (select 1 from permgraph.permission_bounds)) and b.user_id = d.user_id and b.target_id = d.target_id
  ), recorded as (
    -- the change stream's events (170_changes.sql), only while a consumer is registered
    insert into permgraph.permission_changes (user_id, target_id, old_level, new_level, old_traverse_owned, new_traverse_owned)
    select user_id, target_id, old_level, level, old_traverse_owned, traverse_owned
    from diff where p_recording
  ), applied_changes as (
    -- (p_local) the end of the batch: the change rows this snapshot saw are
    -- applied (a batch that removes nothing deleted no node; through the
    -- view: only the part a split took)
    delete from permgraph._batch_changes where p_local and (select ok from fits)
  ), figures as (
    select case when (select ok from fits) then (select count(*) from diff) end as pairs,
           (select count(*) from inserted) as inserted, (select count(*) from updated) as updated,
           (select changes from pending where p_local) as changes, permgraph._ms_since(p_started) as ms
  ), recorded_batch as (
    update permgraph.applier_state set
      last_batch_at = now(), last_batch_mode = 'incremental', last_batch_changes = f.changes,
      last_batch_ms = f.ms, rows_inserted = f.inserted, rows_updated = f.updated, rows_deleted = 0,
      last_batch_part = nullif(permgraph._batch_part(), ''),  -- which part the next split takes (045_batch_split.sql)
      -- the whole queue this snapshot saw is applied: the low-water mark rises (045_batch_split.sql)
      queue_low_water = case when permgraph._batch_part() = '' then pg_snapshot_xmin(pg_current_snapshot()) else queue_low_water end,
      last_batch_snapshot = pg_current_snapshot()  -- this statement's (see _apply_local_batch)
    from figures f
    where p_local and (select ok from fits)
  )
  select f.pairs, f.inserted, f.updated, 0,
         case when p_local and f.pairs is not null
              then permgraph._local_batch_result(true, f.changes, f.pairs, f.inserted, f.updated, 0, f.ms) end,
         case when p_local then permgraph._batch_trash_roots() end
  into pairs, inserted, updated, deleted, batch, trash_roots
  from figures f;
end $$;
