// Opening a pool (src/db/pool.ts) on what an operator typed as the database
// URL: a malformed one is refused at once, naming the problem, before any
// connection is tried.
import { describe, expect, it, vi } from 'vitest';
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

  // libpq refuses a parameter it does not know ('invalid URI query
  // parameter'); the pool's parser printed a warning to stderr, past the
  // injected logger, and went on without it (a statement_timeout there
  // bounded node-pg's own connections, not the pool's).
  it.each([
    ['postgres://app:secret@db.example/app?foo=bar', 'foo'],
    ['postgres://app:secret@db.example/app?sslmode=require&sslmdoe=verify-full', 'sslmdoe'],
    ['postgres://app:secret@db.example/app?statement_timeout=1000', 'statement_timeout'],
    ['postgres://app:secret@h1:5432,h2:5433/app?foo=bar', 'foo'],
    ['host=/run/postgresql dbname=app password=secret foo=bar', 'foo'],
  ])('refuses %j, whose parameter %s it does not know, with an InvalidInputError naming it, printing nothing', (url, name) => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const attempt = () => openPool(url);
      expect(attempt).toThrow(InvalidInputError);
      expect(attempt).toThrow(`the database URL has a parameter permgraph does not know: "${name}"`);
      expect(attempt).not.toThrow(/https?:|secret/);
      expect(warn).not.toHaveBeenCalled();
    } finally {
      warn.mockRestore();
    }
  });

  it('refuses channel_binding (which hosted servers put in their URLs), saying what to use instead', () => {
    for (const value of ['require', 'prefer', 'disable']) {
      expect(() => openPool(`postgres://app:secret@db.example/app?sslmode=require&channel_binding=${value}`)).toThrow(
        /^the database URL sets channel_binding, which permgraph's connections do not do: remove it, and have TLS check the server instead \(sslmode=verify-full\)/,
      );
    }
  });

  it.each([
    'application_name=app&fallback_application_name=x&options=&client_encoding=UTF8',
    'connect_timeout=5&keepalives=1&keepalives_idle=30',
    'target_session_attrs=any',
    'sslmode=require&sslcert=&sslkey=&sslpassword=x',
    'sslmode=prefer&uselibpqcompat=true',
    // (with sslmode, which says it all: ssl alone is refused, url-parameters.test.ts)
    'sslmode=disable&ssl=true',
    'user=u&port=5433',
  ])('takes the connection parameters of PostgreSQL and node-pg (%s) without a word (those it refuses, dbname among them: url-parameters.test.ts)', async (query) => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      // (nothing connects: a pool opens its connections on first use)
      await openPool(`postgres://app@db.example/app?${query}`).dispose();
      expect(warn).not.toHaveBeenCalled();
    } finally {
      warn.mockRestore();
    }
  });

  it('refuses a pool size below one', () => {
    expect(() => openPool('postgres://localhost/app', { poolSize: 0 })).toThrow('poolSize must be a positive integer, got 0');
  });
});
