-- permgraph 056: a change deferred by a long job is let go once the users it
-- touches are recomputed, not once every user wanted by any deferred change
-- is (sql/functions/065_long_job.sql has the design).

-- Deferred changes are let go in rounds, numbered by the job
-- (deferred_rounds): one per changed edge's tail of each batch that defers
-- changes. A deferred change records its round; a user of the job records
-- the first round that wanted it (null: not wanted). Chunks take wanted
-- users by round, and a round's changes go once no user left in the job
-- was wanted by it or an earlier one.
alter table permgraph.long_job add column if not exists deferred_rounds bigint not null default 0;
alter table permgraph.long_job_users add column if not exists wanted_round bigint;
alter table permgraph.long_job_changes add column if not exists deferred_round bigint;

-- A job running across this upgrade: its wanted users and deferred changes
-- become round 0, taken and let go as before (together).
update permgraph.long_job_users set wanted_round = 0 where wanted;
update permgraph.long_job_changes set deferred_round = 0 where deferred;
alter table permgraph.long_job_changes drop constraint if exists long_job_changes_deferred_round_check;
alter table permgraph.long_job_changes add constraint long_job_changes_deferred_round_check
  check (deferred = (deferred_round is not null));

-- The flag gives way to the round (its partial index goes with it).
alter table permgraph.long_job_users drop column if exists wanted;
create index if not exists long_job_users_wanted_round_idx on permgraph.long_job_users (wanted_round, user_id)
  where wanted_round is not null;
drop index if exists permgraph.long_job_changes_deferred_idx;
create index if not exists long_job_changes_deferred_round_idx on permgraph.long_job_changes (deferred_round)
  where deferred;
