-- The derived-permission change stream (semantics.md "Derived-permission
-- changes"; docs/change-stream.md shows its use). While at least one
-- consumer is registered, every batch records each row it changes in
-- permgraph.permissions as an event of permgraph.permission_changes, in the
-- same transaction; consumers read the events after their acknowledged
-- seq, acknowledge them, and events acknowledged by every consumer are
-- deleted. The current definition of these functions: `permgraph migrate`
-- re-applies this file whenever its content changes (sql/README.md).
--
-- Why seq follows commit order. A sequence alone does not: two transactions
-- may take numbers in one order and commit in the other, and a reader that
-- has seen the later number would skip the earlier one for good. Here every
-- writer of permissions (apply_changes, so the worker's batches and
-- refresh()) holds the applier lock, pg_advisory_xact_lock(_applier_lock_key()),
-- from before its first event until its commit, and _changes_begin_write
-- takes it again itself, so no event is ever written without it. Batches are
-- therefore serialized: the next one numbers its events only after the
-- previous one committed (or rolled back), and a reader that sees an event
-- also sees every committed event with a smaller seq. The sequence has no
-- cache (migration 015) for the same reason.
--
-- Why a batch never misses a consumer. register_consumer and drop_consumer
-- take the applier lock too, so they run between batches. A batch in READ
-- COMMITTED reads the consumers after taking the lock, so it sees them. A
-- REPEATABLE READ batch (the worker's) took its snapshot before waiting for
-- the lock, so it may not see a consumer registered meanwhile. Every
-- registration therefore also takes a number of
-- permgraph.consumer_registrations_seq, which no snapshot hides, and each
-- batch compares the sequence with the count the batches before it
-- accounted for (consumer_registrations.seen): when they differ, a
-- registration may have committed after its snapshot, and the batch records
-- events whether or not it sees a consumer (_changes_begin_write), and so
-- does every later batch of the same transaction, which reads the same
-- snapshot (permgraph.registrations_recorded). Such a batch
-- commits: until 053 a registration or a drop updated applier_state
-- instead, which made every batch whose snapshot was older fail with a
-- serialization failure at its end, so that a reader calling them back to
-- back from a few connections kept every batch from completing
-- (test/security/consumers.test.ts). A batch that sees a consumer records
-- events whatever registers meanwhile, and one that sees a consumer dropped
-- meanwhile records events that nobody needs. A REPEATABLE READ
-- registration whose snapshot is older than the last batch fails (locking
-- applier_state's row raises the serialization failure): the snapshot it
-- returns is always the table as of its seq.
--
-- Why no event is kept for nobody. A batch that records for a registration
-- that rolled back, or for a consumer dropped meanwhile, leaves events no
-- consumer reads. The next batch deletes them (_changes_begin_write): when
-- its snapshot shows events and no consumer, and this transaction recorded
-- none, no consumer is owed any event it sees. Every event is written
-- under the applier lock, and so is every registration, which starts at
-- the last seq numbered: a registration this snapshot does not show
-- committed after the batch that wrote the last event it shows (had it
-- committed before that batch took the lock, the snapshot would show it),
-- so it starts after every event the batch deletes, and one still running
-- waits for the lock. A drop only deletes events too. Under REPEATABLE
-- READ, a registration or acknowledgement that committed after the
-- snapshot may have deleted them already: the batch then leaves them
-- (their deletion is committed) rather than fail. Acknowledgements and
-- drops delete what every remaining consumer has acknowledged
-- (_prune_changes), with consumers left.

-- A row whose valid_until changes is a change like any other: the events
-- carry old_valid_until and new_valid_until next to the levels.

-- The notification channel of a batch that recorded events
-- (PERMISSION_CHANGES_CHANNEL in src/constants.ts).
create or replace function permgraph._permission_changes_channel() returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $$ select 'permgraph_permission_changes'::text $$;

-- Called by _write_diff (040_compute.sql) before it writes: whether to record
-- events. The one cost on the write path without consumers is this check
-- (one statement: the registrations' sequence, two probes and a third when no consumer is registered, two settings). With consumers it
-- queues the notification (sent on commit; dropped if the batch rolls back;
-- several in one transaction are sent once). After registrations the
-- batches before it have not accounted for (see the file comment), it
-- records events whether or not this snapshot shows a consumer, and marks
-- them accounted for. And it deletes the events nobody can read (see "Why
-- no event is kept for nobody" in the file comment).
create or replace function permgraph._changes_begin_write() returns boolean
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  state record;
begin
  -- Re-entrant: apply_changes holds both already. See the file comment.
  -- The applier's turn first, as every batch takes it (_begin_applying,
  -- 060_apply.sql): the local path's batches take it here, so that no
  -- batch at all commits while a REPEATABLE READ batch that took its turn
  -- before its snapshot waits for the applier lock.
  lock table permgraph.applier_turn in exclusive mode;
  perform pg_catalog.pg_advisory_xact_lock(permgraph._applier_lock_key());
  -- The registrations' sequence is its state, not a row version: the
  -- latest, whatever the snapshot; read with the lock held, so no
  -- registration runs until this transaction ends. (One statement for all
  -- its reads: each statement of a batch's path costs its start-up, and
  -- this one runs in every batch; three statements cost ~7 us more.)
  select (select case when q.is_called then q.last_value else 0 end from permgraph.consumer_registrations_seq q) as registered,
         r.seen,
         c.consumers,
         pg_catalog.current_setting('permgraph.registrations_recorded', true) as recorded,
         -- (read only when no consumer is: acknowledgements delete events in
         -- bulk, and a scan of their dead rows would cost every batch until
         -- vacuum came)
         case when c.consumers then false
              else exists (select 1 from permgraph.permission_changes) end as events,
         pg_catalog.current_setting('permgraph.events_recorded', true) as written
  into state
  from permgraph.consumer_registrations r,
       lateral (select exists (select 1 from permgraph.change_consumers) as consumers) c;
  -- Events while this snapshot shows no consumer (events is read only
  -- then), none of them this transaction's: nobody can read them (see the
  -- file comment).
  if state.events and state.written is distinct from 'on' then
    -- (a registration that committed after this snapshot deleted them too:
    -- under REPEATABLE READ that is a serialization failure, which leaves
    -- them to it rather than fail the batch)
    begin
      delete from permgraph.permission_changes;
    exception when serialization_failure then
      null;
    end;
  end if;
  if state.registered is distinct from state.seen then
    update permgraph.consumer_registrations set seen = state.registered;
    -- A later batch of this transaction reads seen as updated here, and
    -- the consumers through the same snapshot, which may not show the
    -- registration: it records too (the setting ends with the transaction,
    -- and with a savepoint rolled back, as the update does). Not needed
    -- under READ COMMITTED, whose every statement sees the consumers.
    if pg_catalog.current_setting('transaction_isolation') <> 'read committed' then
      perform pg_catalog.set_config('permgraph.registrations_recorded', state.registered::text, true);
    end if;
  elsif not state.consumers and state.recorded is distinct from state.seen::text then
    return false;
  end if;
  -- (events of this transaction, which a consumer this snapshot does not
  -- show may be owed: no batch of it deletes them)
  perform pg_catalog.set_config('permgraph.events_recorded', 'on', true);
  perform pg_catalog.pg_notify(permgraph._permission_changes_channel(), '');
  return true;
end $$;

create or replace function permgraph._check_consumer_name(p_name text) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_name is null or p_name !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$' then
    raise exception 'permgraph: a consumer name is 1 to 63 letters, digits, "_", ".", ":" or "-", starting with a letter or digit; got %',
      coalesce('"' || p_name || '"', 'null')
      using errcode = '22023';
  end if;
end $$;

-- A consumer belongs to the login that registered it (owner_oid): only
-- members of that role, and the schema's owner, may register it again, read
-- it through read_changes, acknowledge or drop it, so one application cannot
-- skip or drop another's events. (Its events are no secret: every role may
-- read permission_changes, as it may read permissions.) session_user, as
-- _session_is_owner: these functions run as the schema's owner, and SET
-- ROLE lends no consumer. By oid: a role dropped and created again under
-- the same name is another role, and a renamed one is the same. A consumer
-- from before owners existed (null) is everyone's; one whose role was
-- dropped is left to the schema's owner. One restored from another cluster,
-- before a batch here has adopted it, is its owner's there as the batch
-- will find it (by name after a logical restore, by oid after pg_upgrade:
-- _consumer_owner_here, 048_cluster_identity.sql).
create or replace function permgraph._check_consumer_owner(p_name text, p_owner_oid oid, p_owner_role name) returns void
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  owner_oid oid := p_owner_oid;
begin
  if p_owner_oid is not null and not permgraph._recorded_by_this_server() then
    owner_oid := permgraph._consumer_owner_here(p_owner_oid, p_owner_role, permgraph._stored_oids_foreign());
  end if;
  if owner_oid is null
     or coalesce((select pg_has_role(session_user, r.oid, 'MEMBER') from pg_roles r where r.oid = owner_oid), false)
     or permgraph._session_is_owner() then
    return;
  end if;
  raise exception 'permgraph: change consumer "%" belongs to role %; % may not use it',
    p_name, coalesce((select r.rolname from pg_roles r where r.oid = owner_oid), p_owner_role || ' (dropped)'), session_user
    using errcode = '42501', hint = 'connect as that role (or a member of it), or register a consumer of your own';
end $$;

-- The consumer's acknowledged seq, once the session may use it; an unknown
-- consumer is an error of its own SQLSTATE, 42704 (undefined_object), by
-- which callers tell it from bad input (src/engine/changes.ts).
create or replace function permgraph._consumer_acked_seq(p_name text) returns bigint
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  entry permgraph.change_consumers;
begin
  perform permgraph._check_consumer_name(p_name);
  select c.* into entry from permgraph.change_consumers c where c.consumer = p_name;
  if entry.acked_seq is null then
    raise exception 'permgraph: no change consumer named "%"', p_name
      using errcode = '42704', hint = 'register it first: select permgraph.register_consumer(name)';
  end if;
  perform permgraph._check_consumer_owner(p_name, entry.owner_oid, entry.owner_role);
  return entry.acked_seq;
end $$;

-- The last seq handed out (0 before the first): every event recorded later
-- has a greater one. Read from the sequence, which is not transactional:
-- under the applier lock no batch is numbering events, so every number up
-- to it belongs to a finished transaction.
create or replace function permgraph._last_change_seq() returns bigint
language sql
set search_path = pg_catalog, pg_temp
as $$ select case when s.is_called then s.last_value else 0 end from permgraph.permission_changes_seq s $$;

-- Deletes the events every consumer has acknowledged (all of them when no
-- consumer is left). Run by registrations, acknowledgements and drops;
-- batches delete events only when no consumer is left (see the file
-- comment).
create or replace function permgraph._prune_changes() returns void
language sql
set search_path = pg_catalog, pg_temp
as $$
  delete from permgraph.permission_changes
  where seq <= coalesce((select min(acked_seq) from permgraph.change_consumers), 9223372036854775807)
$$;

-- What registering or dropping a consumer does first: between batches
-- (see the file comment).
create or replace function permgraph._begin_consumers_change(p_name text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform permgraph._check_consumer_name(p_name);
  perform pg_catalog.pg_advisory_xact_lock(permgraph._applier_lock_key());
  -- (consumers restored from another cluster get their owners back first:
  -- 048_cluster_identity.sql)
  perform permgraph._adopt_restored_state();
end $$;

-- Registers a consumer, owned by the session's login, and returns the seq
-- of its snapshot: the table permgraph.permissions as read later in the same
-- transaction (the applier lock taken here is held until commit, so no batch
-- commits in between). Events with a greater seq are what changed since.
-- Idempotent for whoever may use it: an existing consumer keeps its position
-- and gets its acknowledged seq back (folding the events after it into a
-- newer table still gives the current table, since each event carries the
-- row's new value).
create or replace function permgraph.register_consumer(name text) returns bigint
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  acked bigint;
begin
  perform permgraph._begin_consumers_change(register_consumer.name);
  -- A snapshot older than the last batch would not be the table as of the
  -- seq returned: it fails instead (060_apply.sql). An existing consumer's
  -- too: the events after its seq that the stale table lacks may have been
  -- acknowledged, and deleted, by another reader of it meanwhile.
  perform permgraph._refuse_stale_snapshot();
  if exists (select 1 from permgraph.change_consumers c where c.consumer = register_consumer.name) then
    return permgraph._consumer_acked_seq(register_consumer.name);
  end if;
  -- what a batch that cannot see this consumer yet learns it from (see the file comment)
  perform pg_catalog.nextval('permgraph.consumer_registrations_seq');
  acked := permgraph._last_change_seq();
  insert into permgraph.change_consumers (consumer, acked_seq, owner_oid, owner_role)
  select register_consumer.name, acked, r.oid, r.rolname from pg_roles r where r.rolname = session_user;
  -- (events a batch recorded for a consumer dropped meanwhile: see the file comment)
  perform permgraph._prune_changes();
  return acked;
end $$;

-- The consumer's next events, in seq order: after its acknowledged seq, or
-- after after_seq when that is greater (a reader that keeps its own position
-- between acknowledgements). Marks nothing: unacknowledged events are
-- returned again by the next call without after_seq.
create or replace function permgraph.read_changes(name text, max_events integer default 1000, after_seq bigint default null)
returns setof permgraph.permission_changes
language plpgsql stable  -- one snapshot for the position and the events
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  acked bigint := permgraph._consumer_acked_seq(read_changes.name);
begin
  if max_events is null or max_events < 1 or max_events > 1000000 then
    raise exception 'permgraph: max_events must be between 1 and 1000000, got %', coalesce(max_events::text, 'null')
      using errcode = '22023';
  end if;
  return query
    select e.* from permgraph.permission_changes e
    where e.seq > greatest(acked, read_changes.after_seq)
    order by e.seq
    limit max_events;
end $$;

-- Marks the consumer's events up to seq consumed and deletes the events every
-- consumer has now acknowledged. Acknowledging a seq at or below the current
-- position changes nothing (a consumer that crashed after acknowledging
-- acknowledges again); a seq beyond the last recorded event is refused, as
-- it would skip events not yet written.
create or replace function permgraph.ack_changes(name text, seq bigint) returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  acked bigint := permgraph._consumer_acked_seq(ack_changes.name);
  last_event bigint;
begin
  if ack_changes.seq is null then
    raise exception 'permgraph: seq must not be null' using errcode = '22023';
  end if;
  if ack_changes.seq <= acked then
    return;
  end if;
  select e.seq into last_event from permgraph.permission_changes e order by e.seq desc limit 1;
  if last_event is null or ack_changes.seq > last_event then
    raise exception 'permgraph: seq % is beyond the last event recorded (%)', ack_changes.seq, coalesce(last_event, acked)
      using errcode = '22023';
  end if;
  -- greatest: of two concurrent acknowledgements, the further one stays
  update permgraph.change_consumers c set acked_seq = greatest(c.acked_seq, ack_changes.seq), acked_at = now()
  where c.consumer = ack_changes.name;
  perform permgraph._prune_changes();
end $$;

-- Removes a consumer (true if there was one; another role's is refused) and
-- the events no other consumer still needs. With no consumer left, batches
-- record nothing again.
create or replace function permgraph.drop_consumer(name text) returns boolean
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  existed boolean;
begin
  perform permgraph._begin_consumers_change(drop_consumer.name);
  if exists (select 1 from permgraph.change_consumers c where c.consumer = drop_consumer.name) then
    perform permgraph._consumer_acked_seq(drop_consumer.name);  -- refuses another role's consumer
  end if;
  delete from permgraph.change_consumers c where c.consumer = drop_consumer.name;
  existed := found;
  perform permgraph._prune_changes();
  return existed;
end $$;
