-- permgraph 015: the derived-permission change stream (semantics.md
-- "Derived-permission changes"). Tables only; the functions that write and
-- read them are in sql/functions/170_changes.sql.

-- Event numbers. No cache (the default, 1): a session's cached block would
-- hand out numbers out of commit order across sessions. Numbers of a batch
-- that rolls back are lost, so seq has gaps.
create sequence if not exists permgraph.permission_changes_seq as bigint cache 1;

-- One row per changed row of permgraph.permissions, written in the same
-- transaction as the change, only while a consumer is registered; old_* are
-- null for an inserted row, new_* for a deleted one. Kept until every
-- consumer has acknowledged it.
create table if not exists permgraph.permission_changes (
  seq                bigint primary key default nextval('permgraph.permission_changes_seq'),
  user_id            text collate "C" not null,
  target_id          text collate "C" not null,
  old_level          smallint,
  new_level          smallint,
  old_traverse_owned boolean,
  new_traverse_owned boolean,
  old_valid_until    timestamptz,
  new_valid_until    timestamptz,
  -- when the batch that wrote the event started: moments before its commit
  committed_at       timestamptz not null default statement_timestamp()
);
alter sequence permgraph.permission_changes_seq owned by permgraph.permission_changes.seq;

-- Registered consumers and how far each has acknowledged.
create table if not exists permgraph.change_consumers (
  consumer      text collate "C" primary key,
  acked_seq     bigint not null,
  registered_at timestamptz not null default now(),
  acked_at      timestamptz
);
