-- permgraph 014: change capture, edge upkeep and auditing per statement.
-- The row-level trigger functions of 003 and 010 are replaced by
-- statement-level ones with transition tables (sql/functions/020_capture.sql,
-- 140_audit.sql): one trigger call per statement, set-based. Their triggers
-- go first (they depend on the functions), then the functions nothing uses.
drop trigger if exists nodes_sync_edges on permgraph.nodes;
drop trigger if exists grants_sync_edges on permgraph.grants;
drop trigger if exists nodes_capture on permgraph.nodes;
drop trigger if exists grants_capture on permgraph.grants;
drop trigger if exists nodes_audit on permgraph.nodes;
drop trigger if exists grants_audit on permgraph.grants;
drop function if exists permgraph._nodes_sync_edges();
drop function if exists permgraph._grants_sync_edges();
drop function if exists permgraph._nodes_capture();
drop function if exists permgraph._grants_capture();
drop function if exists permgraph._audit_nodes();
drop function if exists permgraph._audit_grants();
drop function if exists permgraph._capture(text, text, text, text, smallint, smallint, boolean);
drop function if exists permgraph._kind_of(text);
drop function if exists permgraph._is_owner_edge(text, text, text);
