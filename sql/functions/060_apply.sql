-- Applying captured changes: the one code path that writes permissions.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- How long until the earliest valid_until after p_at (null: no row expires):
-- the worker's timer, so that an expiry is applied on time with no write and
-- no polling. One probe of the partial index on valid_until.
-- (PL/pgSQL: its plan is cached for the session, where an SQL function
-- with a SET clause is planned at every call. And a generic plan: with its
-- time as a parameter the planner found each custom plan cheaper and
-- re-planned at every batch, 70-200 us, more than the probe; FINDINGS 14.)
create or replace function permgraph._next_expiry_in_ms(p_at timestamptz) returns bigint
language plpgsql stable
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  -- (having: null when no row expires; greatest() skips a null min and
  -- said 0, "now", which made an idle worker poll every millisecond)
  return (select greatest(0, ceil(extract(epoch from min(valid_until) - clock_timestamp()) * 1000))::bigint
          from permgraph.permissions where valid_until > p_at
          having min(valid_until) is not null);
end $$;

-- Rows whose valid_until has passed by p_at: the rows an expiry changes.
-- One probe of the partial index on valid_until, planned once per session
-- (see _next_expiry_in_ms).
create or replace function permgraph._count_expired(p_at timestamptz) returns bigint
language plpgsql stable
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  return (select count(*) from permgraph.permissions where valid_until <= p_at);
end $$;

-- Whether permgraph.permissions has lost its rows: it is empty while the
-- graph has a user whose row on itself a batch has written, one whose
-- identity change (tail and head the user, old_level null: 020_capture.sql)
-- is not pending. A backup restored without the table's data (pg_dump
-- --exclude-table-data, since the table is derived and most of a dump's
-- size), or a truncated table. An incremental batch would then write the
-- rows of its region only (and one that only adds extends the stored rows,
-- of which there are none), leaving every other row missing for good: the
-- batch recomputes the table in full instead, and is_applied holds every
-- token back until it has (080_freshness.sql). Users still pending are no
-- sign: the first user added after every user was deleted finds the table
-- rightly empty, and its own batch writes its rows. Two probes, the second
-- only for an empty table. An SQL-standard body (resolved when created, no
-- SET clause, inlined: see _batch_part): a SET clause cost ~20 us a call,
-- at every batch.
create or replace function permgraph._permissions_missing() returns boolean
language sql stable
return not exists (select 1 from permgraph.permissions)
  and exists (select 1 from permgraph.nodes u
              where u.kind = 'user'
                and not exists (select 1 from permgraph.changes c
                                where c.tail_id = u.id and c.head_id = u.id and c.tail_kind = 'user' and c.old_level is null));

-- Under REPEATABLE READ (or SERIALIZABLE): raises a serialization failure
-- (40001) when a batch or a long job's chunk committed after this
-- transaction's snapshot was taken. Every batch that applied something,
-- and every chunk (apply_job_chunk), ends by updating applier_state's one
-- row, and locking a row that a transaction the snapshot cannot see has
-- updated fails so. A lock, not an update: a batch
-- that updates the row after this transaction commits does not fail. FOR
-- SHARE: FOR KEY SHARE follows an update of other columns quietly. Under
-- READ COMMITTED every statement reads a fresh snapshot: nothing to do.
-- Called by a batch (_begin_applying) and by a consumer's registration
-- (register_consumer, 170_changes.sql), each after taking the applier lock.
create or replace function permgraph._refuse_stale_snapshot() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if current_setting('transaction_isolation') <> 'read committed' then
    perform from permgraph.applier_state for share;
  end if;
end $$;

-- Locks p_tables in p_mode without ever waiting for one while it holds
-- another. LOCK TABLE a, b takes its tables one after the other, and
-- holding a while it waited for b deadlocked with a transaction that held b
-- and then wanted a: a batch under READ COMMITTED, locking writers out of
-- nodes and grants, against a writer whose open transaction had written a
-- grant and then wrote a node. PostgreSQL aborted one of the two, the
-- writer's transaction as likely as the batch
-- (test/worker/concurrent-writers.test.ts found it). So this waits for one
-- table, and takes the others only if they are free at once (NOWAIT); when
-- one is not, the block's subtransaction ends, and the locks taken in it
-- with it, and it waits for the next table first, in turn. A lock_timeout
-- of the session still ends a wait with its error. Used by batches under
-- READ COMMITTED (_begin_applying) and by imports (src/app/import/load.ts).
-- p_with_turn: the applier's turn (applier_turn in EXCLUSIVE mode, see
-- _begin_applying) is one more lock of the set, for an import that
-- refreshes after its load. Taken at its refresh, after the tables, it
-- deadlocked with a batch that held the turn and waited for the import's
-- tables: a READ COMMITTED batch locking writers out, or, beside an
-- exclusive import, any batch that reads the graph (bench/FINDINGS.md 62).
drop function if exists permgraph._lock_tables_in_turn(regclass[], text);
create or replace function permgraph._lock_tables_in_turn(p_tables regclass[], p_mode text, p_with_turn boolean default false)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  tables regclass[] := p_tables;
  modes text[] := array_fill(p_mode, array[cardinality(p_tables)]);
  first integer := 1;
  -- (a plpgsql variable is not undone by the block's rollback)
  waited boolean;
begin
  if p_mode is null or p_mode not in ('share', 'share row exclusive', 'access exclusive') then
    raise exception 'permgraph: _lock_tables_in_turn takes share, share row exclusive or access exclusive, not %', p_mode
      using errcode = '22023';
  end if;
  if p_with_turn then
    tables := tables || 'permgraph.applier_turn'::regclass;
    modes := modes || 'exclusive'::text;
  end if;
  loop
    waited := false;
    begin
      execute format('lock table %s in %s mode', tables[first], modes[first]);
      waited := true;
      for i in 1 .. cardinality(tables) loop
        if i <> first then
          execute format('lock table %s in %s mode nowait', tables[i], modes[i]);
        end if;
      end loop;
      return;
    exception when lock_not_available then
      if not waited then
        raise;
      end if;
    end;
    first := first % cardinality(tables) + 1;
  end loop;
end $$;

-- What every transaction that writes permissions does first (apply_changes,
-- apply_job_chunk): take the applier lock, so batches and chunks run one at a
-- time; under READ COMMITTED lock writers out, since each statement would
-- otherwise read a newer graph (under REPEATABLE READ, the worker's choice,
-- the snapshot does it and writers never wait); adopt a state restored from
-- another cluster (048_cluster_identity.sql); refuse a time in the past,
-- which would write rows that reads already treat as expired, and a time
-- ahead of the clock unless the schema's owner asks (above). Returns the
-- time the batch computes the graph at: p_at, or the clock once the lock is
-- held.
-- Under REPEATABLE READ the snapshot was taken before the lock was waited
-- for, so another session's batch may have committed meanwhile (an
-- application applying on its pool while the worker runs). Such a batch
-- would redo changes already applied against a table it cannot see: it
-- failed at its first conflicting write, often a unique violation (23505),
-- which is no serialization failure, so the worker logged an error and
-- waited a second. _refuse_stale_snapshot fails it at once with 40001,
-- which callers retry at once.
-- The applier's turn. A retry can be stale the same way, and behind a long
-- job whose chunks ran back to back every retry of an application's batch
-- was (bench/FINDINGS.md 59). So a batch first takes the turn, a lock of
-- the table applier_turn in EXCLUSIVE mode, then the applier lock. LOCK
-- TABLE takes no snapshot, so a REPEATABLE READ transaction that begins
-- with it (the library's batches and chunks: src/engine/applier-turn.ts)
-- waits for its turn first and takes its snapshot after the batch before
-- it has committed; the lock taken here again is then its own. Every
-- batch takes the turn, the local path's in _changes_begin_write
-- (170_changes.sql), and always before the applier lock;
-- register_consumer and drop_consumer take only the applier lock and
-- write no applier_state. So no call of permgraph's waits for the turn
-- while it holds the applier lock (the two cannot deadlock, unless one
-- transaction registers a consumer and then applies), and no batch commits
-- between such a snapshot and its batch. EXCLUSIVE, not ACCESS EXCLUSIVE:
-- a pg_dump's read of the table does not wait for a batch, nor a batch for
-- the dump.
create or replace function permgraph._begin_applying(p_caller text, p_at timestamptz) returns timestamptz
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  lock table permgraph.applier_turn in exclusive mode;
  perform pg_advisory_xact_lock(permgraph._applier_lock_key());
  if current_setting('transaction_isolation') = 'read committed' then
    perform permgraph._lock_tables_in_turn(array['permgraph.nodes', 'permgraph.grants']::regclass[], 'share');
  end if;
  perform permgraph._refuse_stale_snapshot();
  perform permgraph._adopt_restored_state();
  if p_at < now() then
    raise exception 'permgraph: %(p_at => %) is in the past; it must not be earlier than now() (%)', p_caller, p_at, now()
      using errcode = '22023';
  end if;
  if p_at > clock_timestamp() and not permgraph._session_is_owner() then
    raise exception 'permgraph: %(p_at => %) is ahead of the clock; only the owner of schema permgraph may compute the table for a later moment (% may not)',
      p_caller, p_at, session_user
      using errcode = '42501',
            hint = 'to end a grant early, set its valid_until; a batch ahead of time leaves out rows that are still valid until refresh() puts them back';
  end if;
  return coalesce(p_at, clock_timestamp());
end $$;

-- Milliseconds since p_started, to the microsecond: the ms of every
-- batch's and chunk's result. An SQL-standard body with no SET clause (its
-- names resolved when it was created), inlined into the statements that
-- call it: with a SET clause it was planned at every batch on PostgreSQL
-- 14-17 (bench/FINDINGS.md 36).
create or replace function permgraph._ms_since(p_started timestamptz) returns numeric
language sql volatile
return round((extract(epoch from clock_timestamp() - p_started) * 1000)::numeric, 3);

-- The change rows of the current batch (_batch_changes) go: it applied
-- them. By the low-water mark's index (045_batch_split.sql).
create or replace function permgraph._delete_batch_changes() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
set enable_seqscan = off
as $$
begin
  delete from permgraph._batch_changes;
end $$;

-- The end of every batch the ordinary path applied (the local statements
-- end theirs themselves, 055_local_change.sql): the change rows this
-- snapshot saw (or all, with writers locked out) are applied, so they go,
-- and deleted nodes' rows are gone too (while a job runs, its users may
-- still hold rows of deleted nodes); the batch's figures are recorded and
-- returned.
create or replace function permgraph._end_batch(p_started timestamptz, p_batch_at timestamptz, p_mode text,
  p_delta boolean, p_pending bigint, p_expired bigint, p_pairs bigint, p_to_job bigint,
  p_deferred bigint, p_inserted bigint, p_updated bigint, p_deleted bigint) returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  job_active boolean;
  part text;
  result jsonb;
  -- (taken before the rows go: see the low-water mark, _batch_changes in 045_batch_split.sql)
  low_water xid8 := pg_snapshot_xmin(pg_current_snapshot());
begin
  part := permgraph._batch_part();
  if p_mode = 'full' then
    -- (every row: a full recomputation read none of them)
    delete from permgraph.changes;
  else
    -- the batch's rows, or its part of a split queue (045_batch_split.sql):
    -- the rest stays pending. Through the view (a filter of changes, so
    -- automatically updatable): one scan. A semi-join of changes with
    -- itself was planned from the queue's statistics, and with those of an
    -- empty queue it nested loops: 11 s to delete 4,000 rows
    -- (bench/FINDINGS.md, finding 23).
    perform permgraph._delete_batch_changes();
  end if;
  perform pg_catalog.set_config('permgraph.batch_part', '', true);
  -- (nothing below starts or ends a job)
  job_active := permgraph._long_job_active();
  if job_active then
    perform permgraph._record_tombstone_waits();
    perform permgraph._prune_deleted_nodes();
  else
    delete from permgraph.deleted_nodes;
  end if;
  result := permgraph._batch_result(p_mode, p_delta, false, p_pending, p_expired, p_pairs, p_to_job, p_deferred,
                                    job_active, p_inserted, p_updated, p_deleted, permgraph._ms_since(p_started),
                                    permgraph._next_expiry_in_ms(p_batch_at))
            -- (one part of a split queue: the rest is pending, to apply next)
            || jsonb_build_object('more_pending', part <> '');
  update permgraph.applier_state set
    last_batch_at = now(), last_batch_mode = p_mode, last_batch_changes = p_pending,
    last_batch_ms = (result ->> 'ms')::double precision,
    rows_inserted = p_inserted, rows_updated = p_updated, rows_deleted = p_deleted,
    last_batch_part = nullif(part, ''),  -- which part the next split takes (045_batch_split.sql)
    -- the whole queue is applied: the mark rises (a part leaves it)
    queue_low_water = case when part = '' then low_water else queue_low_water end,
    last_batch_snapshot = pg_current_snapshot();  -- what is_applied() reads: see 080_freshness.sql
  return result;
end $$;

-- apply_changes' result when nothing is pending and no row has expired
-- by p_at: no batch, nothing written (apply_local_changes gives it too).
create or replace function permgraph._nothing_to_apply(p_at timestamptz) returns jsonb
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return jsonb_build_object('mode', 'none', 'changes', 0, 'expired', 0,
                            'next_expiry_in_ms', permgraph._next_expiry_in_ms(p_at),
                            'long_job_active', permgraph._long_job_active());
end $$;

-- Applies every pending change visible to this transaction, as one batch,
-- and marks them done. This is the only code path that writes permissions:
-- the worker, refresh() and tests all come through here. (In the worker's
-- session a large mixed queue is split: its removals now, the rest next,
-- with more_pending true in the result; 045_batch_split.sql.)
--
-- Consistency: the batch and the graph must be read from the same state.
-- Under REPEATABLE READ (what the worker uses) the snapshot guarantees it and
-- writers are never blocked. Under READ COMMITTED every statement sees a new
-- snapshot, so nodes and grants are locked in SHARE mode for the duration
-- (writers wait; readers do not).
--
-- p_max_changes: more pending changes than this are applied by a full
-- recomputation instead. p_max_pairs: likewise for a larger affected region
-- (default: a quarter of the table, at least 50,000 pairs).
--
-- p_chunk_pairs (null: off, the default): a pending change whose own region
-- is larger than this is moved into a long job, applied in chunks of about
-- this many pairs by apply_job_chunk() while later batches apply the other
-- changes (design and correctness argument: 065_long_job.sql). While a job
-- runs, every batch, whatever its p_chunk_pairs, keeps the tokens of changes
-- that touch the job's users waiting for it.
--
-- p_local_pairs (null: _local_change_pairs(), 0: off): a batch of at most
-- _local_change_max_changes() changes (the queue, or in a worker session
-- the part of it a split takes), with no expiry, full recomputation
-- or long job involved, whose region (or, when it only adds, whose rows
-- that rise) is at most this many pairs, is applied by one statement
-- (055_local_change.sql); otherwise it falls back to the path below.
--
-- Expiring grants: the batch computes the graph as of p_at (default: the
-- clock once the lock is held), leaving out every grant expired by then, and
-- adds to its region every row whose valid_until has passed: those rows are
-- exactly the ones an expiry can change (any other row stays right until its
-- valid_until, by definition). An earlier p_at is refused, since it would
-- write rows that reads already treat as expired. A later one applies
-- expiries ahead of time, which leaves out rows still valid now, and later
-- batches do not put them back (only what changes or expires is
-- recomputed): a tool for tests, the schema owner's alone (_begin_applying).
create or replace function permgraph.apply_changes(
  p_max_changes integer default 100000,  -- = DEFAULT_MAX_BATCH in src/engine/apply.ts
  p_max_pairs bigint default null,
  p_force_full boolean default false,
  p_at timestamptz default null,
  p_chunk_pairs bigint default null,
  p_local_pairs bigint default null
) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  started timestamptz := clock_timestamp();
  pending bigint;
  needs_full boolean;
  adds_only boolean;
  mode text;
  trash_roots text[];
  batch_at timestamptz;
  expired bigint := 0;
  pairs bigint := null;
  delta boolean := false;
  go_full boolean;
  diff record;
  max_pairs bigint := p_max_pairs;
  to_job bigint := 0;
  deferred bigint := 0;
  local_pairs bigint := coalesce(p_local_pairs, permgraph._local_change_pairs());
  local_result jsonb;
  local_pending bigint;
  rows_missing boolean;
begin
  batch_at := permgraph._begin_applying('apply_changes', p_at);
  -- (the whole queue unless _split_batch says otherwise; never a caller's setting)
  perform pg_catalog.set_config('permgraph.batch_part', '', true);
  -- (counted up to the limit: more is a backlog, read whole by what takes it)
  select p.pending, p.needs_full, p.adds_only into pending, needs_full, adds_only
  from permgraph._pending_changes(p_max_changes) p;
  -- (an empty table under a graph with users: a full recomputation, pending changes or not)
  rows_missing := permgraph._permissions_missing();
  -- (not while a long job runs: the local statements decline its batches,
  -- which must defer the changes that touch its users, but only once
  -- started, ~0.7 ms of a one-change batch's ~2.4 on org large:
  -- bench/FINDINGS.md 57)
  if pending between 1 and p_max_changes and local_pairs > 0 and not p_force_full and not needs_full and not rows_missing
     and not permgraph._long_job_active() then
    -- (a worker session's split first: its part may fit the local path;
    -- 045_batch_split.sql)
    local_pending := coalesce(permgraph._split_batch(pending), pending);
    if local_pending <= least(p_max_changes, permgraph._local_change_max_changes()) then
      -- (the batch, its end and its result in one statement; null: it did
      -- not fit. A batch it takes has no expiry, so expired = 0, and no job
      -- runs; a region within p_chunk_pairs holds no change a job would take)
      -- (a queue that only adds has parts that only add)
      local_result := permgraph._apply_local_path(p_max_changes, least(local_pairs, p_chunk_pairs, p_max_pairs), started, adds_only);
      if local_result is not null then
        -- (one part of a split queue: the rest is pending, to apply next)
        local_result := local_result || jsonb_build_object('more_pending', permgraph._batch_part() <> '');
        perform pg_catalog.set_config('permgraph.batch_part', '', true);
        return local_result;
      end if;
    end if;
    -- (the ordinary path takes the whole queue, and splits it on its own terms)
    perform pg_catalog.set_config('permgraph.batch_part', '', true);
  end if;
  expired := permgraph._count_expired(batch_at);
  if pending = 0 and expired = 0 and not p_force_full and not rows_missing then
    return permgraph._nothing_to_apply(batch_at);
  end if;
  if max_pairs is null then
    select greatest(50000, (reltuples * 0.25)::bigint) into max_pairs
    from pg_class where oid = 'permgraph.permissions'::regclass;
  end if;
  go_full := p_force_full or needs_full or rows_missing or expired > max_pairs;
  if not go_full and pending > p_max_changes then
    if p_chunk_pairs is null then
      go_full := true;
    else
      -- a backlog: recomputed in chunks, while later changes flow
      -- (065_long_job.sql); unless a change in it asks for a full
      -- recomputation, which only that read of the whole queue sees
      select b.taken, b.seen into to_job, pending from permgraph._backlog_to_long_job(p_chunk_pairs) b;
      if to_job is null then
        go_full := true;
        to_job := 0;
      end if;
    end if;
  end if;
  if not go_full and p_chunk_pairs is not null and to_job = 0 then
    to_job := permgraph._split_off_long_job(p_chunk_pairs);
  end if;
  if not go_full and permgraph._long_job_active() then
    deferred := permgraph._defer_overlapping_changes();
  end if;
  if not go_full and expired = 0 and not permgraph._long_job_active() then
    -- a large queue of removals and additions: one kind now, the other next (045_batch_split.sql)
    pending := coalesce(permgraph._split_batch(pending), pending);
  end if;
  if not go_full and expired = 0 and permgraph._batch_only_adds() then
    delta := true;  -- semi-naive: only the rows that rise are computed (050_region.sql)
  elsif not go_full and not permgraph._build_region(max_pairs - expired) then
    if p_chunk_pairs is null then
      go_full := true;
    else
      -- a backlog whose region is too large: as above, the whole queue
      perform pg_catalog.set_config('permgraph.batch_part', '', true);
      select p.pending into pending from permgraph._pending_changes() p;
      -- (no '*' is pending: the count above, not capped then, saw none)
      to_job := to_job + (select b.taken from permgraph._backlog_to_long_job(p_chunk_pairs) b);
      -- (what is left to the batch: trash flags, and rows that expired)
      perform permgraph._prepare_region_tables();
    end if;
  end if;
  if go_full then
    mode := 'full';
    -- (the region was too large: the whole queue, then; or the count
    -- stopped at the limit: the result says how many it took)
    if permgraph._batch_part() <> '' or pending > p_max_changes then
      perform pg_catalog.set_config('permgraph.batch_part', '', true);
      select p.pending into pending from permgraph._pending_changes() p;
    end if;
    select * into diff from permgraph._write_all(batch_at);
    perform permgraph._end_long_job('full');  -- every row is recomputed: a running job is done
    perform permgraph._refresh_trash(null);
  else
    mode := 'incremental';
    if delta then
      select * into diff from permgraph._write_additions(permgraph._changes_begin_write());
      pairs := diff.pairs;
    else
      if expired > 0 then
        insert into pg_temp.permgraph_region (user_id, target_id)
        select user_id, target_id from permgraph.permissions where valid_until <= batch_at
        on conflict do nothing;
        if expired > 200 then  -- (see _build_region)
          analyze pg_temp.permgraph_region;
        end if;
      end if;
      select count(*) into pairs from pg_temp.permgraph_region;
      if pairs > 0 then
        perform permgraph._compute_region(batch_at);
        select * into diff from permgraph._write_diff(true);
      else
        select 0::bigint as inserted, 0::bigint as updated, 0::bigint as deleted into diff;
      end if;
    end if;
    trash_roots := permgraph._batch_trash_roots();
    if trash_roots is not null then
      perform permgraph._refresh_trash(trash_roots);
    end if;
  end if;
  return permgraph._end_batch(started, batch_at, mode, delta, pending, expired, pairs, to_job, deferred,
                              diff.inserted, diff.updated, diff.deleted);
end $$;

-- Recomputes the whole table (writing only differences) and marks every
-- pending change done. Readers see the old rows until commit, never an empty
-- or half-built table.
create or replace function permgraph.refresh() returns jsonb
language sql
security definer
set search_path = pg_catalog, pg_temp
set jit = off
-- (Defined after apply_changes: creating it checks its body.)
as $$ select permgraph.apply_changes(p_force_full => true) $$;
