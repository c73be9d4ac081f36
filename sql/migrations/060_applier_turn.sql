-- permgraph 060: the applier's turn, a table lock a batch or chunk takes
-- before the applier lock, so that a REPEATABLE READ batch can wait for it
-- before its snapshot is taken. A batch that took its snapshot and then
-- waited behind a long job's chunks was stale once a chunk committed, and
-- with the worker's chunks back to back every retry of an application's
-- applyChanges() or refresh() could lose the same way (bench/FINDINGS.md 59).
-- LOCK TABLE is the one statement that waits without taking a snapshot, so
-- the library starts its REPEATABLE READ batch with it
-- (sql/functions/060_apply.sql, _begin_applying, has the protocol).

-- No columns and no rows: it is only ever locked. The worker's role may
-- lock it, which needs UPDATE (900_privileges.sql), and with no column to
-- set there is nothing that right could update.
create table if not exists permgraph.applier_turn ();
