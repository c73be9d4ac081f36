-- The local path: a small batch applied by one statement, with no work
-- tables. A local change (a membership, a share, tens of rows altered) paid
-- a dozen statements in the ordinary path (050_region.sql: the region into
-- a work table, its recomputation into another, the diff), each with the
-- executor start-up of a large plan, and that fixed cost was most of the
-- batch (bench/FINDINGS.md, finding 14). Here the region, its
-- recomputation and the diff against permissions, with the writes and the
-- change stream's events, are the CTEs of one statement, planned once per
-- session; a batch that only adds is written by the semi-naive statement
-- (_write_additions, 050_region.sql), which ends its batch the same way.
-- apply_changes (060_apply.sql) and apply_local_changes take this path
-- (_apply_local_path) when the batch is small and simple, and fall back to
-- the ordinary one when it is not or its region turns out larger than the
-- bound.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- The default bound on the region (pairs) the local path recomputes in one
-- statement, or for a batch that only adds, on the rows that rise
-- (apply_changes' p_local_pairs; 0 turns the path off). Its walks join
-- without hashing, so past some size the ordinary path's hash joins and
-- indexed work tables win; since the region is probed by pair key
-- (finding 25 in bench/FINDINGS.md; nested by user it was quadratic,
-- finding 16) that is past 15,000 pairs on tree small: removals of 2,000-
-- 3,300 pairs cost 20-35% less here than on the ordinary path (org small,
-- tree small), of 14,762 pairs 333 against 432 ms, of 22,143 the same.
create or replace function permgraph._local_change_pairs() returns bigint
language sql immutable
set search_path = pg_catalog, pg_temp
as $$ select 5000::bigint $$;

-- The most changes a batch the local path takes may hold. Its joins of the
-- batch with its walks nest loops, so a large batch is left to the ordinary
-- path's hashing. Measured on org small (random membership, share and level
-- changes, server ms, local / ordinary): 1 change 1.5 / 2.5, 4 changes
-- 12 / 17, 16 changes 97 / 119, 64 changes 402 / 443 (bench/FINDINGS.md,
-- finding 16); the region bound above is what limits a batch first.
create or replace function permgraph._local_change_max_changes() returns bigint
language sql immutable
set search_path = pg_catalog, pg_temp
as $$ select 64::bigint $$;

-- Whether the local statements are exact for the graph as it is: no edge
-- expires, no row has a valid_until and no bounds are kept (both statements
-- compute levels and traversal only: every time is 'infinity'), and no long
-- job runs (its users' stored rows may be stale, and changes that touch them
-- must be deferred: 065_long_job.sql). Probes of an index or of an (almost
-- always) empty table; stable, so that inside a local statement
-- (_apply_local_batch, _write_additions) it reads that statement's snapshot.
create or replace function permgraph._local_change_exact() returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
set jit = off
as $$
begin
  return not (permgraph._any_edge_expires()
              or exists (select 1 from permgraph.permissions where valid_until is not null)
              or exists (select 1 from permgraph.permission_bounds)
              or permgraph._long_job_active());
end $$;

-- The pending batch's size when a local statement may take it: 1 to
-- least(p_max_changes, _local_change_max_changes()) changes, no full
-- recomputation asked for ('*'), and _local_change_exact(); null otherwise.
-- The batch is the queue, or the part of it a worker session's split took
-- (_batch_changes, 045_batch_split.sql).
-- Stable, so that inside a local statement (_apply_local_batch,
-- _write_additions) it reads that statement's snapshot. PL/pgSQL, so that
-- _local_change_exact() runs once, after the count, and only when the count
-- fits: as an SQL function (with a SET clause, so never inlined) its query
-- was run by the SQL-function executor at each call, and the planner placed
-- the check both in a one-time filter and in the HAVING filter: twice per
-- batch, ~0.1 ms with its four probes.
create or replace function permgraph._local_batch_size(p_max_changes integer) returns bigint
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  pending bigint;
  full_asked boolean;
  local_limit bigint := least(p_max_changes, permgraph._local_change_max_changes());
begin
  -- (counted up to the limit: a backlog is not read whole here)
  select p.pending, p.needs_full into pending, full_asked from permgraph._pending_changes(local_limit) p;
  if pending between 1 and local_limit
     and not full_asked and permgraph._local_change_exact() then
    return pending;
  end if;
  return null;
end $$;

-- One key for a pair (user, target) in the local statement's region
-- object: the two ids joined by a control character, which no node id may
-- hold (nodes_validate and import refuse them), so distinct pairs never
-- share a key. An SQL-standard body: resolved when created, and inlined.
create or replace function permgraph._pair_key(p_user_id text, p_target_id text) returns text
language sql immutable
return p_user_id || chr(1) || p_target_id;

-- apply_changes' result for a batch that ran, whichever path applied it:
-- this one (_local_batch_result below) and the ordinary one (_end_batch,
-- 060_apply.sql). The keys are BatchResult's (src/engine/apply.ts). An
-- SQL-standard body: resolved when created, and inlined. Stable, as
-- jsonb_build_object is: the planner inlines no function whose body is
-- more volatile than it is declared, and as immutable this one was called,
-- ~30 us a batch (bench/FINDINGS.md 37).
create or replace function permgraph._batch_result(p_mode text, p_delta boolean, p_local boolean,
  p_changes bigint, p_expired bigint, p_pairs bigint, p_to_job bigint, p_deferred bigint, p_job_active boolean,
  p_inserted bigint, p_updated bigint, p_deleted bigint, p_ms numeric, p_next_expiry_in_ms bigint) returns jsonb
language sql stable
return pg_catalog.jsonb_build_object(
  'mode', p_mode, 'delta', p_delta, 'local', p_local, 'changes', p_changes, 'expired', p_expired,
  'region_pairs', p_pairs, 'to_long_job', p_to_job, 'deferred', p_deferred, 'long_job_active', p_job_active,
  'inserted', p_inserted, 'updated', p_updated, 'deleted', p_deleted, 'ms', p_ms,
  'next_expiry_in_ms', p_next_expiry_in_ms);

-- The result of a batch a local statement applied (the region one, or the
-- semi-naive one when p_delta): no expiry, long job or deferral is
-- involved, since the path runs only while no row expires and no job runs,
-- and it writes no row that expires.
create or replace function permgraph._local_batch_result(p_delta boolean, p_changes bigint, p_pairs bigint,
  p_inserted bigint, p_updated bigint, p_deleted bigint, p_ms numeric) returns jsonb
language sql stable
return permgraph._batch_result('incremental', p_delta, true, p_changes, 0, p_pairs, 0, 0, false,
                               p_inserted, p_updated, p_deleted, p_ms, null);

-- Applies the whole batch in one statement, when the local path fits it:
-- returns apply_changes' result, or null having written nothing. Fits: 1 to
-- least(p_max_changes, _local_change_max_changes()) pending changes, no
-- full recomputation asked for ('*'), _local_change_exact(), and a region
-- of at most p_max_pairs pairs.
-- The caller holds the applier lock or gets it here (_changes_begin_write
-- takes it, and learns whether to record events).
--
-- One statement, so one snapshot even under READ COMMITTED with writers
-- running: the checks above, the batch, the graph it is computed from, the
-- change rows deleted (exactly those it read), deleted_nodes emptied and
-- applier_state's last_batch_snapshot (the statement's own snapshot, which
-- is what is_applied needs: 080_freshness.sql). That is what lets
-- apply_local_changes run without a transaction block of its own and
-- without locking writers out. The one thing outside it is the trash
-- refresh (_finish_local_batch), which may read a later snapshot.
--
-- The region is like _build_region's (050_region.sql: every user above a
-- changed edge's tail times every node below its head), with the users
-- read from the stored rows on the tail instead of walked up through the
-- union of the old and new graphs (the argument is at the CTE up), its
-- recomputation _compute_region's without expiries (seeded
-- from the stored rows at the region's border), the diff _diff_statement's
-- (040_compute.sql). The end of the batch is _end_batch's (060_apply.sql)
-- for a batch with no long job and no expiry.
--
-- No plan here depends on statistics: the graph's tables are read only by
-- key (LATERAL subqueries behind offset 0, or probes of a key), joins
-- nest loops over the small batch, and the region is probed as a JSON
-- object ({pair key: true}, _pair_key) looked up by key, never scanned: a
-- CTE has no index, and probing it by scanning made the walk quadratic in
-- the region.
create or replace function permgraph._apply_local_batch(p_max_changes integer, p_max_pairs bigint,
  p_started timestamptz) returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
set enable_hashjoin = off
set enable_mergejoin = off
-- (a bitmap scan pays for a bitmap to fetch the one or two rows a key has)
set enable_bitmapscan = off
-- (and a key's rows are read by its index even where the statistics say a
-- key has many: on a small graph whose groups own 50 nodes each a probe of
-- edges by tail became a read of all of them, per step of every walk;
-- bench/FINDINGS.md, finding 27)
set enable_seqscan = off
-- one plan for every batch: its shape is fixed by the settings above
set plan_cache_mode = force_generic_plan
-- no parallel plans here or in what it calls (the trash refresh): starting a
-- worker costs more than any statement of a batch this small
set max_parallel_workers_per_gather = 0
as $$
declare
  recording boolean;
  result jsonb;
  trash_roots text[];
begin
  recording := permgraph._changes_begin_write();
  with recursive pending as (
    -- one row, the batch's size, when the path fits it; none otherwise
    select n as changes from permgraph._local_batch_size(p_max_changes) n where n is not null
  ), batch as (
    select distinct tail_id, tail_kind, head_id, head_kind
    from permgraph._batch_changes where not trash_changed and exists (select 1 from pending)
  ), down(origin, node_id, node_kind) as (
    -- downward through the current edges only (why that is enough: see up)
    select distinct head_id, head_id, head_kind from batch
    union
    select d.origin, e.head_id, e.head_kind
    from down d
    cross join lateral (select head_id, head_kind from permgraph.edges where tail_id = d.node_id offset 0) e
    where d.node_kind = 'group'
  ), up(origin, node_id, node_kind) as (
    -- The users above each changed edge's tail, read from the table, not
    -- walked. This statement takes the whole queue and runs only with no
    -- expiry and no long job (_local_change_exact), so the table is the
    -- full computation of the old graph (before the batch), and a user has
    -- an old path into a node exactly when the table holds its row on it.
    -- (A part of a split queue, its removals, is exact too, by the argument
    -- in 045_batch_split.sql.)
    -- Only a pair with a path through a changed edge, in the old graph or
    -- in the new, can change. On a new path take its first changed edge
    -- f: the edges before f are unchanged, so old, and the user has a row
    -- on f's tail (or is it); every edge is current, so the target is
    -- below f's head in the current graph. On an old path take its last
    -- changed edge r: the user has a row on r's tail (or is it); the edges
    -- after r are unchanged, so current, and the target is below r's head.
    -- So every such pair is in the region built from these users and the
    -- walk down (and these users are within the walk up through the union
    -- graph that _build_region needs, where the table can lag the queue).
    -- On the deep shape the walk up from a group climbed the chain above
    -- it, hundreds of levels.
    select distinct tail_id, tail_id, tail_kind from batch
    union all
    select t.tail_id, p.user_id, 'user'
    from (select distinct tail_id from batch) t
    cross join lateral (select p.user_id from permgraph.permissions p where p.target_id = t.tail_id offset 0) p
  ), down_capped as materialized (
    -- A walk is read only this far: one longer than the bound cannot give a
    -- region within it (each of its rows is a region pair once a user is
    -- above), so the batch falls back without walking the rest. (A walk
    -- with no user above is cut short too: a missed chance, never an error.)
    select origin, node_id, node_kind from down limit p_max_pairs + 1
  ), up_capped as materialized (
    select origin, node_id, node_kind from up limit p_max_pairs + 1
  ), batch_head as (
    select min(head_id) as head_id from batch
    having count(distinct head_id) = 1 and bool_and(head_kind = 'group')
  ), head_in as materialized (
    -- its in-edges from groups
    select e.tail_id, e.level
    from batch_head h
    cross join lateral (select e.tail_id, e.level from permgraph.edges e
                        where e.head_id = h.head_id and e.tail_kind = 'group' offset 0) e
  ), single_head as materialized (
    -- The batch's one head h, when every changed edge ends at the same group
    -- and no group with an edge into h is below it (no cycle through h):
    -- then only pairs below h can change (a path through a changed edge
    -- passes through h), and a user whose row on h the batch leaves as it
    -- was has no row below h that changes either (its paths through h are
    -- that row extended by unchanged edges, and its other paths hold no
    -- changed edge). That row is computed in up_users from h's in-edges:
    -- the user's own edge, and each group's edge with the user's stored
    -- row on the group, right since the group is not below h. A membership
    -- ended by a user who keeps the same level through another team, or a
    -- group moved between two owners its users see alike, then costs a few
    -- probes per user instead of its region (bench/FINDINGS.md, finding 28).
    -- Only where something is below h: for h alone the probes cost what
    -- recomputing the pair does.
    select h.head_id
    from batch_head h
    where not exists (select 1 from head_in i where i.tail_id in (select node_id from down_capped))
      and (select count(*) from down_capped) > 1
  ), up_users as (
    select distinct u.origin, u.node_id as user_id
    from up_capped u
    left join single_head h on true
    where u.node_kind = 'user'
      and (h.head_id is null
           -- (single head) the users whose row on h the batch changes
           or (select p.level from permgraph.permissions p where p.user_id = u.node_id and p.target_id = h.head_id)
              is distinct from
              greatest((select max(e.level) from permgraph.edges e where e.tail_id = u.node_id and e.head_id = h.head_id),
                       (select max(least(s.level, i.level))
                        from head_in i
                        cross join lateral (select s.level from permgraph.permissions s
                                            where s.user_id = u.node_id and s.target_id = i.tail_id offset 0) s)))
  ), estimate as (
    select case when (select count(*) from down_capped) > p_max_pairs
                  or (select count(*) from up_capped) > p_max_pairs then p_max_pairs + 1
                else (select coalesce(sum(uc.n * dc.n), 0)
                      from batch c
                      join (select origin, count(*) as n from up_users group by origin) uc on uc.origin = c.tail_id
                      join (select origin, count(*) as n from down_capped group by origin) dc on dc.origin = c.head_id) end as pairs
  ), applies as (
    select exists (select 1 from pending) and (select pairs from estimate) <= p_max_pairs as ok
  ), region as materialized (
    select distinct u.user_id, d.node_id as target_id
    from batch c
    join up_users u on u.origin = c.tail_id
    join down_capped d on d.origin = c.head_id
    where (select ok from applies)
  ), region_index as (
    -- one flat object keyed by pair: a probe is a binary search of its
    -- keys. (Nested by user, each probe extracted the user's object, a
    -- copy of all the user's region pairs: quadratic in the region.)
    select coalesce(jsonb_object_agg(permgraph._pair_key(user_id, target_id), true), '{}') as pairs
    from region
  ), region_users as (
    select n.id as user_id
    from (select distinct user_id from region) r
    cross join lateral (select n.id from permgraph.nodes n where n.id = r.user_id and n.kind = 'user' offset 0) n
  ), walk(user_id, node_id, node_kind, level, last_edge_manage) as (
    -- the region's users' own edges into it
    select ru.user_id, e.head_id, e.head_kind, e.level, e.level = 3 and e.head_kind = 'user'
    from region_users ru
    cross join lateral (select e.head_id, e.head_kind, e.level from permgraph.edges e where e.tail_id = ru.user_id offset 0) e
    where (select pairs from region_index) ? permgraph._pair_key(ru.user_id, e.head_id)
    union all
    -- per region pair, its in-edges from groups outside the region, each
    -- seeded with the user's stored row on the group (right: its paths did
    -- not change)
    select r.user_id, e.head_id, e.head_kind, least(s.level, e.level), e.level = 3 and e.head_kind = 'user'
    from region r
    cross join lateral (select e.head_id, e.head_kind, e.level, e.tail_id from permgraph.edges e
                        where e.head_id = r.target_id and e.tail_kind = 'group' offset 0) e
    cross join lateral (select p.level from permgraph.permissions p
                        where p.user_id = r.user_id and p.target_id = e.tail_id offset 0) s
    where not (select pairs from region_index) ? permgraph._pair_key(r.user_id, e.tail_id)
    union
    select w.user_id, e.head_id, e.head_kind, least(w.level, e.level), e.level = 3 and e.head_kind = 'user'
    from walk w
    cross join lateral (select e.head_id, e.head_kind, e.level from permgraph.edges e where e.tail_id = w.node_id offset 0) e
    where w.node_kind = 'group'
      and (select pairs from region_index) ? permgraph._pair_key(w.user_id, e.head_id)
  ), computed as (
    -- every region pair once: the best of its paths, or null when none is
    -- left (the region's own rows come in with no level, so that such a
    -- pair is not lost; grouping instead of joining, which would nest loops
    -- over two CTEs)
    select x.user_id, x.target_id, max(x.level)::smallint as level, bool_or(x.traverses) as traverse_owned
    from (
      select user_id, node_id as target_id, level, permgraph._path_traverses(node_kind, last_edge_manage) as traverses
      from walk
      union all
      select r.user_id, r.target_id, null::smallint, null::boolean
      from region r
      union all
      -- a user's own row
      select r.user_id, r.target_id, 3::smallint, true
      from region r
      where r.user_id = r.target_id
        and exists (select 1 from permgraph.nodes n where n.id = r.user_id and n.kind = 'user')
    ) x
    group by x.user_id, x.target_id
  ), diff as (
    select n.user_id, n.target_id, n.level, n.traverse_owned, null::timestamptz as valid_until,
           p.level is null as is_new, n.level is null as is_gone,
           p.level as old_level, p.traverse_owned as old_traverse_owned, p.valid_until as old_valid_until
    from computed n
    left join lateral (select p.level, p.traverse_owned, p.valid_until from permgraph.permissions p
                       where p.user_id = n.user_id and p.target_id = n.target_id offset 0) p on true
    where (p.level, p.traverse_owned, p.valid_until) is distinct from (n.level, n.traverse_owned, null::timestamptz)
  ), deleted_rows as (
    delete from permgraph.permissions p using diff d
    where d.is_gone and p.user_id = d.user_id and p.target_id = d.target_id
    returning 1
  ), updated_rows as (
    update permgraph.permissions p set level = d.level, traverse_owned = d.traverse_owned, valid_until = d.valid_until
    from diff d
    where not d.is_new and not d.is_gone and p.user_id = d.user_id and p.target_id = d.target_id
    returning 1
  ), inserted_rows as (
    insert into permgraph.permissions (user_id, target_id, level, traverse_owned, valid_until)
    select user_id, target_id, level, traverse_owned, valid_until from diff where is_new
    order by user_id, target_id
    returning 1
  ), recorded as (
    -- the change stream's events (170_changes.sql), only while a consumer is registered
    insert into permgraph.permission_changes (user_id, target_id, old_level, new_level, old_traverse_owned, new_traverse_owned,
                                              old_valid_until, new_valid_until)
    select user_id, target_id, old_level, level, old_traverse_owned, traverse_owned, old_valid_until, valid_until
    from diff where recording
  ), applied_changes as (
    -- the end of the batch: the change rows this snapshot saw are applied
    -- (through the view: only the part a split took)
    delete from permgraph._batch_changes where (select ok from applies)
  ), applied_deletions as (
    delete from permgraph.deleted_nodes where (select ok from applies)
  ), figures as (
    select (select changes from pending) as changes, (select count(*) from region) as region_pairs,
           (select count(*) from inserted_rows) as inserted, (select count(*) from updated_rows) as updated,
           (select count(*) from deleted_rows) as deleted,
           permgraph._ms_since(p_started) as ms
  ), recorded_batch as (
    update permgraph.applier_state set
      last_batch_at = now(), last_batch_mode = 'incremental', last_batch_changes = f.changes,
      last_batch_ms = f.ms, rows_inserted = f.inserted, rows_updated = f.updated, rows_deleted = f.deleted,
      last_batch_part = nullif(permgraph._batch_part(), ''),  -- which part the next split takes (045_batch_split.sql)
      -- the whole queue this snapshot saw is applied: the low-water mark rises (045_batch_split.sql)
      queue_low_water = case when permgraph._batch_part() = '' then pg_snapshot_xmin(pg_current_snapshot()) else queue_low_water end,
      last_batch_snapshot = pg_current_snapshot()  -- this statement's: see above
    from figures f
    where (select ok from applies)
  )
  select permgraph._local_batch_result(false, f.changes, f.region_pairs, f.inserted, f.updated, f.deleted, f.ms),
         permgraph._batch_trash_roots()
  into result, trash_roots
  from figures f
  where (select ok from applies);
  if trash_roots is not null then
    result := permgraph._finish_local_batch(result, trash_roots, p_started);
  end if;
  return result;
end $$;

-- The rest of a local batch after its statement (_apply_local_batch, or
-- _write_additions with p_local): the trash of p_trash_roots refreshed,
-- and the batch's time then includes it. Returns p_result, the statement's
-- result (null: it wrote nothing, and nothing is done).
--
-- Under READ COMMITTED the refresh reads a later snapshot than the batch,
-- and that is still exact. trashed_groups is a function of nodes alone
-- (owners and trash_at; no permission row depends on it), and
-- _refresh_trash recomputes the groups it covers from the nodes it reads:
-- a group's row comes out as of that later snapshot, never older. A node
-- changed in between has change rows of its own, which this batch did not
-- read and did not delete, so the next batch refreshes what they touch
-- again (rows that came out ahead are written as they are). Batches run
-- one at a time (the applier lock, held to commit), and only the applier
-- writes trashed_groups. Before finding 20 (bench/FINDINGS.md) such a batch
-- was left to apply_changes on a pool: BEGIN, the call, COMMIT, after an
-- attempt that returned null.
create or replace function permgraph._finish_local_batch(p_result jsonb, p_trash_roots text[], p_started timestamptz)
returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
-- (as in _apply_local_batch: no parallel worker for the trash refresh)
set max_parallel_workers_per_gather = 0
as $$
begin
  if p_result is null then
    return null;
  end if;
  perform permgraph._refresh_trash(p_trash_roots);
  p_result := jsonb_set(p_result, '{ms}', to_jsonb(permgraph._ms_since(p_started)));
  update permgraph.applier_state set last_batch_ms = (p_result ->> 'ms')::double precision;
  return p_result;
end $$;

-- (its signature gained p_adds_only: the old one goes first)
drop function if exists permgraph._apply_local_path(integer, bigint, timestamptz);

-- The local path for the pending batch, whichever statement fits it: a
-- batch that removes nothing (_batch_removes_nothing) by the semi-naive
-- one (_write_additions with p_local: its cost follows the rows that rise),
-- any other by the region one (_apply_local_batch). Both check in their own
-- snapshot that the path takes the batch, so the choice here is only which
-- to try (if the batch changes before the statement, the statement sees
-- it, and a wrong guess costs a fall back to the ordinary path, never a
-- wrong row). p_adds_only: whether every change of the batch adds an edge,
-- as the caller's read of the queue saw it (_pending_changes); such a
-- batch goes to the semi-naive statement without asking
-- _batch_removes_nothing() first, some tens of us of a ~2 ms local change
-- (bench/FINDINGS.md 37). Any other batch is asked: a raised level comes as
-- the old edge's removal and the new edge's addition, and removes nothing.
-- Returns apply_changes' result, or null having written nothing (then the
-- ordinary path is the way). The other parameters are
-- _apply_local_batch's; p_max_pairs <= 0: never.
create or replace function permgraph._apply_local_path(p_max_changes integer, p_max_pairs bigint,
  p_started timestamptz, p_adds_only boolean) returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  additions record;
begin
  if p_max_pairs <= 0 then
    return null;
  end if;
  if not p_adds_only and not permgraph._batch_removes_nothing() then
    return permgraph._apply_local_batch(p_max_changes, p_max_pairs, p_started);
  end if;
  select a.batch, a.trash_roots into additions
  from permgraph._write_additions(permgraph._changes_begin_write(), p_max_pairs, true, p_max_changes, p_started) a;
  if additions.trash_roots is not null then
    return permgraph._finish_local_batch(additions.batch, additions.trash_roots, p_started);
  end if;
  return additions.batch;
end $$;

-- Applies the pending changes if the local path fits them (_apply_local_path),
-- as the one statement of its own transaction: under READ COMMITTED too,
-- with writers running and not locked out, since everything it reads and
-- writes is one statement's snapshot. Returns apply_changes' result, or
-- null having written nothing (then apply_changes, in a REPEATABLE READ
-- transaction, is the way). This is how applyChanges() (src/engine/apply.ts)
-- applies a local change in one round trip instead of three (BEGIN, the
-- call, COMMIT), and without apply_changes' statements around the one that
-- does the work. The parameters are apply_changes'; the
-- bound on the region (for a batch that only adds, on the rows that rise)
-- is the least of p_local_pairs (null: the default, _local_change_pairs();
-- 0: never), p_chunk_pairs and p_max_pairs.
create or replace function permgraph.apply_local_changes(
  p_max_changes integer default 100000,  -- = DEFAULT_MAX_BATCH in src/engine/apply.ts
  p_max_pairs bigint default null,
  p_chunk_pairs bigint default null,
  p_local_pairs bigint default null
) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  -- the batch's clock starts here, as apply_changes' does at its top: the
  -- read of the queue below is part of what a batch costs
  started timestamptz := clock_timestamp();
  at timestamptz;
  queue record;
  local_limit bigint := least(p_max_changes, permgraph._local_change_max_changes());
begin
  -- A state this server run has not recorded (restored from another
  -- cluster, not recorded yet, or the server started since): its queue's
  -- mark may lie above the changes written here, and apply_changes adopts
  -- it first (048_cluster_identity.sql). A table whose rows are missing:
  -- apply_changes recomputes it in full (_permissions_missing,
  -- 060_apply.sql).
  if not permgraph._recorded_by_this_server() or permgraph._permissions_missing() then
    return null;
  end if;
  -- (the whole queue: which part a batch takes is apply_changes' to say in
  -- a worker session, never a caller's setting; 045_batch_split.sql)
  perform pg_catalog.set_config('permgraph.batch_part', '', true);
  -- (counted up to what the local path takes: a backlog is not read whole here)
  select p.pending, p.adds_only into queue from permgraph._pending_changes(local_limit) p;
  if queue.pending > local_limit then
    return null;  -- (more than the local path takes: apply_changes' batch)
  end if;
  -- Nothing pending and nothing expired: apply_changes' answer, with no
  -- lock and no transaction of its own (BEGIN, apply_changes, COMMIT cost
  -- ~2 ms on org small where this costs a round trip). Exact without the
  -- applier lock: a batch deletes the change rows it applies in the
  -- transaction that writes their rows, so an empty queue in this
  -- statement's snapshot means every change committed before the call was
  -- applied by a committed batch (one still running would leave its rows
  -- visible here).
  if queue.pending = 0 then
    at := clock_timestamp();
    if permgraph._count_expired(at) = 0 then
      return permgraph._nothing_to_apply(at);
    end if;
  end if;
  return permgraph._apply_local_path(
    p_max_changes, least(coalesce(p_local_pairs, permgraph._local_change_pairs()), p_chunk_pairs, p_max_pairs), started,
    queue.adds_only);
end $$;
