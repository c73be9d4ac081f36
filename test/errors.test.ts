// Which errors are the connection's and which are a SQLSTATE (src/errors.ts):
// the worker's log and retry, and the CLI's failure codes, rest on them.
import { describe, expect, it } from 'vitest';
import { isConnectionError, sqlStateOf } from '../src/errors.ts';

const withCode = (code: string, message = 'x') => Object.assign(new Error(message), { code });

describe('errors', () => {
  it('sqlStateOf reads a SQLSTATE, never a system error code of five letters', () => {
    expect(sqlStateOf(withCode('57014'))).toBe('57014');
    expect(sqlStateOf(withCode('P0001'))).toBe('P0001');
    expect(sqlStateOf(withCode('XX000'))).toBe('XX000');
    expect(sqlStateOf(withCode('HV000'))).toBe('HV000');
    expect(sqlStateOf(withCode('EPIPE'))).toBeUndefined();
    expect(sqlStateOf(withCode('ECONNREFUSED'))).toBeUndefined();
    expect(sqlStateOf(new Error('no code'))).toBeUndefined();
  });

  it('isConnectionError: the network, node-pg losing the connection, the server refusing or ending the session; not a statement', () => {
    for (const error of [
      withCode('ECONNREFUSED'), withCode('ECONNRESET'), withCode('EPIPE'), withCode('ENOTFOUND'),
      withCode('08006'), withCode('08P01'), withCode('57P01'), withCode('57P03'),
      new Error('Connection terminated unexpectedly'),
    ]) {
      expect(isConnectionError(error), error.message + (error as { code?: string }).code).toBe(true);
    }
    for (const error of [withCode('57014'), withCode('55P03'), withCode('25006'), withCode('42501'), new Error('boom'), 'text', null]) {
      expect(isConnectionError(error), String(error)).toBe(false);
    }
  });
});
