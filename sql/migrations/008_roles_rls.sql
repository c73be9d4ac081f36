-- permgraph 008: the application-facing API: superusers, a catalog of named
-- roles and operations, can() for application rows, and row-level security.
--
-- Re-defines permgraph.check(text, text, integer) from 005 (same signature,
-- same answers for non-superusers) so that check, can and the row-level
-- security policies all come from one access rule, _access_predicate below.

-- Superusers ------------------------------------------------------------------

alter table permgraph.nodes add column if not exists is_superuser boolean not null default false;

-- The trigger gives the clear error; the constraint is the backstop.
create or replace function permgraph._nodes_validate_superuser() returns trigger
language plpgsql as $$
begin
  if new.is_superuser and new.kind <> 'user' then
    raise exception 'permgraph: only users can be superusers; node "%" is a %', new.id, new.kind
      using errcode = '23514';
  end if;
  return new;
end $$;

-- Named to fire after nodes_validate (triggers fire in name order), so a bad
-- kind is reported as such first.
drop trigger if exists nodes_validate_superuser on permgraph.nodes;
create trigger nodes_validate_superuser before insert or update of is_superuser on permgraph.nodes
  for each row execute function permgraph._nodes_validate_superuser();

do $$
begin
  if not exists (select 1 from pg_constraint
                 where conname = 'nodes_superuser_is_user' and conrelid = 'permgraph.nodes'::regclass) then
    alter table permgraph.nodes add constraint nodes_superuser_is_user check (not is_superuser or kind = 'user');
  end if;
end $$;

create or replace function permgraph._is_superuser(p_user_id text) returns boolean
language sql stable as $$
  select coalesce((select n.is_superuser from permgraph.nodes n where n.id = p_user_id and n.kind = 'user'), false)
$$;

-- Roles and operations --------------------------------------------------------
-- Written by `permgraph roles sync FILE` (src/app/roles.ts), which validates
-- the names; the constraints here only guard the levels.

create table if not exists permgraph.roles (
  name  text collate "C" primary key,
  level smallint not null constraint roles_level_valid check (level between 1 and 3)
);

create table if not exists permgraph.operations (
  name  text collate "C" primary key,
  level smallint not null constraint operations_level_valid check (level between 1 and 3)
);

-- The level a catalog entry names: p_kind 'role' (permgraph.roles) or
-- 'operation' (permgraph.operations); an unknown name lists the known ones.
create or replace function permgraph._catalog_level(p_kind text, p_name text) returns smallint
language plpgsql stable as $$
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
language sql stable as $$ select permgraph._catalog_level('role', p_name) $$;

-- The minimum level an operation needs, e.g. 'document.delete' -> 3.
create or replace function permgraph.operation_level(p_name text) returns smallint
language sql stable as $$ select permgraph._catalog_level('operation', p_name) $$;

-- The access rule, once --------------------------------------------------------
-- SQL text of "may user U act at level L on the row with id I and owner O",
-- each argument a SQL expression (never a value: callers below pass parameter
-- names or %I-quoted columns). X: whether trash is ignored.
--   visible: X, or not hidden by trash. Hidden: I is a registered node that is
--            trashed (exactly permgraph.is_trashed: a group in trashed_groups,
--            an object by its own trash_at or its owner group's), or O is a
--            group whose effective trash time has passed (unless I is a
--            registered user: users are never hidden);
--   allowed: U is a superuser, or a row (U, I) with level >= L, or a row
--            (U, O) with level >= L and traverse_owned.
-- Written out rather than calling is_trashed(): each test is an EXISTS with
-- an equality on a primary key, so the planner either probes the index per
-- row (checks, short scans) or builds one hash of the user's rows and of the
-- trashed nodes (long listings). A function call can be neither probed nor
-- hashed without calling it on every node. The superuser test does not
-- mention the row: in a policy it runs once per query (an InitPlan).
-- The aliases are unusual so that they cannot capture the row's own columns.
create or replace function permgraph._access_predicate(
  p_user text, p_id text, p_owner text, p_level text, p_include_trash text
) returns text
language sql immutable as $body$
  select format($f$((%5$s or not (
      exists (select 1 from permgraph.trashed_groups permgraph_tg
              where permgraph_tg.group_id = %2$s and permgraph_tg.trash_at <= now())
      or exists (select 1 from permgraph.nodes permgraph_n
                 where permgraph_n.id = %2$s and permgraph_n.kind = 'object' and permgraph_n.trash_at <= now())
      or exists (select 1 from permgraph.nodes permgraph_n
                 join permgraph.trashed_groups permgraph_tg on permgraph_tg.group_id = permgraph_n.owner_id
                 where permgraph_n.id = %2$s and permgraph_n.kind = 'object' and permgraph_tg.trash_at <= now())
      or (exists (select 1 from permgraph.trashed_groups permgraph_tg
                  where permgraph_tg.group_id = %3$s and permgraph_tg.trash_at <= now())
          -- a scalar subquery, never hashed: only probed for rows whose owner is trashed
          and (select permgraph_n.kind from permgraph.nodes permgraph_n where permgraph_n.id = %2$s) is distinct from 'user')))
  and ((select permgraph._is_superuser(%1$s))
       or exists (select 1 from permgraph.permissions permgraph_p
                  where permgraph_p.user_id = %1$s and permgraph_p.target_id = %2$s and permgraph_p.level >= %4$s)
       or exists (select 1 from permgraph.permissions permgraph_p
                  where permgraph_p.user_id = %1$s and permgraph_p.target_id = %3$s and permgraph_p.level >= %4$s
                    and permgraph_p.traverse_owned)))$f$,
    p_user, p_id, p_owner, p_level, p_include_trash)
$body$;

-- Objects trashed by their own trash_at, found without scanning all nodes
-- (the hashed form of the test above).
create index if not exists nodes_trash_at_idx on permgraph.nodes (trash_at) where trash_at is not null;

-- _check: a registered node, its owner from nodes.owner_id.
-- _can: an application row that carries its own owner (it need not be a node).
do $$
begin
  execute format(
    'create or replace function permgraph._can(p_user_id text, p_id text, p_owner_id text, p_level integer, p_include_trash boolean)
       returns boolean language sql stable as %L',
    'select ' || permgraph._access_predicate('p_user_id', 'p_id', 'p_owner_id', 'p_level', 'p_include_trash'));
end $$;

-- _check: a registered node, its owner from nodes.owner_id. Written out
-- rather than generated from _access_predicate: a check is the hot path, and
-- testing the permission rows first (two primary-key probes) and trash only
-- for an allowed target makes it several times cheaper. The rule is the same
-- (is_trashed is the trash rule of semantics.md), and the tests compare both
-- check() and can() with the reference model.
create or replace function permgraph._check(p_user_id text, p_target_id text, p_level integer, p_include_trash boolean)
returns boolean
language plpgsql stable as $$
declare
  t record;
begin
  select n.kind, n.owner_id, n.trash_at into t from permgraph.nodes n where n.id = p_target_id;
  if not found then
    return false;
  end if;
  if not (exists (select 1 from permgraph.permissions p
                  where p.user_id = p_user_id and p.target_id = p_target_id and p.level >= p_level)
          or (t.owner_id is not null
              and exists (select 1 from permgraph.permissions p
                          where p.user_id = p_user_id and p.target_id = t.owner_id
                            and p.level >= p_level and p.traverse_owned))
          or exists (select 1 from permgraph.nodes u where u.id = p_user_id and u.is_superuser)) then
    return false;
  end if;
  return p_include_trash or not permgraph._hidden(t.kind, p_target_id, t.owner_id, t.trash_at);
end $$;

-- check ------------------------------------------------------------------------
-- The 4-argument form has no default for p_include_trash on purpose: a default
-- would make every 3-argument call ambiguous between the two overloads.
-- Operations get their own name (check_op, can_op) rather than a text
-- overload: an untyped argument (a quoted '2', or a bind parameter from most
-- drivers) would silently resolve to the text overload and fail as an
-- unknown operation.

create or replace function permgraph.check(p_user_id text, p_target_id text, p_level integer, p_include_trash boolean)
returns boolean
language plpgsql stable as $$
begin
  perform permgraph._require_level(p_level);
  return permgraph._check(p_user_id, p_target_id, p_level, coalesce(p_include_trash, false));
end $$;

-- Same signature and answers as in 005 for non-superusers.
create or replace function permgraph.check(p_user_id text, p_target_id text, p_level integer) returns boolean
language sql stable as $$ select permgraph.check(p_user_id, p_target_id, p_level, false) $$;

create or replace function permgraph.check_op(p_user_id text, p_target_id text, p_operation text, p_include_trash boolean)
returns boolean
language sql stable as $$ select permgraph._check(p_user_id, p_target_id, permgraph.operation_level(p_operation), coalesce(p_include_trash, false)) $$;

create or replace function permgraph.check_op(p_user_id text, p_target_id text, p_operation text) returns boolean
language sql stable as $$ select permgraph.check_op(p_user_id, p_target_id, p_operation, false) $$;

-- can: application rows with their own owner column --------------------------

create or replace function permgraph.can(p_user_id text, p_id text, p_owner_id text, p_level integer, p_include_trash boolean)
returns boolean
language plpgsql stable as $$
begin
  perform permgraph._require_level(p_level);
  return permgraph._can(p_user_id, p_id, p_owner_id, p_level, coalesce(p_include_trash, false));
end $$;

create or replace function permgraph.can(p_user_id text, p_id text, p_owner_id text, p_level integer) returns boolean
language sql stable as $$ select permgraph.can(p_user_id, p_id, p_owner_id, p_level, false) $$;

create or replace function permgraph.can_op(p_user_id text, p_id text, p_owner_id text, p_operation text, p_include_trash boolean)
returns boolean
language sql stable as $$ select permgraph._can(p_user_id, p_id, p_owner_id, permgraph.operation_level(p_operation), coalesce(p_include_trash, false)) $$;

create or replace function permgraph.can_op(p_user_id text, p_id text, p_owner_id text, p_operation text) returns boolean
language sql stable as $$ select permgraph.can_op(p_user_id, p_id, p_owner_id, p_operation, false) $$;

-- Row-level security ------------------------------------------------------------
-- The user is the session setting permgraph.user_id (set permgraph.user_id =
-- 'alice', or set_config('permgraph.user_id', 'alice', true) per transaction).
-- Unset or empty: no rows. The policies run as the querying role, which needs
-- usage on schema permgraph and select on permgraph.nodes, permissions and
-- trashed_groups. Like all RLS, they do not apply to the table's owner (unless
-- it is forced) nor to database superusers.

create or replace function permgraph._rls_policy_names() returns text[]
language sql immutable as $$
  select array['permgraph_select', 'permgraph_insert', 'permgraph_update', 'permgraph_delete']
$$;

-- A column of p_table as a policy expression: text in the C collation, like
-- every permgraph id, whatever the column's own type or collation.
create or replace function permgraph._rls_column(p_table regclass, p_column name) returns text
language plpgsql stable as $$
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

-- Installs (or re-installs) the policies: read to select, write to update
-- (old and new row), manage to delete, and write on the owner to insert.
-- Superusers pass, trash hides. p_owner_column may be null (direct rows only).
create or replace function permgraph.enable_rls(p_table regclass, p_id_column name, p_owner_column name)
returns void
language plpgsql
set client_min_messages = warning  -- quiet the NOTICEs of drop policy if exists
as $$
declare
  user_expr constant text := $e$nullif(current_setting('permgraph.user_id', true), '')$e$;
  id_expr text;
  owner_expr text;
  relation_kind "char";
  read_rule text;
  write_rule text;
  manage_rule text;
  insert_rule text;
  policy text;
begin
  if p_table is null or p_id_column is null then
    raise exception 'permgraph: enable_rls needs a table and an id column' using errcode = '22023';
  end if;
  select relkind into relation_kind from pg_class where oid = p_table;
  if relation_kind not in ('r', 'p') then
    raise exception 'permgraph: % is not a table; row-level security applies to tables only', p_table
      using errcode = '22023';
  end if;
  if (select relname from pg_class where oid = p_table) like 'permgraph\_%' then
    raise exception 'permgraph: table names starting with permgraph_ are reserved for the policies'' own aliases, got %', p_table
      using errcode = '22023';
  end if;
  id_expr := permgraph._rls_column(p_table, p_id_column);
  owner_expr := permgraph._rls_column(p_table, p_owner_column);
  read_rule := permgraph._access_predicate(user_expr, id_expr, owner_expr, '1', 'false');
  write_rule := permgraph._access_predicate(user_expr, id_expr, owner_expr, '2', 'false');
  manage_rule := permgraph._access_predicate(user_expr, id_expr, owner_expr, '3', 'false');
  -- a new row: write on its owner only (a direct grant on an id that does not exist yet means nothing)
  insert_rule := permgraph._access_predicate(user_expr, 'null::text', owner_expr, '2', 'false');
  foreach policy in array permgraph._rls_policy_names() loop
    execute format('drop policy if exists %I on %s', policy, p_table);
  end loop;
  execute format('create policy permgraph_select on %s for select using %s', p_table, read_rule);
  execute format('create policy permgraph_insert on %s for insert with check %s', p_table, insert_rule);
  execute format('create policy permgraph_update on %s for update using %s with check %s', p_table, write_rule, write_rule);
  execute format('create policy permgraph_delete on %s for delete using %s', p_table, manage_rule);
  execute format('alter table %s enable row level security', p_table);
end $$;

-- Removes permgraph's policies; turns row-level security off unless the table
-- still has policies of its own.
create or replace function permgraph.disable_rls(p_table regclass) returns void
language plpgsql
set client_min_messages = warning
as $$
declare
  policy text;
begin
  foreach policy in array permgraph._rls_policy_names() loop
    execute format('drop policy if exists %I on %s', policy, p_table);
  end loop;
  if not exists (select 1 from pg_policy where polrelid = p_table) then
    execute format('alter table %s disable row level security', p_table);
  end if;
end $$;
