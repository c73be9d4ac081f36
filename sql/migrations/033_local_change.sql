-- permgraph 033: apply_changes gains p_local_pairs, the region bound of the
-- one-statement path for small batches (sql/functions/055_local_change.sql;
-- 0 turns it off). The old signature goes; functions/060_apply.sql defines
-- the new one.
drop function if exists permgraph.apply_changes(integer, bigint, boolean, timestamptz, bigint);
