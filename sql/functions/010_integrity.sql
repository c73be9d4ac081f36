-- Integrity rules: bad input to nodes and grants becomes a clear error,
-- raised before anything is written, so a refused statement leaves every
-- table untouched.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- Serializes the cycle check of concurrent ownership changes: two
-- transactions could otherwise each add half of a cycle. A lock on this
-- view (LOCK TABLE, EXCLUSIVE mode, held to the end of the transaction),
-- not an advisory lock: pg_advisory_lock is open to every login that may
-- connect, and a login with no permgraph role at all that held the key
-- stopped every owner change of a user or group until it let go
-- (test/security/writers.test.ts). Locking the view in any mode that
-- conflicts with EXCLUSIVE needs UPDATE, DELETE or TRUNCATE on it, which
-- no role but the schema's owner has (and the ACCESS SHARE that a refused
-- read of it may take for an instant conflicts with nothing here); the
-- triggers that take it run as the owner. Locking a view locks the
-- relations it reads, and this one reads none.
create or replace view permgraph._ownership_change_lock as select true as held;

-- (the advisory lock's key, until the view above replaced it)
drop function if exists permgraph._ownership_lock_key();

-- Ids: what permgraph accepts as a node id, everywhere (SQL, API, import).
-- Null when p_id is acceptable, else what is wrong with it.
create or replace function permgraph._id_problem(p_id text) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
  select case
    when p_id is null then 'is null'
    when p_id = '' then 'is empty'
    when length(p_id) > 256 then format('is %s characters long (at most 256)', length(p_id))
    when p_id ~ '[[:cntrl:]]' then 'contains a control character'
  end
$$;

-- Moments: what permgraph stores as a trash time or an expiry. Finite and
-- in the years 1 to 9999 (UTC), which ISO 8601 text and a JavaScript Date
-- both carry; 'infinity' is no moment (for never, null), and every reader
-- of the tables, the command line and the TypeScript API included, must be
-- able to show what is stored. src/expiry.ts (writableMoment) refuses the
-- same in TypeScript; the triggers' WHEN clauses below repeat the test as
-- plain expressions. Null for null (no moment), which no caller refuses.
-- p_at appears once: inlined into the import's checks, where it is a cast
-- of staged text, it is cast once per row.
create or replace function permgraph._moment_in_range(p_at timestamptz) returns boolean
language sql immutable
return p_at <@ tstzrange('0001-01-01 00:00:00+00'::timestamptz, '10000-01-01 00:00:00+00'::timestamptz);

-- An id for an error message: quoted, control characters shown as '?', and
-- cut after 64 characters (a 1 MB id must not come back in every error).
create or replace function permgraph._describe_id(p_id text) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
  select case
    when p_id is null then 'null'
    when length(p_id) <= 64 then '"' || regexp_replace(p_id, '[[:cntrl:]]', '?', 'g') || '"'
    else format('"%s…" (%s characters)', regexp_replace(left(p_id, 64), '[[:cntrl:]]', '?', 'g'), length(p_id))
  end
$$;

-- A grant's key: its tail, head and source are one entry of the unique
-- index grants_unique_per_source (and of edges' primary key), which holds at
-- most ~2,700 bytes. Ids of 256 characters and a source of 1,024 fit in
-- ASCII, not in every script (a review's CJK grant failed the index itself,
-- "index row size 3040 exceeds btree version 4 maximum 2704", and an
-- import could then never finish): at most 2,600 bytes together, in UTF-8,
-- whether the value would compress or not. Null when the key fits. The
-- grants' BEFORE trigger's WHEN clause repeats the test as an expression.
create or replace function permgraph._grant_key_problem(p_tail_id text, p_head_id text, p_source text) returns text
language sql immutable
return case when octet_length(p_tail_id) + octet_length(p_head_id) + octet_length(p_source) > 2600
  then format('grant %s -> %s: its tail, head and source are %s bytes together in UTF-8 (at most 2600: one entry of the grants'' unique index)',
              permgraph._describe_id(p_tail_id), permgraph._describe_id(p_head_id),
              octet_length(p_tail_id) + octet_length(p_head_id) + octet_length(p_source)) end;

-- Whether this transaction holds a lock on permgraph.nodes that keeps every
-- other transaction from deleting a node (or changing its id) until it
-- ends: SHARE or stronger, which conflicts with the ROW EXCLUSIVE a DELETE
-- needs. The import's load takes one (src/app/import/load.ts); while it is
-- held, the per-statement checks below need not lock the nodes they find
-- (FOR KEY SHARE, a write to each node row), since none of them can go
-- away. The setting permgraph.nodes_locked = on only says "look": the lock
-- itself is what is checked, so setting it without the lock changes nothing
-- (and without the setting, pg_locks, which copies the whole lock table, is
-- never read). PL/pgSQL, not SQL: an SQL function with a SET clause is never
-- inlined, and its query was parsed and planned again at every call, once
-- per statement that writes grants or nodes.
create or replace function permgraph._nodes_locked_against_deletes() returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  if coalesce(current_setting('permgraph.nodes_locked', true), '') <> 'on' then
    return false;
  end if;
  return exists (
    select 1 from pg_locks l
    where l.locktype = 'relation' and l.relation = 'permgraph.nodes'::regclass
      and l.database = (select d.oid from pg_database d where d.datname = current_database())
      and l.pid = pg_backend_pid() and l.granted
      and l.mode in ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock'));
end $$;

-- A capture trigger (020_capture.sql) fires before its statement's
-- validation and reads the kinds of the nodes its edges join. It read them
-- unlocked: a node deleted by a concurrent transaction and made again as
-- another kind in between (or one it did not find, written as 'group',
-- made meanwhile) left an edge of the wrong kind, which validation, finding
-- the node made again, let through; a user made again from a group's id
-- then had no rows, and a batch could compute two rows for one pair
-- (bench/FINDINGS.md 61). So the capture reads them here: the nodes of
-- p_ids that exist, with their kinds, each locked FOR KEY SHARE as
-- validation locks it. None can be deleted before this transaction ends,
-- so these kinds stay theirs. A missing one is not returned (its edge is
-- written as 'group'); it sets p_flag, and validation, if it then finds
-- every node, fails the statement as a serialization failure
-- (_refuse_missed_capture_end). One read: locking them first and reading
-- the kinds again cost the bulk insert a second probe per end. p_ids
-- distinct. Under an import's locks no node is deleted
-- (_nodes_locked_against_deletes), but the load writes its edges itself,
-- with the insert triggers off; the UPDATE captures, which it does fire,
-- ask first and skip this.
drop function if exists permgraph._lock_captured_ends(text[], text);
create or replace function permgraph._captured_ends(p_ids text[], p_flag text) returns table (id text, kind text)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  found_ids text[];
  found_kinds text[];
begin
  select array_agg(x.id), array_agg(x.kind) into found_ids, found_kinds
  from unnest(p_ids) as e(id)
  cross join lateral (select x.id, x.kind from permgraph.nodes x where x.id = e.id for key share offset 0) x;
  if coalesce(cardinality(found_ids), 0) < cardinality(p_ids) then
    perform pg_catalog.set_config(p_flag, 'on', true);
  end if;
  return query select f.id, f.kind from unnest(found_ids, found_kinds) as f(id, kind);
end $$;

-- Validation found every node its statement's rows name: if that
-- statement's capture missed one (_captured_ends set p_flag), the node
-- was made meanwhile, and the edge's kind may be wrong. The transaction is
-- run again (40001), as after any other conflict with a concurrent writer.
create or replace function permgraph._refuse_missed_capture_end(p_flag text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if coalesce(pg_catalog.current_setting(p_flag, true), '') = 'on' then
    perform pg_catalog.set_config(p_flag, '', true);
    raise exception 'permgraph: a node this statement names was made by a concurrent transaction while the statement ran'
      using errcode = '40001', hint = 'run the transaction again';
  end if;
end $$;

-- Row by row: what one row can show on its own. Owners and cycles are
-- checked per statement (below), so the order of rows within a statement
-- never matters.
--
-- It runs only for a row that breaks a rule: the triggers' WHEN clauses
-- (below) hold the same tests as plain expressions, which the executor
-- evaluates without calling any function (a plpgsql call per row cost a
-- bulk insert ~20 µs a row). They must stay a superset of what raises
-- here. It must be a BEFORE trigger: the row is refused before the table's
-- own constraints (not null, nodes_kind_valid, nodes_superuser_is_user) see
-- it, so the clear error is the one raised.
create or replace function permgraph._nodes_validate() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  problem text;
begin
  if tg_op = 'UPDATE' and new.id is distinct from old.id then
    raise exception 'permgraph: cannot change the id of node % to %; insert a new node instead',
      permgraph._describe_id(old.id), permgraph._describe_id(new.id) using errcode = '22023';
  end if;
  if tg_op = 'UPDATE' and new.kind is distinct from old.kind then
    raise exception 'permgraph: cannot change the kind of node % from % to %; delete and re-create it',
      permgraph._describe_id(old.id), old.kind, new.kind using errcode = '22023';
  end if;
  if tg_op = 'INSERT' then
    problem := permgraph._id_problem(new.id);
    if problem is not null then
      raise exception 'permgraph: node id % %; an id is 1 to 256 characters with no control characters',
        permgraph._describe_id(new.id), problem using errcode = '22023';
    end if;
    if new.kind is null or new.kind not in ('user', 'group', 'object') then
      raise exception 'permgraph: node % has kind %; the kind must be user, group or object',
        permgraph._describe_id(new.id), permgraph._describe_id(new.kind) using errcode = '23514';
    end if;
  end if;
  if new.owner_id = new.id then
    if new.kind = 'object' then
      raise exception 'permgraph: node % cannot be owned by object %; only users and groups own',
        permgraph._describe_id(new.id), permgraph._describe_id(new.owner_id) using errcode = '23514';
    elsif new.kind = 'group' then
      raise exception 'permgraph: ownership cycle: group % cannot own itself', permgraph._describe_id(new.id)
        using errcode = '23514';
    end if;
    -- a user owning itself is allowed and changes nothing
  end if;
  if (tg_op = 'INSERT' or new.trash_at is distinct from old.trash_at) and not permgraph._moment_in_range(new.trash_at) then
    raise exception 'permgraph: node % trash_at % is outside the years 1 to 9999 (for no trash time, null)',
      permgraph._describe_id(new.id), new.trash_at using errcode = '22023';
  end if;
  if new.is_superuser and new.kind <> 'user' then
    raise exception 'permgraph: only users can be superusers; node % is % %', permgraph._describe_id(new.id),
      case new.kind when 'object' then 'an' else 'a' end, new.kind
      using errcode = '23514';
  end if;
  return new;
end $$;

-- The cycle check's walk (_validate_owned, _nodes_validate_inserted): from
-- each start node (p_starts, its owner at the same place in p_owners) up
-- through the owners, one step per round; a walk that comes back to its
-- start is a cycle. A walk also stops at a node it has already passed (a
-- cycle among other nodes of the statement, which their own walks report).
-- Returns the first cycle (null: none) and, when p_visited, every node the
-- walks passed. Each step looks its owner up by key: LATERAL with OFFSET 0
-- keeps it a probe that no plan turns around (a join did, with statistics
-- saying no node has an owner: 5,000 inserted groups read the owned nodes
-- once per walk row, 25,000,000 rows), and the probe has no other
-- condition, so it is one of the primary key (with the owner test inside
-- it, those statistics made it a scan of nodes_owner_idx at every step).
-- Planned once per session (a generic plan): every read is by key.
create or replace function permgraph._ownership_cycle(p_starts text[], p_owners text[], p_visited boolean,
  out cycle_path text, out visited text[])
language plpgsql stable
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
begin
  with recursive walk(start_id, node_id, path) as (
    select s.id, s.owner_id, array[s.id, s.owner_id]
    from unnest(p_starts, p_owners) as s(id, owner_id)
    union all
    select w.start_id, o.owner_id::text, w.path || o.owner_id::text
    from walk w
    cross join lateral (select o.id, o.owner_id from permgraph.nodes o where o.id = w.node_id offset 0) o
    where w.node_id <> w.start_id
      and not (w.node_id = any (w.path[1:cardinality(w.path) - 1]))
      and o.owner_id is not null and o.owner_id <> o.id
  )
  select min(array_to_string(w.path, ' -> ')) filter (where w.node_id = w.start_id),
         array_agg(distinct w.node_id) filter (where p_visited)
  into cycle_path, visited
  from walk w;
end $$;

-- Per statement, over the nodes whose owner a statement set or changed
-- (p_ids): every owner exists and is a user or a group, and no chain of
-- owners comes back to where it started. Checked once the whole statement
-- is written, so the order of rows within it never matters. The owners are
-- locked as a foreign key would lock them (FOR KEY SHARE), so a concurrent
-- delete of an owner waits; the deferred foreign key nodes_owner_exists
-- stays as the backstop at commit.
--
-- Cycles: a node inserted now cannot be the owner of anything another
-- transaction writes (they cannot see it yet), so inserts never wait. A
-- changed owner of a user or group can close a cycle together with another
-- transaction's change, so those statements serialize on one lock (_ownership_change_lock)
-- before walking; objects never own, so they never wait either.
--
-- Every statement here reads nodes by key, so each is planned once per
-- session (a generic plan) and planned the same whatever p_ids holds: a
-- moved group paid ~0.4 ms of planning per statement as custom plans
-- (0.57 ms a call on org small), and the generic plan of a walk joined to
-- nodes hashed every node at each step (1.4 ms; bench/FINDINGS.md,
-- finding 27).
create or replace function permgraph._validate_owned(p_ids text[], p_changed boolean) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
  bad record;
  cycle_path text;
  visited text[];
begin
  -- Each owner probed by key and locked (LATERAL, OFFSET 0): a join of the
  -- owned nodes with their owners, planned once for the session, nested
  -- loops over both (20,000 moved nodes under 2,000 owners: 40,000,000 rows).
  select w.id, w.owner_id, o.kind as owner_kind into bad
  from (select n.id, n.owner_id from permgraph.nodes n
        where n.id = any (p_ids) and n.owner_id is not null and n.owner_id <> n.id) w
  left join lateral (select o.kind from permgraph.nodes o where o.id = w.owner_id for key share offset 0) o on true
  where o.kind is null or o.kind = 'object'
  order by w.id limit 1;
  if found and bad.owner_kind is null then
    raise exception 'permgraph: owner % of node % does not exist',
      permgraph._describe_id(bad.owner_id), permgraph._describe_id(bad.id) using errcode = '23503';
  elsif found then
    raise exception 'permgraph: node % cannot be owned by object %; only users and groups own',
      permgraph._describe_id(bad.id), permgraph._describe_id(bad.owner_id) using errcode = '23514';
  end if;
  if not exists (select 1 from permgraph.nodes n where n.id = any (p_ids) and n.kind <> 'object'
                 and n.owner_id is not null and n.owner_id <> n.id) then
    return;
  end if;
  if p_changed then
    lock table permgraph._ownership_change_lock in exclusive mode;
  end if;
  -- Walk up from each user or group through its owners (_ownership_cycle);
  -- the nodes it passes are kept for the lock below.
  select c.cycle_path, c.visited into cycle_path, visited
  from (select array_agg(n.id::text) as starts, array_agg(n.owner_id::text) as owners
        from permgraph.nodes n
        where n.id = any (p_ids) and n.kind <> 'object' and n.owner_id is not null and n.owner_id <> n.id) s
  cross join lateral permgraph._ownership_cycle(s.starts, s.owners,
                                                p_changed and current_setting('transaction_isolation') <> 'read committed') c;
  if cycle_path is not null then
    raise exception 'permgraph: ownership cycle: % (the owner of each node is the next one)', cycle_path
      using errcode = '23514';
  end if;
  -- Under READ COMMITTED the walk ran after the lock, on a fresh snapshot.
  -- Under REPEATABLE READ / SERIALIZABLE it read the transaction's snapshot,
  -- which may predate an ownership change committed while we waited for the
  -- lock: locking the chain raises a serialization failure (40001,
  -- retryable) if any node on it changed since.
  if p_changed and current_setting('transaction_isolation') <> 'read committed' then
    perform 1 from permgraph.nodes where id = any (visited) for share;
  end if;
end $$;

-- _validate_owned's checks for the nodes a statement inserted, read from
-- the transition table rather than looked up again by id (an array of every
-- inserted id, probed into nodes twice, was most of a bulk insert's check):
-- each distinct owner is looked up, and locked, once; the walk starts from
-- the inserted rows. An inserted node changes no stored node's owner, so no
-- lock (as _validate_owned with p_changed false).
create or replace function permgraph._nodes_validate_inserted() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  bad_owners text[];
  bad record;
  cycle_path text;
begin
  if permgraph._nodes_locked_against_deletes() then
    -- No owner can be deleted before this transaction ends: no lock needed.
    select array_agg(e.owner_id) into bad_owners
    from (select distinct n.owner_id from inserted_nodes n where n.owner_id is not null and n.owner_id <> n.id) e
    left join lateral (select o.kind from permgraph.nodes o where o.id = e.owner_id offset 0) o on true
    where o.kind is null or o.kind = 'object';
  else
    select array_agg(e.owner_id) into bad_owners
    from (select distinct n.owner_id from inserted_nodes n where n.owner_id is not null and n.owner_id <> n.id) e
    left join lateral (select o.kind from permgraph.nodes o where o.id = e.owner_id for key share offset 0) o on true
    where o.kind is null or o.kind = 'object';
  end if;
  if bad_owners is not null then
    select n.id, n.owner_id, o.kind as owner_kind into bad
    from inserted_nodes n
    left join lateral (select o.kind from permgraph.nodes o where o.id = n.owner_id offset 0) o on true
    where n.owner_id = any (bad_owners) and n.owner_id <> n.id
    order by n.id limit 1;
    if bad.owner_kind is null then
      raise exception 'permgraph: owner % of node % does not exist',
        permgraph._describe_id(bad.owner_id), permgraph._describe_id(bad.id) using errcode = '23503';
    else
      raise exception 'permgraph: node % cannot be owned by object %; only users and groups own',
        permgraph._describe_id(bad.id), permgraph._describe_id(bad.owner_id) using errcode = '23514';
    end if;
  end if;
  perform permgraph._refuse_missed_capture_end('permgraph.capture_missed_owner');
  -- The walk of _validate_owned (_ownership_cycle), from the inserted users
  -- and groups that have an owner.
  select c.cycle_path into cycle_path
  from (select array_agg(n.id::text) as starts, array_agg(n.owner_id::text) as owners
        from inserted_nodes n
        where n.kind <> 'object' and n.owner_id is not null and n.owner_id <> n.id) s
  cross join lateral permgraph._ownership_cycle(s.starts, s.owners, false) c;
  if cycle_path is not null then
    raise exception 'permgraph: ownership cycle: % (the owner of each node is the next one)', cycle_path
      using errcode = '23514';
  end if;
  return null;
end $$;

-- A statement may delete an owner together with everything it owns, in
-- any order; what it leaves behind must not have a deleted owner.
create or replace function permgraph._nodes_validate_deleted() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  bad record;
begin
  -- what each deleted node still owns, probed by owner (nodes_owner_idx,
  -- LATERAL): the plan is made at the session's first call and kept
  -- (020_capture.sql), so no join whose shape depends on that call's size
  select d.id, o.owned, o.example into bad
  from deleted_nodes_now d
  cross join lateral (select count(*) as owned, min(n.id) as example from permgraph.nodes n
                      where n.owner_id = d.id and n.id <> d.id) o
  where o.owned > 0
  order by d.id limit 1;
  if found then
    raise exception 'permgraph: cannot delete node %: it still owns % node(s), e.g. %; move or delete them first',
      permgraph._describe_id(bad.id), bad.owned, permgraph._describe_id(bad.example) using errcode = '23503';
  end if;
  return null;
end $$;

create or replace function permgraph._nodes_validate_updated() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- the nodes given another owner: old and new rows compared by EXCEPT,
  -- never joined (a join planned at a one-row UPDATE, the session's first,
  -- nested loops over both tables of a bulk one: 020_capture.sql)
  perform permgraph._validate_owned(
    (select array_agg(c.id)
     from (select n.id, n.owner_id from updated_nodes n where n.owner_id is not null
           except
           select p.id, p.owner_id from previous_nodes p) c), true);
  perform permgraph._refuse_missed_capture_end('permgraph.capture_missed_owner');
  return null;
end $$;

-- A grant row with a bad level, an expiry out of range (_moment_in_range)
-- or an end that cannot be a node's id (longer than 256 characters), on its
-- own: a BEFORE trigger, so the clear error comes before the check
-- constraint grants_level_valid's, and before a huge
-- id reaches the unique index ("index row requires 11480 bytes"). Its WHEN
-- clause keeps every other row from calling it. It reports the row's first
-- problem in the order of the per-statement check below, then the level.
create or replace function permgraph._grants_validate() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  tail_kind text;
begin
  select kind into tail_kind from permgraph.nodes where id = new.tail_id;
  if not found then
    raise exception 'permgraph: grant tail % does not exist', permgraph._describe_id(new.tail_id) using errcode = '23503';
  end if;
  if tail_kind = 'object' then
    raise exception 'permgraph: grant tail % is an object; only users and groups can hold grants', permgraph._describe_id(new.tail_id)
      using errcode = '23514';
  end if;
  perform from permgraph.nodes where id = new.head_id;
  if not found then
    raise exception 'permgraph: grant head % does not exist', permgraph._describe_id(new.head_id) using errcode = '23503';
  end if;
  if new.level is null or new.level not between 1 and 3 then
    raise exception 'permgraph: grant level must be 1 (read), 2 (write) or 3 (manage), got %', coalesce(new.level::text, 'null')
      using errcode = '23514';
  end if;
  if not permgraph._moment_in_range(new.expires_at) then
    raise exception 'permgraph: grant % -> % expires_at % is outside the years 1 to 9999 (for never, null)',
      permgraph._describe_id(new.tail_id), permgraph._describe_id(new.head_id), new.expires_at using errcode = '22023';
  end if;
  if permgraph._grant_key_problem(new.tail_id, new.head_id, new.source) is not null then
    raise exception 'permgraph: %', permgraph._grant_key_problem(new.tail_id, new.head_id, new.source) using errcode = '54000';
  end if;
  return new;
end $$;

-- Per statement, over the grants it inserted or updated (written): both
-- ends exist and the tail is not an object. Each distinct (end, tail or
-- head) is looked up once, by primary key, and locked as a foreign key would
-- lock it (FOR KEY SHARE), so a concurrent delete of it waits (unless this
-- transaction already keeps every node from being deleted:
-- _nodes_locked_against_deletes); the deferred foreign keys
-- grants_tail_exists and grants_head_exists stay as the backstop at commit. The lookup is a LATERAL index probe (OFFSET 0 keeps it
-- one): linear whatever the estimates, and a one-row insert never scans
-- nodes. Of several bad rows, the one reported is the first by problem
-- (tail missing, tail an object, head missing), then id: never the order of
-- rows.
create or replace function permgraph._grants_validate_written() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  bad record;
begin
  if permgraph._nodes_locked_against_deletes() then
    -- No end can be deleted before this transaction ends: the same lookup without the locks.
    select e.id, e.is_tail, n.kind into bad
    from (select w.tail_id as id, true as is_tail from written w union select w.head_id, false from written w) e
    left join lateral (select n.kind from permgraph.nodes n where n.id = e.id offset 0) n on true
    where n.kind is null or (e.is_tail and n.kind = 'object')
    order by case when n.kind is null and e.is_tail then 1 when n.kind is null then 3 else 2 end, e.id
    limit 1;
  else
    select e.id, e.is_tail, n.kind into bad
    from (select w.tail_id as id, true as is_tail from written w union select w.head_id, false from written w) e
    left join lateral (select n.kind from permgraph.nodes n where n.id = e.id for key share offset 0) n on true
    where n.kind is null or (e.is_tail and n.kind = 'object')
    order by case when n.kind is null and e.is_tail then 1 when n.kind is null then 3 else 2 end, e.id
    limit 1;
  end if;
  if not found then
    perform permgraph._refuse_missed_capture_end('permgraph.capture_missed_grant_end');
    return null;
  elsif bad.is_tail and bad.kind is null then
    raise exception 'permgraph: grant tail % does not exist', permgraph._describe_id(bad.id) using errcode = '23503';
  elsif bad.is_tail then
    raise exception 'permgraph: grant tail % is an object; only users and groups can hold grants', permgraph._describe_id(bad.id)
      using errcode = '23514';
  else
    raise exception 'permgraph: grant head % does not exist', permgraph._describe_id(bad.id) using errcode = '23503';
  end if;
end $$;

-- The WHEN clauses: _nodes_validate's tests, without a function call
-- (length and the regular expression are _id_problem's rule, the range of
-- trash_at _moment_in_range's).
drop trigger if exists nodes_validate on permgraph.nodes;

create trigger nodes_validate before insert on permgraph.nodes
  for each row
  when (new.id is null or length(new.id) not between 1 and 256 or new.id ~ '[[:cntrl:]]'
        or new.kind is null or new.kind not in ('user', 'group', 'object')
        or (new.owner_id = new.id and new.kind <> 'user')
        or (new.is_superuser and new.kind <> 'user')
        or new.trash_at < '0001-01-01 00:00:00+00'::timestamptz or new.trash_at >= '10000-01-01 00:00:00+00'::timestamptz)
  execute function permgraph._nodes_validate();

drop trigger if exists nodes_validate_changed on permgraph.nodes;

create trigger nodes_validate_changed before update on permgraph.nodes
  for each row
  when (new.id is distinct from old.id or new.kind is distinct from old.kind
        or (new.owner_id = new.id and new.kind <> 'user')
        or (new.is_superuser and new.kind <> 'user')
        or (new.trash_at is distinct from old.trash_at
            and (new.trash_at < '0001-01-01 00:00:00+00'::timestamptz or new.trash_at >= '10000-01-01 00:00:00+00'::timestamptz)))
  execute function permgraph._nodes_validate();

drop trigger if exists nodes_validate_deleted on permgraph.nodes;

create trigger nodes_validate_deleted after delete on permgraph.nodes
  referencing old table as deleted_nodes_now
  for each statement execute function permgraph._nodes_validate_deleted();

drop trigger if exists nodes_validate_inserted on permgraph.nodes;

create trigger nodes_validate_inserted after insert on permgraph.nodes
  referencing new table as inserted_nodes
  for each statement execute function permgraph._nodes_validate_inserted();

drop trigger if exists nodes_validate_updated on permgraph.nodes;

create trigger nodes_validate_updated after update on permgraph.nodes
  referencing old table as previous_nodes new table as updated_nodes
  for each statement execute function permgraph._nodes_validate_updated();

drop trigger if exists grants_validate on permgraph.grants;

create trigger grants_validate before insert or update on permgraph.grants
  for each row
  when (new.level is null or new.level not between 1 and 3 or length(new.tail_id) > 256 or length(new.head_id) > 256
        or new.expires_at < '0001-01-01 00:00:00+00'::timestamptz or new.expires_at >= '10000-01-01 00:00:00+00'::timestamptz
        or octet_length(new.tail_id) + octet_length(new.head_id) + octet_length(new.source) > 2600)
  execute function permgraph._grants_validate();

drop trigger if exists grants_validate_inserted on permgraph.grants;

create trigger grants_validate_inserted after insert on permgraph.grants
  referencing new table as written
  for each statement execute function permgraph._grants_validate_written();

drop trigger if exists grants_validate_updated on permgraph.grants;

create trigger grants_validate_updated after update on permgraph.grants
  referencing new table as written
  for each statement execute function permgraph._grants_validate_written();
