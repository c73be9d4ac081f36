-- Permission-aware listings (keyset pages). They follow the rule of the
-- semantics: u may act on x at level L iff a row (u, x) has level >= L, or
-- x's owner o has a row (u, o) with level >= L and traverse_owned; trashed
-- groups and objects are hidden (permgraph.is_trashed). They read the rows
-- through permgraph.effective_permissions, so a row whose valid_until has
-- passed counts as absent (expiring grants).
--
-- Each item carries valid_until: until when its level, as listed, holds
-- without a recomputation. An item's level is the best of at most two rows
-- (the direct one, and its owner's with traverse_owned); reads drop a row
-- at its valid_until, so the level listed holds until the last of the rows
-- giving that level expires: the latest valid_until among them, null
-- (never) when one of them has none. Superusers' items: null.
-- The current definition of these functions: `permgraph migrate` re-applies
-- this file whenever its content changes (sql/README.md).

-- Keyset pages over the children of one owner use nodes_owner_idx
-- (owner_id, id) (001_schema.sql): each owner contributes its next few ids by a
-- range scan, however many nodes it owns.

-- Listings return at most this many rows per call (the TypeScript API caps
-- pages lower, at 10,000, and asks for one more row to know whether more follow).
create or replace function permgraph._require_page_limit(p_limit integer) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_limit is null or p_limit not between 1 and 100000 then
    raise exception 'permgraph: limit must be between 1 and 100000, got %', coalesce(p_limit::text, 'null')
      using errcode = '22023';
  end if;
end $$;

-- The kind of p_id, with a clear error when it is not a node.
create or replace function permgraph._require_node(p_id text, p_role text) returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
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
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  node_kind text := permgraph._require_node(p_id, 'user');
begin
  if node_kind <> 'user' then
    raise exception 'permgraph: "%" is a %, not a user (permissions start at users)', p_id, node_kind
      using errcode = '22023';
  end if;
end $$;

create or replace function permgraph.list_targets(
  p_user_id text, p_level integer default 1, p_kind text default null,
  p_after text default null, p_limit integer default 100
) returns table (target_id text, kind text, level smallint, valid_until timestamptz)
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
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
    select n.id::text, n.kind, 3::smallint, null::timestamptz
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
    from permgraph.effective_permissions p
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
  from permgraph.effective_permissions p
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
  select b.id::text, b.kind, b.best::smallint,
         case
           when b.direct_level is not distinct from b.best and b.owner_level is not distinct from b.best
             then case when b.direct_until is null or b.owner_until is null then null
                       else greatest(b.direct_until, b.owner_until) end
           when b.direct_level is not distinct from b.best then b.direct_until
           else b.owner_until
         end
  from (
    select n.id, n.kind, greatest(direct.level, via_owner.level) as best,
           direct.level as direct_level, direct.valid_until as direct_until,
           via_owner.level as owner_level, via_owner.valid_until as owner_until
    from unnest(page) as pg(id)
    join permgraph.nodes n on n.id = pg.id
    left join permgraph.effective_permissions direct
      on direct.user_id = p_user_id and direct.target_id = n.id
    left join permgraph.effective_permissions via_owner
      on via_owner.user_id = p_user_id and via_owner.target_id = n.owner_id and via_owner.traverse_owned
  ) b
  order by b.id;
end $$;

-- The users who may act on node p_target_id at p_level (directly or through
-- its owner), with user ids strictly after p_after, in id order, at most
-- p_limit; level is each user's best level on the node. Nobody, when the
-- node is trashed. Both sources are range scans of permissions_target_idx.
create or replace function permgraph.list_users(
  p_target_id text, p_level integer default 1, p_after text default null, p_limit integer default 100
) returns table (user_id text, level smallint, valid_until timestamptz)
language plpgsql stable
security definer
set search_path = pg_catalog, pg_temp
set jit = off
as $$
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
  -- Per user, the first of its rows by (level desc, valid_until desc, never
  -- first): the best level, and the latest valid_until among the rows
  -- giving it (see the file comment).
  return query
  select distinct on (c.user_id) c.user_id::text, c.level::smallint, c.valid_until
  from (
    (select p.user_id, p.level, p.valid_until
     from permgraph.effective_permissions p
     where p.target_id = p_target_id and p.user_id >= from_id
       and not (skip_from and p.user_id = from_id)
       and p.level >= p_level
     order by p.user_id
     limit p_limit)
    union all
    (select p.user_id, p.level, p.valid_until
     from permgraph.effective_permissions p
     where p.target_id = target_owner and p.user_id >= from_id
       and not (skip_from and p.user_id = from_id)
       and p.level >= p_level and p.traverse_owned
     order by p.user_id
     limit p_limit)
    union all
    (select s.id, 3::smallint, null::timestamptz  -- superusers may act on everything not trashed
     from permgraph.nodes s
     where s.is_superuser and s.id >= from_id
       and not (skip_from and s.id = from_id)
     order by s.id
     limit p_limit)
  ) c
  order by c.user_id, c.level desc, c.valid_until desc nulls first
  limit p_limit;
end $$;
