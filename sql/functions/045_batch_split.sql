-- Splitting a large mixed batch: removals first, additions in the next batch.
-- The current definition of these functions and this view: `permgraph
-- migrate` re-applies this file whenever its content changes (sql/README.md).
--
-- Why. A batch that only adds is walked semi-naively and written in one
-- statement (_write_additions, 050_region.sql); one that also removes takes
-- the region path for its additions too. Measured on org large (10,000
-- churn changes, half additions and half removals, backend CPU):
-- ~0.30-0.33 ms per change as one batch, ~0.25-0.28 as two, the removals'
-- and the additions' (bench/FINDINGS.md, finding 8). A worker that falls
-- behind gathers such batches.
--
-- The same holds for the small batches a worker takes while it keeps up
-- (tens of changes, applied by the one-statement path, 055_local_change.sql):
-- the region statement recomputes the additions' regions as well, where the
-- semi-naive one follows only the rows that rise. Org large, churn applied
-- as one mixed batch or as its removals then its additions, both by that
-- path (server time per change, medians of 24-30 interleaved rounds;
-- bench/FINDINGS.md, finding 34): 16 changes 416 vs 440 us (two batches'
-- fixed costs outweigh it), 24 changes 473 vs 384, 32 changes 405 vs 333,
-- 48 changes 387 vs 335, 64 changes 374 vs 300.
--
-- What. When the pending queue holds at least _split_min_changes() changes
-- and mixes changes that remove or lower an edge with changes that add or
-- raise one, apply_changes takes only the removals (and lowerings), in
-- queue order, and leaves the rest pending; its result says so
-- (more_pending), and the worker's next batch, started right away, takes
-- them. A part of at most _local_change_max_changes() changes is applied by
-- the one-statement path like a whole small queue (the statements read the
-- queue through _batch_changes), a larger one by the ordinary path. Not
-- with node deletions, trash changes, expiries or a running long job (those
-- batches stay whole, as before).
--
-- Only in a session that asks for it (the setting
-- permgraph.split_mixed_batches = on; the worker's, src/engine/apply.ts
-- useWorkerSession): anywhere else apply_changes() applies every change it
-- sees as one batch, as its callers are promised (a synchronous apply,
-- `worker --once`, a test that applies and then reads).
--
-- Why it is exact. Let the batch take the removals R and leave the
-- additions A, with the graph G now (A's edges included) and the table
-- equal to the computation of G with R and A undone. The region of R,
-- walked through the union of G and R's removed edges (_build_region), is
-- every pair with a path through an edge of R in either graph: A removes
-- no edge, so that union is the old and new graphs' union, and the
-- recomputation writes the pairs of the region as they are in G. Every
-- other pair has no path through an edge of R, so its row differs from G's
-- only through A's edges: rows too low by paths through added edges, which
-- is what the next batch, additions only, raises. What must not happen is
-- removed edges on both sides of a split (a cap at a plain prefix of the
-- queue does that): a path u -r1-> g -r2-> t whose r1 is applied first is
-- found by neither batch, the first walking down from g through current
-- edges only, the second up from g without r1, and the row of (u, t)
-- stays (test/engine/batch-split.test.ts holds such a split off). The
-- one-statement path on a part: its region statement reads the users above
-- a removed edge from the stored rows on its tail, where the ordinary path
-- walks up the union graph. A user whose only old path to that tail runs
-- through a pending addition has no such row, but no stored row of theirs
-- counts a path through the removed edge either (the addition was never
-- applied), and no new path runs through it: nothing of theirs is left to
-- lower. Rows left too high by an additions batch (below) are on paths
-- whose last removed edge r has every later edge current, and the user's
-- old path up to r's tail is stored: the region of r holds them. Why
-- removals first rather than additions first (as exact, by the same
-- argument): a revocation then waits for no addition. A freshness token is
-- applied only once all its change rows are (080_freshness.sql), so a
-- writer's transaction that both removed and added is applied with the
-- second batch; meanwhile no row is above what the current graph gives
-- (the removals are in, some additions not yet).
--
-- Alternation. Under a steady stream of both kinds, new removals arrive
-- while a removals batch runs, so the next batch is mixed again, and
-- taking its removals again would leave the additions pending for good: a
-- worker offered 2,000 churn changes/s took ten removals batches in a row,
-- each larger and slower, while 29,000 additions waited (bench/FINDINGS.md,
-- finding 22). So the batch after a removals batch takes the additions
-- instead (applier_state.last_batch_part says which part the last batch
-- took), and every change waits for at most one batch of the other kind.
-- Additions first is exact by the argument above with the parts swapped:
-- rows raised by extending a stored row that still counts a pending
-- removal's edge are pairs with a path through that edge in the union
-- graph, which is the removals batch's region, recomputed there; and where
-- such a row stopped the semi-naive walk (it did not rise), the pairs below
-- are below the removed edge's head too, so in the same region.

-- Whether a change row removes or lowers an edge (a removal, in the
-- split's terms; every other row adds or raises one). An SQL-standard body,
-- inlined where it is used.
create or replace function permgraph._change_removes(p_old_level smallint, p_new_level smallint) returns boolean
language sql immutable
return p_old_level is not null and (p_new_level is null or p_new_level < p_old_level);

-- Which part of the pending queue the current batch takes: 'removals',
-- 'additions' (every change that does not remove or lower an edge), or ''
-- (all of it). Set by apply_changes for one batch (transaction-local, reset
-- at its start and by _end_batch), so that the functions reading the queue
-- need no new parameter. An SQL-standard body with no SET clause (its
-- names resolved when it was created): the planner inlines it into the
-- queries that read it, where a SET clause had it planned at every call.
create or replace function permgraph._batch_part() returns text
language sql stable
return coalesce(pg_catalog.current_setting('permgraph.batch_part', true), '');

-- Whether a change row is part of the backlog a long job holds in place
-- (p_backlog: long_job.backlog_snapshot, null when there is none): its
-- transaction is visible in the snapshot of the batch that took the
-- backlog (which applied the trash flags among them and deleted them). An
-- SQL-standard body, inlined where it is used (see _batch_part); so
-- p_backlog, a subquery where it is used, is named once: the planner
-- inlines no function that would evaluate such an argument twice, and
-- called per row it was 2 us a row, 12 s of the batch that took a
-- million-change backlog (bench/FINDINGS.md 53). (pg_visible_in_snapshot is
-- strict: null, so false, when there is no backlog.)
create or replace function permgraph._in_backlog(p_xact_id xid8, p_backlog pg_snapshot) returns boolean
language sql immutable
return coalesce(pg_catalog.pg_visible_in_snapshot(p_xact_id, p_backlog), false);

-- The pending changes the current batch applies: every row of
-- permgraph.changes above the queue's low-water mark, or only its part
-- (_batch_part). Every read of the queue by a batch goes through it; a
-- statement that reads it should read it by changes_xact_idx (the
-- functions that only read the queue turn sequential scans off).
--
-- The low-water mark (applier_state.queue_low_water): every change row
-- that is not yet applied has an xact_id at or above it. A batch that
-- applies the whole visible queue records the oldest transaction its
-- snapshot saw running (pg_snapshot_xmin: _end_batch, and the local
-- statements in 050_region.sql and 055_local_change.sql). Why that holds:
-- a transaction below it had finished when the snapshot was taken, so its
-- change rows, if it committed, were visible to the batch and deleted by
-- it; a transaction running then, or started later, has an xid at or above
-- it (and capture records the writer's own, pg_current_xact_id()). A split
-- part leaves the mark where it was. Reads of the queue start at the mark
-- by changes_xact_idx, so the rows earlier batches deleted, dead until
-- vacuum reclaims them, are not visited: with the default
-- autovacuum_naptime (a minute) a busy queue held 37,000 of them, and a
-- one-change batch that read them whole took 2.76 ms instead of 0.81
-- (bench/FINDINGS.md 33). '0' before the first such batch. A mark is
-- this cluster's transaction id: one restored from another cluster (a
-- logical backup) is forgotten by the first batch here, before it reads
-- the queue (048_cluster_identity.sql).
--
-- A backlog too large for one batch stays in the queue as a long job's
-- (_backlog_to_long_job, 065_long_job.sql): the rows visible in the
-- snapshot of the batch that took it are the job's, and no batch sees them.
-- Every row below that snapshot's xmin is one of them (its transaction had
-- ended when the snapshot was taken; the batch applied and deleted the
-- trash flags among them), so reads start there too: they are nearly all
-- below it, and the rest of that batch, whose mark is still below them,
-- read the million rows of a backlog five times over, ~1.3 s on org large
-- (bench/FINDINGS.md 53).
--
-- The mark and the part are each read once per query (an uncorrelated
-- scalar subquery), the mark by the view itself and the part by
-- _batch_part, inlined. Both were SQL functions with a SET clause, which
-- the planner never inlines: on PostgreSQL 14-17 planned again at every
-- query that read the view, 20-45 us of each read there, several reads a
-- batch (bench/FINDINGS.md 36). The row filters test those values first,
-- once read: with no backlog held and no part taken (nearly always), a row
-- costs a test of each, not the backlog's snapshot test and the CASE, which
-- made a read of a backlog's million rows ~20% slower (bench/FINDINGS.md 57).
create or replace view permgraph._batch_changes as
  select c.*
  from permgraph.changes c
  where c.xact_id >= (select greatest(coalesce((select s.queue_low_water from permgraph.applier_state s), '0'::xid8),
                                      coalesce((select pg_snapshot_xmin(j.backlog_snapshot) from permgraph.long_job j), '0'::xid8)))
    -- (not a backlog a long job holds in place: 065_long_job.sql)
    and ((select j.backlog_snapshot from permgraph.long_job j) is null
         or not permgraph._in_backlog(c.xact_id, (select j.backlog_snapshot from permgraph.long_job j)))
    and ((select permgraph._batch_part() = '')
         or case (select permgraph._batch_part())
              when 'removals' then permgraph._change_removes(c.old_level, c.new_level)
              when 'additions' then not permgraph._change_removes(c.old_level, c.new_level)
              else true end);

-- (the mark was read through this function until the view read it itself)
drop function if exists permgraph._queue_low_water();

-- How many changes the current batch has pending (_batch_changes), whether
-- one asks for a full recomputation ('*'), and whether every one adds an
-- edge that was not there (old_level null: a new grant, node or owner),
-- which lets the local path choose its statement without a query of its
-- own (055_local_change.sql). One read of the queue for the three.
--
-- Counted up to p_count_to + 1 (null: the whole queue): a caller asks only
-- whether the queue fits a limit, and a queue above it reads as one more
-- than the limit, its needs_full and adds_only then describing only the
-- rows read. A backlog after an outage is a million rows or more; counting
-- it whole took ~0.5 s of the batch that takes it, and the worker counted it
-- three more times before that batch (apply_local_changes, _local_batch_size
-- and the split's count), while every write committed meanwhile waited
-- (bench/FINDINGS.md 54). Who reads past the limit reads the rest itself:
-- _backlog_to_long_job (065_long_job.sql) finds a '*' there.
-- (Its result gained adds_only, and later its argument: a function's result
-- type cannot change in place, and a new argument makes a second function.
-- Dropped first. DROP FUNCTION ignores OUT arguments.)
drop function if exists permgraph._pending_changes();

create or replace function permgraph._pending_changes(p_count_to bigint default null,
  out pending bigint, out needs_full boolean, out adds_only boolean)
language plpgsql stable
set search_path = pg_catalog, pg_temp
set jit = off
-- (from the low-water mark by the index, past the dead rows below it)
set enable_seqscan = off
as $$
begin
  select count(*), coalesce(bool_or(c.tail_kind = '*'), false),
         coalesce(bool_and(c.old_level is null), true)
  into pending, needs_full, adds_only
  from (select b.tail_kind, b.old_level from permgraph._batch_changes b limit p_count_to + 1) c;
end $$;

-- The groups whose trash flag the current batch's changes set or cleared
-- (null: none), by the low-water mark's index (045_batch_split.sql).
create or replace function permgraph._batch_trash_roots() returns text[]
language plpgsql stable
set search_path = pg_catalog, pg_temp
set jit = off
set enable_seqscan = off
as $$
begin
  return (select array_agg(distinct c.head_id) from permgraph._batch_changes c where c.trash_changed);
end $$;

-- The fewest pending changes a worker session splits (see the top of this
-- file: below it, the second batch's fixed costs outweigh what it saves).
create or replace function permgraph._split_min_changes() returns bigint
language sql immutable
set search_path = pg_catalog, pg_temp
as $$ select 24::bigint $$;

-- Splits the pending queue when it is one to split (see the top of this
-- file): a session that asks for it, at least _split_min_changes() changes,
-- some removing or lowering an edge and some not, and none
-- deleting a node or changing a trash flag; the caller tests the rest (no
-- expiry, no long job). The part taken is the removals, unless the last
-- batch took them (then the additions: see Alternation above). Returns how
-- many changes the batch takes, with _batch_changes narrowed to them; null
-- when the batch stays whole.
create or replace function permgraph._split_batch(p_pending bigint) returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
-- (the queue from its low-water mark by the index, past the dead rows below it)
set enable_seqscan = off
as $$
declare
  part text;
  taken bigint;
begin
  if coalesce(pg_catalog.current_setting('permgraph.split_mixed_batches', true), '') <> 'on'
     or p_pending < permgraph._split_min_changes()
     or exists (select 1 from permgraph.deleted_nodes)
     or exists (select 1 from permgraph._batch_changes where tail_kind = '*' or trash_changed) then
    return null;
  end if;
  select case when last_batch_part = 'removals' then 'additions' else 'removals' end into part
  from permgraph.applier_state;
  perform pg_catalog.set_config('permgraph.batch_part', coalesce(part, 'removals'), true);
  select count(*) into taken from permgraph._batch_changes;
  if taken > 0 and taken < p_pending then
    return taken;
  end if;
  perform pg_catalog.set_config('permgraph.batch_part', '', true);
  return null;
end $$;
