-- permgraph 005: applying captured changes, incrementally or in full, and
-- answering checks.

-- Pairs (user, target) a batch can affect: for each changed edge tail -> head,
-- every user with a path to the tail (through groups) times every node
-- reachable from the head (through groups), both in the union of the old and
-- new graphs (current edges plus the batch's changed pairs). Any pair outside
-- this region has the same paths before and after, so its stored row stands.
-- Returns false, creating nothing, when the region would exceed p_max_pairs.
create or replace function permgraph._build_region(p_max_pairs bigint) returns boolean
language plpgsql
-- (no join-method settings: the walks step through LATERAL lookups, which
-- are always index probes, and the final joins of a big batch need hashing)
-- quiet the NOTICEs of drop table if exists
set client_min_messages = warning as $$
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
    select b.tail_id, b.tail_kind, b.head_id, b.head_kind
    from batch b
    where not exists (select 1 from permgraph.edges e where e.tail_id = b.tail_id and e.head_id = b.head_id)
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
  if exists (select 1 from pg_temp.permgraph_region where user_id is null) then
    return false;
  end if;
  create unique index on pg_temp.permgraph_region (user_id, target_id);
  analyze pg_temp.permgraph_region;
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
begin
  drop table if exists pg_temp.permgraph_new;
  create temp table permgraph_new on commit drop as
  with recursive walk(user_id, node_id, node_kind, level, last_edge_manage) as (
    select r.user_id, e.head_id, e.head_kind, e.level, e.level = 3 and e.head_kind = 'user'
    from pg_temp.permgraph_region r
    join permgraph.edges e on e.head_id = r.target_id and e.tail_id = r.user_id
    join permgraph.nodes u on u.id = r.user_id and u.kind = 'user'
    union all
    select r.user_id, e.head_id, e.head_kind, least(p.level, e.level), e.level = 3 and e.head_kind = 'user'
    from pg_temp.permgraph_region r
    join permgraph.edges e on e.head_id = r.target_id and e.tail_kind = 'group'
    join permgraph.permissions p on p.user_id = r.user_id and p.target_id = e.tail_id
    where not exists (select 1 from pg_temp.permgraph_region inside
                      where inside.user_id = r.user_id and inside.target_id = e.tail_id)
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
  analyze pg_temp.permgraph_new;
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
  p_max_changes integer default 10000,
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

-- Recomputes the whole table (writing only differences) and marks every
-- pending change done. Readers see the old rows until commit, never an empty
-- or half-built table.
create or replace function permgraph.refresh() returns jsonb
language sql as $$ select permgraph.apply_changes(p_force_full => true) $$;

-- Whether a node is hidden by trash right now (semantics.md, "Trash").
-- Whether a node with these values is hidden by trash right now: the rule of
-- semantics.md in one place, as an expression PostgreSQL inlines into callers
-- that already hold the node's row.
create or replace function permgraph._hidden(p_kind text, p_id text, p_owner_id text, p_trash_at timestamptz) returns boolean
language sql stable as $$
  select case p_kind
    when 'user' then false
    when 'group' then exists (select 1 from permgraph.trashed_groups t
                              where t.group_id = p_id and t.trash_at <= now())
    else coalesce(p_trash_at <= now(), false)
         or exists (select 1 from permgraph.trashed_groups t
                    where t.group_id = p_owner_id and t.trash_at <= now())
  end
$$;

-- Whether a node is hidden by trash right now (semantics.md, "Trash").
create or replace function permgraph.is_trashed(p_id text) returns boolean
language sql stable as $$
  select permgraph._hidden(n.kind, n.id, n.owner_id, n.trash_at) from permgraph.nodes n where n.id = p_id
$$;

create or replace function permgraph._require_level(p_level integer) returns void
language plpgsql immutable as $$
begin
  if p_level is null or p_level not between 1 and 3 then
    raise exception 'permgraph: level must be 1 (read), 2 (write) or 3 (manage), got %', coalesce(p_level::text, 'null')
      using errcode = '22023';
  end if;
end $$;

-- May p_user_id act on node p_target_id at p_level? Directly, or through the
-- target's owner when the owner row has traverse_owned; trashed targets are hidden.
create or replace function permgraph.check(p_user_id text, p_target_id text, p_level integer) returns boolean
language plpgsql stable as $$
begin
  perform permgraph._require_level(p_level);
  return exists (
    select 1 from permgraph.nodes t
    where t.id = p_target_id
      and not permgraph.is_trashed(t.id)
      and (exists (select 1 from permgraph.permissions p
                   where p.user_id = p_user_id and p.target_id = t.id and p.level >= p_level)
           or exists (select 1 from permgraph.permissions p
                      where p.user_id = p_user_id and p.target_id = t.owner_id
                        and p.level >= p_level and p.traverse_owned)));
end $$;
