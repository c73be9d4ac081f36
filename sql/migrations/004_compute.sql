-- permgraph 004: computing the permission table.
-- Walks follow permgraph.edges (sql/001, kept by sql/003). The full refresh
-- walks from every user; the incremental path (sql/005) walks only the
-- affected region, seeded from the stored rows at the region's border.

create or replace function permgraph._applier_lock_key() returns bigint
language sql immutable as $$ select 7238001002::bigint $$;

-- traverse_owned of one path ending at a node of this kind (semantics.md).
create or replace function permgraph._path_traverses(p_head_kind text, p_last_edge_manage boolean) returns boolean
language sql immutable as $$
  select case p_head_kind when 'group' then true when 'object' then false else p_last_edge_manage end
$$;

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
      returning 1
    )
    select (select count(*) from inserted), (select count(*) from updated), (select count(*) from deleted)
    $diff$,
    case when p_scoped
      then '(select p.* from permgraph.permissions p join pg_temp.permgraph_region r on r.user_id = p.user_id and r.target_id = p.target_id)'
      else 'permgraph.permissions' end)
  into inserted, updated, deleted;
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
language plpgsql
-- quiet the NOTICEs of drop table if exists
set client_min_messages = warning as $$
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
