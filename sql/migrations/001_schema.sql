-- permgraph 001: tables.
-- Ids are text compared byte-wise (COLLATE "C"), so any application key fits.

create schema if not exists permgraph;

create table if not exists permgraph.nodes (
  id        text collate "C" primary key,
  kind      text not null
            constraint nodes_kind_valid check (kind in ('user', 'group', 'object')),
  owner_id  text collate "C"
            constraint nodes_owner_exists references permgraph.nodes (id),
  trash_at  timestamptz
);
-- (owner_id, id): the children of an owner, in id order (walks, keyset listings)
create index if not exists nodes_owner_idx on permgraph.nodes (owner_id, id) where owner_id is not null;

create table if not exists permgraph.grants (
  tail_id    text collate "C" not null
             constraint grants_tail_exists references permgraph.nodes (id) on delete cascade,
  head_id    text collate "C" not null
             constraint grants_head_exists references permgraph.nodes (id) on delete cascade,
  level      smallint not null
             constraint grants_level_valid check (level between 1 and 3),
  source     text not null default 'default'
             constraint grants_source_not_empty check (source <> ''),
  created_at timestamptz not null default now(),
  constraint grants_unique_per_source unique (tail_id, head_id, source)
);
create index if not exists grants_head_idx on permgraph.grants (head_id);

-- Every edge a path can follow, in one indexed table: a row per grant, and
-- one per ownership of a user or group (source ''). Kept by triggers from
-- nodes and grants (sql/003), so walks are plain index lookups. tail_kind
-- tells whether a path may pass through the tail (only groups, or the
-- path's starting user); head_kind whether it may continue past the head.
create table if not exists permgraph.edges (
  tail_id   text collate "C" not null,
  head_id   text collate "C" not null,
  source    text collate "C" not null,
  level     smallint not null,
  tail_kind text not null,
  head_kind text not null,
  constraint edges_pkey primary key (tail_id, head_id, source)
);
create index if not exists edges_head_idx on permgraph.edges (head_id, tail_id);

-- The materialized output. The primary key carries level and traverse_owned
-- so permission checks and listings are index-only scans.
create table if not exists permgraph.permissions (
  user_id        text collate "C" not null,
  target_id      text collate "C" not null,
  level          smallint not null,
  traverse_owned boolean not null,
  constraint permissions_pkey primary key (user_id, target_id) include (level, traverse_owned)
);
create index if not exists permissions_target_idx
  on permgraph.permissions (target_id, user_id) include (level, traverse_owned);

-- Effective trash time of every group that has one (its own or an owner's).
create table if not exists permgraph.trashed_groups (
  group_id text collate "C" primary key,
  trash_at timestamptz not null
);

-- Captured changes not yet applied to permissions. One row per edge whose
-- level changed (old_level/new_level null = edge absent), per identity edge of
-- a user added or removed, and per node whose trash/owner changed
-- (trash_changed). Rows are deleted when applied, so a transaction that
-- commits late is simply picked up by a later batch: nothing relies on ids
-- being committed in order.
create table if not exists permgraph.changes (
  id            bigint generated always as identity primary key,
  tail_id       text collate "C" not null,
  head_id       text collate "C" not null,
  tail_kind     text not null,
  head_kind     text not null,
  old_level     smallint,
  new_level     smallint,
  trash_changed boolean not null default false,
  xact_id       xid8 not null default pg_current_xact_id(),
  captured_at   timestamptz not null default clock_timestamp()
);
create index if not exists changes_xact_idx on permgraph.changes (xact_id);

-- One row: what the last applied batch did (for `permgraph status`).
create table if not exists permgraph.applier_state (
  singleton          boolean primary key default true check (singleton),
  last_batch_at      timestamptz,
  last_batch_mode    text,
  last_batch_changes bigint,
  last_batch_ms      double precision,
  rows_inserted      bigint,
  rows_updated       bigint,
  rows_deleted       bigint
);
insert into permgraph.applier_state (singleton) values (true) on conflict do nothing;
