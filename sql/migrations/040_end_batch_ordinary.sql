-- permgraph 040: _end_batch is called only by apply_changes' ordinary path
-- (both local statements end their own batches, sql/functions/055_local_change.sql),
-- so its p_local parameter, always false, goes.
drop function if exists permgraph._end_batch(timestamptz, timestamptz, text, boolean, boolean, bigint, bigint, bigint, bigint,
  bigint, bigint, bigint, bigint);
