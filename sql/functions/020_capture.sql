-- Change capture. Every change to nodes and grants, by any client, is written
-- to permgraph.changes in the same transaction, and the edge table is kept in
-- step; a payload-free wake-up is sent on channel permgraph_changes. The
-- notification is only a hint: the worker also polls, and the changes table
-- is the record of truth.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- Whether the session belongs to the schema's owner (a superuser does too).
-- session_user, not current_user: inside a security definer function
-- current_user is the owner, and SET ROLE must not lend anyone its rights.
create or replace function permgraph._session_is_owner() returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_has_role(session_user, n.nspowner, 'MEMBER') from pg_namespace n where n.nspname = 'permgraph'
$$;

-- `set local permgraph.capture = 'off'` lets a bulk import skip capture (it
-- recomputes everything afterwards). Only the schema's owner may: anyone
-- else could revoke a grant without the engine noticing.
create or replace function permgraph._capture_enabled() returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  if coalesce(current_setting('permgraph.capture', true), '') <> 'off' then
    return true;
  end if;
  if permgraph._session_is_owner() then
    return false;
  end if;
  raise exception 'permgraph: only the owner of schema permgraph may switch capture off (permgraph.capture = off); % may not',
    session_user using errcode = '42501';
end $$;

-- Record one changed edge (or identity edge, or trash change).
create or replace function permgraph._capture(
  p_tail text, p_head text, p_tail_kind text, p_head_kind text,
  p_old smallint, p_new smallint, p_trash boolean default false
) returns void
language sql
set search_path = pg_catalog, pg_temp
as $$
  insert into permgraph.changes (tail_id, head_id, tail_kind, head_kind, old_level, new_level, trash_changed)
  values (p_tail, p_head, p_tail_kind, p_head_kind, p_old, p_new, p_trash)
$$;

-- The kind of a node's owner, needed because ownership edges start there.
create or replace function permgraph._kind_of(p_id text) returns text
language sql stable
set search_path = pg_catalog, pg_temp
as $$ select kind from permgraph.nodes where id = p_id $$;

-- Ownership of a user or group is an edge (objects are resolved at query time).
create or replace function permgraph._is_owner_edge(p_id text, p_owner_id text, p_kind text) returns boolean
language sql immutable
set search_path = pg_catalog, pg_temp
as $$ select p_owner_id is not null and p_kind <> 'object' and p_owner_id <> p_id $$;

create or replace function permgraph._nodes_sync_edges() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if tg_op in ('DELETE', 'UPDATE') and permgraph._is_owner_edge(old.id, old.owner_id, old.kind) then
    delete from permgraph.edges where tail_id = old.owner_id and head_id = old.id and source = '';
  end if;
  if tg_op in ('INSERT', 'UPDATE') and permgraph._is_owner_edge(new.id, new.owner_id, new.kind) then
    insert into permgraph.edges (tail_id, head_id, source, level, tail_kind, head_kind)
    values (new.owner_id, new.id, '', 3, coalesce(permgraph._kind_of(new.owner_id), new.kind), new.kind);
  end if;
  return null;
end $$;

create or replace function permgraph._grants_sync_edges() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if tg_op in ('DELETE', 'UPDATE') then
    delete from permgraph.edges where tail_id = old.tail_id and head_id = old.head_id and source = old.source;
  end if;
  if tg_op in ('INSERT', 'UPDATE') then
    insert into permgraph.edges (tail_id, head_id, source, level, tail_kind, head_kind)
    values (new.tail_id, new.head_id, new.source, new.level, new.tail_kind, new.head_kind);
  end if;
  return null;
end $$;

create or replace function permgraph._nodes_capture() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if not permgraph._capture_enabled() then
    return null; -- bulk import by the schema's owner, which runs a full refresh instead
  end if;
  if tg_op in ('DELETE', 'UPDATE') then
    -- the old ownership edge (objects' ownership is resolved at query time, not an edge)
    if permgraph._is_owner_edge(old.id, old.owner_id, old.kind)
       and (tg_op = 'DELETE' or new.owner_id is distinct from old.owner_id) then
      perform permgraph._capture(old.owner_id, old.id, coalesce(permgraph._kind_of(old.owner_id), 'group'), old.kind, 3::smallint, null);
    end if;
  end if;
  if tg_op in ('INSERT', 'UPDATE') then
    if permgraph._is_owner_edge(new.id, new.owner_id, new.kind)
       and (tg_op = 'INSERT' or new.owner_id is distinct from old.owner_id) then
      -- (a missing owner is refused by the statement-level check that follows)
      perform permgraph._capture(new.owner_id, new.id, coalesce(permgraph._kind_of(new.owner_id), 'group'), new.kind, null, 3::smallint);
    end if;
  end if;
  if tg_op = 'INSERT' and new.kind = 'user' then
    perform permgraph._capture(new.id, new.id, 'user', 'user', null, 3::smallint);
  elsif tg_op = 'DELETE' and old.kind = 'user' then
    perform permgraph._capture(old.id, old.id, 'user', 'user', 3::smallint, null);
  end if;
  -- A group's effective trash time depends on its own trash_at and its owners'.
  if (tg_op = 'INSERT' and new.kind = 'group' and (new.trash_at is not null or new.owner_id is not null))
     or (tg_op = 'UPDATE' and new.kind = 'group'
         and (new.trash_at is distinct from old.trash_at or new.owner_id is distinct from old.owner_id))
     or (tg_op = 'DELETE' and old.kind = 'group') then
    perform permgraph._capture(coalesce(new.id, old.id), coalesce(new.id, old.id), 'group', 'group', null, null, true);
  end if;
  if tg_op = 'DELETE' then
    -- The deleted node's rows become unreadable now (every read path skips
    -- ids listed here) and are removed by the worker's next batch. Deleting
    -- them here would make every concurrent batch that touches them fail.
    insert into permgraph.deleted_nodes (id) values (old.id);
  end if;
  return null;
end $$;

create or replace function permgraph._grants_capture() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if not permgraph._capture_enabled() then
    return null;
  end if;
  if tg_op = 'UPDATE' and new.tail_id = old.tail_id and new.head_id = old.head_id
     and new.level = old.level then
    return null; -- source or audit columns only: the edge is unchanged
  end if;
  if tg_op in ('DELETE', 'UPDATE') then
    perform permgraph._capture(old.tail_id, old.head_id, old.tail_kind, old.head_kind, old.level, null);
  end if;
  if tg_op in ('INSERT', 'UPDATE') then
    perform permgraph._capture(new.tail_id, new.head_id, new.tail_kind, new.head_kind, null, new.level);
  end if;
  return null;
end $$;

-- TRUNCATE fires no row triggers: drop the table's edges and record that
-- everything must be recomputed.
create or replace function permgraph._capture_truncate() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if tg_table_name = 'grants' then
    delete from permgraph.edges where source <> '';
  else
    delete from permgraph.edges;
  end if;
  perform permgraph._capture('*', '*', '*', '*', null, null, true);
  perform pg_notify('permgraph_changes', '');
  return null;
end $$;

create or replace function permgraph._notify_changes() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform pg_notify('permgraph_changes', '');  -- identical notifications fold into one per transaction
  return null;
end $$;

drop trigger if exists nodes_sync_edges on permgraph.nodes;

create trigger nodes_sync_edges after insert or update of owner_id or delete on permgraph.nodes
  for each row execute function permgraph._nodes_sync_edges();

drop trigger if exists grants_sync_edges on permgraph.grants;

create trigger grants_sync_edges after insert or update or delete on permgraph.grants
  for each row execute function permgraph._grants_sync_edges();

drop trigger if exists nodes_capture on permgraph.nodes;

create trigger nodes_capture after insert or update of owner_id, trash_at, kind or delete on permgraph.nodes
  for each row execute function permgraph._nodes_capture();

drop trigger if exists grants_capture on permgraph.grants;

create trigger grants_capture after insert or update or delete on permgraph.grants
  for each row execute function permgraph._grants_capture();

drop trigger if exists nodes_notify on permgraph.nodes;

create trigger nodes_notify after insert or update or delete on permgraph.nodes
  for each statement execute function permgraph._notify_changes();

drop trigger if exists grants_notify on permgraph.grants;

create trigger grants_notify after insert or update or delete on permgraph.grants
  for each statement execute function permgraph._notify_changes();

drop trigger if exists nodes_truncate on permgraph.nodes;

create trigger nodes_truncate after truncate on permgraph.nodes
  for each statement execute function permgraph._capture_truncate();

drop trigger if exists grants_truncate on permgraph.grants;

create trigger grants_truncate after truncate on permgraph.grants
  for each statement execute function permgraph._capture_truncate();
