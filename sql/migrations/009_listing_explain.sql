-- permgraph 009: permission-aware listings (keyset pages) and explain.
-- Both follow the rule of semantics.md: u may act on x at level L iff a row
-- (u, x) has level >= L, or x's owner o has a row (u, o) with level >= L and
-- traverse_owned; trashed groups and objects are hidden (permgraph.is_trashed).

-- Keyset pages over the children of one owner use nodes_owner_idx
-- (owner_id, id) from sql/001: each owner contributes its next few ids by a
-- range scan, however many nodes it owns.

-- Listings return at most this many rows per call (the TypeScript API caps
-- pages lower, at 10,000, and asks for one more row to know whether more follow).
create or replace function permgraph._require_page_limit(p_limit integer) returns void
language plpgsql immutable as $$
begin
  if p_limit is null or p_limit not between 1 and 100000 then
    raise exception 'permgraph: limit must be between 1 and 100000, got %', coalesce(p_limit::text, 'null')
      using errcode = '22023';
  end if;
end $$;

-- The kind of p_id, with a clear error when it is not a node.
create or replace function permgraph._require_node(p_id text, p_role text) returns text
language plpgsql stable as $$
declare
  node_kind text;
begin
  select kind into node_kind from permgraph.nodes where id = p_id;
  if not found then
    raise exception 'permgraph: % "%" does not exist', p_role, p_id using errcode = '22023';
  end if;
  return node_kind;
end $$;

create or replace function permgraph._require_user(p_id text) returns void
language plpgsql stable as $$
declare
  node_kind text := permgraph._require_node(p_id, 'user');
begin
  if node_kind <> 'user' then
    raise exception 'permgraph: "%" is a %, not a user (permissions start at users)', p_id, node_kind
      using errcode = '22023';
  end if;
end $$;

-- The nodes p_user_id may act on at p_level (optionally of one kind), not
-- trashed, with ids strictly after p_after (null: from the start), in id order
-- (byte-wise), at most p_limit of them. level is the best level the user has
-- on the node, directly or through its owner.
--
-- Two kinds of candidates:
-- * the user's rows: one range scan of the primary key, cut at p_limit;
-- * children of the nodes the user's rows traverse (traverse_owned). A group
--   owner's users and groups are rows already (ownership is an edge), so only
--   its objects are needed, and none of a trashed group's; a user owner's
--   children of every kind. Each owner's children come by range scans of
--   nodes (owner_id, id), a merge of sorted lists done in rounds: every owner
--   gives its next `chunk` ids; an owner whose last id fetched is still before
--   the page's current end may hold more, and takes part in the next round
--   (chunks double). The rest stop. So a page costs about one probe per owner
--   plus the rows near the page, not every child of every owner.
-- Trash is permgraph.is_trashed's rule written inline: calling the function
-- once per candidate row made pages of large graphs ~100x slower.
-- Superusers, for list_users.
create index if not exists nodes_superusers_idx on permgraph.nodes (id) where is_superuser;

create or replace function permgraph.list_targets(
  p_user_id text, p_level integer default 1, p_kind text default null,
  p_after text default null, p_limit integer default 100
) returns table (target_id text, kind text, level smallint)
language plpgsql stable as $$
#variable_conflict use_column
declare
  -- '' is the smallest string, so "id >= from_id" (an index bound) plus
  -- skipping p_after itself means "after p_after", even for the id ''.
  from_id text collate "C" := coalesce(p_after, '');
  skip_from boolean := p_after is not null;
  page text[];          -- the first p_limit candidates found so far, in id order
  owners text[];        -- owners that may still hold ids before the page's end
  owner_kinds text[];
  cursors text[];       -- per owner, the last child id fetched (null: none yet)
  chunk integer;
begin
  perform permgraph._require_level(p_level);
  perform permgraph._require_page_limit(p_limit);
  perform permgraph._require_user(p_user_id);
  if p_kind is not null and p_kind not in ('user', 'group', 'object') then
    raise exception 'permgraph: kind must be user, group or object, got "%"', p_kind using errcode = '22023';
  end if;
  if permgraph._is_superuser(p_user_id) then
    -- Superusers have no rows of their own: every node that trash does not hide.
    return query
    select n.id::text, n.kind, 3::smallint
    from permgraph.nodes n
    where n.id >= from_id and not (skip_from and n.id = from_id)
      and (p_kind is null or n.kind = p_kind)
      and not permgraph.is_trashed(n.id)
    order by n.id
    limit p_limit;
    return;
  end if;

  select coalesce(array_agg(d.target_id order by d.target_id), '{}') into page
  from (
    select p.target_id
    from permgraph.permissions p
    join permgraph.nodes n on n.id = p.target_id
    where p.user_id = p_user_id and p.target_id >= from_id
      and not (skip_from and p.target_id = from_id)
      and p.level >= p_level
      and (p_kind is null or n.kind = p_kind)
      and case n.kind
            when 'user' then true
            when 'group' then not exists (select 1 from permgraph.trashed_groups t
                                          where t.group_id = n.id and t.trash_at <= now())
            else (n.trash_at is null or n.trash_at > now())
                 and not exists (select 1 from permgraph.trashed_groups t
                                 where t.group_id = n.owner_id and t.trash_at <= now())
          end
    order by p.target_id
    limit p_limit
  ) d;

  select array_agg(p.target_id), array_agg(n.kind), array_agg(null::text)
  into owners, owner_kinds, cursors
  from permgraph.permissions p
  join permgraph.nodes n on n.id = p.target_id
  where p.user_id = p_user_id and p.level >= p_level and p.traverse_owned
    and (n.kind = 'user'
         or (n.kind = 'group' and (p_kind is null or p_kind = 'object')
             and not exists (select 1 from permgraph.trashed_groups t
                             where t.group_id = n.id and t.trash_at <= now())));

  chunk := greatest(1, p_limit / greatest(coalesce(cardinality(owners), 0), 1));
  while coalesce(cardinality(owners), 0) > 0 loop
    with fetched as (
      select o.ord, o.owner_id, o.owner_kind, c.id
      from unnest(owners, owner_kinds, cursors) with ordinality as o(owner_id, owner_kind, after_id, ord)
      cross join lateral (
        select n.id
        from permgraph.nodes n
        where n.owner_id = o.owner_id
          and n.id >= coalesce(o.after_id, from_id)
          and n.id is distinct from coalesce(o.after_id, case when skip_from then from_id end)
          and (o.owner_kind = 'user' or n.kind = 'object')
          and (p_kind is null or n.kind = p_kind)
          and case n.kind  -- the owner is a user, or a group that is not trashed
                when 'user' then true
                when 'group' then not exists (select 1 from permgraph.trashed_groups t
                                              where t.group_id = n.id and t.trash_at <= now())
                else n.trash_at is null or n.trash_at > now()
              end
        order by n.id
        limit chunk
      ) c
    ), merged as (
      select array_agg(m.id order by m.id) as ids
      from (select u.id
            from (select x collate "C" as id from unnest(page) as x
                  union
                  select f.id from fetched f) u
            order by u.id
            limit p_limit) m
    ), more as (
      -- owners that filled their chunk with ids all before the page's end
      select f.ord, f.owner_id, f.owner_kind, max(f.id) as last_id
      from fetched f
      group by f.ord, f.owner_id, f.owner_kind
      having count(*) = chunk
    )
    select coalesce(mg.ids, '{}'),
           array_agg(mo.owner_id order by mo.ord) filter (where mo.owner_id is not null),
           array_agg(mo.owner_kind order by mo.ord) filter (where mo.owner_id is not null),
           array_agg(mo.last_id order by mo.ord) filter (where mo.owner_id is not null)
    into page, owners, owner_kinds, cursors
    from merged mg
    left join more mo
      on coalesce(cardinality(mg.ids), 0) < p_limit or mo.last_id < (mg.ids[p_limit] collate "C")
    group by mg.ids;
    chunk := least(chunk * 2, p_limit);
  end loop;

  return query
  select n.id::text, n.kind, greatest(direct.level, via_owner.level)::smallint
  from unnest(page) as pg(id)
  join permgraph.nodes n on n.id = pg.id
  left join permgraph.permissions direct
    on direct.user_id = p_user_id and direct.target_id = n.id
  left join permgraph.permissions via_owner
    on via_owner.user_id = p_user_id and via_owner.target_id = n.owner_id and via_owner.traverse_owned
  order by n.id;
end $$;

-- The users who may act on node p_target_id at p_level (directly or through
-- its owner), with user ids strictly after p_after, in id order, at most
-- p_limit; level is each user's best level on the node. Nobody, when the
-- node is trashed. Both sources are range scans of permissions_target_idx.
create or replace function permgraph.list_users(
  p_target_id text, p_level integer default 1, p_after text default null, p_limit integer default 100
) returns table (user_id text, level smallint)
language plpgsql stable as $$
#variable_conflict use_column
declare
  from_id text collate "C" := coalesce(p_after, '');
  skip_from boolean := p_after is not null;
  target_owner text;
begin
  perform permgraph._require_level(p_level);
  perform permgraph._require_page_limit(p_limit);
  perform permgraph._require_node(p_target_id, 'target');
  if permgraph.is_trashed(p_target_id) then
    return;
  end if;
  select n.owner_id into target_owner from permgraph.nodes n where n.id = p_target_id;
  return query
  select c.user_id::text, max(c.level)::smallint
  from (
    (select p.user_id, p.level
     from permgraph.permissions p
     where p.target_id = p_target_id and p.user_id >= from_id
       and not (skip_from and p.user_id = from_id)
       and p.level >= p_level
     order by p.user_id
     limit p_limit)
    union all
    (select p.user_id, p.level
     from permgraph.permissions p
     where p.target_id = target_owner and p.user_id >= from_id
       and not (skip_from and p.user_id = from_id)
       and p.level >= p_level and p.traverse_owned
     order by p.user_id
     limit p_limit)
    union all
    (select s.id, 3::smallint  -- superusers may act on everything not trashed
     from permgraph.nodes s
     where s.is_superuser and s.id >= from_id
       and not (skip_from and s.id = from_id)
     order by s.id
     limit p_limit)
  ) c
  group by c.user_id
  order by c.user_id
  limit p_limit;
end $$;

-- Breadth-first search from p_user_id over edges of level >= p_min_level,
-- leaving only the start and groups (semantics.md, "paths"). Returns
-- {node: {d: depth, o: rank, p: predecessor, s: source, l: level}} for every
-- node reached, the start included (p null). Each node is entered once, so
-- the search ends on cycles after at most one round per node.
-- Tie-break, so the same graph always gives the same path: fewest edges, then
-- the lexicographically smallest sequence of node ids (rank o orders the
-- nodes of one depth by their paths: predecessor's rank, then own id), then
-- between parallel edges the strongest, then the smallest source.
create or replace function permgraph._explain_tree(p_user_id text, p_min_level integer) returns jsonb
language plpgsql stable as $$
declare
  tree jsonb := jsonb_build_object(p_user_id, jsonb_build_object('d', 0, 'o', 1, 'p', null, 's', null, 'l', 3));
  frontier_ids text[] := array[p_user_id];
  frontier_kinds text[] := array['user'];
  frontier_ranks bigint[] := array[1::bigint];
  depth integer := 0;
  added jsonb;
begin
  loop
    select jsonb_object_agg(s.head_id, jsonb_build_object('d', depth + 1, 'o', s.rank, 'p', s.pred_id, 's', s.source, 'l', s.level)),
           array_agg(s.head_id order by s.rank), array_agg(s.head_kind order by s.rank), array_agg(s.rank order by s.rank)
      into added, frontier_ids, frontier_kinds, frontier_ranks
    from (
      select c.head_id, c.head_kind, c.pred_id, c.source, c.level,
             row_number() over (order by c.pred_rank, c.head_id) as rank
      from (
        select distinct on (e.head_id) e.head_id, e.head_kind, f.id as pred_id, f.rank as pred_rank, e.source, e.level
        from unnest(frontier_ids, frontier_kinds, frontier_ranks) as f(id, kind, rank)
        join permgraph.edges e on e.tail_id = f.id
        where e.level >= p_min_level
          and (f.kind = 'group' or depth = 0)
          and not (tree ? e.head_id)
        order by e.head_id, f.rank, e.level desc, e.source
      ) c
    ) s;
    exit when added is null;
    tree := tree || added;
    depth := depth + 1;
  end loop;
  return tree;
end $$;

-- The edges from the search's start to p_node, following predecessors.
-- Ownership edges (source '') are reported with source 'owner'.
create or replace function permgraph._explain_path(p_tree jsonb, p_node text) returns jsonb
language plpgsql immutable as $$
declare
  path jsonb := '[]';
  node text := p_node;
  entry jsonb;
begin
  loop
    entry := p_tree -> node;
    exit when entry is null or entry ->> 'p' is null;
    path := jsonb_build_array(jsonb_build_object(
      'tail', entry ->> 'p', 'head', node, 'level', (entry ->> 'l')::integer,
      'source', case when entry ->> 's' = '' then 'owner' else entry ->> 's' end)) || path;
    node := entry ->> 'p';
  end loop;
  return path;
end $$;

-- Why may (or may not) p_user_id act on p_thing_id (at p_level, if given)?
-- The strongest path, computed from the current edges (so it already shows
-- changes the worker has not applied yet), through the owner when that is
-- the better route. reason: null when allowed, else 'trashed', 'no path' or
-- 'level too low'. See the TypeScript Explanation type for the fields.
create or replace function permgraph.explain(p_user_id text, p_thing_id text, p_level integer default null) returns jsonb
language plpgsql stable as $$
declare
  thing record;
  owner_kind text;
  effective_trash timestamptz;
  hidden boolean;
  tree_any jsonb;
  tree jsonb;
  min_level integer;
  best integer := 0;
  via text;
  path jsonb := '[]';
  traverse_path jsonb;
  owner_usable boolean := false;
  manage_tail text;
  manage_source text;
  identity_edge jsonb := jsonb_build_array(jsonb_build_object('tail', p_user_id, 'head', p_user_id, 'level', 3, 'source', 'identity'));
  reason text;
begin
  if p_level is not null then
    perform permgraph._require_level(p_level);
  end if;
  perform permgraph._require_user(p_user_id);
  perform permgraph._require_node(p_thing_id, 'thing');
  select n.id, n.kind, n.owner_id, n.trash_at into thing from permgraph.nodes n where n.id = p_thing_id;
  select n.kind into owner_kind from permgraph.nodes n where n.id = thing.owner_id;
  -- The same tables permgraph.check() reads for trash, reported as a time.
  effective_trash := case thing.kind
    when 'user' then null
    when 'group' then (select t.trash_at from permgraph.trashed_groups t where t.group_id = thing.id)
    else least(thing.trash_at, (select t.trash_at from permgraph.trashed_groups t where t.group_id = thing.owner_id))
  end;
  hidden := permgraph.is_trashed(thing.id);
  if permgraph._is_superuser(p_user_id) and not hidden then
    return jsonb_build_object(
      'user', p_user_id, 'thing', p_thing_id, 'thingKind', thing.kind, 'level', p_level,
      'allowed', true, 'reason', null, 'bestLevel', 3, 'via', 'superuser',
      'path', '[]'::jsonb, 'traversePath', null, 'trashAt', effective_trash);
  end if;

  tree_any := permgraph._explain_tree(p_user_id, 1);
  -- The owner route needs traverse_owned on the owner row: always for a group
  -- owner (and for the user's own identity row); for another user, some path
  -- whose last edge is a manage edge into that user.
  if thing.owner_id is not null and thing.owner_id <> thing.id then
    if thing.owner_id = p_user_id then
      owner_usable := true;
    elsif owner_kind = 'group' then
      owner_usable := tree_any ? thing.owner_id;
    elsif owner_kind = 'user' then
      select e.tail_id, e.source into manage_tail, manage_source
      from permgraph.edges e
      where e.head_id = thing.owner_id and e.level = 3
        and (e.tail_id = p_user_id or (e.tail_kind = 'group' and tree_any ? e.tail_id))
      order by (tree_any -> e.tail_id ->> 'd')::integer, (tree_any -> e.tail_id ->> 'o')::bigint, e.source
      limit 1;
      owner_usable := found;
    end if;
  end if;

  if (tree_any ? p_thing_id) or (owner_usable and tree_any ? thing.owner_id) then
    for min_level in reverse 3..1 loop
      tree := case when min_level = 1 then tree_any else permgraph._explain_tree(p_user_id, min_level) end;
      if tree ? p_thing_id then
        best := min_level;
        via := 'direct';
        path := permgraph._explain_path(tree, p_thing_id);
        if path = '[]' then
          path := identity_edge;
        end if;
        exit;
      elsif owner_usable and tree ? thing.owner_id then
        best := min_level;
        via := 'owner';
        path := permgraph._explain_path(tree, thing.owner_id);
        if path = '[]' then
          path := identity_edge;
        elsif owner_kind = 'user' and (path -> -1 ->> 'level')::integer <> 3 then
          -- the strongest path to the owner does not end with a manage edge:
          -- show the one that makes the owner's belongings reachable
          traverse_path := permgraph._explain_path(tree_any, manage_tail) || jsonb_build_array(jsonb_build_object(
            'tail', manage_tail, 'head', thing.owner_id, 'level', 3,
            'source', case when manage_source = '' then 'owner' else manage_source end));
        end if;
        path := path || jsonb_build_array(jsonb_build_object('tail', thing.owner_id, 'head', p_thing_id, 'level', 3, 'source', 'owner'));
        exit;
      end if;
    end loop;
  end if;

  reason := case
    when hidden then 'trashed'
    when best = 0 then 'no path'
    when best < coalesce(p_level, 1) then 'level too low'
  end;
  return jsonb_build_object(
    'user', p_user_id, 'thing', p_thing_id, 'thingKind', thing.kind, 'level', p_level,
    'allowed', reason is null, 'reason', reason, 'bestLevel', best, 'via', via,
    'path', path, 'traversePath', traverse_path, 'trashAt', effective_trash);
end $$;
