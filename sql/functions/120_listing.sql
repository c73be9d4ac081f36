-- Permission-aware listings (keyset pages). They follow the rule of the
-- semantics: u may act on x at level L iff a row (u, x) has level >= L, or
-- x's owner o has a row (u, o) with level >= L and traverse_owned; trashed
-- groups and objects are hidden (permgraph._not_trashed, read laterally
-- with every node, where the planner inlines it). They read the rows
-- through permgraph.effective_permissions, so a row whose valid_until has
-- passed counts as absent (expiring grants).
--
-- Each item carries valid_until: until when its level, as listed, holds
-- without a recomputation. An item's level is the best of at most two rows
-- (the direct one, and its owner's with traverse_owned); reads drop a row
-- at its valid_until, so the level listed holds until the last of the rows
-- giving that level expires: the latest valid_until among them, null
-- (never) when one of them has none. Superusers' items: null.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- Keyset pages over the children of one owner use nodes_owner_idx
-- (owner_id, id) (001_schema.sql): each owner contributes its next few ids by a
-- range scan, however many nodes it owns.

-- Listings return at most this many rows per call (the TypeScript API caps
-- pages lower, at 10,000, and asks for one more row to know whether more follow).
create or replace function permgraph._require_page_limit(p_limit integer) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_limit is null or p_limit not between 1 and 100000 then
    raise exception 'permgraph: limit must be between 1 and 100000, got %', coalesce(p_limit::text, 'null')
      using errcode = '22023';
  end if;
end $$;

-- The kind of p_id, with a clear error when it is not a node.
create or replace function permgraph._require_node(p_id text, p_role text) returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  node_kind text;
begin
  select kind into node_kind from permgraph.nodes where id = p_id;
  if not found then
    raise exception 'permgraph: % "%" does not exist', p_role, p_id using errcode = '22023';
  end if;
  return node_kind;
end $$;

create or replace function permgraph._require_user(p_id text) returns void
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  node_kind text := permgraph._require_node(p_id, 'user');
begin
  if node_kind <> 'user' then
    raise exception 'permgraph: "%" is % %, not a user (permissions start at users)', p_id,
      case node_kind when 'object' then 'an' else 'a' end, node_kind
      using errcode = '22023';
  end if;
end $$;

-- The ids whose tombstones (nodes deleted since the worker's last batch)
-- hide rows of p_user_id: a row (user, target) counts as absent when its
-- user or its target is among them. A tombstone hides every row of its id,
-- until a batch during a long job records which users of the job may still
-- hold rows of the deleted node; then only theirs (long_job_tombstone_waits,
-- 065_long_job.sql). effective_permissions writes the same rule per row.
-- (PL/pgSQL: an SQL function with a SET clause is planned at every call
-- before PostgreSQL 18, test/engine/plan-settings.test.ts.)
create or replace function permgraph._tombstoned_ids(p_user_id text) returns text[]
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return array(select distinct d.id::text
               from permgraph.deleted_nodes d
               where not d.waits_recorded
                  or exists (select 1 from permgraph.long_job_tombstone_waits w
                             where w.node_id = d.id and w.user_id = p_user_id));
end $$;

-- Until when a node listed by list_targets stays at its best level, when it
-- is reached both directly (a row of its own) and through its owner: the
-- later end of the two when both give the best level (null: one lasts), else
-- the end of the one that does. An SQL-standard body: resolved when
-- created, and inlined into both of list_targets' queries.
create or replace function permgraph._best_level_until(p_best integer,
  p_direct_level integer, p_direct_until timestamptz, p_owner_level integer, p_owner_until timestamptz)
returns timestamptz
language sql immutable
return case
  when p_direct_level is not distinct from p_best and p_owner_level is not distinct from p_best
    then case when p_direct_until is null or p_owner_until is null then null
              else greatest(p_direct_until, p_owner_until) end
  when p_direct_level is not distinct from p_best then p_direct_until
  else p_owner_until
end;

create or replace function permgraph.list_targets(
  p_user_id text, p_level integer default 1, p_kind text default null,
  p_after text default null, p_limit integer default 100
) returns table (target_id text, kind text, level smallint, valid_until timestamptz)
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
set jit = off
-- its static statements walk indexes whatever the values (and the hash
-- plan's query is dynamic, planned per call): planned once per session, not
-- on every call (the rows plan's statement cost ~0.8 ms to plan on org)
set plan_cache_mode = force_generic_plan
as $$
#variable_conflict use_column
declare
  -- '' is the smallest string, so "id >= from_id" (an index bound) plus
  -- skipping p_after itself means "after p_after", even for the id ''.
  from_id text collate "C" := coalesce(p_after, '');
  skip_from boolean := p_after is not null;
  counted record;       -- the user's rows, counted from the index
  choice record;        -- _listing_plan
  count_limit bigint;   -- how many of the user's rows to count (null: all)
  node_rows double precision;
  per_owner double precision;
  gone text[];          -- nodes deleted since the last batch whose rows of the user are hidden (_tombstoned_ids)
  -- the rows plan's children read at once, at most (then owner by owner)
  children_cap bigint := 8 * p_limit::bigint;
begin
  perform permgraph._require_level(p_level);
  perform permgraph._require_page_limit(p_limit);
  perform permgraph._require_user(p_user_id);
  if p_kind is not null and p_kind not in ('user', 'group', 'object') then
    raise exception 'permgraph: kind must be user, group or object, got "%"', p_kind using errcode = '22023';
  end if;
  if permgraph._is_superuser(p_user_id) then
    -- Superusers have no rows of their own: every node that trash does not hide.
    return query
    select n.id::text, n.kind, 3::smallint, null::timestamptz
    from permgraph.nodes n
    cross join lateral permgraph._not_trashed(n.kind, n.id, n.owner_id, n.trash_at) nt
    where n.id >= from_id and not (skip_from and n.id = from_id)
      and (p_kind is null or n.kind = p_kind)
    order by n.id
    limit p_limit;
    return;
  end if;

  -- The rows of permgraph.effective_permissions, read from permissions by
  -- its covering indexes: valid_until not passed, and neither the user nor
  -- the target deleted since the last batch. The (few) deleted ids are read
  -- once: a per-row probe of deleted_nodes costs as much as the row itself.
  gone := permgraph._tombstoned_ids(p_user_id);
  if p_user_id = any (gone) then
    return;
  end if;

  -- The plan (_listing_plan): the nodes of the kind asked for that the first
  -- 8 owners among the user's rows own (at most 1,000 each), the number of
  -- nodes, then the user's rows counted from the index only as far as the
  -- scan could be cheaper than reading them.
  select avg(k.n) into per_owner
  from (select p.target_id from permgraph.permissions p
        where p.user_id = p_user_id and p.level >= p_level and p.traverse_owned
          and (p.valid_until is null or p.valid_until > now())
        limit 8) o
  cross join lateral (select count(*) as n
                      from (select 1 from permgraph.nodes n
                            where n.owner_id = o.target_id and (p_kind is null or n.kind = p_kind)
                            limit 1000) c) k;
  select c.reltuples into node_rows from pg_class c where c.oid = 'permgraph.nodes'::regclass;
  choice := permgraph._listing_plan(null, p_kind is null, null, false, per_owner, node_rows, p_limit, true);
  count_limit := choice.count_cap + 1;
  loop  -- at most twice: up to the cap, then (when that cannot decide) all
    select count(*) as all_rows, count(*) filter (where r.traverse_owned) as owner_rows into counted
    from (select p.traverse_owned from permgraph.permissions p
          where p.user_id = p_user_id and p.level >= p_level
            and (p.valid_until is null or p.valid_until > now())
          limit count_limit) r;
    choice := permgraph._listing_plan(counted.all_rows, p_kind is null, counted.owner_rows,
                                      count_limit is null or counted.all_rows < count_limit,
                                      per_owner, node_rows, p_limit, true);
    exit when choice.plan is not null;
    count_limit := null;
  end loop;

  if choice.plan = 'scan' then
    -- scan: the nodes in id order, the user's rows probed by primary key for
    -- each (its own row, its owner's with traverse_owned), trash last; the
    -- probes give the levels too. Each probe is a lateral subquery with a
    -- limit, so it stays one index probe per node: never a join the planner
    -- could turn into a read of all the user's rows.
    return query
    select s.id::text, s.kind, s.best::smallint,
           permgraph._best_level_until(s.best, s.direct_level, s.direct_until, s.owner_level, s.owner_until)
    from (
      select n.id, n.kind, greatest(d.level, o.level) as best,
             d.level as direct_level, d.valid_until as direct_until,
             o.level as owner_level, o.valid_until as owner_until
      from permgraph.nodes n
      cross join lateral permgraph._not_trashed(n.kind, n.id, n.owner_id, n.trash_at) nt
      left join lateral (select p.level, p.valid_until from permgraph.permissions p
                         where p.user_id = p_user_id and p.target_id = n.id
                           and (p.valid_until is null or p.valid_until > now())
                           and not (n.id = any (gone))
                         limit 1) d on true
      left join lateral (select p.level, p.valid_until from permgraph.permissions p
                         where p.user_id = p_user_id and p.target_id = n.owner_id and p.traverse_owned
                           and (p.valid_until is null or p.valid_until > now())
                           and not (n.owner_id = any (gone))
                         limit 1) o on true
      where n.id >= from_id and not (skip_from and n.id = from_id)
        and (p_kind is null or n.kind = p_kind)
        and (d.level >= p_level or o.level >= p_level)
      order by n.id
      limit p_limit
    ) s
    order by s.id;
    return;
  elsif choice.plan = 'hash' then
    -- hash: the user's rows read once and hashed, joined twice to the nodes
    -- read sequentially (as each node's own row, and as its owner's), then
    -- sorted; the levels and valid_until come from the same join, so a
    -- whole listing reads the user's rows once instead of again for the
    -- page's levels (tree's 7,384 rows: ~4x less time). Dynamic so that it
    -- is planned with this user's row count every time: a generic plan's
    -- average user could make the joins nested loops over all the rows; and
    -- the join sits under offset 0, sorted and limited above it, so that a
    -- page's limit does not steer it into the nodes' id order with a loop
    -- over the user's rows per node (cyclic: 760 nodes x 170 rows, 10 ms).
    return query execute
    'with mine as materialized (
       select p.target_id, p.level, p.traverse_owned, p.valid_until
       from permgraph.permissions p
       where p.user_id = $1 collate "C" and (p.valid_until is null or p.valid_until > now())
         and not (p.target_id collate "C" = any ($6)))
     select b.id::text, b.kind, b.best::smallint,
            permgraph._best_level_until(b.best, b.direct_level, b.direct_until, b.owner_level, b.owner_until)
     from (
      select h.* from (
       select n.id, n.kind, greatest(d.level, o.level) as best,
              d.level as direct_level, d.valid_until as direct_until,
              o.level as owner_level, o.valid_until as owner_until
       from permgraph.nodes n
       cross join lateral permgraph._not_trashed(n.kind, n.id, n.owner_id, n.trash_at) nt
       left join mine d on d.target_id = n.id
       left join mine o on o.target_id = n.owner_id and o.traverse_owned
       where n.id >= $3 collate "C" and not ($4 and n.id = $3 collate "C")
         and ($5::text is null or n.kind = $5)
         and (d.level >= $2 or o.level >= $2)
       offset 0) h
      order by h.id
      limit $7
     ) b
     order by b.id'
    using p_user_id, p_level, from_id, skip_from, p_kind, gone, p_limit;
    return;
  else
    -- rows, all children at once: the children of all the user's owners
    -- read by one index scan whose keys are the owners (owner_id = any of
    -- their array, nodes_owner_idx); the owner's level is read for the
    -- page's nodes only. PostgreSQL 17 and later step from one owner's entries
    -- to the next within the index's pages, so that the ~400 owners of
    -- org's heaviest users cost ~70 index searches, not ~400 descents and
    -- rescans of a lateral subquery (org large: 0.37 vs 0.67 ms for those
    -- children, server min). It reads every child of every owner after the
    -- cursor, not p_limit per owner, so it stops at children_cap of them:
    -- past that the statement returns nothing and the per-owner walk below
    -- finds the page. The page is the first p_limit ids of the user's own
    -- rows and of those children, as below, merged in id order, so that
    -- only the own rows before the page's end are read. An own row whose
    -- node is among the children (found in a hash of them) is known to be
    -- shown, and of which kind; only the others probe nodes for their kind
    -- and trash (org large's heaviest users: 0.1 ms of a 1.5 ms page).
    return query
    with ch as materialized (
      select n.id, n.kind, n.owner_id
      from permgraph.nodes n
      cross join lateral permgraph._not_trashed(n.kind, n.id, n.owner_id, n.trash_at) nt
      where n.owner_id = any (array(
              select p.target_id from permgraph.permissions p
              where p.user_id = p_user_id and p.level >= p_level and p.traverse_owned
                and (p.valid_until is null or p.valid_until > now())
                and not (p.target_id = any (gone))))
        and n.id >= from_id and not (skip_from and n.id = from_id)
        and (p_kind is null or n.kind = p_kind)
      limit children_cap + 1)
    select c.id::text, c.kind, greatest(c.direct_level, o.level)::smallint,
           permgraph._best_level_until(greatest(c.direct_level, o.level),
                                       c.direct_level, c.direct_until, o.level, o.valid_until)
    from (
      select f.id, min(f.kind) as kind, max(f.owner_id) as owner_id,
             max(f.level) filter (where f.direct) as direct_level,
             (array_agg(f.valid_until) filter (where f.direct))[1] as direct_until
      from (
        (select p.target_id as id, k.kind, p.level, p.valid_until, true as direct, null::text as owner_id
         from permgraph.permissions p
         cross join lateral (
           (select null::text as kind where p.target_id in (select ch.id from ch))  -- its kind: ch's
           union all
           (select n.kind from permgraph.nodes n
            cross join lateral permgraph._not_trashed(n.kind, n.id, n.owner_id, n.trash_at) nt
            where n.id = p.target_id and (p_kind is null or n.kind = p_kind)
            limit 1)
           limit 1) k
         where p.user_id = p_user_id and p.target_id >= from_id
           and not (skip_from and p.target_id = from_id)
           and p.level >= p_level
           and (p.valid_until is null or p.valid_until > now())
           and not (p.target_id = any (gone))
         order by p.target_id
         limit p_limit)
        union all
        select ch.id, ch.kind, null, null, false, ch.owner_id
        from ch
      ) f
      group by f.id
      order by f.id
      limit p_limit
    ) c
    -- the owner's row of a page node reached through its owner: a probe
    -- per page node (at most p_limit), never a join of the children with
    -- the owner rows, whose plan the estimates (a CTE of "1" row) could
    -- make a loop over all the children for each owner row
    left join lateral (select p.level, p.valid_until from permgraph.permissions p
                       where p.user_id = p_user_id and p.target_id = c.owner_id
                         and p.level >= p_level and p.traverse_owned
                         and (p.valid_until is null or p.valid_until > now())
                       limit 1) o on true
    where (select count(*) from ch) <= children_cap
    order by c.id;
    if found then
      return;
    end if;
    -- rows, per owner (above children_cap children, or an empty page): the
    -- user's own rows in id order (the first p_limit after the
    -- cursor), with the first p_limit children of each owner among the
    -- user's rows (nodes_owner_idx: one range scan per owner); the first
    -- p_limit ids of the two are the page. An owner's (p_limit + 1)-th
    -- child comes after its p_limit-th, so after the page's end: one pass
    -- finds the whole page, and every page node reached through an owner
    -- row is among that owner's children, every one with a row of its own
    -- (at p_level or more) among the first part: the levels come with the
    -- rows, no probe per node. Every read is an index walk driven by the
    -- user's rows (lateral subqueries with a limit), never a join whose
    -- plan the row estimates could turn into a quadratic loop or a read of
    -- all the nodes (generic plans estimate a user's rows at the average).
    return query
    select c.id::text, c.kind, greatest(c.direct_level, c.owner_level)::smallint,
           permgraph._best_level_until(greatest(c.direct_level, c.owner_level),
                                       c.direct_level, c.direct_until, c.owner_level, c.owner_until)
    from (
      select f.id, min(f.kind) as kind,
             max(f.level) filter (where f.direct) as direct_level,
             (array_agg(f.valid_until) filter (where f.direct))[1] as direct_until,
             max(f.level) filter (where not f.direct) as owner_level,
             (array_agg(f.valid_until) filter (where not f.direct))[1] as owner_until
      from (
        (select n.id, n.kind, p.level, p.valid_until, true as direct
         from permgraph.permissions p
         cross join lateral (select x.id, x.kind, x.owner_id, x.trash_at from permgraph.nodes x
                             where x.id = p.target_id limit 1) n
         cross join lateral permgraph._not_trashed(n.kind, n.id, n.owner_id, n.trash_at) nt
         where p.user_id = p_user_id and p.target_id >= from_id
           and not (skip_from and p.target_id = from_id)
           and p.level >= p_level
           and (p.valid_until is null or p.valid_until > now())
           and not (p.target_id = any (gone))
           and (p_kind is null or n.kind = p_kind)
         order by p.target_id
         limit p_limit)
        union all
        select ch.id, ch.kind, p.level, p.valid_until, false
        from permgraph.permissions p
        cross join lateral (
          select n.id, n.kind
          from permgraph.nodes n
          cross join lateral permgraph._not_trashed(n.kind, n.id, n.owner_id, n.trash_at) nt
          where n.owner_id = p.target_id
            and n.id >= from_id and not (skip_from and n.id = from_id)
            and (p_kind is null or n.kind = p_kind)
          order by n.id
          limit p_limit
        ) ch
        where p.user_id = p_user_id and p.level >= p_level and p.traverse_owned
          and (p.valid_until is null or p.valid_until > now())
          and not (p.target_id = any (gone))
      ) f
      group by f.id
      order by f.id
      limit p_limit
    ) c
    order by c.id;
  end if;
end $$;

-- The users who may act on node p_target_id at p_level (directly or through
-- its owner), with user ids strictly after p_after, in id order, at most
-- p_limit; level is each user's best level on the node. Nobody, when the
-- node is trashed. Both sources are range scans of permissions_target_idx.
create or replace function permgraph.list_users(
  p_target_id text, p_level integer default 1, p_after text default null, p_limit integer default 100
) returns table (user_id text, level smallint, valid_until timestamptz)
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
#variable_conflict use_column
declare
  from_id text collate "C" := coalesce(p_after, '');
  skip_from boolean := p_after is not null;
  target_owner text;
begin
  perform permgraph._require_level(p_level);
  perform permgraph._require_page_limit(p_limit);
  perform permgraph._require_node(p_target_id, 'target');
  if permgraph.is_trashed(p_target_id) then
    return;
  end if;
  select n.owner_id into target_owner from permgraph.nodes n where n.id = p_target_id;
  -- Per user, the first of its rows by (level desc, valid_until desc, never
  -- first): the best level, and the latest valid_until among the rows
  -- giving it (see the file comment).
  return query
  select distinct on (c.user_id) c.user_id::text, c.level::smallint, c.valid_until
  from (
    (select p.user_id, p.level, p.valid_until
     from permgraph.effective_permissions p
     where p.target_id = p_target_id and p.user_id >= from_id
       and not (skip_from and p.user_id = from_id)
       and p.level >= p_level
     order by p.user_id
     limit p_limit)
    union all
    (select p.user_id, p.level, p.valid_until
     from permgraph.effective_permissions p
     where p.target_id = target_owner and p.user_id >= from_id
       and not (skip_from and p.user_id = from_id)
       and p.level >= p_level and p.traverse_owned
     order by p.user_id
     limit p_limit)
    union all
    (select s.id, 3::smallint, null::timestamptz  -- superusers may act on everything not trashed
     from permgraph.nodes s
     where s.is_superuser and s.id >= from_id
       and not (skip_from and s.id = from_id)
     order by s.id
     limit p_limit)
  ) c
  order by c.user_id, c.level desc, c.valid_until desc nulls first
  limit p_limit;
end $$;

-- Choosing a listing's plan ------------------------------------------------------
-- A page of what a user may see can be found three ways:
--   rows: walk the user's owners and, for each, its first rows by an
--         (owner, id) index (list_targets: the user's own rows too), keep
--         the first p_limit: cost follows the number of owners and how
--         much they own, whatever the page size.
--   scan: walk the candidates (nodes, or an application table) in id order
--         from the cursor, probing the user's rows by primary key for each,
--         and stop at the p_limit-th visible one: cost follows
--         p_limit / (the fraction the user may see); nothing read up front.
--   hash: read all the user's owners (and own rows) into an array first,
--         then read the candidates sequentially, keeping those whose owner
--         is in it (a hash), and sort them: cost follows the size of the
--         table; the way to whole listings.
--   ordered (list_rows only): read all the user's owners into an array, as
--         hash does, then walk the candidates in id order from the cursor,
--         keeping those whose owner is in it, and stop at the p_limit-th:
--         the scan's walk at a hash lookup per candidate instead of an
--         index probe; the way to first pages of users who see much.
-- None is good for everyone: a user who sees 3% of a table scans ~33
-- candidates per listed row, one who owns thousands of owners reads them
-- all before the first row can be returned by rows, hash or ordered.
--
-- _listing_plan compares their costs from: p_rows of the user's rows to
-- read (list_targets, p_nodes: all of them, candidates themselves when
-- p_direct; list_rows: the owners), p_owner_rows owners among them (rows with
-- traverse_owned), p_per_owner candidates per owner (a sample), p_candidates
-- candidates (pg_class) and the page size. Counting a heavy user's rows
-- used to cost more than the page (thousands of index entries on every
-- call), so the caller reads at most count_cap of them (first call,
-- p_rows null): past that many, the scan is surely the cheapest. With
-- p_complete false the counts are lower bounds: the answer is scan when
-- that is sure, else null (count them all, then ask again).
-- The costs are in microseconds, measured on the benchmark databases of
-- bench/ (2-core machine, everything in memory): a row of the user's read
-- into an array 0.15, a candidate scanned in id order and probed in the
-- user's rows 3, one read sequentially and looked up in a hash 0.06 (a
-- node of list_targets' hash plan 0.3), an
-- index descent 1.5, a following index entry (its row included) or a
-- sorted row 0.3.
-- The setting permgraph.listing_plan ('rows', 'scan', 'hash' or 'ordered')
-- forces a plan: the tests run all of them on the same graphs (results are
-- identical; only the time differs). list_targets (p_nodes) has no ordered
-- plan, and takes a forced 'ordered' as 'hash', its nearest.
create or replace function permgraph._listing_plan(
  p_rows bigint, p_direct boolean, p_owner_rows bigint, p_complete boolean,
  p_per_owner double precision, p_candidates double precision, p_limit integer,
  p_nodes boolean,
  out plan text, out count_cap bigint
)
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  read_row constant double precision := 0.15;
  probed constant double precision := 3.0;
  -- a candidate of the hash plan: list_rows looks its owner up in a hashed
  -- array; list_targets (p_nodes) joins each node twice to the user's rows
  -- (measured: 0.27-0.35 per node on org, cyclic and tree)
  hashed constant double precision := case when p_nodes then 0.3 else 0.06 end;
  descent constant double precision := 1.5;
  entry constant double precision := 0.3;
  -- a candidate the ordered plan walks: its id index entry, its row, its
  -- owner made text and looked up (measured: 0.77 us per candidate on
  -- cyclic where the rows plan's read took 0.55 per row)
  ordered_row constant double precision := 0.6;
  forced text := nullif(current_setting('permgraph.listing_plan', true), '');
  candidates double precision := greatest(coalesce(p_candidates, 0), 1);
  per_owner double precision := greatest(coalesce(p_per_owner, 0), 1e-3);
  per_row double precision := per_owner + case when p_direct then 1 else 0 end;
  scan_bound double precision;  -- scan's cost times the rows
  user_rows double precision;
  visible double precision;
  rows_cost double precision;
  scan_cost double precision;
  hash_cost double precision;
  ordered_cost double precision;  -- infinity where there is no ordered plan (p_nodes)
begin
  if forced is not null and forced not in ('rows', 'scan', 'hash', 'ordered') then
    raise exception 'permgraph: permgraph.listing_plan must be rows, scan, hash or ordered (or unset), got "%"', forced
      using errcode = '22023';
  end if;
  -- With c rows of owners, scan costs at most scan_bound / c, rows at least
  -- c * (read_row + descent + per_row * entry) and hash at least
  -- c * read_row + candidates * hashed: count_cap is the larger of the c at
  -- which each of those reaches scan's bound.
  scan_bound := probed * p_limit * candidates / per_row;
  count_cap := least(1000000, greatest(64, ceil(greatest(
    sqrt(scan_bound / (read_row + descent + per_row * entry)),
    (sqrt((candidates * hashed) ^ 2 + 4 * read_row * scan_bound) - candidates * hashed) / (2 * read_row)))))::bigint;
  if p_rows is null then
    return;
  end if;
  if forced is not null then
    plan := case when forced = 'ordered' and p_nodes then 'hash' else forced end;
    return;
  end if;
  user_rows := p_rows;
  visible := greatest(least(candidates, case when p_direct then p_rows else 0 end + p_owner_rows * per_owner), 1);
  scan_cost := least(candidates, p_limit * candidates / visible) * probed;
  rows_cost := user_rows * (read_row + descent)
               + least(visible, user_rows * p_limit) * entry;
  hash_cost := user_rows * read_row + candidates * hashed + visible * entry;
  -- ordered competes only for users whose owners fit under count_cap: it
  -- beats the scan by a hash lookup per row walked but must read every
  -- owner first, and deciding that for a user with more (counting on
  -- until ordered's reading surely costs more than the scan's walk) cost
  -- the heaviest users more than ordered could save them. So a capped
  -- count still decides the scan alone, as before this plan existed.
  ordered_cost := case when p_nodes or user_rows > count_cap then 'infinity'
                       else user_rows * read_row + least(candidates, p_limit * candidates / visible) * ordered_row end;
  if coalesce(p_candidates, -1) <= 0 then
    -- nothing known of the candidates (never analyzed): the plan whose cost
    -- the user's own rows bound, once they are all counted
    plan := case when p_complete then 'rows' end;
  elsif not p_complete then
    -- lower bounds of rows and hash, an upper bound of scan (past the cap,
    -- no ordered plan)
    plan := case when scan_cost <= least(rows_cost, hash_cost) then 'scan' end;
  elsif scan_cost <= least(rows_cost, hash_cost, ordered_cost) then
    plan := 'scan';
  elsif ordered_cost <= least(rows_cost, hash_cost) then
    plan := 'ordered';
  elsif rows_cost < hash_cost then
    plan := 'rows';
  else
    plan := 'hash';
  end if;
end $$;

-- The rows of an application table that p_user_id may act on at p_level,
-- judged like enable_rls judges them (without match_row_id): through the
-- row's owner column (a row (user, owner) with traverse_owned, the owner
-- group's trash), superusers seeing every row whose owner trash does not
-- hide. A keyset page in the order of the id column: ids after p_after (cast
-- to the id column's type), at most p_limit rows. Called with a null of the
-- table's row type, it returns the table's rows:
--   select * from permgraph.list_rows(null::public.documents, 'id', 'owner_id', 'alice', 1, null, 100);
-- The id column must be unique (it orders the pages) and indexed; an
-- index on (owner column, id column) serves the rows plan. Security invoker:
-- the caller reads the table with its own privileges (and policies), and
-- permgraph's tables as permgraph_reader does.
create or replace function permgraph.list_rows(
  p_rows anyelement, p_id_column name, p_owner_column name, p_user_id text,
  p_level integer default 1, p_after text default null, p_limit integer default 100
) returns setof anyelement
language plpgsql stable
set search_path = pg_catalog, pg_temp
set jit = off
-- its static statements (and _listing_owners') are lookups whose plan does not
-- depend on the values: planned once per session instead of for each of the
-- first five calls (the queries of the table are dynamic, planned per call)
set plan_cache_mode = force_generic_plan
as $$
declare
  tbl regclass;
  id_type text;
  owner_type oid;
  owner_collation text;
  owner_deterministic boolean;  -- false: the owner column's collation calls some different strings equal
  id_collation text;
  tbl_schema name;
  tbl_name name;
  owner_key text;        -- the owner column as a permission target id
  owner_match text;      -- "this row's owner is o.target_id", usable by an index on the owner column
  owner_any text;        -- the owner column as an expression, compared with a set of ids
  owners_rows text;      -- the rows plan's read of every owner's rows at once (text owner columns), before its id range
  keyset_cond text;      -- "the row's id is after $3"
  owner_shown text;      -- "no trashed group hides the row" (the trash rule of 030_trash.sql, for an owner column)
  after_cond text := '';  -- keyset_cond where there is a cursor
  is_superuser boolean;
  gone text[];          -- nodes deleted since the last batch whose rows of the user are hidden (_tombstoned_ids)
  owners text[];        -- the user's owners that may own visible rows
  complete boolean;     -- owners holds all of them
  per_owner double precision;
  top_owner_rows double precision; -- the rows of the most common owner (null: the table has no statistics)
  table_rows double precision;
  choice record;
  owner_read record;    -- _listing_owners
  -- the rows plan's rows read at once, at most (then owner by owner)
  rows_cap bigint := 32 * p_limit::bigint;
  -- the rows plan's page so far: its rows up to an id bound read first,
  -- the rest of the page after that bound
  page_after text := p_after;
  page_limit integer := p_limit;
  page_share double precision;  -- the share of the table expected to hold twice the page
  bound text;           -- the bounded read's last id (cast to the id column's type)
  bound_share double precision;  -- the share of the table up to it, by the statistics
  owners_max_rows double precision;  -- the owners' rows if each owned as many as the most common owner (null: no statistics)
  id_bounds text;       -- the histogram of the id column (pg_stats), as text
  got bigint;
begin
  if p_level is null or p_level not between 1 and 3 then
    raise exception 'permgraph: level must be 1 (read), 2 (write) or 3 (manage), got %', coalesce(p_level::text, 'null')
      using errcode = '22023';
  end if;
  if p_limit is null or p_limit not between 1 and 100000 then
    raise exception 'permgraph: limit must be between 1 and 100000, got %', coalesce(p_limit::text, 'null')
      using errcode = '22023';
  end if;
  -- (as list_targets: an unknown id or a group is refused, not an empty list)
  perform permgraph._require_user(p_user_id);
  -- One read (called per page, and each statement has its cost): the table
  -- and both columns from the catalog; for the estimate (_listing_plan) the
  -- table's size, its rows per owner and its most common owner's rows from
  -- the planner's statistics; the
  -- user: superuser, or deleted since the last batch; and the (few) ids
  -- deleted since the last batch, read once: a per-row probe of
  -- deleted_nodes costs as much as the row itself.
  select t.typrelid::regclass, format_type(ai.atttypid, ai.atttypmod), ao.atttypid,
         case when ao.attcollation <> 0 then ao.attcollation::regcollation::text end,
         coalesce((select co.collisdeterministic from pg_collation co where co.oid = ao.attcollation), true),
         case when ai.attcollation <> 0 then ai.attcollation::regcollation::text end,
         n.nspname, c.relname,
         c.reltuples,
         case when s.n_distinct > 0 then c.reltuples * (1 - s.null_frac) / s.n_distinct
              when s.n_distinct < 0 then (1 - s.null_frac) / -s.n_distinct end,
         -- (no statistics: unknown; statistics without common values: none stands out)
         case when s.n_distinct is not null then c.reltuples * coalesce(s.top_freq, 0) end,
         coalesce((select u.is_superuser from permgraph.nodes u where u.id = p_user_id and u.kind = 'user'), false),
         permgraph._tombstoned_ids(p_user_id)
  into tbl, id_type, owner_type, owner_collation, owner_deterministic, id_collation, tbl_schema, tbl_name, table_rows, per_owner, top_owner_rows, is_superuser, gone
  from pg_type t
  join pg_class c on c.oid = t.typrelid
  join pg_namespace n on n.oid = c.relnamespace
  left join pg_attribute ai on ai.attrelid = t.typrelid and ai.attname = p_id_column and ai.attnum > 0 and not ai.attisdropped
  left join pg_attribute ao on ao.attrelid = t.typrelid and ao.attname = p_owner_column and ao.attnum > 0 and not ao.attisdropped
  left join lateral (select st.n_distinct, st.null_frac, st.most_common_freqs[1] as top_freq from pg_stats st
                     where st.schemaname = n.nspname and st.tablename = c.relname and st.attname = p_owner_column
                     order by st.inherited limit 1) s on true
  where t.oid = pg_typeof(p_rows) and t.typrelid <> 0;
  if tbl is null or p_id_column is null or p_owner_column is null then
    raise exception 'permgraph: list_rows needs a row of the table (null::schema.table), its id column and its owner column'
      using errcode = '22023';
  end if;
  if id_type is null or owner_type is null then
    raise exception 'permgraph: table % has no column "%"', tbl, case when id_type is null then p_id_column else p_owner_column end
      using errcode = '22023';
  end if;
  owner_key := format('(d.%I)::text collate "C"', p_owner_column);
  owner_match := case when owner_type in ('text'::regtype, 'varchar'::regtype)
                      then format('d.%I = o.target_id collate %s', p_owner_column, owner_collation)
                      else format('%s = o.target_id', owner_key) end;
  -- A nondeterministic collation (case-insensitive, say) calls an owner "TEAM"
  -- equal to "team": its index finds the candidates, and the ids, which are
  -- byte-wise, are compared again as such (the other plans compare only so).
  if not owner_deterministic then
    owner_match := format('%s and %s = o.target_id collate "C"', owner_match, owner_key);
  end if;
  -- (|| '': an expression without statistics, so that planning "= any" of
  -- a constant array does not estimate each element against the column's
  -- most common values: with 7,384 owners that cost more than the read)
  owner_any := format('((d.%I)::text || %L) collate "C"', p_owner_column, '');
  keyset_cond := format('and d.%I > $3::%s', p_id_column, id_type);
  -- (trashed_groups probed per row only when some group is trashed now: the
  -- earliest trash time is read once per query; bench/FINDINGS.md 43)
  owner_shown := format('not (coalesce((select min(a.trash_at) from permgraph.trashed_groups a) <= now(), false)
                              and exists (select 1 from permgraph.trashed_groups t where t.group_id = %s and t.trash_at <= now()))',
                        owner_key);
  if p_after is not null then
    after_cond := keyset_cond;
  end if;

  if is_superuser then
    return query execute format(
      'select d.* from %s d
       where true %s and %s
       order by d.%I limit $4', tbl, after_cond, owner_shown, p_id_column)
      using p_user_id, p_level, p_after, p_limit;
    return;
  end if;
  -- The rows of permgraph.effective_permissions, read from permissions by
  -- its covering indexes: valid_until not passed, and neither the user nor
  -- the target deleted since the last batch.
  if p_user_id = any (gone) then
    return;
  end if;

  -- The estimate (_listing_plan): the table's size and its rows per owner
  -- (read above; without statistics, the rows the user's first 8 owners
  -- own, at most 1,000 each), then the owners themselves, counted only as
  -- far as the scan could be cheaper than reading them.
  if per_owner is null then
    execute format(
      'select avg(k.n) from (select p.target_id from permgraph.permissions p
                             where p.user_id = $1 and p.level >= $2 and p.traverse_owned
                               and (p.valid_until is null or p.valid_until > now())
                             limit 8) o
       cross join lateral (select count(*) as n from (select 1 from %s d where %s limit 1000) c) k',
      tbl, owner_match)
      into per_owner using p_user_id, p_level;
  end if;
  choice := permgraph._listing_plan(null, false, null, false, per_owner, table_rows, p_limit, false);
  owner_read := permgraph._listing_owners(p_user_id, p_level, gone, choice.count_cap + 1);
  complete := owner_read.rows_read <= choice.count_cap;
  choice := permgraph._listing_plan(owner_read.rows_read, false, owner_read.rows_read, complete, per_owner, table_rows, p_limit, false);
  if choice.plan is distinct from 'scan' and not complete then
    owner_read := permgraph._listing_owners(p_user_id, p_level, gone, null);
    choice := permgraph._listing_plan(owner_read.rows_read, false, owner_read.rows_read, true, per_owner, table_rows, p_limit, false);
  end if;
  owners := owner_read.owners;
  if choice.plan is distinct from 'scan' and cardinality(owners) = 0 then
    return;  -- the rows are visible through their owner only (owners holds them all)
  end if;

  if choice.plan = 'scan' then
    -- the table in id order, one probe of the user's rows per row
    return query execute format(
      'select d.* from %1$s d
       where true %2$s
         and (select p.level from permgraph.permissions p
              where p.user_id = $1 and p.target_id = %3$s and p.traverse_owned
                and (p.valid_until is null or p.valid_until > now())) >= $2
         and not (%3$s = any ($5))
         and %5$s
       order by d.%4$I limit $4', tbl, after_cond, owner_key, p_id_column, owner_shown)
      using p_user_id, p_level, p_after, p_limit, gone;
  elsif choice.plan = 'ordered' then
    -- the table in id order from the cursor, each row's owner looked up in
    -- the owners (a hashed "= any" of the constant array), until the page
    -- is full. The ordered subquery (offset 0: kept apart, filter above it)
    -- leaves the planner the id index or a sort of the whole table, and
    -- under a limit the index wins.
    return query execute format(
      'select d.* from (select d.* from %1$s d where true %3$s order by d.%4$I offset 0) d
       where %2$s = any ($5::text[])
       limit $4', tbl, owner_any, after_cond, p_id_column)
      using p_user_id, p_level, p_after, p_limit, owners;
  elsif choice.plan = 'hash' then
    -- the table read once, each row's owner looked up in the owners (a
    -- hashed "= any" of the constant array: a hash probe per row, several
    -- times cheaper than a hash semi-join on unnest()), then sorted
    -- (offset 0: not steered into id order by the sort, which would make
    -- it a random read per row)
    return query execute format(
      'select h.* from (select d.* from %1$s d
                        where %2$s = any ($5::text[]) %3$s
                        offset 0) h
       order by h.%4$I limit $4', tbl, owner_any, after_cond, p_id_column)
      using p_user_id, p_level, p_after, p_limit, owners;
  else
    -- rows, all the owners' rows at once: one scan of the (owner, id) index
    -- with the owners as its array keys (owner_id = any), then the first
    -- p_limit by id. PostgreSQL 17 and later step from one owner's entries
    -- to the next within the index's pages: org large's heaviest users' 408
    -- owners cost ~15 index searches instead of 408 descents and rescans of
    -- a lateral subquery. It reads every row of every owner after the
    -- cursor, not p_limit per owner, so only where the statistics expect at
    -- most rows_cap of them, and it stops at rows_cap: past that it returns
    -- nothing and the owner-by-owner walk below finds the page. The stop
    -- costs as much as the read (the rows are kept, counted and read again:
    -- org small's heaviest user, 2,880 rows, 3.0 ms against 1.6), so it is
    -- left out where it cannot save more than that: where even as many
    -- owners as the most common one (the statistics' first) would own at
    -- most twice rows_cap rows, they are read whole and sorted for the
    -- first p_limit. Text owner columns only: the owners are text ids, which
    -- another type's column could not be compared with by its index.
    --
    -- A page is a few % of those rows for a user who sees much (org: ~2,900
    -- rows through ~290 owners for a page of 100), so where the id
    -- column's histogram can say where the page ends, the rows up to an
    -- id bound are read first: the bucket boundary past the cursor below
    -- which the statistics expect twice p_limit of them. The index scan
    -- then reads each owner's entries only up to the bound. When fewer
    -- than p_limit come back (the user's rows lie later in the table than
    -- the table's, or the statistics are old), the rest of the page is the
    -- first rows after the bound, read as below. Only where the statistics
    -- expect no owner to put more than 2 x rows_cap rows below the bound,
    -- since this read has no stop.
    if owner_type in ('text'::regtype, 'varchar'::regtype) then
      page_share := 2.0 * p_limit / greatest(cardinality(owners) * per_owner, 1);
      owners_max_rows := case when top_owner_rows is not null then cardinality(owners) * greatest(per_owner, top_owner_rows) end;
      if page_share < 0.5 and owners_max_rows is not null then
        -- (the histogram read here, not with the catalog above: a read of
        -- pg_stats costs ~0.1 ms, which users who see little need not pay)
        select st.histogram_bounds::text into id_bounds from pg_stats st
        where st.schemaname = tbl_schema and st.tablename = tbl_name and st.attname = p_id_column
        order by st.inherited limit 1;
        -- (its bucket boundary enough buckets past the one holding the
        -- cursor, and the share of the table up to it; none when that is
        -- the last boundary or past it)
        execute format(
          'select (x.h[p.at + k.n + 1])::text, k.n::double precision / (cardinality(x.h) - 1)
           from (select ($1::%1$s[]) %2$s as h) x
           cross join lateral (select count(*)::integer as at from unnest(x.h) b where b <= $2::%1$s) p
           cross join lateral (select ceil($3 * (cardinality(x.h) - 1))::integer as n) k
           where p.at + k.n + 1 < cardinality(x.h)', id_type, coalesce('collate ' || id_collation, ''))
          into bound, bound_share using id_bounds, p_after, page_share;
        if owners_max_rows * bound_share > 2 * rows_cap then
          bound := null;
        end if;
      end if;
      -- (the owners through an InitPlan: the index scan takes them as
      -- runtime keys, where a constant array was planned owner by owner
      -- against the column's statistics, ~1 ms for 170 owners)
      owners_rows := format('select d.* from %s d where d.%I = any ((select $5::text[])::text[] collate %s)',
                            tbl, p_owner_column, owner_collation)
                     || case when owner_deterministic then '' else format(' and %s = any ($5::text[])', owner_key) end;
      if bound is not null then
        return query execute format('%s %s and d.%I <= $6::%s order by d.%I limit $4',
                                    owners_rows, after_cond, p_id_column, id_type, p_id_column)
          using p_user_id, p_level, p_after, p_limit, owners, bound;
        get diagnostics got = row_count;
        if got >= p_limit then
          return;
        end if;
        page_after := bound;
        page_limit := p_limit - got;
        after_cond := keyset_cond;
      end if;
      if owners_max_rows <= 2 * rows_cap then
        return query execute format('%s %s order by d.%I limit $4', owners_rows, after_cond, p_id_column)
          using p_user_id, p_level, page_after, page_limit, owners;
        return;
      elsif cardinality(owners) * coalesce(per_owner, rows_cap) <= rows_cap then
        return query execute format(
          'with k as materialized (%s %s limit $6 + 1)
           select k.* from k where (select count(*) from k) <= $6
           order by k.%I limit $4', owners_rows, after_cond, p_id_column)
          using p_user_id, p_level, page_after, page_limit, owners, rows_cap;
        if found then
          return;
        end if;
      end if;
    end if;
    -- rows, owner by owner: the user's owners, each one's first rows by the (owner, id)
    -- index (whole rows: fetching the page by id afterwards cost as much for
    -- a page and twice as much for a whole listing)
    return query execute format(
      'select k.* from unnest($5::text[]) o(target_id)
       cross join lateral (
         select d.* from %2$s d where %3$s %4$s order by d.%1$I limit $4
       ) k
       order by k.%1$I limit $4', p_id_column, tbl, owner_match, after_cond)
      using p_user_id, p_level, page_after, page_limit, owners;
  end if;
end $$;

-- The user's rows with traverse_owned at p_level or more whose targets may
-- own visible rows (valid_until not passed, not deleted, not a trashed
-- group): the first p_limit rows of the index in id order (null: all),
-- rows_read of them, owners those that pass (in no promised order: the
-- plans walk or hash them, so no sort is paid for). The filters are applied after
-- the limit so that the read stops there (rows_read <= p_limit - 1 means
-- all were read), and trash is one hashed lookup per row.
create or replace function permgraph._listing_owners(
  p_user_id text, p_level integer, p_gone text[], p_limit bigint,
  out owners text[], out rows_read bigint
)
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  select coalesce(array_agg(o.target_id) filter (where not o.hidden), '{}'), count(*)
  into owners, rows_read
  from (select p.target_id,
               p.target_id = any (p_gone)
                 or p.target_id in (select t.group_id from permgraph.trashed_groups t where t.trash_at <= now()) as hidden
        from permgraph.permissions p
        where p.user_id = p_user_id and p.level >= p_level and p.traverse_owned
          and (p.valid_until is null or p.valid_until > now())
        order by p.target_id
        limit p_limit) o;
end $$;
