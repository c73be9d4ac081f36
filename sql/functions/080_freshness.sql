-- Freshness tokens and status.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- A token for the changes the current transaction has made (its transaction
-- id). After commit, permgraph.is_applied(token) turns true once the worker
-- (or any applier) has written them into permissions.
create or replace function permgraph.current_token() returns text
language sql volatile
security definer
set search_path = pg_catalog, pg_temp
as $$ select pg_current_xact_id()::text $$;

create or replace function permgraph.is_applied(p_token text) returns boolean
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  xact xid8;
begin
  begin
    xact := p_token::xid8;
  exception when others then
    raise exception 'permgraph: "%" is not a freshness token (expected a transaction id)', p_token
      using errcode = '22023';
  end;
  return not exists (select 1 from permgraph.changes where xact_id = xact);
end $$;

-- The advisory lock key a worker holds (session-level) while it is the
-- single active applier; standbys poll for it.
create or replace function permgraph._applier_role_key() returns bigint
language sql immutable
set search_path = pg_catalog, pg_temp
as $$ select 7238001003::bigint $$;

create or replace function permgraph.status() returns jsonb
language sql stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select jsonb_build_object(
    'pending_changes', (select count(*) from permgraph.changes),
    'oldest_pending_age_s', (select extract(epoch from now() - min(captured_at)) from permgraph.changes),
    'last_batch', (select to_jsonb(s) - 'singleton' from permgraph.applier_state s),
    'worker', (select jsonb_build_object('pid', a.pid, 'application_name', a.application_name,
                                         'client_addr', a.client_addr, 'since', a.backend_start)
               from pg_locks l join pg_stat_activity a on a.pid = l.pid
               where l.locktype = 'advisory' and l.granted and l.objsubid = 1
                 and l.database = (select oid from pg_database where datname = current_database())
                 and ((l.classid::bigint << 32) | l.objid::bigint) = permgraph._applier_role_key()
               limit 1),
    'permission_rows', (select count(*) from permgraph.permissions)
  )
$$;
