// The libpq parameters of a database URL that the pool's parser knows but
// the pool does not pass to its connections (options, connect_timeout,
// keepalives*, client_encoding, target_session_attrs, replication), while
// node-pg's raw clients (the first connection, LISTEN, COPY, the watchdog)
// applied some of them: each is either applied alike by every kind of
// connection permgraph opens, or refused, naming it, before any connects.
// What a connection applied is read where it lands: the server's own
// settings (show), the sockets' keepalive switches (Node's setKeepAlive),
// and when a server that never answers sees the connection given up.
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { TLSSocket } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { clientConfig, connectClient } from '../../src/db/client-config.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import { tlsPlan } from '../../src/db/tls.ts';
import { readUrlParameters } from '../../src/db/url-parameters.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { cleanUpAfter } from '../helpers/cleanup.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { REPO } from '../docs/doctest.ts';

/** The test certificates (tls.test.ts): server.crt names localhost, signed by ca.crt; other-ca.crt signed nothing here. */
const FIXTURES = path.join(REPO, 'test/fixtures/tls');

/**
 * A server that answers a connection's SSL request, completes the TLS
 * handshake with `certificate`.crt (within `versions`), and refuses the login that
 * follows ("fake server: no login"): a client that gets that far took the
 * server's certificate. `protocols` are the TLS versions of those handshakes.
 */
async function startTlsServer(versions: { minVersion?: 'TLSv1.2' | 'TLSv1.3'; maxVersion?: 'TLSv1.2' | 'TLSv1.3' } = {}, certificate = 'server') {
  const [cert, key] = await Promise.all([readFile(path.join(FIXTURES, `${certificate}.crt`), 'utf8'), readFile(path.join(FIXTURES, `${certificate}.key`), 'utf8')]);
  const protocols: (string | null)[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.once('data', () => {
      socket.write('S');
      const secure = new TLSSocket(socket, { isServer: true, cert, key, ...versions });
      secure.on('error', () => socket.destroy());
      secure.once('secure', () => protocols.push(secure.getProtocol()));
      secure.once('data', () => {
        const text = Buffer.from('SFATAL\0C28000\0Mfake server: no login\0\0');
        const header = Buffer.alloc(5);
        header.write('E');
        header.writeInt32BE(text.length + 4, 1);
        secure.end(Buffer.concat([header, text]));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanUpAfter(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { url: `postgres://someone@localhost:${(server.address() as { port: number }).port}/somedb`, protocols };
}

/** `name`, a copy of a test certificate in a directory of its own, named `as` (a name with a +, say). */
async function certificateNamed(name: string, as: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'permgraph-url-parameters-'));
  cleanUpAfter(() => rm(dir, { recursive: true, force: true }));
  await copyFile(path.join(FIXTURES, name), path.join(dir, as));
  return path.join(dir, as);
}

/** A file's path as a URL's parameter value, percent-encoded as the pool's parser wants it, but a + left a + (as libpq reads it, and the parser). */
const inUrl = (file: string) => encodeURIComponent(file).replaceAll('%2B', '+');

/** What connecting `ask` to `url` ends in: its error's message, or 'connected'. */
const outcome = (ask: (url: string, statement: string) => Promise<unknown>, url: string) =>
  ask(url, 'select 1').then(
    () => 'connected',
    (error: unknown) => (error instanceof Error ? error.message : String(error)),
  );

/** A server that takes connections and reads what they send, and never answers: `open` are those its clients have not closed. */
async function startSilentServer(): Promise<{ url: string; open: Set<Socket>; connections: () => number }> {
  const open = new Set<Socket>();
  let connections = 0;
  const server = createServer((socket) => {
    connections++;
    open.add(socket);
    socket.on('error', () => {});
    socket.resume();
    socket.once('close', () => open.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanUpAfter(async () => {
    for (const socket of open) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { url: `postgres://someone@127.0.0.1:${(server.address() as { port: number }).port}/somedb`, open, connections: () => connections };
}

const withQuery = (url: string, query: string) => `${url}${url.includes('?') ? '&' : '?'}${query}`;

/** The kinds of connection permgraph opens, each asked one statement's first value: the pool's, the first connection's (connectClient), and a raw client on clientConfig's terms (LISTEN's, the pooler check's). */
const KINDS = {
  pool: async (url: string, statement: string) => {
    const pool = openPool(url, { poolSize: 1 });
    try {
      const [row] = await pool.query(sql.__dangerous__rawValue(statement));
      return Object.values(row as object)[0] as unknown;
    } finally {
      await pool.dispose();
    }
  },
  connectClient: async (url: string, statement: string) => {
    const client = await connectClient(url, 'url-parameters-test');
    try {
      return Object.values((await client.query(statement)).rows[0] as object)[0] as unknown;
    } finally {
      await client.end();
    }
  },
  clientConfig: async (url: string, statement: string) => {
    const client = new pg.Client(await clientConfig(url, 'url-parameters-test'));
    client.on('error', () => {});
    await client.connect();
    try {
      return Object.values((await client.query(statement)).rows[0] as object)[0] as unknown;
    } finally {
      await client.end();
    }
  },
};
const kinds = Object.entries(KINDS);

describe('libpq parameters of the database URL', async () => {
  const { url } = await createTestDatabase();

  afterEach(() => {
    vi.useRealTimers();
    vi.restoreAllMocks();
  });

  describe.each(kinds)('on a %s connection', (_kind, ask) => {
    it('client_encoding naming UTF8 (any of its spellings) is taken: the connection speaks UTF8', async () => {
      for (const name of ['UTF8', 'utf-8', 'unicode']) {
        expect(await ask(withQuery(url, `client_encoding=${name}`), 'show client_encoding')).toBe('UTF8');
      }
    });

    it("application_name in the URL names none of permgraph's connections: each keeps the name permgraph gives it", async () => {
      // (node-pg let the URL's name override a raw client's: the listener,
      // the watchdog and the pooler check took the URL's, the pool kept
      // permgraph's)
      const named = await ask(withQuery(url, 'application_name=from-the-url'), "select current_setting('application_name')");
      expect(named).not.toBe('from-the-url');
      expect(named).toBe(_kind === 'pool' ? 'permgraph' : 'url-parameters-test');
    });

    it('target_session_attrs=any is taken, and the connection is the server listed', async () => {
      expect(await ask(withQuery(url, 'target_session_attrs=any'), 'select pg_catalog.pg_is_in_recovery()')).toBe(false);
    });

    it.each([
      // (libpq would speak LATIN1: permgraph's connections always speak UTF8)
      ['client_encoding=LATIN1', 'client_encoding', /permgraph's connections speak UTF8 only/],
      ['client_encoding=auto', 'client_encoding', /permgraph's connections speak UTF8 only/],
      // (node-pg's raw clients applied it, the pool did not)
      ['options=-c%20statement_timeout%3D5s', 'options', /ALTER ROLE/],
      ['options=-c+search_path%3Dapp', 'options', /ALTER ROLE/],
      ['target_session_attrs=read-write', 'target_session_attrs', /first listed server that answers/],
      ['target_session_attrs=primary', 'target_session_attrs', /first listed server that answers/],
      ['target_session_attrs=standby', 'target_session_attrs', /first listed server that answers/],
      ['target_session_attrs=prefer-standby', 'target_session_attrs', /first listed server that answers/],
      ['keepalives_interval=5', 'keepalives_interval', /Node\.js cannot set for a socket: remove it/],
      ['keepalives_count=3', 'keepalives_count', /Node\.js cannot set for a socket: remove it/],
      ['tcp_user_timeout=1000', 'tcp_user_timeout', /Node\.js cannot set for a socket: remove it/],
      // (node-pg's raw clients opened a replication connection, the pool did not)
      ['replication=database', 'replication', /not replication connections/],
      // (node-pg's switch, read as require by the pool's parser and as
      // verify-full by node-pg; permgraph, reading sslmode only, connected
      // in plain text, a server offering TLS or not)
      ['ssl=true', 'ssl', /say which with sslmode instead: verify-full/],
      ['ssl=1', 'ssl', /say which with sslmode instead: verify-full/],
      // (the pool's parser reads it before the path's database, node-pg not at all: two databases for one URL)
      ['dbname=template1', 'dbname', /put the database in the URL's path/],
      // (parsed, then applied by none)
      ['gssencmode=require', 'gssencmode', /cannot encrypt with GSSAPI: remove it, and encrypt with TLS instead/],
      ['krbsrvname=postgres', 'krbsrvname', /Kerberos \(GSSAPI\) logins, which permgraph's connections cannot do/],
      ['gsslib=gssapi', 'gsslib', /Kerberos \(GSSAPI\) logins, which permgraph's connections cannot do/],
      ['service=app', 'service', /pg_service\.conf file, which permgraph does not read/],
      ['passfile=%2Ftmp%2Fpgpass', 'passfile', /PGPASSFILE environment variable/],
      ['hostaddr=127.0.0.1', 'hostaddr', /put the address in the host's place/],
      ['requirepeer=postgres', 'requirepeer', /cannot check/],
      ['sslcompression=1', 'sslcompression', /do not compress TLS/],
      // (libpq's, unknown to the pool's parser: refused with what to do)
      ['sslsni=0', 'sslsni', /always send a server's host name/],
      ['sslcrldir=%2Ftmp', 'sslcrldir', /named by sslcrl instead/],
      ['load_balance_hosts=random', 'load_balance_hosts', /try the hosts in the order listed/],
      ['require_auth=scram-sha-256', 'require_auth', /cannot enforce .*sslmode=verify-full/],
      ['sslcertmode=require', 'sslcertmode', /cannot require a server to ask for a client certificate/],
      ['sslcertmode=disable', 'sslcertmode', /remove sslcert and sslkey instead/],
      ['sslnegotiation=direct', 'sslnegotiation', /ask for TLS in PostgreSQL's protocol first/],
      // (the pool's fallback to plain text cannot carry them)
      ['sslmode=prefer&ssl_min_protocol_version=TLSv1.3', 'ssl_min_protocol_version', /under sslmode=prefer.*use sslmode=require or stronger/],
      ['sslmode=allow&ssl_max_protocol_version=TLSv1.2', 'ssl_max_protocol_version', /under sslmode=allow.*use sslmode=require or stronger/],
      ['sslmode=prefer&sslpassword=x', 'sslpassword', /under sslmode=prefer.*use sslmode=require or stronger/],
      // (the test URL names its host and port in its address: libpq and the
      // raw clients took the parameter's, the pool tried both hosts or
      // refused two ports with its parser's garbled message)
      ['port=5', 'port', /both in its address and as \?port=.*keep one of them/],
      ['host=127.0.0.1', 'host', /both in its address and as \?host=.*keep one of them/],
    ])('%s is refused with an InvalidInputError naming %s, saying what to do instead', async (query, name, advice) => {
      const error = await ask(withQuery(url, query), 'select 1').then(() => undefined, (e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidInputError);
      expect((error as Error).message).toMatch(new RegExp(`^the database URL sets ${name}[ ,:=]`));
      expect((error as Error).message).toMatch(advice);
    });

    it.each([
      'gssencmode=disable',
      // (libpq, finding no GSS credentials, goes on without GSS encryption)
      'gssencmode=prefer',
      'sslcompression=0',
      'sslsni=1',
      'load_balance_hosts=disable',
      'sslcertmode=allow',
      'sslnegotiation=postgres',
      'tty=x',
      'fallback_application_name=x',
      // (no TLS: libpq reads none of them)
      'sslmode=disable&ssl_min_protocol_version=TLSv1.3&sslcrl=%2Fnonexistent',
    ])('%s is taken as libpq takes it: the connection is made', async (query) => {
      expect(await ask(withQuery(url, query), 'select 1')).toBe(1);
    });

    it('sslrootcert naming a file with a + in its name is that file, as libpq and the pool\'s parser read it, not one with a space', async () => {
      const server = await startTlsServer();
      const trusted = await certificateNamed('ca.crt', 'root+ca.crt');
      expect(await outcome(ask, withQuery(server.url, `sslmode=verify-full&sslrootcert=${inUrl(trusted)}`))).toMatch(/fake server: no login/);
      // (the file named is the one checked against: another authority is refused)
      const other = await certificateNamed('other-ca.crt', 'other+ca.crt');
      expect(await outcome(ask, withQuery(server.url, `sslmode=verify-full&sslrootcert=${inUrl(other)}`))).toMatch(/self[- ]signed|unable to verify|certificate/i);
    });

    it('ssl_min_protocol_version and ssl_max_protocol_version bound the TLS version of the handshake', async () => {
      const server = await startTlsServer();
      expect(await outcome(ask, withQuery(server.url, 'sslmode=require&ssl_max_protocol_version=TLSv1.2'))).toMatch(/fake server: no login/);
      expect(await outcome(ask, withQuery(server.url, 'sslmode=require'))).toMatch(/fake server: no login/);
      expect(new Set(server.protocols)).toEqual(new Set(['TLSv1.2', 'TLSv1.3']));
      expect(server.protocols[0]).toBe('TLSv1.2');
      expect(server.protocols.at(-1)).toBe('TLSv1.3');
      const old = await startTlsServer({ maxVersion: 'TLSv1.2' });
      expect(await outcome(ask, withQuery(old.url, 'sslmode=require&ssl_min_protocol_version=TLSv1.3'))).toMatch(/protocol/i);
      expect(old.protocols).toEqual([]);
    });

    it('sslcrl is read into the TLS session of every connection that checks the chain (a file that is not a CRL is refused by it)', async () => {
      const server = await startTlsServer();
      const root = path.join(FIXTURES, 'ca.crt');
      expect(await outcome(ask, withQuery(server.url, `sslmode=verify-full&sslrootcert=${inUrl(root)}&sslcrl=${inUrl(root)}`))).toMatch(/Failed to parse CRL/);
      // (libpq reads it only to check the chain: under require, not at all)
      expect(await outcome(ask, withQuery(server.url, `sslmode=require&sslcrl=${inUrl(root)}`))).toMatch(/fake server: no login/);
    });

    it("without sslcrl, libpq's default list ~/.postgresql/root.crl is read where the chain is checked: a server certificate revoked there is refused", async () => {
      // (revoked-server.crt is signed by revoking-ca.crt, whose list
      // revoking-ca.crl revokes it)
      const server = await startTlsServer({}, 'revoked-server');
      const verified = withQuery(server.url, `sslmode=verify-full&sslrootcert=${inUrl(path.join(FIXTURES, 'revoking-ca.crt'))}`);
      const home = await mkdtemp(path.join(tmpdir(), 'permgraph-url-parameters-home-'));
      cleanUpAfter(() => rm(home, { recursive: true, force: true }));
      vi.stubEnv('HOME', home);
      cleanUpAfter(() => vi.unstubAllEnvs());
      expect(await outcome(ask, verified)).toMatch(/fake server: no login/);
      await mkdir(path.join(home, '.postgresql'));
      await copyFile(path.join(FIXTURES, 'revoking-ca.crl'), path.join(home, '.postgresql', 'root.crl'));
      expect(await outcome(ask, verified)).toMatch(/certificate revoked/);
      // (named, the URL's list is read instead: one that does not revoke it)
      const other = await certificateNamed('revoking-ca.crt', 'not-a-list.pem');
      expect(await outcome(ask, `${verified}&sslcrl=${inUrl(other)}`)).toMatch(/Failed to parse CRL/);
      // (under require the chain is not checked, and no list read)
      expect(await outcome(ask, withQuery(server.url, 'sslmode=require'))).toMatch(/fake server: no login/);
    });

    it('keepalives_idle is when every socket starts its keepalive probes; keepalives=0 turns them off', async () => {
      const setKeepAlive = vi.spyOn(Socket.prototype, 'setKeepAlive');
      await ask(withQuery(url, 'keepalives_idle=30'), 'select 1');
      expect(setKeepAlive.mock.calls.length).toBeGreaterThan(0);
      expect(setKeepAlive.mock.calls.every(([on, delay]) => on === true && delay === 30_000)).toBe(true);
      setKeepAlive.mockClear();
      await ask(withQuery(url, 'keepalives=0'), 'select 1');
      expect(setKeepAlive.mock.calls.filter(([on]) => on === true)).toEqual([]);
      setKeepAlive.mockClear();
      await ask(withQuery(url, 'keepalives=1'), 'select 1');
      expect(setKeepAlive.mock.calls.length).toBeGreaterThan(0);
      expect(setKeepAlive.mock.calls.every(([on]) => on === true)).toBe(true);
    });

    it('connect_timeout (seconds, 1 read as 2 as libpq reads it) is how long each connection waits for a server that does not answer', async () => {
      for (const [given, seconds] of [['2', 2], ['1', 2], ['7', 7]] as const) {
        const server = await startSilentServer();
        vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
        const attempt = ask(withQuery(server.url, `connect_timeout=${given}`), 'select 1');
        attempt.catch(() => {});
        await vi.waitFor(() => expect(server.connections()).toBe(1), { interval: 5 });
        vi.advanceTimersByTime(seconds * 1000 - 1);
        await new Promise((resolve) => setImmediate(resolve));
        expect(server.open.size).toBe(1); // (still waiting)
        vi.advanceTimersByTime(1);
        await vi.waitFor(() => expect(server.open.size).toBe(0), { interval: 5 }); // (given up, by the client)
        // (the pool tries again for a while: each try is given up as the first)
        let settled = false;
        attempt.then(() => (settled = true), () => (settled = true));
        for (let i = 0; i < 200 && !settled; i++) {
          vi.advanceTimersByTime(seconds * 1000);
          await sleep(25); // (real time: the pool tries again for 2 s of it)
        }
        vi.useRealTimers();
        await expect(attempt).rejects.toThrow(); // (the pool's: waiting for a connection, 60 s of fake time)
      }
    });
  });

  it("tlsPlan: the URL handed on keeps its other parameters' text, a + written %2B (node-pg would read a space); sslcrl, sslpassword and the versions become TLS options", async () => {
    const crl = await certificateNamed('ca.crt', 'revoked+list.pem');
    const plan = tlsPlan(`postgres://u@db.example/app?application_name=a+b&sslmode=verify-ca&sslrootcert=${path.join(FIXTURES, 'ca.crt')}&sslcrl=${crl}&sslpassword=p+q&ssl_min_protocol_version=TLSv1.3&options=`);
    expect(plan.url).toBe('postgres://u@db.example/app?application_name=a%2Bb&options=');
    expect(new URL(plan.url).searchParams.get('application_name')).toBe('a+b');
    expect(plan.tls).toMatchObject({ crl: await readFile(crl, 'utf8'), passphrase: 'p+q', minVersion: 'TLSv1.3', rejectUnauthorized: true });
    expect(() => tlsPlan('postgres://u@db.example/app?sslmode=require&ssl_min_protocol_version=TLSv1.3&ssl_max_protocol_version=TLSv1.2')).toThrow(
      /ssl_min_protocol_version \(TLSv1\.3\) is above its ssl_max_protocol_version \(TLSv1\.2\)/,
    );
    expect(() => tlsPlan('postgres://u@db.example/app?sslmode=require&ssl_min_protocol_version=TLSv9')).toThrow(InvalidInputError);
  });

  it("sslrootcert=system reads no default ~/.postgresql/root.crl, as libpq reads none there: a list of another CA's revocations refuses no public server", async () => {
    const home = await mkdtemp(path.join(tmpdir(), 'permgraph-url-parameters-home-'));
    cleanUpAfter(() => rm(home, { recursive: true, force: true }));
    vi.stubEnv('HOME', home);
    cleanUpAfter(() => vi.unstubAllEnvs());
    await mkdir(path.join(home, '.postgresql'));
    await copyFile(path.join(FIXTURES, 'revoking-ca.crl'), path.join(home, '.postgresql', 'root.crl'));
    // (libpq loads a CRL only beside a root certificate file: with the
    // system's roots, neither its default list nor any other; a list given
    // to Node's TLS is checked for every certificate of the chain, and one
    // of another CA leaves the server's without a list: refused)
    expect(tlsPlan('postgres://u@db.example/app?sslmode=verify-full&sslrootcert=system').tls).not.toHaveProperty('crl');
    // (beside a root certificate file it is read, as libpq reads it)
    const beside = tlsPlan(`postgres://u@db.example/app?sslmode=verify-full&sslrootcert=${path.join(FIXTURES, 'revoking-ca.crt')}`).tls;
    expect(beside).toMatchObject({ crl: await readFile(path.join(FIXTURES, 'revoking-ca.crl'), 'utf8') });
  });

  it("a host both in the address and as ?host= is refused with a Unix socket's ?host= that the URL's parser takes", () => {
    // (the parser refuses a bare / in the query: the advice must be written as it reads it)
    const refusal = (() => {
      try {
        readUrlParameters('postgres://u@db.example/app?host=other.example');
      } catch (error) {
        return error as Error;
      }
      throw new Error('not refused');
    })();
    expect(refusal).toBeInstanceOf(InvalidInputError);
    const advised = /\?host=(\S+) for a Unix socket/.exec(refusal.message)?.[1];
    expect(advised).toBeDefined();
    expect(() => readUrlParameters(`postgres://u@/app?host=${advised}`)).not.toThrow();
  });
});
