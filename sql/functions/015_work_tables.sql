-- The engine's temporary work tables: refusing one the caller made, and
-- setting indexes and constraints aside for a bulk write.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- The engine runs as the schema's owner (SECURITY DEFINER) in the caller's
-- session, so a temporary table it reuses by name could have been made
-- first by the caller, with a trigger that would then fire as the owner.
-- A table the owner did not create is refused; one it did, the caller
-- cannot alter (adding a trigger, a rule or an index takes ownership).
create or replace function permgraph._refuse_foreign_temp_table(p_name text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  table_owner name;
begin
  select pg_get_userbyid(c.relowner) into table_owner
  from pg_class c where c.oid = to_regclass('pg_temp.' || quote_ident(p_name));
  if table_owner is not null and table_owner <> current_user then
    raise exception 'permgraph: pg_temp.% belongs to role %, not to %: the engine''s work tables are its own', p_name, table_owner, current_user
      using errcode = '42501',
            hint = format('drop table pg_temp.%I in this session, then apply again', p_name);
  end if;
end $$;

-- Setting aside: building an index over all the rows once costs a fraction
-- of inserting the same rows into it one by one, and a foreign key
-- validated once is one set-based query instead of a lookup per row. The
-- full refresh's first fill (040_compute.sql) and the exclusive import
-- (150_import.sql) do this; these two functions are the one way to. The
-- caller drops, and says how to build again: statements made from the
-- catalog's own definitions (pg_get_indexdef, pg_get_constraintdef), never
-- from anyone's input. They wait in a work table of the owner's, dropped at
-- commit. It is all DDL in the caller's transaction: a rollback restores
-- everything.
--
-- Runs p_drop, in order, and keeps p_rebuild for _rebuild_set_aside(p_purpose).
-- Returns how many statements it dropped with.
create or replace function permgraph._set_aside(p_purpose text, p_drop text[], p_rebuild text[]) returns integer
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  statement text;
begin
  perform permgraph._refuse_foreign_temp_table('permgraph_set_aside');
  if to_regclass('pg_temp.permgraph_set_aside') is null then
    create temp table permgraph_set_aside (
      purpose   text not null,
      call      integer not null,  -- the later call is built again first
      position  bigint not null,   -- within a call, in the caller's order
      statement text not null
    ) on commit drop;
  end if;
  insert into pg_temp.permgraph_set_aside (purpose, call, position, statement)
  select p_purpose, (select coalesce(max(s.call), 0) + 1 from pg_temp.permgraph_set_aside s), r.position, r.statement
  from unnest(p_rebuild) with ordinality r(statement, position);
  foreach statement in array coalesce(p_drop, '{}') loop
    execute statement;
  end loop;
  return coalesce(cardinality(p_drop), 0);
end $$;

-- Builds again what was set aside under p_purpose in this transaction:
-- the latest call first, each call's statements in the order given.
-- Returns how many statements it ran.
create or replace function permgraph._rebuild_set_aside(p_purpose text) returns integer
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  statement text;
  n integer := 0;
begin
  if to_regclass('pg_temp.permgraph_set_aside') is null then
    return 0;
  end if;
  perform permgraph._refuse_foreign_temp_table('permgraph_set_aside');
  for statement in
    select s.statement from pg_temp.permgraph_set_aside s where s.purpose = p_purpose order by s.call desc, s.position
  loop
    execute statement;
    n := n + 1;
  end loop;
  delete from pg_temp.permgraph_set_aside where purpose = p_purpose;
  return n;
end $$;
