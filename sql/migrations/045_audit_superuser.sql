-- permgraph 045: the audit log records who made a user an application
-- superuser, or took it back ('set_superuser'; details: {"superuser": the
-- new value}). Until now the nodes' audit trigger looked at owners and
-- trash only, so the change that lets a user past every check left no
-- entry. The constraint is added NOT VALID and then validated, so the log
-- stays writable while its rows are checked.
alter table permgraph.audit_log drop constraint if exists audit_log_action_valid;
alter table permgraph.audit_log add constraint audit_log_action_valid check (action in (
  'grant', 'revoke', 'change_level', 'change_expiry', 'set_owner', 'create_node', 'delete_node', 'set_trash',
  'import', 'truncate', 'truncate_audit', 'prune_audit', 'catalog', 'set_superuser')) not valid;
alter table permgraph.audit_log validate constraint audit_log_action_valid;
