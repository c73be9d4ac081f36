-- permgraph 036: the import's load switches the statement triggers it does
-- the work of (integrity checks, edge capture) and the audit triggers of
-- inserted rows (whose transition tables it need not fill) with one
-- function, _import_load_triggers (sql/functions/150_import.sql), instead
-- of two of the same shape.
drop function if exists permgraph._import_statement_checks(boolean);
drop function if exists permgraph._import_edges_by_trigger(boolean);
