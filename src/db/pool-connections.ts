// How permgraph's pools open their connections: each host of the URL tried
// once, in order, as libpq tries them, with no pause before the first.
//
// @databases/pg (6.1.0, pinned) opens a pool's first connection through a
// loop that sleeps before every attempt, the first included (100 ms, then
// 200, 300, …), and tries again for 2 s whatever the error: every command
// of the CLI and every Permgraph.connect() waited 100 ms for nothing, and a
// wrong password was tried again for 2 s. Its connections after the first
// went, without that loop, to whichever host the first reached. permgraph
// decides itself what to try again (a server that is starting, for the
// first connection of a command, of connect() and of the worker's start:
// connectClient in client-config.ts; the worker's reconnect loop), so its
// pools connect as libpq does: the library's source of connections is
// replaced by this one, once, before the first pool is made (openPool).
import { createRequire } from 'node:module';

/** The settings @databases/pg hands its source: node-pg's, with the URL's hosts and its TLS plan apart. */
interface SourceConfig {
  hosts: { host: string; port?: number }[];
  ssl?: { connectionOptions: unknown; allowFallback: boolean } | false;
  [option: string]: unknown;
}

/** @databases/pg's wrapper of a node-pg client, as its pool takes it. */
interface Driver {
  /** Its node-pg client. */
  client: unknown;
  connect(): Promise<unknown>;
  dispose(): Promise<unknown>;
}

/**
 * What a pool does on each connection it opens, before its first use (the
 * pool's own set-up, types and `schema`, follows): given the connection's
 * node-pg client. A failure closes the connection and fails its opening.
 */
export type ConnectionSetUp = (client: unknown) => Promise<void>;
type DriverClass = new (client: unknown, handlers: unknown, acquireLockTimeoutMilliseconds: unknown) => Driver;
type Source = (config: SourceConfig, handlers: unknown, acquireLockTimeoutMilliseconds: unknown) => () => Promise<Driver>;

/** What a server without TLS answers a client that asks for it (node-pg's words, as @databases/pg reads them). */
const NO_TLS = /the server does not support ssl connections/i;

let installed = false;

/** The set-up of the pool being made (withConnectionSetUp), which its source of connections takes as it is made. */
let pendingSetUp: ConnectionSetUp | undefined;

/**
 * Makes a pool (`make`, which must make exactly one, synchronously) whose
 * connections each get `setUp` once connected. @databases/pg passes its
 * source only the settings of node-pg, so the set-up reaches the source
 * here: the pool's constructor makes its source synchronously, inside
 * `make`.
 */
export function withConnectionSetUp<T>(setUp: ConnectionSetUp | undefined, make: () => T): T {
  pendingSetUp = setUp;
  try {
    return make();
  } finally {
    pendingSetUp = undefined;
  }
}

/** Replaces @databases/pg's source of connections with directConnections (idempotent). */
export function installDirectConnections(): void {
  if (installed) return;
  const require = createRequire(import.meta.url);
  const sourceModule = require.resolve('@databases/pg/lib/ConnectionSource.js');
  const library = createRequire(sourceModule);
  const module = library(sourceModule) as { default: Source };
  const Driver = (library('./Driver.js') as { default: DriverClass }).default;
  // (the node-pg the library itself loads, should it ever differ from ours)
  const { Client } = library('pg') as { Client: new (options: object) => unknown };
  module.default = (config, handlers, lockTimeout) => directConnections(config, (options) => new Driver(new Client(options), handlers, lockTimeout), pendingSetUp);
  installed = true;
}

/**
 * A source of connections: each host in turn, the first that connects
 * wins; under sslmode allow or prefer a host that refuses TLS is tried
 * again in plain text (as the library did). Throws the last host's error.
 * The connection made is then set up (`setUp`), or closed if that fails.
 */
export function directConnections({ hosts, ssl, ...options }: SourceConfig, driverFor: (options: object) => Driver, setUp?: ConnectionSetUp): () => Promise<Driver> {
  const firstHost = firstHostConnection(hosts, ssl, options, driverFor);
  if (!setUp) return firstHost;
  return async () => {
    const driver = await firstHost();
    try {
      await setUp(driver.client);
    } catch (error) {
      await driver.dispose().catch(() => {}); // (the setting-up error is the one to report)
      throw error;
    }
    return driver;
  };
}

function firstHostConnection(hosts: SourceConfig['hosts'], ssl: SourceConfig['ssl'], options: object, driverFor: (options: object) => Driver): () => Promise<Driver> {
  return async () => {
    let lastError: unknown = new Error('the database URL names no host');
    for (const { host, port } of hosts) {
      const tls = (ssl && ssl.connectionOptions) || false;
      try {
        return await connected(driverFor({ ...options, host, port, ssl: tls }));
      } catch (error) {
        lastError = error;
        if (!(tls && ssl && ssl.allowFallback && NO_TLS.test(String((error as Error)?.message)))) continue;
      }
      try {
        return await connected(driverFor({ ...options, host, port, ssl: false }));
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError;
  };
}

async function connected(driver: Driver): Promise<Driver> {
  await driver.connect();
  return driver;
}
