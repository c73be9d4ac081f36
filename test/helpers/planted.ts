// What a login allowed to create objects in public (PostgreSQL 14's default;
// granted explicitly for 15+) plants there: functions, an aggregate and
// operators that a statement resolving names through public picks over
// pg_catalog's, each recording who ran it before doing what the original
// does. The engine's SQL functions pin their search_path
// (test/security/privileges.test.ts) and the client's own statements name
// pg_catalog (test/security/client-sql.test.ts), so none may ever run.
//
// Why each one wins where public is on the path (even after pg_catalog):
// - an exact match beats pg_catalog's polymorphic unnest(anyarray),
//   cardinality(anyarray), format(text, variadic "any") and
//   array_agg(anynonarray), for the argument types the callers pass;
// - hashtextextended(text, integer): an integer literal matches it exactly,
//   where pg_catalog's takes a bigint (an implicit cast);
// - pg_advisory_xact_lock(text), pg_cancel_backend(text): a parameter whose
//   type the statement leaves unknown goes to a candidate taking text first;
// - operators: numeric * an integer literal, and a parameter of unknown
//   type * interval.
import { sql, type ConnectionPool, type Queryable } from '../../src/db/pool.ts';

/** One planted function run: by whom (a superuser?), and which. */
export interface PlantedCall {
  caller: string;
  isSuperuser: boolean;
  what: string;
}

/** Plants everything above in public, as `attacker`. */
export async function plantFunctions(attacker: ConnectionPool): Promise<void> {
  await attacker.query(sql`
    create table public.planted_calls (caller text, is_superuser boolean, what text);
    grant insert on public.planted_calls to public;
    create function public.planted_record(what text) returns void language sql as $$
      insert into public.planted_calls values (current_user, (select rolsuper from pg_catalog.pg_roles where rolname = current_user), what)
    $$;
    create function public.unnest(text[]) returns setof text language plpgsql as $$
    begin
      perform public.planted_record('unnest(text[])');
      return query select pg_catalog.unnest($1);
    end $$;
    create function public.unnest(timestamptz[]) returns setof timestamptz language plpgsql as $$
    begin
      perform public.planted_record('unnest(timestamptz[])');
      return query select pg_catalog.unnest($1);
    end $$;
    create function public.unnest(smallint[]) returns setof smallint language plpgsql as $$
    begin
      perform public.planted_record('unnest(smallint[])');
      return query select pg_catalog.unnest($1);
    end $$;
    create function public.cardinality(text[]) returns integer language plpgsql as $$
    begin
      perform public.planted_record('cardinality(text[])');
      return pg_catalog.cardinality($1);
    end $$;
    create function public.format(text, text) returns text language plpgsql as $$
    begin
      perform public.planted_record('format(text, text)');
      return pg_catalog.format($1, $2);
    end $$;
    create function public.format(text, text, text, text) returns text language plpgsql as $$
    begin
      perform public.planted_record('format(text, text, text, text)');
      return pg_catalog.format($1, $2, $3, $4);
    end $$;
    create function public.planted_accum(text[], text) returns text[] language plpgsql as $$
    begin
      perform public.planted_record('array_agg(text)');
      return $1 || $2;
    end $$;
    create aggregate public.array_agg(text) (sfunc = public.planted_accum, stype = text[]);
    create function public.hashtextextended(text, integer) returns bigint language plpgsql as $$
    begin
      perform public.planted_record('hashtextextended(text, integer)');
      return pg_catalog.hashtextextended($1, $2);
    end $$;
    create function public.pg_advisory_xact_lock(text) returns void language plpgsql as $$
    begin
      perform public.planted_record('pg_advisory_xact_lock(text)');
      perform pg_catalog.pg_advisory_xact_lock($1::bigint);
    end $$;
    create function public.pg_cancel_backend(text) returns boolean language plpgsql as $$
    begin
      perform public.planted_record('pg_cancel_backend(text)');
      return false;
    end $$;
    create function public.planted_times(numeric, integer) returns numeric language plpgsql as $$
    begin
      perform public.planted_record('numeric * integer');
      return $1 * $2::numeric;
    end $$;
    create operator public.* (leftarg = numeric, rightarg = integer, function = public.planted_times);
    create function public.planted_times(text, interval) returns interval language plpgsql as $$
    begin
      perform public.planted_record('text * interval');
      return $1::float8 * $2;
    end $$;
    create operator public.* (leftarg = text, rightarg = interval, function = public.planted_times);`);
}

/** The planted functions that have run, each (caller, which) once, by caller and name. */
export async function plantedCalls(db: Queryable): Promise<PlantedCall[]> {
  return db.query(sql`
    select distinct caller, is_superuser as "isSuperuser", what from public.planted_calls order by caller, what`);
}

/** Forgets the calls recorded so far. */
export async function clearPlantedCalls(db: Queryable): Promise<void> {
  await db.query(sql`truncate public.planted_calls`);
}

/** Drops everything plantFunctions planted (as the database's owner, or the attacker). */
export async function removePlanted(db: Queryable): Promise<void> {
  await db.query(sql`
    drop operator public.* (numeric, integer);
    drop operator public.* (text, interval);
    drop aggregate public.array_agg(text);
    drop function public.unnest(text[]), public.unnest(timestamptz[]), public.unnest(smallint[]), public.cardinality(text[]),
                  public.format(text, text), public.format(text, text, text, text), public.planted_accum(text[], text),
                  public.hashtextextended(text, integer), public.pg_advisory_xact_lock(text), public.pg_cancel_backend(text),
                  public.planted_times(numeric, integer), public.planted_times(text, interval), public.planted_record(text);
    drop table public.planted_calls;`);
}
