// The embedded server keeps its port with its data: a URL printed once (by
// `npm start`) still reaches the server after a restart. These tests start
// their own embedded servers on their own data directories.
import { mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { PORT_ENV, PORT_FILE, startEmbedded, type EmbeddedServer } from '../../src/db/embedded.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import type { Logger } from '../../src/logger.ts';

const FAST = { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off' };
const portOf = (url: string) => Number(new URL(url).port);

function listen(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

async function freePort(): Promise<number> {
  for (;;) {
    const server = await listen(0);
    const address = server.address();
    await new Promise((resolve) => server.close(resolve));
    const port = typeof address === 'object' && address ? address.port : 0;
    if (port !== 0 && port !== 5432) return port;
  }
}

async function answers(url: string): Promise<boolean> {
  const db = openPool(url, { poolSize: 1 });
  try {
    const [row] = await db.query(sql`select 1 as one`);
    return row.one === 1;
  } finally {
    await db.dispose();
  }
}

describe('embedded server port', async () => {
  const scratch = await mkdtemp(path.join(tmpdir(), 'permgraph-port-'));
  const dataDir = path.join(scratch, 'data');
  const running: EmbeddedServer[] = [];
  const start = async (options: { dataDir?: string; logger?: Logger } = {}) => {
    const server = await startEmbedded({ dataDir, settings: FAST, ...options });
    running.push(server);
    return server;
  };
  const stopAll = async () => {
    for (const server of running.splice(0).reverse()) await server.stop();
  };
  const savedEnv = process.env[PORT_ENV];

  afterEach(async () => {
    if (savedEnv === undefined) delete process.env[PORT_ENV];
    else process.env[PORT_ENV] = savedEnv;
    await stopAll();
  });
  afterAll(async () => {
    await stopAll();
    await rm(scratch, { recursive: true, force: true });
  });

  it('started by several at once on a fresh directory: one initialises and starts it, the others wait and join; a start lock left by a dead process is taken over', async () => {
    // (commands run at once without DATABASE_URL raced initdb, took the kept port for another process's, or connected before it listened)
    const fresh = path.join(scratch, 'together');
    await writeFile(`${fresh}.starting`, '999999999'); // no such process
    const servers = await Promise.all([start({ dataDir: fresh }), start({ dataDir: fresh }), start({ dataDir: fresh })]);
    expect(servers.filter((s) => s.ownedByUs)).toHaveLength(1);
    expect(new Set(servers.map((s) => s.url)).size).toBe(1);
    for (const server of servers) expect(await answers(server.url)).toBe(true);
    await expect(stat(`${fresh}.starting`)).rejects.toMatchObject({ code: 'ENOENT' });
    // a lock left without its pid (its process died between creating and writing it) is taken over once it is old
    const other = path.join(scratch, 'unwritten');
    await writeFile(`${other}.starting`, '');
    const old = new Date(Date.now() - 60_000);
    await utimes(`${other}.starting`, old, old);
    const server = await start({ dataDir: other });
    expect(server.ownedByUs).toBe(true);
    expect(await answers(server.url)).toBe(true);
  });

  it('keeps the port chosen at initialisation and listens on it again after a restart', async () => {
    delete process.env[PORT_ENV];
    const first = await start();
    const port = portOf(first.url);
    expect(first.ownedByUs).toBe(true);
    expect(port).not.toBe(5432);
    expect(await readFile(path.join(dataDir, PORT_FILE), 'utf8')).toBe(`${port}\n`);

    // While it runs, another start joins it.
    const joined = await start();
    expect(joined).toMatchObject({ url: first.url, ownedByUs: false });

    await stopAll();
    const again = await start();
    expect(again.ownedByUs).toBe(true);
    expect(again.url).toBe(first.url);
    expect(await answers(first.url)).toBe(true); // the URL printed before the restart works
  });

  it('refuses to start when another process holds the kept port, naming the port and the override', async () => {
    delete process.env[PORT_ENV];
    const kept = Number((await readFile(path.join(dataDir, PORT_FILE), 'utf8')).trim());
    const squatter = await listen(kept);
    try {
      await expect(start()).rejects.toThrow(new RegExp(`port ${kept} \\(from .*${PORT_FILE}\\) is in use by another process; .*set ${PORT_ENV} to another port`));
    } finally {
      await new Promise((resolve) => squatter.close(resolve));
    }
  });

  it('PERMGRAPH_PORT overrides the kept port, and is kept from then on', async () => {
    const wanted = await freePort();
    process.env[PORT_ENV] = String(wanted);
    const overridden = await start();
    expect(portOf(overridden.url)).toBe(wanted);
    expect(await answers(overridden.url)).toBe(true);
    await stopAll();

    delete process.env[PORT_ENV];
    const later = await start();
    expect(portOf(later.url)).toBe(wanted);
  });

  it('refuses 5432 and malformed ports from PERMGRAPH_PORT', async () => {
    process.env[PORT_ENV] = '5432';
    await expect(start()).rejects.toThrow(/invalid port "5432" from PERMGRAPH_PORT: give a TCP port from 1 to 65535 other than 5432/);
    process.env[PORT_ENV] = 'http';
    await expect(start()).rejects.toThrow(/invalid port "NaN" from PERMGRAPH_PORT/);
  });

  it.runIf(process.getuid?.() === 0)('as root, opens a private parent directory to the postgres OS user and says how to avoid it', async () => {
    delete process.env[PORT_ENV];
    const parent = path.join(scratch, 'private');
    await mkdir(parent, { mode: 0o700 });
    const lines: string[] = [];
    const logger: Logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const server = await start({ dataDir: path.join(parent, 'data'), logger });
    expect(await answers(server.url)).toBe(true);
    expect((await stat(parent)).mode & 0o005).toBe(0o005);
    const warning = lines.map((line) => JSON.parse(line)).find((entry) => entry.dir === parent);
    expect(warning).toMatchObject({ level: 40, from: '0700', to: '0705' });
    expect(warning.msg).toContain('set PERMGRAPH_DATA_DIR to a directory whose parent is mode 0755');
  });
});
