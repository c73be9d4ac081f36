// A migrate that gives way to transactions holding the locks it needs
// (src/migrations/migrate.ts) tries again for up to its patience: when that
// runs out it must say so in a class of its own, which a caller can tell
// from any other failure (it used to be a plain PermgraphError), and a
// caller must be able to stop it meanwhile (its own shutdown: it used to
// try for 5 minutes whatever happened). Either way, nothing changed.
//
// Here a transaction that has read nodes (or grants) stays open, as a
// worker's long batch does, while an upgrade is pending: 140_audit.sql,
// which re-creates triggers of nodes and grants, so migrate must lock both
// first (grants, then nodes).
// Every wait below ends on what migrate did (it settled, or it gave way
// once or twice more than it should have), never on a duration.
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { Permgraph } from '../../src/client.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import { InvalidInputError, MigrationLockTimeoutError } from '../../src/errors.ts';
import { migrate } from '../../src/migrations/migrate.ts';
import { earlierFunctionChecksum } from '../helpers/function-versions.ts';
import { cleanUpAfter } from '../helpers/cleanup.ts';
import { until } from '../helpers/cluster.ts';
import { createTestDatabase } from '../helpers/database.ts';

const settle = <T>(promise: Promise<T>) => promise.then((result) => ({ result }), (error: unknown) => ({ error }));

/** A logger that counts migrate's "gave way" lines; `nth(n)` resolves once it has logged n of them, after calling `onGaveWay`. */
function gaveWayLog(onGaveWay: (count: number) => void = () => {}) {
  let count = 0;
  const waiting: { n: number; resolve: () => void }[] = [];
  const logger = pino({ level: 'warn' }, {
    write: (line: string) => {
      if (!(JSON.parse(line) as { msg: string }).msg.startsWith('migrate gave way')) return;
      count++;
      onGaveWay(count);
      for (const w of waiting) if (count >= w.n) w.resolve();
    },
  });
  const nth = (n: number) => new Promise<void>((resolve) => (count >= n ? resolve() : waiting.push({ n, resolve })));
  return { logger, nth, count: () => count };
}

describe('migrate giving way to locks', async () => {
  const { db, url } = await createTestDatabase();
  const holderPool = openPool(url, { poolSize: 1 });
  cleanUpAfter(() => holderPool.dispose());

  /** What an upgrade would change: the file's recorded checksum, and the triggers of nodes and grants (re-created by it). */
  const schema = async () =>
    db.query(sql`
      select (select checksum from permgraph.function_files where name = '140_audit.sql') as checksum,
             (select array_agg(t.oid::text order by t.oid) from pg_trigger t
              where t.tgrelid in ('permgraph.nodes'::regclass, 'permgraph.grants'::regclass)) as triggers`);

  /** An upgrade pending (as after installing a newer release), the schema as it is before it, and a transaction that has read `table`, open until release(). */
  async function upgradeHeldUp(table: 'nodes' | 'grants' = 'nodes') {
    await db.query(sql`update permgraph.function_files set checksum = ${await earlierFunctionChecksum('140_audit.sql')} where name = '140_audit.sql'`);
    const before = await schema();
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const held = holderPool.tx(async (tx) => {
      await tx.query(sql`select count(*) from ${sql.ident('permgraph', table)}`);
      await released;
    });
    cleanUpAfter(async () => {
      release();
      await held;
    });
    await until(`the transaction has read ${table}`, async () =>
      (await db.query(sql`select exists (select 1 from pg_locks where relation = ${`permgraph.${table}`}::regclass and mode = 'AccessShareLock' and granted
                                         and database = (select oid from pg_database where datname = current_database())) as found`))[0].found === true);
    return {
      before,
      release: async () => {
        release();
        await held;
      },
    };
  }

  /** Once the lock is free: the upgrade was there to do, and migrate does it (which also leaves the schema current for the next test). */
  async function upgradeStillPending() {
    expect(await migrate(db)).toEqual({ applied: [], functions: ['140_audit.sql'], rights: [] });
  }

  // grants is waited for (lock_timeout, whose error names no table), nodes tried without waiting (NOWAIT, whose error names it)
  it.each([
    ['nodes', 'could not obtain lock on relation "permgraph.nodes"'],
    ['grants', 'canceling statement due to lock timeout'],
  ] as const)('with its patience spent it rejects with MigrationLockTimeoutError: SQLSTATE 55P03, the table (%s), how long it tried; nothing changed', async (table, said) => {
    const { before, release } = await upgradeHeldUp(table);
    const log = gaveWayLog();
    // (patience 0: one attempt. One that tried again would give way first, logged: that ends the wait as well)
    const outcome = settle(migrate(db, log.logger, { lockPatienceMs: 0 }));
    await Promise.race([outcome, log.nth(1)]);
    await release();
    const { error } = (await outcome) as { error?: MigrationLockTimeoutError };

    expect(log.count()).toBe(0);
    expect(error).toBeInstanceOf(MigrationLockTimeoutError);
    expect(error).toMatchObject({
      name: 'MigrationLockTimeoutError',
      code: '55P03',
      sqlState: '55P03',
      table: `permgraph.${table}`,
      attempts: 1,
      waitedMs: expect.any(Number),
      cause: expect.objectContaining({ code: '55P03' }),
    });
    // one line: the last failure without the statement's code frame, then the advice it always gave
    const [head, advice] = error!.message.split(': nothing was changed. ');
    expect(head).toMatch(/^migrate gave way 1 time\(s\) in \d+ s to transactions holding locks it needs \(the last, for permgraph\.(nodes|grants): .*\)$/);
    expect(head).toContain(`(the last, for permgraph.${table}: ${said})`);
    expect(advice).toBe(
      "Find the long-running transaction on permgraph's tables in pg_stat_activity and end it or wait for it; if it is the worker's " +
        '(batches that take seconds, back to back), stop the workers, migrate, then start the upgraded ones (docs/operations.md, Upgrades)',
    );
    expect(await schema()).toEqual(before);
    await upgradeStillPending();
  });

  it('aborted while it pauses between attempts, it rejects with the signal\'s reason and tries no more; nothing changed', async () => {
    const { before, release } = await upgradeHeldUp();
    const controller = new AbortController();
    const reason = new Error('the application is shutting down');
    // Aborted just after the first attempt gave way: in the pause that follows it.
    const log = gaveWayLog((count) => {
      if (count === 1) setImmediate(() => controller.abort(reason));
    });
    // (patience enough for an hour of attempts; one that ignored the signal gives way a second time: that ends the wait as well)
    const outcome = settle(migrate(db, log.logger, { signal: controller.signal, lockPatienceMs: 3_600_000 }));
    await Promise.race([outcome, log.nth(2)]);
    await release();
    const settled = await outcome;

    expect(log.count()).toBe(1);
    expect(settled).toEqual({ error: reason });
    expect((settled as { error: unknown }).error).toBe(reason);
    expect(await schema()).toEqual(before);
    await upgradeStillPending();
  });

  it('with its signal aborted before it starts, it rejects with the reason (an AbortError by default) and changes nothing, through the client as well', async () => {
    await db.query(sql`update permgraph.function_files set checksum = ${await earlierFunctionChecksum('140_audit.sql')} where name = '140_audit.sql'`);
    const before = await schema();
    const reason = new Error('stopping');
    await expect(migrate(db, undefined, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    await expect(Permgraph.fromPool(db, url).migrate({ signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    expect(await schema()).toEqual(before);
    await upgradeStillPending();
  });

  it('a patience that is negative or not a finite number is refused as invalid input, before anything is done', async () => {
    await db.query(sql`update permgraph.function_files set checksum = ${await earlierFunctionChecksum('140_audit.sql')} where name = '140_audit.sql'`);
    const before = await schema();
    for (const lockPatienceMs of [-1, Number.NaN, Number.POSITIVE_INFINITY, '1000' as unknown as number]) {
      const outcome = await settle(migrate(db, undefined, { lockPatienceMs }));
      expect(outcome, String(lockPatienceMs)).toEqual({ error: expect.any(InvalidInputError) });
      expect((outcome as { error: Error }).error.message).toBe(`lockPatienceMs must be a finite number of milliseconds, 0 or more, got ${String(lockPatienceMs)}`);
    }
    expect(await schema()).toEqual(before);
    await upgradeStillPending();
  });
});
