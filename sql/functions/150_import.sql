-- The set-based validate and load steps of `permgraph import`, over the
-- staging tables import_nodes and import_grants.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).
--
-- Every statement here must stay linear in the run's rows whatever the
-- planner believes about them. The caller analyzes the staging tables once
-- they are filled, but a wrong estimate must never turn a check quadratic
-- (with the staging tables analyzed while empty, a duplicate check by
-- self-join ran as a nested loop comparing every row with every row, and
-- 20,001 nodes took 7 minutes), so the plans do not depend on estimates:
-- - validation runs with enable_nestloop off: rows of the run meet rows of
--   the run (and of the temporary tables) only in hash or merge joins,
--   linear whatever the estimates;
-- - the only nested loops are the LATERAL lookups written as such (and
--   scalar subqueries, run once for each row that needs one), each an
--   index probe: into permgraph.nodes by its primary key (so a small import
--   into a large graph probes, and never scans, the graph), into the
--   temporary table of valid staged nodes by id, and down the ownership
--   graph by owner. Each LATERAL has OFFSET 0, which keeps the planner from pulling
--   it up into a plain join (that it would then hash: a scan of the whole
--   graph, or of the whole ownership table at every step of a walk);
-- - rows are compared with other rows of the same run by window functions
--   over one sorted pass, never by self-joins;
-- - what a step marks is written back by primary key (= any(array)), not by
--   a join;
-- - walks up and down the ownership graph start only from the nodes whose
--   owner the load sets or changes.
-- The staging tables have no index but their primary key (run, seq):
-- staging appends in key order, and indexes on ids cost more than the rest
-- of staging together (migration 019).

-- Whether p_value parses as a timestamptz. pg_input_is_valid() would do, but
-- it is PostgreSQL 16+ and permgraph supports 14 and 15. The block only
-- evaluates a cast (it writes nothing), so its subtransaction takes no xid.
create or replace function permgraph._is_timestamptz(p_value text) returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  perform p_value::timestamptz;
  return true;
exception when data_exception then
  return false;
end $$;

-- Whether a staged moment (trash_at, expires_at) has the form of one that
-- means the same instant whatever the session's time zone: a timestamp with
-- its offset (an offset may have seconds: PostgreSQL writes a zone's local
-- mean time so, e.g. -03:30:52; and a timestamptz outside the years 1 to
-- 9999 has a fifth digit of year, or BC, or is infinity, which are of the
-- form so that _import_moment_problem names them for what they are), its
-- fraction of a second up to the six digits a timestamptz keeps (more
-- would be rounded, not stored as typed), or a date alone, the start of
-- that day in UTC (_import_moment); the same forms as the API's
-- (parseExactMoment, src/expiry.ts). A query's timestamptz column
-- reaches staging in this form whatever the session's DateStyle
-- (src/app/import/staging.ts). An SQL-standard body, inlined.
create or replace function permgraph._import_moment_form(p_value text) returns boolean
language sql immutable
return p_value ~ '^\s*([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4,}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?\s*(Z|z|[+-][0-9]{2}(:?[0-9]{2}(:?[0-9]{2})?)?)(\s+BC)?|[+-]?infinity)\s*$';

-- The instant of a staged moment of that form: a timestamp with its offset
-- as it says, a date alone at 00:00 UTC (never in the session's zone).
-- Every cast of a staged moment goes through here. An SQL-standard body,
-- inlined.
create or replace function permgraph._import_moment(p_value text) returns timestamptz
language sql stable
return (case when p_value ~ '^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}\s*$'
             then substring(p_value from '[0-9]{4}-[0-9]{2}-[0-9]{2}') || 'T00:00:00Z'
             else p_value end)::timestamptz;

-- The problem of a staged moment (p_column: trash_at or expires_at; an
-- empty one is none, which p_empty_means says), null if it has none: not of
-- the form above; of the form but no instant (2030-02-30), named only when
-- p_careful (otherwise its cast raises: _import_check_moments); or outside
-- the years 1 to 9999, infinity too, as the triggers refuse it
-- (_moment_in_range, 010_integrity.sql), and so is a text with no instant
-- whose year as written is outside them (year 0, which PostgreSQL refuses,
-- or beyond what it holds), as the API names them (parseExactMoment,
-- src/expiry.ts). Whether a date alone exists does not depend on the
-- session's zone, so it is tried as given. An SQL-standard body, inlined.
create or replace function permgraph._import_moment_problem(p_column text, p_value text, p_empty_means text, p_careful boolean)
returns text
language sql stable
return case
  when p_value is null then null
  -- (no such form, or of the form with a day, time or offset PostgreSQL
  -- refuses, in a year within them: one wording for both, the API's too,
  -- parseExactMoment in src/expiry.ts)
  when not permgraph._import_moment_form(p_value)
       or (p_careful and not permgraph._is_timestamptz(p_value)
           and substring(p_value from '^\s*([0-9]+)-')::numeric between 1 and 9999 and p_value !~ 'BC\s*$')
    then format('%s %s is neither a timestamp with a time zone offset nor a date (ISO 8601, e.g. 2030-01-31T12:00:00Z, or 2030-01-31: its midnight UTC)',
                p_column, permgraph._describe_id(p_value))
  -- (no instant, in a year outside them: -infinity stands for it)
  when not permgraph._moment_in_range(case when p_careful and not permgraph._is_timestamptz(p_value) then '-infinity'::timestamptz
                                           else permgraph._import_moment(p_value) end)
    then format('%s %s is outside the years 1 to 9999 (for %s, leave it empty)', p_column, permgraph._describe_id(p_value), p_empty_means)
end;

-- Marks in import_bad (_import_validate) the rows of run p_run whose
-- p_column (trash_at of the staged nodes, expires_at of the staged grants)
-- has a problem (_import_moment_problem). All of them in one statement
-- first, whose casts raise on a value of the form that names no instant;
-- only then one by one, to find which (a subtransaction each).
create or replace function permgraph._import_check_moments(p_run text, p_column text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  empty_means constant text := case p_column when 'trash_at' then 'no trash time' when 'expires_at' then 'never' end;
  careful boolean := false;
begin
  if empty_means is null then
    raise exception 'no staged moment column %', p_column;
  end if;
  loop
    begin
      insert into pg_temp.import_bad (seq, id, line, problem)
      select m.seq, m.id, m.line, m.problem
      from (select s.seq, s.id, s.line, permgraph._import_moment_problem(p_column, s.value, empty_means, careful) as problem
            from (select n.seq, n.id, n.line, n.trash_at as value from permgraph.import_nodes n
                  where p_column = 'trash_at' and n.run = p_run and n.problem is null and n.trash_at is not null
                  union all
                  select g.seq, null, null, g.expires_at from permgraph.import_grants g
                  where p_column = 'expires_at' and g.run = p_run and g.problem is null and g.expires_at is not null) s
            offset 0) m -- each row's problem worked out once
      where m.problem is not null;
      return;
    exception when data_exception then
      if careful then
        raise;
      end if;
      careful := true;
    end;
  end loop;
end $$;

-- Whether no run but p_run has rows staged (by the primary key (run, seq)).
create or replace function permgraph._import_staged_alone(p_run text) returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
set enable_seqscan = off
set jit = off  -- (with a method off: test/engine/plan-settings.test.ts)
as $$
  select not exists (select 1 from permgraph.import_nodes where run < p_run)
     and not exists (select 1 from permgraph.import_nodes where run > p_run)
     and not exists (select 1 from permgraph.import_grants where run < p_run)
     and not exists (select 1 from permgraph.import_grants where run > p_run)
$$;

-- Drops the staged rows of run p_run (at the end of an import, or when a run
-- starts over or fails). When no other run has rows staged, the usual case,
-- both staging tables are truncated: deleting a million-row run's rows one
-- by one took ~1.2 s inside the import's last transaction (and left them
-- dead for vacuum). TRUNCATE takes ACCESS EXCLUSIVE locks on them until the
-- transaction ends, so only without waiting: while another session uses
-- them (an import staging or validating), the run's rows are deleted
-- instead; once held, other imports' staging waits for this transaction.
-- Nothing else reads the staging tables (TRUNCATE is not MVCC-safe: an
-- older snapshot would see them empty).
create or replace function permgraph._import_discard_staging(p_run text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  alone boolean := false;
begin
  -- Other runs' rows are looked for first without the lock (if there are
  -- some, it is not taken at all), then again under it.
  if permgraph._import_staged_alone(p_run) then
    begin
      lock table permgraph.import_nodes, permgraph.import_grants in access exclusive mode nowait;
      alone := permgraph._import_staged_alone(p_run);
    exception when lock_not_available then
      alone := false;
    end;
  end if;
  if alone then
    truncate permgraph.import_nodes, permgraph.import_grants;
  else
    delete from permgraph.import_nodes where run = p_run;
    delete from permgraph.import_grants where run = p_run;
  end if;
end $$;

-- What is wrong with the id in column p_column of an import row (null: nothing).
-- The rule is permgraph._id_problem's, but calling it for every row would
-- cost 20 µs a row (a SQL function with a pinned search_path is never
-- inlined), so validation writes the same test inline, as
--   id is null or length(id) not between 1 and 256 or id ~ '[[:cntrl:]]'
-- and calls this only for the ids that fail it (test/app/import.test.ts
-- checks that the two agree).
create or replace function permgraph._import_id_problem(p_column text, p_id text) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
  select case
    when p_id is null then format('%s is missing', p_column)
    when permgraph._id_problem(p_id) is not null then
      format('%s %s %s (an id is 1 to 256 characters with no control characters)',
             p_column, permgraph._describe_id(p_id), permgraph._id_problem(p_id))
  end
$$;

-- Marks every invalid staged row of a run with the reason, set-based.
-- p_levels maps every level text of the run's grants (as staged) to its
-- level (a number) or to why it is not one (a string): the library resolves
-- levels and role names with its one level parser (src/levels.ts).
--
-- Ownership is checked on the graph the load would produce: valid staged
-- nodes replace the stored ones, the other stored nodes stay. A rejected node
-- falls back to its stored version (or disappears), which can invalidate
-- others (their owner, a cycle through the stored version), so the owner
-- checks repeat until nothing changes. Returns the counts.
create or replace function permgraph._import_validate(p_run text, p_levels jsonb) returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
set enable_nestloop = off
set enable_mergejoin = off
as $$
declare
  marked bigint;
  reached bigint;
  round integer := 0;
  start_id text;
  cur text;
  nxt text;
  seen boolean;
  path text[];
  pos integer;
  keyed boolean := false;
  owners_indexed boolean := false;
  widened boolean;
begin
  -- Writers of nodes and grants wait from here until the import commits
  -- (the caller may hold a stronger lock already): what this finds about the
  -- stored graph holds for the load in this transaction, which therefore
  -- does not check it again (_import_load).
  perform permgraph._lock_tables_in_turn(array['permgraph.nodes', 'permgraph.grants']::regclass[], 'share row exclusive');
  -- What a step rejects (seq, id, line, problem), written back to the staging
  -- rows at the end of the step; every rejected id with its first line (the
  -- messages of rows that need it say where it went wrong).
  drop table if exists pg_temp.import_bad;
  create temp table import_bad (seq bigint primary key, id text collate "C", line bigint, problem text not null) on commit drop;
  drop table if exists pg_temp.import_rejected;
  create temp table import_rejected (id text collate "C" primary key, line bigint) on commit drop;
  drop table if exists pg_temp.import_removed;
  create temp table import_removed (id text collate "C" primary key) on commit drop;

  -- trash_at (_import_check_moments, as expires_at below). A row that also
  -- has a problem below is given that one instead.
  perform permgraph._import_check_moments(p_run, 'trash_at');

  -- The valid staged nodes, by id, each with its stored version (stored:
  -- whether there is one), which the load reads instead of the staging
  -- table and the graph again. A node not in here is, after the load, its
  -- stored version or nothing.
  drop table if exists pg_temp.import_valid;
  create temp table import_valid (
    id text collate "C", seq bigint not null, line bigint, kind text, owner_id text collate "C", trash_at text,
    stored boolean not null, stored_owner text collate "C", stored_trash timestamptz, problem text
  ) on commit drop;

  -- One sorted pass over the run's nodes, one probe of the graph each: each
  -- row on its own (ids with the rule of permgraph._id_problem, kind), then
  -- duplicates (the first row without a problem of its own is the one
  -- kept), then a kind that differs from the stored node's. Every row goes
  -- to import_valid, in id order, with its problem; then those with one
  -- (or with a bad trash_at) move to import_bad. (Tables rather than one
  -- statement with a CTE for both: a CTE of a million rows spills to disk.)
  insert into pg_temp.import_valid (id, seq, line, kind, owner_id, trash_at, stored, stored_owner, stored_trash, problem)
  select r.id, r.seq, r.line, r.kind, r.owner_id, r.trash_at, r.stored_kind is not null, r.stored_owner, r.stored_trash, case
      when not r.local and r.rank = 1 and (r.stored_kind is null or r.stored_kind = r.kind) then null
      when r.id is null or length(r.id) not between 1 and 256 or r.id ~ '[[:cntrl:]]'
        then permgraph._import_id_problem('id', r.id)
      when r.kind is null or r.kind not in ('user', 'group', 'object') then
        format('kind must be user, group or object, got %s', permgraph._describe_id(r.kind))
      when r.local then permgraph._import_id_problem('owner_id', r.owner_id)
      when r.rank > 1 and r.first_line is not null then
        format('duplicate id %s (first at line %s)', permgraph._describe_id(r.id), r.first_line)
      when r.rank > 1 then format('duplicate id %s (the query returns it more than once)', permgraph._describe_id(r.id))
      else format('node %s exists as %s %s; its kind cannot change to %s', permgraph._describe_id(r.id),
                  case when r.stored_kind = 'object' then 'an' else 'a' end, r.stored_kind, r.kind)
    end
  from (
    select s.seq, s.id, s.kind, s.owner_id, s.line, s.trash_at, s.local, n.kind as stored_kind, n.owner_id as stored_owner,
           n.trash_at as stored_trash, row_number() over w as rank, first_value(s.line) over w as first_line
    from (select x.seq, x.id, x.kind, x.owner_id, x.line, x.trash_at,
                 (x.id is null or length(x.id) not between 1 and 256 or x.id ~ '[[:cntrl:]]'
                  or x.kind is null or x.kind not in ('user', 'group', 'object')
                  or length(x.owner_id) not between 1 and 256 or x.owner_id ~ '[[:cntrl:]]') is true as local
          from permgraph.import_nodes x where x.run = p_run and x.problem is null
          offset 0) s -- each row's local test worked out once (not again for the window's sort key)
    left join lateral (select n.kind, n.owner_id, n.trash_at from permgraph.nodes n where n.id = s.id offset 0) n on true
    window w as (partition by s.id order by s.local, s.seq)
  ) r;
  insert into pg_temp.import_bad (seq, id, line, problem)
  select v.seq, v.id, v.line, v.problem from pg_temp.import_valid v where v.problem is not null
  on conflict (seq) do update set problem = excluded.problem;
  if exists (select 1 from pg_temp.import_bad) then
    delete from pg_temp.import_valid v
    where v.problem is not null or exists (select 1 from pg_temp.import_bad b where b.seq = v.seq);
  end if;
  -- (Its primary key is built only if a walk below needs it: the common
  -- case needs none, and building it took ~0.4 s at 1 M nodes.)
  analyze pg_temp.import_valid;

  loop
    update permgraph.import_nodes s set problem = (select b.problem from pg_temp.import_bad b where b.seq = s.seq)
    where s.run = p_run and s.seq = any (array(select b.seq from pg_temp.import_bad b));
    get diagnostics marked = row_count;
    insert into pg_temp.import_rejected select distinct on (b.id) b.id, b.line from pg_temp.import_bad b
    where b.id is not null order by b.id, b.seq
    on conflict (id) do nothing;
    -- A rejected node falls back to its stored version, if any: the nodes it
    -- owns are checked again.
    truncate pg_temp.import_removed;
    insert into pg_temp.import_removed select distinct b.id from pg_temp.import_bad b where b.id is not null;
    delete from pg_temp.import_valid v using pg_temp.import_bad b where v.id = b.id and v.seq = b.seq;
    truncate pg_temp.import_bad;
    exit when round > 0 and marked = 0;
    round := round + 1;

    -- Owners: must exist after the load, must not be objects, only users may
    -- own themselves. After the first round, only the nodes whose owner was
    -- just rejected can have changed (below). An owner staged and valid is
    -- found in import_valid; only the others are looked up in the graph.
    if round > 1 then
      -- A rejected node falls back to its stored version: a user or group
      -- still owns what it owned; otherwise the nodes it owns are rejected,
      -- and those they own in turn, down the staged owners in one walk. One
      -- level a round scanned import_valid once a level: a chain of 8,000
      -- below a bad root took 46 s (a chain as deep with a good root, 0.4 s).
      if not owners_indexed then
        create index on pg_temp.import_valid (owner_id);
        owners_indexed := true;
      end if;
      insert into pg_temp.import_bad (seq, id, line, problem)
      -- (the walk starts at the nodes just rejected, each with its line and
      -- stored kind, and goes down to the staged nodes each one owns)
      with recursive down (seq, id, line, stored_kind, owner_id, owner_line, owner_kind) as (
        select null::bigint, x.id, r.line, xn.kind, null::text collate "C", null::bigint, null::text
        from pg_temp.import_removed x
        left join pg_temp.import_rejected r on r.id = x.id
        left join lateral (select n.kind from permgraph.nodes n where n.id = x.id offset 0) xn on true
        union
        select c.seq, c.id, c.line, cn.kind, d.id, d.line, d.stored_kind
        from down d
        cross join lateral (select c.seq, c.id, c.line from pg_temp.import_valid c where c.owner_id = d.id and c.id <> d.id offset 0) c
        left join lateral (select n.kind from permgraph.nodes n where n.id = c.id offset 0) cn on true
        where d.stored_kind is distinct from 'user' and d.stored_kind is distinct from 'group'
      )
      select d.seq, d.id, d.line, case
          when d.owner_kind is null then
            format('owner %s is not loaded: its row is invalid (%s)', permgraph._describe_id(d.owner_id), coalesce('line ' || d.owner_line, 'see its row'))
          else format('owner %s is an object; only users and groups own', permgraph._describe_id(d.owner_id))
        end
      from down d
      where d.seq is not null;
      get diagnostics marked = row_count;
      continue when marked > 0;
    else
      insert into pg_temp.import_bad (seq, id, line, problem)
      select v.seq, v.id, v.line, case
          when v.owner_id = v.id then format('ownership cycle: %s %s cannot own itself', v.kind, permgraph._describe_id(v.id))
          when coalesce(o.kind, n.kind) is null and r.id is not null then
            format('owner %s is not loaded: its row is invalid (%s)', permgraph._describe_id(v.owner_id), coalesce('line ' || r.line, 'see its row'))
          when coalesce(o.kind, n.kind) is null then
            format('owner %s does not exist (neither in the input nor in the database)', permgraph._describe_id(v.owner_id))
          else format('owner %s is an object; only users and groups own', permgraph._describe_id(v.owner_id))
        end
      from pg_temp.import_valid v
      left join pg_temp.import_valid o on o.id = v.owner_id
      left join pg_temp.import_rejected r on r.id = v.owner_id
      left join lateral (select n.kind from permgraph.nodes n where n.id = v.owner_id and o.id is null offset 0) n on true
      where v.owner_id is not null
        and ((v.owner_id = v.id and v.kind <> 'user')
             or (v.owner_id <> v.id and coalesce(o.kind, n.kind) is distinct from 'user' and coalesce(o.kind, n.kind) is distinct from 'group'));
      get diagnostics marked = row_count;
      continue when marked > 0;
    end if;

    -- Cycles. Each one passes through a node whose owner the load sets or
    -- changes (the stored graph has none): S, the staged nodes whose owner
    -- differs from their stored one (import_valid holds it). import_g is
    -- the part of the graph after the load that a cycle can be in, each node
    -- with its owner after the load:
    -- - when S holds no stored node (an import of new nodes, or one that
    --   moves no stored node), S itself. A node outside S keeps its stored
    --   owner, which is then outside S too (a stored node), and so on up to
    --   a root: no cycle can leave S. A node of S whose owner is outside S
    --   is a root of import_g (its owner there is null);
    -- - otherwise S and everything above it, walked up from S through the
    --   owners the load leaves, one probe each.
    drop table if exists pg_temp.import_g;
    select exists (
      select 1 from pg_temp.import_valid c
      where c.stored and c.kind <> 'object' and c.owner_id is not null and c.owner_id <> c.id and c.owner_id is distinct from c.stored_owner
    ) into widened;
    if not widened then
      create temp table import_g on commit drop as
        select c.id, case when o.id is not null then c.owner_id end as owner_id
        from pg_temp.import_valid c
        left join pg_temp.import_valid o
          on o.id = c.owner_id and o.kind <> 'object' and o.owner_id is not null and o.owner_id <> o.id and o.owner_id is distinct from o.stored_owner
        where c.kind <> 'object' and c.owner_id is not null and c.owner_id <> c.id and c.owner_id is distinct from c.stored_owner;
    else
      if not keyed then
        alter table pg_temp.import_valid add primary key (id);
        keyed := true;
      end if;
      create temp table import_g on commit drop as
        with recursive up(id, owner_id) as (
          select c.id, c.owner_id
          from pg_temp.import_valid c
          where c.kind <> 'object' and c.owner_id is not null and c.owner_id <> c.id and c.owner_id is distinct from c.stored_owner
          union
          select m.id, m.owner_id
          from up cross join lateral (
            -- the owner as the load leaves it: staged, else stored (one probe each)
            select coalesce(v.id, n.id) as id, case when v.id is not null then v.owner_id else n.owner_id end as owner_id
            from (select) one
            left join lateral (select v.id, v.owner_id from pg_temp.import_valid v where v.id = up.owner_id offset 0) v on true
            left join lateral (select n.id, n.owner_id from permgraph.nodes n where n.id = up.owner_id and v.id is null offset 0) n on true
            where v.id is not null or n.id is not null
            offset 0
          ) m
          where up.owner_id is not null and up.owner_id <> up.id
        ) select id, owner_id from up;
    end if;
    create index on pg_temp.import_g (owner_id);
    analyze pg_temp.import_g;
    -- Down from the roots (no owner, or a user owning itself); what is not
    -- reached is on or below a cycle. Every node has one owner, so a walk
    -- down reaches each node once at most: all of import_g is reached if and
    -- only if there is no cycle, which a count tells without comparing the
    -- two sets (the common case).
    drop table if exists pg_temp.import_unrooted;
    with recursive rooted(id) as (
      select r.id from pg_temp.import_g r where r.owner_id is null or r.owner_id = r.id
      union all
      select c.id from rooted cross join lateral (
        select g.id from pg_temp.import_g g where g.owner_id = rooted.id and g.owner_id <> g.id offset 0) c
    )
    select count(*) into reached from rooted;
    continue when reached = (select count(*) from pg_temp.import_g);
    create temp table import_unrooted on commit drop as
      with recursive rooted(id) as (
        select r.id from pg_temp.import_g r where r.owner_id is null or r.owner_id = r.id
        union all
        select c.id from rooted cross join lateral (
          select g.id from pg_temp.import_g g where g.owner_id = rooted.id and g.owner_id <> g.id offset 0) c
      )
      select g.id, g.owner_id, false as visited, null::text as cycle
      from pg_temp.import_g g
      where not exists (select 1 from rooted r where r.id = g.id);
    continue when not exists (select 1 from pg_temp.import_unrooted);
    alter table pg_temp.import_unrooted add primary key (id);
    -- Walk up from each node not visited yet; a walk that meets its own path found a cycle.
    for start_id in select u.id from pg_temp.import_unrooted u loop
      path := array[]::text[];
      cur := start_id;
      loop
        select visited, owner_id into seen, nxt from pg_temp.import_unrooted where id = cur;
        exit when not found or seen;
        update pg_temp.import_unrooted set visited = true where id = cur;
        path := path || cur;
        cur := nxt;
      end loop;
      pos := array_position(path, cur);
      if pos is not null then
        update pg_temp.import_unrooted
        set cycle = (select string_agg(permgraph._describe_id(x.id), ' -> ' order by x.ord)
                     from unnest(path[pos:] || cur) with ordinality x(id, ord))
        where id = any (path[pos:]);
      end if;
    end loop;
    -- Only the staged nodes on a cycle are rejected: what hangs below a cycle
    -- is checked again once they fall back (next round).
    if not keyed then
      alter table pg_temp.import_valid add primary key (id);
      keyed := true;
    end if;
    insert into pg_temp.import_bad (seq, id, line, problem)
    select v.seq, v.id, v.line, format('ownership cycle: %s (the owner of each node is the next one)', u.cycle)
    from pg_temp.import_unrooted u
    cross join lateral (select v.seq, v.id, v.line from pg_temp.import_valid v where v.id = u.id offset 0) v
    where u.cycle is not null;
  end loop;

  -- Grants. expires_at (empty: never; _import_check_moments, as trash_at
  -- above). A row that also has a problem below is given that one instead.
  perform permgraph._import_check_moments(p_run, 'expires_at');

  -- The valid staged grants, in key order, each with its level resolved,
  -- the kinds of its ends and its stored version (stored: whether there is
  -- one), which the load reads instead of the staging table and the graph
  -- again.
  drop table if exists pg_temp.import_grants_valid;
  create temp table import_grants_valid (
    seq bigint not null, line bigint, tail_id text collate "C", head_id text collate "C", source text,
    level smallint, expires_at timestamptz, tail_kind text, head_kind text, problem text, rank bigint not null, first_line bigint,
    stored boolean not null, stored_level smallint, stored_expires timestamptz
  ) on commit drop;

  -- One sorted pass over the run's grants: each row on its own (ids, level;
  -- then a bad expires_at, found above) and both its ends after the load (an
  -- object holds no grant); then, among the rows without a problem, duplicates
  -- (sorted by key, the first row is kept); then one probe of the graph for
  -- each row kept whose ends are both stored nodes (a grant with an end that
  -- the load creates cannot be stored: the foreign keys, and no writer can
  -- add one meanwhile). Every row goes to import_grants_valid, in key order,
  -- with its problem; then the bad rows move to import_bad.
  insert into pg_temp.import_grants_valid (seq, line, tail_id, head_id, source, level, expires_at, tail_kind, head_kind, problem, rank, first_line,
                                           stored, stored_level, stored_expires)
  select k.seq, k.line, k.tail_id, k.head_id, k.source,
         case when k.problem is null then (p_levels ->> k.level)::smallint end, case when k.problem is null then permgraph._import_moment(k.expires_at) end,
         k.tail_kind, k.head_kind, k.problem, k.rank, k.first_line, s.level is not null, s.level, s.expires_at
  from (
    select c.*, row_number() over w as rank, first_value(c.line) over w as first_line
    from (
      select e.seq, e.line, e.tail_id, e.head_id, e.source, e.level, e.expires_at, e.tail_kind, e.head_kind,
             coalesce(e.tail_stored, e.tail_kind is not null) and coalesce(e.head_stored, e.head_kind is not null) as ends_stored, coalesce(case
          when e.tail_id is null or length(e.tail_id) not between 1 and 256 or e.tail_id ~ '[[:cntrl:]]'
            then permgraph._import_id_problem('tail_id', e.tail_id)
          when e.head_id is null or length(e.head_id) not between 1 and 256 or e.head_id ~ '[[:cntrl:]]'
            then permgraph._import_id_problem('head_id', e.head_id)
          when e.level is null then 'level is missing'
          when jsonb_typeof(p_levels -> e.level) is distinct from 'number'
            then coalesce(p_levels ->> e.level, format('level %s was not resolved', permgraph._describe_id(e.level)))
          when e.tail_kind is null then
            coalesce((select format('grant tail %s is not loaded: its row is invalid (%s)', permgraph._describe_id(e.tail_id), coalesce('line ' || r.line, 'see its row'))
                      from pg_temp.import_rejected r where r.id = e.tail_id),
                     format('grant tail %s does not exist (neither in the input nor in the database)', permgraph._describe_id(e.tail_id)))
          when e.tail_kind = 'object' then
            format('grant tail %s is an object; only users and groups can hold grants', permgraph._describe_id(e.tail_id))
          when e.head_kind is null then
            coalesce((select format('grant head %s is not loaded: its row is invalid (%s)', permgraph._describe_id(e.head_id), coalesce('line ' || r.line, 'see its row'))
                      from pg_temp.import_rejected r where r.id = e.head_id),
                     format('grant head %s does not exist (neither in the input nor in the database)', permgraph._describe_id(e.head_id)))
        end, e.bad_expiry) as problem
      from (
        -- Each end's kind after the load: staged (a hash of import_valid),
        -- else stored (a probe of the graph, only for the ends not staged).
        select g.seq, g.line, g.tail_id, g.head_id, g.source, g.level, g.expires_at, tv.stored as tail_stored, hv.stored as head_stored,
               coalesce(tv.kind, (select n.kind from permgraph.nodes n where n.id = g.tail_id)) as tail_kind,
               coalesce(hv.kind, (select n.kind from permgraph.nodes n where n.id = g.head_id)) as head_kind,
               cb.problem as bad_expiry
        from permgraph.import_grants g
        left join pg_temp.import_valid tv on tv.id = g.tail_id
        left join pg_temp.import_valid hv on hv.id = g.head_id
        left join pg_temp.import_bad cb on cb.seq = g.seq -- a bad expires_at
        where g.run = p_run and g.problem is null
        offset 0 -- each end looked up once
      ) e
      offset 0 -- each row's problem worked out once (not again for the window's sort key)
    ) c
    window w as (partition by c.tail_id, c.head_id, c.source order by c.problem is not null, c.seq)
  ) k
  left join lateral (select s.level, s.expires_at from permgraph.grants s
                     where k.problem is null and k.rank = 1 and k.ends_stored
                       and s.tail_id = k.tail_id and s.head_id = k.head_id and s.source = k.source offset 0) s on true;
  insert into pg_temp.import_bad (seq, problem)
  select d.seq, case
      when d.problem is not null then d.problem
      when d.first_line is not null
        then format('duplicate grant %s -> %s (source %s; first at line %s)', permgraph._describe_id(d.tail_id),
                    permgraph._describe_id(d.head_id), permgraph._describe_id(d.source), d.first_line)
      else format('duplicate grant %s -> %s (source %s; the query returns it more than once)', permgraph._describe_id(d.tail_id),
                  permgraph._describe_id(d.head_id), permgraph._describe_id(d.source)) end
  from pg_temp.import_grants_valid d
  where d.problem is not null or d.rank > 1
  on conflict (seq) do update set problem = excluded.problem;
  if exists (select 1 from pg_temp.import_bad) then
    delete from pg_temp.import_grants_valid where problem is not null or rank > 1;
  end if;
  update permgraph.import_grants g set problem = (select b.problem from pg_temp.import_bad b where b.seq = g.seq)
  where g.run = p_run and g.seq = any (array(select b.seq from pg_temp.import_bad b));

  return (
    select jsonb_build_object(
      'nodes_valid', count(*) filter (where t = 'n' and valid), 'nodes_invalid', count(*) filter (where t = 'n' and not valid),
      'grants_valid', count(*) filter (where t = 'g' and valid), 'grants_invalid', count(*) filter (where t = 'g' and not valid))
    from (select 'n' as t, problem is null as valid from permgraph.import_nodes where run = p_run
          union all
          select 'g', problem is null from permgraph.import_grants where run = p_run) rows);
end $$;

-- The triggers of nodes and grants whose work the load does itself, or
-- that have nothing to do in it, on or off for the rest of the transaction:
-- - the per-statement integrity checks of inserted and updated rows
--   (owners, cycles, grant ends: sql/functions/010_integrity.sql): they
--   would check again, row for row, what _import_validate has checked on
--   the graph the load produces;
-- - the per-row checks before an insert (nodes_validate, grants_validate:
--   ids, kinds, a group owning itself, levels): _import_validate has
--   rejected every such row, yet each inserted row evaluated their WHEN
--   clauses (a regular expression on every node id);
-- - the capture triggers of inserted rows (nodes_capture_inserted,
--   grants_capture_inserted, sql/functions/020_capture.sql): with capture
--   off (as in the load) all they do is write the edges of what was
--   inserted, reading the kinds they lack by joining the whole of nodes
--   (twice for grants) after spooling the inserted rows; _import_load
--   writes the same edges itself, in key order, from what validation found;
-- - the audit triggers of inserted rows (sql/functions/140_audit.sql): with
--   auditing off (as in the load, which writes one summary row instead)
--   they write nothing, but PostgreSQL still collects every inserted row
--   into their transition table first (for 1 M grants, ~47 MB spilled to
--   temporary files).
-- Only the tables' owner may do this (as with any ALTER TABLE), and it
-- takes SHARE ROW EXCLUSIVE locks: other sessions never see them off (the
-- catalog change is theirs only at commit, and _import_load turns them
-- back on before it returns).
create or replace function permgraph._import_load_triggers(p_enabled boolean) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  verb constant text := case when p_enabled then 'enable' else 'disable' end;
begin
  execute format('alter table permgraph.nodes %1$s trigger nodes_validate, %1$s trigger nodes_validate_inserted, %1$s trigger nodes_validate_updated, '
                 '%1$s trigger nodes_capture_inserted, %1$s trigger nodes_audit_inserted', verb);
  execute format('alter table permgraph.grants %1$s trigger grants_validate, %1$s trigger grants_validate_inserted, %1$s trigger grants_validate_updated, '
                 '%1$s trigger grants_capture_inserted, %1$s trigger grants_audit_inserted', verb);
end $$;

-- The row checks of the foreign keys into nodes held by nodes and grants
-- (grants_tail_exists, grants_head_exists, nodes_owner_exists): the
-- internal triggers PostgreSQL made for them on the referencing side, which
-- look up every written row's node one SPI query at a time (for 1 M nodes +
-- 1 M grants, ~2.8 M lookups). Off for the load, when the caller may: only a
-- superuser may turn internal triggers off, so for any other role this does
-- nothing and returns false. Safe only after _import_validate in the same
-- transaction, for the reason of _import_load_triggers: validation has
-- checked that every owner and grant end exists after the load, and its
-- lock keeps any writer (a delete of a node) out until the commit. The
-- foreign keys' other triggers (ON DELETE on nodes) stay on. Like
-- _import_load_triggers, it is an ALTER TABLE inside the transaction
-- (SHARE ROW EXCLUSIVE locks, which the import holds already): others never
-- see the triggers off.
create or replace function permgraph._import_reference_checks(p_enabled boolean) returns boolean
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  t record;
begin
  if not (select r.rolsuper from pg_roles r where r.rolname = current_user) then
    return false;
  end if;
  for t in
    select tg.tgrelid::regclass as table_name, tg.tgname
    from pg_trigger tg join pg_constraint c on c.oid = tg.tgconstraint
    where c.contype = 'f' and c.confrelid = 'permgraph.nodes'::regclass
      and c.conrelid in ('permgraph.nodes'::regclass, 'permgraph.grants'::regclass)
      and tg.tgrelid = c.conrelid
      and tg.tgfoid in ('pg_catalog."RI_FKey_check_ins"'::regproc, 'pg_catalog."RI_FKey_check_upd"'::regproc)
    order by 1, 2
  loop
    execute format('alter table %s %s trigger %I', t.table_name, case when p_enabled then 'enable' else 'disable' end, t.tgname);
  end loop;
  return true;
end $$;

-- Writes a validated run's valid rows into nodes and grants (upsert), with
-- change capture and per-row auditing off for this transaction: the caller
-- runs one permgraph.refresh() after, in the same transaction. It reads
-- them from the temporary tables _import_validate left in this transaction
-- (import_valid, import_grants_valid: the valid rows with their stored
-- versions), not from the staging tables. p_set_trash: the input has a
-- trash_at column (otherwise stored trash times are kept); p_set_expiry:
-- the grants input has an expires_at column (otherwise stored expiries are
-- kept, and new grants never expire). p_levels is no longer read (the
-- levels were resolved by _import_validate); it stays in the signature.
-- Its own statements join nothing and write by primary key, so it leaves
-- the planner settings alone: the triggers of nodes and grants plan their
-- statements as they always do.
--
-- The per-statement integrity triggers (owners exist and own, no cycle,
-- grant ends exist, no object holds a grant) are off while it writes: they
-- would check again, row for row, what _import_validate has just checked on
-- the graph the load produces (for 1 M nodes + 1 M grants, ~10 s of 35),
-- and that stays true, since validation locked out every writer until the
-- transaction ends. So it must run after _import_validate, in the same
-- transaction: it refuses otherwise. For the same reason the foreign keys'
-- row checks are off too when the caller is a superuser
-- (_import_reference_checks); for any other role they check every row here
-- (unless _import_drop_foreign_keys dropped them, then once after). They
-- are made IMMEDIATE for this transaction because turning the triggers back
-- on is an ALTER TABLE, which PostgreSQL refuses while row checks of the
-- table are still pending.
create or replace function permgraph._import_load(p_run text, p_set_trash boolean, p_set_expiry boolean, p_levels jsonb) returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  nodes_inserted bigint;
  nodes_updated bigint;
  nodes_unchanged bigint;
  grants_inserted bigint;
  grants_updated bigint;
  grants_valid bigint;
  seqscan constant text := current_setting('enable_seqscan');
  fk record;
begin
  if to_regclass('pg_temp.import_valid') is null or to_regclass('pg_temp.import_grants_valid') is null then
    raise exception 'permgraph: _import_load(%) must run after _import_validate, in the same transaction', p_run
      using errcode = '55000';
  end if;
  for fk in select * from permgraph._import_foreign_keys() loop
    execute format('set constraints permgraph.%I immediate', fk.constraint_name);
  end loop;
  perform permgraph._import_load_triggers(false);
  perform permgraph._import_reference_checks(false);
  perform set_config('permgraph.capture', 'off', true);
  perform set_config('permgraph.audit', 'off', true);

  -- The stored nodes the load changes (owner, or trash time if the input has
  -- trash_at), with their new values: from import_valid, which holds every
  -- valid staged node with its stored version (_import_validate), so
  -- neither the staging table nor the graph is read again.
  drop table if exists pg_temp.import_changed;
  create temp table import_changed (id text collate "C" primary key, owner_id text collate "C", owner_changed boolean, trash_at timestamptz)
    on commit drop;
  with staged as (
    select v.id, v.owner_id, case when p_set_trash then permgraph._import_moment(v.trash_at) end as trash_at, v.stored, v.stored_owner, v.stored_trash
    from pg_temp.import_valid v
  ), changed as (
    insert into pg_temp.import_changed
    select id, owner_id, owner_id is distinct from stored_owner, case when p_set_trash then trash_at else stored_trash end
    from staged
    where stored and (owner_id is distinct from stored_owner or (p_set_trash and trash_at is distinct from stored_trash))
    returning 1
  )
  select count(*) filter (where not stored), (select count(*) from changed), count(*) filter (where stored) - (select count(*) from changed)
  into nodes_inserted, nodes_updated, nodes_unchanged
  from staged;

  -- The node triggers walk up the owners of what a statement wrote; their
  -- steps must be index probes, not scans (see bench/graph/load.ts).
  perform set_config('enable_seqscan', 'off', true);
  -- New nodes come with their owners: a new node's owner is new or stored,
  -- and no stored node points at a new one yet, so no cycle can close. In
  -- id order, so that the primary key is written in order: the order in
  -- which validation wrote import_valid (a scan of it returns them so; no
  -- sort, and it has no index to read them by). Their owners'
  -- edges are written here, in key order, each owner's kind by one probe
  -- (the capture trigger is off: _import_load_triggers).
  if nodes_inserted > 0 then
    insert into permgraph.nodes (id, kind, owner_id, trash_at)
    select v.id, v.kind, v.owner_id, case when p_set_trash then permgraph._import_moment(v.trash_at) end
    from pg_temp.import_valid v
    where not v.stored;
    insert into permgraph.edges (tail_id, head_id, source, level, tail_kind, head_kind)
    select v.owner_id, v.id, '', 3, coalesce(o.kind, 'group'), v.kind
    from pg_temp.import_valid v
    left join lateral (select n.kind from permgraph.nodes n where n.id = v.owner_id offset 0) o on true
    where not v.stored and v.owner_id is not null and v.owner_id <> v.id and v.kind <> 'object'
    order by v.owner_id, v.id;
  end if;
  if nodes_updated > 0 then
    -- Stored nodes whose owner changes lose their old owner first, so every
    -- intermediate ownership graph is a part of the (acyclic, validated) final one.
    update permgraph.nodes n set owner_id = null
    where n.id = any (array(select c.id from pg_temp.import_changed c where c.owner_changed)) and n.owner_id is not null;
    update permgraph.nodes n
    set owner_id = (select c.owner_id from pg_temp.import_changed c where c.id = n.id),
        trash_at = (select c.trash_at from pg_temp.import_changed c where c.id = n.id)
    where n.id = any (array(select c.id from pg_temp.import_changed c));
  end if;
  perform set_config('enable_seqscan', seqscan, true);

  -- Grants, from import_grants_valid (_import_validate: each valid staged
  -- grant with its level and its stored version): the stored ones that
  -- change are updated, the others inserted by a plain INSERT. No writer
  -- can add a grant meanwhile (validation locked them out), so no conflict
  -- can arise, and INSERT ... ON CONFLICT, whose speculative insertion (a
  -- pre-check, a lock and a confirmation record per row) took ~1.5 times as
  -- long as a plain INSERT of the same 1 M rows, is not needed. Validation
  -- has rejected duplicate keys within the run.
  drop table if exists pg_temp.import_grants_changed;
  create temp table import_grants_changed on commit drop as
    select c.tail_id, c.head_id, c.source, c.level,
           case when p_set_expiry then c.expires_at else c.stored_expires end as expires_at
    from pg_temp.import_grants_valid c
    where c.stored and (c.level is distinct from c.stored_level or (p_set_expiry and c.expires_at is distinct from c.stored_expires));
  analyze pg_temp.import_grants_changed;
  update permgraph.grants g set level = c.level, expires_at = c.expires_at
  from pg_temp.import_grants_changed c
  where g.tail_id = c.tail_id and g.head_id = c.head_id and g.source = c.source;
  get diagnostics grants_updated = row_count;
  -- In key order, as validation wrote them (a scan of the table just
  -- written returns them so; no sort needed): the unique index and the
  -- edges' primary key are then written in order. Their edges are written
  -- here, set-based, with the kinds validation found
  -- (_import_load_triggers).
  insert into permgraph.grants (tail_id, head_id, level, source, expires_at)
  select c.tail_id, c.head_id, c.level, c.source, case when p_set_expiry then c.expires_at end
  from pg_temp.import_grants_valid c
  where not c.stored;
  get diagnostics grants_inserted = row_count;
  insert into permgraph.edges (tail_id, head_id, source, level, tail_kind, head_kind, expires_at)
  select c.tail_id, c.head_id, c.source, c.level, c.tail_kind, c.head_kind, case when p_set_expiry then c.expires_at end
  from pg_temp.import_grants_valid c
  where not c.stored;
  select count(*) into grants_valid from pg_temp.import_grants_valid;
  perform permgraph._import_load_triggers(true);
  perform permgraph._import_reference_checks(true);

  return jsonb_build_object(
    'nodes_inserted', nodes_inserted, 'nodes_updated', nodes_updated, 'nodes_unchanged', nodes_unchanged,
    'grants_inserted', grants_inserted, 'grants_updated', grants_updated,
    'grants_unchanged', grants_valid - grants_inserted - grants_updated);
end $$;

-- The import's exclusive load (ImportOptions.exclusive, `permgraph import
-- --exclusive`): the foreign keys into permgraph.nodes (grants_tail_exists,
-- grants_head_exists, nodes_owner_exists) check every row they cover one at
-- a time, an SPI lookup each (~2.8 M of them, ~24 s, for 1 M nodes + 1 M
-- grants), unless the importing role is a superuser
-- (_import_reference_checks). The exclusive load drops them before it writes and adds them
-- back after, NOT VALID, then validates each with one set-based query (an
-- anti-join). Their definitions are read from the catalog
-- (pg_get_constraintdef), so they come back exactly as they were, whatever
-- the migrations made of them; it is DDL inside the load's transaction, so a
-- rollback (a failed or interrupted load, a dry run) restores them too.
-- DROP CONSTRAINT takes ACCESS EXCLUSIVE locks on nodes and grants until
-- the transaction ends: readers of nodes and grants wait as well as writers,
-- which is why the exclusive load is opt-in.
--
-- The foreign keys into permgraph.nodes held by the import's two tables, with their definitions.
create or replace function permgraph._import_foreign_keys()
returns table (table_name regclass, constraint_name name, definition text)
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid)
  from pg_constraint c
  where c.contype = 'f' and c.confrelid = 'permgraph.nodes'::regclass
    and c.conrelid in ('permgraph.nodes'::regclass, 'permgraph.grants'::regclass)
  order by c.conrelid::regclass::text, c.conname
$$;

-- Sets those foreign keys aside for the rest of the transaction (015_work_tables.sql):
-- built again by _rebuild_set_aside('import') NOT VALID (no per-row check of
-- the stored rows), then validated (one set-based check of all of them; a
-- row without its node fails the transaction with the foreign key's own
-- error). Returns how many it dropped.
create or replace function permgraph._import_drop_foreign_keys() returns integer
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  drops text[];
  adds text[];
  validates text[];
begin
  -- Both tables at once, in one order: two exclusive imports cannot deadlock.
  lock table permgraph.nodes, permgraph.grants in access exclusive mode;
  select array_agg(format('alter table %s drop constraint %I', f.table_name, f.constraint_name) order by f.table_name::text, f.constraint_name),
         array_agg(format('alter table %s add constraint %I %s not valid', f.table_name, f.constraint_name, f.definition) order by f.table_name::text, f.constraint_name),
         array_agg(format('alter table %s validate constraint %I', f.table_name, f.constraint_name) order by f.table_name::text, f.constraint_name)
  into drops, adds, validates
  from permgraph._import_foreign_keys() f;
  return permgraph._set_aside('import', drops, adds || validates);
end $$;

-- The exclusive load also builds the secondary indexes of nodes, grants and
-- edges (those that are neither unique nor a constraint's: the load's own
-- lookups and ON CONFLICT use only the unique ones) once after it, rather
-- than inserting every written row into each of them: for 1 M nodes +
-- 1 M grants, ~2.8 M random btree insertions. Worth it only when the run
-- writes many rows for what the tables hold: at least a quarter as many
-- (below that, maintaining them row by row costs less than sorting all the
-- stored rows again). Like the foreign keys, their definitions come from the
-- catalog (pg_get_indexdef), and it is DDL in the load's transaction: a
-- rollback restores them. DROP INDEX takes ACCESS EXCLUSIVE locks, which
-- the exclusive import holds already.
--
-- Those indexes, with their definitions.
create or replace function permgraph._import_secondary_indexes()
returns table (index_name regclass, definition text)
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select i.indexrelid::regclass, pg_get_indexdef(i.indexrelid)
  from pg_index i
  where i.indrelid in ('permgraph.nodes'::regclass, 'permgraph.grants'::regclass, 'permgraph.edges'::regclass)
    and not i.indisunique and not exists (select 1 from pg_constraint c where c.conindid = i.indexrelid)
  order by i.indexrelid::regclass::text
$$;

-- Sets them aside for the rest of the transaction (015_work_tables.sql;
-- built again by _rebuild_set_aside('import')) if the run's valid rows are
-- at least a quarter of the rows of nodes and grants (planner estimates:
-- reltuples, or a count if the tables were never analyzed). Returns how
-- many it dropped.
create or replace function permgraph._import_drop_indexes(p_run text) returns integer
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  incoming bigint;
  stored double precision;
  drops text[];
  rebuilds text[];
begin
  select (select count(*) from permgraph.import_nodes where run = p_run and problem is null)
       + (select count(*) from permgraph.import_grants where run = p_run and problem is null)
  into incoming;
  select sum(case when c.reltuples >= 0 then c.reltuples
                  when c.oid = 'permgraph.nodes'::regclass then (select count(*) from permgraph.nodes)
                  else (select count(*) from permgraph.grants) end)
  into stored
  from pg_class c where c.oid in ('permgraph.nodes'::regclass, 'permgraph.grants'::regclass);
  if incoming * 4 < stored then
    return 0;
  end if;
  lock table permgraph.nodes, permgraph.grants, permgraph.edges in access exclusive mode;
  select array_agg(format('drop index %s', i.index_name) order by i.index_name::text),
         array_agg(i.definition order by i.index_name::text)
  into drops, rebuilds
  from permgraph._import_secondary_indexes() i;
  return permgraph._set_aside('import', drops, rebuilds);
end $$;
