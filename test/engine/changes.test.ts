// The derived-permission change stream (sql/functions/170_changes.sql,
// src/engine/changes.ts): folding a consumer's events into its registration
// snapshot must give exactly the table, whatever the changes, crashes,
// retries and concurrent batches; with no consumer nothing is recorded.
import fc from 'fast-check';
import { IsolationLevel, type SQLQuery } from '@databases/pg';
import { afterEach, describe, expect, it } from 'vitest';
import { openPool, sql, type ConnectionPool, type Queryable } from '../../src/db/pool.ts';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { applyJobChunk } from '../../src/engine/long-job.ts';
import { runDoctor } from '../../src/app/doctor.ts';
import { ackChanges, changes, consumerStatus, dropConsumer, readChanges, registerConsumer, type PermissionChange, type Registration } from '../../src/engine/changes.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { createWorkerMetrics } from '../../src/worker/metrics.ts';
import { Worker } from '../../src/worker/worker.ts';
import * as model from '../reference/model.ts';
import type { PermissionRow, RefGraph } from '../reference/model.ts';
import { g, grant, u } from '../helpers/builders.ts';
import { collect, killWorkerMidBatch, runCli, spawnCli, waitUntil, wideGraph } from '../helpers/cli.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { EXPIRIES, graphArbitrary, loadGraph, readPermissions } from '../helpers/graph.ts';
import { createLogin } from '../helpers/logins.ts';
import { afterStaleSnapshot } from '../helpers/stale-snapshot.ts';
import { copyOf, fold, readAll, rowsOf } from '../helpers/change-stream.ts';
import { expiringMutationArbitrary, GraphState, mutationArbitrary } from '../helpers/mutations.ts';

async function eventCount(db: Queryable): Promise<number> {
  const [row] = await db.query(sql`select count(*)::int as n from permgraph.permission_changes`);
  return row.n;
}

describe('the derived-permission change stream', async () => {
  const { db, url } = await createTestDatabase();
  const cleanups: (() => Promise<void>)[] = [];

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });

  async function dropAllConsumers(): Promise<void> {
    await db.query(sql`select permgraph.drop_consumer(consumer) from permgraph.change_consumers`);
  }

  /** Loads the graph (written directly, so with no consumer registered) and refreshes. */
  async function start(graph: RefGraph): Promise<GraphState> {
    await dropAllConsumers();
    await loadGraph(db, graph);
    await refresh(db);
    return new GraphState(graph);
  }

  it('under random changes, batches, refreshes and expiries, the fold of the events equals the table and the model after every batch', async () => {
    await fc.assert(
      fc.asyncProperty(
        graphArbitrary({ users: 8, groups: 10, objects: 5, grants: 30 }, 0, true),
        fc.array(
          fc.tuple(
            expiringMutationArbitrary,
            fc.constantFrom('none', 'none', 'batch', 'batch', 'small region', 'refresh', 'ack', 'crash', 'time passes'),
          ),
          { minLength: 1, maxLength: 25 },
        ),
        async (graph, steps) => {
          const state = await start(graph);
          // Two consumers from the same snapshot: `fast` acknowledges as it goes
          // and sometimes crashes; `slow` never acknowledges until the end.
          const fast = await registerConsumer(db, 'fast', (tx) => readPermissions(tx));
          const slow = await registerConsumer(db, 'slow', (tx) => readPermissions(tx));
          expect(fast.created && slow.created).toBe(true);
          expect(slow.seq).toBe(fast.seq);
          expect(fast.snapshot).toEqual(model.computePermissions(graph));
          let copy = copyOf(fast.snapshot);
          let position = fast.seq;
          let acked = { copy: copyOf(fast.snapshot), seq: fast.seq };
          const log: string[] = [];
          // Batches compute at `clock` once time has passed (the next expiry time each time)
          let clock: Date | undefined;
          for (const [index, [mutation, step]] of steps.entries()) {
            log.push(await state.apply(db, mutation));
            const last = index === steps.length - 1;
            if (step === 'time passes') {
              clock = EXPIRIES.find((t) => !clock || t > clock) ?? clock;
              log.push(`time passes to ${clock!.toISOString()}`);
            }
            if (step === 'batch' || step === 'small region' || step === 'time passes' || last) {
              // a tiny region limit forces the full path
              await applyChanges(db, { ...(step === 'small region' ? { maxPairs: 3 } : {}), at: clock });
            } else if (step === 'refresh') {
              await refresh(db, { at: clock });
              log.push('refresh');
            } else {
              continue;
            }
            const events = await readAll(db, 'fast', position);
            fold(copy, events, log.join('; '));
            if (events.length) position = events[events.length - 1]!.seq;
            const table = await readPermissions(db);
            expect(rowsOf(copy), log.join('; ')).toEqual(table);
            expect(table, log.join('; ')).toEqual(model.computePermissions(state.snapshot(), clock));
            if (step === 'ack' && position > acked.seq) {
              await ackChanges(db, 'fast', position);
              acked = { copy: new Map(copy), seq: position };
            }
          }
          // A crash: the consumer restarts from what it had when it last acknowledged
          // and reads from its acknowledged seq: the same events again, then the rest.
          if (steps.some(([, s]) => s === 'crash')) {
            copy = new Map(acked.copy);
            const again = await readAll(db, 'fast', null);
            if (again.length) expect(again[0]!.seq).toBeGreaterThan(acked.seq);
            fold(copy, again, `after a crash: ${log.join('; ')}`);
            expect(rowsOf(copy)).toEqual(await readPermissions(db));
          }
          // The slow consumer still has every event since the snapshot.
          const slowCopy = copyOf(slow.snapshot);
          const slowEvents = await readAll(db, 'slow', null, 7);
          fold(slowCopy, slowEvents, `slow: ${log.join('; ')}`);
          expect(rowsOf(slowCopy)).toEqual(await readPermissions(db));
          // Acknowledged by both: nothing is kept.
          if (slowEvents.length) {
            const lastSeq = slowEvents[slowEvents.length - 1]!.seq;
            await ackChanges(db, 'slow', lastSeq);
            await ackChanges(db, 'fast', lastSeq);
          }
          expect(await eventCount(db)).toBe(0);
        },
      ),
      { numRuns: 80 },
    );
  });

  it('with no consumer registered, batches and refresh() record nothing', async () => {
    const state = await start({ nodes: [u('a'), u('b'), g('t')], grants: [grant('a', 2, 't')] });
    const [{ seq: before }] = await db.query(sql`select last_value as seq from permgraph.permission_changes_seq`);
    for (const m of fc.sample(mutationArbitrary, { numRuns: 30, seed: 7 })) await state.apply(db, m);
    const result = await applyChanges(db);
    expect(result.inserted + result.updated + result.deleted).toBeGreaterThan(0);
    await db.query(sql`update permgraph.permissions set level = 1 where level = 3 and user_id <> target_id`);
    expect((await refresh(db)).updated).toBeGreaterThan(0);
    expect(await readPermissions(db)).toEqual(model.computePermissions(state.snapshot()));
    expect(await eventCount(db)).toBe(0);
    const [{ seq: after }] = await db.query(sql`select last_value as seq from permgraph.permission_changes_seq`);
    expect(after).toBe(before);
    // And again after the last consumer is dropped.
    await registerConsumer(db, 'brief');
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('brief-user', 'user')`);
    await applyChanges(db);
    expect(await eventCount(db)).toBe(1);
    expect(await dropConsumer(db, 'brief')).toBe(true);
    expect(await eventCount(db)).toBe(0);
    await db.query(sql`delete from permgraph.nodes where id = 'brief-user'`);
    expect(await applyChanges(db)).toMatchObject({ mode: 'incremental', deleted: 1 });
    expect(await eventCount(db)).toBe(0);
  });

  it('refresh() records exactly the rows it repaired, with the values it found', async () => {
    await start({ nodes: [u('a'), u('b'), g('t'), g('p', 't')], grants: [grant('a', 2, 't'), grant('b', 1, 'p')] });
    const reg = await registerConsumer(db, 'repair', (tx) => readPermissions(tx));
    // Damage the table behind the engine's back (only the owner can).
    await db.query(sql`update permgraph.permissions set level = 3, traverse_owned = true where user_id = 'a' and target_id = 'p'`);
    await db.query(sql`delete from permgraph.permissions where user_id = 'b' and target_id = 'p'`);
    await db.query(sql`insert into permgraph.permissions values ('b', 't', 3, true)`);
    expect(await refresh(db)).toMatchObject({ mode: 'full', inserted: 1, updated: 1, deleted: 1 });
    const events = await readChanges(db, 'repair');
    const shape = events.map(({ op, userId, targetId, oldLevel, newLevel, oldTraverseOwned, newTraverseOwned }) => ({
      op, userId, targetId, oldLevel, newLevel, oldTraverseOwned, newTraverseOwned,
    }));
    expect(shape.sort((x, y) => model.compareIds(x.userId + x.targetId, y.userId + y.targetId))).toEqual([
      { op: 'update', userId: 'a', targetId: 'p', oldLevel: 3, newLevel: 2, oldTraverseOwned: true, newTraverseOwned: true },
      { op: 'insert', userId: 'b', targetId: 'p', oldLevel: null, newLevel: 1, oldTraverseOwned: null, newTraverseOwned: true },
      { op: 'delete', userId: 'b', targetId: 't', oldLevel: 3, newLevel: null, oldTraverseOwned: true, newTraverseOwned: null },
    ]);
    expect(events.every((e) => e.seq > reg.seq && e.committedAt instanceof Date)).toBe(true);
    // The consumer never saw the damage: its copy is right before and after.
    expect(reg.snapshot).toEqual(await readPermissions(db));
  });

  it('a consumer that crashes before acknowledging gets the same events again', async () => {
    const state = await start({ nodes: [u('a'), g('t'), ...Array.from({ length: 6 }, (_, i) => g(`p${i}`, 't'))], grants: [] });
    await registerConsumer(db, 'crashy');
    await state.apply(db, { type: 'grant', tail: 0, head: 1, level: 2, source: 'a' }); // a -> t: 7 rows
    await applyChanges(db);
    const read = async (): Promise<PermissionChange[][]> => {
      const batches: PermissionChange[][] = [];
      for await (const batch of changes(db, 'crashy', { maxEvents: 3 })) batches.push(batch.events);
      return batches;
    };
    const first = await read(); // "crashes": never acknowledges
    expect(first.map((b) => b.length)).toEqual([3, 3, 1]);
    expect(await read()).toEqual(first);
    // Acknowledge the first batch only, then crash.
    for await (const batch of changes(db, 'crashy', { maxEvents: 3 })) {
      await batch.ack();
      break;
    }
    expect(await read()).toEqual(first.slice(1));
    // Acknowledging again, or an earlier seq, changes nothing; a seq beyond the last event is refused.
    await ackChanges(db, 'crashy', first[0]![0]!.seq);
    expect(await read()).toEqual(first.slice(1));
    const lastSeq = first[2]![0]!.seq;
    await expect(ackChanges(db, 'crashy', lastSeq + 1)).rejects.toThrow(`seq ${lastSeq + 1} is beyond the last event recorded (${lastSeq})`);
    await ackChanges(db, 'crashy', lastSeq);
    expect(await read()).toEqual([]);
    expect(await eventCount(db)).toBe(0);
  });

  it('keeps events until every consumer has acknowledged them', async () => {
    const state = await start({ nodes: [u('a'), g('t')], grants: [] });
    await registerConsumer(db, 'one');
    await registerConsumer(db, 'two');
    await state.apply(db, { type: 'grant', tail: 0, head: 1, level: 1, source: 'a' });
    await applyChanges(db);
    const [event] = await readChanges(db, 'one');
    await ackChanges(db, 'one', event!.seq);
    expect(await readChanges(db, 'one')).toEqual([]);
    expect(await readChanges(db, 'two')).toEqual([event]);
    expect(await eventCount(db)).toBe(1);
    await ackChanges(db, 'two', event!.seq);
    expect(await eventCount(db)).toBe(0);
    // A consumer registered later starts after the events recorded so far.
    await state.apply(db, { type: 'grant', tail: 0, head: 1, level: 3, source: 'a' });
    await applyChanges(db);
    const late = await registerConsumer(db, 'late');
    expect(late.seq).toBe((await readChanges(db, 'one'))[0]!.seq);
    expect(await readChanges(db, 'late')).toEqual([]);
    // Dropping the consumer that holds events back prunes them.
    await ackChanges(db, 'two', late.seq);
    expect(await eventCount(db)).toBe(1);
    expect(await dropConsumer(db, 'one')).toBe(true);
    expect(await eventCount(db)).toBe(0);
    expect(await dropConsumer(db, 'one')).toBe(false);
  });

  it('a repeatable-read batch whose snapshot predates a registration commits, with the events the consumer needs', async () => {
    await start({ nodes: [u('a'), g('t')], grants: [] });
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('a', 't', 2)`);
    let reg!: Registration<PermissionRow[]>;
    // The worker's transaction: its snapshot is taken, then a consumer registers and commits.
    const batch = afterStaleSnapshot(db, sql`select permgraph.apply_changes()`, async () => {
      reg = await registerConsumer(db, 'racer', (tx) => readPermissions(tx));
    });
    // It cannot see the consumer, but learns of its registration (170_changes.sql) and records.
    await expect(batch).resolves.toBeDefined();
    const copy = copyOf(reg.snapshot);
    fold(copy, await readChanges(db, 'racer'), 'after the batch');
    expect(rowsOf(copy)).toEqual(await readPermissions(db));
    expect(await readPermissions(db)).toContainEqual({ userId: 'a', targetId: 't', level: 2, traverseOwned: true, validUntil: null });
  });

  it('a repeatable-read transaction whose snapshot predates a registration records every batch it runs, not only the first', async () => {
    await start({ nodes: [u('a'), g('t'), g('s')], grants: [] });
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('a', 't', 2)`);
    let reg!: Registration<PermissionRow[]>;
    // Two batches in one transaction (a script's, in SQL): the first learns
    // of the registration and marks it accounted for; the second must still
    // record, since its snapshot shows no consumer either.
    const batches = afterStaleSnapshot(
      db,
      sql`select permgraph.apply_changes();
          insert into permgraph.grants (tail_id, head_id, level) values ('a', 's', 1);
          select permgraph.apply_changes();`,
      async () => {
        reg = await registerConsumer(db, 'twice', (tx) => readPermissions(tx));
      },
    );
    await expect(batches).resolves.toBeDefined();
    const copy = copyOf(reg.snapshot);
    fold(copy, await readChanges(db, 'twice'), 'after both batches');
    expect(await readPermissions(db)).toContainEqual({ userId: 'a', targetId: 's', level: 1, traverseOwned: true, validUntil: null });
    expect(rowsOf(copy)).toEqual(await readPermissions(db));
  });

  it('events recorded for a registration that rolled back are deleted by the next batch, and a registration racing that batch gets its events', async () => {
    await start({ nodes: [u('a'), g('t1'), g('t2'), g('t3'), g('t4')], grants: [] });
    const rolledBack = async (name: string): Promise<void> => {
      await expect(
        db.tx(async (tx) => {
          await tx.query(sql`select permgraph.register_consumer(${name})`);
          throw new Error('roll back');
        }),
      ).rejects.toThrow('roll back');
    };
    const grantTo = (head: string) => db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('a', ${head}, 2)`);
    const repeatableReadBatch = () => db.tx((tx) => tx.query(sql`select permgraph.apply_changes()`), { isolationLevel: IsolationLevel.REPEATABLE_READ });
    // A repeatable-read batch cannot tell a rolled-back registration from one
    // its snapshot hides: it records (170_changes.sql).
    await rolledBack('ghost');
    await grantTo('t1');
    await repeatableReadBatch();
    expect(await eventCount(db)).toBe(1);
    // The next batch deletes them, even while a registration commits after
    // its snapshot (whose own deletion of them the batch then yields to), and
    // records what that consumer is owed.
    await grantTo('t2');
    let reg!: Registration<PermissionRow[]>;
    await expect(
      afterStaleSnapshot(db, sql`select permgraph.apply_changes()`, async () => {
        reg = await registerConsumer(db, 'late', (tx) => readPermissions(tx));
      }),
    ).resolves.toBeDefined();
    const copy = copyOf(reg.snapshot);
    fold(copy, await readChanges(db, 'late'), 'after the racing batch');
    expect(rowsOf(copy)).toEqual(await readPermissions(db));
    expect(await dropConsumer(db, 'late')).toBe(true);
    expect(await eventCount(db)).toBe(0);
    // Rolled back again: what the batch after it records is gone after the
    // next batch, whatever its isolation, with no consumer ever registered.
    await rolledBack('ghost');
    await grantTo('t3');
    await repeatableReadBatch();
    expect(await eventCount(db)).toBe(1);
    await grantTo('t4');
    await applyChanges(db);
    expect(await readPermissions(db)).toContainEqual({ userId: 'a', targetId: 't4', level: 2, traverseOwned: true, validUntil: null });
    expect(await eventCount(db)).toBe(0);
  });

  it('a repeatable-read registration whose snapshot predates a batch fails rather than return a stale snapshot', async () => {
    await start({ nodes: [u('a'), g('t')], grants: [] });
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('a', 't', 2)`);
    const registration = afterStaleSnapshot(db, sql`select permgraph.register_consumer('stale')`, () => applyChanges(db));
    await expect(registration).rejects.toMatchObject({ code: '40001' });
    expect(await db.query(sql`select * from permgraph.change_consumers`)).toEqual([]);
  });

  it("a repeatable-read registration of an existing consumer whose snapshot predates a batch fails too: another reader may have acknowledged the batch's events", async () => {
    await start({ nodes: [u('a'), g('t'), g('s')], grants: [grant('a', 1, 's')] });
    await registerConsumer(db, 'shared');
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('a', 't', 2)`);
    const registration = afterStaleSnapshot(db, sql`select permgraph.register_consumer('shared')`, async () => {
      await applyChanges(db);
      // a second reader of the same consumer takes the batch's events and acknowledges them
      const events = await readChanges(db, 'shared');
      expect(events).toHaveLength(1);
      await ackChanges(db, 'shared', events[0]!.seq);
    });
    // (the stale snapshot's table lacks a -> t, and no event after the seq it would return holds it)
    await expect(registration).rejects.toMatchObject({ code: '40001' });
    await dropConsumer(db, 'shared');
  });

  it("a repeatable-read registration whose snapshot predates a long job's chunk fails too", async () => {
    // (no consumer: the chunk records no event, so a snapshot without its rows would stay wrong)
    const members = Array.from({ length: 6 }, (_, i) => u(`m${i}`));
    await start({ nodes: [...members, g('team'), g('parent'), ...Array.from({ length: 6 }, (_, i) => g(`p${i}`, 'parent'))], grants: members.map((m) => grant(m.id, 2, 'team')) });
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('team', 'parent', 1)`);
    expect(await applyChanges(db, { chunkPairs: 10 })).toMatchObject({ toLongJob: 1 });
    const registration = afterStaleSnapshot(db, sql`select permgraph.register_consumer('stale')`, () => applyJobChunk(db));
    await expect(registration).rejects.toMatchObject({ code: '40001' });
    expect(await db.query(sql`select * from permgraph.change_consumers`)).toEqual([]);
    await refresh(db);
  });

  it('names are validated; unknown consumers and bad arguments are refused with clear errors', async () => {
    await dropAllConsumers();
    for (const bad of ['', 'has space', '-leading', 'x'.repeat(64), 'semi;colon']) {
      await expect(registerConsumer(db, bad)).rejects.toThrow(/a consumer name is 1 to 63 letters, digits/);
    }
    await expect(registerConsumer(db, 'ok')).resolves.toMatchObject({ created: true });
    const again = await registerConsumer(db, 'ok');
    expect(again).toMatchObject({ created: false });
    await expect(readChanges(db, 'missing')).rejects.toThrow('no change consumer named "missing"');
    await expect(readChanges(db, 'missing')).rejects.toBeInstanceOf(InvalidInputError);
    // (its own SQLSTATE, undefined_object, which the CLI's advice to --register goes by)
    await expect(readChanges(db, 'missing')).rejects.toMatchObject({ sqlState: '42704' });
    await expect(ackChanges(db, 'missing', 1)).rejects.toThrow('no change consumer named "missing"');
    await expect(ackChanges(db, 'missing', 1)).rejects.toMatchObject({ sqlState: '42704' });
    await expect(readChanges(db, 'ok', { maxEvents: 0 })).rejects.toThrow('max_events must be between 1 and 1000000, got 0');
    await expect(db.query(sql`select permgraph.ack_changes('ok', null)`)).rejects.toThrow('seq must not be null');
    // (a timer holds at most 2^31 - 1 ms: Node fires a longer one at once, and the reader polled in a loop)
    await expect(changes(db, 'ok', { follow: true, pollIntervalMs: 2 ** 31 }).next()).rejects.toThrow(
      new InvalidInputError('pollIntervalMs must be a whole number of milliseconds from 1 to 2147483647 (about 24 days), got 2147483648'),
    );
    expect(await dropConsumer(db, 'ok')).toBe(true);
  });

  it('of two concurrent registrations of one name, one creates the consumer and the other finds it', async () => {
    await dropAllConsumers();
    for (let round = 0; round < 5; round++) {
      const both = await Promise.all([registerConsumer(db, `race-${round}`), registerConsumer(db, `race-${round}`)]);
      expect(both.map((r) => r.created).sort()).toEqual([false, true]);
      expect(both[0].seq).toBe(both[1].seq);
    }
    await dropAllConsumers();
  });

  it('every role may consume; no role can write the stream\'s tables', async () => {
    await start({ nodes: [u('a'), g('t')], grants: [] });
    for (const role of ['permgraph_reader', 'permgraph_writer', 'permgraph_worker']) {
      const login = await createLogin(db, url, role.replace('permgraph_', ''), role);
      const name = `by-${role}`;
      const reg = await registerConsumer(login.db, name, (tx) => readPermissions(tx));
      await db.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('a', 't', 1, ${role})`);
      await applyChanges(db);
      const events = await readChanges(login.db, name);
      const copy = copyOf(reg.snapshot);
      fold(copy, events, role);
      expect(rowsOf(copy)).toEqual(await readPermissions(db));
      await ackChanges(login.db, name, events[events.length - 1]!.seq);
      for (const attack of [
        sql`insert into permgraph.permission_changes (user_id, target_id, new_level) values ('a', 'x', 3)`,
        sql`delete from permgraph.permission_changes`,
        sql`update permgraph.change_consumers set acked_seq = 0`,
        sql`insert into permgraph.change_consumers (consumer, acked_seq) values ('forged', 0)`,
      ]) {
        await expect(login.db.query(attack), role).rejects.toMatchObject({ code: '42501' });
      }
      expect(await dropConsumer(login.db, name)).toBe(true);
      await db.query(sql`delete from permgraph.grants where source = ${role}`);
      await applyChanges(db);
    }
  });

  it('a consumer belongs to the login that registered it: other logins may not use it; members of its role and the schema owner may', async () => {
    await start({ nodes: [u('a'), g('t')], grants: [] });
    const owner = await createLogin(db, url, 'feed_owner', 'permgraph_reader');
    const other = await createLogin(db, url, 'feed_other', 'permgraph_reader');
    const member = await createLogin(db, url, 'feed_member', 'permgraph_reader');
    await db.query(sql`grant ${sql.ident(owner.name)} to ${sql.ident(member.name)}`);
    await registerConsumer(owner.db, 'owned-feed');
    expect(await db.query(sql`select owner_role::text from permgraph.change_consumers where consumer = 'owned-feed'`)).toEqual([{ owner_role: owner.name }]);
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('a', 't', 1)`);
    await applyChanges(db);
    // (a PermissionDeniedError: callers catch PermgraphError, and the SQLSTATE stays in code)
    const refused = { name: 'PermissionDeniedError', code: '42501', message: `change consumer "owned-feed" belongs to role ${owner.name}; ${other.name} may not use it` };
    await expect(readChanges(other.db, 'owned-feed')).rejects.toMatchObject(refused);
    await expect(ackChanges(other.db, 'owned-feed', 1)).rejects.toMatchObject(refused);
    await expect(registerConsumer(other.db, 'owned-feed')).rejects.toMatchObject(refused);
    await expect(dropConsumer(other.db, 'owned-feed')).rejects.toMatchObject(refused);
    // nothing moved: the owner still reads its one event
    const events = await readChanges(owner.db, 'owned-feed');
    expect(events.map((e) => [e.userId, e.targetId, e.newLevel])).toEqual([['a', 't', 1]]);
    // a member of the owner's role may use it; so may the schema's owner
    await expect(registerConsumer(member.db, 'owned-feed')).resolves.toMatchObject({ created: false });
    await ackChanges(member.db, 'owned-feed', events[0]!.seq);
    expect(await readChanges(owner.db, 'owned-feed')).toEqual([]);
    await expect(readChanges(db, 'owned-feed')).resolves.toEqual([]);
    // a consumer registered before owners existed is everyone's
    await db.query(sql`update permgraph.change_consumers set owner_oid = null, owner_role = null where consumer = 'owned-feed'`);
    await expect(readChanges(other.db, 'owned-feed')).resolves.toEqual([]);
    expect(await dropConsumer(db, 'owned-feed')).toBe(true);

    // a role dropped and created again under the same name is another role:
    // its consumers are left to the schema's owner
    const gone = await createLogin(db, url, 'feed_gone', 'permgraph_reader');
    await registerConsumer(gone.db, 'orphaned-feed');
    await gone.db.dispose();
    await db.query(sql`drop role ${sql.ident(gone.name)}`);
    await db.query(sql`create role ${sql.ident(gone.name)} login password 'permgraph-test-login' in role permgraph_reader`);
    const reborn = openPool(gone.url, { poolSize: 1 });
    try {
      await expect(readChanges(reborn, 'orphaned-feed')).rejects.toMatchObject({
        code: '42501',
        message: `change consumer "orphaned-feed" belongs to role ${gone.name} (dropped); ${gone.name} may not use it`,
      });
      await expect(dropConsumer(reborn, 'orphaned-feed')).rejects.toMatchObject({ code: '42501' });
    } finally {
      await reborn.dispose();
    }
    expect(await dropConsumer(db, 'orphaned-feed')).toBe(true);
  });

  it("status, doctor and the worker's metrics show each consumer's backlog: events waiting and the age of the oldest", async () => {
    await start({ nodes: [u('a'), u('b'), g('t')], grants: [] });
    const [{ login }] = await db.query(sql`select session_user::text as login`);
    const behind = await registerConsumer(db, 'behind'); // never acknowledges
    await registerConsumer(db, 'current');
    for (const [user, level] of [['a', 1], ['b', 2]] as const) {
      await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values (${user}, 't', ${level})`);
      await applyChanges(db);
    }
    // two rows of the table appeared since the registrations: two events wait
    const events = await readChanges(db, 'behind');
    expect(events.map((e) => [e.op, e.userId, e.targetId, e.newLevel]).sort()).toEqual([['insert', 'a', 't', 1], ['insert', 'b', 't', 2]]);
    const lastSeq = Math.max(...events.map((e) => e.seq));
    await ackChanges(db, 'current', lastSeq);
    // the older of them an hour and a half old
    await db.query(sql`update permgraph.permission_changes set committed_at = now() - interval '90 minutes' where seq = ${Math.min(...events.map((e) => e.seq))}`);

    // (no batch rolled back here, so the lag in seqs is the events waiting)
    const status = await consumerStatus(db);
    expect(status.map(({ consumer, ownerRole, ackedSeq, lagEvents }) => ({ consumer, ownerRole, ackedSeq, lagEvents }))).toEqual([
      { consumer: 'behind', ownerRole: login, ackedSeq: behind.seq, lagEvents: 2 },
      { consumer: 'current', ownerRole: login, ackedSeq: lastSeq, lagEvents: 0 },
    ]);
    expect(status[0]!.oldestWaitingAgeS).toBeGreaterThanOrEqual(5400);
    expect(status[0]!.oldestWaitingAgeS).toBeLessThan(5400 + 600);
    expect(status[1]!.oldestWaitingAgeS).toBeNull();
    const [{ whole }] = await db.query(sql`select permgraph.status() as whole`);
    expect(whole.change_consumers.map((c: { consumer: string; lag_events: number }) => [c.consumer, c.lag_events])).toEqual([['behind', 2], ['current', 0]]);

    const stream = async (maxConsumerLagSeconds?: number) => (await runDoctor(db, { maxConsumerLagSeconds })).find((c) => c.name === 'stream');
    expect(await stream()).toMatchObject({
      status: 'warn',
      message: expect.stringMatching(new RegExp(`^change stream consumer\\(s\\) over 3600 s behind: "behind" \\(${login}\\): 2 event\\(s\\) behind, the oldest waiting 54\\d\\d\\.\\d s\\. .*--drop`)),
    });
    expect(await stream(7200)).toMatchObject({ status: 'ok', message: expect.stringMatching(/^2 change stream consumer\(s\); furthest behind "behind"/) });

    // the two consumer gauges share one read of change_stream_status() per scrape
    const reads: string[] = [];
    const counted = { query: (query: Parameters<typeof db.query>[0]) => (reads.push(JSON.stringify(query)), db.query(query)) } as typeof db;
    const metrics = createWorkerMetrics(new Worker({ url, listen: false }), counted);
    const text = await metrics.metrics();
    expect(reads.filter((r) => r.includes('change_stream_status')).length).toBe(1);
    expect(reads.filter((r) => r.includes('permgraph.long_job j')).length).toBe(1);
    expect(text).toMatch(/^permgraph_change_stream_lag_events\{consumer="behind"\} 2$/m);
    expect(text).toMatch(/^permgraph_change_stream_lag_events\{consumer="current"\} 0$/m);
    expect(text).toMatch(/^permgraph_change_stream_oldest_waiting_age_seconds\{consumer="behind"\} 54\d\d(\.\d+)?$/m);
    expect(text).toMatch(/^permgraph_change_stream_oldest_waiting_age_seconds\{consumer="current"\} 0$/m);

    await dropConsumer(db, 'behind');
    await dropConsumer(db, 'current');
    expect(await consumerStatus(db)).toEqual([]);
    expect(await stream()).toEqual({ name: 'stream', status: 'ok', message: 'no change stream consumers' });
    expect(await metrics.metrics()).not.toMatch(/consumer="/);
    expect(reads.filter((r) => r.includes('change_stream_status')).length).toBe(2); // a new scrape, a new read
  });

  it('a follower is woken by the batch that recorded events, and its fold stays equal to the table', async () => {
    const graph = fc.sample(graphArbitrary({ users: 10, groups: 12, objects: 5, grants: 40 }, 0.5), { numRuns: 1, seed: 42 })[0]!;
    const state = await start(graph);
    const reg = await registerConsumer(db, 'follower', (tx) => readPermissions(tx));
    const worker = new Worker({ url, pollIntervalMs: 100 });
    await worker.start();
    cleanups.push(() => worker.stop());
    const copy = copyOf(reg.snapshot);
    const stop = new AbortController();
    let received = 0;
    // Polling only once a minute: only the NOTIFY of a batch can wake it in time.
    const following = (async () => {
      for await (const batch of changes(db, 'follower', { follow: true, url, pollIntervalMs: 60_000, signal: stop.signal })) {
        fold(copy, batch.events, 'follower');
        received += batch.events.length;
        await batch.ack();
      }
    })();
    for (const m of fc.sample(mutationArbitrary, { numRuns: 40, seed: 3 })) await state.apply(db, m);
    const expected = model.computePermissions(state.snapshot());
    await waitUntil(async () => JSON.stringify(rowsOf(copy)) === JSON.stringify(expected), 'the follower to catch up');
    expect(received).toBeGreaterThan(0);
    expect(await readPermissions(db)).toEqual(expected);
    stop.abort();
    await following; // ends on abort
    expect(await eventCount(db)).toBe(0);
  });

  it.each([
    ['a lost connection', () => new Error('Connection terminated unexpectedly')],
    // (as a read or an acknowledgment fails on a database whose default isolation is serializable)
    ['a serialization failure', () => Object.assign(new Error('could not serialize access due to read/write dependencies among transactions'), { code: '40001' })],
  ])('a follower outlives %s while reading and while acknowledging, and acknowledges everything it received', async (_what, failure) => {
    const graph = fc.sample(graphArbitrary({ users: 8, groups: 10, objects: 5, grants: 30 }, 0.5), { numRuns: 1, seed: 7 })[0]!;
    const state = await start(graph);
    const reg = await registerConsumer(db, 'flaky', (tx) => readPermissions(tx));
    // Every other read and every other acknowledgment of the stream fails as
    // `failure` (node-pg's own error for a dropped connection), before reaching the server.
    const calls = { read: 0, ack: 0 };
    const flaky = new Proxy(db, {
      get(target, key, receiver) {
        if (key !== 'query') return Reflect.get(target, key, receiver);
        return async (query: SQLQuery) => {
          const text = JSON.stringify(query);
          const kind = text.includes('ack_changes') ? 'ack' : text.includes('read_changes') ? 'read' : undefined;
          if (kind && calls[kind]++ % 2 === 0) throw failure();
          return target.query(query);
        };
      },
    }) as Queryable;
    const copy = copyOf(reg.snapshot);
    const stop = new AbortController();
    const following = (async () => {
      for await (const batch of changes(flaky, 'flaky', { follow: true, pollIntervalMs: 20, maxEvents: 5, signal: stop.signal })) {
        fold(copy, batch.events, 'flaky');
        await batch.ack();
      }
    })();
    for (const m of fc.sample(mutationArbitrary, { numRuns: 15, seed: 11 })) {
      await state.apply(db, m);
      await applyChanges(db);
    }
    const expected = model.computePermissions(state.snapshot());
    await waitUntil(async () => JSON.stringify(rowsOf(copy)) === JSON.stringify(expected), 'the follower to catch up');
    await waitUntil(async () => (await eventCount(db)) === 0, 'every event to be acknowledged');
    stop.abort();
    await following; // ends on abort, having thrown nothing
    expect(calls.ack).toBeGreaterThan(1);
    expect(calls.read).toBeGreaterThan(1);
  });

  it('a follower whose pool was closed under it throws, while reading and while acknowledging, instead of retrying forever', async () => {
    const state = await start({ nodes: [u('ann'), g('docs')], grants: [] });
    await registerConsumer(db, 'closed');
    // Waiting for events when its pool is closed (an application shutting down).
    const waiting = await openPool(url);
    const reading = (async () => {
      for await (const batch of changes(waiting, 'closed', { follow: true, url, pollIntervalMs: 20 })) await batch.ack();
    })();
    await waitUntil(async () => {
      const rows = await db.query(sql`select 1 from pg_stat_activity where datname = current_database() and query like 'LISTEN %'`);
      return rows.length > 0;
    }, 'the follower to LISTEN');
    await waiting.dispose();
    await expect(reading).rejects.toThrow(/disposed/);
    // Holding a batch when its pool is closed: the acknowledgment fails for good.
    await state.apply(db, { type: 'grant', tail: 0, head: 1, level: 1, source: 'a' });
    await applyChanges(db);
    const holding = await openPool(url);
    const acknowledging = (async () => {
      for await (const batch of changes(holding, 'closed', { follow: true, pollIntervalMs: 20 })) {
        await holding.dispose();
        await batch.ack();
      }
    })();
    await expect(acknowledging).rejects.toThrow(/disposed/);
    // Nothing was acknowledged: the events wait for the consumer's next reader.
    expect((await readChanges(db, 'closed')).length).toBeGreaterThan(0);
  });

  describe('permgraph changes', () => {
    const cli = (...args: string[]) => runCli(['--database-url', url, ...args]);

    it('prints events (JSON lines with --json) and acknowledges them; --register and --drop', async () => {
      const state = await start({ nodes: [u('ann'), g('docs'), g('specs', 'docs')], grants: [] });
      const missing = await cli('changes', '--consumer', 'cli');
      expect(missing.code).toBe(1);
      // what to do, in the command line's terms (the SQL side's hint names its function)
      expect(missing.stderr).toBe('permgraph: no change consumer named "cli": register it with --register (a new consumer starts with the changes after now)\n');
      expect(JSON.parse((await cli('--json', 'changes', '--consumer', 'cli')).stderr)).toMatchObject({ error: { code: 'invalid_input', sqlState: '42704' } });
      const registered = await cli('changes', '--consumer', 'cli', '--register');
      expect(registered).toMatchObject({ code: 0, stdout: 'no new changes for consumer cli\n' });
      expect(registered.stderr).toMatch(/^permgraph: registered consumer cli at seq \d+\n$/);
      await state.apply(db, { type: 'grant', tail: 0, head: 1, level: 2, source: 'a' });
      await applyChanges(db);
      const json = await cli('changes', '--consumer', 'cli', '--json', '--max-events', '1');
      expect(json.code).toBe(0);
      // in seq order; the order of the rows within one batch is arbitrary
      const lines = json.stdout.trimEnd().split('\n').map((line) => JSON.parse(line));
      expect(lines.map((l) => l.seq)).toEqual([...lines.map((l) => l.seq)].sort((a, b) => a - b));
      lines.sort((a, b) => model.compareIds(a.targetId, b.targetId));
      expect(lines.map(({ op, userId, targetId, newLevel, newTraverseOwned }) => ({ op, userId, targetId, newLevel, newTraverseOwned }))).toEqual([
        { op: 'insert', userId: 'ann', targetId: 'docs', newLevel: 2, newTraverseOwned: true },
        { op: 'insert', userId: 'ann', targetId: 'specs', newLevel: 2, newTraverseOwned: true },
      ]);
      expect(Object.keys(lines[0]).sort()).toEqual([
        'committedAt', 'newLevel', 'newTraverseOwned', 'newValidUntil', 'oldLevel', 'oldTraverseOwned', 'oldValidUntil', 'op', 'seq', 'targetId', 'userId',
      ]);
      expect((await cli('changes', '--consumer', 'cli', '--json')).stdout).toBe('');
      await state.apply(db, { type: 'grant', tail: 0, head: 1, level: 1, source: 'a' });
      await applyChanges(db);
      // status lists the consumer and the two events waiting for it
      const [{ login }] = await db.query(sql`select session_user::text as login`);
      const status = (await cli('status')).stdout;
      expect(status).toContain('\nchange stream:    1 consumer(s)\n');
      expect(status).toMatch(new RegExp(`^  cli \\(${login}\\): 2 event\\(s\\) behind, the oldest waiting \\d+\\.\\d s, acknowledged up to seq \\d+$`, 'm'));
      const human = await cli('changes', '--consumer', 'cli');
      expect(human.stdout.trimEnd().split('\n').map((line) => line.replace(/^\d+ /, '')).sort()).toEqual([
        'update ann -> docs: level 2 -> 1, traverse_owned true -> true',
        'update ann -> specs: level 2 -> 1, traverse_owned true -> true',
      ]);
      expect(await cli('changes', '--consumer', 'cli', '--drop')).toMatchObject({ code: 0, stdout: 'dropped consumer cli\n' });
      expect((await cli('status')).stdout).toContain('\nchange stream:    no consumers\n');
      expect((await cli('changes', '--consumer', 'bad name')).stderr).toMatch(/^permgraph: a consumer name is 1 to 63 letters/);
      // flags that cannot go together, and a read larger than the server allows (past an integer: not PostgreSQL's out-of-range error)
      expect(await cli('changes', '--consumer', 'cli', '--register', '--drop')).toMatchObject({
        code: 2, stderr: 'permgraph: --drop cannot be combined with --register: it drops the consumer and exits\n',
      });
      expect(await cli('changes', '--consumer', 'cli', '--max-events', '99999999999')).toMatchObject({
        code: 2, stderr: 'permgraph: --max-events must be at most 1000000, got "99999999999"\n',
      });
      await expect(readChanges(db, 'cli', { maxEvents: 99_999_999_999 })).rejects.toThrow(new InvalidInputError('max_events must be between 1 and 1000000, got 99999999999'));
    });

    it("another login's consumer: the refusal says what to do, as the server's hint words it", async () => {
      await start({ nodes: [u('ann')], grants: [] });
      const owner = await createLogin(db, url, 'cli_feed_owner', 'permgraph_reader');
      const other = await createLogin(db, url, 'cli_feed_other', 'permgraph_reader');
      await registerConsumer(owner.db, 'owned-cli');
      const refused = await runCli(['--database-url', other.url, 'changes', '--consumer', 'owned-cli']);
      expect(refused).toMatchObject({ code: 1, stdout: '' });
      expect(refused.stderr).toBe(
        `permgraph: change consumer "owned-cli" belongs to role ${owner.name}; ${other.name} may not use it: ` +
          'connect as that role (or a member of it), or register a consumer of your own\n',
      );
      const json = JSON.parse((await runCli(['--database-url', other.url, '--json', 'changes', '--consumer', 'owned-cli', '--drop'])).stderr);
      expect(json.error).toMatchObject({ code: 'database', sqlState: '42501' });
      expect(json.error.message).toMatch(/may not use it: connect as that role \(or a member of it\), or register a consumer of your own$/);
      expect(await dropConsumer(owner.db, 'owned-cli')).toBe(true);
    });

    it('--follow prints what batches commit until SIGTERM, then exits 0 having acknowledged it', async () => {
      const state = await start({ nodes: [u('ann'), g('docs')], grants: [] });
      await registerConsumer(db, 'tail');
      const child = spawnCli(['--database-url', url, 'changes', '--consumer', 'tail', '--follow', '--json', '--poll-interval', '60000']);
      const done = collect(child);
      let stdout = '';
      child.stdout!.on('data', (chunk) => (stdout += chunk));
      await waitUntil(async () => {
        const rows = await db.query(sql`select 1 from pg_stat_activity where datname = current_database() and application_name = 'permgraph-changes'`);
        return rows.length > 0;
      }, 'the follower to LISTEN');
      await state.apply(db, { type: 'grant', tail: 0, head: 1, level: 3, source: 'a' });
      await applyChanges(db);
      await waitUntil(async () => stdout.includes('"targetId":"docs"'), 'the event to be printed');
      await waitUntil(async () => (await eventCount(db)) === 0, 'the acknowledgement');
      child.kill('SIGTERM');
      const result = await done;
      expect(result.code).toBe(0);
      expect(JSON.parse(result.stdout.trim())).toMatchObject({ op: 'insert', userId: 'ann', targetId: 'docs', newLevel: 3 });
    });
  });
});

describe('the change stream when the worker is killed mid-batch', async () => {
  const { db, url } = await createTestDatabase();

  it('SIGKILL of a CLI worker leaves all of a batch\'s events or none, and the fold equals the table after a restart', async () => {
    const graph = wideGraph(300, 300);
    await loadGraph(db, graph);
    await refresh(db);
    const reg = await registerConsumer(db, 'survivor', (tx) => readPermissions(tx));
    // Revoking the team's grants: a batch of 90,000 deleted rows (and as many events) to be killed in.
    await db.query(sql`delete from permgraph.grants where tail_id = 'team'`);
    const after = { nodes: graph.nodes, grants: graph.grants.filter((x) => x.tailId !== 'team') };
    await killWorkerMidBatch(db, url);
    // Whatever committed, the events committed with it: the fold equals the table.
    const copy = copyOf(reg.snapshot);
    const events = await readAll(db, 'survivor', null);
    fold(copy, events, 'after the kill');
    const table = await readPermissions(db);
    expect(rowsOf(copy)).toEqual(table);
    expect([0, reg.snapshot.length - table.length]).toContain(events.length);
    const restarted = await runCli(['--database-url', url, 'worker', '--once']);
    expect(restarted.code).toBe(0);
    fold(copy, await readAll(db, 'survivor', events.length ? events[events.length - 1]!.seq : null), 'after the restart');
    expect(rowsOf(copy)).toEqual(await readPermissions(db));
    expect(rowsOf(copy)).toEqual(model.computePermissions(after));
  });
});
