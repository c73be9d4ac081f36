-- permgraph 041: the wake-up on channel permgraph_changes is sent by the
-- capture functions, and only by a statement that wrote change rows or
-- deleted nodes (sql/functions/020_capture.sql); the statement triggers
-- that sent one after every write, even one that changed nothing, go.
drop trigger if exists nodes_notify on permgraph.nodes;
drop trigger if exists grants_notify on permgraph.grants;
drop function if exists permgraph._notify_changes();
