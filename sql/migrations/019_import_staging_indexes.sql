-- permgraph 019: the staging tables keep only their primary key (run, seq).
-- An index on (run, id) or on a grant's key costs a random-order btree
-- insert per staged row (about two thirds of staging's time); validation
-- sorts the run's rows once instead, and looks ids up in a temporary table
-- it indexes after filling (sql/functions/150_import.sql).
drop index if exists permgraph.import_nodes_id_idx;
drop index if exists permgraph.import_grants_key_idx;
drop function if exists permgraph._import_missing(text, text, text);
