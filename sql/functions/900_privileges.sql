-- Who may do what: the roles applications are granted, and nothing else.
-- The current definition: `permgraph migrate` re-applies this file whenever
-- its content changes, and runs permgraph._apply_privileges() after every
-- migration run that changed anything (so objects created later are covered)
-- or found a right missing (_missing_rights: a backup restored into a
-- cluster without the roles).
--
--   permgraph_reader  read the tables (the RLS policies and the documented
--                     joins read them as the querying role) and call the
--                     query functions.
--   permgraph_writer  the reader's rights, plus INSERT/UPDATE/DELETE on nodes
--                     and grants, and the lock of a grant source that
--                     syncGrants takes. Everything those writes cause (edges,
--                     captured changes, tombstones, audit rows) is written by
--                     security definer triggers owned by the schema's owner.
--   permgraph_worker  the reader's rights, plus the engine's entry points:
--                     apply_changes, apply_local_changes, apply_job_chunk,
--                     refresh, verify (security definer), the key of the
--                     applier role's advisory lock, and the lock of the
--                     applier's turn (UPDATE on applier_turn, which has no
--                     column to update: LOCK TABLE in EXCLUSIVE mode needs
--                     it; 060_apply.sql).
-- No role but the schema's owner can write any other table, and PUBLIC can
-- execute no permgraph function. Rights are granted to each role directly
-- (not through membership in permgraph_reader) so that an owner who may not
-- administer roles created by someone else can still apply them.

-- Creates a NOLOGIN role unless it exists. Roles belong to the whole server:
-- another database may create the same one concurrently.
create or replace function permgraph._ensure_role(p_name text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if exists (select 1 from pg_roles where rolname = p_name) then
    return;
  end if;
  execute format('create role %I nologin', p_name);
exception
  when duplicate_object or unique_violation then
    null;
  when insufficient_privilege then
    raise exception 'permgraph: role % does not exist and % may not create roles', p_name, current_user
      using errcode = '42501',
            hint = format('a superuser can create it (create role %I nologin) or grant CREATEROLE to %I; then run permgraph migrate again',
                          p_name, current_user);
end $$;

-- The rights the three roles are granted, one row per role, privilege and
-- object: what _apply_privileges grants and _missing_rights checks.
create or replace function permgraph._granted_rights()
returns table (grantee text, privilege text, kind text, object text)
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  roles constant text[] := array['permgraph_reader', 'permgraph_writer', 'permgraph_worker'];
  readable constant text[] := array[
    'permgraph.nodes', 'permgraph.grants', 'permgraph.edges', 'permgraph.permissions', 'permgraph.effective_permissions',
    'permgraph.trashed_groups', 'permgraph.deleted_nodes', 'permgraph.changes', 'permgraph.applier_state',
    'permgraph.long_job', 'permgraph.long_job_users', 'permgraph.long_job_changes',
    'permgraph.long_job_backlog_tails', 'permgraph.long_job_tombstone_waits', 'permgraph._unapplied_changes',
    'permgraph.roles', 'permgraph.operations', 'permgraph.audit_log',
    'permgraph.permission_changes', 'permgraph.change_consumers',
    -- what the CLI reads to tell whether the schema matches the package
    'permgraph.migrations', 'permgraph.function_files'];
  query_functions constant text[] := array[
    'permgraph.check(text, text, integer)', 'permgraph.check(text, text, integer, boolean)',
    'permgraph.check_op(text, text, text)', 'permgraph.check_op(text, text, text, boolean)',
    'permgraph.can(text, text, text, integer)', 'permgraph.can(text, text, text, integer, boolean)',
    'permgraph.can_op(text, text, text, text)', 'permgraph.can_op(text, text, text, text, boolean)',
    'permgraph.is_trashed(text)', 'permgraph.effective_group_trash(text[])',
    'permgraph.role_level(text)', 'permgraph.operation_level(text)',
    'permgraph.list_targets(text, integer, text, text, integer)', 'permgraph.list_users(text, integer, text, integer)',
    -- list_rows runs as the caller (it reads the caller's own table), and so
    -- its plan choice (which reads nothing), its read of the user's owners
    -- and of the ids tombstones hide from the user, and its check of the user
    'permgraph.list_rows(anyelement, name, name, text, integer, text, integer)',
    'permgraph._listing_plan(bigint, boolean, bigint, boolean, double precision, double precision, integer, boolean)',
    'permgraph._listing_owners(text, integer, text[], bigint)', 'permgraph._tombstoned_ids(text)',
    'permgraph._require_user(text)', 'permgraph._require_node(text, text)',
    'permgraph.explain(text, text, integer)',
    'permgraph.current_token()', 'permgraph.is_applied(text)', 'permgraph.status()', 'permgraph.change_stream_status()',
    'permgraph.current_actor()',
    -- creating policies needs ownership of the application's table anyway;
    -- they run as the caller, so the caller runs their helpers too (which
    -- read the catalog and build text, nothing else)
    'permgraph.enable_rls(regclass, name, name, boolean)', 'permgraph.disable_rls(regclass)',
    'permgraph._rls_policy_names()', 'permgraph._rls_column(regclass, name)', 'permgraph._rls_require_app_table(regclass, regclass)',
    'permgraph._rls_tree(regclass)', 'permgraph._rls_install(regclass, name, name, boolean)',
    -- doctor's check of the tables below a protected one (it reads the catalog)
    'permgraph._rls_unprotected()',
    'permgraph._access_predicate(text, text, text, text, text)',
    -- what _unapplied_changes calls (its rows' owner: a long job's
    -- backlog or the queue), for the roles that read it
    'permgraph._in_backlog(xid8, pg_snapshot)',
    -- doctor's check of these rights, as any of the roles (it reads the catalog)
    'permgraph._granted_rights()', 'permgraph._missing_rights()'];
  worker_functions constant text[] := array[
    'permgraph.apply_changes(integer, bigint, boolean, timestamptz, bigint, bigint)', 'permgraph.apply_job_chunk(bigint, timestamptz)',
    'permgraph.apply_local_changes(integer, bigint, bigint, bigint)',
    'permgraph.refresh()', 'permgraph.verify(timestamptz)',
    'permgraph._applier_role_key()'];
  -- What syncGrants takes as a writer (160_sync_grants.sql): the lock of a
  -- grant source, which no role may take on the table itself.
  writer_functions constant text[] := array['permgraph._lock_grant_source(text)'];
  -- The change stream's consumers (170_changes.sql), whatever their role:
  -- security definer, so consumers move their own position and nobody
  -- writes the stream's tables directly.
  consumer_functions constant text[] := array[
    'permgraph.register_consumer(text)', 'permgraph.read_changes(text, integer, bigint)',
    'permgraph.ack_changes(text, bigint)', 'permgraph.drop_consumer(text)'];
begin
  return query
    select r, 'usage', 'schema', 'permgraph' from unnest(roles) r
    union all
    select r, 'select', 'table', t from unnest(roles) r, unnest(readable) t
    union all
    select 'permgraph_writer', p, 'table', t
    from unnest(array['insert', 'update', 'delete']) p, unnest(array['permgraph.nodes', 'permgraph.grants']) t
    union all
    select r, 'execute', 'function', f from unnest(roles) r, unnest(query_functions || consumer_functions) f
    union all
    select 'permgraph_writer', 'execute', 'function', f from unnest(writer_functions) f
    union all
    select 'permgraph_worker', 'update', 'table', 'permgraph.applier_turn'
    union all
    select 'permgraph_worker', 'execute', 'function', f from unnest(worker_functions) f;
end $$;

-- The rights of _granted_rights that are missing, one line each, roles that
-- do not exist first: empty on a schema that migrate has granted. They go
-- missing when a backup is restored into a cluster without the roles
-- (pg_restore cannot grant a role that does not exist), or when someone
-- revokes them; `permgraph migrate` grants them again, and doctor reports
-- them. Rights beyond these (PUBLIC's, which migrate revokes) are not
-- looked at: a function of the application's own in the schema has them.
create or replace function permgraph._missing_rights() returns text[]
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(array_agg(m.line order by m.missing_role desc, m.line), '{}')
  from (
    select distinct true as missing_role, format('role %s does not exist', r.grantee) as line
    from permgraph._granted_rights() r
    where not exists (select 1 from pg_roles a where a.rolname = r.grantee)
    union all
    select false, format('%s lacks %s on %s %s', r.grantee, upper(r.privilege), r.kind, r.object)
    from permgraph._granted_rights() r
    where case
      when not exists (select 1 from pg_roles a where a.rolname = r.grantee) then false
      when r.kind = 'schema' then not has_schema_privilege(r.grantee, r.object, r.privilege)
      when r.kind = 'table' then not has_table_privilege(r.grantee, r.object, r.privilege)
      else not has_function_privilege(r.grantee, r.object, r.privilege)
    end
  ) m
$$;

-- Grants the three roles exactly their rights (_granted_rights), creating a
-- role that does not exist, and takes every other right on the schema's
-- objects from them and from PUBLIC. The schema's owner only: migrate runs
-- it after every run that changed something or found a right missing.
create or replace function permgraph._apply_privileges() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  roles text;
  owner name := (select n.nspowner::regrole::text from pg_namespace n where n.nspname = 'permgraph');
  statement record;
begin
  if not pg_has_role(current_user, (select n.nspowner from pg_namespace n where n.nspname = 'permgraph'), 'USAGE') then
    raise exception 'permgraph: the roles'' rights are granted by the schema''s owner, %; % is not it', owner, current_user
      using errcode = '42501', hint = format('run permgraph migrate as %s', owner);
  end if;
  perform permgraph._ensure_role(r) from (select distinct grantee as r from permgraph._granted_rights()) g;
  select string_agg(distinct quote_ident(grantee), ', ') into roles from permgraph._granted_rights();

  execute 'revoke all on schema permgraph from public';
  execute format('revoke all on all tables in schema permgraph from public, %s', roles);
  execute format('revoke all on all sequences in schema permgraph from public, %s', roles);
  execute format('revoke all on all functions in schema permgraph from public, %s', roles);
  -- (functions created later get PUBLIC's EXECUTE until this runs again:
  -- ALTER DEFAULT PRIVILEGES IN SCHEMA cannot revoke PostgreSQL's own
  -- default, only what it granted, and FOR ROLE without IN SCHEMA would
  -- change the owner's functions in every schema; docs/security.md)

  -- one GRANT for the objects that the same roles get the same privilege on
  for statement in
    select format('grant %s on %s %s to %s', privilege, kind, string_agg(object, ', ' order by object), grantees) as text
    from (select privilege, kind, object, string_agg(quote_ident(grantee), ', ' order by grantee) as grantees
          from permgraph._granted_rights() group by privilege, kind, object) o
    group by privilege, kind, grantees
  loop
    execute statement.text;
  end loop;
end $$;
