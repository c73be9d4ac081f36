-- permgraph 027: _write_diff takes whether to compare the no-expiry
-- computation as it is produced (p_lasting, default false); its current
-- definition is in sql/functions/040_compute.sql.
drop function if exists permgraph._write_diff(boolean);
