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
  return (select greatest(0, ceil(extract(epoch from min(valid_until) - clock_timestamp()) * 1000))::bigint
          from permgraph.permissions where valid_until > p_at);
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

-- What every transaction that writes permissions does first (apply_changes,
-- apply_job_chunk): take the applier lock, so batches and chunks run one at a
-- time; under READ COMMITTED lock writers out, since each statement would
-- otherwise read a newer graph (under REPEATABLE READ, the worker's choice,
-- the snapshot does it and writers never wait); refuse a time in the past,
-- which would write rows that reads already treat as expired. Returns the
-- time the batch computes the graph at: p_at, or the clock once the lock is
-- held.
create or replace function permgraph._begin_applying(p_caller text, p_at timestamptz) returns timestamptz
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform pg_advisory_xact_lock(permgraph._applier_lock_key());
  if current_setting('transaction_isolation') = 'read committed' then
    lock table permgraph.nodes, permgraph.grants in share mode;
  end if;
  if p_at < now() then
    raise exception 'permgraph: %(p_at => %) is in the past; it must not be earlier than now() (%)', p_caller, p_at, now()
      using errcode = '22023';
  end if;
  return coalesce(p_at, clock_timestamp());
end $$;

-- Applies every pending change visible to this transaction, as one batch,
-- and marks them done. This is the only code path that writes permissions:
-- the worker, refresh() and tests all come through here.
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
-- Expiring grants: the batch computes the graph as of p_at (default: the
-- clock once the lock is held), leaving out every grant expired by then, and
-- adds to its region every row whose valid_until has passed: those rows are
-- exactly the ones an expiry can change (any other row stays right until its
-- valid_until, by definition). A later p_at applies expiries ahead of time
-- (tests; an operator revoking early); an earlier one is refused, since it
-- would write rows that reads already treat as expired.
create or replace function permgraph.apply_changes(
  p_max_changes integer default 100000,  -- = DEFAULT_MAX_BATCH in src/engine/apply.ts
  p_max_pairs bigint default null,
  p_force_full boolean default false,
  p_at timestamptz default null,
  p_chunk_pairs bigint default null
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
  job_active boolean;
  result jsonb;
begin
  batch_at := permgraph._begin_applying('apply_changes', p_at);
  select count(*), coalesce(bool_or(tail_kind = '*'), false) into pending, needs_full from permgraph.changes;
  expired := permgraph._count_expired(batch_at);
  if pending = 0 and expired = 0 and not p_force_full then
    return jsonb_build_object('mode', 'none', 'changes', 0, 'expired', 0,
                              'next_expiry_in_ms', permgraph._next_expiry_in_ms(batch_at),
                              'long_job_active', permgraph._long_job_active());
  end if;
  if max_pairs is null then
    select greatest(50000, (reltuples * 0.25)::bigint) into max_pairs
    from pg_class where oid = 'permgraph.permissions'::regclass;
  end if;
  go_full := p_force_full or needs_full or pending > p_max_changes or expired > max_pairs;
  if not go_full and p_chunk_pairs is not null then
    to_job := permgraph._split_off_long_job(p_chunk_pairs);
  end if;
  if not go_full and permgraph._long_job_active() then
    deferred := permgraph._defer_overlapping_changes();
  end if;
  if not go_full and expired = 0 and permgraph._batch_only_adds() then
    delta := true;  -- semi-naive: only the rows that rise are computed (050_region.sql)
  elsif not go_full then
    go_full := not permgraph._build_region(max_pairs - expired);
  end if;
  if go_full then
    mode := 'full';
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
      end if;
    end if;
    if delta then
      null;  -- written by _write_additions
    elsif pairs > 0 then
      select * into diff from permgraph._write_diff(true);
    else
      select 0::bigint as inserted, 0::bigint as updated, 0::bigint as deleted into diff;
    end if;
    select array_agg(distinct head_id) into trash_roots from permgraph.changes where trash_changed;
    if trash_roots is not null then
      perform permgraph._refresh_trash(trash_roots);
    end if;
  end if;
  -- Exactly the rows this snapshot saw (or all, with writers locked out):
  -- their changes are applied, so deleted nodes' rows are gone too.
  -- (While a job runs, its users may still hold rows of deleted nodes.)
  delete from permgraph.changes;
  job_active := permgraph._long_job_active();  -- (nothing below starts or ends one)
  if job_active then
    perform permgraph._prune_deleted_nodes();
  else
    delete from permgraph.deleted_nodes;
  end if;
  result := jsonb_build_object(
    'mode', mode, 'delta', delta, 'changes', pending, 'expired', expired, 'region_pairs', pairs,
    'to_long_job', to_job, 'deferred', deferred, 'long_job_active', job_active,
    'inserted', diff.inserted, 'updated', diff.updated, 'deleted', diff.deleted,
    'ms', round((extract(epoch from clock_timestamp() - started) * 1000)::numeric, 3),
    'next_expiry_in_ms', permgraph._next_expiry_in_ms(batch_at));
  update permgraph.applier_state set
    last_batch_at = now(), last_batch_mode = mode, last_batch_changes = pending,
    last_batch_ms = (result ->> 'ms')::double precision,
    rows_inserted = diff.inserted, rows_updated = diff.updated, rows_deleted = diff.deleted,
    last_batch_snapshot = pg_current_snapshot();  -- what is_applied() reads: see 080_freshness.sql
  return result;
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
