-- permgraph 016: row-level security matches application rows through their
-- owner column only, unless asked; catalog changes are audited.
-- Functions are not defined here: their current definitions live in
-- sql/functions/ (110_rls.sql, 090_catalog.sql, 900_privileges.sql).

-- enable_rls gains a 4th parameter, p_match_row_id (default false): the
-- 3-argument function goes, so that a 3-argument call resolves to the new one.
-- Policies installed before keep matching row ids against node ids until
-- enable_rls is run again on their table.
drop function if exists permgraph.enable_rls(regclass, name, name);

-- `permgraph roles sync` changes are audited (action 'catalog', with the kind
-- and name of the role or operation in details and its levels in
-- old_level/new_level), so that its --actor is recorded like any other change.
alter table permgraph.audit_log drop constraint if exists audit_log_action_valid;
alter table permgraph.audit_log add constraint audit_log_action_valid check (action in (
  'grant', 'revoke', 'change_level', 'set_owner', 'create_node', 'delete_node', 'set_trash',
  'import', 'truncate', 'truncate_audit', 'prune_audit', 'catalog'));
