-- The audit log: who changed which node or grant, written by triggers.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- Who is changing things: the session setting permgraph.actor (an app sets it
-- per transaction with `set local permgraph.actor = 'alice@example.com'`),
-- else the database role.
create or replace function permgraph.current_actor() returns text
language sql stable as $$
  select coalesce(nullif(current_setting('permgraph.actor', true), ''), current_user::text)
$$;

-- Imports (and operators doing their own bulk work) switch per-row auditing
-- off with `set local permgraph.audit = 'off'` and write a summary row.
create or replace function permgraph._audit_enabled() returns boolean
language sql stable as $$ select coalesce(current_setting('permgraph.audit', true), '') <> 'off' $$;

create or replace function permgraph._audit_grants() returns trigger
language plpgsql as $$
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
language plpgsql as $$
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
language plpgsql as $$
begin
  if tg_table_name = 'audit_log' then
    -- Operators may truncate the log (retention); the truncation itself stays on record.
    insert into permgraph.audit_log (action) values ('truncate_audit');
  elsif permgraph._audit_enabled() then
    insert into permgraph.audit_log (action, details) values ('truncate', jsonb_build_object('table', tg_table_name));
  end if;
  return null;
end $$;

create or replace function permgraph._audit_refuse_change() returns trigger
language plpgsql as $$
begin
  raise exception 'permgraph: audit_log is append-only: % is refused (an operator may TRUNCATE it to drop old history)', tg_op
    using errcode = '42501';
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

create trigger audit_log_append_only before update or delete on permgraph.audit_log
  for each statement execute function permgraph._audit_refuse_change();

drop trigger if exists audit_log_truncate on permgraph.audit_log;

create trigger audit_log_truncate after truncate on permgraph.audit_log
  for each statement execute function permgraph._audit_truncate();
