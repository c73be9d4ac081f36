-- permgraph 013: least privilege and tamper-proof records.
-- Functions are not defined here: their current definitions live in
-- sql/functions/ (the privileges themselves in 900_privileges.sql).

-- Deleted nodes, until the worker has removed their permission rows. A node
-- delete used to delete those rows inside the writer's transaction, which
-- made every concurrent repeatable-read batch touching them fail; now the
-- writer only appends here, and every read path treats the rows of a listed
-- id as absent (so a node re-created with the same id inherits nothing).
create table if not exists permgraph.deleted_nodes (
  id         text collate "C" not null,
  deleted_at timestamptz not null default clock_timestamp()
);
create index if not exists deleted_nodes_id_idx on permgraph.deleted_nodes (id);

-- The authenticated login of every audited change (the actor is what the
-- application declares; this is who connected). Rows before 013 have none.
alter table permgraph.audit_log add column if not exists db_role text;
alter table permgraph.audit_log alter column db_role set default session_user;

-- The one way to drop old audit history records itself.
alter table permgraph.audit_log drop constraint if exists audit_log_action_valid;
alter table permgraph.audit_log add constraint audit_log_action_valid check (action in (
  'grant', 'revoke', 'change_level', 'set_owner', 'create_node', 'delete_node', 'set_trash',
  'import', 'truncate', 'truncate_audit', 'prune_audit'));

-- Owners are validated per statement (sql/functions/010_integrity.sql), with
-- clear messages, whatever the order of rows within the statement. The
-- foreign key would fire first, at the end of the statement, with its own
-- message: it now waits until commit, as the backstop.
alter table permgraph.nodes alter constraint nodes_owner_exists deferrable initially deferred;
drop trigger if exists nodes_refuse_delete_owner on permgraph.nodes;
drop function if exists permgraph._nodes_refuse_delete_owner();
