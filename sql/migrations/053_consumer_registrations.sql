-- permgraph 053: registrations of change consumers are counted by a
-- sequence of their own, and the batches record how many of them they have
-- accounted for (consumer_registrations.seen). A batch whose snapshot
-- predates a registration learns of it from the sequence, which no snapshot
-- hides, and records events for it, instead of failing on a row the
-- registration updated: a reader that registered and dropped consumers back
-- to back kept every batch from completing (sql/functions/170_changes.sql,
-- docs/security.md). A table of its own rather than a column of
-- applier_state, which replicas subscribe to with a column list of their
-- own (docs/replicas.md).
create sequence if not exists permgraph.consumer_registrations_seq as bigint cache 1;
create table if not exists permgraph.consumer_registrations (
  singleton boolean primary key default true check (singleton),
  seen      bigint not null default 0
);
insert into permgraph.consumer_registrations default values on conflict do nothing;
