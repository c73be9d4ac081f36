-- Verification against a full recomputation (writes nothing but temporary
-- tables).
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- One stored or expected row, for verify()'s report.
create or replace function permgraph._describe_row(p_level smallint, p_traverse_owned boolean, p_valid_until timestamptz)
returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
  select format('level %s, traverse_owned %s', p_level, p_traverse_owned::text)
         || case when p_valid_until is null then '' else format(', valid_until %s', p_valid_until) end
$$;

-- p_at: the time to recompute at (default: now). Rows whose valid_until has
-- passed and that no batch has recomputed yet differ from it, as they should:
-- reads treat them as absent until then.
create or replace function permgraph.verify(p_at timestamptz default null)
returns table (relation text, key text, stored text, expected text)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
begin
  perform permgraph._compute_all(coalesce(p_at, clock_timestamp()));
  return query
    select 'permissions', coalesce(p.user_id, n.user_id) || ' -> ' || coalesce(p.target_id, n.target_id),
           case when p.user_id is null then 'missing' else permgraph._describe_row(p.level, p.traverse_owned, p.valid_until) end,
           case when n.user_id is null then 'absent' else permgraph._describe_row(n.level, n.traverse_owned, n.valid_until) end
    from permgraph.permissions p
    full join pg_temp.permgraph_all n on n.user_id = p.user_id and n.target_id = p.target_id
    where (p.level, p.traverse_owned, p.valid_until) is distinct from (n.level, n.traverse_owned, n.valid_until)
    order by 2;
  return query
    with expected as (
      select n.user_id, n.target_id, b.level, b.valid_until
      from pg_temp.permgraph_all n
      cross join lateral (values (1::smallint, n.bound1), (2::smallint, n.bound2)) b(level, valid_until)
      where b.valid_until is not null
    )
    select 'permission_bounds', coalesce(s.user_id, e.user_id) || ' -> ' || coalesce(s.target_id, e.target_id)
                                || ' level ' || coalesce(s.level, e.level),
           coalesce(s.valid_until::text, 'missing'), coalesce(e.valid_until::text, 'absent')
    from permgraph.permission_bounds s
    full join expected e on e.user_id = s.user_id and e.target_id = s.target_id and e.level = s.level
    where s.valid_until is distinct from e.valid_until
    order by 2;
  return query
    with expected as (select * from permgraph.effective_group_trash(null))
    select 'trashed_groups', coalesce(t.group_id, e.group_id),
           coalesce(t.trash_at::text, 'missing'), coalesce(e.trash_at::text, 'absent')
    from permgraph.trashed_groups t
    full join expected e on e.group_id = t.group_id
    where t.trash_at is distinct from e.trash_at
    order by 2;
end $$;
