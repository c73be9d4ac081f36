-- permgraph 020: expiring grants (docs/semantics.md, "Expiring grants").
-- A grant may carry expires_at (null = never); from that moment the graph is
-- the one without it. Every permission row carries valid_until: the earliest
-- expiry at which the row would change. Reads treat a row whose valid_until
-- has passed as absent until the engine recomputes it.

alter table permgraph.grants add column if not exists expires_at timestamptz;
-- The edge of a grant carries its expiry (ownership and identity edges never expire).
alter table permgraph.edges add column if not exists expires_at timestamptz;

alter table permgraph.permissions add column if not exists valid_until timestamptz;

-- Both covering indexes carry valid_until, so that a fail-closed check or
-- listing stays an index-only scan.
create unique index if not exists permissions_key_with_valid_until
  on permgraph.permissions (user_id, target_id) include (level, traverse_owned, valid_until);
alter table permgraph.permissions drop constraint permissions_pkey;
alter table permgraph.permissions add constraint permissions_pkey primary key using index permissions_key_with_valid_until;
drop index if exists permgraph.permissions_target_idx;
create index permissions_target_idx
  on permgraph.permissions (target_id, user_id) include (level, traverse_owned, valid_until);
-- The worker's timer asks for the earliest valid_until, and a batch
-- recomputes the rows whose valid_until has passed: both read this index,
-- which holds only rows that can expire.
create index if not exists permissions_valid_until_idx
  on permgraph.permissions (valid_until) where valid_until is not null;

-- What the incremental path needs besides a row's valid_until to seed a
-- recomputation from it: for a group row of level L, the time until which
-- each lower level l < L holds, when that is later than valid_until (a
-- write path expiring at 10:00 next to a read path that never expires).
-- Empty unless expiring grants give some row a second, lower path.
create table if not exists permgraph.permission_bounds (
  user_id     text collate "C" not null,
  target_id   text collate "C" not null,
  level       smallint not null,
  valid_until timestamptz not null,  -- 'infinity' = never
  constraint permission_bounds_pkey primary key (user_id, target_id, level)
);

-- Audit: an expiry is part of a grant.
alter table permgraph.audit_log add column if not exists old_expires_at timestamptz;
alter table permgraph.audit_log add column if not exists new_expires_at timestamptz;
alter table permgraph.audit_log drop constraint if exists audit_log_action_valid;
alter table permgraph.audit_log add constraint audit_log_action_valid check (action in (
  'grant', 'revoke', 'change_level', 'change_expiry', 'set_owner', 'create_node', 'delete_node', 'set_trash',
  'import', 'truncate', 'truncate_audit', 'prune_audit', 'catalog'));

-- Edges: the in-edges of a region pair from groups are read index-only, now
-- with their expiry; and whether any edge expires at all is one probe.
drop index if exists permgraph.edges_group_in_idx;
create index edges_group_in_idx on permgraph.edges (head_id) include (tail_id, level, head_kind, expires_at)
  where tail_kind = 'group';
create index if not exists edges_expiring_idx on permgraph.edges (expires_at) where expires_at is not null;

-- Functions whose signature changes (their current definitions are in
-- sql/functions/, applied after this): the computation takes the time it
-- computes at, and apply_changes and verify take an optional one.
drop function if exists permgraph._compute_all();
drop function if exists permgraph._compute_region();
drop function if exists permgraph.apply_changes(integer, bigint, boolean);
drop function if exists permgraph.verify();
