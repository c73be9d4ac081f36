// Opening a pool (src/db/pool.ts) on what an operator typed as the database
// URL: a malformed one is refused at once, naming the problem, before any
// connection is tried.
import { describe, expect, it } from 'vitest';
import { openPool } from '../../src/db/pool.ts';
import { InvalidInputError } from '../../src/errors.ts';

describe('openPool', () => {
  it.each([
    ['postgres://app:secret@db.example:port/app', /^the database URL is not a PostgreSQL connection string: Expected "port" to be an integer$/],
    ['postgres//db.example/app', /^the database URL is not a PostgreSQL connection string: Expected either a Connection URI/],
    ['host=/run/postgresql port=abc', /^the database URL is not a PostgreSQL connection string: Expected "port" to be an integer$/],
  ])('refuses the malformed URL %j with an InvalidInputError that says so, without pointing elsewhere and without the URL', (url, message) => {
    const attempt = () => openPool(url);
    expect(attempt).toThrow(InvalidInputError);
    expect(attempt).toThrow(message);
    expect(attempt).not.toThrow(/https?:|secret/); // (no link to an old manual; never the password)
  });

  it('refuses a pool size below one', () => {
    expect(() => openPool('postgres://localhost/app', { poolSize: 0 })).toThrow('poolSize must be a positive integer, got 0');
  });
});
