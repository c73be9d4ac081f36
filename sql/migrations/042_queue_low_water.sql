-- permgraph 042: the change queue's low-water mark (sql/functions/045_batch_split.sql,
-- where _batch_changes reads the queue above it). A batch that applies the
-- whole visible queue records the oldest transaction its snapshot still
-- saw running; every change row written later, or by a transaction running
-- then, has an xact_id at or above it, so the batches' reads of the queue
-- start there by its xact_id index and never visit the rows earlier
-- batches deleted (dead until vacuum reclaims them; bench/FINDINGS.md 33).
-- Null: no mark yet (every row is read).
alter table permgraph.applier_state add column queue_low_water xid8;
