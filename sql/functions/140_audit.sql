-- The audit log: who changed which node or grant, written by triggers.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- Who is changing things: the session setting permgraph.actor (an app sets it
-- per transaction with `set local permgraph.actor = 'alice@example.com'`),
-- else the login (session_user: the audit triggers run as the schema's
-- owner, so current_user would always name the owner). The login is also
-- kept on its own in audit_log.db_role, which the session cannot change.
create or replace function permgraph.current_actor() returns text
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(nullif(current_setting('permgraph.actor', true), ''), session_user::text)
$$;

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

create or replace function permgraph._audit_grants() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if not permgraph._audit_enabled() then
    return null;
  end if;
  if tg_op = 'UPDATE' and (new.tail_id, new.head_id, new.source) = (old.tail_id, old.head_id, old.source) then
    if new.level is distinct from old.level then
      insert into permgraph.audit_log (action, tail_id, head_id, source, old_level, new_level)
      values ('change_level', new.tail_id, new.head_id, new.source, old.level, new.level);
    end if;
    return null;  -- other columns only (e.g. created_at): not a permission change
  end if;
  -- A grant moved to another tail, head or source is a revoke plus a grant.
  if tg_op in ('DELETE', 'UPDATE') then
    insert into permgraph.audit_log (action, tail_id, head_id, source, old_level)
    values ('revoke', old.tail_id, old.head_id, old.source, old.level);
  end if;
  if tg_op in ('INSERT', 'UPDATE') then
    insert into permgraph.audit_log (action, tail_id, head_id, source, new_level)
    values ('grant', new.tail_id, new.head_id, new.source, new.level);
  end if;
  return null;
end $$;

create or replace function permgraph._audit_nodes() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if not permgraph._audit_enabled() then
    return null;
  end if;
  if tg_op = 'INSERT' then
    insert into permgraph.audit_log (action, head_id, node_kind, new_owner, new_trash_at)
    values ('create_node', new.id, new.kind, new.owner_id, new.trash_at);
  elsif tg_op = 'DELETE' then
    insert into permgraph.audit_log (action, head_id, node_kind, old_owner, old_trash_at)
    values ('delete_node', old.id, old.kind, old.owner_id, old.trash_at);
  else
    if new.owner_id is distinct from old.owner_id then
      insert into permgraph.audit_log (action, head_id, node_kind, old_owner, new_owner)
      values ('set_owner', new.id, new.kind, old.owner_id, new.owner_id);
    end if;
    if new.trash_at is distinct from old.trash_at then
      insert into permgraph.audit_log (action, head_id, node_kind, old_trash_at, new_trash_at)
      values ('set_trash', new.id, new.kind, old.trash_at, new.trash_at);
    end if;
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
begin
  if tg_op = 'DELETE' and current_setting('permgraph.pruning_audit_log', true) = 'on' and permgraph._session_is_owner() then
    return null;  -- inside prune_audit_log(), which records the pruning itself
  end if;
  raise exception 'permgraph: audit_log is append-only: % is refused (the schema''s owner may drop old entries with permgraph.prune_audit_log(before))', tg_op
    using errcode = '42501';
end $$;

-- The one way to drop old audit history: entries older than p_before go,
-- and a 'prune_audit' entry records how many, up to when, and who. Only the
-- schema's owner may (nobody else may execute this or delete from the log).
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
  perform set_config('permgraph.pruning_audit_log', 'on', true);
  delete from permgraph.audit_log where at < p_before;
  get diagnostics pruned = row_count;
  perform set_config('permgraph.pruning_audit_log', 'off', true);
  insert into permgraph.audit_log (action, details)
  values ('prune_audit', jsonb_build_object('before', p_before, 'entries', pruned));
  return pruned;
end $$;

drop trigger if exists grants_audit on permgraph.grants;

create trigger grants_audit after insert or update or delete on permgraph.grants
  for each row execute function permgraph._audit_grants();

drop trigger if exists nodes_audit on permgraph.nodes;

create trigger nodes_audit after insert or update or delete on permgraph.nodes
  for each row execute function permgraph._audit_nodes();

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
