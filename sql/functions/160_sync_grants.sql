-- What syncGrants (src/app/sync-grants.ts) needs of the database besides the
-- grants themselves. The current definition: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- Takes the lock of grant source p_source until the caller's transaction
-- ends: a second sync of the same source waits here until the first
-- commits, and then, under READ COMMITTED, sees its writes. A row lock of
-- grant_source_locks (made on the source's first sync), which only the
-- schema's owner may take: security definer, granted to permgraph_writer
-- (900_privileges.sql). It was an advisory lock until a review found that
-- a login with nothing but CONNECT could hold its key and stop every sync
-- of that source (test/security/writers.test.ts).
create or replace function permgraph._lock_grant_source(p_source text) returns void
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- (a concurrent first sync of the source waits here for the other's row,
  -- then finds it)
  insert into permgraph.grant_source_locks (source) values (p_source) on conflict (source) do nothing;
  perform from permgraph.grant_source_locks where source = p_source for update;
end $$;
