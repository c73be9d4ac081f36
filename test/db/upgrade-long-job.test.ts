// Upgrading while a long job runs. Across migration 055: before it, a
// change deferred behind a job waited for the job's last chunk; since, a
// chunk lets deferred changes go once no user marked wanted is left, and
// only changes deferred by the new code mark their users. So the migration
// marks every user of a running job that has deferred changes: those
// changes keep waiting for the job's end, as they were promised. Across
// 056: deferred changes are let go by round, once the users their round
// and earlier ones wanted are done; the changes and wanted users of a job
// running across it become one round, let go together, as before.
import { describe, expect, it } from 'vitest';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { migrate } from '../../src/migrations/migrate.ts';
import { createEmptyDatabase } from '../helpers/database.ts';
import { BEFORE_055, BEFORE_056, historyMissing, migrateAsAt } from '../helpers/released.ts';

const missing = historyMissing(BEFORE_055) ?? historyMissing(BEFORE_056);

async function commitGrant(db: Queryable, tail: string, head: string, level: number): Promise<string> {
  return db.tx(async (tx) => {
    await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values (${tail}, ${head}, ${level})`);
    const [{ token }] = await tx.query(sql`select permgraph.current_token() as token`);
    return token as string;
  });
}

const isApplied = async (db: Queryable, token: string) =>
  (await db.query(sql`select permgraph.is_applied(${token}) as applied`))[0].applied as boolean;

const members = ['m0', 'm1', 'm2', 'm3'];

/** A database migrated as at `commit`, running a long job: team -> parent, 4 members x 4 groups. */
async function jobAt(commit: string): Promise<Queryable> {
  const { db } = await createEmptyDatabase();
  await migrateAsAt(db, commit);
  for (const m of members) await db.query(sql`insert into permgraph.nodes (id, kind) values (${m}, 'user')`);
  await db.query(sql`
    insert into permgraph.nodes (id, kind) values ('team', 'group'), ('parent', 'group'), ('side', 'group');
    insert into permgraph.nodes (id, kind, owner_id) values ('p0', 'group', 'parent'), ('p1', 'group', 'parent')`);
  for (const m of members) await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values (${m}, 'team', 2)`);
  await db.query(sql`select permgraph.apply_changes()`);
  await commitGrant(db, 'team', 'parent', 1);
  await db.query(sql`select permgraph.apply_changes(p_chunk_pairs => 4)`);
  return db;
}

describe.skipIf(missing !== null)('upgrading while a long job runs', () => {
  it("a change deferred behind the job before the upgrade still waits for the job's end", async () => {
    const db = await jobAt(BEFORE_055);
    // parent -> side reaches every member through the job's edge: deferred
    const through = await commitGrant(db, 'parent', 'side', 1);
    const [{ batch }] = await db.query(sql`select permgraph.apply_changes(p_chunk_pairs => 4) as batch`);
    expect(batch).toMatchObject({ deferred: 1, long_job_active: true });

    await migrate(db);
    for (let done = 1; done <= members.length; done++) {
      const [{ chunk }] = await db.query(sql`select permgraph.apply_job_chunk(p_max_pairs => 1) as chunk`);
      expect(chunk, `chunk ${done}`).toMatchObject({ users: 1, finished: done === members.length });
      expect(await isApplied(db, through), `after chunk ${done}`).toBe(done === members.length);
    }
    const [{ n }] = await db.query(sql`select count(*)::int as n from permgraph.verify()`);
    expect(n).toBe(0);
  });

  it('changes deferred before 056 wait for every user wanted then, and changes deferred after it by their round', async () => {
    const db = await jobAt(BEFORE_056);
    // two batches before the upgrade, each deferring a change of one member: m3, then m1
    const before = [await commitGrant(db, 'm3', 'side', 1)];
    await db.query(sql`select permgraph.apply_changes(p_chunk_pairs => 4)`);
    before.push(await commitGrant(db, 'm1', 'side', 1));
    await db.query(sql`select permgraph.apply_changes(p_chunk_pairs => 4)`);

    await migrate(db);
    // and one after it, of m0
    const after = await commitGrant(db, 'm0', 'side', 1);
    const [{ batch }] = await db.query(sql`select permgraph.apply_changes(p_chunk_pairs => 4) as batch`);
    expect(batch).toMatchObject({ deferred: 1 });
    const applied = async () => [...before, after].map((token) => isApplied(db, token));
    // round 0 (m1, m3) first, then m0's round
    for (const [done, expected] of [[1, [false, false, false]], [2, [true, true, false]], [3, [true, true, true]]] as const) {
      const [{ chunk }] = await db.query(sql`select permgraph.apply_job_chunk(p_max_pairs => 1) as chunk`);
      expect(chunk, `chunk ${done}`).toMatchObject({ users: 1, finished: false });
      expect(await Promise.all(await applied()), `after chunk ${done}`).toEqual(expected);
    }
    while (!(await db.query(sql`select permgraph.apply_job_chunk() as chunk`))[0].chunk.finished);
    const [{ n }] = await db.query(sql`select count(*)::int as n from permgraph.verify()`);
    expect(n).toBe(0);
  });
});
