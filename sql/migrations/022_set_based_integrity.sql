-- permgraph 022: grants are checked per statement, not per row
-- (sql/functions/010_integrity.sql). A grant's tail and head are checked
-- once the statement has written all its rows, by a statement-level trigger
-- that gives the clear error ("grant tail "x" does not exist"); the foreign
-- keys stay as the backstop, checked at commit like nodes_owner_exists, so
-- that their generic error never comes first. Referential actions (ON DELETE
-- CASCADE) are not deferred.
alter table permgraph.grants alter constraint grants_tail_exists deferrable initially deferred;
alter table permgraph.grants alter constraint grants_head_exists deferrable initially deferred;

-- The kinds of a grant's ends were copied into each grant row by a per-row
-- trigger (two lookups a row) for change capture only; capture now reads
-- them from nodes (and, for vanished grants, from their edges), per statement.
alter table permgraph.grants drop column tail_kind, drop column head_kind;

-- nodes_validate_superuser's check is now part of nodes_validate.
drop trigger if exists nodes_validate_superuser on permgraph.nodes;
drop function if exists permgraph._nodes_validate_superuser();
