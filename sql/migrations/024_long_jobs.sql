-- permgraph 024: no head-of-line blocking. A change whose affected region is
-- huge becomes a long job, applied in bounded chunks of users, each in its
-- own short transaction, while other changes keep flowing
-- (sql/functions/065_long_job.sql has the design and its correctness argument).

-- apply_changes gains p_chunk_pairs (the bound above which changes become a
-- long job): a new signature.
drop function if exists permgraph.apply_changes(integer, bigint, boolean, timestamptz);

-- The running long job, or the last one (finished_at set): at most one row.
create table if not exists permgraph.long_job (
  singleton      boolean primary key default true check (singleton),
  started_at     timestamptz not null default clock_timestamp(),
  finished_at    timestamptz,
  ended_by       text check (ended_by in ('chunks', 'full')),
  chunk_pairs    bigint not null,             -- the bound each chunk's region aims at
  changes        bigint not null default 0,   -- captured changes the job applies
  deferred       bigint not null default 0,   -- changes applied meanwhile whose tokens wait for the job
  region_estimate bigint not null default 0,  -- pairs of the changes' regions, as estimated when they joined
  users_total    bigint not null default 0,
  users_done     bigint not null default 0,
  pairs_per_user double precision,            -- as observed by the last chunk: sizes the next one
  chunks         bigint not null default 0,
  last_chunk_at  timestamptz,
  last_chunk_ms  double precision,
  rows_inserted  bigint not null default 0,
  rows_updated   bigint not null default 0,
  rows_deleted   bigint not null default 0
);

-- The job's remaining work: users whose rows are all still to be recomputed.
create table if not exists permgraph.long_job_users (
  user_id text collate "C" primary key
);

-- The captured changes the job stands for (deferred = false), and the
-- changes applied by ordinary batches meanwhile that touch a user of the job
-- (deferred = true): their freshness tokens turn applied when the job ends.
create table if not exists permgraph.long_job_changes (
  change_id   bigint not null,
  tail_id     text collate "C" not null,
  head_id     text collate "C" not null,
  tail_kind   text not null,
  head_kind   text not null,
  old_level   smallint,
  new_level   smallint,
  xact_id     xid8 not null,
  captured_at timestamptz not null,
  deferred    boolean not null
);
create index if not exists long_job_changes_xact_idx on permgraph.long_job_changes (xact_id);
