-- permgraph 017: freshness tokens that hold on streaming standbys.
-- The snapshot in which the last batch read the captured changes: every
-- transaction visible in it had its changes applied by that batch or an
-- earlier one. permgraph.is_applied() (sql/functions/080_freshness.sql) reads
-- it with the permission rows, so on a standby a token turns applied only
-- once the standby has replayed the batch that applied it. Null until the
-- first batch after this migration.
alter table permgraph.applier_state add column if not exists last_batch_snapshot pg_snapshot;
