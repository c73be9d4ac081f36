import { AsyncLocalStorage } from 'node:async_hooks';
import { canAccessRow, checkAccess, checkMany, checkOperation, parseLevelOrRole } from './app/access.ts';
import type { CheckOptions } from './engine/check.ts';
import { listAudit, pruneAudit, setActor, type AuditFilter, type AuditPage, type PruneAuditOptions, type PruneAuditResult } from './app/audit.ts';
import { loadCatalogFile, syncRoles, type Catalog, type SyncResult } from './app/catalog.ts';
import { runDoctor, type DoctorCheck, type DoctorOptions } from './app/doctor.ts';
import { explain, type Explanation } from './app/explain.ts';
import { deleteGrant, writeGrant } from './app/grants.ts';
import { importGraph, type ImportOptions, type ImportSummary } from './app/import/index.ts';
import { listTargets, listUsers, type ListTargetsOptions, type ListUsersOptions, type Page, type TargetItem, type UserItem } from './app/listing.ts';
import { disableRowLevelSecurity, enableRowLevelSecurity, setSuperuser, type RowLevelSecurityOptions } from './app/rls.ts';
import { syncGrants, type DesiredGrant, type SyncResult as SyncGrantsResult } from './app/sync-grants.ts';
import type { Transaction } from '@databases/pg';
import { sql, type ConnectionPool, type Queryable } from './db/pool.ts';
import { openApplicationPool } from './db/pooler.ts';
import { resolveDatabase, type ResolvedDatabase } from './db/resolve.ts';
import { applyChanges, refresh, type ApplyOptions, type BatchResult } from './engine/apply.ts';
import { applyJobChunk, type ChunkOptions, type ChunkResult } from './engine/long-job.ts';
import { changes, consumerStatus, dropConsumer, registerConsumer, type ChangeBatch, type ChangesOptions, type ConsumerStatus, type Registration } from './engine/changes.ts';
import { waitFor, writeWithToken, type FreshnessToken } from './engine/freshness.ts';
import { parseExactMoment } from './expiry.ts';
import { verify, type VerifyResult } from './engine/verify.ts';
import { InvalidInputError, PermgraphError } from './errors.ts';
import { generatorWithRightsOf, withRightsOf, type Operation } from './rights.ts';
import type { Logger } from './logger.ts';
import { silentLogger } from './logger.ts';
import { migrate, type MigrateOptions, type MigrateResult } from './migrations/migrate.ts';
import { assertServerVersion } from './db/server-version.ts';
import type { Level, LevelInput, NodeKind } from './types.ts';
import { Worker, type WorkerOptions } from './worker/worker.ts';

/** Inside asActor: its transaction, the actor, and the tokens of writes made in it. */
interface ActorScope {
  actor: string;
  tx: Transaction;
  tokens: Set<FreshnessToken>;
  /** asActor has returned (its transaction is over). */
  ended: boolean;
}

/** Options of the class's checks: CheckOptions, and a token the answer must reflect. */
export interface FreshCheckOptions extends CheckOptions {
  /** Answer only once the permission table reflects the write behind this token (as waitFor, with its default timeout). */
  atLeastAsFreshAs?: FreshnessToken;
}

export interface ConnectOptions {
  /**
   * Default (the option left out): DATABASE_URL, else the embedded
   * development server in .permgraph/ (refused with NODE_ENV=production).
   * Given as undefined or '' it is an error: an unset environment variable.
   */
  databaseUrl?: string;
  logger?: Logger;
  poolSize?: number;
}

/**
 * The TypeScript API: a connection to one database plus the operations on
 * it. Writes go through plain SQL on permgraph.nodes/grants, so they are
 * captured exactly like any other client's; each returns a freshness token.
 */
export class Permgraph {
  private readonly actorScope = new AsyncLocalStorage<ActorScope>();

  private constructor(
    readonly db: ConnectionPool,
    readonly url: string,
    private readonly database: ResolvedDatabase | undefined,
    private readonly logger: Logger,
  ) {}

  static async connect(options: ConnectOptions = {}): Promise<Permgraph> {
    const logger = options.logger ?? silentLogger;
    // Given, but empty: an unset environment variable, most likely. Leaving
    // the option out is how to ask for DATABASE_URL or the embedded server.
    if ('databaseUrl' in options && !options.databaseUrl) {
      throw new InvalidInputError(
        `databaseUrl is ${options.databaseUrl === '' ? 'empty' : String(options.databaseUrl)} (an unset environment variable?): ` +
          'pass a PostgreSQL URL, or leave the option out to use DATABASE_URL (then, in development, the embedded server)',
      );
    }
    const database = await resolveDatabase({ databaseUrl: options.databaseUrl, logger });
    if (database.origin === 'embedded') {
      logger.warn({ url: database.url }, 'no database URL given and DATABASE_URL is unset: using the embedded development PostgreSQL in .permgraph/');
    }
    let db: ConnectionPool | undefined;
    try {
      db = await openApplicationPool(database.url, { poolSize: options.poolSize });
      await assertServerVersion(db);
    } catch (error) {
      await db?.dispose();
      await database.release();
      throw error;
    }
    return new Permgraph(db, database.url, database, logger);
  }

  /** Wraps an existing @databases/pg pool (the caller keeps ownership of it). */
  static fromPool(db: ConnectionPool, url: string, logger: Logger = silentLogger): Permgraph {
    return new Permgraph(db, url, undefined, logger);
  }

  async close(): Promise<void> {
    if (!this.database) return; // fromPool: not ours to close
    await this.db.dispose();
    await this.database.release();
  }

  /** Creates or upgrades the schema; `options`: a signal that stops it giving way, and how long it may (see MigrateOptions). */
  migrate(options: MigrateOptions = {}): Promise<MigrateResult> {
    return withRightsOf('migrate', () => migrate(this.db, this.logger, options));
  }

  refresh(): Promise<BatchResult> {
    return withRightsOf('refresh', () => refresh(this.db));
  }

  /** Applies pending changes now, synchronously (the worker's code path). */
  applyChanges(options?: ApplyOptions): Promise<BatchResult> {
    return withRightsOf('applyChanges', () => applyChanges(this.db, options));
  }

  /** Applies the next chunk of the running long job, if any (what the worker does between batches). */
  applyJobChunk(options?: ChunkOptions): Promise<ChunkResult> {
    return withRightsOf('applyJobChunk', () => applyJobChunk(this.db, options));
  }

  verify(): Promise<VerifyResult> {
    return withRightsOf('verify', () => verify(this.db));
  }

  /**
   * May the user act on the node at this level (1..3, read/write/manage) or
   * for this catalog operation? includeTrash: as if nothing were trashed;
   * atLeastAsFreshAs: answer only once the table reflects that write.
   */
  async check(userId: string, targetId: string, levelOrOperation: Level | string, options: FreshCheckOptions = {}): Promise<boolean> {
    return withRightsOf('check', async () => {
      await this.freshAs(options);
      return (await checkAccess(this.conn, userId, targetId, levelOrOperation, options)).allowed;
    });
  }

  /** check() for many targets of one user in one round trip; the answers in the order of targetIds (at most 10,000). */
  async checkMany(userId: string, targetIds: readonly string[], levelOrOperation: Level | string, options: FreshCheckOptions = {}): Promise<boolean[]> {
    return withRightsOf('checkMany', async () => {
      await this.freshAs(options);
      return checkMany(this.conn, userId, targetIds, levelOrOperation, options);
    });
  }

  /** Waits for options.atLeastAsFreshAs, if given: read-your-writes without a waitFor of one's own. */
  private async freshAs(options: FreshCheckOptions): Promise<void> {
    if (options.atLeastAsFreshAs !== undefined) await this.waitFor(options.atLeastAsFreshAs);
  }

  /** Resolves when the permission table reflects the write behind `token`. */
  async waitFor(token: FreshnessToken, timeoutMs?: number): Promise<void> {
    const scope = this.actorScope.getStore();
    // A token of asActor's own transaction (from this API's writes, or from
    // currentToken(tx) after writes of fn's own SQL) waits for a commit that
    // only asActor's return makes: refused rather than timed out.
    if (scope && !scope.ended && (scope.tokens.has(token) || (await transactionIdOf(scope.tx)) === token)) {
      throw new PermgraphError(`token ${token} is the transaction of asActor, which commits only when asActor returns: wait for it after asActor`);
    }
    return withRightsOf('waitFor', () => waitFor(this.db, token, timeoutMs));
  }

  /** A worker daemon on this database (call start()/stop()). */
  worker(options: Omit<WorkerOptions, 'url'> = {}): Worker {
    return new Worker({ logger: this.logger, ...options, url: this.url });
  }

  addNode(id: string, kind: NodeKind, options: { ownerId?: string | null; trashAt?: Date | string | null } = {}): Promise<FreshnessToken> {
    return this.write('addNode', async (tx) => {
      const rows = await tx.query(sql`
        insert into permgraph.nodes (id, kind, owner_id, trash_at) values (${id}, ${kind}, ${options.ownerId ?? null}, ${trashTime(options.trashAt)}::timestamptz)
        on conflict (id) do nothing returning id`);
      // (not the unique index's own message, which names the index, not the id)
      if (rows.length === 0) throw new InvalidInputError(`node ${JSON.stringify(id)} already exists`);
    });
  }

  setOwner(id: string, ownerId: string | null): Promise<FreshnessToken> {
    return this.write('setOwner', async (tx) => {
      const rows = await tx.query(sql`update permgraph.nodes set owner_id = ${ownerId} where id = ${id} returning id`);
      if (rows.length === 0) throw new InvalidInputError(`node "${id}" does not exist`);
    });
  }

  setTrash(id: string, trashAt: Date | string | null): Promise<FreshnessToken> {
    return this.write('setTrash', async (tx) => {
      const rows = await tx.query(sql`update permgraph.nodes set trash_at = ${trashTime(trashAt)}::timestamptz where id = ${id} returning id`);
      if (rows.length === 0) throw new InvalidInputError(`node "${id}" does not exist`);
    });
  }

  removeNode(id: string): Promise<FreshnessToken> {
    return this.write('removeNode', async (tx) => {
      const rows = await tx.query(sql`delete from permgraph.nodes where id = ${id} returning id`);
      if (rows.length === 0) throw new InvalidInputError(`node "${id}" does not exist`);
    });
  }

  /**
   * Grants (or re-grants with a new level or expiry) tail -> head from one
   * source; level 1..3, read/write/manage or a catalog role. Optionally
   * until a moment (`expiresAt`: a Date or ISO 8601 text) or for a duration
   * (`expiresIn`: '90m', '12h', '7d'); without either the grant never expires.
   */
  async grant(
    tailId: string,
    headId: string,
    levelOrRole: Level | string,
    options: { source?: string; expiresAt?: Date | string | null; expiresIn?: string } = {},
  ): Promise<FreshnessToken> {
    return this.noteToken((await withRightsOf('grant', () => writeGrant(this.conn, tailId, headId, levelOrRole, options))).token);
  }

  /**
   * Removes one source's grant tail -> head, if there is one. To learn whether
   * there was, and to have unknown ids refused, use revokeGrant(pg.db, …).
   */
  revoke(tailId: string, headId: string, options: { source?: string } = {}): Promise<FreshnessToken> {
    return this.write('revoke', (tx) => deleteGrant(tx, tailId, headId, options));
  }

  /** Nodes the user may act on (owner rule and trash included), one keyset page. */
  listTargets(userId: string, options?: ListTargetsOptions): Promise<Page<TargetItem>> {
    return withRightsOf('listTargets', () => listTargets(this.conn, userId, options));
  }

  /** Users who may act on the node ("who can see this"), one keyset page. */
  listUsers(targetId: string, options?: ListUsersOptions): Promise<Page<UserItem>> {
    return withRightsOf('listUsers', () => listUsers(this.conn, targetId, options));
  }

  /** The strongest path granting access, or why there is none. */
  explain(userId: string, thingId: string, level?: LevelInput | null): Promise<Explanation> {
    return withRightsOf('explain', () => explain(this.conn, userId, thingId, level));
  }

  /** Makes the grants of `source` exactly `desired`, atomically, writing only the differences. */
  async syncGrants(source: string, desired: readonly DesiredGrant[]): Promise<SyncGrantsResult> {
    const result = await withRightsOf('syncGrants', () => syncGrants(this.conn, source, desired));
    this.noteToken(result.token);
    return result;
  }

  /**
   * Bulk-loads nodes and grants (CSV files or queries); resumable; one
   * refresh at the end. Refuses a transaction pooler (SharedSessionError).
   */
  importGraph(options: ImportOptions): Promise<ImportSummary> {
    // Its own connections and transactions (it commits batch by batch), but inside asActor its audit row names that actor.
    // (the URL: checked for a transaction pooler, and CSV rows staged with COPY, as the command line does)
    return withRightsOf('importGraph', () => importGraph(this.db, { actor: this.actorScope.getStore()?.actor, connectionUrl: this.url, ...options }));
  }

  /** Audit entries, oldest first; pass nextCursor as `after` for the next page. */
  audit(filter: AuditFilter = {}): Promise<AuditPage> {
    return withRightsOf('audit', () => listAudit(this.conn, filter));
  }

  /** Deletes the audit entries before `before` or older than `olderThan` (the schema's owner only); `dryRun` counts them. */
  pruneAudit(options: PruneAuditOptions): Promise<PruneAuditResult> {
    return withRightsOf('pruneAudit', () => pruneAudit(this.conn, options));
  }

  /**
   * Runs fn in one transaction whose changes the audit log records as made
   * by `actor`: what fn writes through `tx`, and every call of this API made
   * inside fn (grant, revoke, addNode, setOwner, setTrash, removeNode,
   * syncGrants, syncRoles, setSuperuser…, and the reads, which see those
   * writes). All of it commits when fn returns, or none of it. Nested calls
   * use a savepoint and restore the outer actor. importGraph records the
   * actor too, but commits on its own connections, as refresh, applyChanges,
   * applyJobChunk, verify, migrate, doctor, workers and the change stream
   * (registerConsumer, changes, dropConsumer) run on theirs; waitFor on a
   * token of this transaction is refused (it commits only when asActor
   * returns). Calls of this API inside fn use fn's transaction: not from
   * inside a savepoint of your own (tx.tx(…)), which holds it until the
   * savepoint ends (nested asActor calls are the way to a savepoint).
   */
  asActor<T>(actor: string, fn: (tx: Transaction) => Promise<T>): Promise<T> {
    const outer = this.actorScope.getStore();
    const run = async (tx: Transaction): Promise<T> => {
      await setActor(tx, actor);
      const scope: ActorScope = { actor, tx, tokens: outer?.tokens ?? new Set(), ended: false };
      // (ended: a callback fn left behind keeps the scope after asActor has returned)
      const result = await this.actorScope.run(scope, () => fn(tx)).finally(() => (scope.ended = true));
      // set_config(…, true) survives the release of a savepoint: give the rest of the outer transaction its actor back
      if (outer) await setActor(tx, outer.actor);
      return result;
    };
    return outer ? outer.tx.tx(run) : this.db.tx(run);
  }

  /** Schema, index, worker, backlog and import health checks. */
  doctor(options: DoctorOptions = {}): Promise<DoctorCheck[]> {
    return withRightsOf('doctor', () => runDoctor(this.db, { url: this.url, ...options }));
  }

  /** Makes the roles/operations catalog equal to `catalog` (or the JSON file at that path). */
  async syncRoles(catalog: Catalog | string, options: { dryRun?: boolean } = {}): Promise<SyncResult> {
    const desired = typeof catalog === 'string' ? await loadCatalogFile(catalog) : catalog;
    return withRightsOf('syncRoles', () => syncRoles(this.conn, desired, options));
  }

  /** 1..3, read/write/manage, or a role name from the catalog. */
  levelOf(levelOrRole: string | number): Promise<Level> {
    return withRightsOf('levelOf', () => parseLevelOrRole(this.conn, levelOrRole));
  }

  /** check() by operation name (e.g. 'document.delete'), via the catalog. */
  checkOperation(userId: string, targetId: string, operation: string, options: { includeTrash?: boolean } = {}): Promise<boolean> {
    return withRightsOf('checkOperation', () => checkOperation(this.conn, userId, targetId, operation, options));
  }

  /** For your own rows that carry an owner column (they need not be nodes). */
  can(userId: string, row: { id: string; ownerId: string | null }, levelOrOperation: Level | string, options: { includeTrash?: boolean } = {}): Promise<boolean> {
    return withRightsOf('can', () => canAccessRow(this.conn, { userId, ...row }, levelOrOperation, options));
  }

  setSuperuser(userId: string, flag: boolean): Promise<void> {
    return withRightsOf('setSuperuser', () => setSuperuser(this.conn, userId, flag));
  }

  /**
   * Installs permgraph's row-level security policies on an app table
   * (schema-qualified: "public.documents"). Rows are matched through their
   * owner column only, unless `matchRowId` (see RowLevelSecurityOptions).
   */
  enableRowLevelSecurity(table: string, idColumn: string, ownerColumn: string | null, options: RowLevelSecurityOptions = {}): Promise<void> {
    return withRightsOf('enableRowLevelSecurity', () => enableRowLevelSecurity(this.conn, table, idColumn, ownerColumn, options));
  }

  disableRowLevelSecurity(table: string): Promise<void> {
    return withRightsOf('disableRowLevelSecurity', () => disableRowLevelSecurity(this.conn, table));
  }

  /**
   * Registers a change stream consumer (idempotent); readSnapshot reads the
   * table as of the returned seq in the same transaction (docs/change-stream.md).
   */
  registerConsumer<T = undefined>(
    name: string,
    readSnapshot?: (tx: Queryable, registration: { seq: number; created: boolean }) => Promise<T>,
  ): Promise<Registration<T>> {
    return withRightsOf('registerConsumer', () => registerConsumer(this.db, name, readSnapshot));
  }

  /** The consumer's permission change events in batches, each with ack(); `follow` waits for more (LISTEN/NOTIFY). */
  changes(name: string, options: Omit<ChangesOptions, 'url'> = {}): AsyncGenerator<ChangeBatch, void, undefined> {
    return generatorWithRightsOf('changes', changes(this.db, name, { logger: this.logger, ...options, url: this.url }));
  }

  /** Removes a change stream consumer and the events only it still needed; false if there was none. */
  dropConsumer(name: string): Promise<boolean> {
    return withRightsOf('dropConsumer', () => dropConsumer(this.db, name));
  }

  /** Every change stream consumer with its backlog: events waiting and the age of the oldest. */
  consumerStatus(): Promise<ConsumerStatus[]> {
    return withRightsOf('consumerStatus', () => consumerStatus(this.conn));
  }

  /**
   * Runs a write of `operation` in a transaction (inside asActor: a savepoint
   * of its transaction) and returns its freshness token; database input
   * errors become InvalidInputError, refusals say what the write needs.
   */
  private async write(operation: Operation, fn: (tx: Queryable) => Promise<unknown>): Promise<FreshnessToken> {
    return this.noteToken((await withRightsOf(operation, () => writeWithToken(this.conn, fn))).token);
  }

  /** Where an API call runs: inside asActor, in its transaction (which names the actor); else on the pool. */
  private get conn(): Queryable {
    return this.actorScope.getStore()?.tx ?? this.db;
  }

  /** Remembers the tokens of writes inside asActor, whose transaction has not committed yet (see waitFor). */
  private noteToken(token: FreshnessToken): FreshnessToken {
    this.actorScope.getStore()?.tokens.add(token);
    return token;
  }
}

/** A trash time as the API takes it (a Date, ISO 8601 text with its zone, or null), as written: its exact text (parseExactMoment). */
function trashTime(value: Date | string | null | undefined): string | null {
  return parseExactMoment(value, 'trash time', 'no trash time');
}

/**
 * The id of asActor's transaction if it has one (it wrote), or null: without
 * giving it one (pg_current_xact_id would), on a standby too, and null when
 * the transaction cannot answer (a statement of fn's failed in it).
 */
async function transactionIdOf(tx: Transaction): Promise<FreshnessToken | null> {
  try {
    const [row] = await tx.query(sql`select pg_current_xact_id_if_assigned()::text as xid`);
    return row.xid;
  } catch {
    return null;
  }
}

/** The public methods of Permgraph, by name. */
type PublicMethod = { [K in keyof Permgraph]: Permgraph[K] extends (...args: never[]) => unknown ? K : never }[keyof Permgraph];

/**
 * The compiler's check that every method running statements has its need in
 * RIGHTS_NEEDED (src/rights.ts): close, worker and asActor run none of their
 * own. A method missing there makes this line fail, naming it.
 */
type MethodWithoutItsNeed = Exclude<PublicMethod, Operation | 'close' | 'worker' | 'asActor'>;
const everyMethodHasItsNeed: [MethodWithoutItsNeed] extends [never] ? true : MethodWithoutItsNeed = true;
