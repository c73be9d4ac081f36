// The derived-permission change stream, from TypeScript: register a consumer
// (and read its snapshot in the same transaction), read its events in batches,
// acknowledge them, and follow new ones as batches commit them. The SQL side
// (sql/functions/170_changes.sql) keeps the events and the positions;
// docs/change-stream.md shows a search index kept in step with it.
import { moment } from '../db/moment.ts';
import { sql, type Queryable } from '../db/pool.ts';
import {
  CHANGES_LISTENER_APPLICATION_NAME,
  DEFAULT_CHANGES_BATCH,
  DEFAULT_POLL_INTERVAL_MS,
  MAX_CHANGES_BATCH,
  PERMISSION_CHANGES_CHANNEL,
} from '../constants.ts';
import { InvalidInputError, isConnectionError, isRetryable, SqlState, withInputErrors, type InputErrorReasons } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';
import type { Level } from '../types.ts';
import { startListener, type Listener } from '../worker/listener.ts';
import { requireIntervalMs, Wakeup } from '../worker/wakeup.ts';

/**
 * One changed row of permgraph.permissions. `old*` are null for an inserted
 * row, `new*` for a deleted one. Folding the events after a snapshot's seq
 * into that snapshot, in seq order, gives the current table.
 */
export interface PermissionChange {
  /** Grows in commit order; has gaps (numbers of rolled-back batches). */
  seq: number;
  op: 'insert' | 'update' | 'delete';
  userId: string;
  targetId: string;
  oldLevel: Level | null;
  newLevel: Level | null;
  oldTraverseOwned: boolean | null;
  newTraverseOwned: boolean | null;
  /**
   * The row's valid_until (null: no expiring grant bounds it). Each moment
   * is a Date, which keeps milliseconds, with its text to the microsecond
   * beside it, as the tables hold it: ISO 8601 in UTC, e.g.
   * 2030-01-31T18:00:00.000250Z (oldValidUntilExact, …). An expiry moved by
   * less than a millisecond changes the Exact text only.
   */
  oldValidUntil: Date | null;
  oldValidUntilExact: string | null;
  newValidUntil: Date | null;
  newValidUntilExact: string | null;
  /** When the batch that recorded it started, moments before its commit. */
  committedAt: Date;
  committedAtExact: string;
}

export interface Registration<T> {
  /** The seq of the snapshot: events with a greater seq are what changed since. */
  seq: number;
  /** false when the consumer existed: it kept its position, and `seq` is its acknowledged seq. */
  created: boolean;
  /** What readSnapshot returned (undefined without it). */
  snapshot: T;
}

/**
 * An unknown consumer (SQLSTATE 42704, undefined_object): an
 * InvalidInputError with that sqlState, by which callers tell it apart
 * (the CLI's advice to --register).
 */
const consumerErrors: InputErrorReasons = { [SqlState.undefinedObject]: (message) => message };

/**
 * Registers a consumer (idempotent) and, in the same transaction, runs
 * readSnapshot: what it reads of permgraph.permissions is the table as of
 * the returned seq. The transaction holds the applier lock until it
 * commits, so batches wait while readSnapshot runs: read what you need and
 * return. A consumer that existed keeps its position; reading the table
 * again is still safe (folding the events after its position into a newer
 * table gives the current table, since each event carries the row's new value).
 */
export async function registerConsumer<T = undefined>(
  db: Queryable, // a pool or a connection: the registration is a transaction of its own
  name: string,
  readSnapshot?: (tx: Queryable, registration: { seq: number; created: boolean }) => Promise<T>,
): Promise<Registration<T>> {
  return withInputErrors(() =>
    db.tx(async (tx) => {
      // Read committed: the lock register_consumer takes keeps batches out until
      // commit, so every later statement reads the table as of the returned seq
      // (under repeatable read, a batch committed before the lock would make
      // register_consumer fail with a serialization failure instead).
      await tx.query(sql`set transaction isolation level read committed`);
      const [row] = await tx.query(sql`select permgraph.register_consumer(${name}) as seq`);
      // Created by this transaction: the row's xmin is its id. (Not read
      // before the call: a concurrent registration of the same name could
      // commit in between, and both would say created.)
      const [mine] = await tx.query(sql`
        select c.xmin::text = (pg_current_xact_id()::text::bigint % 4294967296)::text as created
        from permgraph.change_consumers c where c.consumer = ${name}`);
      const registration = { seq: Number(row.seq), created: mine.created === true };
      const snapshot = readSnapshot ? await readSnapshot(tx, registration) : (undefined as T);
      return { ...registration, snapshot };
    }),
    consumerErrors,
  );
}

export interface ReadOptions {
  /** At most this many events (1..1,000,000; default 1,000). */
  maxEvents?: number;
  /** Only events after this seq, when it is beyond the consumer's acknowledged seq. */
  afterSeq?: number | null;
}

/** The consumer's next events after its acknowledged seq (or afterSeq), in seq order; marks nothing. */
export async function readChanges(db: Queryable, name: string, options: ReadOptions = {}): Promise<PermissionChange[]> {
  // (the server's own check, said before a number past an integer fails the parameter's cast instead)
  const maxEvents = options.maxEvents ?? DEFAULT_CHANGES_BATCH;
  if (!Number.isInteger(maxEvents) || maxEvents < 1 || maxEvents > MAX_CHANGES_BATCH) {
    throw new InvalidInputError(`max_events must be between 1 and ${MAX_CHANGES_BATCH}, got ${maxEvents}`);
  }
  const rows: ChangeRow[] = await withInputErrors(() =>
    db.query(sql`
      select seq, user_id, target_id, old_level, new_level, old_traverse_owned, new_traverse_owned,
             to_json(old_valid_until) as old_valid_until, to_json(new_valid_until) as new_valid_until, to_json(committed_at) as committed_at
      from permgraph.read_changes(${name}, ${maxEvents}::integer, ${options.afterSeq ?? null}::bigint)`),
    consumerErrors,
  );
  return rows.map(toChange);
}

/** Marks the consumer's events up to seq consumed (a seq at or below its position changes nothing). */
export async function ackChanges(db: Queryable, name: string, seq: number): Promise<void> {
  await withInputErrors(() => db.query(sql`select permgraph.ack_changes(${name}, ${seq}::bigint)`), consumerErrors);
}

/** Removes the consumer and the events only it still needed; false if there was none. */
export async function dropConsumer(db: Queryable, name: string): Promise<boolean> {
  const [row] = await withInputErrors(() => db.query(sql`select permgraph.drop_consumer(${name}) as existed`), consumerErrors);
  return row.existed === true;
}

/** One consumer of the change stream and how far behind it is (permgraph.change_stream_status()). */
export interface ConsumerStatus {
  consumer: string;
  /** The login that registered it: only its members and the schema's owner may use it (null: registered before owners). */
  ownerRole: string | null;
  /** When it was registered (a Date, to the millisecond; registeredAtExact: to the microsecond, in UTC, as the table holds it). */
  registeredAt: Date;
  registeredAtExact: string;
  ackedSeq: number;
  /** When it last acknowledged (null: never), as registeredAt. */
  ackedAt: Date | null;
  ackedAtExact: string | null;
  /**
   * How far behind it is, in seqs: the last seq numbered minus its
   * acknowledged one. An upper bound of the events waiting for it (kept for
   * it however old): rolled-back batches leave numbers unused.
   */
  lagEvents: number;
  /** Age in seconds of the oldest event waiting for it; null when none waits. */
  oldestWaitingAgeS: number | null;
}

/** Every consumer of the change stream, by name, with its backlog. */
export async function consumerStatus(db: Queryable): Promise<ConsumerStatus[]> {
  const [{ consumers }] = await db.query(sql`select permgraph.change_stream_status() as consumers`);
  return toConsumerStatuses(consumers);
}

/** permgraph.change_stream_status()'s JSON (also status()'s change_consumers), typed; its moments read as the database's JSON writes them (src/db/moment.ts). */
export function toConsumerStatuses(consumers: Record<string, any>[]): ConsumerStatus[] {
  return consumers.map((c) => ({
    consumer: c.consumer,
    ownerRole: c.owner_role,
    ...(moment('registeredAt', c.registered_at) as { registeredAt: Date; registeredAtExact: string }),
    ackedSeq: Number(c.acked_seq),
    ...moment('ackedAt', c.acked_at),
    lagEvents: Number(c.lag_events),
    oldestWaitingAgeS: c.oldest_waiting_age_s === null ? null : Number(c.oldest_waiting_age_s),
  }));
}

/** Events read together; ack() acknowledges them and every earlier one. */
export interface ChangeBatch {
  events: PermissionChange[];
  /** The seq of the last event. */
  lastSeq: number;
  /**
   * Stores the consumer's position at lastSeq. With `follow`, a lost
   * connection does not fail it: it is tried again after a pause until it
   * is stored, or `signal` aborts (then it throws, and the events are
   * delivered again to the consumer's next reader).
   */
  ack(): Promise<void>;
}

export interface ChangesOptions extends Omit<ReadOptions, 'afterSeq'> {
  /** Keep waiting for new events instead of ending when none are left. */
  follow?: boolean;
  /** With follow: LISTEN on this server (the pool's URL) to be woken as soon as a batch commits events. */
  url?: string;
  /** With follow: read at least this often even without a notification (default 1 s). */
  pollIntervalMs?: number;
  /** Ends the iteration (after the batch being processed). */
  signal?: AbortSignal;
  logger?: Logger;
}

/**
 * The consumer's events, batch by batch, from its acknowledged seq: ends
 * when none are left, or with `follow` waits for more until `signal` aborts
 * (or the loop breaks). Acknowledge a batch once it is applied; the
 * iterator moves on either way, and what is not acknowledged is delivered
 * again to the next reader of this consumer (after a crash or restart).
 */
export async function* changes(db: Queryable, name: string, options: ChangesOptions = {}): AsyncGenerator<ChangeBatch, void, undefined> {
  const logger = options.logger ?? silentLogger;
  const pollIntervalMs = requireIntervalMs(options.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS, 'pollIntervalMs');
  const wakeup = new Wakeup();
  const onAbort = () => wakeup.notify();
  options.signal?.addEventListener('abort', onAbort);
  let subscriber: Listener | undefined;
  try {
    if (options.follow && options.url && !options.signal?.aborted) {
      subscriber = await startListener(options.url, () => wakeup.notify(), logger, {
        channel: PERMISSION_CHANGES_CHANNEL,
        applicationName: CHANGES_LISTENER_APPLICATION_NAME,
      });
    }
    // A follower's acknowledgment outlives a lost connection as its reads
    // do: it is tried again after a pause until it is stored (or `signal`
    // aborts, and the batch is delivered again to the consumer's next reader).
    const acknowledge = async (seq: number): Promise<void> => {
      for (;;) {
        try {
          return await ackChanges(db, name, seq);
        } catch (error) {
          if (!options.follow || !passes(error) || options.signal?.aborted) throw error;
          logger.warn({ err: error }, 'acknowledging changes failed; retrying');
          await wakeup.wait(pollIntervalMs);
        }
      }
    };
    let position: number | null = null;
    while (!options.signal?.aborted) {
      let events: PermissionChange[];
      try {
        events = await readChanges(db, name, { maxEvents: options.maxEvents, afterSeq: position });
      } catch (error) {
        // A lost connection or a transient failure does not end a follower,
        // which reads again after a pause (passes); anything else ends the
        // iteration: bad input (an unknown or dropped consumer), and a pool
        // closed under it, which no pause cures.
        if (!options.follow || !passes(error)) throw error;
        logger.warn({ err: error }, 'reading changes failed; retrying');
        await wakeup.wait(pollIntervalMs);
        continue;
      }
      if (events.length > 0) {
        const lastSeq = events[events.length - 1]!.seq;
        position = lastSeq;
        yield { events, lastSeq, ack: () => acknowledge(lastSeq) };
        continue;
      }
      if (!options.follow) return;
      await wakeup.wait(pollIntervalMs);
    }
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    await subscriber?.close().catch(() => {});
  }
}

interface ChangeRow {
  seq: number;
  user_id: string;
  target_id: string;
  old_level: Level | null;
  new_level: Level | null;
  old_traverse_owned: boolean | null;
  new_traverse_owned: boolean | null;
  /** (the moments as their JSON text, read by moment: to the microsecond) */
  old_valid_until: string | null;
  new_valid_until: string | null;
  committed_at: string;
}

function toChange(row: ChangeRow): PermissionChange {
  return {
    seq: Number(row.seq),
    op: row.old_level === null ? 'insert' : row.new_level === null ? 'delete' : 'update',
    userId: row.user_id,
    targetId: row.target_id,
    oldLevel: row.old_level,
    newLevel: row.new_level,
    oldTraverseOwned: row.old_traverse_owned,
    newTraverseOwned: row.new_traverse_owned,
    ...moment('oldValidUntil', row.old_valid_until),
    ...moment('newValidUntil', row.new_valid_until),
    ...(moment('committedAt', row.committed_at) as { committedAt: Date; committedAtExact: string }),
  };
}

/**
 * What a follower outlives, trying again after a pause: a lost connection,
 * and a transaction that may simply be run again (a serialization failure,
 * as a database whose default isolation is serializable gives, or a
 * deadlock).
 */
function passes(error: unknown): boolean {
  return isConnectionError(error) || isRetryable(error);
}
