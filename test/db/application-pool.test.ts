// The pool of Permgraph.connect() and of every command tells on each of its
// connections whether it is direct (and only then pins the search path),
// with no connection of its own to ask: the connections that reach the
// server are the pool's, which its statements then use. Counted where they
// arrive, at a proxy in front of the test server.
import { describe, expect, it } from 'vitest';
import { Permgraph } from '../../src/client.ts';
import { sql } from '../../src/db/pool.ts';
import { cleanUpAfter } from '../helpers/cleanup.ts';
import { runCli } from '../helpers/cli.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { startTcpProxy } from '../helpers/tcp-proxy.ts';

describe('the application pool', async () => {
  const { url } = await createTestDatabase();
  const proxy = await startTcpProxy(url);
  cleanUpAfter(() => proxy.close());

  it('Permgraph.connect() and a query open one connection, pinned to the search path', async () => {
    const before = proxy.connections();
    const pg = await Permgraph.connect({ databaseUrl: proxy.url, poolSize: 4 });
    try {
      await pg.addNode('pool-ann', 'user');
      expect(await pg.check('pool-ann', 'pool-ann', 'read')).toBe(false); // (not applied: no worker runs here)
      expect(await pg.db.query(sql`select current_setting('search_path') as path`)).toEqual([{ path: 'pg_catalog, pg_temp' }]);
    } finally {
      await pg.close();
    }
    expect(proxy.connections() - before).toBe(1);
  });

  it('`permgraph check` opens one connection', async () => {
    const before = proxy.connections();
    const result = await runCli(['--database-url', proxy.url, 'check', 'pool-ann', 'pool-ann', 'read']);
    expect([result.code, result.stdout, result.stderr]).toEqual([3, 'no\n', '']); // (3: denied)
    expect(proxy.connections() - before).toBe(1);
  });
});
