// Freshness tokens on the primary: when is_applied() turns true, for writers
// that are still running, commit late, or capture nothing, and as seen from
// an older snapshot. (On a standby: test/replica/.)
import { describe, expect, it } from 'vitest';
import { IsolationLevel } from '@databases/pg';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { applyChanges } from '../../src/engine/apply.ts';
import { currentToken, isApplied } from '../../src/engine/freshness.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { createTestDatabase } from '../helpers/database.ts';

describe('freshness tokens', async () => {
  const { db } = await createTestDatabase();
  await db.query(sql`insert into permgraph.nodes (id, kind) values ('alice', 'user'), ('bob', 'user'), ('eng', 'group'), ('ops', 'group')`);
  await applyChanges(db);

  /**
   * Opens a transaction that grants `tail` on `head` and returns its token
   * while it is still open; commit() or rollback() ends it.
   */
  async function openWriter(tail: string, head: string) {
    let finish!: (commit: boolean) => void;
    const decided = new Promise<boolean>((resolve) => (finish = resolve));
    let started!: (token: string) => void;
    const token = new Promise<string>((resolve) => (started = resolve));
    const done = db
      .tx(async (tx) => {
        await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values (${tail}, ${head}, 1)`);
        started(await currentToken(tx));
        if (!(await decided)) throw new Error('rolled back');
      })
      .catch((error: Error) => {
        if (error.message !== 'rolled back') throw error;
      });
    return {
      token: await token,
      commit: async () => (finish(true), done),
      rollback: async () => (finish(false), done),
    };
  }

  const grantsOf = (tx: Queryable, tail: string) => tx.query(sql`select head_id from permgraph.grants where tail_id = ${tail}`);

  it('is false while the writer runs, until a batch after its commit has applied it', async () => {
    const writer = await openWriter('alice', 'eng');
    expect(await isApplied(db, writer.token)).toBe(false); // its change rows are not visible yet
    await applyChanges(db);
    expect(await isApplied(db, writer.token)).toBe(false);
    await writer.commit();
    expect(await isApplied(db, writer.token)).toBe(false);
    await applyChanges(db);
    expect(await isApplied(db, writer.token)).toBe(true);
  });

  it('a writer that commits after a batch took its snapshot waits for the next batch, whatever its id', async () => {
    const late = await openWriter('bob', 'eng');
    const early = await db.tx(async (tx) => {
      await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('bob', 'ops', 2)`);
      return currentToken(tx);
    });
    expect(BigInt(late.token) < BigInt(early)).toBe(true);
    await applyChanges(db);
    expect(await isApplied(db, early)).toBe(true);
    expect(await isApplied(db, late.token)).toBe(false);
    await late.commit();
    expect(await isApplied(db, late.token)).toBe(false);
    await applyChanges(db);
    expect(await isApplied(db, late.token)).toBe(true);
  });

  it('a transaction that captured nothing is applied once it has committed; one rolled back, at once', async () => {
    const pending = await openWriter('alice', 'ops');
    await pending.commit(); // a change is pending: the next tokens do not wait for it
    const idle = await db.tx(async (tx) => {
      await grantsOf(tx, 'alice');
      return currentToken(tx);
    });
    expect(await isApplied(db, idle)).toBe(true);
    const rolledBack = await openWriter('bob', 'alice');
    await rolledBack.rollback();
    expect(await isApplied(db, rolledBack.token)).toBe(true);
    expect(await isApplied(db, pending.token)).toBe(false);
    await applyChanges(db);
    expect(await isApplied(db, pending.token)).toBe(true);
  });

  it('answers as of the caller\'s snapshot', async () => {
    await db.tx(
      async (old) => {
        await grantsOf(old, 'bob'); // takes the snapshot
        const writer = await openWriter('alice', 'bob');
        await writer.commit();
        await applyChanges(db);
        expect(await isApplied(db, writer.token)).toBe(true);
        expect(await isApplied(old, writer.token)).toBe(false); // that snapshot sees neither the write nor the batch
      },
      { isolationLevel: IsolationLevel.REPEATABLE_READ },
    );
  });

  it('a token from the future is not applied; a malformed one is an InvalidInputError', async () => {
    const [{ next }] = await db.query(sql`select (pg_snapshot_xmax(pg_current_snapshot())::text::numeric + 1000000)::text as next`);
    expect(await isApplied(db, next)).toBe(false);
    await expect(isApplied(db, 'not-a-token')).rejects.toThrow(InvalidInputError);
    await expect(isApplied(db, 'not-a-token')).rejects.toThrow(/"not-a-token" is not a freshness token/);
    // what the input of xid8 read as numbers before PostgreSQL 16 (0, 12, a
    // wrapped -5, 42, 16, the largest id), so that is_applied answered them
    for (const malformed of ['12abc', '-5', ' 42', '0x10', '18446744073709551616', '99999999999999999999999']) {
      await expect(isApplied(db, malformed), malformed).rejects.toThrow(InvalidInputError);
    }
  });
});
