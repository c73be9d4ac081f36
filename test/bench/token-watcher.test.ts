// The worker benchmarks' lag observer (bench/measure/worker/observers.ts):
// a change's lag ends when TokenWatcher first sees its token applied, so the
// watcher must see every token at the first poll after the transaction that
// applied it, however many tokens are outstanding. Checked against the
// batches the test runs itself and against permgraph.is_applied(); no
// assertion is about speed.
import { afterAll, describe, expect, it } from 'vitest';
import { openPool, sql, type Queryable } from '../../src/db/pool.ts';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { isApplied } from '../../src/engine/freshness.ts';
import { applyJobChunk } from '../../src/engine/long-job.ts';
import { TokenWatcher } from '../../bench/measure/worker/observers.ts';
import { createTestDatabase } from '../helpers/database.ts';

/** Commits one grant in its own transaction; returns its freshness token. */
async function commitGrant(db: Queryable, tail: string, head: string, level: number): Promise<string> {
  const [row] = await db.query(sql`
    insert into permgraph.grants (tail_id, head_id, level) values (${tail}, ${head}, ${level})
    returning permgraph.current_token() as token`);
  return row.token;
}

/** Resolves with the watcher's time, or fails the test after a minute (never expected: an outcome, not a speed). */
function seen(applied: Promise<number>, what: string): Promise<number> {
  let timer: NodeJS.Timeout | undefined;
  const never = new Promise<number>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the watcher never saw ${what} applied`)), 60_000);
  });
  return Promise.race([applied, never]).finally(() => clearTimeout(timer));
}

describe('TokenWatcher', async () => {
  const { db, url } = await createTestDatabase();
  const observer = openPool(url, { poolSize: 1 });
  afterAll(() => observer.dispose());

  it('sees every token of a backlog applied at the first poll after the one batch that applied them all', async () => {
    const users = 30;
    const objects = 10;
    await db.query(sql`
      insert into permgraph.nodes (id, kind)
      select 'u' || i, 'user' from generate_series(1, ${users}) i
      union all select 'o' || i, 'object' from generate_series(1, ${objects}) i`);
    await refresh(db);
    // 300 transactions of one change each, nothing applying them: far more
    // outstanding tokens than a poll of the oldest 50 covers
    const tokens: string[] = [];
    for (let u = 1; u <= users; u++) for (let o = 1; o <= objects; o++) tokens.push(await commitGrant(db, `u${u}`, `o${o}`, 1));
    for (const token of tokens) expect(await isApplied(db, token)).toBe(false);

    const watcher = new TokenWatcher(observer);
    try {
      const appliedAt = tokens.map((token) => watcher.applied(token));
      const batchStarted = performance.now();
      const batch = await applyChanges(db);
      expect(batch.changes).toBe(tokens.length); // one batch applied every one of them
      for (const token of tokens) expect(await isApplied(db, token)).toBe(true);
      const times = await Promise.all(appliedAt.map((at, i) => seen(at, `token ${i}`)));
      // none seen before the batch, and all by the same poll
      expect(Math.min(...times)).toBeGreaterThanOrEqual(batchStarted);
      expect(new Set(times).size).toBe(1);
    } finally {
      await watcher.stop();
    }
  });

  // (probing all at once: up to 50 outstanding; 0: the marker's way, as beyond 50)
  it.each([50, 0])('sees a token applied while an older one waits for a long job, and the older one once the job ends (probe all up to %i)', async (probeAllUpTo) => {
    // a team of 10 onto a group owning 10: 110 pairs, above a chunk bound of 30
    const id = (name: string) => `${name}-${probeAllUpTo}`;
    await db.query(sql`
      insert into permgraph.nodes (id, kind) values (${id('team')}, 'group'), (${id('parent')}, 'group'), (${id('outsider')}, 'user'), (${id('other')}, 'group');
      insert into permgraph.nodes (id, kind) select ${id('m')} || i, 'user' from generate_series(1, 10) i;
      insert into permgraph.nodes (id, kind, owner_id) select ${id('p')} || i, 'group', ${id('parent')} from generate_series(1, 10) i;
      insert into permgraph.grants (tail_id, head_id, level) select ${id('m')} || i, ${id('team')}, 2 from generate_series(1, 10) i`);
    await refresh(db);
    const chunkPairs = 30;
    const watcher = new TokenWatcher(observer, 10, probeAllUpTo);
    try {
      const big = await commitGrant(db, id('team'), id('parent'), 1);
      let bigSeen = false;
      const bigAt = watcher.applied(big).then((at) => ((bigSeen = true), at));
      expect(await applyChanges(db, { chunkPairs })).toMatchObject({ longJobActive: true, toLongJob: 1 });

      // a later change that touches no member: applied by the next batch
      // while the big one's change still waits in long_job_changes (the
      // lowest transaction id pending: a horizon of the lowest pending id
      // would hold this one back until the job ends)
      const small = await commitGrant(db, id('outsider'), id('other'), 3);
      expect(await applyChanges(db, { chunkPairs })).toMatchObject({ deferred: 0, longJobActive: true });
      expect(await isApplied(db, small)).toBe(true);
      expect(await isApplied(db, big)).toBe(false);
      await seen(watcher.applied(small), 'the later change');
      expect(bigSeen).toBe(false);

      // the job's chunks: the last one ends it (and updates no applier_state)
      let lastChunkStarted = 0;
      for (let finished = false; !finished;) {
        lastChunkStarted = performance.now();
        finished = (await applyJobChunk(db)).finished;
      }
      expect(await isApplied(db, big)).toBe(true);
      expect(await seen(bigAt, 'the big grant')).toBeGreaterThanOrEqual(lastChunkStarted);
    } finally {
      await watcher.stop();
    }
  });
});
