/**
 * Typed errors. Database errors keep their SQLSTATE so callers can branch on
 * the class of failure (bad input vs. transient vs. bug) without parsing text.
 */
export class PermgraphError extends Error {
  override name = 'PermgraphError';
}

/** Input that permgraph refuses: unknown id, wrong kind, level out of range, cycle… */
export class InvalidInputError extends PermgraphError {
  override name = 'InvalidInputError';
  constructor(message: string, readonly sqlState?: string) {
    super(message);
  }
}

/** An applied migration file was edited after it ran. */
export class MigrationChecksumError extends PermgraphError {
  override name = 'MigrationChecksumError';
}

/** SQLSTATE classes we react to. */
export const SqlState = {
  serializationFailure: '40001',
  deadlockDetected: '40P01',
  uniqueViolation: '23505',
  foreignKeyViolation: '23503',
  checkViolation: '23514',
  notNullViolation: '23502',
  raiseException: 'P0001',
  invalidParameterValue: '22023',
  adminShutdown: '57P01',
  queryCanceled: '57014',
} as const;

/** Codes of the errors permgraph's own constraints and triggers raise on bad input. */
const inputErrorStates = new Set<string>([
  SqlState.uniqueViolation,
  SqlState.foreignKeyViolation,
  SqlState.checkViolation,
  SqlState.notNullViolation,
  SqlState.raiseException,
  SqlState.invalidParameterValue,
  '22P02', // invalid_text_representation (e.g. a level that is not a number)
]);

export function sqlStateOf(error: unknown): string | undefined {
  if (typeof error === 'object' && error !== null && 'code' in error) {
    const code = (error as { code: unknown }).code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

/** Transient failures after which a whole transaction may simply be retried. */
export function isRetryable(error: unknown): boolean {
  const state = sqlStateOf(error);
  return state === SqlState.serializationFailure || state === SqlState.deadlockDetected;
}

/** Turns a database error caused by bad input into an InvalidInputError; rethrows anything else. */
export function rethrowAsInputError(error: unknown): never {
  const state = sqlStateOf(error);
  if (state !== undefined && inputErrorStates.has(state)) {
    const message = error instanceof Error ? error.message : String(error);
    throw new InvalidInputError(message, state);
  }
  throw error;
}
