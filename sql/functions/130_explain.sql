-- explain(): why a user may (or may not) act on a node, as one path.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- Breadth-first search from p_user_id over edges of level >= p_min_level,
-- leaving only the start and groups (semantics.md, "paths"), on the graph as
-- of now: an edge whose grant has expired (expires_at <= now()) is not
-- taken. Returns {node: {d: depth, o: rank, p: predecessor, s: source,
-- l: level, x: the edge's expires_at}} for every node reached, the start
-- included (p null). Each node is entered once, so
-- the search ends on cycles after at most one round per node.
-- Tie-break, so the same graph always gives the same path: fewest edges, then
-- the lexicographically smallest sequence of node ids (rank o orders the
-- nodes of one depth by their paths: predecessor's rank, then own id), then
-- between parallel edges the strongest, then the smallest source.
-- p_lasting_until: only edges that last until then (expires_at null or at or
-- after it; 'infinity': only edges that never expire).
-- p_expired: take the grants that have expired too (the graph as it was
-- before they did; with p_lasting_until, the graph just before that moment,
-- which is what accessEnded searches).
create or replace function permgraph._explain_tree(p_user_id text, p_min_level integer, p_lasting_until timestamptz default '-infinity',
                                                   p_expired boolean default false) returns jsonb
language plpgsql stable
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  tree jsonb := jsonb_build_object(p_user_id, jsonb_build_object('d', 0, 'o', 1, 'p', null, 's', null, 'l', 3));
  frontier_ids text[] := array[p_user_id];
  frontier_kinds text[] := array['user'];
  frontier_ranks bigint[] := array[1::bigint];
  depth integer := 0;
  added jsonb;
begin
  loop
    select jsonb_object_agg(s.head_id, jsonb_build_object('d', depth + 1, 'o', s.rank, 'p', s.pred_id, 's', s.source, 'l', s.level, 'x', s.expires_at)),
           array_agg(s.head_id order by s.rank), array_agg(s.head_kind order by s.rank), array_agg(s.rank order by s.rank)
      into added, frontier_ids, frontier_kinds, frontier_ranks
    from (
      select c.head_id, c.head_kind, c.pred_id, c.source, c.level, c.expires_at,
             row_number() over (order by c.pred_rank, c.head_id) as rank
      from (
        select distinct on (e.head_id) e.head_id, e.head_kind, f.id as pred_id, f.rank as pred_rank, e.source, e.level, e.expires_at
        from unnest(frontier_ids, frontier_kinds, frontier_ranks) as f(id, kind, rank)
        join permgraph.edges e on e.tail_id = f.id
        where e.level >= p_min_level
          and (e.expires_at is null or ((p_expired or e.expires_at > now()) and e.expires_at >= p_lasting_until))
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
-- Ownership edges (source '') are reported with source 'owner'; expiresAt is
-- the grant's expiry (null: never, and for ownership).
create or replace function permgraph._explain_path(p_tree jsonb, p_node text) returns jsonb
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
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
      'source', case when entry ->> 's' = '' then 'owner' else entry ->> 's' end,
      'expiresAt', entry -> 'x')) || path;
    node := entry ->> 'p';
  end loop;
  return path;
end $$;

-- The manage edge into p_owner (a user) that lets p_user_id reach what
-- p_owner owns: from p_user_id itself, or from a group in p_tree (a search
-- from p_user_id, _explain_tree), the nearest first; only edges lasting
-- until p_lasting_until (p_expired: expired grants too, as _explain_tree).
-- As a path step (the traverse path's last edge), or null when there is none.
-- PL/pgSQL, whose plan lasts the session: accessEnded calls it once per
-- moment it tries (an SQL function with a SET clause is planned at every
-- call, test/engine/plan-settings.test.ts).
create or replace function permgraph._explain_manage_edge(p_user_id text, p_owner text, p_tree jsonb, p_lasting_until timestamptz,
                                                          p_expired boolean default false)
returns jsonb
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return (
    select jsonb_build_object('tail', e.tail_id, 'head', p_owner, 'level', 3,
                              'source', case when e.source = '' then 'owner' else e.source end, 'expiresAt', e.expires_at)
    from permgraph.edges e
    where e.head_id = p_owner and e.level = 3
      and (e.expires_at is null or ((p_expired or e.expires_at > now()) and e.expires_at >= p_lasting_until))
      and (e.tail_id = p_user_id or (e.tail_kind = 'group' and p_tree ? e.tail_id))
    order by (p_tree -> e.tail_id ->> 'd')::integer, (p_tree -> e.tail_id ->> 'o')::bigint, e.source
    limit 1);
end $$;

-- A route by which p_user_id could act on p_thing_id at p_level on the
-- graph just before p_before, the grants that have expired by now included
-- (edges lasting until p_before: _explain_tree with p_expired), by the rule
-- explain() follows: directly, else through the thing's owner (a group; the
-- user itself; another user, whose belongings need a manage edge into that
-- user, lasting as long). {via, path, traversePath} as explain() reports
-- them, or null when there is none. Used by accessEnded (a moment before
-- now), and by explain() for a path that lasts as long as its answer (a
-- moment after now, where no expired grant qualifies).
create or replace function permgraph._explain_route_before(p_user_id text, p_thing_id text, p_owner_id text, p_owner_kind text,
                                                           p_level integer, p_before timestamptz)
returns jsonb
language plpgsql stable
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  tree jsonb := permgraph._explain_tree(p_user_id, p_level, p_before, true);
  tree_any jsonb;
  path jsonb;
  manage_edge jsonb;
  traverse_path jsonb;
  identity_edge jsonb := jsonb_build_array(jsonb_build_object('tail', p_user_id, 'head', p_user_id, 'level', 3, 'source', 'identity', 'expiresAt', null));
begin
  if tree ? p_thing_id then
    path := permgraph._explain_path(tree, p_thing_id);
    return jsonb_build_object('via', 'direct', 'path', case when path = '[]' then identity_edge else path end, 'traversePath', null);
  end if;
  if p_owner_id is null or p_owner_id = p_thing_id or not (tree ? p_owner_id) then
    return null;
  end if;
  path := permgraph._explain_path(tree, p_owner_id);
  if path = '[]' then
    path := identity_edge;
  elsif p_owner_kind = 'user' and (path -> -1 ->> 'level')::integer <> 3 then
    -- below manage: the owner's belongings need a manage edge into it
    tree_any := case when p_level = 1 then tree else permgraph._explain_tree(p_user_id, 1, p_before, true) end;
    manage_edge := permgraph._explain_manage_edge(p_user_id, p_owner_id, tree_any, p_before, true);
    if manage_edge is null then
      return null;
    end if;
    traverse_path := permgraph._explain_path(tree_any, manage_edge ->> 'tail') || jsonb_build_array(manage_edge);
  end if;
  return jsonb_build_object(
    'via', 'owner',
    'path', path || jsonb_build_array(jsonb_build_object('tail', p_owner_id, 'head', p_thing_id, 'level', 3, 'source', 'owner', 'expiresAt', null)),
    'traversePath', traverse_path);
end $$;

-- How long p_user_id reaches each node, on the graph with the grants that
-- have expired: for every node the search of _explain_tree reaches with
-- them (p_expired; from the start, then only out of groups), and for each
-- level 1..3, the latest moment T such that a path of edges of at least
-- that level, each lasting until T (expires_at null or at or after T),
-- reaches it: over those paths, the latest of each one's earliest expiry
-- (until_N 'infinity': a path that never expires; '-infinity': no path at
-- that level). So _explain_tree(p_user_id, N, T, true) reaches a node
-- exactly when until_N >= T.
--
-- A widest-path search: a node's value at a level is the greatest, over
-- the edges into it of that level or more out of the start or a group it
-- reaches, of the least of the tail's value and the edge's expiry. Each
-- round relaxes the edges out of the nodes whose values grew in the round
-- before, until none grows; values only grow, and only to moments among
-- the expiries, so it ends (when every node has a best path of at most d
-- edges, after d + 1 rounds). The start and every other node reached are
-- given values, but only the start and groups are left (users and objects
-- reached are endpoints, as in _explain_tree).
create or replace function permgraph._explain_lasting(p_user_id text)
returns table (node_id text, until_1 timestamptz, until_2 timestamptz, until_3 timestamptz)
language plpgsql stable
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  -- every node reached, with its values
  reached_ids text[] := array[p_user_id];
  reached_1 timestamptz[] := array['infinity'::timestamptz];
  reached_2 timestamptz[] := array['infinity'::timestamptz];
  reached_3 timestamptz[] := array['infinity'::timestamptz];
  -- the nodes whose values grew in the last round (first, the start), with their new values
  grown_ids text[] := array[p_user_id];
  grown_kinds text[] := array['user'];
  grown_1 timestamptz[] := array['infinity'::timestamptz];
  grown_2 timestamptz[] := array['infinity'::timestamptz];
  grown_3 timestamptz[] := array['infinity'::timestamptz];
begin
  loop
    select array_agg(c.id), array_agg(c.kind),
           array_agg(greatest(c.v1, r.v1)), array_agg(greatest(c.v2, r.v2)), array_agg(greatest(c.v3, r.v3))
      into grown_ids, grown_kinds, grown_1, grown_2, grown_3
    from (
      select e.head_id as id, e.head_kind as kind,
             max(least(f.v1, coalesce(e.expires_at, 'infinity'))) as v1,
             coalesce(max(least(f.v2, coalesce(e.expires_at, 'infinity'))) filter (where e.level >= 2), '-infinity') as v2,
             coalesce(max(least(f.v3, coalesce(e.expires_at, 'infinity'))) filter (where e.level >= 3), '-infinity') as v3
      from unnest(grown_ids, grown_kinds, grown_1, grown_2, grown_3) as f(id, kind, v1, v2, v3)
      join permgraph.edges e on e.tail_id = f.id
      -- (the start is in the first round only: nothing exceeds its values)
      where f.kind = 'group' or f.id = p_user_id
      group by e.head_id, e.head_kind
    ) c
    left join unnest(reached_ids, reached_1, reached_2, reached_3) as r(id, v1, v2, v3) on r.id = c.id
    where r.id is null or c.v1 > r.v1 or c.v2 > r.v2 or c.v3 > r.v3;
    exit when grown_ids is null;
    select array_agg(coalesce(g.id, r.id)), array_agg(coalesce(g.v1, r.v1)), array_agg(coalesce(g.v2, r.v2)), array_agg(coalesce(g.v3, r.v3))
      into reached_ids, reached_1, reached_2, reached_3
    from unnest(reached_ids, reached_1, reached_2, reached_3) as r(id, v1, v2, v3)
    full join unnest(grown_ids, grown_1, grown_2, grown_3) as g(id, v1, v2, v3) on g.id = r.id;
  end loop;
  return query select * from unnest(reached_ids, reached_1, reached_2, reached_3);
end $$;

-- accessEnded: how p_user_id's access to p_thing_id at p_level ended, when
-- the graph now does not allow it but the graph with the grants that have
-- expired would. at: the latest moment T such that the graph of the grants
-- not yet expired at T allowed the access just before T; that is, over the
-- routes that allowed, the latest of the earliest expiry on each (a route's
-- path and its traverse path together; ownership and identity never
-- expire). With the route that allowed until then ({via, path,
-- traversePath}, as explain() shows them), expiredGrants, its grants
-- that have expired, earliest first, and endedBy, how many of them, from
-- the first, expired at `at` (compared here, to the microsecond: a client
-- that reads the moments into milliseconds cannot tell them apart): those
-- ended the access. Null when the grants that have expired would not allow
-- either.
--
-- T, by the rule of _explain_route_before (a route exists just before T
-- exactly when T is at most this): the later of
--   * direct: how long the thing is reached at p_level (_explain_lasting);
--   * through the owner, when it is not the thing itself: forever when it
--     is the user; else how long the owner is reached at p_level; and when
--     the owner is another user, the earlier of that and how long a manage
--     edge into it lasts from the user or from a group reached at any
--     level (the earlier of the edge's expiry and the group's until_1).
--     _explain_route_before looks for that edge only when the path it
--     shows to the owner does not end with one; when it does, its last
--     edge is one such, so the rule is the same.
-- Then the route at T, with _explain_route_before, at the strongest level
-- a route had just before T (the highest level, from p_level up, whose own
-- T by the same rule is T too): the path explain() would have shown then,
-- the strongest (when a read route and a manage route ended together, the
-- manage one), not the fewest edges at p_level. Cost: one search of the
-- edges reached with the grants that have expired (a few rounds, about as
-- many as the longest of the routes found), then, when a route existed,
-- one or two searches of _explain_tree for the route shown. Only
-- explain()'s not-allowed answers pay it.
create or replace function permgraph._explain_access_ended(p_user_id text, p_thing_id text, p_owner_id text, p_owner_kind text, p_level integer)
returns jsonb
language plpgsql stable
set search_path = pg_catalog, pg_temp
set jit = off
as $$
declare
  ended_at timestamptz;
  route_level integer;   -- the strongest level a route had just before ended_at
  route jsonb;
  expired_grants jsonb;
begin
  -- (most graphs hold no grant that has expired: one probe of
  -- edges_expiring_idx, and no search)
  if not exists (select 1 from permgraph.edges e where e.expires_at <= now()) then
    return null;
  end if;
  with lasting as materialized (
    select l.node_id, l.until_1, l.until_2, l.until_3
    from permgraph._explain_lasting(p_user_id) l
  ),
  -- how long the thing and its owner are reached, at each level from p_level up
  reached as (
    select v.level, l.node_id, case v.level when 1 then l.until_1 when 2 then l.until_2 else l.until_3 end as until_level
    from generate_series(p_level, 3) as v(level)
    join lasting l on l.node_id in (p_thing_id, p_owner_id)
  ),
  -- how long a manage edge into an owner that is another user lasts (at any level)
  manage_into_owner as (
    select coalesce(max(least(l.until_1, coalesce(e.expires_at, 'infinity'))), '-infinity') as until_any
    from permgraph.edges e
    join lasting l on l.node_id = e.tail_id
    where p_owner_kind = 'user' and e.head_id = p_owner_id and e.level = 3
      and (e.tail_id = p_user_id or e.tail_kind = 'group')
  ),
  ended as (
    select v.level, greatest(
             coalesce((select r.until_level from reached r where r.level = v.level and r.node_id = p_thing_id), '-infinity'),
             case
               when p_owner_id is null or p_owner_id = p_thing_id then '-infinity'
               when p_owner_id = p_user_id then 'infinity'
               when p_owner_kind = 'user' then least(
                 coalesce((select r.until_level from reached r where r.level = v.level and r.node_id = p_owner_id), '-infinity'),
                 m.until_any)
               else coalesce((select r.until_level from reached r where r.level = v.level and r.node_id = p_owner_id), '-infinity')
             end) as at
    from generate_series(p_level, 3) as v(level)
    cross join manage_into_owner m
  )
  select a.at, (select max(b.level) from ended b where b.at = a.at)
    into ended_at, route_level
  from ended a
  where a.level = p_level;
  -- (no route at any moment; or one that lasts past now, which explain()
  -- would have found: it calls this only when the graph now refuses)
  if ended_at = '-infinity' or ended_at > now() then
    return null;
  end if;
  route := permgraph._explain_route_before(p_user_id, p_thing_id, p_owner_id, p_owner_kind, route_level, ended_at);
  -- (never, by the rule above; if the two disagreed, no hint rather than a wrong one)
  if route is null then
    return null;
  end if;
  select coalesce(jsonb_agg(s.e order by s.at, s.n), '[]'::jsonb)
    into expired_grants
  from (select distinct on (x.e ->> 'tail', x.e ->> 'head', x.e ->> 'source') x.e, (x.e ->> 'expiresAt')::timestamptz as at, x.n
        from jsonb_array_elements((route -> 'path') || coalesce(nullif(route -> 'traversePath', 'null'::jsonb), '[]'::jsonb)) with ordinality as x(e, n)
        where (x.e ->> 'expiresAt')::timestamptz <= now()
        order by x.e ->> 'tail', x.e ->> 'head', x.e ->> 'source', x.n) s;
  return route || jsonb_build_object(
    'at', ended_at, 'level', p_level, 'expiredGrants', expired_grants,
    'endedBy', (select count(*) from jsonb_array_elements(expired_grants) as x(e) where (x.e ->> 'expiresAt')::timestamptz = ended_at));
end $$;

-- Why may (or may not) p_user_id act on p_thing_id (at p_level, if given)?
-- The strongest path, computed from the current edges without the expired
-- ones (so it already shows changes the worker has not applied yet), through
-- the owner when that is the better route. reason: null when allowed, else
-- 'trashed', 'no path', 'level too low' or 'expired'.
--
-- Expiring grants: explain also reports the permission rows check() answers
-- from (rows: the row on the thing and the row on its owner, as stored, each
-- with its valid_until and whether it has expired). When the path allows
-- but check() refuses because the rows that would allow have expired
-- (valid_until <= now()) and await their recomputation, the answer is not
-- allowed, reason 'expired', expiredAt the time access ended: reads fail
-- closed until the engine recomputes the rows, after which the path shown
-- holds. validUntil, when allowed: until when check() keeps allowing without
-- a recomputation (the latest valid_until of the rows allowing; null: no
-- expiry ends it). See the TypeScript Explanation type for the fields.
--
-- accessEnded: when the graph now does not allow at the level asked (any,
-- when none is) and the thing is not trashed, but the graph with the grants
-- that have expired would allow, how and when that access ended
-- (_explain_access_ended). The reason stays what it was ('no path', 'level
-- too low', or 'expired' while the rows await their recomputation): this
-- says why, and does not change when the worker catches up.
create or replace function permgraph.explain(p_user_id text, p_thing_id text, p_level integer default null) returns jsonb
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
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
  manage_edge jsonb;       -- _explain_manage_edge: into another user who owns the thing
  lasting_route jsonb;     -- the route again, through edges lasting as long as the answer (_explain_route_before)
  identity_edge jsonb := jsonb_build_array(jsonb_build_object('tail', p_user_id, 'head', p_user_id, 'level', 3, 'source', 'identity', 'expiresAt', null));
  owner_step jsonb;        -- the last edge of a path through the thing's owner
  reason text;
  rows_used jsonb;
  gone text[] := permgraph._tombstoned_ids(p_user_id);  -- (as in effective_permissions)
  asked_level integer;     -- the level the answer is about: the asked one, else any (1)
  until_level integer;     -- the level validUntil is about: the asked one, else the best found
  live_allows boolean;     -- a row that has not expired allows at asked_level
  expired_allows boolean;  -- a row that has expired would allow at asked_level
  answer_until timestamptz;
  until_rows integer;
  expired_at timestamptz;
  access_ended jsonb;
begin
  if p_level is not null then
    perform permgraph._require_level(p_level);
  end if;
  perform permgraph._require_user(p_user_id);
  perform permgraph._require_node(p_thing_id, 'thing');
  select n.id, n.kind, n.owner_id, n.trash_at into thing from permgraph.nodes n where n.id = p_thing_id;
  select n.kind into owner_kind from permgraph.nodes n where n.id = thing.owner_id;
  owner_step := jsonb_build_array(jsonb_build_object('tail', thing.owner_id, 'head', p_thing_id, 'level', 3, 'source', 'owner', 'expiresAt', null));
  -- The same tables permgraph.check() reads for trash, reported as a time.
  effective_trash := case thing.kind
    when 'user' then null
    when 'group' then (select t.trash_at from permgraph.trashed_groups t where t.group_id = thing.id)
    else least(thing.trash_at, (select t.trash_at from permgraph.trashed_groups t where t.group_id = thing.owner_id))
  end;
  hidden := permgraph.is_trashed(thing.id);
  -- The rows check() reads for this question, as stored (the rows of a node
  -- deleted since the last batch excepted, as in effective_permissions),
  -- expired ones included so that they can be reported.
  select coalesce(jsonb_agg(jsonb_build_object(
           'target', p.target_id, 'level', p.level, 'traverseOwned', p.traverse_owned,
           'validUntil', p.valid_until, 'expired', coalesce(p.valid_until <= now(), false))
           order by (p.target_id = p_thing_id) desc), '[]'::jsonb)
    into rows_used
  from permgraph.permissions p
  where p.user_id = p_user_id
    and (p.target_id = p_thing_id or (p.target_id = thing.owner_id and thing.owner_id <> thing.id))
    and not (p.user_id = any (gone) or p.target_id = any (gone));
  if permgraph._is_superuser(p_user_id) and not hidden then
    return jsonb_build_object(
      'user', p_user_id, 'thing', p_thing_id, 'thingKind', thing.kind, 'level', p_level,
      'allowed', true, 'reason', null, 'bestLevel', 3, 'via', 'superuser',
      'path', '[]'::jsonb, 'traversePath', null, 'trashAt', effective_trash,
      'rows', rows_used, 'validUntil', null, 'expiredAt', null, 'accessEnded', null);
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
      manage_edge := permgraph._explain_manage_edge(p_user_id, thing.owner_id, tree_any, '-infinity');
      owner_usable := manage_edge is not null;
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
          traverse_path := permgraph._explain_path(tree_any, manage_edge ->> 'tail') || jsonb_build_array(manage_edge);
        end if;
        path := path || owner_step;
        exit;
      end if;
    end loop;
  end if;

  -- What the rows say: the rule of check(), on the rows that have not
  -- expired and on those that have; and until when the live rows giving the
  -- explained level (the asked one, else the best) keep giving it.
  asked_level := coalesce(p_level, 1);
  until_level := coalesce(p_level, greatest(best, 1));
  select coalesce(bool_or(not x.expired) filter (where x.level >= asked_level), false),
         coalesce(bool_or(x.expired) filter (where x.level >= asked_level), false),
         max(x.valid_until) filter (where x.expired and x.level >= asked_level),
         count(*) filter (where not x.expired and x.level >= until_level),
         case when bool_or(x.valid_until is null) filter (where not x.expired and x.level >= until_level) then null
              else max(x.valid_until) filter (where not x.expired and x.level >= until_level) end
    into live_allows, expired_allows, expired_at, until_rows, answer_until
  from jsonb_array_elements(rows_used) as r
  cross join lateral (select (r ->> 'level')::integer as level, (r ->> 'expired')::boolean as expired,
                             (r ->> 'validUntil')::timestamptz as valid_until) x
  where r ->> 'target' = p_thing_id or (r ->> 'traverseOwned')::boolean;

  -- The path shown should hold for as long as the answer does: the search
  -- above takes the fewest edges whatever their expiry, so a grant ending in
  -- an hour may be shown while another path, which never ends, gives the
  -- validUntil reported. When the path (or the traverse path) ends before
  -- validUntil (or at all, when validUntil is null), search again at the
  -- same level through edges
  -- lasting that long, and show that path if it reaches; if none does (the
  -- rows lag the edges), the first one stays. The lasting path may take the
  -- other route (a thing the user owns is reached through the owner step
  -- whatever its grants): through a group owner, the user's own, or another
  -- user who owns the thing; below manage, that route also needs a manage
  -- edge into that user, reached through lasting edges (traverse_path,
  -- searched again as well). The search is at the best level: when a lower
  -- level is asked, and only a lower route lasts, the strongest path stays,
  -- and validUntil speaks of the asked level.
  if best > 0 and until_rows > 0
     and exists (select 1 from jsonb_array_elements(path || coalesce(traverse_path, '[]')) as e
                 where e ->> 'expiresAt' is not null
                   and (answer_until is null or (e ->> 'expiresAt')::timestamptz < answer_until)) then
    -- (the route explain() would find at that level on the graph of the
    -- edges lasting until then: _explain_route_before, which accessEnded
    -- uses too; with a moment after now, no expired grant is taken)
    lasting_route := permgraph._explain_route_before(p_user_id, p_thing_id, thing.owner_id, owner_kind, best,
                                                     coalesce(answer_until, 'infinity'));
    if lasting_route is not null then
      via := lasting_route ->> 'via';
      path := lasting_route -> 'path';
      traverse_path := nullif(lasting_route -> 'traversePath', 'null'::jsonb);
    end if;
  end if;

  reason := case
    when hidden then 'trashed'
    -- check() refuses because the rows that would allow have expired and
    -- await their recomputation: access ended at expiredAt. When the path
    -- allows, the recomputation brings the access back; when it does not
    -- (the grant that gave it has ended), this says why until then, where
    -- 'no path' or 'level too low' would not.
    when expired_allows and not live_allows then 'expired'
    when best = 0 then 'no path'
    when best < coalesce(p_level, 1) then 'level too low'
  end;
  -- Access the graph does not give (any more?): did grants that have expired give it?
  if not hidden and best < asked_level then
    access_ended := permgraph._explain_access_ended(p_user_id, p_thing_id, thing.owner_id, owner_kind, asked_level);
  end if;
  return jsonb_build_object(
    'user', p_user_id, 'thing', p_thing_id, 'thingKind', thing.kind, 'level', p_level,
    'allowed', reason is null, 'reason', reason, 'bestLevel', best, 'via', via,
    'path', path, 'traversePath', traverse_path, 'trashAt', effective_trash,
    'rows', rows_used,
    'validUntil', case when reason is null and until_rows > 0 then answer_until end,
    'expiredAt', case when reason = 'expired' then expired_at end,
    'accessEnded', access_ended);
end $$;
