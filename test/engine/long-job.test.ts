// Long jobs (sql/functions/065_long_job.sql): a change whose region is above
// the chunk bound is applied in chunks of users while other changes keep
// flowing. Checked against the reference model after every step, and
// freshness tokens against what they promise: a token reported applied has
// its effect in the table.
import fc from 'fast-check';
import { IsolationLevel } from '@databases/pg';
import { describe, expect, it } from 'vitest';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { applyChanges, refresh, type BatchResult } from '../../src/engine/apply.ts';
import { currentToken, isApplied, waitFor } from '../../src/engine/freshness.ts';
import { applyJobChunk, type ChunkResult } from '../../src/engine/long-job.ts';
import { verify } from '../../src/engine/verify.ts';
import { SqlState, sqlStateOf } from '../../src/errors.ts';
import { createWorkerMetrics } from '../../src/worker/metrics.ts';
import { Worker } from '../../src/worker/worker.ts';
import * as model from '../reference/model.ts';
import type { RefGraph, RefNode } from '../reference/model.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { clearLongJobs, countPendingChanges, graphArbitrary, loadGraph, PAST, readPermissions, readTrashedGroups, readVisibleRows, rowsByPair } from '../helpers/graph.ts';
import { expiringMutationArbitrary, grantKey, GraphState, mutationArbitrary, remakingMutationArbitrary, type Mutation } from '../helpers/mutations.ts';
import { afterStaleSnapshot } from '../helpers/stale-snapshot.ts';
import { countingTransactions } from '../helpers/counting-transactions.ts';
import { waitUntil } from '../helpers/cli.ts';

/** One committed writing transaction: its token and the model's rows just before and just after it. */
interface Committed {
  token: string;
  description: string;
  /** Pairs whose model row differs between before and after this transaction. */
  affected: Set<string>;
}

describe('long jobs: huge regions applied in chunks', async () => {
  const { db, url } = await createTestDatabase();

  async function start(graph: RefGraph): Promise<GraphState> {
    await loadGraph(db, graph);
    await clearLongJobs(db);
    await refresh(db);
    return new GraphState(graph);
  }

  /**
   * Runs `write` in its own transaction: it writes to the database and to
   * the model, and says what it did. Returns the transaction's token and the
   * pairs it affects in the model.
   */
  async function committed(state: GraphState, write: (tx: Queryable) => Promise<string>): Promise<Committed> {
    const before = rowsByPair(model.computePermissions(state.snapshot()));
    const { description, token } = await db.tx(async (tx) => ({ description: await write(tx), token: await currentToken(tx) }));
    const after = rowsByPair(model.computePermissions(state.snapshot()));
    const affected = new Set([...before.keys(), ...after.keys()].filter((k) => before.get(k) !== after.get(k)));
    return { token, description, affected };
  }

  /** Applies one mutation in its own transaction (committed). */
  async function commit(state: GraphState, mutation: Mutation): Promise<Committed> {
    return committed(state, (tx) => state.apply(tx, mutation));
  }

  /**
   * What a token promises: every pair its transaction affected is right in
   * the table, unless a transaction whose token is not applied yet affected
   * it too. (Commits are sequential, so the model's rows change only through
   * the listed transactions.) Returns the tokens applied.
   */
  async function expectTokensHonest(state: GraphState, committed: readonly Committed[], context: string): Promise<Set<string>> {
    const { applied, stored } = await db.tx(async (tx) => {
      const applied = new Set<string>();
      for (const c of committed) if (await isApplied(tx, c.token)) applied.add(c.token);
      return { applied, stored: await readVisibleRows(tx) };
    });
    const owed = new Set(committed.filter((c) => !applied.has(c.token)).flatMap((c) => [...c.affected]));
    const now = rowsByPair(model.computePermissions(state.snapshot()));
    for (const c of committed) {
      if (!applied.has(c.token)) continue;
      for (const pair of c.affected) {
        if (owed.has(pair)) continue;
        expect(stored.get(pair), `${context}: token of "${c.description}" is applied but pair ${pair.replace('\u0000', ' -> ')} is not right`).toBe(now.get(pair));
      }
    }
    return applied;
  }

  /** The row readers see now for (userId, targetId), if any. */
  async function visibleRow(userId: string, targetId: string): Promise<string | undefined> {
    return (await readVisibleRows(db)).get(model.rowKey({ userId, targetId }));
  }

  async function expectTableMatches(state: GraphState, context: string): Promise<void> {
    const graph = state.snapshot();
    expect(await readPermissions(db), context).toEqual(model.computePermissions(graph));
    expect(await readTrashedGroups(db), context).toEqual(model.computeTrashedGroups(graph));
  }

  /** Applies chunks until the running job ends; returns them. */
  async function chunksToTheEnd(): Promise<ChunkResult[]> {
    const chunks: ChunkResult[] = [];
    for (let finished = false; !finished; ) {
      const chunk = await applyJobChunk(db);
      chunks.push(chunk);
      finished = chunk.finished;
      expect(chunks.length).toBeLessThan(20);
    }
    return chunks;
  }

  async function longJob(): Promise<Record<string, any> | null> {
    const [{ status }] = await db.query(sql`select permgraph.status() as status`);
    return status.long_job;
  }

  /** Grants (level > 0) or revokes (level 0) tail -> head in its own transaction, in the database and the model. */
  async function commitGrant(state: GraphState, tail: string, head: string, level: 0 | model.Level): Promise<Committed> {
    return committed(state, async (tx) => {
      if (level === 0) {
        await tx.query(sql`delete from permgraph.grants where tail_id = ${tail} and head_id = ${head}`);
        for (const [k, v] of state.grants) if (v.tailId === tail && v.headId === head) state.grants.delete(k);
      } else {
        await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values (${tail}, ${head}, ${level})`);
        state.grants.set(grantKey(grant(tail, level, head)), grant(tail, level, head));
      }
      return `${tail} -${level}-> ${head}`;
    });
  }

  /**
   * Ten members m0-m9 of a team, a parent owning p0-p9, a group side, and
   * `extra`; then the team granted onto the parent, a job (chunk bound 30)
   * whose users are the members. Returns the model and the big grant.
   */
  async function startTeamJob(extra: RefGraph = { nodes: [], grants: [] }): Promise<{ state: GraphState; big: Committed }> {
    const members = Array.from({ length: 10 }, (_, i) => u(`m${i}`));
    const state = await start({
      nodes: [...members, g('team'), g('parent'), ...Array.from({ length: 10 }, (_, i) => g(`p${i}`, 'parent')), g('side'), ...extra.nodes],
      grants: [...members.map((m) => grant(m.id, 2, 'team')), ...extra.grants],
    });
    const big = await commitGrant(state, 'team', 'parent', 1);
    expect(await applyChanges(db, { chunkPairs: 30 })).toMatchObject({ toLongJob: 1 });
    return { state, big };
  }

  /**
   * In one transaction, in the database and the model: deletes the node
   * `deleteId` (by default node's id) if there is one, with its grants, and
   * adds `node` (null: none).
   */
  async function remakeNode(state: GraphState, node: RefNode | null, deleteId = node?.id): Promise<Committed> {
    const gone = deleteId !== undefined && state.nodes.has(deleteId) ? deleteId : null;
    return committed(state, async (tx) => {
      if (gone) {
        await tx.query(sql`delete from permgraph.nodes where id = ${gone}`);
        for (const [k, x] of state.grants) if (x.tailId === gone || x.headId === gone) state.grants.delete(k);
        state.nodes.delete(gone);
      }
      if (node) {
        await tx.query(sql`insert into permgraph.nodes (id, kind, owner_id) values (${node.id}, ${node.kind}, ${node.ownerId})`);
        state.nodes.set(node.id, node);
      }
      return [gone && `delete ${gone}`, node && `add ${node.kind} ${node.id}`].filter(Boolean).join(', ');
    });
  }

  it('a huge grant spans many chunks; other changes flow meanwhile, and tokens wait exactly for what touches the job', async () => {
    const members = Array.from({ length: 10 }, (_, i) => u(`m${i}`));
    const owned = Array.from({ length: 10 }, (_, i) => g(`p${i}`, 'parent'));
    const state = await start({
      nodes: [...members, u('outsider'), g('team'), g('parent'), ...owned, g('side'), g('other')],
      grants: [...members.map((m) => grant(m.id, 2, 'team')), grant('outsider', 1, 'side')],
    });
    const chunkPairs = 30; // a revoke from the team: 12 pairs

    // team -> parent: 10 members x 11 groups = 110 pairs, above the bound
    const big = await commitGrant(state, 'team', 'parent', 1);
    expect(big.affected.size).toBe(110);
    const committed = [big];
    const first = await applyChanges(db, { chunkPairs });
    expect(first).toMatchObject({ mode: 'incremental', longJobActive: true, toLongJob: 1 });
    expect(await longJob()).toMatchObject({ users_total: 10, users_done: 0, users_remaining: 10, chunks: 0, finished_at: null });
    expect((await verify(db)).pendingChanges).toBe(1); // the job's change: differences are expected meanwhile
    expect(await expectTokensHonest(state, committed, 'job started')).not.toContain(big.token);

    // A change that touches no member: applied by the next batch, not held up by the job.
    const independent = await commitGrant(state, 'outsider', 'other', 3);
    committed.push(independent);
    expect(await applyChanges(db, { chunkPairs })).toMatchObject({ deferred: 0, longJobActive: true });
    expect(await expectTokensHonest(state, committed, 'independent change')).toContain(independent.token);

    // A change that touches a member the job has not done yet: applied, but its token waits for the job.
    const overlapping = await commitGrant(state, 'm9', 'side', 2);
    committed.push(overlapping);
    expect(await applyChanges(db, { chunkPairs })).toMatchObject({ deferred: 1 });
    expect(await expectTokensHonest(state, committed, 'overlapping change')).not.toContain(overlapping.token);

    // Chunks of about one user (15 pairs: a member has 13 rows), with changes in between:
    // one for a member already done (m0), one for a member not done yet (m8).
    // The chunk after them takes m8 first, and lets its change go.
    let chunks = 0;
    let notYet: Committed | undefined;
    for (;;) {
      const chunk = await applyJobChunk(db, { maxPairs: 15 });
      chunks++;
      expect(chunk).toMatchObject({ mode: 'chunk', users: 1 });
      if (chunks === 2) {
        const done = await commitGrant(state, 'm0', 'team', 0);
        notYet = await commitGrant(state, 'm8', 'team', 0);
        committed.push(done, notYet);
        expect(await applyChanges(db, { chunkPairs })).toMatchObject({ deferred: 1 });
        const applied = await expectTokensHonest(state, committed, 'revokes during the job');
        expect(applied).toContain(done.token);
        expect(applied).not.toContain(notYet.token);
      }
      const applied = await expectTokensHonest(state, committed, `after chunk ${chunks}`);
      if (chunks === 3) {
        expect(chunk).toMatchObject({ released: 1, finished: false });
        expect(applied).toContain(notYet!.token);
      }
      if (chunk.finished) {
        expect(applied.size).toBe(committed.length);
        break;
      }
      expect(applied).not.toContain(big.token);
      expect(chunks).toBeLessThan(20);
    }
    expect(chunks).toBe(10);
    expect(await longJob()).toMatchObject({ users_remaining: 0, ended_by: 'chunks', chunks: 10, users_done: 10, deferred: 2, released: 2 });
    await expectTableMatches(state, 'after the job');
    expect((await verify(db)).differences).toEqual([]);
  });

  it("a deferred change waits for its own users' chunks, not for users wanted by changes made after it", async () => {
    const { state, big } = await startTeamJob();
    // One batch defers two changes, m9's first, then m5's; a later batch
    // defers m2's. m2 and m5 sort before m9, but m9's change is the oldest.
    const first = await commitGrant(state, 'm9', 'side', 2);
    const second = await commitGrant(state, 'm5', 'side', 2);
    expect(await applyChanges(db, { chunkPairs: 30 })).toMatchObject({ deferred: 2 });
    const third = await commitGrant(state, 'm2', 'side', 2);
    expect(await applyChanges(db, { chunkPairs: 30 })).toMatchObject({ deferred: 1 });
    const committed = [big, first, second, third];

    // chunks of one user (15 pairs: a member has 13 rows), each letting one change go
    for (const [done, expected] of [[1, [first]], [2, [first, second]], [3, [first, second, third]]] as const) {
      const chunk = await applyJobChunk(db, { maxPairs: 15 });
      expect(chunk, `chunk ${done}`).toMatchObject({ users: 1, released: 1 });
      expect([...(await expectTokensHonest(state, committed, `chunk ${done}`))]).toEqual(expected.map((c) => c.token));
    }

    while (!(await applyJobChunk(db)).finished);
    expect((await expectTokensHonest(state, committed, 'job done')).size).toBe(committed.length);
    expect(await longJob()).toMatchObject({ deferred: 3, released: 3, ended_by: 'chunks' });
    await expectTableMatches(state, 'after the job');
  });

  it('a chunk of wanted users shares rounds while it is small, and past an eighth of its bound ends with its round', async () => {
    const { state, big } = await startTeamJob();
    // three deferred changes, three rounds: m9's, m5's, m2's
    const rounds = [await commitGrant(state, 'm9', 'side', 2), await commitGrant(state, 'm5', 'side', 2), await commitGrant(state, 'm2', 'side', 2)];
    expect(await applyChanges(db, { chunkPairs: 30 })).toMatchObject({ deferred: 3 });
    const committed = [big, ...rounds];

    // A member has 14 rows now. With a bound of 120, m9 alone is under 15 (an eighth of 120), so
    // the chunk goes on to m5's round; with m5 it is past it, and ends there.
    // All three fit the bound: without the rule one chunk took them all.
    const first = await applyJobChunk(db, { maxPairs: 120 });
    expect(first).toMatchObject({ users: 2, regionPairs: 28, released: 2 });
    expect([...(await expectTokensHonest(state, committed, 'first chunk'))]).toEqual([rounds[0]!.token, rounds[1]!.token]);
    expect(await applyJobChunk(db, { maxPairs: 120 })).toMatchObject({ users: 1, released: 1 });
    expect([...(await expectTokensHonest(state, committed, 'second chunk'))]).toEqual(rounds.map((c) => c.token));

    while (!(await applyJobChunk(db)).finished);
    expect((await expectTokensHonest(state, committed, 'job done')).size).toBe(committed.length);
    await expectTableMatches(state, 'after the job');
  });

  it('a backlog too large for one batch becomes a job; a change made meanwhile waits for one chunk, not for the job', async () => {
    const members = Array.from({ length: 10 }, (_, i) => u(`m${i}`));
    const state = await start({
      nodes: [...members, g('team'), ...Array.from({ length: 4 }, (_, i) => g(`p${i}`, 'team')), g('side'), g('other')],
      grants: members.map((m) => grant(m.id, 1, 'team')),
    });
    // The backlog: six small changes, with a revoke among them, more than the batch's limit of 3.
    const backlog = [
      await commitGrant(state, 'm0', 'side', 2),
      await commitGrant(state, 'm1', 'team', 0),
      await commitGrant(state, 'team', 'other', 1),
      await commitGrant(state, 'm2', 'other', 3),
      await commitGrant(state, 'm3', 'side', 1),
      await commitGrant(state, 'm4', 'p0', 3),
    ];
    const committed = [...backlog];
    const limits = { maxChanges: 3, chunkPairs: 30 };
    expect(await applyChanges(db, limits)).toMatchObject({ mode: 'incremental', toLongJob: 6, longJobActive: true });
    expect(await longJob()).toMatchObject({ changes: 6, backlog_changes: 6, users_remaining: 10, finished_at: null });
    expect([...(await expectTokensHonest(state, committed, 'backlog moved'))]).toEqual([]);

    // A change made now: applied by the next batch, its token let go by the chunk after it.
    const fresh = await commitGrant(state, 'm9', 'side', 3);
    committed.push(fresh);
    expect(await applyChanges(db, limits)).toMatchObject({ deferred: 1 });
    expect(await expectTokensHonest(state, committed, 'fresh change deferred')).not.toContain(fresh.token);
    expect(await applyJobChunk(db)).toMatchObject({ users: 1, released: 1, finished: false });
    expect([...(await expectTokensHonest(state, committed, 'first chunk'))]).toEqual([fresh.token]);

    // One user a chunk, in order (m0, m1, ...): a backlog change is let go
    // once the chunks have passed every user it touches; team -> other
    // touches every member, so it waits for the last.
    const appliedAt = new Map<string, number>();
    let chunks = 1;
    for (let finished = false; !finished; ) {
      finished = (await applyJobChunk(db, { maxPairs: 1 })).finished;
      expect(++chunks).toBeLessThan(20);
      for (const token of await expectTokensHonest(state, committed, `chunk ${chunks}`)) if (!appliedAt.has(token)) appliedAt.set(token, chunks);
    }
    // (the last chunk deletes the backlog's rows from the queue: every token was applied by then)
    expect(backlog.map((c) => appliedAt.get(c.token))).toEqual([2, 3, 10, 4, 5, 6]);
    expect(chunks).toBe(11);
    await expectTableMatches(state, 'after the backlog');

    // A backlog within the change limit whose region is too large: the same, by the region bound.
    const widened = await commitGrant(state, 'team', 'side', 1);
    const more = [widened, await commitGrant(state, 'm5', 'team', 0)];
    expect(await applyChanges(db, { maxPairs: 5, chunkPairs: 30 })).toMatchObject({ mode: 'incremental', toLongJob: 2 });
    expect(await expectTokensHonest(state, [...committed, ...more], 'second backlog')).not.toContain(widened.token);
    while (!(await applyJobChunk(db)).finished) expect(++chunks).toBeLessThan(40);
    expect((await expectTokensHonest(state, [...committed, ...more], 'second job done')).size).toBe(committed.length + 2);
    await expectTableMatches(state, 'after the second backlog');

    // Without chunkPairs, a caller that applies synchronously still gets one full batch.
    await commitGrant(state, 'm6', 'side', 1);
    await commitGrant(state, 'm7', 'side', 1);
    expect(await applyChanges(db, { maxChanges: 1 })).toMatchObject({ mode: 'full', longJobActive: false });
    await expectTableMatches(state, 'full batch');
  });

  it('a backlog stays in the queue, hidden from batches, until the chunks after its last user delete it a bounded number at a time', async () => {
    const members = Array.from({ length: 5 }, (_, i) => u(`m${i}`));
    const sides = Array.from({ length: 5 }, (_, i) => g(`s${i}`));
    const state = await start({ nodes: [...members, ...sides, g('team'), g('extra')], grants: members.map((m) => grant(m.id, 1, 'team')) });
    // 25 changes: each member joins each side group.
    const backlog = [];
    for (const m of members) for (const s of sides) backlog.push(await commitGrant(state, m.id, s.id, 1));
    expect(await applyChanges(db, { maxChanges: 3, chunkPairs: 30 })).toMatchObject({ toLongJob: 25, longJobActive: true });
    // Left where it was captured, and no batch's: nothing pending, nothing applied.
    expect(await countPendingChanges(db)).toBe(25);
    const [{ status }] = await db.query(sql`select permgraph.status() as status`);
    expect(status).toMatchObject({ pending_changes: 0, long_job: { changes: 25, backlog_changes: 25 } });
    expect(status.long_job_oldest_change_age_s).not.toBeNull();
    expect(await applyChanges(db, { chunkPairs: 30 })).toMatchObject({ mode: 'none' });
    // A change made now is the next batch's, and only that one's.
    const fresh = await commitGrant(state, 'm4', 'extra', 3);
    expect(await applyChanges(db, { chunkPairs: 30 })).toMatchObject({ mode: 'incremental', changes: 1 });
    expect(await countPendingChanges(db)).toBe(25);
    const committed = [...backlog, fresh];

    const chunks: ChunkResult[] = [];
    for (let finished = false; !finished; ) {
      const chunk = await applyJobChunk(db, { maxPairs: 1 });
      chunks.push(chunk);
      finished = chunk.finished;
      expect(chunks.length).toBeLessThan(20);
      const applied = await expectTokensHonest(state, committed, `chunk ${chunks.length}`);
      // (every token is applied once the users are done, before a row is deleted)
      if (chunk.usersRemaining === 0) expect(applied.size).toBe(committed.length);
    }
    // One member a chunk, then ten ids a chunk (a bound of 1 pair): 25 rows in three.
    expect(chunks.map((c) => [c.users, c.backlogCleared])).toEqual([[1, 0], [1, 0], [1, 0], [1, 0], [1, 0], [0, 10], [0, 10], [0, 5]]);
    expect(await countPendingChanges(db)).toBe(0);
    expect(await db.query(sql`select * from permgraph.long_job_backlog_tails`)).toEqual([]);
    await expectTableMatches(state, 'after the job');
  });

  it("a writer running when the batch took the backlog, committed after it, is the next batch's, not the job's", async () => {
    const members = Array.from({ length: 4 }, (_, i) => u(`m${i}`));
    const state = await start({ nodes: [...members, u('late'), g('side'), g('extra')], grants: [] });
    const backlog: Committed[] = [];
    // late joins extra in a transaction that stays open while the backlog is
    // committed (so its id is below the ids of transactions that finished)
    // and taken by a batch
    const lateToken = await db.tx(async (writer) => {
      await writer.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('late', 'extra', 2)`);
      const token = await currentToken(writer);
      for (const m of members) backlog.push(await commitGrant(state, m.id, 'side', 1));
      expect(await applyChanges(db, { maxChanges: 3, chunkPairs: 30 })).toMatchObject({ toLongJob: 4 });
      const [{ running }] = await db.query(
        sql`select ${token}::xid8 = any(array(select pg_snapshot_xip(backlog_snapshot))) as running from permgraph.long_job`,
      );
      expect(running, 'the batch saw the writer running').toBe(true);
      return token;
    });
    state.grants.set(grantKey(grant('late', 2, 'extra')), grant('late', 2, 'extra'));
    expect(await applyChanges(db, { chunkPairs: 30 })).toMatchObject({ mode: 'incremental', changes: 1, deferred: 0 });
    expect(await isApplied(db, lateToken)).toBe(true);
    // (the job's last chunk deletes its four rows, and none of late's)
    expect((await chunksToTheEnd()).at(-1)).toMatchObject({ users: 0, backlogCleared: 4, finished: true });
    expect((await expectTokensHonest(state, backlog, 'job done')).size).toBe(backlog.length);
    await expectTableMatches(state, 'after the job');
  });

  it('the batch that takes a backlog applies its trash flags itself: every row its snapshot saw is the job\'s', async () => {
    const members = Array.from({ length: 4 }, (_, i) => u(`m${i}`));
    const state = await start({ nodes: [...members, g('side'), g('bin'), o('doc', 'bin')], grants: members.map((m) => grant(m.id, 1, 'bin')) });
    const committed = [];
    for (const m of members) committed.push(await commitGrant(state, m.id, 'side', 1));
    // bin (the second node that is not a user) trashed in the past
    committed.push(await commit(state, { type: 'setTrash', pick: 1, trash: PAST }));
    expect(committed.at(-1)!.description).toMatch(/^trash bin/);
    expect(await applyChanges(db, { maxChanges: 3, chunkPairs: 30 })).toMatchObject({ toLongJob: 4 });
    expect(await readTrashedGroups(db)).toEqual(model.computeTrashedGroups(state.snapshot()));
    expect(await isApplied(db, committed.at(-1)!.token)).toBe(true);
    expect(Number((await db.query(sql`select count(*) as n from permgraph.changes where trash_changed`))[0].n)).toBe(0);
    await chunksToTheEnd();
    expect((await expectTokensHonest(state, committed, 'job done')).size).toBe(committed.length);
    await expectTableMatches(state, 'after the job');
  });

  it('a backlog in which a node id comes back as another kind: the job takes its users as both', async () => {
    const members = Array.from({ length: 3 }, (_, i) => u(`m${i}`));
    const state = await start({ nodes: [...members, u('zz'), g('team'), g('side')], grants: [grant('zz', 1, 'team')] });
    const committed = [await commitGrant(state, 'zz', 'team', 0)];
    // zz, a user, is deleted and made again as a group, which the members join
    committed.push(await remakeNode(state, g('zz')));
    for (const m of members) committed.push(await commitGrant(state, m.id, 'zz', 2));
    committed.push(await commitGrant(state, 'zz', 'side', 1));
    // (the queue holds changes out of zz the user and out of zz the group)
    const [{ kinds }] = await db.query(sql`select array_agg(distinct tail_kind order by tail_kind) as kinds from permgraph.changes where tail_id = 'zz'`);
    expect(kinds).toEqual(['group', 'user']);

    // (a failed batch before: the tail's row of long_job_backlog_tails twice in one INSERT)
    expect(await applyChanges(db, { maxChanges: 3, chunkPairs: 30 })).toMatchObject({ toLongJob: 6 });
    await chunksToTheEnd();
    expect((await expectTokensHonest(state, committed, 'job done')).size).toBe(committed.length);
    await expectTableMatches(state, 'after the job');
  });

  it("a node made again under its id while a job runs: its rows show at once, not after the job", async () => {
    const { state, big } = await startTeamJob({ nodes: [u('out'), g('zz')], grants: [grant('out', 1, 'zz')] });
    // zz made again (its grant from out goes with it), and out granted on it anew
    const committed = [big, await remakeNode(state, g('zz')), await commitGrant(state, 'out', 'zz', 2)];
    expect(await applyChanges(db, { chunkPairs: 30 })).toMatchObject({ deferred: 0 });
    const applied = await expectTokensHonest(state, committed, 'after the batch');
    expect(applied.has(committed[2]!.token)).toBe(true);

    while (!(await applyJobChunk(db)).finished);
    expect((await expectTokensHonest(state, committed, 'job done')).size).toBe(committed.length);
    await expectTableMatches(state, 'after the job');
  });

  it("a node made again while a user of the job still holds a row on its old self: that row stays hidden until the user's chunk", async () => {
    // (found by the random changes: delete g5, a backlog takes it, g5 made again as a user)
    const state = await start({ nodes: [u('m0'), g('g5'), g('g8')], grants: [grant('m0', 1, 'g5')] });
    const committed = [await remakeNode(state, null, 'g5')];
    expect(await applyChanges(db, { maxChanges: 1, chunkPairs: 4, maxPairs: 1 })).toMatchObject({ toLongJob: 1 });
    // m0, a user of the job, still holds its row on the old g5, which g5's tombstone hides
    committed.push(await remakeNode(state, u('g5')));
    await applyChanges(db, { chunkPairs: 4 });
    const oldRowHidden = async (context: string) => expect(await visibleRow('m0', 'g5'), context).toBeUndefined();
    await expectTokensHonest(state, committed, 'after the batch');
    await oldRowHidden('after the batch');
    for (let chunks = 0; ; chunks++) {
      const chunk = await applyJobChunk(db, { maxPairs: 10 });
      await expectTokensHonest(state, committed, `after chunk ${chunks + 1}`);
      await oldRowHidden(`after chunk ${chunks + 1}`);
      if (chunk.finished || chunk.mode === 'none') break;
      expect(chunks).toBeLessThan(10);
    }
    expect((await expectTokensHonest(state, committed, 'job done')).size).toBe(committed.length);
    await expectTableMatches(state, 'after the job');
  });

  it('a backlog in which a node is made again: the rows of its old self stay hidden until their users\' chunks', async () => {
    // (found by the random changes) u3 holds a row on u2; u2 is deleted and
    // made again, owned by u0; a backlog takes it all. u3 sorts last.
    const state = await start({ nodes: [u('u0'), u('u2'), u('u3'), g('g1')], grants: [grant('u3', 1, 'u2')] });
    const committed = [await remakeNode(state, null, 'u2'), await remakeNode(state, u('u2', 'u0')), await commitGrant(state, 'u0', 'g1', 1)];
    expect(await applyChanges(db, { maxChanges: 2, chunkPairs: 40 })).toMatchObject({ toLongJob: 5 });
    for (let chunks = 1; ; chunks++) {
      const chunk = await applyJobChunk(db, { maxPairs: 1 });
      await expectTokensHonest(state, committed, `after chunk ${chunks}`);
      // (u3's row on the old u2, until u3's chunk removes it)
      expect(await visibleRow('u3', 'u2'), `after chunk ${chunks}`).toBeUndefined();
      if (chunk.finished) break;
      expect(chunks).toBeLessThan(10);
    }
    expect((await expectTokensHonest(state, committed, 'job done')).size).toBe(committed.length);
    await expectTableMatches(state, 'after the job');
  });

  it("a node made again: the tombstone hides only the rows of the job's users that held rows on the old node, however the job grows", async () => {
    // (found by the random changes) zz's deletion is taken into a job whose
    // user m9 keeps its row on the old zz until its chunk. zz is made again
    // and out, outside the job, granted on it. Then out joins the job
    // (through crew, whose grant onto parent is split off), holding its
    // right row on the new zz.
    const state = await start({
      nodes: [u('m9'), u('out'), u('out2'), g('zz'), g('crew'), g('parent'), g('p0', 'parent'), g('p1', 'parent'), g('p2', 'parent')],
      grants: [grant('m9', 1, 'zz'), grant('out', 1, 'crew'), grant('out2', 1, 'crew')],
    });
    const committed = [await remakeNode(state, null, 'zz')];
    expect(await applyChanges(db, { maxChanges: 1, chunkPairs: 4, maxPairs: 1 })).toMatchObject({ toLongJob: 1 });
    // (recorded only once zz exists again: until then the tombstone hides all its rows)
    const recorded = async () => db.query(sql`select node_id, user_id from permgraph.long_job_tombstone_waits order by 1, 2`);
    expect(await recorded()).toEqual([]);
    committed.push(await remakeNode(state, g('zz')), await commitGrant(state, 'out', 'zz', 2));
    expect(await applyChanges(db, { chunkPairs: 4 })).toMatchObject({ toLongJob: 0, deferred: 0 });
    expect(await recorded()).toEqual([{ node_id: 'zz', user_id: 'm9' }]);
    // out's row on the new zz shows at once; m9's on the old one stays hidden
    let applied = await expectTokensHonest(state, committed, 'after the batch');
    expect(applied.has(committed[2]!.token)).toBe(true);
    expect(await visibleRow('m9', 'zz')).toBeUndefined();
    // (the listings and explain read the same rule)
    const listed = async (user: string) => (await db.query(sql`select target_id from permgraph.list_targets(${user})`)).map((r: { target_id: string }) => r.target_id);
    expect(await listed('out')).toContain('zz');
    expect(await listed('m9')).not.toContain('zz');
    const [{ rows }] = await db.query(sql`select permgraph.explain('m9', 'zz') -> 'rows' as rows`);
    expect(rows).toEqual([]);
    committed.push(await commitGrant(state, 'crew', 'parent', 1));
    expect(await applyChanges(db, { chunkPairs: 4 })).toMatchObject({ toLongJob: 1 });
    applied = await expectTokensHonest(state, committed, 'out joined the job');
    expect(applied.has(committed[2]!.token)).toBe(true);
    for (let chunks = 1; !(await applyJobChunk(db, { maxPairs: 1 })).finished; chunks++) {
      await expectTokensHonest(state, committed, `after chunk ${chunks}`);
      expect(chunks).toBeLessThan(10);
    }
    expect((await expectTokensHonest(state, committed, 'job done')).size).toBe(committed.length);
    await expectTableMatches(state, 'after the job');
  });

  it("a node made again: a change elsewhere that gives a user outside the job a row on it shows that row at once", async () => {
    // (found by the random changes) g11 deleted and made again as a user
    // owned by g9, in a backlog; m, a user of the job, holds a row on the
    // old g11. u0's grant onto g9 reaches g11, though neither of its ends
    // is g11, and touches no user of the job.
    const state = await start({ nodes: [u('m'), u('u0'), g('g9'), g('g11')], grants: [grant('m', 1, 'g11')] });
    const committed = [await remakeNode(state, null, 'g11'), await remakeNode(state, u('g11', 'g9'))];
    expect(await applyChanges(db, { maxChanges: 1, chunkPairs: 4, maxPairs: 1 })).toMatchObject({ toLongJob: 3 });
    committed.push(await commitGrant(state, 'u0', 'g9', 1));
    expect(await applyChanges(db, { chunkPairs: 4 })).toMatchObject({ deferred: 0 });
    const applied = await expectTokensHonest(state, committed, 'after the batch');
    expect(applied.has(committed[2]!.token)).toBe(true);
    // m's row on the old g11 stays hidden until m's chunk
    expect(await visibleRow('m', 'g11')).toBeUndefined();
    await chunksToTheEnd();
    expect((await expectTokensHonest(state, committed, 'job done')).size).toBe(committed.length);
    await expectTableMatches(state, 'after the job');
  });

  it('a group with a grant onto itself, deleted and made again as a user: the big change split off leaves the new user to the batch', async () => {
    // (found by the random changes) gx's grant onto itself and gx's
    // identity as a user are changes of the same pair, gx -> gx: the first
    // is big (two members), and moving it took the second along, though
    // the job walks gx as a group and never computed the user gx.
    const state = await start({ nodes: [u('u0'), u('u1'), g('gx')], grants: [grant('u0', 1, 'gx'), grant('u1', 1, 'gx'), grant('gx', 1, 'gx')] });
    const committed = [await remakeNode(state, null, 'gx'), await remakeNode(state, u('gx'))];
    expect((await applyChanges(db, { chunkPairs: 1 })).toLongJob).toBeGreaterThan(0);
    await chunksToTheEnd();
    expect((await expectTokensHonest(state, committed, 'job done')).size).toBe(committed.length);
    await expectTableMatches(state, 'after the job');
  });

  it("a chunk leaves the tombstone of a node made again that no batch has seen: rows of the old node stay hidden", async () => {
    // out, outside the job, holds a row on zz until a batch applies zz's deletion
    const { state } = await startTeamJob({ nodes: [u('out'), g('zz')], grants: [grant('out', 1, 'zz')] });
    await remakeNode(state, g('zz'));
    await applyJobChunk(db);
    expect(await visibleRow('out', 'zz'), 'the old zz\'s row, shown for the new zz').toBeUndefined();
    await applyChanges(db, { chunkPairs: 30 });
    await chunksToTheEnd();
    await expectTableMatches(state, 'after the job');
  });

  it('a TRUNCATE past the count of a backlog: the batch recomputes the table instead of handing it to a job', async () => {
    const members = Array.from({ length: 4 }, (_, i) => u(`m${i}`));
    // (old members' rows: only a recomputation of every user removes them)
    const state = await start({ nodes: [...members, u('old'), g('team'), g('side')], grants: [grant('old', 2, 'team'), grant('m0', 1, 'team')] });
    // five changes, more than the limit of 3, the TRUNCATE last: past the
    // limit + 1 rows the batch counts (sql/functions/045_batch_split.sql)
    for (const m of members) await commitGrant(state, m.id, 'side', 1);
    await db.query(sql`truncate permgraph.grants`);
    state.grants.clear();
    expect(await countPendingChanges(db)).toBe(5);
    expect(await applyChanges(db, { maxChanges: 3, chunkPairs: 30 })).toMatchObject({ mode: 'full', changes: 5, toLongJob: 0, longJobActive: false });
    expect(await countPendingChanges(db)).toBe(0);
    await expectTableMatches(state, 'after the TRUNCATE');
  });

  it('a second backlog while the first is held: tokens applied stay applied, and the tails it takes again wait anew', async () => {
    const members = Array.from({ length: 6 }, (_, i) => u(`m${i}`));
    const state = await start({ nodes: [...members, g('team'), g('side'), g('other')], grants: members.map((m) => grant(m.id, 1, 'team')) });
    const first = [];
    for (const m of members) first.push(await commitGrant(state, m.id, 'side', 1));
    expect(await applyChanges(db, { maxChanges: 3, chunkPairs: 30 })).toMatchObject({ toLongJob: 6 });
    // Two chunks: m0 and m1 done, their changes applied.
    for (let i = 0; i < 2; i++) expect(await applyJobChunk(db, { maxPairs: 1 })).toMatchObject({ users: 1 });
    const appliedBefore = await expectTokensHonest(state, first, 'two chunks');
    expect(first.filter((c) => appliedBefore.has(c.token)).map((c) => c.description)).toEqual(['m0 -1-> side', 'm1 -1-> side']);

    // The second backlog takes m0's tail again, and m5's (not yet done).
    const second = [await commitGrant(state, 'm0', 'other', 2), await commitGrant(state, 'm5', 'other', 1), await commitGrant(state, 'm0', 'team', 0), await commitGrant(state, 'm2', 'other', 1)];
    expect(await applyChanges(db, { maxChanges: 3, chunkPairs: 30 })).toMatchObject({ toLongJob: 4 });
    const committed = [...first, ...second];
    let applied = await expectTokensHonest(state, committed, 'second backlog');
    for (const token of appliedBefore) expect(applied.has(token), 'a token applied before the second backlog').toBe(true);
    expect(applied.has(second[0]!.token)).toBe(false);
    for (let chunks = 0, finished = false; !finished; chunks++) {
      finished = (await applyJobChunk(db, { maxPairs: 1 })).finished;
      expect(chunks).toBeLessThan(20);
      const now = await expectTokensHonest(state, committed, `chunk ${chunks}`);
      for (const token of applied) expect(now.has(token), `chunk ${chunks}: a token applied before`).toBe(true);
      applied = now;
    }
    expect(applied.size).toBe(committed.length);
    expect(await countPendingChanges(db)).toBe(0);
    await expectTableMatches(state, 'after the job');
  });

  it('a chunk stops at its bound by the rows it computes, however few rows its users had stored', async () => {
    // Eight users with no row but their own; the backlog puts each into a
    // team owning 30 groups: 32 rows each, none stored yet.
    const newcomers = Array.from({ length: 8 }, (_, i) => u(`n${i}`));
    const state = await start({ nodes: [...newcomers, g('team'), ...Array.from({ length: 30 }, (_, i) => g(`t${i}`, 'team'))], grants: [] });
    const committed = [];
    for (const n of newcomers) committed.push(await commitGrant(state, n.id, 'team', 1));
    expect(await applyChanges(db, { maxChanges: 3, chunkPairs: 40 })).toMatchObject({ toLongJob: 8 });
    const chunks = await chunksToTheEnd();
    // (and a last chunk that deletes the backlog's eight rows from the queue)
    expect(chunks.map((c) => [c.users, c.regionPairs, c.backlogCleared])).toEqual([...newcomers.map(() => [1, 32, 0]), [0, 0, 8]]);
    expect((await expectTokensHonest(state, committed, 'job done')).size).toBe(committed.length);
    await expectTableMatches(state, 'after the job');
  });

  it('a chunk also counts the stored rows it deletes: users a backlog took out of a big group are not taken all at once', async () => {
    // Ten members of team and of club, which owns 20 groups; a backlog
    // takes each out of club: 21 of their 23 rows go, left stored until
    // their chunk.
    const members = Array.from({ length: 10 }, (_, i) => u(`m${i}`));
    const state = await start({
      nodes: [...members, g('team'), g('club'), ...Array.from({ length: 20 }, (_, i) => g(`c${i}`, 'club'))],
      grants: members.flatMap((m) => [grant(m.id, 2, 'team'), grant(m.id, 1, 'club')]),
    });
    for (const m of members) await commitGrant(state, m.id, 'club', 0);
    expect(await applyChanges(db, { maxChanges: 3, chunkPairs: 30 })).toMatchObject({ toLongJob: 10 });
    const chunks = await chunksToTheEnd();
    expect(chunks.map((c) => [c.users, c.deleted])).toEqual([...members.map(() => [1, 21]), [0, 0]]);
    await expectTableMatches(state, 'after the job');
  });

  it('a chunk keeps its last step up to the first user past its bound, and leaves the rest to the next chunk', async () => {
    // Four light users (a club with nothing under it: 2 rows each), then
    // six heavy ones (a team owning 30 groups: 32 rows each), all joining
    // in the backlog. A bound of 100 grows a chunk by 1, 1, 2, then 4
    // users: the four light ones hold 8 rows, and the next four heavy ones
    // 128; the third of those starts at 72 rows and ends past the bound,
    // and the fourth is left to the next chunk.
    const light = Array.from({ length: 4 }, (_, i) => u(`l${i}`));
    const heavy = Array.from({ length: 6 }, (_, i) => u(`n${i}`));
    const state = await start({
      nodes: [...light, ...heavy, g('club'), g('team'), ...Array.from({ length: 30 }, (_, i) => g(`t${i}`, 'team'))],
      grants: [],
    });
    const committed = [];
    for (const l of light) committed.push(await commitGrant(state, l.id, 'club', 1));
    for (const n of heavy) committed.push(await commitGrant(state, n.id, 'team', 1));
    expect(await applyChanges(db, { maxChanges: 3, chunkPairs: 100 })).toMatchObject({ toLongJob: 10 });
    const chunks = await chunksToTheEnd();
    expect(chunks.map((c) => [c.users, c.regionPairs, c.inserted])).toEqual([
      [7, 104, 97], // l0-l3, n0-n2 (a user's own row is stored already)
      [3, 96, 93], // n3-n5: one at a time from here, at the mean so far
      [0, 0, 0], // the backlog's rows deleted from the queue
    ]);
    expect((await expectTokensHonest(state, committed, 'job done')).size).toBe(committed.length);
    await expectTableMatches(state, 'after the job');
  });

  it("a change that reaches the job's users through the job's own edge waits until each of them is recomputed", async () => {
    const members = Array.from({ length: 4 }, (_, i) => u(`m${i}`));
    const state = await start({
      nodes: [...members, g('team'), g('parent'), g('p0', 'parent'), g('p1', 'parent'), g('side')],
      grants: members.map((m) => grant(m.id, 2, 'team')),
    });
    const big = await commitGrant(state, 'team', 'parent', 1);
    expect(await applyChanges(db, { chunkPairs: 4 })).toMatchObject({ toLongJob: 1 });
    // parent -> side: every member reaches side through the job's edge,
    // which their stored rows do not show yet: the batch cannot give them
    // (m, side), only their chunks can.
    const through = await commitGrant(state, 'parent', 'side', 1);
    const committed = [big, through];
    expect(await applyChanges(db, { chunkPairs: 4 })).toMatchObject({ deferred: 1 });
    for (let done = 1; done <= members.length; done++) {
      const chunk = await applyJobChunk(db, { maxPairs: 1 });
      expect(chunk).toMatchObject({ users: 1, released: done === members.length ? 1 : 0 });
      const applied = await expectTokensHonest(state, committed, `after chunk ${done}`);
      expect(applied.has(through.token), `after chunk ${done}`).toBe(done === members.length);
    }
    await expectTableMatches(state, 'after the job');
  });

  it("a change committed before a big one split off in the same batch waits for the users it reached through the big one's removed edges", async () => {
    // u1 and u2 see doc and log through team -> hub. The revoke of hub ->
    // doc takes (u1, doc) and (u2, doc) away; the deletion of team,
    // committed after it, removes team -> hub, a region of 2 users x 2
    // nodes (hub, log), above the bound of 3: the batch moves it into a job
    // and keeps the revoke (2 pairs), whose users it reached through
    // team -> hub.
    const state = await start({
      nodes: [u('u1'), u('u2'), g('team'), g('hub'), o('doc'), o('log')],
      grants: [grant('u1', 1, 'team'), grant('u2', 1, 'team'), grant('team', 1, 'hub'), grant('hub', 1, 'doc'), grant('hub', 1, 'log')],
    });
    const revoke = await commitGrant(state, 'hub', 'doc', 0);
    // (team, the third node)
    const committed = [revoke, await commit(state, { type: 'deleteNode', pick: 2 })];
    expect(committed[1]!.description).toBe('delete team');
    const batch = await applyChanges(db, { chunkPairs: 3 });
    // (u1 and u2 still hold their rows on doc: the revoke waits for their chunks)
    expect(await expectTokensHonest(state, committed, 'split off')).not.toContain(revoke.token);
    // (deferred: the revoke, and the deletion's edges out of u1 and u2, which stay in the batch)
    expect(batch).toMatchObject({ mode: 'incremental', toLongJob: 1, deferred: 3 });
    await chunksToTheEnd();
    expect((await expectTokensHonest(state, committed, 'job done')).size).toBe(2);
    await expectTableMatches(state, 'after the job');
  });

  it("a repeatable-read batch whose snapshot predates a chunk fails as a serialization failure, which a retry gets past", async () => {
    // (an application's refresh() while the worker runs a job: its snapshot is
    // taken before it waits for the applier lock, which the chunk holds)
    const { state } = await startTeamJob();
    const stale = await afterStaleSnapshot(db, sql`select permgraph.apply_changes(p_force_full => true)`, () => applyJobChunk(db)).then(
      () => undefined,
      (error: unknown) => error,
    );
    // (before chunks left a row version of applier_state: a unique violation on a row the chunk had written)
    expect(sqlStateOf(stale)).toBe(SqlState.serializationFailure);
    expect(await refresh(db)).toMatchObject({ mode: 'full' });
    await expectTableMatches(state, 'after the stale batch and its retry');
  });

  // (FINDINGS 59: an application's refresh() or applyChanges() beside a
  // worker running chunks back to back lost every retry: each took its
  // snapshot, then waited for the applier lock while a chunk ran)
  for (const [waiter, call] of [
    ['an application\'s refresh()', (pool: Queryable) => refresh(pool)],
    ['a chunk', (pool: Queryable) => applyJobChunk(pool, { maxPairs: 15 })],
  ] as const) {
    it(`${waiter} that waits behind a chunk takes its snapshot after it: it runs once, never stale`, async () => {
      const { state } = await startTeamJob();
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      let holding!: (pid: number) => void;
      const holderPid = new Promise<number>((resolve) => (holding = resolve));
      // a chunk committed only once the call below waits for it
      const holder = db.tx(
        async (tx) => {
          expect(await applyJobChunk(tx, { maxPairs: 15 })).toMatchObject({ mode: 'chunk', users: 1 });
          const [{ pid }] = await tx.query(sql`select pg_backend_pid() as pid`);
          holding(pid);
          await held;
        },
        { isolationLevel: IsolationLevel.REPEATABLE_READ },
      );
      holder.catch(() => {}); // awaited below
      const pid = await Promise.race([holderPid, holder.then(() => 0)]);
      const counted = countingTransactions(db);
      const waiting = call(counted.db);
      waiting.catch(() => {}); // awaited below
      await waitUntil(async () => {
        const [{ blocked }] = await db.query(sql`
          select exists (select 1 from pg_locks l
                         where not l.granted and l.pid <> ${pid}::integer
                           and l.database = (select oid from pg_database where datname = current_database())) as blocked`);
        return blocked === true;
      }, 'the call to wait for the chunk');
      release();
      await holder;
      await waiting;
      // (before the turn: 2, the first attempt failed with 40001 once the chunk committed)
      expect(counted.transactions(), 'transactions the call began').toBe(1);
      // (the rest of the job, if the call did not end it)
      while ((await applyJobChunk(db)).mode === 'chunk');
      await expectTableMatches(state, 'after the job');
    });
  }

  it('a full recomputation ends a running job', async () => {
    const members = Array.from({ length: 6 }, (_, i) => u(`m${i}`));
    const state = await start({
      nodes: [...members, g('team'), g('parent'), g('p0', 'parent'), g('p1', 'parent')],
      grants: members.map((m) => grant(m.id, 2, 'team')),
    });
    const { token } = await db.tx(async (tx) => {
      await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('team', 'parent', 3)`);
      return { token: await currentToken(tx) };
    });
    state.grants.set(grantKey(grant('team', 3, 'parent')), grant('team', 3, 'parent'));
    expect(await applyChanges(db, { chunkPairs: 4 })).toMatchObject({ longJobActive: true });
    expect(await isApplied(db, token)).toBe(false);
    await refresh(db);
    expect(await longJob()).toMatchObject({ ended_by: 'full', users_remaining: 0 });
    expect(await isApplied(db, token)).toBe(true);
    expect(await applyJobChunk(db)).toMatchObject({ mode: 'none' });
    await expectTableMatches(state, 'after refresh');
  });

  it('the worker alternates chunks with batches, finishes the job, and its metrics show the progress', async () => {
    const members = Array.from({ length: 8 }, (_, i) => u(`m${i}`));
    const state = await start({
      nodes: [...members, u('outsider'), g('team'), g('parent'), ...Array.from({ length: 6 }, (_, i) => g(`p${i}`, 'parent')), g('side')],
      grants: members.map((m) => grant(m.id, 2, 'team')),
    });
    const worker = new Worker({ url, pollIntervalMs: 50, chunkPairs: 12, listen: false });
    const registry = createWorkerMetrics(worker, db);
    const chunks: boolean[] = [];
    worker.on('chunk', (chunk) => chunks.push(chunk.finished));
    await worker.start();
    try {
      const big = await commitGrant(state, 'team', 'parent', 3); // 8 members x 7 groups
      const small = await commitGrant(state, 'outsider', 'side', 1);
      await waitFor(db, big.token, 30_000);
      await waitFor(db, small.token, 30_000);
    } finally {
      await worker.stop();
    }
    expect(chunks.length).toBeGreaterThan(1);
    expect(chunks.at(-1)).toBe(true);
    const metrics = await registry.metrics();
    expect(metrics).toContain(`permgraph_long_job_chunks_total ${chunks.length}`);
    expect(metrics).toContain('permgraph_long_job_active 0');
    expect(await longJob()).toMatchObject({ ended_by: 'chunks', users_total: 8, users_done: 8, chunks: chunks.length });
    await expectTableMatches(state, 'worker');
  });

  it('a worker started on a backlog takes it as a long job, lets its tokens go chunk by chunk, and ends equal to the model', async () => {
    const members = Array.from({ length: 8 }, (_, i) => u(`m${i}`));
    const state = await start({
      nodes: [...members, g('team'), ...Array.from({ length: 4 }, (_, i) => g(`p${i}`, 'team')), g('side')],
      grants: members.map((m) => grant(m.id, 1, 'team')),
    });
    // committed while no worker runs: more changes than its batch limit
    const backlog = [];
    for (const m of members) backlog.push(await commitGrant(state, m.id, 'side', 2));
    const worker = new Worker({ url, pollIntervalMs: 50, maxBatch: 3, chunkPairs: 12, listen: false });
    const batches: BatchResult[] = [];
    const chunks: ChunkResult[] = [];
    worker.on('batch', (batch) => batches.push(batch));
    worker.on('chunk', (chunk) => chunks.push(chunk));
    await worker.start();
    try {
      for (const c of backlog) await waitFor(db, c.token, 30_000);
    } finally {
      await worker.stop();
    }
    expect(batches[0]).toMatchObject({ mode: 'incremental', toLongJob: backlog.length, longJobActive: true });
    expect(batches.filter((b) => b.mode === 'full')).toEqual([]);
    // (about a member a chunk, 7 rows each: the first members' tokens are let go before the last chunk)
    expect(chunks.length).toBeGreaterThan(1);
    expect(chunks.slice(0, -1).some((c) => c.released > 0)).toBe(true);
    await expectTableMatches(state, 'worker on a backlog');
  });

  it("a worker defers the writes committed while it took a backlog before the job's first chunk, which takes their users", async () => {
    const members = Array.from({ length: 8 }, (_, i) => u(`m${i}`));
    const state = await start({ nodes: [...members, g('side'), g('extra')], grants: [] });
    const backlog = [];
    for (const m of members) backlog.push(await commitGrant(state, m.id, 'side', 2));
    const worker = new Worker({ url, pollIntervalMs: 50, maxBatch: 3, chunkPairs: 2, listen: false });
    const steps: string[] = [];
    worker.on('batch', (batch) => steps.push(`batch to_job=${batch.toLongJob} deferred=${batch.deferred}`));
    worker.on('chunk', (chunk) => steps.push(`chunk users=${chunk.users} released=${chunk.released}`));
    // The batch that takes the backlog waits for this lock, and m7 (the last
    // user in the chunks' order) writes meanwhile.
    const during = await db.tx(async (tx) => {
      await tx.query(sql`lock table permgraph.long_job_backlog_tails in share mode`);
      await worker.start();
      for (let waited = 0; ; waited += 20) {
        const [{ waiting }] = await db.query(sql`
          select exists (select 1 from pg_locks where relation = 'permgraph.long_job_backlog_tails'::regclass and not granted) as waiting`);
        if (waiting) break;
        expect(waited, 'the batch that takes the backlog waits for the lock').toBeLessThan(30_000);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return commitGrant(state, 'm7', 'extra', 1);
    });
    try {
      for (const c of [...backlog, during]) await waitFor(db, c.token, 30_000);
    } finally {
      await worker.stop();
    }
    // m7's write deferred, then a chunk of m7 alone lets it go: it waits for no other member's chunk
    expect(steps.slice(0, 3)).toEqual(['batch to_job=8 deferred=0', 'batch to_job=0 deferred=1', 'chunk users=1 released=1']);
    await expectTableMatches(state, 'worker on a backlog');
  });

  /** Random writes, batches, backlogs and chunks, checked after every step; returns what the runs went through. */
  async function runRandomJobs(mutations: fc.Arbitrary<Mutation>, numRuns: number) {
    const step = fc.oneof(
      { weight: 4, arbitrary: mutations.map((mutation) => ({ type: 'write' as const, mutation })) },
      { weight: 2, arbitrary: fc.constantFrom(1, 2, 4, 8, 40).map((chunkPairs) => ({ type: 'batch' as const, chunkPairs })) },
      // a backlog: more changes, or a larger region, than one batch takes
      {
        weight: 1,
        arbitrary: fc
          .record({ chunkPairs: fc.constantFrom(4, 40), maxChanges: fc.constantFrom(1, 2, 100_000), maxPairs: fc.constantFrom(1, 8, 1_000_000) })
          .map((limits) => ({ type: 'backlog' as const, ...limits })),
      },
      { weight: 2, arbitrary: fc.constantFrom(1, 4, 30).map((maxPairs) => ({ type: 'chunk' as const, maxPairs })) },
    );
    let jobs = 0;
    let deferredBatches = 0;
    let backlogs = 0;
    let released = 0;
    // (steps after which a tombstone of an id made again hid only the rows of users it recorded)
    let recordedTombstones = 0;
    await fc.assert(
      fc.asyncProperty(graphArbitrary({ users: 8, groups: 10, objects: 4, grants: 40 }, 0.5), fc.array(step, { minLength: 1, maxLength: 30 }), async (graph, steps) => {
        const state = await start(graph);
        const committed: Committed[] = [];
        const log: string[] = [];
        let applied = new Set<string>();
        // (a token once applied stays applied)
        const expectTokensKept = async (context: string) => {
          const now = await expectTokensHonest(state, committed, context);
          for (const token of applied) expect(now.has(token), `${context}: token ${token} was applied and is no longer`).toBe(true);
          applied = now;
        };
        for (const s of steps) {
          if (s.type === 'write') {
            const c = await commit(state, s.mutation);
            committed.push(c);
            log.push(c.description);
            continue;
          }
          if (s.type === 'batch') {
            const result = await applyChanges(db, { chunkPairs: s.chunkPairs });
            if (result.toLongJob > 0) jobs++;
            if (result.deferred > 0) deferredBatches++;
            log.push(`batch(${s.chunkPairs}) -> ${result.mode} job=${result.toLongJob} deferred=${result.deferred}`);
          } else if (s.type === 'backlog') {
            const result = await applyChanges(db, s);
            // (a queue above the limits is a long job, never a full recomputation)
            expect(result.mode, log.join('; ')).not.toBe('full');
            if (result.toLongJob > 0) backlogs++;
            if (result.deferred > 0) deferredBatches++;
            log.push(`backlog(${JSON.stringify(s)}) -> ${result.mode} job=${result.toLongJob} deferred=${result.deferred}`);
          } else {
            const chunk = await applyJobChunk(db, { maxPairs: s.maxPairs });
            released += chunk.released;
            log.push(`chunk(${s.maxPairs}) -> ${chunk.mode} users=${chunk.users} left=${chunk.usersRemaining} released=${chunk.released} cleared=${chunk.backlogCleared}`);
          }
          await expectTokensKept(log.join('; '));
          const [{ recorded }] = await db.query(sql`select exists (select 1 from permgraph.long_job_tombstone_waits) as recorded`);
          if (recorded) recordedTombstones++;
        }
        // Drain: batches and chunks until nothing is pending and no job runs.
        for (let round = 0; ; round++) {
          const batch = await applyChanges(db, { chunkPairs: 4 });
          if (batch.toLongJob > 0) jobs++;
          if (batch.deferred > 0) deferredBatches++;
          const chunk = await applyJobChunk(db, { maxPairs: 10 });
          released += chunk.released;
          log.push(`drain: ${batch.mode}, ${chunk.mode}`);
          await expectTokensKept(log.join('; '));
          if (batch.mode === 'none' && chunk.mode === 'none') break;
          expect(round, log.join('; ')).toBeLessThan(500);
        }
        expect(applied.size, log.join('; ')).toBe(committed.length);
        await expectTableMatches(state, log.join('; '));
        expect((await verify(db)).differences, log.join('; ')).toEqual([]);
      }),
      // Within the test's timeout (120 s; these runs take 5-25 s): a failure
      // whose shrinking would outlast it is reported with the counterexample
      // shrunk so far, where a timeout said nothing of it, and left a run
      // writing to the database while the next test ran (twice in CI, the
      // second test then failing on the first one's writes).
      { numRuns, plugins: [fc.interruptAfterTimeLimit(90_000, { failOnInterrupt: true })] },
    );
    return { jobs, deferredBatches, backlogs, released, recordedTombstones };
  }

  it('random changes, batches and chunks in random order: tokens never run ahead of the table, and the end equals the model', async () => {
    const { jobs, deferredBatches, backlogs, released } = await runRandomJobs(mutationArbitrary, 120);
    // the bounds above do force jobs, and changes that wait for them (over
    // 120 random runs: 46-67 jobs and 40-54 deferring batches seen, 21-37
    // once backlogs joined the steps; 7-16 backlogs, 52-95 changes let go
    // before their job ended; a floor well below, since the seed changes
    // every run)
    expect(jobs).toBeGreaterThan(15);
    expect(deferredBatches).toBeGreaterThan(10);
    expect(backlogs).toBeGreaterThan(3);
    expect(released).toBeGreaterThan(10);
  });

  it("the same with nodes deleted and made again often: a tombstone never hides a row its token says is right", async () => {
    const { recordedTombstones } = await runRandomJobs(remakingMutationArbitrary, 120);
    // (over 120 random runs: 7-19 steps after which a tombstone hid only
    // the rows of the users it recorded; the general test above had none
    // in the run counted. On the engine before FINDINGS 58 this test failed
    // one run in three, on a token applied while a tombstone hid its pair.)
    expect(recordedTombstones).toBeGreaterThan(0);
  });

  it('the same with grants that expire: chunks write the rows and their bounds as a full computation does', async () => {
    const { jobs } = await runRandomJobs(expiringMutationArbitrary, 60);
    // (over 40 runs: 6-22 jobs, and once 4, under the floor; 60 runs keep
    // the rare seed above it)
    expect(jobs).toBeGreaterThan(5);
  });
});
