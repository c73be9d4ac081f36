-- Trash: effective trash times of groups (permgraph.trashed_groups) and the
-- read-time rule that hides trashed groups and objects.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- Effective trash time of each group in p_ids (null: every group): the
-- earliest trash_at on its chain of group owners (a user owner ends it).
-- Two statements, one per case, each planned once per session (a generic
-- plan, whoever calls): a batch that trashes, moves or deletes one node asks
-- for a few groups, and planning one statement holding both cases cost more
-- than running it (as an SQL function it was planned at every call, ~0.4 ms
-- of a ~1.1 ms batch that deleted a project on org small; bench/FINDINGS.md,
-- finding 27). Apart, neither plan depends on what is asked: the few
-- groups' chains are key probes whatever the statistics, and the every-group
-- walk takes no parameter. (Together, a generic plan had to plan the
-- every-group branch for calls with a few ids too, sized for the whole
-- graph: a Gather that started its workers before the branch's one-time
-- filter could skip it, ~4-5 ms per call on org large; finding 17.)
create or replace function permgraph.effective_group_trash(p_ids text[])
returns table (group_id text, trash_at timestamptz)
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
set jit = off
set plan_cache_mode = force_generic_plan
as $$
#variable_conflict use_column
begin
  if p_ids is not null then
    -- Up each group's chain of owners, the owner looked up per chain row
    -- (offset 0: never flattened into a join, which once planned
    -- generically hashed every group of org large, ~95 ms for a batch that
    -- trashed one project; bench/FINDINGS.md, finding 13).
    return query
    with recursive chain(group_id, owner_id, trash_at) as (
      select n.id, n.owner_id, n.trash_at
      from permgraph.nodes n
      where n.id = any (p_ids) and n.kind = 'group'
      union all
      select c.group_id, o.owner_id, o.trash_at
      from chain c
      cross join lateral (select o.owner_id, o.trash_at from permgraph.nodes o
                          where o.id = c.owner_id and o.kind = 'group' offset 0) o
    )
    select c.group_id, min(c.trash_at) from chain c group by c.group_id having min(c.trash_at) is not null;
    return;
  end if;
  -- Every group (a full recomputation): down from the groups no group owns,
  -- each group once, instead of up from each group through all its owners
  -- (tree small: 10 instead of 116 ms, the 7,381 projects 4 deep;
  -- bench/FINDINGS.md, finding 10). least() skips nulls.
  return query
  with recursive down(group_id, trash_at) as (
    select n.id, n.trash_at
    from permgraph.nodes n
    where n.kind = 'group'
      and not exists (select 1 from permgraph.nodes o where o.id = n.owner_id and o.kind = 'group')
    union all
    select n.id, least(d.trash_at, n.trash_at)
    from down d
    join permgraph.nodes n on n.owner_id = d.group_id and n.kind = 'group'
  )
  select d.group_id, d.trash_at from down d where d.trash_at is not null;
end $$;

-- Brings trashed_groups up to date for the given groups and every group they
-- own, directly or through other groups (null: all groups), writing only
-- differences. No work table: it runs in batches that trash, move or
-- delete one node, where creating and dropping a temporary table cost more
-- than the rest of the batch (~1.5 ms on org small; bench/FINDINGS.md,
-- finding 16). The delete and the upsert touch disjoint groups (those that
-- lost their trash time, those that have one), so one snapshot serves both.
-- Planned once per session (a generic plan): for a subtree every read is by
-- key, whatever the statistics (as custom plans each statement was planned
-- at most calls, ~0.1 ms each, and the generic plan of a join to nodes read
-- every node at each step of the subtree; finding 27): the rows that may
-- go are deleted by key, for all groups (a full recomputation) too, whose
-- scope is then every stored row.
create or replace function permgraph._refresh_trash(p_roots text[]) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
set plan_cache_mode = force_generic_plan
as $$
declare
  scope text[];    -- the groups whose stored rows may go
  asked text[];    -- the groups to compute (null: all)
begin
  if p_roots is null then
    scope := array(select t.group_id from permgraph.trashed_groups t);
  else
    -- the roots and the groups below them, each one's children probed by
    -- key (offset 0: never a join the planner could hash)
    with recursive subtree(id) as (
      select unnest(p_roots) collate "C"  -- deleted roots too: they must lose their row
      union
      select n.id
      from subtree s
      cross join lateral (select n.id from permgraph.nodes n where n.owner_id = s.id and n.kind = 'group' offset 0) n
    )
    select array_agg(id) into scope from subtree;
    asked := scope;
  end if;
  with fresh as materialized (
    select group_id, trash_at from permgraph.effective_group_trash(asked)
  ), gone as (
    delete from permgraph.trashed_groups t
    where t.group_id = any (scope)
      and not exists (select 1 from fresh n where n.group_id = t.group_id)
  )
  insert into permgraph.trashed_groups (group_id, trash_at)
  select group_id, trash_at from fresh
  on conflict (group_id) do update set trash_at = excluded.trash_at
  where permgraph.trashed_groups.trash_at is distinct from excluded.trash_at;
end $$;

-- The trash rule of semantics.md ("Trash"), once: one row when trash does
-- not hide a node with these values right now, no row when it does (users
-- never; a group when its effective trash time has passed; an object when
-- its own trash_at or its owner group's effective trash time has). Every
-- listing reads it laterally, as a filter on the nodes it walks:
--   from permgraph.nodes n cross join lateral permgraph._not_trashed(n.kind, n.id, n.owner_id, n.trash_at)
-- A table function with an SQL-standard body and no SET clause: the planner
-- inlines it into the calling statement, where it is the same filter as the
-- rule written out (the EXISTS probes of trashed_groups per node), and its
-- names were resolved when it was created, so no search_path reaches it. A
-- scalar SQL function with a subquery, or one with a SET clause, or a
-- PL/pgSQL one, would be called once per node instead (test/app/listing-plans.test.ts
-- checks that every listing statement inlines it).
-- Each probe of trashed_groups is guarded by whether any group is trashed
-- now at all: the earliest trash time, an uncorrelated subquery that the
-- statement evaluates once (an InitPlan) by one descent of
-- trashed_groups_trash_at_idx (migration 044), so that while no group is
-- trashed (the usual state) a listing probes nothing per node.
-- list_targets' first pages, ~300 nodes on org small and cyclic small:
-- 10-16% faster (bench/FINDINGS.md 43).
-- Created through EXECUTE: the migration runner splits a file at every
-- semicolon outside quotes, and a BEGIN ATOMIC body holds its own.
do $do$
begin
  execute $fn$
create or replace function permgraph._not_trashed(p_kind text, p_id text, p_owner_id text, p_trash_at timestamptz)
returns table (shown boolean)
language sql stable
begin atomic
  select true
  where case p_kind
          when 'user' then true
          when 'group' then not (coalesce((select min(a.trash_at) from permgraph.trashed_groups a) <= now(), false)
                                 and exists (select 1 from permgraph.trashed_groups t
                                             where t.group_id = p_id and t.trash_at <= now()))
          else (p_trash_at is null or p_trash_at > now())
               and not (coalesce((select min(a.trash_at) from permgraph.trashed_groups a) <= now(), false)
                        and exists (select 1 from permgraph.trashed_groups t
                                    where t.group_id = p_owner_id and t.trash_at <= now()))
        end;
end
$fn$;
end $do$;

-- Whether a node with these values is hidden by trash right now, for callers
-- that already hold the node's row (check(), is_trashed()): the rule above.
-- PL/pgSQL, whose plans are cached for the session: as an SQL function with
-- a SET clause it was planned at every call (36 us of a 90 us check()). One
-- statement per kind, the kind a constant: each plan then holds only that
-- kind's probe of trashed_groups. With the kind a parameter, one plan held
-- the whole rule and started both probes on every call, and the plan cache
-- kept planning it afresh (custom plans): 15 against 8 us a call (org small).
create or replace function permgraph._hidden(p_kind text, p_id text, p_owner_id text, p_trash_at timestamptz) returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_kind = 'user' then
    return not exists (select from permgraph._not_trashed('user', p_id, p_owner_id, p_trash_at));
  elsif p_kind = 'group' then
    return not exists (select from permgraph._not_trashed('group', p_id, p_owner_id, p_trash_at));
  end if;
  return not exists (select from permgraph._not_trashed('object', p_id, p_owner_id, p_trash_at));
end $$;

-- Whether a node is hidden by trash right now (semantics.md, "Trash");
-- null for an unknown id. PL/pgSQL, its query planned once per session (an
-- SQL function with a SET clause is planned at every call on PostgreSQL
-- 14-17: bench/FINDINGS.md 36).
create or replace function permgraph.is_trashed(p_id text) returns boolean
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return (select permgraph._hidden(n.kind, n.id, n.owner_id, n.trash_at) from permgraph.nodes n where n.id = p_id);
end $$;
