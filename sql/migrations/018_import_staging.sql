-- permgraph 018: import staging keeps a CSV row's line instead of a text
-- origin (a query's row is described by its key, and only when reported:
-- formatting every staged row cost more than staging it), and validate and
-- load take the levels the library resolved (sql/functions/150_import.sql).
alter table permgraph.import_nodes add column if not exists line bigint;
alter table permgraph.import_grants add column if not exists line bigint;
update permgraph.import_nodes set line = substring(origin from ' line ([0-9]+)$')::bigint where origin ~ ' line [0-9]+$';
update permgraph.import_grants set line = substring(origin from ' line ([0-9]+)$')::bigint where origin ~ ' line [0-9]+$';
alter table permgraph.import_nodes drop column if exists origin;
alter table permgraph.import_grants drop column if exists origin;
drop function if exists permgraph._import_validate(text);
drop function if exists permgraph._import_load(text, boolean);
