-- permgraph 004: computing the permission table.
-- One walk definition serves the full refresh and the incremental path; the
-- incremental path restricts it to the affected region and seeds it from the
-- stored rows at the region's border.

-- Every edge a path can follow. tail_kind tells whether a path may pass
-- through the tail (only groups, or the path's starting user); head_kind
-- whether it may continue past the head. The left join is removed by the
-- planner when tail_kind is not used.
create or replace view permgraph.edges as
  select n.owner_id as tail_id, o.kind as tail_kind, n.id as head_id, n.kind as head_kind, 3::smallint as level
  from permgraph.nodes n
  left join permgraph.nodes o on o.id = n.owner_id
  where n.owner_id is not null and n.kind <> 'object' and n.owner_id <> n.id
  union all
  select g.tail_id, g.tail_kind, g.head_id, g.head_kind, g.level
  from permgraph.grants g;

create or replace function permgraph._applier_lock_key() returns bigint
language sql immutable as $$ select 7238001002::bigint $$;

-- traverse_owned of one path ending at a node of this kind (semantics.md).
create or replace function permgraph._path_traverses(p_head_kind text, p_last_edge_manage boolean) returns boolean
language sql immutable as $$
  select case p_head_kind when 'group' then true when 'object' then false else p_last_edge_manage end
$$;

-- Full computation into pg_temp.permgraph_new, in one statement (one snapshot).
create or replace function permgraph._compute_all() returns void
language plpgsql as $$
begin
  drop table if exists pg_temp.permgraph_new;
  create temp table permgraph_new on commit drop as
  with recursive walk(user_id, node_id, node_kind, level, last_edge_manage) as (
    select u.id, e.head_id, e.head_kind, e.level, e.level = 3
    from permgraph.nodes u
    join permgraph.edges e on e.tail_id = u.id
    where u.kind = 'user'
    union
    select w.user_id, e.head_id, e.head_kind, least(w.level, e.level), e.level = 3 and e.head_kind = 'user'
    from walk w
    join permgraph.edges e on e.tail_id = w.node_id
    where w.node_kind = 'group'
  ), paths as (
    select user_id, node_id, node_kind, level, last_edge_manage from walk
    union all
    select id, id, 'user', 3::smallint, true from permgraph.nodes where kind = 'user'
  )
  select user_id, node_id as target_id, max(level)::smallint as level,
         bool_or(permgraph._path_traverses(node_kind, last_edge_manage)) as traverse_owned
  from paths
  group by user_id, node_id;
  create unique index on pg_temp.permgraph_new (user_id, target_id);
  analyze pg_temp.permgraph_new;
end $$;

-- Writes pg_temp.permgraph_new into permissions, touching only rows whose
-- value differs. With p_scoped, only pairs listed in pg_temp.permgraph_region
-- are considered for deletion (the incremental path); otherwise all rows.
create or replace function permgraph._write_diff(p_scoped boolean,
  out inserted bigint, out updated bigint, out deleted bigint)
language plpgsql as $$
begin
  if p_scoped then
    delete from permgraph.permissions p
    using pg_temp.permgraph_region r
    where p.user_id = r.user_id and p.target_id = r.target_id
      and not exists (select 1 from pg_temp.permgraph_new n
                      where n.user_id = p.user_id and n.target_id = p.target_id);
  else
    delete from permgraph.permissions p
    where not exists (select 1 from pg_temp.permgraph_new n
                      where n.user_id = p.user_id and n.target_id = p.target_id);
  end if;
  get diagnostics deleted = row_count;
  update permgraph.permissions p
  set level = n.level, traverse_owned = n.traverse_owned
  from pg_temp.permgraph_new n
  where p.user_id = n.user_id and p.target_id = n.target_id
    and (p.level, p.traverse_owned) is distinct from (n.level, n.traverse_owned);
  get diagnostics updated = row_count;
  insert into permgraph.permissions (user_id, target_id, level, traverse_owned)
  select n.user_id, n.target_id, n.level, n.traverse_owned
  from pg_temp.permgraph_new n
  where not exists (select 1 from permgraph.permissions p
                    where p.user_id = n.user_id and p.target_id = n.target_id);
  get diagnostics inserted = row_count;
end $$;

-- Effective trash time of each group in p_ids (null: every group): the
-- earliest trash_at on its chain of group owners (a user owner ends it).
create or replace function permgraph.effective_group_trash(p_ids text[])
returns table (group_id text, trash_at timestamptz)
language sql stable as $$
  with recursive chain(group_id, owner_id, trash_at) as (
    select n.id, n.owner_id, n.trash_at
    from permgraph.nodes n
    where n.kind = 'group' and (p_ids is null or n.id = any (p_ids))
    union all
    select c.group_id, o.owner_id, o.trash_at
    from chain c join permgraph.nodes o on o.id = c.owner_id
    where o.kind = 'group'
  )
  select group_id, min(trash_at) from chain group by group_id having min(trash_at) is not null
$$;

-- Brings trashed_groups up to date for the given groups and every group they
-- own, directly or through other groups (null: all groups), writing only
-- differences.
create or replace function permgraph._refresh_trash(p_roots text[]) returns void
language plpgsql as $$
declare
  scope text[];
begin
  if p_roots is not null then
    with recursive subtree(id) as (
      select unnest(p_roots) collate "C"  -- deleted roots too: they must lose their row
      union
      select n.id from subtree s join permgraph.nodes n on n.owner_id = s.id where n.kind = 'group'
    )
    select array_agg(id) into scope from subtree;
  end if;
  drop table if exists pg_temp.permgraph_trash_new;
  create temp table permgraph_trash_new on commit drop as
    select * from permgraph.effective_group_trash(scope);
  delete from permgraph.trashed_groups t
  where (scope is null or t.group_id = any (scope))
    and not exists (select 1 from pg_temp.permgraph_trash_new n where n.group_id = t.group_id);
  insert into permgraph.trashed_groups (group_id, trash_at)
  select group_id, trash_at from pg_temp.permgraph_trash_new
  on conflict (group_id) do update set trash_at = excluded.trash_at
  where permgraph.trashed_groups.trash_at is distinct from excluded.trash_at;
end $$;
