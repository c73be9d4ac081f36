// Upgrading while a long job runs. Across migration 055: before it, a
// change deferred behind a job waited for the job's last chunk; since, a
// chunk lets deferred changes go once no user marked wanted is left, and
// only changes deferred by the new code mark their users. So the migration
// marks every user of a running job that has deferred changes: those
// changes keep waiting for the job's end, as they were promised. Across
// 056: deferred changes are let go by round, once the users their round
// and earlier ones wanted are done; the changes and wanted users of a job
// running across it become one round, let go together, as before. Across
// 058: a backlog stays in the change queue, where it was moved into
// long_job_changes before; a backlog moved before the upgrade is let go from
// there, as its chunks pass its users, as it was.
import { describe, expect, it } from 'vitest';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { migrate } from '../../src/migrations/migrate.ts';
import { createEmptyDatabase } from '../helpers/database.ts';
import { BEFORE_055, BEFORE_056, BEFORE_058, historyMissing, migrateAsAt } from '../helpers/released.ts';

const missing = historyMissing(BEFORE_055) ?? historyMissing(BEFORE_056) ?? historyMissing(BEFORE_058);

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

  it('a backlog moved into the job before 058 is let go as its chunks pass; one taken after it stays in the queue', async () => {
    const { db } = await createEmptyDatabase();
    await migrateAsAt(db, BEFORE_058);
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('side', 'group'), ('other', 'group')`);
    for (const m of members) await db.query(sql`insert into permgraph.nodes (id, kind) values (${m}, 'user')`);
    await db.query(sql`select permgraph.apply_changes()`);
    const moved: string[] = [];
    for (const m of members) moved.push(await commitGrant(db, m, 'side', 1));
    await db.query(sql`select permgraph.apply_changes(p_max_changes => 2, p_chunk_pairs => 30)`);
    const count = async (table: 'changes' | 'long_job_changes') =>
      (await db.query(sql`select count(*)::int as n from ${sql.ident('permgraph', table)}`))[0].n as number;
    expect(await count('long_job_changes')).toBe(4);

    await migrate(db);
    const taken = [await commitGrant(db, 'm3', 'other', 1), await commitGrant(db, 'm2', 'other', 2), await commitGrant(db, 'm0', 'other', 1)];
    const [{ batch }] = await db.query(sql`select permgraph.apply_changes(p_max_changes => 2, p_chunk_pairs => 30) as batch`);
    expect(batch).toMatchObject({ to_long_job: 3, long_job_active: true });
    expect([await count('changes'), await count('long_job_changes')]).toEqual([3, 4]);
    // one member a chunk: m0's changes, both kinds, go with the first; m3's with the last
    const applied = async () => Promise.all([...moved, ...taken].map((token) => isApplied(db, token)));
    const expected = [
      [true, false, false, false, false, false, true],
      [true, true, false, false, false, false, true],
      [true, true, true, false, false, true, true],
      [true, true, true, true, true, true, true],
    ];
    for (const [i, want] of expected.entries()) {
      const [{ chunk }] = await db.query(sql`select permgraph.apply_job_chunk(p_max_pairs => 1) as chunk`);
      expect(chunk, `chunk ${i + 1}`).toMatchObject({ users: 1, finished: false });
      expect(await applied(), `after chunk ${i + 1}`).toEqual(want);
    }
    const [{ chunk }] = await db.query(sql`select permgraph.apply_job_chunk(p_max_pairs => 1) as chunk`);
    expect(chunk).toMatchObject({ users: 0, backlog_cleared: 3, finished: true });
    expect([await count('changes'), await count('long_job_changes')]).toEqual([0, 0]);
    const [{ n }] = await db.query(sql`select count(*)::int as n from permgraph.verify()`);
    expect(n).toBe(0);
  });
});
