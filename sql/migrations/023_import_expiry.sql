-- permgraph 023: an import's grants may carry expires_at (migration 020):
-- staged as text like trash_at, validated, then loaded into grants.expires_at.
alter table permgraph.import_grants add column if not exists expires_at text;

-- _import_load takes whether the grants input has an expires_at column (its
-- current definition is in sql/functions/150_import.sql).
drop function if exists permgraph._import_load(text, boolean, jsonb);
