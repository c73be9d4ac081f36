// A connection that cannot succeed is reported after one attempt, as psql
// reports it: a refused login (a wrong password), a database that does not exist, a port
// nothing listens on. Trying again cures none of them; each try of a wrong
// password is one more failed login in the server's log. A server that is
// starting (57P03) is tried again: it lets the login in a moment later.
// Attempts are counted where they arrive (a proxy in front of the test
// server, a stand-in server), or, for a refused port, as the sockets this
// process connects.
import { Socket } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Permgraph } from '../../src/client.ts';
import { connectClient } from '../../src/db/client-config.ts';
import { openApplicationPool } from '../../src/db/pooler.ts';
import { cleanUpAfter } from '../helpers/cleanup.ts';
import { runCli } from '../helpers/cli.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { startFakePostgres } from '../helpers/fake-postgres.ts';
import { startTcpProxy } from '../helpers/tcp-proxy.ts';

describe('a first connection that cannot succeed', async () => {
  const { url } = await createTestDatabase();
  const proxy = await startTcpProxy(url);
  cleanUpAfter(() => proxy.close());
  const through = (change: (u: URL) => void) => {
    const u = new URL(proxy.url);
    change(u);
    return u.toString();
  };
  // A login the server refuses whatever its authentication method: under
  // password authentication a wrong password (the server does not say that
  // the role is missing), under trust (the clusters of test:postgres) a role
  // that does not exist.
  const refusedLogin = through((u) => {
    u.username = 'no_such_login';
    u.password = 'not-the-password';
  });
  const REFUSED = /password authentication failed for user "no_such_login"|role "no_such_login" does not exist/;
  const noDatabase = through((u) => (u.pathname = '/no_such_database'));

  afterEach(() => vi.restoreAllMocks());

  it('Permgraph.connect() reports a refused login (a wrong password) after one login', async () => {
    const before = proxy.connections();
    await expect(Permgraph.connect({ databaseUrl: refusedLogin, poolSize: 1 })).rejects.toThrow(REFUSED);
    expect(proxy.connections() - before).toBe(1);
  });

  it('Permgraph.connect() reports a database that does not exist after one login', async () => {
    const before = proxy.connections();
    await expect(Permgraph.connect({ databaseUrl: noDatabase, poolSize: 1 })).rejects.toThrow(/database "no_such_database" does not exist/);
    expect(proxy.connections() - before).toBe(1);
  });

  it('a command reports a refused login (a wrong password) after one login', async () => {
    const before = proxy.connections();
    const result = await runCli(['--database-url', refusedLogin, 'status']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^permgraph: .*\n$/);
    expect(result.stderr).toMatch(REFUSED);
    expect(proxy.connections() - before).toBe(1);
  });

  it('Permgraph.connect() reports a refused connection after one attempt', async () => {
    const connects = vi.spyOn(Socket.prototype, 'connect');
    await expect(Permgraph.connect({ databaseUrl: 'postgres://nobody:x@127.0.0.1:1/none', poolSize: 1 })).rejects.toThrow(/ECONNREFUSED/);
    expect(connects.mock.calls.filter((args: unknown[]) => args[0] === 1)).toHaveLength(1);
  });
});

describe('a server that is starting', () => {
  it('is tried again until it lets the login in', async () => {
    const fake = await startFakePostgres();
    try {
      fake.startingUp = 2;
      const client = await connectClient(fake.url, 'permgraph-test');
      client.end().catch(() => {}); // (the stand-in never answers a goodbye)
      expect(fake.connections()).toBe(3);
    } finally {
      await fake.close();
    }
  });

  it("is tried again by the pool of Permgraph.connect() and of every command, whose first connection stays in it", async () => {
    const fake = await startFakePostgres();
    try {
      fake.startingUp = 2;
      const pool = await openApplicationPool(fake.url, { poolSize: 1 });
      pool.dispose().catch(() => {}); // (the stand-in never answers a goodbye)
      expect(fake.connections()).toBe(3);
    } finally {
      await fake.close();
    }
  });
});
