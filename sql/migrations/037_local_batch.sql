-- permgraph 037: the local path's statement also ends its batch and returns
-- apply_changes' result (_apply_local_batch, sql/functions/055_local_change.sql),
-- and apply_local_changes() runs it as a transaction of its own. The old
-- statement, which left the end of the batch to apply_changes, goes.
drop function if exists permgraph._apply_local_change(bigint, boolean);
