-- permgraph 030: the no-expiry computation produces each pair once
-- (permgraph._lasting_rows); the view of every path it replaced goes. The
-- views built on it (_computed_rows_lasting, _computed_rows) go with it and
-- are created again, over the new view, by sql/functions/040_compute.sql,
-- which `permgraph migrate` re-applies in the same transaction.
drop view if exists permgraph._lasting_paths cascade;
