-- permgraph 059: while a long job runs, the tombstone of a deleted node whose
-- id is made again hides only the rows of the job's users that may still
-- hold rows of the old node, recorded once by the first batch that sees the
-- id made again. It hid every row of its id until no user of the job held
-- one: on the node made again, rows of users outside the job and of users
-- who joined the job later stayed hidden after their tokens were applied
-- (sql/functions/065_long_job.sql has the argument; bench/FINDINGS.md 58).

-- Whether a batch has recorded the users this tombstone waits for (in
-- long_job_tombstone_waits). Writers insert tombstones unrecorded, and an
-- unrecorded tombstone hides every row of its id, as before.
alter table permgraph.deleted_nodes add column if not exists waits_recorded boolean not null default false;

-- Per deleted node id made again, the users of the running job that held a
-- row on it (or were it) when a batch first saw it made again, until each
-- has left the job: some of their rows may still be the old node's.
create table if not exists permgraph.long_job_tombstone_waits (
  node_id text collate "C" not null,
  user_id text collate "C" not null,
  primary key (node_id, user_id)
);

-- Which changes had to wait for a tombstone's users: none now, since the
-- tombstone hides only those users' rows (the views were in
-- sql/functions/065_long_job.sql).
drop view if exists permgraph._batch_tombstone_waits;
drop view if exists permgraph._tombstone_holders;
