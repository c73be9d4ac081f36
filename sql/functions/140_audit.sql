-- The audit log: who changed which node or grant, written by triggers.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- Who is changing things: the session setting permgraph.actor (an app sets it
-- per transaction with `set local permgraph.actor = 'alice@example.com'`),
-- else the login (session_user: the audit triggers run as the schema's
-- owner, so current_user would always name the owner). The login is also
-- kept on its own in audit_log.db_role, which the session cannot change.
-- It is audit_log.actor's default, evaluated for every row written: an
-- SQL-standard body (its names resolved once, when it is created) needs no
-- pinned search_path, and with no SET clause the planner inlines it into
-- the insert. With a SET clause each row paid a function call that saves
-- and restores the search path: 0.5 s of a 100,000-grant insert.
create or replace function permgraph.current_actor() returns text
language sql stable
return coalesce(nullif(pg_catalog.current_setting('permgraph.actor', true), ''), session_user::text);

-- Imports switch per-row auditing off with `set local permgraph.audit =
-- 'off'` and write a summary row. Only the schema's owner may: anyone else
-- could change grants with no audit row.
create or replace function permgraph._audit_enabled() returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  if coalesce(current_setting('permgraph.audit', true), '') <> 'off' then
    return true;
  end if;
  if permgraph._session_is_owner() then
    return false;
  end if;
  raise exception 'permgraph: only the owner of schema permgraph may switch auditing off (permgraph.audit = off); % may not',
    session_user using errcode = '42501';
end $$;

-- Per statement, with transition tables (one call, set-based inserts).
-- Grants are keyed by (tail, head, source): a key only in the old rows is a
-- revoke, only in the new rows a grant (so moving a grant to another tail,
-- head or source is a revoke plus a grant); a key in both is a change of
-- level when its level differs, else a change of expiry when only its
-- expires_at differs. Every grant row records its expiry: a grant the new
-- one (new_expires_at), a revoke the old one, a change both (a change of
-- level that also moves the expiry is one change_level entry whose
-- old/new_expires_at differ). Other columns are not audited.
create or replace function permgraph._audit_grants() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if not permgraph._audit_enabled() then
    return null;
  end if;
  if tg_op = 'INSERT' then
    insert into permgraph.audit_log (action, tail_id, head_id, source, new_level, new_expires_at)
    select 'grant', n.tail_id, n.head_id, n.source, n.level, n.expires_at from new_rows n order by n.tail_id, n.head_id, n.source;
  elsif tg_op = 'DELETE' then
    insert into permgraph.audit_log (action, tail_id, head_id, source, old_level, old_expires_at)
    select 'revoke', o.tail_id, o.head_id, o.source, o.level, o.expires_at from old_rows o order by o.tail_id, o.head_id, o.source;
  else
    insert into permgraph.audit_log (action, tail_id, head_id, source, old_level, new_level, old_expires_at, new_expires_at)
    select case when o.tail_id is null then 'grant'
                when n.tail_id is null then 'revoke'
                when n.level is distinct from o.level then 'change_level'
                else 'change_expiry' end,
           coalesce(n.tail_id, o.tail_id), coalesce(n.head_id, o.head_id), coalesce(n.source, o.source),
           o.level, n.level, o.expires_at, n.expires_at
    from old_rows o full join new_rows n on n.tail_id = o.tail_id and n.head_id = o.head_id and n.source = o.source
    where n.level is distinct from o.level or n.expires_at is distinct from o.expires_at
    -- revokes before grants, as a moved grant read row by row
    order by (o.tail_id is null), coalesce(n.tail_id, o.tail_id), coalesce(n.head_id, o.head_id), coalesce(n.source, o.source);
  end if;
  return null;
end $$;

create or replace function permgraph._audit_nodes() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
-- Its only joins pair old and new rows by id: hashed, never a nested loop.
-- The plan is made at the session's first call, with that statement's
-- sizes, and kept (020_capture.sql): one planned for a one-row UPDATE
-- nested loops over both tables of a bulk UPDATE after it.
set enable_nestloop = off
-- (as everywhere a method is disabled: before PostgreSQL 18 a plan left
-- with only that method costs 1e10, and a server with JIT would compile it)
set jit = off
as $$
begin
  if not permgraph._audit_enabled() then
    return null;
  end if;
  if tg_op = 'INSERT' then
    -- (a user created a superuser says so: details {"superuser": true})
    insert into permgraph.audit_log (action, head_id, node_kind, new_owner, new_trash_at, details)
    select 'create_node', n.id, n.kind, n.owner_id, n.trash_at,
           case when n.is_superuser then jsonb_build_object('superuser', true) end
    from new_rows n order by n.id;
  elsif tg_op = 'DELETE' then
    insert into permgraph.audit_log (action, head_id, node_kind, old_owner, old_trash_at)
    select 'delete_node', o.id, o.kind, o.owner_id, o.trash_at from old_rows o order by o.id;
  else
    -- Ids never change (nodes_validate refuses it): old and new rows pair up by id.
    insert into permgraph.audit_log (action, head_id, node_kind, old_owner, new_owner, old_trash_at, new_trash_at, details)
    select c.action, c.id, c.kind, c.old_owner, c.new_owner, c.old_trash_at, c.new_trash_at, c.details
    from (
      select 'set_owner' as action, 1 as step, n.id, n.kind, o.owner_id as old_owner, n.owner_id as new_owner,
             null::timestamptz as old_trash_at, null::timestamptz as new_trash_at, null::jsonb as details
      from old_rows o join new_rows n on n.id = o.id where n.owner_id is distinct from o.owner_id
      union all
      select 'set_trash', 2, n.id, n.kind, null, null, o.trash_at, n.trash_at, null
      from old_rows o join new_rows n on n.id = o.id where n.trash_at is distinct from o.trash_at
      union all
      -- an application superuser passes every check: who made one, or unmade it
      select 'set_superuser', 3, n.id, n.kind, null, null, null, null, jsonb_build_object('superuser', n.is_superuser)
      from old_rows o join new_rows n on n.id = o.id where n.is_superuser is distinct from o.is_superuser
    ) c
    order by c.id, c.step;
  end if;
  return null;
end $$;

-- TRUNCATE fires no row triggers: record the statement itself.
create or replace function permgraph._audit_truncate() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if permgraph._audit_enabled() then
    insert into permgraph.audit_log (action, details) values ('truncate', jsonb_build_object('table', tg_table_name));
  end if;
  return null;
end $$;

create or replace function permgraph._audit_refuse_change() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  stack text;
begin
  -- The one DELETE let through is prune_audit_log()'s own, which records the
  -- pruning: told by the call stack, which only that function's code puts
  -- there (a session setting, as it once was, any owner's session could set
  -- and then empty the log without a trace).
  get diagnostics stack = pg_context;
  if tg_op = 'DELETE' and permgraph._session_is_owner()
     and position(E'\nPL/pgSQL function permgraph.prune_audit_log(timestamp with time zone) line ' in stack) > 0 then
    return null;
  end if;
  raise exception 'permgraph: audit_log is append-only: % is refused (the schema''s owner may drop old entries with permgraph.prune_audit_log(before))', tg_op
    using errcode = '42501';
end $$;

-- The one way to drop old audit history: entries older than p_before go,
-- and a 'prune_audit' entry records how many, up to when, and who. Only the
-- schema's owner may (nobody else may execute this or delete from the log).
-- The cut-off is recorded as the library gives every moment, in UTC to the
-- microsecond (2030-01-31T18:00:00.000250Z; ' BC' after a year before 1,
-- infinity as such), not in the time zone of the session that pruned.
create or replace function permgraph.prune_audit_log(p_before timestamptz) returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  pruned bigint;
begin
  if p_before is null then
    raise exception 'permgraph: prune_audit_log needs a timestamp: entries older than it are dropped' using errcode = '22023';
  end if;
  if not permgraph._session_is_owner() then
    raise exception 'permgraph: only the owner of schema permgraph may prune the audit log; % may not', session_user
      using errcode = '42501';
  end if;
  delete from permgraph.audit_log where at < p_before;  -- (let through by _audit_refuse_change)
  get diagnostics pruned = row_count;
  insert into permgraph.audit_log (action, details)
  values ('prune_audit', jsonb_build_object(
    'before', case when isfinite(p_before)
                   then to_char(p_before at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                        || case when p_before < '0001-01-01 00:00:00+00'::timestamptz then ' BC' else '' end
                   else p_before::text end,
    'entries', pruned));
  return pruned;
end $$;

drop trigger if exists grants_audit_inserted on permgraph.grants;

create trigger grants_audit_inserted after insert on permgraph.grants
  referencing new table as new_rows
  for each statement execute function permgraph._audit_grants();

drop trigger if exists grants_audit_updated on permgraph.grants;

create trigger grants_audit_updated after update on permgraph.grants
  referencing old table as old_rows new table as new_rows
  for each statement execute function permgraph._audit_grants();

drop trigger if exists grants_audit_deleted on permgraph.grants;

create trigger grants_audit_deleted after delete on permgraph.grants
  referencing old table as old_rows
  for each statement execute function permgraph._audit_grants();

drop trigger if exists nodes_audit_inserted on permgraph.nodes;

create trigger nodes_audit_inserted after insert on permgraph.nodes
  referencing new table as new_rows
  for each statement execute function permgraph._audit_nodes();

drop trigger if exists nodes_audit_updated on permgraph.nodes;

create trigger nodes_audit_updated after update on permgraph.nodes
  referencing old table as old_rows new table as new_rows
  for each statement execute function permgraph._audit_nodes();

drop trigger if exists nodes_audit_deleted on permgraph.nodes;

create trigger nodes_audit_deleted after delete on permgraph.nodes
  referencing old table as old_rows
  for each statement execute function permgraph._audit_nodes();


drop trigger if exists grants_audit_truncate on permgraph.grants;

create trigger grants_audit_truncate after truncate on permgraph.grants
  for each statement execute function permgraph._audit_truncate();

drop trigger if exists nodes_audit_truncate on permgraph.nodes;

create trigger nodes_audit_truncate after truncate on permgraph.nodes
  for each statement execute function permgraph._audit_truncate();

drop trigger if exists audit_log_append_only on permgraph.audit_log;

create trigger audit_log_append_only before update or delete or truncate on permgraph.audit_log
  for each statement execute function permgraph._audit_refuse_change();

drop trigger if exists audit_log_truncate on permgraph.audit_log;
