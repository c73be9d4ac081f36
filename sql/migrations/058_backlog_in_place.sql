-- permgraph 058: a backlog that becomes a long job stays in permgraph.changes,
-- where it was captured, instead of being moved row by row into
-- long_job_changes: the batch that moved a million changes took 8-14 s on
-- org large, and every write committed meanwhile waited for it
-- (sql/functions/065_long_job.sql has the design; bench/FINDINGS.md 53).

-- The snapshot of the batch that took the backlog: the job's changes are the
-- rows of permgraph.changes visible in it (trash flags aside, which that
-- batch applied), which ordinary batches no longer see. Null: no backlog
-- in the queue. Kept until the last of those rows is deleted.
alter table permgraph.long_job add column if not exists backlog_snapshot pg_snapshot;
-- The highest change id among them, and how far the job has deleted them
-- (ids below backlog_cleared_to are gone), once its users are all done.
alter table permgraph.long_job add column if not exists backlog_max_id bigint;
alter table permgraph.long_job add column if not exists backlog_cleared_to bigint;

-- Each tail of the backlog's changes: the last user upstream of it in the
-- chunks' order, after which its changes are applied (released: their
-- tokens no longer wait), and how many changes it has.
create table if not exists permgraph.long_job_backlog_tails (
  tail_id       text collate "C" primary key,
  release_after text collate "C" not null,
  changes       bigint not null,
  released      boolean not null default false
);
create index if not exists long_job_backlog_tails_release_idx on permgraph.long_job_backlog_tails (release_after)
  where not released;

-- The edges a long job's changes removed are no longer walked up
-- (_upstream_users says why): their index goes.
drop index if exists permgraph.long_job_changes_removed_idx;
