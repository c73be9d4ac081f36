-- permgraph 002: integrity rules that turn bad input into clear errors.
-- Every rule raises before anything is written, so a refused statement
-- leaves all tables untouched.

-- Grants carry the kinds of both ends. Kinds never change (see below), so the
-- copies never go stale; they let traversal and change capture skip a join,
-- and let a grant deleted by a cascading node delete still say what it joined.
alter table permgraph.grants add column if not exists tail_kind text;
alter table permgraph.grants add column if not exists head_kind text;

-- Serializes the cycle check of concurrent ownership changes: two
-- transactions could otherwise each add half of a cycle.
create or replace function permgraph._ownership_lock_key() returns bigint
language sql immutable as $$ select 7238001001::bigint $$;

create or replace function permgraph._nodes_validate() returns trigger
language plpgsql as $$
declare
  owner_kind text;
  cycle_path text;
  chain_ids text[];
  step_id text;
  next_id text;
begin
  if tg_op = 'UPDATE' and new.id is distinct from old.id then
    raise exception 'permgraph: cannot change the id of node "%" to "%"; insert a new node instead',
      old.id, new.id using errcode = '22023';
  end if;
  if tg_op = 'UPDATE' and new.kind is distinct from old.kind then
    raise exception 'permgraph: cannot change the kind of node "%" from % to %; delete and re-create it',
      old.id, old.kind, new.kind using errcode = '22023';
  end if;
  if tg_op = 'INSERT' and (new.kind is null or new.kind not in ('user', 'group', 'object')) then
    raise exception 'permgraph: node "%" has kind %; the kind must be user, group or object',
      new.id, coalesce('"' || new.kind || '"', 'null') using errcode = '23514';
  end if;
  if new.owner_id is null or (tg_op = 'UPDATE' and new.owner_id is not distinct from old.owner_id) then
    return new;
  end if;
  select kind into owner_kind from permgraph.nodes where id = new.owner_id;
  if not found and new.owner_id <> new.id then
    raise exception 'permgraph: owner "%" of node "%" does not exist', new.owner_id, new.id
      using errcode = '23503';
  end if;
  if coalesce(owner_kind, new.kind) = 'object' then
    raise exception 'permgraph: node "%" cannot be owned by object "%"; only users and groups own',
      new.id, new.owner_id using errcode = '23514';
  end if;
  if new.owner_id = new.id then
    if new.kind = 'user' then
      return new; -- a user owning itself is allowed and changes nothing
    end if;
    raise exception 'permgraph: ownership cycle: % "%" cannot own itself', new.kind, new.id
      using errcode = '23514';
  end if;
  perform pg_advisory_xact_lock(permgraph._ownership_lock_key());
  -- Walk up from the new owner, one primary-key lookup per step (a recursive
  -- CTE here was planned once per session, often as a scan of all nodes per
  -- row, which made bulk inserts quadratic); reaching this node is a cycle.
  chain_ids := array[new.id, new.owner_id];
  step_id := new.owner_id;
  loop
    select owner_id into next_id from permgraph.nodes where id = step_id;
    exit when next_id is null or next_id = step_id;  -- the top, or a self-owned user
    chain_ids := chain_ids || next_id;
    if next_id = new.id then
      cycle_path := array_to_string(chain_ids, ' -> ');
      exit;
    end if;
    step_id := next_id;
  end loop;
  if cycle_path is not null then
    raise exception 'permgraph: ownership cycle: % (the owner of each node is the next one)', cycle_path
      using errcode = '23514';
  end if;
  -- Under READ COMMITTED the walk above ran after the lock, on a fresh
  -- snapshot. Under REPEATABLE READ / SERIALIZABLE it read the transaction's
  -- snapshot, which may predate an ownership change committed while we waited
  -- for the lock: locking the chain raises a serialization failure (40001,
  -- retryable) if any node on it changed since.
  if current_setting('transaction_isolation') <> 'read committed' then
    perform 1 from permgraph.nodes where id = any (chain_ids[2:]) for share;
  end if;
  return new;
end $$;

create or replace function permgraph._nodes_refuse_delete_owner() returns trigger
language plpgsql as $$
declare
  owned_count bigint;
  example text;
begin
  select count(*), min(id) into owned_count, example
  from permgraph.nodes where owner_id = old.id and id <> old.id;
  if owned_count > 0 then
    raise exception 'permgraph: cannot delete node "%": it still owns % node(s), e.g. "%"; move or delete them first',
      old.id, owned_count, example using errcode = '23503';
  end if;
  return old;
end $$;

create or replace function permgraph._grants_validate() returns trigger
language plpgsql as $$
begin
  select kind into new.tail_kind from permgraph.nodes where id = new.tail_id;
  if not found then
    raise exception 'permgraph: grant tail "%" does not exist', new.tail_id using errcode = '23503';
  end if;
  if new.tail_kind = 'object' then
    raise exception 'permgraph: grant tail "%" is an object; only users and groups can hold grants', new.tail_id
      using errcode = '23514';
  end if;
  select kind into new.head_kind from permgraph.nodes where id = new.head_id;
  if not found then
    raise exception 'permgraph: grant head "%" does not exist', new.head_id using errcode = '23503';
  end if;
  if new.level is null or new.level not between 1 and 3 then
    raise exception 'permgraph: grant level must be 1 (read), 2 (write) or 3 (manage), got %', coalesce(new.level::text, 'null')
      using errcode = '23514';
  end if;
  return new;
end $$;

drop trigger if exists nodes_validate on permgraph.nodes;
create trigger nodes_validate before insert or update on permgraph.nodes
  for each row execute function permgraph._nodes_validate();
drop trigger if exists nodes_refuse_delete_owner on permgraph.nodes;
create trigger nodes_refuse_delete_owner before delete on permgraph.nodes
  for each row execute function permgraph._nodes_refuse_delete_owner();
drop trigger if exists grants_validate on permgraph.grants;
create trigger grants_validate before insert or update on permgraph.grants
  for each row execute function permgraph._grants_validate();
