-- Row-level security policies on the application's own tables.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).
-- The policies are the access rule of 100_access.sql (_access_predicate)
-- written into each policy; they read permgraph.effective_permissions, so
-- policies installed before expiring grants existed also hide the rows
-- whose valid_until has passed, without running enable_rls again.

-- The user is the session setting permgraph.user_id (set permgraph.user_id =
-- 'alice', or set_config('permgraph.user_id', 'alice', true) per transaction).
-- Unset or empty: no rows. The policies run as the querying role, which
-- needs permgraph_reader (usage on schema permgraph, select on its tables and
-- views). Like all RLS, they do not apply to the table's owner (unless it is
-- forced) nor to database superusers.

create or replace function permgraph._rls_policy_names() returns text[]
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
  select array['permgraph_select', 'permgraph_insert', 'permgraph_update', 'permgraph_delete']
$$;

-- A column of p_table as a policy expression: text in the C collation, like
-- every permgraph id, whatever the column's own type or collation.
create or replace function permgraph._rls_column(p_table regclass, p_column name) returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_column is null then
    return 'null::text';
  end if;
  if not exists (select 1 from pg_attribute
                 where attrelid = p_table and attname = p_column and attnum > 0 and not attisdropped) then
    raise exception 'permgraph: table % has no column "%"', p_table, p_column using errcode = '22023';
  end if;
  return format('(%I.%I)::text collate "C"', (select relname from pg_class where oid = p_table), p_column);
end $$;

-- A table and every table below it: its partitions (and theirs), or the
-- tables that inherit from it. PostgreSQL applies a table's policies to the
-- queries that name it, not to those that name a partition or a child, which
-- read its rows past them: so the policies go on every one of these.
create or replace function permgraph._rls_tree(p_table regclass) returns setof regclass
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    with recursive tree (relid, depth) as (
      select p_table::oid, 0
      union all
      select i.inhrelid, t.depth + 1 from pg_inherits i join tree t on i.inhparent = t.relid
    )
    select t.relid::regclass from tree t group by t.relid order by min(t.depth), t.relid::regclass::text;
end $$;

-- The tables below one that carries permgraph's policies (a partition, or a
-- child that inherits from it) and do not: a query that names one of them
-- reads its rows past the policies. A partition attached or a child created
-- after enable_rls ran is one, until enable_rls runs again (permgraph doctor).
create or replace function permgraph._rls_unprotected()
returns table (unprotected regclass, under regclass)
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select d.relid, min(p.polrelid::regclass::text)::regclass
    from pg_policy p
    cross join lateral permgraph._rls_tree(p.polrelid) d(relid)
    join pg_class c on c.oid = d.relid
    where p.polname = 'permgraph_select' and d.relid <> p.polrelid
      and not (c.relrowsecurity
               and exists (select 1 from pg_policy q where q.polrelid = d.relid and q.polname = 'permgraph_select'))
    group by d.relid
    order by d.relid::text;
end $$;

-- Refuses tables the policies cannot apply to: anything but a plain or
-- partitioned table, permgraph's own tables (the policies read them, so every
-- read would recurse), and names the policies' aliases could capture.
-- p_under: the table enable_rls was called on, when p_table is below it.
drop function if exists permgraph._rls_require_app_table(regclass);
create or replace function permgraph._rls_require_app_table(p_table regclass, p_under regclass default null) returns void
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  relation record;
begin
  select c.relkind, c.relname, n.nspname into relation
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where c.oid = p_table;
  if relation.nspname = 'permgraph' then
    raise exception 'permgraph: % is one of permgraph''s own tables: the policies read them, so row-level security on them would make every read recurse; enable_rls is for application tables', p_table
      using errcode = '22023';
  end if;
  if relation.relkind not in ('r', 'p') and p_under is not null then
    raise exception 'permgraph: %, a partition or child of %, is not a table (a foreign table?): row-level security cannot protect it, so a query naming it would read its rows past the policies', p_table, p_under
      using errcode = '22023';
  end if;
  if relation.relkind not in ('r', 'p') then
    raise exception 'permgraph: % is not a table; row-level security applies to tables only', p_table
      using errcode = '22023';
  end if;
  if relation.relname like 'permgraph\_%' then
    raise exception 'permgraph: table names starting with permgraph_ are reserved for the policies'' own aliases, got %', p_table
      using errcode = '22023';
  end if;
end $$;

-- Installs (or re-installs) the policies: read to select, write to update
-- (old and new row), manage to delete, and write on the owner to insert.
-- Superusers pass, trash hides. On a partitioned table, or one that others
-- inherit from, on every table below it too (_rls_tree): a query naming a
-- partition would otherwise read its rows past the policies.
--
-- A row is matched through its owner column only: a row (user, owner) with
-- traverse_owned, and the owner group's trash. Its own id is NOT looked up
-- among the nodes unless p_match_row_id: an application's ids live in their
-- own namespace, and a document that happens to be called like a group
-- ('eng') must not become visible to everyone who may read that group. With
-- p_match_row_id, the row's id counts as a node id too: direct grants on it,
-- and its own trash (for apps that register their rows as object nodes under
-- the same ids). p_owner_column may be null only with p_match_row_id (direct
-- rows only). The id column is checked either way.
create or replace function permgraph.enable_rls(
  p_table regclass, p_id_column name, p_owner_column name, p_match_row_id boolean default false
)
returns void
language plpgsql
set client_min_messages = warning  -- quiet the NOTICEs of drop policy if exists
set search_path = pg_catalog, pg_temp
as $$
declare
  tables regclass[];
  t regclass;
begin
  if p_table is null or p_id_column is null then
    raise exception 'permgraph: enable_rls needs a table and an id column' using errcode = '22023';
  end if;
  if p_match_row_id is null then
    raise exception 'permgraph: enable_rls: p_match_row_id must be true or false, not null' using errcode = '22023';
  end if;
  perform permgraph._rls_require_app_table(p_table);
  if p_owner_column is null and not p_match_row_id then
    raise exception 'permgraph: enable_rls on % without an owner column would let only superusers through: name the owner column, or match rows by their own id (p_match_row_id => true)', p_table
      using errcode = '22023';
  end if;
  -- every table checked before any is changed (the whole call is one
  -- statement, so an error installs nothing anyway; this names the problem
  -- before the first ALTER TABLE waits for a lock)
  tables := array(select permgraph._rls_tree(p_table));
  foreach t in array tables loop
    if t <> p_table then
      perform permgraph._rls_require_app_table(t, p_table);
    end if;
    perform permgraph._rls_column(t, p_id_column), permgraph._rls_column(t, p_owner_column);
  end loop;
  foreach t in array tables loop
    perform permgraph._rls_install(t, p_id_column, p_owner_column, p_match_row_id);
  end loop;
end $$;

-- The policies of enable_rls on one table (checked by the caller).
create or replace function permgraph._rls_install(
  p_table regclass, p_id_column name, p_owner_column name, p_match_row_id boolean
)
returns void
language plpgsql
set client_min_messages = warning
set search_path = pg_catalog, pg_temp
as $$
declare
  user_expr constant text := $e$nullif(current_setting('permgraph.user_id', true), '')$e$;
  id_expr text := permgraph._rls_column(p_table, p_id_column);
  owner_expr text := permgraph._rls_column(p_table, p_owner_column);
  row_expr text;
  read_rule text;
  write_rule text;
  manage_rule text;
  insert_rule text;
  policy text;
begin
  -- Without the option the row's id is never compared with node ids: the
  -- rule sees a row that is no node (null id), owned by its owner column.
  row_expr := case when p_match_row_id then id_expr else 'null::text' end;
  read_rule := permgraph._access_predicate(user_expr, row_expr, owner_expr, '1', 'false');
  write_rule := permgraph._access_predicate(user_expr, row_expr, owner_expr, '2', 'false');
  manage_rule := permgraph._access_predicate(user_expr, row_expr, owner_expr, '3', 'false');
  -- a new row: write on its owner only (a direct grant on an id that does not exist yet means nothing)
  insert_rule := permgraph._access_predicate(user_expr, 'null::text', owner_expr, '2', 'false');
  foreach policy in array permgraph._rls_policy_names() loop
    execute format('drop policy if exists %I on %s', policy, p_table);
  end loop;
  execute format('create policy permgraph_select on %s for select using %s', p_table, read_rule);
  execute format('create policy permgraph_insert on %s for insert with check %s', p_table, insert_rule);
  execute format('create policy permgraph_update on %s for update using %s with check %s', p_table, write_rule, write_rule);
  execute format('create policy permgraph_delete on %s for delete using %s', p_table, manage_rule);
  -- What was installed, for people and tools reading pg_policy (\d+ in psql).
  execute format('comment on policy permgraph_select on %s is %L', p_table,
                 format('permgraph.enable_rls: id column %s, owner column %s, match row id %s',
                        p_id_column, coalesce(p_owner_column::text, '(none)'), case when p_match_row_id then 'on' else 'off' end));
  execute format('alter table %s enable row level security', p_table);
end $$;

-- Removes permgraph's policies (from the tables below it too, as
-- enable_rls installs them); turns row-level security off on each table
-- that has no policies of its own left.
create or replace function permgraph.disable_rls(p_table regclass) returns void
language plpgsql
set client_min_messages = warning
set search_path = pg_catalog, pg_temp
as $$
declare
  t regclass;
  policy text;
begin
  if (select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = p_table) = 'permgraph' then
    raise exception 'permgraph: % is one of permgraph''s own tables; disable_rls is for application tables', p_table
      using errcode = '22023';
  end if;
  for t in select permgraph._rls_tree(p_table) loop
    if (select relkind from pg_class where oid = t) not in ('r', 'p') then
      continue;
    end if;
    foreach policy in array permgraph._rls_policy_names() loop
      execute format('drop policy if exists %I on %s', policy, t);
    end loop;
    if not exists (select 1 from pg_policy where polrelid = t) then
      execute format('alter table %s disable row level security', t);
    end if;
  end loop;
end $$;
