import { afterAll, onTestFinished, TestRunner } from 'vitest';

/**
 * Runs `cleanup` once what made the resource is done with it: after the
 * test, when called inside one, else after the tests of the file (or of
 * the describe block being collected). For helpers that both a test and a
 * describe block call: vitest silently ignores afterAll() inside a test
 * (and inside a beforeAll hook: make such things in the describe block), so
 * what such a test made was never cleaned up.
 */
export function cleanUpAfter(cleanup: () => unknown): void {
  if (TestRunner.getCurrentTest() === undefined) afterAll(async () => void (await cleanup()));
  else onTestFinished(async () => void (await cleanup()));
}
