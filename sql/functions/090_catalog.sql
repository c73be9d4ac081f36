-- Levels by number or by name: the roles and operations catalog.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

create or replace function permgraph._require_level(p_level integer) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_level is null or p_level not between 1 and 3 then
    raise exception 'permgraph: level must be 1 (read), 2 (write) or 3 (manage), got %', coalesce(p_level::text, 'null')
      using errcode = '22023';
  end if;
end $$;

-- The level a catalog entry names: p_kind 'role' (permgraph.roles) or
-- 'operation' (permgraph.operations); an unknown name lists the known ones.
create or replace function permgraph._catalog_level(p_kind text, p_name text) returns smallint
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  found_level smallint;
begin
  with catalog as (
    select 'role' as kind, name, level from permgraph.roles
    union all
    select 'operation', name, level from permgraph.operations
  )
  select c.level into found_level from catalog c where c.kind = p_kind and c.name = p_name;
  if found_level is null then
    raise exception 'permgraph: unknown % %; known %: %', p_kind, coalesce('"' || p_name || '"', 'null'), p_kind || 's',
      coalesce((select string_agg(name, ', ' order by name)
                from (select 'role' as kind, name from permgraph.roles
                      union all select 'operation', name from permgraph.operations) c
                where c.kind = p_kind),
               'none (run `permgraph roles sync FILE`)')
      using errcode = '22023';
  end if;
  return found_level;
end $$;

-- The level a named role grants, e.g. insert into permgraph.grants (tail_id,
-- head_id, level) values ('alice', 'eng', permgraph.role_level('editor')).
create or replace function permgraph.role_level(p_name text) returns smallint
language sql stable
security definer
set search_path = pg_catalog, pg_temp
as $$ select permgraph._catalog_level('role', p_name) $$;

-- The minimum level an operation needs, e.g. 'document.delete' -> 3.
create or replace function permgraph.operation_level(p_name text) returns smallint
language sql stable
security definer
set search_path = pg_catalog, pg_temp
as $$ select permgraph._catalog_level('operation', p_name) $$;

-- Catalog changes are audited like grants (action 'catalog'): the kind
-- ('role' or 'operation') and name in details, the levels in old_level and
-- new_level (null when added or removed), the actor as for every audit row
-- (permgraph.actor, else the login). Per statement, with transition tables;
-- a row whose level did not change is not a change.
create or replace function permgraph._audit_catalog() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  entry_kind constant text := case tg_table_name when 'roles' then 'role' else 'operation' end;
begin
  if not permgraph._audit_enabled() then
    return null;
  end if;
  if tg_op = 'INSERT' then
    insert into permgraph.audit_log (action, new_level, details)
    select 'catalog', n.level, jsonb_build_object('kind', entry_kind, 'name', n.name) from new_rows n order by n.name;
  elsif tg_op = 'DELETE' then
    insert into permgraph.audit_log (action, old_level, details)
    select 'catalog', o.level, jsonb_build_object('kind', entry_kind, 'name', o.name) from old_rows o order by o.name;
  else
    insert into permgraph.audit_log (action, old_level, new_level, details)
    select 'catalog', o.level, n.level, jsonb_build_object('kind', entry_kind, 'name', coalesce(n.name, o.name))
    from old_rows o full join new_rows n on n.name = o.name
    where n.level is distinct from o.level
    order by coalesce(n.name, o.name), (o.name is null);
  end if;
  return null;
end $$;

-- Three triggers a table (a statement's transition tables are per event).
do $$
declare
  catalog_table text;
begin
  foreach catalog_table in array array['roles', 'operations'] loop
    execute format('drop trigger if exists %I on permgraph.%I', catalog_table || '_audit_inserted', catalog_table);
    execute format('create trigger %I after insert on permgraph.%I referencing new table as new_rows
                    for each statement execute function permgraph._audit_catalog()', catalog_table || '_audit_inserted', catalog_table);
    execute format('drop trigger if exists %I on permgraph.%I', catalog_table || '_audit_updated', catalog_table);
    execute format('create trigger %I after update on permgraph.%I referencing old table as old_rows new table as new_rows
                    for each statement execute function permgraph._audit_catalog()', catalog_table || '_audit_updated', catalog_table);
    execute format('drop trigger if exists %I on permgraph.%I', catalog_table || '_audit_deleted', catalog_table);
    execute format('create trigger %I after delete on permgraph.%I referencing old table as old_rows
                    for each statement execute function permgraph._audit_catalog()', catalog_table || '_audit_deleted', catalog_table);
  end loop;
end $$;
