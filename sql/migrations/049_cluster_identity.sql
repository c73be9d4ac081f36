-- permgraph 049: which cluster the stored state was recorded in. The change
-- queue's low-water mark and the last batch's snapshot
-- (applier_state.queue_low_water, last_batch_snapshot) are transaction ids,
-- and a change consumer's owner (change_consumers.owner_oid) is a role's
-- oid: each means something only in the cluster that recorded it. A
-- logical backup (pg_dump) restored into another cluster brings them
-- along, where the transaction ids run from elsewhere (a fresh cluster's
-- from a few hundred) and the roles have other oids. The one row here is
-- the system identifier (pg_control_system()) of the cluster that
-- recorded them, and the start time of the server that recorded it last
-- (which spares a batch the read of the control file); the first batch in
-- another cluster adopts the restored state
-- (sql/functions/048_cluster_identity.sql).
create table if not exists permgraph.cluster_identity (
  singleton boolean primary key default true check (singleton),
  system_identifier bigint not null,
  postmaster_started timestamptz not null
);
-- This cluster's, when nothing of the kind is stored yet (a fresh install).
-- Otherwise no row: the stored state may come from another cluster (a
-- backup restored before this migration), and the next batch records the
-- cluster, having forgotten the mark and the snapshot (it then reads the
-- whole queue once); consumers' owners stay as they are.
insert into permgraph.cluster_identity (system_identifier, postmaster_started)
select c.system_identifier, pg_postmaster_start_time() from pg_control_system() c
where (select s.queue_low_water is null and s.last_batch_snapshot is null from permgraph.applier_state s)
  and not exists (select 1 from permgraph.change_consumers)
on conflict (singleton) do nothing;
