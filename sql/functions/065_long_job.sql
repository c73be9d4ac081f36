-- Long jobs: no head-of-line blocking behind a change whose region is huge.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).
--
-- A grant that gives 20,000 users 2,000 groups each changes 40M rows; applied
-- as one batch it held the single applier for minutes while every other
-- change waited. Instead, apply_changes(p_chunk_pairs => N) turns each change
-- whose region is above N pairs into a long job (permgraph.long_job): its work is
-- a set of users (permgraph.long_job_users) whose rows are all recomputed,
-- from the current graph and from scratch, a bounded chunk of users per
-- transaction (apply_job_chunk). Between chunks, ordinary batches apply the
-- other changes as before.
--
-- A backlog is the other case: tens of thousands of small changes queued
-- while no worker ran, none of them big, but together more than
-- p_max_changes, or with a region above p_max_pairs. Such a queue was one
-- full recomputation in one transaction, and every change committed
-- meanwhile waited for it (bench/FINDINGS.md 50). With p_chunk_pairs set,
-- the batch hands the whole queue to the job instead
-- (_backlog_to_long_job), and its users to D: the same move as for one
-- big change, so the same argument below holds. The backlog's rows stay in
-- permgraph.changes, hidden from later batches (_batch_changes), instead of
-- being moved: for the argument below they are the job's changes, as those
-- in long_job_changes are.
--
-- Why this is correct. A stored row belongs to one user, and every
-- recomputation of user u's rows reads only u's own stored rows (the region
-- path seeds (u, t) from (u, h), the additions path extends (u, h)). So a
-- stale row of a user can only ever spread to rows of the same user. Let D be
-- the users still in long_job_users. The invariant, between transactions:
--   every stored row of a user outside D equals the full computation from
--   the current graph, except pairs in the region of the pending changes
--   (permgraph.changes), as _build_region defines it.
-- * Starting or extending a job (_split_off_long_job), in the batch's
--   snapshot: the moved changes' region is (users upstream of their tails) x
--   (nodes below their heads), in the union of the current graph and every
--   edge the batch's changes removed (_upstream_users says why the job's
--   own removed edges need no walk). Those upstream
--   users join D. A pair outside D stays covered by the remaining changes'
--   region: a path of a user outside D cannot use an edge a moved change
--   removed (its tail is a moved change's tail, and every user upstream of it
--   is in D), so the smaller union graph of the remaining changes suffices.
-- * An ordinary batch: the region of its changes is computed and its rows
--   seeded as before. Seeds of users outside D are right by the invariant;
--   rows of users in D may come out wrong, but those users are recomputed
--   later anyway. So the invariant holds for the next batch.
-- * A chunk: its users' rows equal the computation from the graph in its
--   snapshot (no seeding at all: each user is walked from scratch and every
--   stored row of theirs compared, see _compute_users), so they may leave
--   D. Changes committed after that snapshot are pending, and
--   their region covers what they change.
-- * A change committed later: its region, computed in the graph that has it,
--   covers every pair it changes (as without jobs): new paths through a
--   group the job changed are walked in the current graph.
-- When D is empty the invariant is the engine's usual one: every row outside
-- the pending changes' region is right.
-- So ordinary batches need not wait for the job, even when their regions
-- overlap it: the seeding hazard (a stale border row copied into rows the
-- job has already done) cannot arise, because border rows are only ever
-- copied into rows of their own user, and a user the job has done has no
-- stale rows. What overlap does affect is freshness, below.
-- Tombstones (deleted_nodes) hide a deleted node's rows from readers until
-- a batch has removed them (effective_permissions, 005_views.sql). While a
-- job runs, a user in D may still hold such rows until its chunk, so a
-- tombstone stays until its id has no row left. The id may meanwhile be
-- made again, with rows of its own that the tombstone would hide too. So
-- at its end every batch records, for each tombstone whose id it sees made
-- again for the first time, the users in D that hold a row on the id or
-- are it (_record_tombstone_waits). Every user outside D then holds no row
-- of the old node (this batch or an earlier one applied its deletion, or
-- the job took it), and a user who joins D later joins with no row of it
-- either. From then on the tombstone hides only the rows of the users
-- recorded, and each leaves the record with the chunk that recomputes it.
-- Freshness needs nothing more: a change that affects a recorded user's
-- row on the id has that user upstream of its tail, and so waits for its
-- chunk like any change that touches D. The tombstone goes once it hides
-- nothing: once recorded and its users all done, or, not recorded, once
-- its id has no row at all (_prune_deleted_nodes).
--
-- Freshness (080_freshness.sql): a token is applied when none of its changes
-- waits (_unapplied_changes: pending in the queue, held in long_job_changes,
-- or of the job's backlog and not released; and a batch saw it committed).
-- A big change's rows stay in long_job_changes until the job's last chunk. An ordinary change whose effect reaches a user in D (a user
-- upstream of its tail, in the same union graph) is applied at once but a
-- copy is kept there too (deferred): its effect on that user's rows is only
-- certain once the job has recomputed them. So "applied" still means "every
-- row this transaction's changes affect is right"; changes that touch no
-- user of the job are not held up by it. The changes a batch defers are
-- let go in rounds: one per changed edge's tail, in the order of the tail's
-- first change, after every earlier batch's (long_job.deferred_rounds
-- numbers them). The users in D that a deferred change touches are marked
-- wanted by its round, unless an earlier round wanted them already. Chunks
-- take wanted users first, earliest round first, and once no user left in D
-- was wanted by round r or before, the changes of round r are let go: each
-- of their users is either outside D (right since the batch that applied
-- them) or, wanted by r or before, was recomputed by a chunk whose snapshot
-- came after that batch
-- (batches and chunks take the applier lock in turn, and a chunk's
-- snapshot is never older than the last batch: _refuse_stale_snapshot,
-- 060_apply.sql). So a change made during a job waits for the chunks of
-- its own users and of earlier rounds', not for the job, nor for the users
-- of changes made after it. A
-- big change's token waits for the job's last chunk (its region is the
-- job). A backlog's changes are let go as the chunks pass their users:
-- chunks take users in order (wanted ones aside, which only makes some
-- users done sooner), so once every user left in D sorts after the last
-- user upstream of a change's tail (release_after, recorded per tail when
-- the job took the backlog: long_job_backlog_tails), each of those users
-- was recomputed by a chunk that saw the change, by the same argument as
-- for deferred changes. The tail is then released, and its changes with it.
-- Once D is empty, the chunks delete the backlog's rows (_clear_backlog),
-- and the job ends with the last of them.
--
-- A full recomputation (refresh(), a truncate, a batch above p_max_changes
-- without p_chunk_pairs) recomputes every row, and so ends a running job
-- (ended_by = 'full').

-- Whether a long job is running.
create or replace function permgraph._long_job_active() returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return exists (select 1 from permgraph.long_job where finished_at is null);
end $$;

-- Users upstream of each of p_tails (a user tail is its own), through groups,
-- in the union of the current graph and every edge that a change of the
-- batch removed: every user whose rows a change out of that tail may
-- affect, before or after it. The same walk as the `up` part of
-- _build_region. A removed edge is a change row that had a level
-- (old_level: a removal, or a lowering, whose edge is still there) and
-- whose edge is gone. They are few, except in the batch that hands a
-- backlog to a job: gathered by head into one object, looked up by key at
-- each step (as in _build_region: a CTE scanned at every step made a walk
-- quadratic).
-- The edges that the job's own changes removed (long_job_changes, not
-- deferred: a big change _split_off_long_job moved) are walked too. The
-- batch that splits one off defers the changes it keeps that touch the
-- job's users, and those may have been committed before the big change: a
-- revoke g6 -> u4, then the deletion of g10, which u2 reached g6 through.
-- The revoke took (u2, u4) away while g10 was there, so its token must wait
-- for u2's chunk; the walk up from g6 without g10's edges does not reach
-- u2, and the token was let go with u2's row still there (found by a
-- property of test/engine/long-job.test.ts; from migration 058 until then
-- none of them was walked). The edges a backlog's changes removed are not
-- walked (those of one moved here before migration 058 are): a
-- backlog is every change its batch sees, so the changes deferred behind
-- it were all committed after it. A user who reaches p_tails only through
-- such an edge joined D when the job took the backlog; it is in D still,
-- or a chunk has recomputed it from a graph without the edge. Either way a
-- change out of p_tails does not affect its rows (the graph lacked the
-- edge before that change and after), and what its rows still owe the
-- backlog, the backlog's tokens wait for (freshness, at the top of this
-- file). A backlog's were up to a million rows.
create or replace function permgraph._upstream_users(p_tails text[], p_kinds text[])
returns table (o_origin text, o_user_id text)
language plpgsql
set enable_nestloop = off
set search_path = pg_catalog, pg_temp
set jit = off
set plan_cache_mode = force_generic_plan
-- (the queue by its index, as _change_region_sizes)
set enable_seqscan = off
as $$
begin
  return query
  with recursive removed_into as (
    select coalesce(jsonb_object_agg(r.head_id, r.tails), '{}') as by_head
    from (select c.head_id, jsonb_agg(jsonb_build_array(c.tail_id, c.tail_kind)) as tails
          from (select b.tail_id, b.head_id, b.tail_kind, b.old_level from permgraph._batch_changes b where not b.trash_changed
                union all
                -- (the job's own: few, a big change's rows)
                select j.tail_id, j.head_id, j.tail_kind, j.old_level from permgraph.long_job_changes j where not j.deferred) c
          where c.old_level is not null and c.tail_kind <> '*'
            and not exists (select 1 from permgraph.edges e where e.tail_id = c.tail_id and e.head_id = c.head_id)
          group by c.head_id) r
  ), up(origin, node_id, node_kind) as (
    select distinct t.id collate "C", t.id collate "C", t.kind
    from unnest(p_tails, p_kinds) as t(id, kind)
    union
    select u.origin, e.tail_id, e.tail_kind
    from up u
    cross join lateral (
      select x.tail_id, x.tail_kind from permgraph.edges x where x.head_id = u.node_id
      union all
      select (t ->> 0) collate "C", t ->> 1
      from jsonb_array_elements((select by_head from removed_into) -> u.node_id) t) e
    where u.node_kind = 'group'
  )
  select distinct up.origin::text, up.node_id::text from up where up.node_kind = 'user';
end $$;

-- Per distinct changed edge (tail, head) of the pending changes out of a
-- group: an estimate of its region, users who reach the tail x nodes below
-- the head. Only a policy (which changes become a job), never a question of
-- correctness, so it is made cheap, as it runs before every batch: users
-- are counted from the stored rows on the tail (one index range), and the
-- walk below the head is made only for tails that more than one user
-- reaches. A change out of a user is never counted: its region is that
-- user's rows, bounded by what one user reaches. (The exact walks of the
-- whole batch, as _build_region makes them, made batches of many small
-- changes four times slower.) Stored rows lag behind the pending changes: a
-- team created in the same batch as its big grant has none yet, and that
-- batch is applied whole. The queue is read from its low-water mark by the
-- index (_batch_changes, 045_batch_split.sql): right after a backlog moved
-- into a job, changes holds up to a million dead rows, and a scan of them
-- was 40 ms of every batch during the job.
create or replace function permgraph._change_region_sizes()
returns table (o_tail_id text, o_head_id text, o_pairs bigint)
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
begin
  return query
  with recursive group_tails as (
    select t.tail_id, (select count(*) from permgraph.permissions p where p.target_id = t.tail_id) as users
    from (select distinct c.tail_id from permgraph._batch_changes c where c.tail_kind = 'group' and not c.trash_changed) t
  ), candidates as (
    select distinct c.tail_id, c.head_id, c.head_kind, t.users
    from permgraph._batch_changes c
    join group_tails t on t.tail_id = c.tail_id
    where c.tail_kind = 'group' and not c.trash_changed and t.users > 1
  ), down(origin, node_id, node_kind) as (
    select distinct c.head_id, c.head_id, c.head_kind from candidates c
    union
    select d.origin, e.head_id, e.head_kind
    from down d
    cross join lateral (select x.head_id, x.head_kind from permgraph.edges x where x.tail_id = d.node_id) e
    where d.node_kind = 'group'
  )
  select c.tail_id::text, c.head_id::text, (c.users * n.nodes)::bigint
  from candidates c
  join (select d.origin, count(*) as nodes from down d group by d.origin) n on n.origin = c.head_id;
end $$;

-- Opens a job for changes to move into, unless one is running (then they
-- extend it). The last finished job's row and figures make way.
create or replace function permgraph._open_long_job(p_chunk_pairs bigint) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  delete from permgraph.long_job where finished_at is not null;
  insert into permgraph.long_job (chunk_pairs) values (p_chunk_pairs) on conflict (singleton) do nothing;
end $$;

-- Adds to the job every user upstream of p_tails (_upstream_users): their
-- rows are all to be recomputed, again if a chunk already did them, since
-- they must now show the changes just moved. Returns how many joined.
create or replace function permgraph._add_job_users(p_tails text[], p_kinds text[]) returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  users_added bigint;
begin
  insert into permgraph.long_job_users (user_id)
  select distinct w.o_user_id from permgraph._upstream_users(p_tails, p_kinds) w
  on conflict do nothing;
  get diagnostics users_added = row_count;
  return users_added;
end $$;

-- Moves the pending changes that are too big for one transaction into the
-- long job (starting one, or extending the running one): each change whose
-- own region exceeds p_chunk_pairs goes to long_job_changes, and every user
-- upstream of its tail to long_job_users (again, when a chunk already did
-- it: its rows must now show this change too). Many small changes stay
-- together in the batch, however large their regions add up to (a backlog
-- is applied faster by batches than user by user; no single one of them
-- holds the applier long). Trash changes always stay: they rewrite no rows.
-- Returns the number of change rows moved.
create or replace function permgraph._split_off_long_job(p_chunk_pairs bigint) returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  big_tails text[];
  big_heads text[];
  big_pairs bigint;
  moved bigint;
  users_added bigint;
begin
  if p_chunk_pairs < 1 then
    raise exception 'permgraph: p_chunk_pairs must be at least 1 (got %)', p_chunk_pairs using errcode = '22023';
  end if;
  select coalesce(array_agg(s.o_tail_id), '{}'), coalesce(array_agg(s.o_head_id), '{}'), coalesce(sum(s.o_pairs), 0)
    into big_tails, big_heads, big_pairs
  from permgraph._change_region_sizes() s
  where s.o_pairs > p_chunk_pairs;
  if cardinality(big_tails) = 0 then
    return 0;
  end if;
  perform permgraph._open_long_job(p_chunk_pairs);
  with moved_rows as (
    -- (a backlog the job holds stays where it is: the view hides it. Only
    -- changes out of the tail as a group, as measured and walked: a node
    -- deleted and made again as a user has changes of the same pair out of
    -- it as a user, whose user the job would never compute: FINDINGS 58)
    delete from permgraph._batch_changes c
    using unnest(big_tails, big_heads) as b(tail_id, head_id)
    where c.tail_id = b.tail_id and c.head_id = b.head_id and c.tail_kind = 'group' and not c.trash_changed
    returning c.*
  )
  insert into permgraph.long_job_changes (change_id, tail_id, head_id, tail_kind, head_kind, old_level, new_level,
                                          xact_id, captured_at, deferred)
  select id, tail_id, head_id, tail_kind, head_kind, old_level, new_level, xact_id, captured_at, false from moved_rows;
  get diagnostics moved = row_count;
  -- (the big changes' tails are groups: _change_region_sizes)
  users_added := permgraph._add_job_users(big_tails, array_fill('group'::text, array[cardinality(big_tails)]));
  update permgraph.long_job set
    changes = changes + moved, region_estimate = region_estimate + big_pairs, users_total = users_total + users_added
  where finished_at is null;
  return moved;
end $$;

-- Hands the whole queue the batch sees to the long job, when it is a
-- backlog too large for one batch (more than apply_changes' p_max_changes,
-- or a region above its p_max_pairs): every change but trash flags, which
-- rewrite no rows and are applied here. Applied as one batch it was a full
-- recomputation in one transaction, and every change committed meanwhile
-- waited for it: 60-90 s on org large after an outage (bench/FINDINGS.md
-- 50). As a job, it is recomputed a chunk of users at a time, and a fresh
-- change waits for a chunk or two (_defer_overlapping_changes,
-- apply_job_chunk). Correct by the argument at the top of this file: the
-- backlog's users join D, and no change is left pending that rewrites rows.
--
-- The backlog stays where it is, in permgraph.changes: the job's changes
-- are the rows visible in this batch's snapshot (long_job.backlog_snapshot),
-- which _batch_changes hides from every later batch (045_batch_split.sql).
-- Moving a million rows into long_job_changes took 8-14 s on org large, and
-- every write committed meanwhile waited for it (bench/FINDINGS.md 52, 53).
-- What those rows served is kept per tail instead, far fewer rows: its
-- release point (long_job_backlog_tails: its changes' tokens are applied
-- once every user upstream of it is done; is_applied reads it,
-- 080_freshness.sql). The rows are deleted once the job's users are all
-- done (_clear_backlog).
--
-- Says how many changes the job took (taken) and how many the batch read
-- (seen: those and the trash flags it applied). The batch counted the
-- queue only up to its limit (_pending_changes, 045_batch_split.sql), so
-- this read is the first to see all of it: a change asking for a full
-- recomputation ('*', a TRUNCATE) leaves everything as it was, with taken
-- null, and the batch recomputes the table instead.
-- (It returned one number until the second: dropped first.)
drop function if exists permgraph._backlog_to_long_job(bigint);

create or replace function permgraph._backlog_to_long_job(p_chunk_pairs bigint, out taken bigint, out seen bigint)
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
-- (the queue from its low-water mark by the index: 045_batch_split.sql)
set enable_seqscan = off
as $$
declare
  -- (under REPEATABLE READ the batch's own; under READ COMMITTED writers are
  -- locked out, so every statement of the batch sees the same changes)
  taken_in pg_snapshot := pg_current_snapshot();
  trash_roots text[];
  tails text[];
  kinds text[];
  second_kind_tails text[];
  second_kinds text[];
  tail_changes bigint[];
  origins text[];
  last_users text[];
  users_added bigint;
  full_asked boolean;
  first_id bigint;
  last_id bigint;
  per_user double precision;
begin
  -- One read of the queue, a million rows after an outage: each tail's
  -- changes, and the groups whose trash flags changed (a trash flag's row
  -- has its group as both tail and head: 020_capture.sql). A group key
  -- that also held a trash flag's head (a CASE on every row) took 2-3x as
  -- long to hash, ~0.4 s of a million rows; and an array_agg in each group
  -- had the planner sort them instead, its state too large to hash
  -- (bench/FINDINGS.md 54).
  -- One group a tail, whatever its kind: a node deleted and made again
  -- as another kind is one tail with changes of both, and two groups of it
  -- made its row of long_job_backlog_tails twice in one INSERT, which
  -- failed the batch at every try. Its tail is walked as both (a tail is a
  -- user or a group: objects hold no grants and own nothing; '*' is a
  -- TRUNCATE's alone). One key fewer also hashed a million rows ~10%
  -- faster (bench/FINDINGS.md 57).
  select array_agg(q.tail_id::text) filter (where not q.trash_changed),
         array_agg(q.kind) filter (where not q.trash_changed),
         array_agg(q.tail_id::text) filter (where not q.trash_changed and q.second_kind <> q.kind),
         array_agg(q.second_kind) filter (where not q.trash_changed and q.second_kind <> q.kind),
         array_agg(q.changes) filter (where not q.trash_changed),
         array_agg(q.tail_id::text) filter (where q.trash_changed),
         sum(q.changes) filter (where not q.trash_changed), sum(q.changes),
         min(q.first_id) filter (where not q.trash_changed), max(q.last_id) filter (where not q.trash_changed),
         coalesce(bool_or(q.kind = '*' or q.second_kind = '*'), false)
  into tails, kinds, second_kind_tails, second_kinds, tail_changes, trash_roots, taken, seen, first_id, last_id, full_asked
  from (select c.tail_id, c.trash_changed, min(c.tail_kind) as kind, max(c.tail_kind) as second_kind,
               count(*) as changes, min(c.id) as first_id, max(c.id) as last_id
        from permgraph._batch_changes c
        group by c.tail_id, c.trash_changed) q;
  if full_asked then
    taken := null;
    return;
  end if;
  if tails is null then
    -- (trash flags only: the batch applies them as it would any queue)
    taken := 0;
    return;
  end if;
  perform permgraph._open_long_job(p_chunk_pairs);
  -- A job already holding a backlog: its released changes go now, since
  -- their tails may be taken again below, unreleased (a token once applied
  -- stays applied). Rare: a second backlog while the first is recomputed.
  perform permgraph._delete_released_backlog();
  -- Each tail's users join the job; the last of them in the chunks' order
  -- says when the changes out of that tail can be let go (release_after:
  -- once every user left sorts after it, each of theirs is done).
  with reach as materialized (
    select w.o_origin, w.o_user_id from permgraph._upstream_users(tails || second_kind_tails, kinds || second_kinds) w
  ), joined as (
    insert into permgraph.long_job_users (user_id) select distinct r.o_user_id from reach r
    on conflict do nothing
    returning 1
  )
  select (select count(*) from joined), array_agg(l.o_origin), array_agg(l.last_user)
  into users_added, origins, last_users
  from (select r.o_origin, max(r.o_user_id collate "C") as last_user from reach r group by r.o_origin) l;
  insert into permgraph.long_job_backlog_tails as t (tail_id, release_after, changes)
  select q.tail_id,
         -- ('': a tail no user reaches, let go by the next chunk)
         coalesce(l.last_user, ''), q.changes
  from unnest(tails, tail_changes) as q(tail_id, changes)
  left join unnest(origins, last_users) as l(origin, last_user) on l.origin = q.tail_id
  on conflict (tail_id) do update set
    release_after = greatest(t.release_after, excluded.release_after), changes = t.changes + excluded.changes;
  -- A job running before this batch may have deferred some of these
  -- changes: the backlog holds their tokens now.
  delete from permgraph.long_job_changes d
  where d.deferred and d.change_id in (select c.id from permgraph._batch_changes c);
  -- Trash flags rewrite no rows: applied here, and gone, so that every row
  -- the snapshot saw is the job's, and the batches' reads of the queue can
  -- start at the snapshot's xmin (_batch_changes), this batch's rest too.
  if trash_roots is not null then
    perform permgraph._refresh_trash(trash_roots);
    delete from permgraph._batch_changes c where c.trash_changed;
  end if;
  -- (the job's region as status shows it: the stored rows of a sample of
  -- its users, whose rows vary too much for the table's mean to do)
  select avg((select count(*) from permgraph.permissions p where p.user_id = s.user_id)) into per_user
  from (select j.user_id from permgraph.long_job_users j order by md5(j.user_id) limit 32) s;
  update permgraph.long_job set
    -- (from here on, no batch sees these rows: 045_batch_split.sql)
    backlog_snapshot = taken_in,
    backlog_cleared_to = least(backlog_cleared_to, first_id),
    backlog_max_id = greatest(backlog_max_id, last_id),
    changes = changes + taken, backlog_changes = backlog_changes + taken, users_total = users_total + users_added,
    region_estimate = region_estimate + (users_added * coalesce(per_user, 1))::bigint
  where finished_at is null;
end $$;

-- The backlog's changes whose tails are released (their tokens applied):
-- deleted, as _clear_backlog would at the job's end. Before a second
-- backlog joins the job (_backlog_to_long_job), since it may take their
-- tails again. One read of the backlog's rows.
create or replace function permgraph._delete_released_backlog() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  held_in pg_snapshot := (select j.backlog_snapshot from permgraph.long_job j where j.finished_at is null);
begin
  if held_in is null then
    return;
  end if;
  delete from permgraph.changes c
  using permgraph.long_job_backlog_tails t
  where t.released and t.tail_id = c.tail_id and permgraph._in_backlog(c.xact_id, held_in);
  delete from permgraph.long_job_backlog_tails t where t.released;
end $$;

-- Once the job's users are all done, every change of its backlog is
-- released, and its rows go, p_rows ids at a time (a chunk each, so that
-- no transaction holds the applier long: deleting them all at once is
-- what the move used to cost). Says how many it deleted, and whether none
-- is left: then the backlog's tails are emptied and its snapshot
-- forgotten (from then on, batches would see any row of it left).
create or replace function permgraph._clear_backlog(p_rows bigint, out deleted bigint, out done boolean)
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  job permgraph.long_job;
  clear_to bigint;
begin
  deleted := 0;
  done := true;
  select * into job from permgraph.long_job where finished_at is null;
  if job.backlog_snapshot is null then
    return;
  end if;
  clear_to := job.backlog_cleared_to + p_rows;
  -- (by the primary key: the ids a snapshot saw are nearly all the backlog's)
  delete from permgraph.changes c
  where c.id >= job.backlog_cleared_to and c.id < clear_to
    and permgraph._in_backlog(c.xact_id, job.backlog_snapshot);
  get diagnostics deleted = row_count;
  if clear_to <= job.backlog_max_id then
    update permgraph.long_job set backlog_cleared_to = clear_to where finished_at is null;
    done := false;
    return;
  end if;
  delete from permgraph.long_job_backlog_tails;
  update permgraph.long_job set backlog_snapshot = null, backlog_cleared_to = null, backlog_max_id = null
  where finished_at is null;
end $$;

-- While a job runs: keeps a copy, in long_job_changes (deferred), of every
-- pending change that may affect the rows of a user the job has not done
-- yet, so that its token is not applied before those rows are right. Those
-- users are marked wanted by the round of the change's tail: the next
-- chunks take them first, and once they and every user an earlier round
-- wanted are done, the round's changes are let go (apply_job_chunk).
-- Returns the number of change rows deferred. (The queue by its index, as
-- _change_region_sizes.)
create or replace function permgraph._defer_overlapping_changes() returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
set enable_seqscan = off
as $$
declare
  deferred_rows bigint;
  numbered bigint;  -- the rounds numbered before this batch
begin
  select j.deferred_rounds into numbered from permgraph.long_job j where j.finished_at is null;
  with tails as (
    select array_agg(t.tail_id::text order by t.tail_id) as ids, array_agg(t.tail_kind order by t.tail_id) as kinds
    from (select distinct c.tail_id, c.tail_kind from permgraph._batch_changes c where not c.trash_changed and c.tail_kind <> '*') t
  ), hit as materialized (
    select w.o_origin, w.o_user_id
    from tails a
    cross join lateral permgraph._upstream_users(a.ids, a.kinds) w
    where exists (select 1 from permgraph.long_job_users j where j.user_id = w.o_user_id)
  ), tail_round as materialized (
    -- (each tail its round, in the order of its first change: the writes
    -- committed first, which have waited longest, are let go first)
    select f.tail_id, numbered + dense_rank() over (order by f.first_id) as round
    from (select c.tail_id, min(c.id) as first_id
          from permgraph._batch_changes c
          where not c.trash_changed and c.tail_id in (select o_origin from hit)
          group by c.tail_id) f
  ), marked as (
    -- (a user an earlier round wanted keeps that round: its changes wait for it)
    update permgraph.long_job_users j set wanted_round = w.round
    from (select h.o_user_id, min(t.round) as round from hit h join tail_round t on t.tail_id = h.o_origin group by h.o_user_id) w
    where j.user_id = w.o_user_id and j.wanted_round is null
  )
  insert into permgraph.long_job_changes (change_id, tail_id, head_id, tail_kind, head_kind, old_level, new_level,
                                          xact_id, captured_at, deferred, deferred_round)
  select c.id, c.tail_id, c.head_id, c.tail_kind, c.head_kind, c.old_level, c.new_level, c.xact_id, c.captured_at, true, t.round
  from permgraph._batch_changes c
  join tail_round t on t.tail_id = c.tail_id
  where not c.trash_changed;
  get diagnostics deferred_rows = row_count;
  if deferred_rows > 0 then
    update permgraph.long_job set deferred = deferred + deferred_rows,
      deferred_rounds = (select max(d.deferred_round) from permgraph.long_job_changes d where d.deferred)
    where finished_at is null;
  end if;
  return deferred_rows;
end $$;

-- Records, for each tombstone whose id exists again and which no batch has
-- recorded yet, the users of the job that may still hold rows of the
-- deleted node: those holding a row on its id, and the id itself if it is a
-- user of the job. From then on the tombstone hides only their rows (the
-- top of this file says why that is right). Called at the end of every
-- batch during a job, after any users it added have joined. A tombstone
-- whose id does not exist hides every row of it, all of them the old
-- node's, and is recorded only if the id is made again: a deleted group's
-- holders may be every user of a big job. (Before, a tombstone hid every
-- row of its id until no user of the job held one: a node made again had
-- the rows of users outside the job hidden, and of users who joined the
-- job later, whose tokens read applied, bench/FINDINGS.md 58.)
create or replace function permgraph._record_tombstone_waits() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  -- (one statement, which writes nothing when no id is made again: nearly always)
  with remade as materialized (
    select distinct d.id from permgraph.deleted_nodes d
    where not d.waits_recorded and exists (select 1 from permgraph.nodes n where n.id = d.id)
  ), recorded as (
    insert into permgraph.long_job_tombstone_waits (node_id, user_id)
    select t.id, h.user_id
    from remade t
    cross join lateral (select p.user_id from permgraph.permissions p where p.target_id = t.id
                        union
                        select t.id) h
    where exists (select 1 from permgraph.long_job_users j where j.user_id = h.user_id)
    on conflict do nothing
  )
  update permgraph.deleted_nodes d set waits_recorded = true
  from remade t
  where d.id = t.id and not d.waits_recorded;
end $$;

-- Removes the tombstones that hide no row any more (the top of this file
-- has the rules): a recorded one once the users recorded for it have all
-- left the job, each recomputed by a chunk whose snapshot saw the deletion;
-- one not recorded once its id has no row at all. (A chunk
-- dropped an unrecorded one as soon as no user of the job held a row on
-- its id, while users outside the job still held rows of the old node
-- that then showed as the new node's: bench/FINDINGS.md 58.)
create or replace function permgraph._prune_deleted_nodes() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  delete from permgraph.long_job_tombstone_waits w
  where not exists (select 1 from permgraph.long_job_users j where j.user_id = w.user_id);
  -- (by id, not by this row's flag: while any tombstone of the id is
  -- unrecorded, as when a node made again is deleted again, the id hides
  -- every row, and all its tombstones stay until it has no row left)
  delete from permgraph.deleted_nodes d
  where case when exists (select 1 from permgraph.deleted_nodes u where u.id = d.id and not u.waits_recorded)
          then not exists (select 1 from permgraph.permissions p where p.user_id = d.id)
               and not exists (select 1 from permgraph.permissions p where p.target_id = d.id)
          else not exists (select 1 from permgraph.long_job_tombstone_waits w where w.node_id = d.id)
        end;
  delete from permgraph.long_job_tombstone_waits w
  where not exists (select 1 from permgraph.deleted_nodes d where d.id = w.node_id);
end $$;

-- Ends the running job, if any: after its last chunk, or after a full
-- recomputation (which recomputed every row). Its changes' tokens turn
-- applied in this transaction.
create or replace function permgraph._end_long_job(p_ended_by text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  delete from permgraph.long_job_users;
  delete from permgraph.long_job_changes;
  delete from permgraph.long_job_tombstone_waits;
  -- (a backlog's rows: cleared by its chunks, or deleted with the whole
  -- queue by the full recomputation's batch, 060_apply.sql)
  delete from permgraph.long_job_backlog_tails;
  update permgraph.long_job set finished_at = clock_timestamp(), ended_by = p_ended_by,
    backlog_snapshot = null, backlog_cleared_to = null, backlog_max_id = null
  where finished_at is null;
end $$;

-- Every row of the users p_users at p_at, computed from scratch and added
-- to pg_temp.permgraph_rows (a chunk, which empties it first and measures
-- its users by the rows returned; _write_diff(p_users => ...) then compares
-- all their stored rows with these). The walk of _compute_region
-- with no border to seed from: each user's edges, then groups pass paths
-- on, one state per (node, level, last edge, until). Returns the rows.
-- Before, a chunk built the region of its users (every pair they reach,
-- and every pair they have a row for) and ran _compute_region on it, which
-- probes the region at every step and looks for border edges into every
-- pair of it, none of them there: a user with 13,800 rows took 0.6-0.9 s
-- on org large after a backlog (bench/FINDINGS.md 52).
create or replace function permgraph._compute_users(p_users text[], p_at timestamptz) returns bigint
language plpgsql
-- each step of the walk probes the edges by tail, whatever the statistics
-- say of a few users; one plan for every call (a chunk makes several)
set enable_hashjoin = off
set enable_mergejoin = off
set plan_cache_mode = force_generic_plan
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  computed bigint;
begin
  insert into pg_temp.permgraph_rows (user_id, target_id, level, traverse_owned, valid_until, bound1, bound2)
  with recursive walk(user_id, node_id, node_kind, level, last_edge_manage, until) as (
    select e.tail_id, e.head_id, e.head_kind, e.level, e.level = 3 and e.head_kind = 'user', coalesce(e.expires_at, 'infinity')
    from permgraph.nodes u
    join permgraph.edges e on e.tail_id = u.id
    where u.id = any(p_users) and u.kind = 'user' and (e.expires_at is null or e.expires_at > p_at)
    union
    select w.user_id, e.head_id, e.head_kind, least(w.level, e.level), e.level = 3 and e.head_kind = 'user',
           least(w.until, coalesce(e.expires_at, 'infinity'))
    from walk w
    join permgraph.edges e on e.tail_id = w.node_id
    where w.node_kind = 'group' and (e.expires_at is null or e.expires_at > p_at)
  ), paths as (
    select user_id, node_id, node_kind, level, last_edge_manage, until from walk
    union all
    select u.id, u.id, 'user', 3::smallint, true, 'infinity'::timestamptz
    from permgraph.nodes u
    where u.id = any(p_users) and u.kind = 'user'
  ), per_pair as (
    select user_id, node_id as target_id, node_kind, max(level)::smallint as level,
           max(until) as until1,
           max(until) filter (where level >= 2) as until2,
           max(until) filter (where level = 3) as until3,
           max(until) filter (where permgraph._path_traverses(node_kind, last_edge_manage)) as traverse_until
    from paths
    group by user_id, node_id, node_kind
  )
  select user_id, target_id, level, traverse_until is not null,
         permgraph._valid_until(level, until1, until2, until3, traverse_until),
         permgraph._level_bound(node_kind, level, 1, until1, until2),
         permgraph._level_bound(node_kind, level, 2, until2, until3)
  from per_pair;
  get diagnostics computed = row_count;
  return computed;
end $$;

-- After a chunk: lets go the changes that no longer wait for the job (the
-- top of this file says why each is right), and returns how many.
-- * Deferred changes of every round before the earliest one a user left in
--   the job was wanted by (all of them when none is): each one's users in
--   the job were marked wanted by its round or an earlier one when it was
--   deferred (and a chunk's snapshot sees every batch before it), so every
--   row they touch has been recomputed since they committed.
-- * A backlog's changes whose users are all done: the tails each of whose
--   users sorts at or before its release_after (_backlog_to_long_job),
--   when every user left in the job sorts after it, or none is left. Their
--   rows stay in the queue, hidden from batches, until _clear_backlog;
--   is_applied counts a released tail's changes as applied.
-- All by partial indexes: planned inside apply_job_chunk, each was a scan
-- of the whole table, together 300 ms of every chunk after a backlog of a
-- million changes on org large.
create or replace function permgraph._release_waiting_changes() returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
set enable_seqscan = off
as $$
declare
  deferred_rows bigint;
  backlog_rows bigint;
  moved_rows bigint;
  first_left text collate "C";
begin
  delete from permgraph.long_job_changes d
  where d.deferred
    and d.deferred_round < coalesce((select min(u.wanted_round) from permgraph.long_job_users u where u.wanted_round is not null),
                                    9223372036854775807);
  get diagnostics deferred_rows = row_count;
  select min(u.user_id) into first_left from permgraph.long_job_users u;
  if first_left is null then  -- (no user left: all of them)
    with released as (update permgraph.long_job_backlog_tails t set released = true where not t.released returning t.changes)
    select coalesce(sum(r.changes), 0) into backlog_rows from released r;
    -- (a backlog a job took before migration 058 moved its rows here)
    delete from permgraph.long_job_changes j where j.release_after is not null;
  else
    with released as (
      update permgraph.long_job_backlog_tails t set released = true
      where not t.released and t.release_after < first_left
      returning t.changes
    )
    select coalesce(sum(r.changes), 0) into backlog_rows from released r;
    delete from permgraph.long_job_changes j where j.release_after < first_left;
  end if;
  get diagnostics moved_rows = row_count;
  return deferred_rows + backlog_rows + moved_rows;
end $$;

-- The users a chunk keeps of its last step: of p_users, computed in that
-- order into pg_temp.permgraph_rows, each one that starts while the rows
-- (computed, or stored when more) of those before it are below p_room:
-- those that fit, and the first that does not. The others' computed rows
-- are dropped, and left to the next chunk, which computes them again.
-- Dropping that first one too would bound a chunk by its bound alone, but
-- after a backlog it made the catch-up 17-62% longer (its walk done twice
-- for every heavy user a step met after another), against up to 25% for this
-- (bench/FINDINGS.md 56).
create or replace function permgraph._trim_chunk_step(p_users text[], p_room bigint,
  out kept text[], out kept_rows bigint, out dropped_pairs bigint)
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
as $$
begin
  select coalesce(array_agg(r.user_id order by r.ord) filter (where r.fits), '{}'),
         coalesce(sum(r.size) filter (where r.fits), 0)
  into kept, kept_rows
  from (
    select s.user_id, s.ord, s.size,
           coalesce(sum(s.size) over (order by s.ord rows between unbounded preceding and 1 preceding), 0) < p_room as fits
    from (
      select u.user_id, u.ord,
             greatest((select count(*) from pg_temp.permgraph_rows w where w.user_id = u.user_id),
                      (select count(*) from permgraph.permissions p where p.user_id = u.user_id)) as size
      from unnest(p_users) with ordinality u(user_id, ord)
    ) s
  ) r;
  delete from pg_temp.permgraph_rows w where w.user_id = any(p_users) and w.user_id <> all(kept);
  get diagnostics dropped_pairs = row_count;
end $$;

-- Applies one chunk of the running long job, in the caller's transaction
-- (REPEATABLE READ, as apply_changes): recomputes every row of the next
-- users of the job, from the graph at p_at (default: the clock), writing
-- only differences. The chunk takes users until their rows (computed, or
-- stored when it deletes more) reach the job's chunk_pairs (p_max_pairs
-- overrides it), at least one: it computes one
-- user, then as many more as the rest of the bound holds at the mean so
-- far, at most as many again as it has. Sized in advance from the pairs
-- per user of earlier chunks, chunks ran to 3-5 times the bound after a
-- backlog (users' rows as stored leave out what the backlog adds, and
-- differ a hundredfold: bench/FINDINGS.md 52). Grown that way, a chunk
-- still ran to 43,000 pairs (0.8 s on org large) when its last step took
-- three of the heavy users (bench/FINDINGS.md 56): a step that takes the
-- chunk past its bound keeps the users up to the first that does not fit
-- (_trim_chunk_step), so a chunk holds at most its bound and one user.
-- Users a deferred change
-- touches (wanted) come first, earliest round first, and alone: a chunk of
-- them is over sooner, and each round's deferred changes are let go, their
-- tokens applied, once its users and the earlier rounds' are done. Once a
-- chunk of them holds an eighth of its bound, it ends with the round it is
-- in: a round's tokens wait for the chunk that ends it, and on org large,
-- after a backlog, a chunk that took the users of five rounds ran 0.48 s,
-- which the first round's write waited for whole (bench/FINDINGS.md 57).
-- Below that, rounds share a chunk: a chunk's fixed cost, some milliseconds,
-- is then more than its rows'. After
-- the last user, chunks delete the rows of the job's backlog, if it took
-- one (_clear_backlog); the last chunk ends the job.
create or replace function permgraph.apply_job_chunk(
  p_max_pairs bigint default null,
  p_at timestamptz default null
) returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  started timestamptz := clock_timestamp();
  job permgraph.long_job;
  batch_at timestamptz;
  bound bigint;
  wanted_only boolean;
  chunk_users text[] := '{}';
  next_users text[];
  next_rounds bigint[];
  computed bigint;
  last_user text collate "C" := '';
  last_round bigint := -1;
  take bigint := 1;
  measured bigint := 0;
  step_rows bigint;
  trimmed boolean;
  pairs bigint := 0;
  diff record;
  remaining bigint;
  let_go bigint := 0;
  cleared_rows bigint := 0;
  backlog_cleared boolean := false;
  finished boolean;
  elapsed double precision;
begin
  batch_at := permgraph._begin_applying('apply_job_chunk', p_at);
  -- (a chunk writes its users' rows only; the table's others would stay
  -- missing, and the table no longer look empty: 060_apply.sql)
  if permgraph._permissions_missing() then
    raise exception 'permgraph: permgraph.permissions is empty while the graph has users: a full recomputation comes first'
      using errcode = '55000', hint = 'select permgraph.apply_changes() (it recomputes the table in full, and ends the job) or permgraph.refresh()';
  end if;
  if p_max_pairs < 1 then
    raise exception 'permgraph: apply_job_chunk(p_max_pairs => %) must be at least 1', p_max_pairs using errcode = '22023';
  end if;
  select * into job from permgraph.long_job where finished_at is null;
  if not found then
    return jsonb_build_object('mode', 'none');
  end if;
  bound := coalesce(p_max_pairs, job.chunk_pairs);
  wanted_only := exists (select 1 from permgraph.long_job_users where wanted_round is not null);
  perform permgraph._prepare_region_tables();
  loop
    if wanted_only then
      select array_agg(s.user_id order by s.wanted_round, s.user_id), array_agg(s.wanted_round order by s.wanted_round, s.user_id)
      into next_users, next_rounds
      from (select j.user_id, j.wanted_round from permgraph.long_job_users j
            where j.wanted_round is not null and (j.wanted_round, j.user_id) > (last_round, last_user)
              -- (past an eighth of its bound, a chunk ends with its round;
              -- its first user is taken whatever the bound: a chunk of no
              -- users is the one after the job's last)
              and (cardinality(chunk_users) = 0 or measured < bound / 8 or j.wanted_round <= last_round)
            order by j.wanted_round, j.user_id limit take) s;
    else
      select array_agg(s.user_id order by s.user_id) into next_users
      from (select j.user_id from permgraph.long_job_users j where j.user_id > last_user order by j.user_id limit take) s;
    end if;
    exit when next_users is null;
    computed := permgraph._compute_users(next_users, batch_at);
    -- (the rows the chunk writes: the computed ones, or the stored ones it
    -- deletes, when there are more, as for users a backlog took out of a
    -- big group)
    step_rows := greatest(computed, (select count(*) from permgraph.permissions p where p.user_id = any(next_users)));
    -- (a chunk's first step is one user, kept whatever its size)
    trimmed := cardinality(chunk_users) > 0 and measured + step_rows > bound;
    if trimmed then
      select t.kept, t.kept_rows, computed - t.dropped_pairs into next_users, step_rows, computed
      from permgraph._trim_chunk_step(next_users, bound - measured) t;
    end if;
    pairs := pairs + computed;
    measured := measured + step_rows;
    chunk_users := chunk_users || next_users;
    exit when trimmed;
    last_user := next_users[cardinality(next_users)];
    last_round := coalesce(next_rounds[cardinality(next_rounds)], last_round);
    take := least(cardinality(chunk_users),
                  floor((bound - measured) / (greatest(measured, 1)::double precision / cardinality(chunk_users))))::bigint;
    exit when take < 1;
  end loop;
  if cardinality(chunk_users) = 0 then
    -- every user is done (or the job's changes reached none): what is left
    -- is its backlog's rows, if any, to delete. Ten ids a pair of the bound:
    -- deleting a change row writes no index, and costs a fraction of
    -- writing a permissions row (bench/FINDINGS.md 53).
    select c.deleted, c.done into cleared_rows, backlog_cleared from permgraph._clear_backlog(bound * 10) c;
    select 0::bigint as inserted, 0::bigint as updated, 0::bigint as deleted into diff;
  else
    if pairs > 200 then  -- (see _build_region)
      analyze pg_temp.permgraph_rows;
    end if;
    select * into diff from permgraph._write_diff(true, p_users => chunk_users);
    -- (the chunk's region: the rows computed, and the stored rows gone)
    pairs := pairs + diff.deleted;
    delete from permgraph.long_job_users where user_id = any(chunk_users);
    -- (a tombstone that waited for these users goes now)
    perform permgraph._prune_deleted_nodes();
  end if;
  let_go := permgraph._release_waiting_changes();
  select count(*) into remaining from permgraph.long_job_users;
  elapsed := permgraph._ms_since(started);
  update permgraph.long_job set
    users_done = users_done + cardinality(chunk_users),
    -- (for status: the mean over the job's chunks so far)
    pairs_per_user = case when cardinality(chunk_users) = 0 then pairs_per_user
                          else (coalesce(pairs_per_user, 0) * users_done + pairs) / (users_done + cardinality(chunk_users)) end,
    chunks = chunks + 1, last_chunk_at = clock_timestamp(), last_chunk_ms = elapsed,
    rows_inserted = rows_inserted + diff.inserted, rows_updated = rows_updated + diff.updated,
    rows_deleted = rows_deleted + diff.deleted, released = released + let_go
  where finished_at is null;
  -- A row version of applier_state that an older snapshot cannot see, as
  -- every batch leaves one: a batch or chunk whose snapshot was taken
  -- before this chunk committed, and which then waited for the applier lock,
  -- fails at once with a serialization failure and is retried
  -- (_refuse_stale_snapshot), instead of diffing against rows it cannot
  -- see. Without it an application's refresh() beside the worker inserted
  -- a row this chunk had written: a unique violation, never retried
  -- (test/worker/concurrent-writers.test.ts). The values stay: a chunk
  -- applies no change of the queue, which is what last_batch_snapshot says.
  update permgraph.applier_state set last_batch_snapshot = last_batch_snapshot;
  -- (a backlog's rows are deleted by the chunks after its last user's)
  finished := remaining = 0 and (backlog_cleared or job.backlog_snapshot is null);
  if finished then
    perform permgraph._end_long_job('chunks');
    perform permgraph._prune_deleted_nodes();
  end if;
  return jsonb_build_object(
    'mode', 'chunk', 'users', cardinality(chunk_users), 'users_remaining', remaining,
    'region_pairs', pairs, 'inserted', diff.inserted, 'updated', diff.updated, 'deleted', diff.deleted,
    'released', let_go, 'backlog_cleared', cleared_rows, 'finished', finished, 'ms', elapsed);
end $$;
