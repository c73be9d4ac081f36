/**
 * Typed errors, and the one mapping from database errors to them
 * (translateDbError / withInputErrors): every library call that can hit bad
 * input in SQL goes through it, so callers branch on the class of failure
 * (bad input vs. transient vs. bug) without parsing text.
 *
 * The `permgraph:` prefix, decided once:
 * - SQL functions and triggers (sql/) RAISE their messages as
 *   `permgraph: …`: a psql or application user sees them without any other
 *   hint of where they come from.
 * - Errors thrown by this library (PermgraphError and its subclasses) never
 *   carry the prefix: translateDbError drops it from the database's message
 *   (the database's error stays in `cause`), and messages written here never
 *   start with it.
 * - The CLI names itself once: it prints `permgraph: <message>` for every
 *   failure, and needs to strip nothing.
 */
export class PermgraphError extends Error {
  override name = 'PermgraphError';
}

/** Input that permgraph refuses: unknown id, wrong kind, level out of range, cycle… */
export class InvalidInputError extends PermgraphError {
  override name = 'InvalidInputError';
  constructor(
    message: string,
    readonly sqlState?: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/**
 * The database refused the login this call ran as (SQLSTATE 42501): it
 * lacks the permgraph role the call needs (docs/security.md), or a change
 * consumer belongs to another login. `code` keeps the SQLSTATE, as the
 * driver's error had it.
 *
 * PostgreSQL's own refusals ("permission denied for function …", "must be
 * owner of …") name an internal object, not the call: `postgresMessage`
 * keeps that text, and a library call adds to the message what it needs
 * (withRightsNeeded: `operation`, `needs`). The SQL side's own refusals
 * name their reason, and have neither.
 */
export class PermissionDeniedError extends PermgraphError {
  override name = 'PermissionDeniedError';
  readonly sqlState = '42501';
  readonly code = '42501';
  /** PostgreSQL's own text (without the driver's code frame), when the refusal is PostgreSQL's (a right the login lacks). */
  readonly postgresMessage?: string;
  /** The call refused (a method or function name, or a command), when it said what it needs. */
  readonly operation?: string;
  /** Who may make the call, in words: "a login granted permgraph_worker", "the schema's owner". */
  readonly needs?: string;

  constructor(message: string, options: ErrorOptions & { postgresMessage?: string; operation?: string; needs?: string } = {}) {
    super(message, options);
    this.postgresMessage = options.postgresMessage;
    this.operation = options.operation;
    this.needs = options.needs;
  }
}

/**
 * The worker closed its connection because the database stopped answering
 * on it (a network partition: src/worker/watchdog.ts); `cause` is the
 * driver's error for the statement it closed the connection under. A
 * connection error (isConnectionError): the worker reconnects.
 */
export class ConnectionStalledError extends PermgraphError {
  override name = 'ConnectionStalledError';
}

/**
 * The connections of the worker or of an import go through a pooler that
 * gives one server session to several clients in turn (transaction
 * pooling: src/db/pooler.ts), where what they keep on their session (the
 * worker's applier role, a session's advisory lock; an import's lock,
 * temporary tables and search_path) would pass to other clients, outlive
 * them, or be missing from their next transaction: the worker refuses to
 * start, or stops; an import refuses to run (sharedSessionError).
 */
export class SharedSessionError extends PermgraphError {
  override name = 'SharedSessionError';
}

/**
 * A statement meant for one server session (the worker's: queryOnSession)
 * was answered by another, and not run there: a transaction pooler moved
 * the connection (its pool mode changed while the worker ran). The worker
 * stops with a SharedSessionError that says so.
 */
export class SessionMovedError extends PermgraphError {
  override name = 'SessionMovedError';
  constructor(
    readonly sessionPid: number,
    readonly servedBy: number,
  ) {
    super(`a statement for server session ${sessionPid} was answered by server session ${servedBy}, and not run`);
  }
}

/** An applied migration file was edited after it ran. */
export class MigrationChecksumError extends PermgraphError {
  override name = 'MigrationChecksumError';
}

/**
 * migrate gave up: for its whole patience (lockPatienceMs, 5 minutes by
 * default) transactions kept holding a lock it needs, and each attempt gave
 * way and rolled back, so nothing was changed. `code` and `sqlState` are
 * 55P03 (lock_not_available), whatever the last attempt failed with (a
 * lock timeout, or a deadlock: 40P01), which `cause` keeps. `table` is the
 * table the last attempt could not lock (permgraph.grants or
 * permgraph.nodes), or null when it gave way inside a migration or function
 * file, whose statements' lock waits PostgreSQL does not name.
 */
export class MigrationLockTimeoutError extends PermgraphError {
  override name = 'MigrationLockTimeoutError';
  readonly sqlState = '55P03';
  readonly code = '55P03';
  /** The table the last attempt could not lock, schema-qualified, or null (see above). */
  readonly table: string | null;
  /** How many attempts gave way. */
  readonly attempts: number;
  /** How long migrate tried, from its first attempt to giving up, in milliseconds. */
  readonly waitedMs: number;

  constructor(message: string, details: { table: string | null; attempts: number; waitedMs: number }, options?: ErrorOptions) {
    super(message, options);
    this.table = details.table;
    this.attempts = details.attempts;
    this.waitedMs = details.waitedMs;
  }
}

/** The SQLSTATEs permgraph raises, reacts to or maps. */
export const SqlState = {
  serializationFailure: '40001',
  deadlockDetected: '40P01',
  uniqueViolation: '23505',
  foreignKeyViolation: '23503',
  checkViolation: '23514',
  notNullViolation: '23502',
  raiseException: 'P0001',
  invalidParameterValue: '22023',
  /** e.g. a level that is not a number */
  invalidTextRepresentation: '22P02',
  invalidDatetimeFormat: '22007',
  /** text the database's encoding cannot hold (a NUL byte in an id) */
  characterNotInRepertoire: '22021',
  /** a value past a limit of the server's: a grant key wider than its index (sql/functions/010_integrity.sql) */
  programLimitExceeded: '54000',
  datetimeFieldOverflow: '22008',
  undefinedColumn: '42703',
  /** no change consumer of that name (sql/functions/170_changes.sql) */
  undefinedObject: '42704',
  /** what the append-only audit log raises on UPDATE and DELETE */
  insufficientPrivilege: '42501',
  adminShutdown: '57P01',
  /** "the database system is starting up" (or shutting down, or in recovery): a login refused for now */
  cannotConnectNow: '57P03',
  queryCanceled: '57014',
  /** a lock not taken within lock_timeout, or at once under NOWAIT */
  lockNotAvailable: '55P03',
} as const;

/** SQLSTATE classes (the first two characters) permgraph maps. */
export const SqlStateClass = {
  syntaxErrorOrAccessRuleViolation: '42',
} as const;

/** Codes of the errors permgraph's own constraints, triggers and functions raise on bad input. */
const inputErrorStates = new Set<string>([
  SqlState.uniqueViolation,
  SqlState.foreignKeyViolation,
  SqlState.checkViolation,
  SqlState.notNullViolation,
  SqlState.raiseException,
  SqlState.invalidParameterValue,
  SqlState.invalidTextRepresentation,
  SqlState.characterNotInRepertoire,
  SqlState.programLimitExceeded,
]);

/** What the SQL side puts before every message it raises (see the file comment). */
const SQL_MESSAGE_PREFIX = 'permgraph: ';

/**
 * The SQLSTATE of a database error, or of permgraph's error translated from
 * one (an InvalidInputError's sqlState, a PermissionDeniedError's code) or
 * standing for one (MigrationLockTimeoutError's 55P03); undefined for any
 * other error.
 */
export function sqlStateOf(error: unknown): string | undefined {
  if (error instanceof InvalidInputError) return error.sqlState;
  if (typeof error === 'object' && error !== null && 'code' in error) {
    const code = (error as { code: unknown }).code;
    // (a system error, such as EPIPE, is no SQLSTATE even when five letters long)
    if ('syscall' in error || 'errno' in error) return undefined;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

/** Node's system errors of a connection that failed or was lost. */
const CONNECTION_SYSTEM_ERRORS = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'ENOTFOUND', 'EHOSTUNREACH', 'EHOSTDOWN', 'ENETUNREACH', 'ETIMEDOUT', 'EAI_AGAIN', 'EPIPE',
]);

/** What node-pg says of a connection that ended, or that it will no longer use. */
const CONNECTION_LOST_MESSAGES = /^(Connection terminated|Client has encountered a connection error and is not queryable)/;

/**
 * Whether the error is the connection's rather than the statement's: the
 * network (a system error, node-pg's connection ending under a query, or
 * the worker's watchdog closing a stalled connection),
 * or the server ending the session or refusing it for now (class 08;
 * 57P01-57P03, an administrator's shutdown or a server that is starting or
 * crashed). Not a login refused for good (28000, 28P01, 3D000: a role or a
 * database that does not exist, a wrong password), which retrying cannot cure.
 */
export function isConnectionError(error: unknown): boolean {
  if (error instanceof ConnectionStalledError) return true;
  const system = error as NodeJS.ErrnoException | null;
  if (typeof system?.code === 'string' && CONNECTION_SYSTEM_ERRORS.has(system.code)) return true;
  // a Unix socket whose server is down: its file is gone
  if (system?.code === 'ENOENT' && system.syscall === 'connect') return true;
  if (error instanceof Error && CONNECTION_LOST_MESSAGES.test(error.message)) return true;
  const state = sqlStateOf(error);
  return state !== undefined && (state.startsWith('08') || ['57P01', '57P02', '57P03'].includes(state));
}

/**
 * Whether a connection failed as one to a server that is starting fails:
 * the login refused for now (57P03), or the connection closed under it
 * right after the server's boot. Trying again may cure these, and only
 * these: a wrong password (28P01), a role or a database that does not exist
 * (28000, 3D000), a certificate refused, a port nothing listens on
 * (ECONNREFUSED: psql does not try again either) fail the same way each time.
 */
export function isServerStarting(error: unknown): boolean {
  if (sqlStateOf(error) === SqlState.cannotConnectNow) return true;
  return error instanceof Error && /^Connection terminated unexpectedly/.test(error.message);
}

/** Transient failures after which a whole transaction may simply be retried. */
export function isRetryable(error: unknown): boolean {
  const state = sqlStateOf(error);
  return state === SqlState.serializationFailure || state === SqlState.deadlockDetected;
}

/**
 * How one call words its own input errors: by SQLSTATE, or by SQLSTATE class
 * (two characters), the message to use given the database's message.
 */
export type InputErrorReasons = Partial<Record<string, (message: string) => string>>;

/**
 * The one mapping from a database error to permgraph's errors: an error
 * caused by bad input (see inputErrorStates, or a state the caller names in
 * `reasons`) becomes an InvalidInputError with the SQLSTATE in sqlState and
 * the message without the SQL side's prefix; a refused login (42501), a
 * PermissionDeniedError. PermgraphErrors and every other
 * error (transient, connection, bugs) are returned unchanged.
 */
export function translateDbError(error: unknown, reasons: InputErrorReasons = {}): unknown {
  if (error instanceof PermgraphError) return error;
  const state = sqlStateOf(error);
  if (state === undefined) return error;
  const text = error instanceof Error ? error.message : String(error);
  const message = text.startsWith(SQL_MESSAGE_PREFIX) ? text.slice(SQL_MESSAGE_PREFIX.length) : text;
  const reason = reasons[state] ?? reasons[state.slice(0, 2)];
  if (reason) return new InvalidInputError(reason(message), state, { cause: error });
  if (inputErrorStates.has(state)) return new InvalidInputError(message, state, { cause: error });
  if (state === SqlState.insufficientPrivilege) {
    // (PostgreSQL's own words, without the driver's code frame; the SQL
    // side's carry its prefix)
    const postgresMessage = POSTGRES_REFUSAL.test(text) ? withoutCodeFrame(text) : undefined;
    return new PermissionDeniedError(message, { cause: error, postgresMessage });
  }
  return error;
}

/**
 * A database error's message without the code frame of the statement that
 * @databases/pg appends after a blank line: the server's own words, on
 * their first lines.
 */
export function withoutCodeFrame(message: string): string {
  return message.split('\n\n')[0]!;
}

/** How PostgreSQL words a right the login lacks: EXECUTE, SELECT, USAGE…, or the ownership a DROP or ALTER needs. */
const POSTGRES_REFUSAL = /^(permission denied for |must be owner of )/;

/**
 * PostgreSQL's own refusal of `operation` (a database error, or the
 * PermissionDeniedError translated from one), said as the call's: a
 * PermissionDeniedError whose message keeps PostgreSQL's text and adds
 * "<operation> needs <needs> (docs/security.md)" (on one line: the
 * statement's code frame, of the library's own SQL, stays in `cause`, the
 * driver's error). A refusal already told for an inner call is told again for this
 * one (the call the caller made). Every other error, the SQL side's own
 * refusals included, is returned unchanged.
 */
export function withRightsNeeded(error: unknown, operation: string, needs: string): unknown {
  const denied = translateDbError(error);
  if (!(denied instanceof PermissionDeniedError) || denied.postgresMessage === undefined) return error;
  const { postgresMessage } = denied;
  return new PermissionDeniedError(`${postgresMessage}: ${operation} needs ${needs} (docs/security.md)`, {
    cause: denied.cause,
    postgresMessage,
    operation,
    needs,
  });
}

/** Runs `run`, throwing its database errors through translateDbError. */
export async function withInputErrors<T>(run: () => Promise<T>, reasons?: InputErrorReasons): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw translateDbError(error, reasons);
  }
}

/** translateDbError, thrown (kept for callers of the public API). */
export function rethrowAsInputError(error: unknown): never {
  throw translateDbError(error);
}
