-- permgraph 055: a backlog too large for one batch becomes a long job, and
-- the changes that wait for a job are let go as soon as the users they touch
-- are recomputed (sql/functions/065_long_job.sql has the design).

-- The users of the job that a waiting (deferred) change touches: chunks
-- take them first, and when none is left the waiting changes are applied.
alter table permgraph.long_job_users add column if not exists wanted boolean not null default false;
create index if not exists long_job_users_wanted_idx on permgraph.long_job_users (user_id) where wanted;
-- (and the deferred changes they let go, found without reading the job's own)
create index if not exists long_job_changes_deferred_idx on permgraph.long_job_changes (change_id) where deferred;

-- A job running across this upgrade deferred its changes without marking
-- their users: every user it has left is taken as wanted, so that those
-- changes wait for the job's end, as they were promised.
update permgraph.long_job_users set wanted = true
where exists (select 1 from permgraph.long_job_changes where deferred);

-- A change of a backlog can be let go before the job ends: once every user
-- upstream of its tail is done, that is once no user left in the job sorts
-- at or before the last of them (chunks go in user order). Null: at the
-- job's end (a big change's whole region is the job).
alter table permgraph.long_job_changes add column if not exists release_after text collate "C";
create index if not exists long_job_changes_release_idx on permgraph.long_job_changes (release_after)
  where release_after is not null;

-- Changes the job took as a backlog (of `changes`), and changes let go
-- before the job ended.
alter table permgraph.long_job add column if not exists backlog_changes bigint not null default 0;
alter table permgraph.long_job add column if not exists released bigint not null default 0;

-- The walk up from a change (_upstream_users) looks up the job's removed
-- edges by head: a backlog leaves up to a million change rows here.
create index if not exists long_job_changes_removed_idx on permgraph.long_job_changes (head_id)
  where old_level is not null;
