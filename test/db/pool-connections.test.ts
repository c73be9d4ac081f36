// How a pool opens its connections (src/db/pool-connections.ts): each host
// of the URL once, in order, as libpq does; no pause before the first, no
// second try of a login the server refused; and the search path each is given.
import { describe, expect, it } from 'vitest';
import { openPool, sql } from '../../src/db/pool.ts';
import { cleanUpAfter } from '../helpers/cleanup.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { startFakePostgres } from '../helpers/fake-postgres.ts';

/** A server that refuses every login (FATAL 57P03, as one starting up), counting the connections it gets. */
async function startRefusingServer() {
  const fake = await startFakePostgres();
  fake.startingUp = Number.MAX_SAFE_INTEGER;
  cleanUpAfter(() => fake.close());
  return { port: Number(new URL(fake.url).port), connections: () => fake.connections() };
}

describe("a pool's connections", async () => {
  const { url } = await createTestDatabase();

  it('a login the server refuses is asked once, and the pool says why', async () => {
    // (@databases/pg asked again for 2 s whatever the error, from 100 ms
    // after the pool's first query: a wrong password was tried six times.
    // Trying again a server that is starting is the first connection's
    // business: connectClient, src/db/client-config.ts.)
    const server = await startRefusingServer();
    const pool = openPool(`postgres://app:secret@127.0.0.1:${server.port}/app`, { poolSize: 1 });
    cleanUpAfter(() => pool.dispose());
    await expect(pool.query(sql`select 1`)).rejects.toThrow(/the database system is starting up/);
    expect(server.connections()).toBe(1);
  });

  it('each connection tries the hosts in the order listed, the first that takes it wins', async () => {
    const first = await startRefusingServer();
    const parsed = new URL(url);
    const port = Number(parsed.port);
    const listed = url.replace(`@${parsed.host}/`, `@127.0.0.1:${first.port},${parsed.host}/`);
    const pool = openPool(listed, { poolSize: 3 });
    cleanUpAfter(() => pool.dispose());
    // three connections at once, each on the second host after one try of the first
    const ports = await Promise.all([1, 2, 3].map(() =>
      pool.tx(async (tx) => {
        const [row] = await tx.query(sql`select inet_server_port() as port, pg_sleep(0.2)`);
        return row.port as number;
      }),
    ));
    expect(ports).toEqual([port, port, port]);
    expect(first.connections()).toBe(3);
  });
});

describe("a pool's search path", async () => {
  const { url } = await createTestDatabase();

  it('is pinned on every connection by default, and left as the login has it when the caller says so', async () => {
    const pathOf = async (pinSearchPath?: boolean) => {
      const pool = openPool(url, { poolSize: 2, ...(pinSearchPath === undefined ? {} : { pinSearchPath }) });
      try {
        // (two connections at once: each is set up as it opens)
        return await Promise.all([1, 2].map(() => pool.task(async (c) => {
          const [row] = await c.query(sql`select current_setting('search_path') as path, pg_sleep(0.05)`);
          return row.path as string;
        })));
      } finally {
        await pool.dispose();
      }
    };
    expect(await pathOf()).toEqual(['pg_catalog, pg_temp', 'pg_catalog, pg_temp']);
    expect(await pathOf(true)).toEqual(['pg_catalog, pg_temp', 'pg_catalog, pg_temp']);
    // (the server's default)
    expect(await pathOf(false)).toEqual(['"$user", public', '"$user", public']);
  });
});
