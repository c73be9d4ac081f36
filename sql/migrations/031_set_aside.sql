-- permgraph 031: indexes and foreign keys set aside for a bulk write are
-- built again by one function, _rebuild_set_aside (sql/functions/
-- 015_work_tables.sql), for the exclusive import as for the full refresh's
-- first fill; the import's own two restore functions go, and so does the
-- fill's _drop_permission_indexes, which returned its rebuild statements.
drop function if exists permgraph._import_restore_indexes();
drop function if exists permgraph._import_restore_foreign_keys();
drop function if exists permgraph._drop_permission_indexes();
