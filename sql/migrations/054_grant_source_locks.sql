-- permgraph 054: one row per grant source that syncGrants has set, locked
-- (FOR UPDATE) by each sync of that source, so that two syncs of one source
-- run one after the other. It replaces an advisory lock keyed by the
-- source, which any login that may connect could take and hold, stopping
-- every sync of that source (and with it the revocations it carries).
-- Only the schema's owner may lock these rows: syncs take the lock through
-- permgraph._lock_grant_source (sql/functions/160_sync_grants.sql).
create table if not exists permgraph.grant_source_locks (
  source text collate "C" primary key
);
