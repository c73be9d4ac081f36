// The floor of a batch (issue 12, goal 1): a one-row INSERT and COMMIT into
// an indexed table, timed as a client round trip on the same connection pool
// as the change it is compared with. Whatever a batch does, it commits once;
// a local change should cost a small multiple of this.
import { sql, type Queryable } from '../../src/db/pool.ts';

/** One-row INSERT + COMMIT (autocommit) into a table with a primary key and a second index; ms per sample. */
export async function timeCommitFloor(db: Queryable, samples: number): Promise<number[]> {
  await db.query(sql`
    drop table if exists public.bench_floor;
    create table public.bench_floor (id bigint primary key, owner_id text not null, at timestamptz not null);
    create index bench_floor_owner on public.bench_floor (owner_id)`);
  const times: number[] = [];
  try {
    for (let i = 0; i < samples; i++) {
      const started = performance.now();
      await db.query(sql`insert into public.bench_floor values (${i}, ${`owner${i % 97}`}, now())`);
      times.push(performance.now() - started);
    }
  } finally {
    await db.query(sql`drop table public.bench_floor`);
  }
  return times;
}
