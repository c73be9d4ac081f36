-- Freshness tokens and status.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- Freshness tokens. A token is the writing transaction's id (xid8: 64 bits,
-- epoch included, so comparisons never wrap around). The token T is applied,
-- as seen by a reader's snapshot, when no captured change of T waits
-- (_unapplied_changes: in the queue, or held by a long job until it has
-- recomputed the users the change touches, 065_long_job.sql),
-- the table has its rows (not emptied by a restore without them:
-- _permissions_missing, 060_apply.sql) and T is known to be finished:
--   * T is visible in the snapshot the last batch applied
--     (applier_state.last_batch_snapshot, recorded by apply_changes in this
--     cluster: 048_cluster_identity.sql): that
--     batch saw T's changes and applied them in the same transaction that
--     recorded it. A writer that commits late (running when the batch took
--     its snapshot) is not visible in it, whatever its id: a later batch
--     takes it. Read from a standby's replayed state, this says "the standby
--     has replayed the batch that applied T", and nothing earlier.
--   * or the reader itself sees T finished, so that a transaction with
--     nothing captured (or a batch not yet run since the upgrade) needs no
--     batch: on the primary, T visible in the reader's snapshot; on a
--     standby, T older than its snapshot's xmin (there, pg_current_snapshot()
--     lists no running transactions, but every id below its xmin has its end
--     replayed).
-- Both parts and the change rows are read in one snapshot (this function is
-- stable: the caller's), so a T that commits while it runs is never judged
-- by half-old data.

-- Every captured change whose token is not applied yet: the queue
-- (held_by 'queue'), and what a running long job holds (065_long_job.sql):
-- its backlog, left in the queue, until a chunk releases the change's tail
-- ('backlog'), the changes it took out of the queue ('job') and those
-- applied meanwhile that wait for its users ('deferred'). What is_applied,
-- status, doctor and the worker's metrics count.
create or replace view permgraph._unapplied_changes as
  select c.id as change_id, c.xact_id, c.tail_id, c.captured_at,
         case when permgraph._in_backlog(c.xact_id, b.snapshot) then 'backlog' else 'queue' end as held_by
  from permgraph.changes c
  cross join (select (select j.backlog_snapshot from permgraph.long_job j) as snapshot) b
  where not (permgraph._in_backlog(c.xact_id, b.snapshot)
             and exists (select 1 from permgraph.long_job_backlog_tails t where t.tail_id = c.tail_id and t.released))
  union all
  select d.change_id, d.xact_id, d.tail_id, d.captured_at, case when d.deferred then 'deferred' else 'job' end
  from permgraph.long_job_changes d;

-- The token of the changes the current transaction has made. Only for a
-- writing transaction on the primary: a standby has no transaction ids.
create or replace function permgraph.current_token() returns text
language plpgsql volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if pg_is_in_recovery() then
    raise exception 'permgraph: current_token() names a writing transaction on the primary; this server is a standby (is_applied works here)'
      using errcode = '25006';
  end if;
  return pg_current_xact_id()::text;
end $$;

create or replace function permgraph.is_applied(p_token text) returns boolean
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  xact xid8;
begin
  -- A token is current_token()'s text: a transaction id in decimal digits.
  -- Checked here rather than left to the cast: before PostgreSQL 16 the
  -- input of xid8 took any text as a number ('not-a-token' read as 0, so
  -- applied; '12abc' as 12; '-5' wrapped around).
  if p_token !~ '^[0-9]{1,20}$' or p_token::numeric > 18446744073709551615 then
    raise exception 'permgraph: "%" is not a freshness token (expected a transaction id)', p_token
      using errcode = '22023';
  end if;
  xact := p_token::xid8;
  -- (a table whose rows are missing reflects no token until the batch that
  -- recomputes it: 060_apply.sql)
  return not permgraph._permissions_missing()
    -- (pending, or held by a long job: 065_long_job.sql)
    and not exists (select 1 from permgraph._unapplied_changes where xact_id = xact)
    -- (a snapshot of this cluster's: one restored from another holds other
    -- transaction ids, 048_cluster_identity.sql)
    and (coalesce((select pg_visible_in_snapshot(xact, s.last_batch_snapshot) from permgraph.applier_state s
                   where permgraph._home_cluster()), false)
         or case when pg_is_in_recovery() then xact < pg_snapshot_xmin(pg_current_snapshot())
                 else pg_visible_in_snapshot(xact, pg_current_snapshot()) end);
end $$;

-- The advisory lock key a worker holds (session-level) while it is the
-- single active applier; standbys poll for it.
create or replace function permgraph._applier_role_key() returns bigint
language sql immutable
set search_path = pg_catalog, pg_temp
as $$ select 7238001003::bigint $$;

-- The change stream's consumers (170_changes.sql), by name: whose each is,
-- how far it has acknowledged, how far behind it is and how old the oldest
-- event waiting for it is. Events are kept for a consumer however old, so an
-- abandoned one makes permission_changes grow: status, doctor and the
-- worker's metrics show it. The lag is in seqs, as a message broker's
-- consumer lag is in offsets: the last seq numbered minus the acknowledged
-- one, an upper bound of the events waiting (rolled-back batches leave
-- numbers unused), read from the sequence; counting the events instead
-- costs a scan of every one, seconds for an abandoned consumer's millions,
-- at every status, doctor and scrape. Both figures are one probe each.
-- Defined here, before status(), which includes it. Security definer for
-- the sequence, which no role may read itself.
create or replace function permgraph.change_stream_status() returns jsonb
language sql stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(jsonb_agg(jsonb_build_object(
           'consumer', c.consumer, 'owner_role', coalesce(r.rolname, c.owner_role), 'registered_at', c.registered_at,
           'acked_seq', c.acked_seq, 'acked_at', c.acked_at,
           'lag_events', greatest(last.seq - c.acked_seq, 0),
           'oldest_waiting_age_s', (select extract(epoch from now() - e.committed_at) from permgraph.permission_changes e
                                    where e.seq > c.acked_seq order by e.seq limit 1))
         order by c.consumer), '[]'::jsonb)
  from permgraph.change_consumers c
  left join pg_roles r on r.oid = c.owner_oid
  cross join (select case when s.is_called then s.last_value else 0 end as seq from permgraph.permission_changes_seq s) last
$$;

create or replace function permgraph.status() returns jsonb
language sql stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  -- The applier's locks, held or waited for: the role's (the active
  -- worker's advisory lock, session-level) and a batch's (transaction-level:
  -- the advisory applier lock, and the applier's turn, the table lock a
  -- batch takes before it: 060_apply.sql), read from pg_locks once for the
  -- entries below.
  with applier_lock_entries as (
    select l.pid, l.granted, l.waitstart,
           case when l.locktype = 'advisory' and ((l.classid::bigint << 32) | l.objid::bigint) = permgraph._applier_role_key()
                then 'role' else 'batch' end as lock
    from pg_locks l
    where l.database = (select oid from pg_database where datname = current_database())
      and ((l.locktype = 'advisory' and l.objsubid = 1
            and ((l.classid::bigint << 32) | l.objid::bigint) in (permgraph._applier_role_key(), permgraph._applier_lock_key()))
           -- (a reader's share of the table, a pg_dump's, is no turn)
           or (l.locktype = 'relation' and l.relation = 'permgraph.applier_turn'::regclass and l.mode = 'ExclusiveLock'))
  ),
  -- the sessions holding them (a batch holds both of its locks: one entry),
  -- and whether each may apply changes
  applier_locks as (
    select distinct on (a.pid, k.lock)
           a.pid, a.usename, a.application_name, a.client_addr, a.backend_start, a.xact_start, a.state, a.state_change, k.lock,
           has_function_privilege(a.usesysid, 'permgraph._applier_role_key()', 'execute') as may_apply
    from applier_lock_entries k
    join pg_stat_activity a on a.pid = k.pid
    where k.granted
  ),
  -- since when a session (a worker's batch, say) has waited for a batch's
  -- lock: pg_locks shows every session's waits to every login (PostgreSQL
  -- 14+), where pg_stat_activity hides other logins' states from an owner
  -- without pg_read_all_stats
  batch_wait as (
    select min(k.waitstart) as since from applier_lock_entries k where not k.granted and k.lock = 'batch'
  ),
  -- what waits, in one read (a backlog a long job holds is a million rows)
  waiting as (
    select count(*) filter (where w.held_by = 'queue') as queued,
           min(w.captured_at) filter (where w.held_by = 'queue') as oldest_queued,
           min(w.captured_at) filter (where w.held_by <> 'queue') as oldest_held
    from permgraph._unapplied_changes w
  )
  select jsonb_build_object(
    'pending_changes', (select w.queued from waiting w),
    'oldest_pending_age_s', (select extract(epoch from now() - w.oldest_queued) from waiting w),
    -- the oldest change a running long job holds (its backlog's, its own,
    -- and those deferred behind it): out of the batches' queue, but its
    -- token waits until a chunk lets it go (065_long_job.sql); null when none
    'long_job_oldest_change_age_s', (select extract(epoch from now() - w.oldest_held) from waiting w),
    'last_batch', (select to_jsonb(s) - 'singleton' from permgraph.applier_state s),
    -- whoever holds the applier role (may_apply false: a session that may
    -- not apply changes took its advisory lock, which any login can, and
    -- every worker waits as a standby)
    'worker', (select jsonb_build_object('pid', h.pid, 'application_name', h.application_name,
                                         'client_addr', h.client_addr, 'since', h.backend_start,
                                         'role', h.usename, 'may_apply', h.may_apply)
               from applier_locks h where h.lock = 'role'
               limit 1),
    -- Sessions holding the applier role's or a batch's advisory lock that
    -- batches wait for: any that may not apply changes (a transaction
    -- registering or dropping a change consumer holds the batch lock until
    -- it commits, as it must; one left open, or any login taking either
    -- key, stalls the worker), and any other than the active worker that
    -- holds a batch's lock while idle in its transaction, or while another
    -- session has waited for that lock, for over a second (an operator's
    -- psql left open after apply_changes(), say). The worker's own gaps
    -- between statements are a round trip: a second is far past them.
    'blocking_sessions', coalesce((
      select jsonb_agg(jsonb_build_object('pid', h.pid, 'role', h.usename, 'application_name', h.application_name,
                                          'lock', h.lock, 'state', h.state, 'since', coalesce(h.xact_start, h.backend_start),
                                          'may_apply', h.may_apply)
                       order by h.pid)
      from applier_locks h
      where not h.may_apply
         or (h.lock = 'batch'
             and not exists (select 1 from applier_locks r where r.lock = 'role' and r.pid = h.pid)
             and ((h.state like 'idle in transaction%' and h.state_change < statement_timestamp() - interval '1 second')
                  or (select w.since from batch_wait w) < statement_timestamp() - interval '1 second'))),
      '[]'::jsonb),
    'permission_rows', (select count(*) from permgraph.permissions),
    -- empty under a graph with users: restored without its rows, or
    -- truncated; the next batch recomputes it in full (060_apply.sql)
    'permissions_missing', permgraph._permissions_missing(),
    -- the running long job, or the last one (finished_at set); null if none yet
    'long_job', (select to_jsonb(j) - 'singleton' - 'deferred_rounds' - 'backlog_snapshot' - 'backlog_max_id' - 'backlog_cleared_to'
                        || jsonb_build_object('users_remaining', (select count(*) from permgraph.long_job_users))
                 from permgraph.long_job j),
    'change_consumers', permgraph.change_stream_status(),
    -- a logical backup of another cluster restored here, which no batch has
    -- adopted yet (048_cluster_identity.sql)
    'restored_from_another_cluster', coalesce(permgraph._home_cluster() is false, false)
  )
$$;
