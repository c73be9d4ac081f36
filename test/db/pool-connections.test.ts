// How a pool opens its connections (src/db/pool-connections.ts): each host
// of the URL once, in order, as libpq does; no pause before the first, no
// second try of a login the server refused.
import { createServer, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { openPool, sql } from '../../src/db/pool.ts';
import { cleanUpAfter } from '../helpers/cleanup.ts';
import { createTestDatabase } from '../helpers/database.ts';

/** A server that answers every login with `code`'s error, counting the connections it gets. */
async function startRefusingServer(code: string, message: string): Promise<{ port: number; connections: () => number }> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.once('data', () => {
      const text = Buffer.from(`SFATAL\0C${code}\0M${message}\0\0`);
      const header = Buffer.alloc(5);
      header.write('E');
      header.writeInt32BE(text.length + 4, 1);
      socket.end(Buffer.concat([header, text]));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanUpAfter(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { port: (server.address() as { port: number }).port, connections: () => connections };
}

describe("a pool's connections", async () => {
  const { url } = await createTestDatabase();

  it('a login the server refuses is asked once, and the pool says why', async () => {
    // (@databases/pg asked again for 2 s whatever the error, from 100 ms
    // after the pool's first query: a wrong password was tried six times)
    const server = await startRefusingServer('28P01', 'password authentication failed for user "app"');
    const pool = openPool(`postgres://app:wrong@127.0.0.1:${server.port}/app`, { poolSize: 1 });
    cleanUpAfter(() => pool.dispose());
    await expect(pool.query(sql`select 1`)).rejects.toThrow(/password authentication failed for user "app"/);
    expect(server.connections()).toBe(1);
  });

  it('each connection tries the hosts in the order listed, the first that takes it wins', async () => {
    const first = await startRefusingServer('57P03', 'the database system is starting up');
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
