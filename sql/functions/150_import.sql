-- The set-based validate and load steps of `permgraph import`, over the
-- staging tables import_nodes and import_grants.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

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

-- Marks every invalid staged row of a run with the reason, set-based.
-- Ownership is checked on the graph the load would produce: valid staged
-- nodes replace the stored ones, the other stored nodes stay. A rejected node
-- falls back to its stored version (or disappears), which can invalidate
-- others (their owner, a cycle through the stored version), so the owner
-- checks repeat until nothing changes. Returns the counts.
create or replace function permgraph._import_validate(p_run text) returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  marked bigint;
  start_id text;
  cur text;
  nxt text;
  seen boolean;
  path text[];
  pos integer;
begin
  update permgraph.import_nodes s set problem = case
      when s.id is null or s.id = '' then 'empty id'
      when s.kind is null or s.kind not in ('user', 'group', 'object') then
        format('kind must be user, group or object, got %s', coalesce(quote_literal(s.kind), 'nothing'))
      when s.trash_at is not null and not permgraph._is_timestamptz(s.trash_at) then
        format('trash_at %s is not a timestamp', quote_literal(s.trash_at))
    end
  where s.run = p_run and s.problem is null
    and (s.id is null or s.id = '' or s.kind is null or s.kind not in ('user', 'group', 'object')
         or (s.trash_at is not null and not permgraph._is_timestamptz(s.trash_at)));

  update permgraph.import_nodes s set problem = format('duplicate id "%s" (first at %s)', s.id, f.origin)
  from (select distinct on (id) id, seq, origin from permgraph.import_nodes
        where run = p_run and problem is null order by id, seq) f
  where s.run = p_run and s.problem is null and s.id = f.id and s.seq > f.seq;

  update permgraph.import_nodes s
  set problem = format('node "%s" exists as a %s; its kind cannot change to %s', s.id, n.kind, s.kind)
  from permgraph.nodes n
  where s.run = p_run and s.problem is null and n.id = s.id and n.kind <> s.kind;

  -- The graph after the load: valid staged nodes, plus stored nodes not staged.
  drop table if exists pg_temp.import_merged;
  create temp table import_merged (id text collate "C" primary key, kind text, owner_id text collate "C", seq bigint)
    on commit drop;
  insert into pg_temp.import_merged select id, kind, owner_id, seq from permgraph.import_nodes where run = p_run and problem is null;
  insert into pg_temp.import_merged select n.id, n.kind, n.owner_id, null from permgraph.nodes n
    on conflict (id) do nothing;
  create index on pg_temp.import_merged (owner_id);
  analyze pg_temp.import_merged;

  loop
    -- Owners: must exist after the load, must not be objects, only users may own themselves.
    with bad as (
      select s.seq, case
          when s.owner_id = s.id then format('ownership cycle: %s "%s" cannot own itself', s.kind, s.id)
          when o.id is null then format('owner "%s" does not exist (neither in the input nor in the database)', s.owner_id)
          else format('owner "%s" is an object; only users and groups own', s.owner_id)
        end as problem
      from permgraph.import_nodes s
      left join pg_temp.import_merged o on o.id = s.owner_id
      where s.run = p_run and s.problem is null and s.owner_id is not null
        and ((s.owner_id = s.id and s.kind <> 'user') or (s.owner_id <> s.id and (o.id is null or o.kind = 'object')))
    )
    update permgraph.import_nodes s set problem = bad.problem from bad where s.run = p_run and s.seq = bad.seq;
    get diagnostics marked = row_count;

    if marked = 0 then
      -- Cycles: nodes not reachable downward from a root (no owner, or a self-owned user).
      drop table if exists pg_temp.import_rooted;
      create temp table import_rooted on commit drop as
        with recursive rooted(id) as (
          select r.id from pg_temp.import_merged r where r.owner_id is null or r.owner_id = r.id
          union all
          select c.id from rooted join pg_temp.import_merged c on c.owner_id = rooted.id and c.owner_id <> c.id
        ) select id from rooted;
      drop table if exists pg_temp.import_unrooted;
      create temp table import_unrooted on commit drop as
        select m.id, m.owner_id, m.seq, false as visited, null::text as cycle
        from pg_temp.import_merged m
        where not exists (select 1 from pg_temp.import_rooted r where r.id = m.id);
      if exists (select 1 from pg_temp.import_unrooted) then
        alter table pg_temp.import_unrooted add primary key (id);
        -- Walk up from each unvisited node; a walk that meets its own path found a cycle.
        loop
          select id into start_id from pg_temp.import_unrooted where not visited limit 1;
          exit when not found;
          path := array[]::text[];
          cur := start_id;
          loop
            select visited, owner_id into seen, nxt from pg_temp.import_unrooted where id = cur;
            exit when seen;
            update pg_temp.import_unrooted set visited = true where id = cur;
            path := path || cur;
            cur := nxt;
          end loop;
          pos := array_position(path, cur);
          if pos is not null then
            update pg_temp.import_unrooted
            set cycle = array_to_string(path[pos:] || cur, ' -> ')
            where id = any (path[pos:]);
          end if;
        end loop;
        update permgraph.import_nodes s set problem = case
            when u.cycle is not null then format('ownership cycle: %s (the owner of each node is the next one)', u.cycle)
            else format('owner "%s" is in or below an ownership cycle', s.owner_id)
          end
        from pg_temp.import_unrooted u
        where s.run = p_run and s.problem is null and u.seq = s.seq;
        get diagnostics marked = row_count;
      end if;
    end if;

    exit when marked = 0;
    -- Rejected nodes fall back to their stored version, if any.
    delete from pg_temp.import_merged m using permgraph.import_nodes s
    where s.run = p_run and s.problem is not null and m.seq = s.seq;
    insert into pg_temp.import_merged select n.id, n.kind, n.owner_id, null from permgraph.nodes n
      on conflict (id) do nothing;
  end loop;

  update permgraph.import_grants g set problem = case
      when g.tail_id is null or g.tail_id = '' then 'empty tail_id'
      when g.head_id is null or g.head_id = '' then 'empty head_id'
      when g.level is null or g.level not in ('1', '2', '3') then
        format('level must be 1 (read), 2 (write) or 3 (manage), got %s', coalesce(quote_literal(g.level), 'nothing'))
      when t.id is null then format('grant tail "%s" does not exist (neither in the input nor in the database)', g.tail_id)
      when t.kind = 'object' then format('grant tail "%s" is an object; only users and groups can hold grants', g.tail_id)
      when h.id is null then format('grant head "%s" does not exist (neither in the input nor in the database)', g.head_id)
    end
  from permgraph.import_grants g2
  left join pg_temp.import_merged t on t.id = g2.tail_id
  left join pg_temp.import_merged h on h.id = g2.head_id
  where g.run = p_run and g2.run = p_run and g2.seq = g.seq and g.problem is null
    and (g.tail_id is null or g.tail_id = '' or g.head_id is null or g.head_id = ''
         or g.level is null or g.level not in ('1', '2', '3') or t.id is null or t.kind = 'object' or h.id is null);

  update permgraph.import_grants g
  set problem = format('duplicate grant "%s" -> "%s" (source %s; first at %s)', g.tail_id, g.head_id, g.source, f.origin)
  from (select distinct on (tail_id, head_id, source) tail_id, head_id, source, seq, origin
        from permgraph.import_grants where run = p_run and problem is null
        order by tail_id, head_id, source, seq) f
  where g.run = p_run and g.problem is null
    and (g.tail_id, g.head_id, g.source) = (f.tail_id, f.head_id, f.source) and g.seq > f.seq;

  return jsonb_build_object(
    'nodes_valid', (select count(*) from permgraph.import_nodes where run = p_run and problem is null),
    'nodes_invalid', (select count(*) from permgraph.import_nodes where run = p_run and problem is not null),
    'grants_valid', (select count(*) from permgraph.import_grants where run = p_run and problem is null),
    'grants_invalid', (select count(*) from permgraph.import_grants where run = p_run and problem is not null));
end $$;

-- Writes a validated run's valid rows into nodes and grants (upsert), with
-- change capture and per-row auditing off for this transaction: the caller
-- runs one permgraph.refresh() after, in the same transaction. p_set_trash:
-- the input has a trash_at column (otherwise stored trash times are kept).
create or replace function permgraph._import_load(p_run text, p_set_trash boolean) returns jsonb
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
begin
  perform set_config('permgraph.capture', 'off', true);
  perform set_config('permgraph.audit', 'off', true);

  create temp table import_load_nodes on commit drop as
    select s.id, s.kind, s.owner_id,
           case when p_set_trash then s.trash_at::timestamptz end as trash_at,
           n.id is not null as stored, n.owner_id as stored_owner, n.trash_at as stored_trash
    from permgraph.import_nodes s left join permgraph.nodes n on n.id = s.id
    where s.run = p_run and s.problem is null;
  select count(*) filter (where not stored),
         count(*) filter (where stored and (owner_id is distinct from stored_owner
                                            or (p_set_trash and trash_at is distinct from stored_trash))),
         count(*) filter (where stored and not (owner_id is distinct from stored_owner
                                                or (p_set_trash and trash_at is distinct from stored_trash)))
  into nodes_inserted, nodes_updated, nodes_unchanged from pg_temp.import_load_nodes;

  -- Owners may come later in the input: insert without owners, then set them.
  -- Stored nodes whose owner changes lose their old owner first, so every
  -- intermediate ownership graph is a part of the (acyclic, validated) final one.
  insert into permgraph.nodes (id, kind, trash_at)
  select id, kind, trash_at from pg_temp.import_load_nodes where not stored;
  update permgraph.nodes n set owner_id = null
  from pg_temp.import_load_nodes l
  where l.stored and n.id = l.id and n.owner_id is not null and l.owner_id is distinct from n.owner_id;
  -- The cycle check in the node trigger walks up the owners once per row;
  -- its plan must use the primary key (see bench/graph/load.ts), not scans.
  set local enable_seqscan = off;
  update permgraph.nodes n
  set owner_id = l.owner_id, trash_at = case when p_set_trash then l.trash_at else n.trash_at end
  from pg_temp.import_load_nodes l
  where n.id = l.id
    and (n.owner_id is distinct from l.owner_id or (p_set_trash and n.trash_at is distinct from l.trash_at));
  set local enable_seqscan = on;

  with written as (
    insert into permgraph.grants as g (tail_id, head_id, level, source)
    select tail_id, head_id, level::smallint, source
    from permgraph.import_grants where run = p_run and problem is null
    on conflict on constraint grants_unique_per_source
      do update set level = excluded.level where g.level is distinct from excluded.level
    returning (xmax = 0) as inserted
  )
  select count(*) filter (where inserted), count(*) filter (where not inserted)
  into grants_inserted, grants_updated from written;

  drop table pg_temp.import_load_nodes;
  return jsonb_build_object(
    'nodes_inserted', nodes_inserted, 'nodes_updated', nodes_updated, 'nodes_unchanged', nodes_unchanged,
    'grants_inserted', grants_inserted, 'grants_updated', grants_updated,
    'grants_unchanged', (select count(*) from permgraph.import_grants where run = p_run and problem is null)
                        - grants_inserted - grants_updated);
end $$;
