-- permgraph 038: a batch that only adds is one statement on the local path
-- too (_write_additions gains the local path's check and end of batch,
-- sql/functions/050_region.sql), chosen by _apply_local_path
-- (055_local_change.sql) for apply_changes and apply_local_changes alike,
-- and a batch that changes trash takes the local path under READ COMMITTED
-- as well (the p_trash parameter goes). The old signatures, and
-- _local_change_kind, which chose the statement before, go.
drop function if exists permgraph._write_additions(boolean, bigint);
drop function if exists permgraph._local_change_kind();
drop function if exists permgraph._apply_local_batch(integer, bigint, boolean, timestamptz);
