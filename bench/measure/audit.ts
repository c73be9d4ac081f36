// Row-level accounting of what a change really did to permgraph.permissions:
// a bench-owned trigger logs every row written (by apply_changes() and by
// the capture trigger's direct deletes); the net difference per pair between
// its first old value and last new value is what actually changed.
import { sql, type Queryable } from '../../src/db/pool.ts';

export interface AuditCounts {
  /** Row writes of any kind (insert, update, delete). */
  written: number;
  /** Pairs whose (level, traverse_owned) differs before vs after, counting appear/disappear. */
  changed: number;
}

export async function installAudit(db: Queryable): Promise<void> {
  await db.query(sql`
    create table if not exists bench.perm_audit (
      seq bigint generated always as identity,
      user_id text collate "C", target_id text collate "C",
      old_level smallint, old_traverse boolean, new_level smallint, new_traverse boolean);
    create or replace function bench.audit_permissions() returns trigger language plpgsql as $$
    begin
      if tg_op = 'INSERT' then
        insert into bench.perm_audit (user_id, target_id, new_level, new_traverse) values (new.user_id, new.target_id, new.level, new.traverse_owned);
      elsif tg_op = 'DELETE' then
        insert into bench.perm_audit (user_id, target_id, old_level, old_traverse) values (old.user_id, old.target_id, old.level, old.traverse_owned);
      else
        insert into bench.perm_audit (user_id, target_id, old_level, old_traverse, new_level, new_traverse)
        values (new.user_id, new.target_id, old.level, old.traverse_owned, new.level, new.traverse_owned);
      end if;
      return null;
    end $$;
    drop trigger if exists bench_audit on permgraph.permissions;
    create trigger bench_audit after insert or update or delete on permgraph.permissions
      for each row execute function bench.audit_permissions()`);
}

export async function removeAudit(db: Queryable): Promise<void> {
  await db.query(sql`drop trigger if exists bench_audit on permgraph.permissions; drop table if exists bench.perm_audit`);
}

export async function resetAudit(db: Queryable): Promise<void> {
  await db.query(sql`truncate bench.perm_audit`);
}

export async function readAudit(db: Queryable): Promise<AuditCounts> {
  const [row] = await db.query(sql`
    with firsts as (
      select distinct on (user_id, target_id) user_id, target_id, old_level, old_traverse
      from bench.perm_audit order by user_id, target_id, seq),
    lasts as (
      select distinct on (user_id, target_id) user_id, target_id, new_level, new_traverse
      from bench.perm_audit order by user_id, target_id, seq desc)
    select (select count(*) from bench.perm_audit)::bigint as written,
           count(*) filter (where (f.old_level, f.old_traverse) is distinct from (l.new_level, l.new_traverse))::bigint as changed
    from firsts f join lasts l using (user_id, target_id)`);
  return { written: Number(row?.written ?? 0), changed: Number(row?.changed ?? 0) };
}
