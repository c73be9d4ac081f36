-- Access checks: check(), can() and their by-operation forms, superusers.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).
-- Every permission row is read through permgraph.effective_permissions
-- (005_views.sql), which also fails closed on expiring grants: a row whose
-- valid_until has passed counts as absent, on the second, worker or not.

create or replace function permgraph._is_superuser(p_user_id text) returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce((select n.is_superuser from permgraph.nodes n where n.id = p_user_id and n.kind = 'user'), false)
$$;

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
-- mention the row: in a policy it runs once per query (an InitPlan), and so
-- does the test that any group is trashed now (its earliest trash time,
-- one descent of trashed_groups_trash_at_idx), which guards the probes of
-- trashed_groups: while none is, a row pays none of them (RLS first pages of
-- org small 20-25% faster; bench/FINDINGS.md 43). It reads
-- nodes itself rather than calling _is_superuser(): a policy runs as the
-- querying role, which may read the tables (permgraph_reader) but execute no
-- internal function.
-- The aliases are unusual so that they cannot capture the row's own columns.
create or replace function permgraph._access_predicate(
  p_user text, p_id text, p_owner text, p_level text, p_include_trash text
) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $body$
  select format($f$((%5$s or not (
      exists (select 1 from permgraph.nodes permgraph_n
              where permgraph_n.id = %2$s and permgraph_n.kind = 'object' and permgraph_n.trash_at <= now())
      -- the probes of trashed groups only when some group is trashed now (evaluated once per query)
      or (coalesce((select min(permgraph_tg.trash_at) from permgraph.trashed_groups permgraph_tg) <= now(), false)
          -- (the row's own id hides it only while it is a group, as check() asks:
          -- a group deleted and made again as another kind keeps its row of
          -- trashed_groups until the worker's next batch)
          and (exists (select 1 from permgraph.trashed_groups permgraph_tg
                       join permgraph.nodes permgraph_g on permgraph_g.id = permgraph_tg.group_id and permgraph_g.kind = 'group'
                       where permgraph_tg.group_id = %2$s and permgraph_tg.trash_at <= now())
               or exists (select 1 from permgraph.nodes permgraph_n
                          join permgraph.trashed_groups permgraph_tg on permgraph_tg.group_id = permgraph_n.owner_id
                          where permgraph_n.id = %2$s and permgraph_n.kind = 'object' and permgraph_tg.trash_at <= now())
               or (exists (select 1 from permgraph.trashed_groups permgraph_tg
                           where permgraph_tg.group_id = %3$s and permgraph_tg.trash_at <= now())
                   -- a scalar subquery, never hashed: only probed for rows whose owner is trashed
                   and (select permgraph_n.kind from permgraph.nodes permgraph_n where permgraph_n.id = %2$s) is distinct from 'user')))))
  and ((select exists (select 1 from permgraph.nodes permgraph_su
                       where permgraph_su.id = %1$s and permgraph_su.kind = 'user' and permgraph_su.is_superuser))
       or exists (select 1 from permgraph.effective_permissions permgraph_p
                  where permgraph_p.user_id = %1$s and permgraph_p.target_id = %2$s and permgraph_p.level >= %4$s)
       or exists (select 1 from permgraph.effective_permissions permgraph_p
                  where permgraph_p.user_id = %1$s and permgraph_p.target_id = %3$s and permgraph_p.level >= %4$s
                    and permgraph_p.traverse_owned)))$f$,
    p_user, p_id, p_owner, p_level, p_include_trash)
$body$;

-- _check: a registered node, its owner from nodes.owner_id.
-- _can: an application row that carries its own owner (it need not be a node).
-- PL/pgSQL, so that the predicate's query is planned once per session: as
-- an SQL function with a SET clause its body was planned at every call on
-- PostgreSQL 14-17, 384 against 67 us for check() on org small with
-- PostgreSQL 15 (bench/FINDINGS.md 36).
do $$
begin
  execute format(
    'create or replace function permgraph._can(p_user_id text, p_id text, p_owner_id text, p_level integer, p_include_trash boolean)
       returns boolean language plpgsql stable set search_path = pg_catalog, pg_temp as %L',
    'begin return ' || permgraph._access_predicate('p_user_id', 'p_id', 'p_owner_id', 'p_level', 'p_include_trash') || '; end');
end $$;

-- _check: a registered node, its owner from nodes.owner_id. Written out
-- rather than generated from _access_predicate: a check is the hot path, and
-- testing the permission rows first (two primary-key probes) and trash only
-- for an allowed target makes it several times cheaper. The rule is the same
-- (is_trashed is the trash rule of semantics.md), and the tests compare both
-- check() and can() with the reference model.
create or replace function permgraph._check(p_user_id text, p_target_id text, p_level integer, p_include_trash boolean)
returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  t record;
begin
  select n.kind, n.owner_id, n.trash_at into t from permgraph.nodes n where n.id = p_target_id;
  if not found then
    return false;
  end if;
  if not (exists (select 1 from permgraph.effective_permissions p
                  where p.user_id = p_user_id and p.target_id = p_target_id and p.level >= p_level)
          or (t.owner_id is not null
              and exists (select 1 from permgraph.effective_permissions p
                          where p.user_id = p_user_id and p.target_id = t.owner_id
                            and p.level >= p_level and p.traverse_owned))
          or exists (select 1 from permgraph.nodes u where u.id = p_user_id and u.is_superuser)) then
    return false;
  end if;
  return p_include_trash or not permgraph._hidden(t.kind, p_target_id, t.owner_id, t.trash_at);
end $$;

-- check ------------------------------------------------------------------------
-- The wrappers below are PL/pgSQL: an SQL function with a SET clause is
-- planned at every call (16 us of a check() on org small), a PL/pgSQL
-- return of a call is evaluated directly.
-- The 4-argument form has no default for p_include_trash on purpose: a default
-- would make every 3-argument call ambiguous between the two overloads.
-- Operations get their own name (check_op, can_op) rather than a text
-- overload: an untyped argument (a quoted '2', or a bind parameter from most
-- drivers) would silently resolve to the text overload and fail as an
-- unknown operation.

create or replace function permgraph.check(p_user_id text, p_target_id text, p_level integer, p_include_trash boolean)
returns boolean
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform permgraph._require_level(p_level);
  return permgraph._check(p_user_id, p_target_id, p_level, coalesce(p_include_trash, false));
end $$;

-- Same signature and answers as in 005 for non-superusers.
create or replace function permgraph.check(p_user_id text, p_target_id text, p_level integer) returns boolean
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
as $$ begin return permgraph.check(p_user_id, p_target_id, p_level, false); end $$;

create or replace function permgraph.check_op(p_user_id text, p_target_id text, p_operation text, p_include_trash boolean)
returns boolean
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
as $$ begin return permgraph._check(p_user_id, p_target_id, permgraph.operation_level(p_operation), coalesce(p_include_trash, false)); end $$;

create or replace function permgraph.check_op(p_user_id text, p_target_id text, p_operation text) returns boolean
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
as $$ begin return permgraph.check_op(p_user_id, p_target_id, p_operation, false); end $$;

-- can: application rows with their own owner column --------------------------

create or replace function permgraph.can(p_user_id text, p_id text, p_owner_id text, p_level integer, p_include_trash boolean)
returns boolean
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform permgraph._require_level(p_level);
  return permgraph._can(p_user_id, p_id, p_owner_id, p_level, coalesce(p_include_trash, false));
end $$;

create or replace function permgraph.can(p_user_id text, p_id text, p_owner_id text, p_level integer) returns boolean
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
as $$ begin return permgraph.can(p_user_id, p_id, p_owner_id, p_level, false); end $$;

create or replace function permgraph.can_op(p_user_id text, p_id text, p_owner_id text, p_operation text, p_include_trash boolean)
returns boolean
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
as $$ begin return permgraph._can(p_user_id, p_id, p_owner_id, permgraph.operation_level(p_operation), coalesce(p_include_trash, false)); end $$;

create or replace function permgraph.can_op(p_user_id text, p_id text, p_owner_id text, p_operation text) returns boolean
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
as $$ begin return permgraph.can_op(p_user_id, p_id, p_owner_id, p_operation, false); end $$;
