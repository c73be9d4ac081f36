-- permgraph 057: a long job's chunk computes its users' rows from scratch
-- and compares all their stored rows, without building a region
-- (sql/functions/065_long_job.sql, _compute_users). _write_diff and
-- _write_bounds take the chunk's users: new signatures.
drop function if exists permgraph._build_user_region(text[], timestamptz);
drop function if exists permgraph._write_diff(boolean, boolean);
drop function if exists permgraph._write_bounds(boolean);
