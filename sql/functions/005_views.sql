-- Views over the materialized table: what applications should read.
-- The current definition of these views: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- The permission rows that count now: permgraph.permissions without
--   * the rows of nodes deleted since the worker's last batch
--     (permgraph.deleted_nodes; the worker removes those rows, and a node
--     re-created with the same id must not inherit them meanwhile). While
--     a long job runs, a batch records which users of the job may still
--     hold rows of the deleted node (long_job_tombstone_waits,
--     065_long_job.sql); from then on the tombstone hides only theirs, and
--     the rows of every other user on a node made again under that id show;
--   * the rows whose valid_until has passed (docs/semantics.md, "Expiring
--     grants"): a grant on their paths has expired, and the row is wrong
--     until the engine recomputes it. Absent, not lowered: access fails
--     closed at the second of the expiry, with or without a running worker,
--     and a lower level that another path still gives comes back with the
--     recomputation.
-- Every read function reads through this view, and so should applications'
-- own joins. The expiry test is written exactly so, on the row's own column,
-- which both covering indexes of permissions include: a check or a listing
-- through this view stays an index-only scan.
-- valid_until is the last column because `create or replace view` can only
-- append columns.
-- The tombstones are tested per row only while there are any (between a
-- node's delete and the worker's next batch): the first test runs once per
-- query, and probing the empty table twice per row took more than half of
-- a check() (33 us against 16 us per read on org small). A tombstone hides
-- a row of its id as user or target unless it is recorded and the row's
-- user is not among its waits: the rule of _tombstoned_ids
-- (120_listing.sql), written out per row here, where a function call
-- would not be inlined.
create or replace view permgraph.effective_permissions as
  select p.user_id, p.target_id, p.level, p.traverse_owned, p.valid_until
  from permgraph.permissions p
  where (p.valid_until is null or p.valid_until > now())
    and (not exists (select 1 from permgraph.deleted_nodes)
         or (not exists (select 1 from permgraph.deleted_nodes d
                         where d.id = p.user_id
                           and (not d.waits_recorded
                                or exists (select 1 from permgraph.long_job_tombstone_waits w
                                           where w.node_id = d.id and w.user_id = p.user_id)))
             and not exists (select 1 from permgraph.deleted_nodes d
                             where d.id = p.target_id
                               and (not d.waits_recorded
                                    or exists (select 1 from permgraph.long_job_tombstone_waits w
                                               where w.node_id = d.id and w.user_id = p.user_id)))));
