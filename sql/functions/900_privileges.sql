-- Who may do what: the roles applications are granted, and nothing else.
-- The current definition: `permgraph migrate` re-applies this file whenever
-- its content changes, and runs permgraph._apply_privileges() after every
-- migration run that changed anything (so objects created later are covered).
--
--   permgraph_reader  read the tables (the RLS policies and the documented
--                     joins read them as the querying role) and call the
--                     query functions.
--   permgraph_writer  the reader's rights, plus INSERT/UPDATE/DELETE on nodes
--                     and grants. Everything those writes cause (edges,
--                     captured changes, tombstones, audit rows) is written by
--                     security definer triggers owned by the schema's owner.
--   permgraph_worker  the reader's rights, plus the engine's entry points:
--                     apply_changes, apply_local_changes, apply_job_chunk,
--                     refresh, verify (security definer), and the key of the
--                     applier role's advisory lock.
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

create or replace function permgraph._apply_privileges() returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  roles constant text := 'permgraph_reader, permgraph_writer, permgraph_worker';
  readable constant text :=
    'permgraph.nodes, permgraph.grants, permgraph.edges, permgraph.permissions, permgraph.effective_permissions, '
    'permgraph.trashed_groups, permgraph.deleted_nodes, permgraph.changes, permgraph.applier_state, '
    'permgraph.long_job, permgraph.long_job_users, permgraph.long_job_changes, '
    'permgraph.roles, permgraph.operations, permgraph.audit_log, '
    'permgraph.permission_changes, permgraph.change_consumers, '
    -- what the CLI reads to tell whether the schema matches the package
    'permgraph.migrations, permgraph.function_files';
  query_functions constant text[] := array[
    'permgraph.check(text, text, integer)', 'permgraph.check(text, text, integer, boolean)',
    'permgraph.check_op(text, text, text)', 'permgraph.check_op(text, text, text, boolean)',
    'permgraph.can(text, text, text, integer)', 'permgraph.can(text, text, text, integer, boolean)',
    'permgraph.can_op(text, text, text, text)', 'permgraph.can_op(text, text, text, text, boolean)',
    'permgraph.is_trashed(text)', 'permgraph.effective_group_trash(text[])',
    'permgraph.role_level(text)', 'permgraph.operation_level(text)',
    'permgraph.list_targets(text, integer, text, text, integer)', 'permgraph.list_users(text, integer, text, integer)',
    -- list_rows runs as the caller (it reads the caller's own table), and so
    -- its plan choice (which reads nothing) and its read of the user's owners
    'permgraph.list_rows(anyelement, name, name, text, integer, text, integer)',
    'permgraph._listing_plan(bigint, boolean, bigint, boolean, double precision, double precision, integer, boolean)',
    'permgraph._listing_owners(text, integer, text[], bigint)',
    'permgraph.explain(text, text, integer)',
    'permgraph.current_token()', 'permgraph.is_applied(text)', 'permgraph.status()', 'permgraph.change_stream_status()',
    'permgraph.current_actor()',
    -- creating policies needs ownership of the application's table anyway;
    -- they run as the caller, so the caller runs their helpers too (which
    -- read the catalog and build text, nothing else)
    'permgraph.enable_rls(regclass, name, name, boolean)', 'permgraph.disable_rls(regclass)',
    'permgraph._rls_policy_names()', 'permgraph._rls_column(regclass, name)', 'permgraph._rls_require_app_table(regclass)',
    'permgraph._access_predicate(text, text, text, text, text)'];
  worker_functions constant text[] := array[
    'permgraph.apply_changes(integer, bigint, boolean, timestamptz, bigint, bigint)', 'permgraph.apply_job_chunk(bigint, timestamptz)',
    'permgraph.apply_local_changes(integer, bigint, bigint, bigint)',
    'permgraph.refresh()', 'permgraph.verify(timestamptz)',
    'permgraph._applier_role_key()'];
  -- The change stream's consumers (170_changes.sql), whatever their role:
  -- security definer, so consumers move their own position and nobody
  -- writes the stream's tables directly.
  consumer_functions constant text[] := array[
    'permgraph.register_consumer(text)', 'permgraph.read_changes(text, integer, bigint)',
    'permgraph.ack_changes(text, bigint)', 'permgraph.drop_consumer(text)'];
  signature text;
begin
  perform permgraph._ensure_role('permgraph_reader');
  perform permgraph._ensure_role('permgraph_writer');
  perform permgraph._ensure_role('permgraph_worker');

  execute 'revoke all on schema permgraph from public';
  execute format('grant usage on schema permgraph to %s', roles);

  execute format('revoke all on all tables in schema permgraph from public, %s', roles);
  execute format('revoke all on all sequences in schema permgraph from public, %s', roles);
  execute format('revoke all on all functions in schema permgraph from public, %s', roles);
  -- (functions created later get PUBLIC's EXECUTE until this runs again:
  -- ALTER DEFAULT PRIVILEGES IN SCHEMA cannot revoke PostgreSQL's own
  -- default, only what it granted, and FOR ROLE without IN SCHEMA would
  -- change the owner's functions in every schema; docs/security.md)

  execute format('grant select on %s to %s', readable, roles);
  execute 'grant insert, update, delete on permgraph.nodes, permgraph.grants to permgraph_writer';

  foreach signature in array query_functions loop
    execute format('grant execute on function %s to %s', signature, roles);
  end loop;
  foreach signature in array worker_functions loop
    execute format('grant execute on function %s to permgraph_worker', signature);
  end loop;
  foreach signature in array consumer_functions loop
    execute format('grant execute on function %s to %s', signature, roles);
  end loop;
end $$;
