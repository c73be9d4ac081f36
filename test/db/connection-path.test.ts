// A URL that lists several hosts, which the pool reads (@databases/pg
// tries them in turn, like libpq) and node-pg alone does not: the
// check of how the URL reaches the server (src/db/pooler.ts), which the
// worker, doctor and an import run first, must reach the server the pool
// reaches, or nothing connects at all; and Permgraph.connect()'s pool, which
// tells direct connections on its own, must connect too.
import { describe, expect, it } from 'vitest';
import { Permgraph } from '../../src/client.ts';
import { sql } from '../../src/db/pool.ts';
import { connectionPath } from '../../src/db/pooler.ts';
import { createTestDatabase } from '../helpers/database.ts';

describe('a URL that lists several hosts', async () => {
  const { url } = await createTestDatabase();
  const { host, port } = new URL(url);
  // Nothing listens on 127.0.0.2, nor on port 1: the pool goes on to the next host, where the server is.
  const sharedPort = url.replace(`@${host}/`, `@127.0.0.2,${host}/`);
  const ownPorts = url.replace(`@${host}/`, `@127.0.0.1:1,${host}/`);

  it('the check of how it reaches the server finds the server the pool connects to', async () => {
    expect(await connectionPath(sharedPort)).toBe('direct');
    expect(await connectionPath(ownPorts)).toBe('direct');
  });

  it('Permgraph.connect() connects, and pins the search path of its direct connections', async () => {
    for (const several of [sharedPort, ownPorts]) {
      const pg = await Permgraph.connect({ databaseUrl: several, poolSize: 1 });
      try {
        expect(await pg.db.query(sql`select current_setting('search_path') as path, inet_server_port() as port`)).toEqual([{ path: 'pg_catalog, pg_temp', port: Number(port) }]);
      } finally {
        await pg.close();
      }
    }
  });
});
