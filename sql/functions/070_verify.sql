-- Verification against a full recomputation (writes nothing but temporary
-- tables).
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

create or replace function permgraph.verify()
returns table (relation text, key text, stored text, expected text)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
begin
  perform permgraph._compute_all();
  return query
    select 'permissions', coalesce(p.user_id, n.user_id) || ' -> ' || coalesce(p.target_id, n.target_id),
           case when p.user_id is null then 'missing' else format('level %s, traverse_owned %s', p.level, p.traverse_owned::text) end,
           case when n.user_id is null then 'absent' else format('level %s, traverse_owned %s', n.level, n.traverse_owned::text) end
    from permgraph.permissions p
    full join pg_temp.permgraph_all n on n.user_id = p.user_id and n.target_id = p.target_id
    where (p.level, p.traverse_owned) is distinct from (n.level, n.traverse_owned)
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
