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
-- pg_upgrade makes another cluster (initdb gives it a new system
-- identifier) with the same transaction ids and oids: the first batch
-- forgets the mark and the snapshot (harmless: the whole queue is read
-- once) and keeps the consumers' owners (migration 050).

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
-- (a logical backup of it restored here, or the cluster pg_upgrade made
-- this one from): false; null when not recorded (a
-- schema migrated from before 049, until its next batch). Reads the
-- control file only when another server run recorded it.
create or replace function permgraph._home_cluster() returns boolean
language sql stable
return (select case when i.postmaster_started = pg_catalog.pg_postmaster_start_time() then true
                    else i.system_identifier = (select c.system_identifier from pg_catalog.pg_control_system() c) end
        from permgraph.cluster_identity i);

-- Whether the oids recorded with the cluster (migration 050) are this
-- database's and cluster_identity's here: true in the cluster that recorded
-- them and after pg_upgrade of it, which keeps every oid; false after a
-- logical restore, which makes new ones, or when none were recorded (a row
-- restored from a cluster that recorded none); null when no row. An
-- SQL-standard body, inlined.
create or replace function permgraph._recorded_oids_hold() returns boolean
language sql stable
return (select coalesce(i.database_oid = (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database())
                        and i.relation_oid = 'permgraph.cluster_identity'::pg_catalog.regclass, false)
        from permgraph.cluster_identity i);

-- Whether the role oids stored with the state (a change consumer's owner)
-- name other roles here than where they were recorded: false in the
-- cluster that recorded them, and after pg_upgrade of it (a new cluster
-- that keeps every oid: the oids of this database and of cluster_identity
-- are the ones recorded, migration 050); true after a logical restore
-- elsewhere (or a pg_upgrade to PostgreSQL 14, which gives the database a
-- new oid: there the owners are found by name, as after a restore); null
-- when not recorded (a schema migrated from before 049, until its next
-- batch).
create or replace function permgraph._stored_oids_foreign() returns boolean
language sql stable
return case when permgraph._home_cluster() then false else not permgraph._recorded_oids_hold() end;

-- A change consumer's owner in this cluster, given its stored oid, the name
-- its role had when it registered the consumer (owner_role: not updated
-- when the role is renamed) and p_foreign, _stored_oids_foreign():
--   * false (recorded here, or pg_upgrade of it): the stored oid, the role
--     whatever its name now;
--   * true (another cluster's) or null (not recorded: the oid may be this
--     cluster's or another's, and owner_role tells): the role of that
--     name, as pg_restore finds the owner of every object (roles are
--     restored by name, with pg_dumpall --roles-only): the stored oid's own
--     role when it still has the name. Or oid 0, no role's, when none has
--     the name: such a consumer is the schema owner's to use or drop. So an
--     oid that names another role here never makes that role the owner.
--     Not recorded, in the cluster that recorded the oid, this differs from
--     keeping it only for a login renamed since it registered the consumer
--     (before the first batch of a release with 049), whose consumer goes
--     to the role given the old name since, or to the schema's owner, and
--     for one dropped and created again under its name, which gets the
--     consumer.
-- (An SQL-standard body, resolved when created, no SET clause: see
-- _batch_part.)
create or replace function permgraph._consumer_owner_here(p_owner_oid oid, p_owner_role name, p_foreign boolean) returns oid
language sql stable
return case when p_owner_oid is null or p_foreign is false then p_owner_oid
            else coalesce((select r.oid from pg_catalog.pg_roles r where r.rolname = p_owner_role), 0::oid) end;

-- What every batch does first, with the applier lock held (_begin_applying,
-- and the registering or dropping of a change consumer): when the stored
-- state is another cluster's, or not recorded, it forgets the queue's
-- mark (this batch reads the whole queue, and records a mark of this
-- cluster's) and the last batch's snapshot (is_applied goes by the
-- reader's own snapshot until the batch records one), and gives each
-- change consumer its owner here (_consumer_owner_here). Then it records
-- this cluster, this server run and the oids that tell a pg_upgrade from
-- a restore: the first ordinary batch after each start of the server
-- writes the row, the others find it theirs and write nothing.
create or replace function permgraph._adopt_restored_state() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  this_cluster bigint;
  home boolean;
  foreign_oids boolean;
begin
  if permgraph._recorded_by_this_server() then
    return;
  end if;
  -- (read once: what _home_cluster() would read again, past the check above)
  this_cluster := (select c.system_identifier from pg_control_system() c);
  home := (select i.system_identifier = this_cluster from permgraph.cluster_identity i);
  if home is not true then
    -- (_stored_oids_foreign(), past the identifier read above: null when no row)
    foreign_oids := not permgraph._recorded_oids_hold();
    if foreign_oids is not false then
      update permgraph.change_consumers c
      set owner_oid = permgraph._consumer_owner_here(c.owner_oid, c.owner_role, foreign_oids)
      where c.owner_oid is not null
        and c.owner_oid is distinct from permgraph._consumer_owner_here(c.owner_oid, c.owner_role, foreign_oids);
    end if;
    update permgraph.applier_state set queue_low_water = null, last_batch_snapshot = null;
  end if;
  insert into permgraph.cluster_identity (system_identifier, postmaster_started, database_oid, relation_oid)
  values (this_cluster, pg_postmaster_start_time(), (select d.oid from pg_database d where d.datname = current_database()),
          'permgraph.cluster_identity'::regclass)
  on conflict (singleton) do update
  set system_identifier = excluded.system_identifier, postmaster_started = excluded.postmaster_started,
      database_oid = excluded.database_oid, relation_oid = excluded.relation_oid;
end $$;
