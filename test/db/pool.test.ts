// Opening a pool (src/db/pool.ts) on what an operator typed as the database
// URL: a malformed one is refused at once, naming the problem, before any
// connection is tried.
import { describe, expect, it, vi } from 'vitest';
import { Permgraph } from '../../src/client.ts';
import { openPool } from '../../src/db/pool.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { runCli } from '../helpers/cli.ts';

describe('openPool', () => {
  it.each([
    ['postgres://app:secret@db.example:port/app', /^the database URL is not a PostgreSQL connection string: Expected "port" to be an integer \(a user name or password that holds @ : \/ \? # % or a space must be %-encoded in a URL: @ as %40, .* # as %23, % as %25, a space as %20\)$/],
    ['postgres//db.example/app', /^the database URL is not a PostgreSQL connection string: Expected either a Connection URI/],
    ['host=/run/postgresql port=abc', /^the database URL is not a PostgreSQL connection string: Expected "port" to be an integer$/],
    // libpq's form for a Unix socket directory, which the parser refuses: the advice is the query's, not the password's
    ['postgresql://app:secret@/app?host=/run/postgresql', /^the database URL is not a PostgreSQL connection string: .* \(a \/ in the query must be %-encoded as %2F: a Unix socket directory as \?host=%2Frun%2Fpostgresql\)$/],
    // (the parser took these; libpq refuses them, and 0 meant 5432)
    ['postgres://app:secret@db.example:99999/app', /^the database URL's port must be from 1 to 65535, got 99999$/],
    ['postgres://app:secret@db.example:0/app', /^the database URL's port must be from 1 to 65535, got 0$/],
    ['postgres://app:secret@h1:5432,h2:0/app', /^the database URL's port must be from 1 to 65535, got 0$/],
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

  // A password as an operator types it into a URL: what libpq reads as it
  // is (a #), or a % that begins no %-encoded byte. The pool's parser took
  // the first, and node-pg's own connections (the first one of every
  // command and of Permgraph.connect()) failed with a bare "Invalid URL",
  // which the command line called a bug; the second said "URI malformed".
  it.each([
    ['postgres://app:se#cret@127.0.0.1:1/app', 'Invalid URL'],
    ['postgres://app:se%cret@127.0.0.1:1/app', 'URI malformed'],
  ])('refuses %j, before connecting, saying to percent-encode the password', async (url, reason) => {
    const refusal = await Permgraph.connect({ databaseUrl: url }).then(() => undefined, (e: unknown) => e);
    expect(refusal).toBeInstanceOf(InvalidInputError);
    expect((refusal as Error).message).toBe(
      `the database URL is not a PostgreSQL connection string: ${reason} (a user name or password that holds @ : / ? # % or a space must be %-encoded in a URL: ` +
        '@ as %40, : as %3A, / as %2F, ? as %3F, # as %23, % as %25, a space as %20)',
    );
    const cli = await runCli(['--json', '--database-url', url, 'status']);
    expect(cli.code).toBe(1);
    expect(JSON.parse(cli.stderr).error).toMatchObject({ code: 'invalid_input', message: (refusal as Error).message });
    expect(cli.stderr).not.toMatch(/secret|se#|se%c/);
  });

  it('refuses a pool size below one', () => {
    expect(() => openPool('postgres://localhost/app', { poolSize: 0 })).toThrow('poolSize must be a positive integer, got 0');
  });
});
