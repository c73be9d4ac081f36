-- permgraph 046: a change consumer belongs to the login that registered it.
-- Until now every login granted one of the three roles could acknowledge,
-- re-register or drop every consumer, so one application could skip or
-- drop another's events. owner_oid is session_user's role at registration
-- (an oid, so a role dropped and created again under the same name is
-- another role); owner_role, its name then, for display once the role is
-- gone. Only members of that role and the schema's owner may use the
-- consumer through register_consumer, read_changes, ack_changes and
-- drop_consumer. A consumer registered before this migration has no owner
-- and stays usable by every role until it is dropped.
alter table permgraph.change_consumers add column if not exists owner_oid oid;
alter table permgraph.change_consumers add column if not exists owner_role name;
