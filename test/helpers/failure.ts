// The error of a statement that must fail: the one helper for asserting
// on a refusal's SQLSTATE and message.
import { expect } from 'vitest';

export interface DbError extends Error {
  code?: string;
  detail?: string;
  hint?: string;
}

/** Awaits `run`, which must be refused, and returns its error. */
export async function failureOf(run: Promise<unknown>): Promise<DbError> {
  const outcome = await run.then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(outcome, 'the statement should have been refused').toBeInstanceOf(Error);
  return outcome as DbError;
}
