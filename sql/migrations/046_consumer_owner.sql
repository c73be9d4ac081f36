-- permgraph 046: a change consumer belongs to the login that registered it.
-- Until now every login granted one of the three roles could read,
-- acknowledge or drop every consumer, so one application could skip or drop
-- another's events. owner_role is session_user at registration; only its
-- members and the schema's owner may use the consumer (register_consumer,
-- read_changes, ack_changes, drop_consumer). A consumer registered before
-- this migration has none and stays usable by every role until it is
-- dropped.
alter table permgraph.change_consumers add column if not exists owner_role name;
