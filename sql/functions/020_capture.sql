-- Change capture. Every change to nodes and grants, by any client, is written
-- to permgraph.changes in the same transaction, and the edge table is kept in
-- step; a statement that wrote change rows (or deleted nodes) sends a
-- payload-free wake-up on channel permgraph_changes (identical
-- notifications fold into one per transaction). The notification is only a
-- hint: the worker also polls, and the changes table is the record of truth.
-- It is sent by the capture functions themselves, not by a trigger of its
-- own: a statement that changed nothing wakes no worker, and a write pays
-- one trigger call fewer.
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

-- Per statement, with transition tables: one call however many rows, and
-- set-based inserts into edges and changes. A change row is one edge that
-- appeared, vanished or changed level (old_level -> new_level, null for
-- absent), an identity edge of a user, or a group whose effective trash time
-- may have changed (trash_changed).
--
-- Plans that hold for any size. A trigger function's statements are planned
-- once per session, with the size the transition tables had at that first
-- call, and the plan is kept for every later statement of the session. So
-- no plan here may depend on that size (test/engine/capture-plans.test.ts):
-- - a transition table's rows look their nodes up, and find the edges a
--   statement deletes, by primary key, one probe per row: LATERAL with
--   OFFSET 0, which no plan can turn around or hash (a hash join made for a
--   bulk statement read all of nodes, twice, for every one-row write after
--   it: 90-170 ms a write on a graph of 264,000 nodes; with hash joins
--   turned off instead, statistics taken before a bulk load turned the
--   join around: edges read once per deleted node). Edges are deleted by
--   the row ids those probes found: only capture writes edges, under the
--   lock of the grant or node row that the edge stands for, so no other
--   transaction moves them meanwhile;
-- - old and new rows are compared by EXCEPT, never joined (a join planned
--   for a one-row UPDATE nested loops over both tables in a bulk UPDATE
--   after it: 11,111 grants took 80 s). EXCEPT treats nulls as equal, as
--   IS NOT DISTINCT FROM does, and hashes or sorts, whatever the estimate;
-- - where rows of a transition table share their ends (a bulk INSERT of
--   grants: 100,000 rows, 22,000 distinct ends), each distinct end is
--   probed once and the rows are joined to those, with nested loops off
--   for the function (a LATERAL probe has no other plan, so the probes
--   stay probes): hashed or merged, linear whatever the sizes.

-- Nodes: ownership of a user or group is an edge (owner -> node, level 3;
-- objects' owners are resolved at query time), every user has an identity
-- edge, and a group's effective trash time follows its own trash_at and its
-- owners'. Ids and kinds never change (nodes_validate refuses it), so old and
-- new rows of an UPDATE pair up by id. An owner missing from nodes is
-- refused by the statement-level validation that follows; its kind is
-- written as 'group' meanwhile, and the whole statement rolls back.
create or replace function permgraph._nodes_capture() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  capture constant boolean := permgraph._capture_enabled();
  captured bigint := 0;  -- change rows written
  gone bigint := 0;      -- nodes deleted
begin
  if tg_op = 'INSERT' then
    -- One statement: the owners read locked (_captured_ends,
    -- 010_integrity.sql), their edges, and the change rows, which take the
    -- owners' kinds from the edges written rather than reading them again.
    with owners as materialized (
      select o.id, o.kind
      from permgraph._captured_ends(
             array(select distinct n.owner_id from new_rows n where n.owner_id is not null and n.owner_id <> n.id and n.kind <> 'object'),
             'permgraph.capture_missed_owner') o
    ), added as (
      insert into permgraph.edges (tail_id, head_id, source, level, tail_kind, head_kind)
      select n.owner_id, n.id, '', 3, coalesce(o.kind, 'group'), n.kind
      from new_rows n left join owners o on o.id = n.owner_id
      where n.owner_id is not null and n.owner_id <> n.id and n.kind <> 'object'
      returning tail_id, head_id, tail_kind, head_kind
    )
    insert into permgraph.changes (tail_id, head_id, tail_kind, head_kind, old_level, new_level, trash_changed)
    select a.tail_id, a.head_id, a.tail_kind, a.head_kind, null::smallint, 3::smallint, false from added a where capture
    union all
    select n.id, n.id, 'user', 'user', null::smallint, 3::smallint, false from new_rows n where capture and n.kind = 'user'
    union all
    select n.id, n.id, 'group', 'group', null::smallint, null::smallint, true
    from new_rows n where capture and n.kind = 'group' and (n.trash_at is not null or n.owner_id is not null);
    get diagnostics captured = row_count;
  elsif tg_op = 'UPDATE' then
    -- An ownership edge whose (owner, node) pair the new rows no longer
    -- hold went away (its node's owner changed); one the old rows did not
    -- hold came. Ids and kinds never change.
    delete from permgraph.edges e
    where e.ctid = any (array(
      select x.ctid
      from (select o.owner_id, o.id from old_rows o where o.owner_id is not null and o.owner_id <> o.id and o.kind <> 'object'
            except
            select n.owner_id, n.id from new_rows n) gone
      cross join lateral (select x.ctid from permgraph.edges x
                          where x.tail_id = gone.owner_id and x.head_id = gone.id and x.source = '' offset 0) x));
    if not permgraph._nodes_locked_against_deletes() then
      perform from permgraph._captured_ends(
        array(select distinct c.owner_id
              from (select n.owner_id, n.id from new_rows n where n.owner_id is not null and n.owner_id <> n.id and n.kind <> 'object'
                    except
                    select o.owner_id, o.id from old_rows o) c),
        'permgraph.capture_missed_owner');
    end if;
    insert into permgraph.edges (tail_id, head_id, source, level, tail_kind, head_kind)
    select came.owner_id, came.id, '', 3, coalesce(w.kind, 'group'), came.kind
    from (select n.owner_id, n.id, n.kind from new_rows n where n.owner_id is not null and n.owner_id <> n.id and n.kind <> 'object'
          except
          select o.owner_id, o.id, o.kind from old_rows o) came
    left join lateral (select w.kind from permgraph.nodes w where w.id = came.owner_id offset 0) w on true;
  else
    delete from permgraph.edges e
    where e.ctid = any (array(
      select x.ctid from old_rows o
      cross join lateral (select x.ctid from permgraph.edges x
                          where x.tail_id = o.owner_id and x.head_id = o.id and x.source = '' offset 0) x
      where o.owner_id is not null and o.owner_id <> o.id and o.kind <> 'object'));
    -- The deleted nodes' rows become unreadable now (every read path skips
    -- ids listed here) and are removed by the worker's next batch. Deleting
    -- them here would make every concurrent batch that touches them fail.
    insert into permgraph.deleted_nodes (id) select o.id from old_rows o;
    get diagnostics gone = row_count;
  end if;

  if tg_op = 'INSERT' or not capture then
    -- Captured above, or capture is off: a bulk import by the schema's
    -- owner, which runs a full refresh instead; the worker still removes
    -- deleted nodes' rows.
    null;
  elsif tg_op = 'UPDATE' then
    -- the ownership edges that went and came (as above), and the groups
    -- whose trash time or owner changed
    insert into permgraph.changes (tail_id, head_id, tail_kind, head_kind, old_level, new_level, trash_changed)
    select gone.owner_id, gone.id, coalesce(w.kind, 'group'), gone.kind, 3::smallint, null::smallint, false
    from (select o.owner_id, o.id, o.kind from old_rows o where o.owner_id is not null and o.owner_id <> o.id and o.kind <> 'object'
          except
          select n.owner_id, n.id, n.kind from new_rows n) gone
    left join lateral (select w.kind from permgraph.nodes w where w.id = gone.owner_id offset 0) w on true
    union all
    select came.owner_id, came.id, coalesce(w.kind, 'group'), came.kind, null::smallint, 3::smallint, false
    from (select n.owner_id, n.id, n.kind from new_rows n where n.owner_id is not null and n.owner_id <> n.id and n.kind <> 'object'
          except
          select o.owner_id, o.id, o.kind from old_rows o) came
    left join lateral (select w.kind from permgraph.nodes w where w.id = came.owner_id offset 0) w on true
    union all
    select g.id, g.id, 'group', 'group', null::smallint, null::smallint, true
    from (select n.id, n.owner_id, n.trash_at from new_rows n where n.kind = 'group'
          except
          select o.id, o.owner_id, o.trash_at from old_rows o) g;
    get diagnostics captured = row_count;
  else
    insert into permgraph.changes (tail_id, head_id, tail_kind, head_kind, old_level, new_level, trash_changed)
    select o.owner_id, o.id, coalesce(w.kind, 'group'), o.kind, 3::smallint, null::smallint, false
    from old_rows o left join lateral (select w.kind from permgraph.nodes w where w.id = o.owner_id offset 0) w on true
    where o.owner_id is not null and o.owner_id <> o.id and o.kind <> 'object'
    union all
    select o.id, o.id, 'user', 'user', 3::smallint, null::smallint, false from old_rows o where o.kind = 'user'
    union all
    select o.id, o.id, 'group', 'group', null::smallint, null::smallint, true from old_rows o where o.kind = 'group';
    get diagnostics captured = row_count;
  end if;
  if captured + gone > 0 then
    perform pg_notify('permgraph_changes', '');
  end if;
  return null;
end $$;

-- Grants: each grant is an edge tail -> head at its level, until its expiry
-- (parallel grants from several sources are parallel edges). An UPDATE is
-- taken as the grants that vanished (in old_rows, not in new_rows with the
-- same key, level and expiry) and the grants that appeared; a grant whose
-- only change is another column (created_at, audit fields) is neither.
--
-- A grant row does not carry its ends' kinds: they are read from nodes for
-- the grants written (one join per statement; an end that does not exist is
-- refused by grants_validate_inserted/updated, which fire after this and
-- roll the statement back, so its kind is written as 'group' meanwhile), and
-- from the removed edges for the grants deleted (a delete that cascades from
-- a node runs after the node is gone).
create or replace function permgraph._grants_capture() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
-- The rows inserted meet their ends' kinds by hash (or merge), never by a
-- nested loop over the ends (see the header); every other join here is a
-- LATERAL probe, which no setting turns into anything else.
set enable_nestloop = off
-- Before PostgreSQL 18 a disabled method still costs 1e10 where it is the
-- only plan (those probes): past jit_above_cost, so a server with JIT
-- compiled the statement at every call (~200 ms a one-row write on 15).
set jit = off
as $$
declare
  capture constant boolean := permgraph._capture_enabled();
  captured bigint := 0;  -- change rows written
begin
  -- Each branch names only the transition tables its event has.
  if tg_op = 'INSERT' then
    -- (the ends read locked: _captured_ends, 010_integrity.sql; one missing
    -- is not among them. With capture off too: an owner's bulk load races
    -- concurrent writers the same way, and its refresh reads these edges.)
    with ends as materialized (
      select e.id, e.kind
      from permgraph._captured_ends(array(select n.tail_id from new_rows n union select n.head_id from new_rows n),
                                    'permgraph.capture_missed_grant_end') e
    ), added as (
      insert into permgraph.edges (tail_id, head_id, source, level, tail_kind, head_kind, expires_at)
      select n.tail_id, n.head_id, n.source, n.level, coalesce(t.kind, 'group'), coalesce(h.kind, 'group'), n.expires_at
      from new_rows n left join ends t on t.id = n.tail_id left join ends h on h.id = n.head_id
      returning tail_id, head_id, tail_kind, head_kind, level
    )
    insert into permgraph.changes (tail_id, head_id, tail_kind, head_kind, old_level, new_level)
    select a.tail_id, a.head_id, a.tail_kind, a.head_kind, null, a.level from added a where capture;
    get diagnostics captured = row_count;
  elsif tg_op = 'DELETE' then
    with removed as (
      delete from permgraph.edges e
      where e.ctid = any (array(
        select x.ctid from old_rows o
        cross join lateral (select x.ctid from permgraph.edges x
                            where x.tail_id = o.tail_id and x.head_id = o.head_id and x.source = o.source offset 0) x))
      returning e.tail_id, e.head_id, e.tail_kind, e.head_kind, e.level
    )
    insert into permgraph.changes (tail_id, head_id, tail_kind, head_kind, old_level, new_level)
    select r.tail_id, r.head_id, r.tail_kind, r.head_kind, r.level, null from removed r where capture;
    get diagnostics captured = row_count;
  else
    -- The grants that went (an old row no new row repeats: key, level and
    -- expiry) and came (the other way round). The ends of the new rows
    -- locked first (_captured_ends, 010_integrity.sql).
    if not permgraph._nodes_locked_against_deletes() then
      perform from permgraph._captured_ends(array(select n.tail_id from new_rows n union select n.head_id from new_rows n),
                                            'permgraph.capture_missed_grant_end');
    end if;
    delete from permgraph.edges e
    where e.ctid = any (array(
      select x.ctid
      from (select o.tail_id, o.head_id, o.source, o.level, o.expires_at from old_rows o
            except
            select n.tail_id, n.head_id, n.source, n.level, n.expires_at from new_rows n) gone
      cross join lateral (select x.ctid from permgraph.edges x
                          where x.tail_id = gone.tail_id and x.head_id = gone.head_id and x.source = gone.source offset 0) x));
    insert into permgraph.edges (tail_id, head_id, source, level, tail_kind, head_kind, expires_at)
    select came.tail_id, came.head_id, came.source, came.level, coalesce(t.kind, 'group'), coalesce(h.kind, 'group'), came.expires_at
    from (select n.tail_id, n.head_id, n.source, n.level, n.expires_at from new_rows n
          except
          select o.tail_id, o.head_id, o.source, o.level, o.expires_at from old_rows o) came
    left join lateral (select t.kind from permgraph.nodes t where t.id = came.tail_id offset 0) t on true
    left join lateral (select h.kind from permgraph.nodes h where h.id = came.head_id offset 0) h on true;
    if capture then
      -- Only edges that changed: a grant moved to another source keeps the
      -- same edge (tail, head, level, expiry) and needs no recomputation.
      -- The ends of updated grants are nodes (a grant's nodes are not
      -- deleted by an UPDATE of grants).
      insert into permgraph.changes (tail_id, head_id, tail_kind, head_kind, old_level, new_level)
      select c.tail_id, c.head_id, coalesce(t.kind, 'group'), coalesce(h.kind, 'group'), c.old_level, c.new_level
      from (
        select gone.tail_id, gone.head_id, gone.level as old_level, null::smallint as new_level
        from (select o.tail_id, o.head_id, o.level, o.expires_at from old_rows o
              except
              select n.tail_id, n.head_id, n.level, n.expires_at from new_rows n) gone
        union all
        select came.tail_id, came.head_id, null, came.level
        from (select n.tail_id, n.head_id, n.level, n.expires_at from new_rows n
              except
              select o.tail_id, o.head_id, o.level, o.expires_at from old_rows o) came
      ) c
      left join lateral (select t.kind from permgraph.nodes t where t.id = c.tail_id offset 0) t on true
      left join lateral (select h.kind from permgraph.nodes h where h.id = c.head_id offset 0) h on true;
      get diagnostics captured = row_count;
    end if;
  end if;
  if captured > 0 then
    perform pg_notify('permgraph_changes', '');
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
  insert into permgraph.changes (tail_id, head_id, tail_kind, head_kind, old_level, new_level, trash_changed)
  values ('*', '*', '*', '*', null, null, true);
  perform pg_notify('permgraph_changes', '');
  return null;
end $$;

drop trigger if exists nodes_capture_inserted on permgraph.nodes;

create trigger nodes_capture_inserted after insert on permgraph.nodes
  referencing new table as new_rows
  for each statement execute function permgraph._nodes_capture();

drop trigger if exists nodes_capture_updated on permgraph.nodes;

create trigger nodes_capture_updated after update on permgraph.nodes
  referencing old table as old_rows new table as new_rows
  for each statement execute function permgraph._nodes_capture();

drop trigger if exists nodes_capture_deleted on permgraph.nodes;

create trigger nodes_capture_deleted after delete on permgraph.nodes
  referencing old table as old_rows
  for each statement execute function permgraph._nodes_capture();

drop trigger if exists grants_capture_inserted on permgraph.grants;

create trigger grants_capture_inserted after insert on permgraph.grants
  referencing new table as new_rows
  for each statement execute function permgraph._grants_capture();

drop trigger if exists grants_capture_updated on permgraph.grants;

create trigger grants_capture_updated after update on permgraph.grants
  referencing old table as old_rows new table as new_rows
  for each statement execute function permgraph._grants_capture();

drop trigger if exists grants_capture_deleted on permgraph.grants;

create trigger grants_capture_deleted after delete on permgraph.grants
  referencing old table as old_rows
  for each statement execute function permgraph._grants_capture();

drop trigger if exists nodes_truncate on permgraph.nodes;

create trigger nodes_truncate after truncate on permgraph.nodes
  for each statement execute function permgraph._capture_truncate();

drop trigger if exists grants_truncate on permgraph.grants;

create trigger grants_truncate after truncate on permgraph.grants
  for each statement execute function permgraph._capture_truncate();
