-- permgraph 035: a batch that only adds is computed and written in one
-- statement, _write_additions (sql/functions/050_region.sql), without the
-- work tables and the general diff; _compute_additions, which filled them,
-- goes.
drop function if exists permgraph._compute_additions();
