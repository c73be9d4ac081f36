-- The cluster the stored state belongs to (permgraph.cluster_identity,
-- migration 049), and its adoption after a restore into another cluster.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).
--
-- What a logical backup (pg_dump, restored by pg_restore) carries that only
-- its cluster can read:
--   * the change queue's low-water mark (applier_state.queue_low_water,
--     045_batch_split.sql), a transaction id. Restored into a cluster whose
--     transaction ids are behind (a fresh one's start at a few hundred), it
--     lies above every change written there, and a batch that reads the
--     queue from it finds none of them: they stay pending, and the next
--     batch's mark, taken in the new cluster, passes below them for good.
--   * the last batch's snapshot (applier_state.last_batch_snapshot), of
--     that cluster's transaction ids, which is_applied reads
--     (080_freshness.sql).
--   * each change consumer's owner (change_consumers.owner_oid), a role's
--     oid (170_changes.sql): in another cluster the role of that name has
--     another oid, and the oid may be another role's.
-- A physical copy (a standby, pg_basebackup, a promoted standby) is the
-- same cluster: same system identifier, same transaction ids and oids.

-- The row of cluster_identity also holds the start time of the server
-- (pg_postmaster_start_time()) that last recorded it: a row recorded by the
-- server now running is this cluster's without a read of the control file
-- (pg_control_system() opens and reads it: 9-25 us a call, measured on
-- PostgreSQL 15 and 18 here, against ~1 ms for a one-change batch). Two
-- servers started at the same microsecond are not a case.

-- Whether the server now running recorded the stored state (then it is
-- this cluster's). An SQL-standard body (resolved when created, no SET
-- clause, inlined: see _batch_part).
create or replace function permgraph._recorded_by_this_server() returns boolean
language sql stable
return coalesce((select i.postmaster_started = pg_catalog.pg_postmaster_start_time() from permgraph.cluster_identity i), false);

-- Whether the stored state was recorded in this cluster: true; in another
-- (a logical backup of it restored here): false; null when not recorded (a
-- schema migrated from before 049, until its next batch). Reads the
-- control file only when another server run recorded it.
create or replace function permgraph._home_cluster() returns boolean
language sql stable
return (select case when i.postmaster_started = pg_catalog.pg_postmaster_start_time() then true
                    else i.system_identifier = (select c.system_identifier from pg_catalog.pg_control_system() c) end
        from permgraph.cluster_identity i);

-- What every batch does first, with the applier lock held (_begin_applying,
-- and the registering or dropping of a change consumer): when the stored
-- state is another cluster's, or not recorded, it forgets the queue's
-- mark (this batch reads the whole queue, and records a mark of this
-- cluster's) and the last batch's snapshot (is_applied goes by the
-- reader's own snapshot until the batch records one). A consumer's owner
-- restored from another cluster is found again by its name, as pg_restore
-- finds the owner of every object: the login of that name (roles are
-- restored by name, with pg_dumpall --roles-only), or, if no role has it,
-- oid 0, no role's: such a consumer is the schema owner's to use or drop.
-- (Not when the cluster is not recorded: those owners were most likely
-- recorded here.) Then it records this cluster and this server run: the
-- first ordinary batch after each start of the server writes the row, the
-- others find it theirs and write nothing.
create or replace function permgraph._adopt_restored_state() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  this_cluster bigint;
  home boolean;
begin
  if permgraph._recorded_by_this_server() then
    return;
  end if;
  -- (read once: what _home_cluster() would read again, past the check above)
  this_cluster := (select c.system_identifier from pg_control_system() c);
  home := (select i.system_identifier = this_cluster from permgraph.cluster_identity i);
  if home is false then
    update permgraph.change_consumers c
    set owner_oid = coalesce((select r.oid from pg_roles r where r.rolname = c.owner_role), 0)
    where c.owner_oid is not null;
  end if;
  if home is not true then
    update permgraph.applier_state set queue_low_water = null, last_batch_snapshot = null;
  end if;
  insert into permgraph.cluster_identity (system_identifier, postmaster_started)
  values (this_cluster, pg_postmaster_start_time())
  on conflict (singleton) do update set system_identifier = excluded.system_identifier, postmaster_started = excluded.postmaster_started;
end $$;
