-- permgraph 048: _explain_tree and _explain_manage_edge take one more
-- argument, p_expired (whether grants that have expired count, for the
-- accessEnded part of explain()). Their new definitions are in
-- sql/functions/130_explain.sql; the old ones are dropped here, since a call
-- that leaves the new argument out would match both.
drop function if exists permgraph._explain_tree(text, integer, timestamptz);
drop function if exists permgraph._explain_manage_edge(text, text, jsonb, timestamptz);
