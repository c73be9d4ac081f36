-- permgraph 035: a batch that only adds is computed and written in one
-- statement, _write_additions (sql/functions/050_region.sql), without the
-- work tables and the general diff; _compute_additions, which filled them,
-- goes.
drop function if exists permgraph._compute_additions();
-- The local path's own writer of additions was folded into
-- _write_additions, which gained a bound (p_max_rows); neither old
-- signature may stay next to it (a call with one argument would be
-- ambiguous).
drop function if exists permgraph._apply_local_additions(bigint, boolean);
drop function if exists permgraph._write_additions(boolean);
