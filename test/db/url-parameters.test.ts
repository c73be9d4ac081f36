// The libpq parameters of a database URL that the pool's parser knows but
// the pool does not pass to its connections (options, connect_timeout,
// keepalives*, client_encoding, target_session_attrs, replication), while
// node-pg's raw clients (the first connection, LISTEN, COPY, the watchdog)
// applied some of them: each is either applied alike by every kind of
// connection permgraph opens, or refused, naming it, before any connects.
// What a connection applied is read where it lands: the server's own
// settings (show), the sockets' keepalive switches (Node's setKeepAlive),
// and when a server that never answers sees the connection given up.
import { createServer, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { clientConfig, connectClient } from '../../src/db/client-config.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { cleanUpAfter } from '../helpers/cleanup.ts';
import { createTestDatabase } from '../helpers/database.ts';

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
    ])('%s is refused with an InvalidInputError naming %s, saying what to do instead', async (query, name, advice) => {
      const error = await ask(withQuery(url, query), 'select 1').then(() => undefined, (e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidInputError);
      expect((error as Error).message).toMatch(new RegExp(`^the database URL sets ${name}[ ,:]`));
      expect((error as Error).message).toMatch(advice);
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
});
