// TLS as the URL's sslmode says, read as libpq reads it (src/db/tls.ts), on
// every kind of connection permgraph opens: the pool, a raw client (import's
// COPY) and the worker's listener. Against a server with TLS on (a
// certificate for "localhost" signed by a test authority, test/fixtures/tls),
// one whose certificate names the IP address 127.0.0.1 instead (signed by
// another test authority: ip-ca.crt), and against the suite's server, which
// has no TLS.
import { execFileSync } from 'node:child_process';
import { chmod, chown, copyFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { LISTENER_APPLICATION_NAME } from '../../src/constants.ts';
import { clientConfig, type ClientConfigOptions } from '../../src/db/client-config.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import { tlsPlan } from '../../src/db/tls.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { silentLogger } from '../../src/logger.ts';
import { startListener } from '../../src/worker/listener.ts';
import { createProbe } from '../../src/worker/probe.ts';
import { connectionPeer } from '../../src/db/close-connection.ts';
import { ClusterSet, type Cluster } from '../helpers/cluster.ts';
import { startTcpProxy } from '../helpers/tcp-proxy.ts';
import { REPO } from '../docs/doctest.ts';

const FIXTURES = path.join(REPO, 'test/fixtures/tls');
const CA = path.join(FIXTURES, 'ca.crt');
const OTHER_CA = path.join(FIXTURES, 'other-ca.crt');
/**
 * The authority of ip-server.crt, a certificate for 127.0.0.1 only (an IP
 * address among its names, no host name). Made with openssl for 100 years
 * (`req -x509` for the authority, then `x509 -req` with subjectAltName
 * IP:127.0.0.1); the authority's key was not kept.
 */
const IP_CA = path.join(FIXTURES, 'ip-ca.crt');

/** The URL with another host and these query parameters. */
function withTls(url: string, host: string, params: Record<string, string>): string {
  const u = new URL(url);
  u.hostname = host;
  for (const [key, value] of Object.entries(params)) u.searchParams.set(key, value);
  return u.toString();
}

/** Whether the pool's connection to `url` is encrypted (it fails if the connection is refused). */
async function poolUsesTls(url: string): Promise<boolean> {
  const pool = openPool(url, { poolSize: 1 });
  try {
    const [row] = await pool.query(sql`select ssl from pg_stat_ssl where pid = pg_backend_pid()`);
    return row.ssl as boolean;
  } finally {
    await pool.dispose();
  }
}

/** The same through a raw pg.Client on clientConfig's settings. */
async function clientUsesTls(url: string, options: ClientConfigOptions = {}): Promise<boolean> {
  const client = new pg.Client(await clientConfig(url, 'permgraph-tls-test', options));
  client.on('error', () => {});
  await client.connect();
  try {
    const { rows } = await client.query('select ssl from pg_stat_ssl where pid = pg_backend_pid()');
    return rows[0].ssl as boolean;
  } finally {
    await client.end();
  }
}

/** Whether the worker's listener on `url` is encrypted, as `server` (reached as its admin) sees its session. */
async function listenerUsesTls(url: string, server: { url(): string }): Promise<boolean[]> {
  const listener = await startListener(url, () => {}, silentLogger);
  try {
    const admin = openPool(server.url(), { poolSize: 1 });
    try {
      const rows = await admin.query(sql`
        select s.ssl from pg_stat_activity a join pg_stat_ssl s using (pid) where a.application_name = ${LISTENER_APPLICATION_NAME}`);
      return rows.map((row) => row.ssl as boolean);
    } finally {
      await admin.dispose();
    }
  } finally {
    await listener.close();
  }
}

describe('sslmode, as libpq reads it', () => {
  it('the plan of each mode: plain, fallback, unverified, verified chain, verified host; the TLS parameters leave the URL', () => {
    const base = 'postgres://u:p@db.example:5433/app?application_name=x';
    expect(tlsPlan(base)).toMatchObject({ mode: 'disable', tls: null, plainIfRefused: false });
    expect(tlsPlan(`${base}&sslmode=prefer`)).toMatchObject({ mode: 'prefer', tls: { rejectUnauthorized: false }, plainIfRefused: true });
    expect(tlsPlan(`${base}&sslmode=allow`).plainIfRefused).toBe(true);
    const required = tlsPlan(`${base}&sslmode=require&sslcert=`);
    expect(required).toMatchObject({ mode: 'require', tls: { rejectUnauthorized: false }, plainIfRefused: false });
    expect(required.url).toBe('postgres://u:p@db.example:5433/app?application_name=x');
    expect(tlsPlan(`${base}&sslmode=no-verify`).mode).toBe('require');
    const full = tlsPlan(`${base}&sslmode=verify-full&sslrootcert=${CA}`);
    expect(full.tls).toMatchObject({ rejectUnauthorized: true, host: 'db.example' });
    expect(full.tls?.ca).toContain('BEGIN CERTIFICATE');
    const chain = tlsPlan(`${base}&sslmode=verify-ca&sslrootcert=${CA}`);
    expect(chain.tls?.rejectUnauthorized).toBe(true);
    expect(chain.tls?.checkServerIdentity?.('anything', {} as never)).toBeUndefined();
    // libpq: require with a root certificate checks the chain, as verify-ca
    expect(tlsPlan(`${base}&sslmode=require&sslrootcert=${CA}`).tls?.rejectUnauthorized).toBe(true);
    expect(() => tlsPlan(`${base}&sslmode=required`)).toThrow(InvalidInputError);
    expect(() => tlsPlan(`${base}&sslmode=required`)).toThrow('sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full, got "required"');
    expect(() => tlsPlan(`${base}&sslmode=verify-full&sslrootcert=/nonexistent/root.crt`)).toThrow(/^sslrootcert "\/nonexistent\/root.crt" cannot be read/);
  });

  it('TLS parameters in a connection string that is not a postgres:// URL are refused, not dropped', () => {
    for (const text of ['host=db.example user=u sslmode=require', 'host=db.example sslrootcert=/root.crt']) {
      expect(() => tlsPlan(text)).toThrow(InvalidInputError);
      expect(() => tlsPlan(text)).toThrow(/^TLS settings \(sslmode, sslrootcert, …\) are read from a postgres:\/\/ URL only/);
    }
    expect(tlsPlan('host=db.example user=u')).toMatchObject({ mode: 'disable', tls: null });
  });

  it('a URL listing several hosts each with its port, which URL cannot parse, is read too; none of them is the host verify-full checks', () => {
    const several = 'postgres://u:p@h1:5432,h2:5433/app?application_name=x';
    expect(tlsPlan(several)).toMatchObject({ mode: 'disable', tls: null, url: several });
    const full = tlsPlan(`${several}&sslmode=verify-full&sslrootcert=${CA}`);
    expect(full).toMatchObject({ mode: 'verify-full', url: several, tls: { rejectUnauthorized: true }, plainIfRefused: false });
    expect(full.tls?.ca).toContain('BEGIN CERTIFICATE');
    expect(full.tls?.host).toBeUndefined();
    expect(tlsPlan('postgres://u:p@h1,h2:5433/app?sslmode=verify-full').tls?.host).toBeUndefined();
    expect(tlsPlan(`${several}&sslmode=prefer`)).toMatchObject({ mode: 'prefer', url: several, plainIfRefused: true });
    expect(() => tlsPlan(`${several}&sslmode=required`)).toThrow('sslmode must be one of');
  });

  describe('against servers', () => {
    let clusters: ClusterSet;
    let tlsServer: Cluster;
    let ipServer: Cluster;
    const plainServer = () => inject('pgServerUrl');

    /** A server with TLS on, presenting the certificate `name`.crt (key `name`.key) of the fixtures. */
    async function startTlsServer(name: string): Promise<Cluster> {
      // The key must belong to the server's OS user and be private to it.
      for (const ext of ['crt', 'key']) await copyFile(path.join(FIXTURES, `${name}.${ext}`), path.join(clusters.scratch, `${name}.${ext}`));
      const key = path.join(clusters.scratch, `${name}.key`);
      await chmod(key, 0o600);
      if (process.getuid?.() === 0) {
        const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
        await chown(key, uid, uid);
      }
      return clusters.startFresh(name, {
        ssl: 'on',
        ssl_cert_file: path.join(clusters.scratch, `${name}.crt`),
        ssl_key_file: key,
        listen_addresses: 'localhost',
      });
    }

    beforeAll(async () => {
      clusters = await ClusterSet.create();
      [tlsServer, ipServer] = await Promise.all([startTlsServer('server'), startTlsServer('ip-server')]);
    });
    afterAll(async () => {
      await clusters?.stopAll();
    });

    it('require: encrypted, any certificate; refused by a server without TLS, never plain text', async () => {
      expect(await poolUsesTls(withTls(tlsServer.url(), '127.0.0.1', { sslmode: 'require' }))).toBe(true);
      expect(await clientUsesTls(withTls(tlsServer.url(), '127.0.0.1', { sslmode: 'require' }))).toBe(true);
      await expect(poolUsesTls(withTls(plainServer(), '127.0.0.1', { sslmode: 'require' }))).rejects.toThrow(/does not support SSL/);
      await expect(clientUsesTls(withTls(plainServer(), '127.0.0.1', { sslmode: 'require' }))).rejects.toThrow(/does not support SSL/);
    });

    it('prefer: encrypted where the server offers it, plain text where it does not', async () => {
      expect(await poolUsesTls(withTls(tlsServer.url(), '127.0.0.1', { sslmode: 'prefer' }))).toBe(true);
      expect(await clientUsesTls(withTls(tlsServer.url(), '127.0.0.1', { sslmode: 'prefer' }))).toBe(true);
      expect(await poolUsesTls(withTls(plainServer(), '127.0.0.1', { sslmode: 'prefer' }))).toBe(false);
      expect(await clientUsesTls(withTls(plainServer(), '127.0.0.1', { sslmode: 'prefer' }))).toBe(false);
    });

    it('verify-ca checks the chain; verify-full the chain and the host name', async () => {
      const url = (host: string, mode: string, root?: string) => withTls(tlsServer.url(), host, { sslmode: mode, ...(root ? { sslrootcert: root } : {}) });
      expect(await poolUsesTls(url('127.0.0.1', 'verify-ca', CA))).toBe(true); // the certificate names localhost, not 127.0.0.1: no matter
      expect(await poolUsesTls(url('localhost', 'verify-full', CA))).toBe(true);
      expect(await clientUsesTls(url('localhost', 'verify-full', CA))).toBe(true);
      await expect(poolUsesTls(url('127.0.0.1', 'verify-full', CA))).rejects.toThrow(/127\.0\.0\.1/);
      await expect(clientUsesTls(url('127.0.0.1', 'verify-full', CA))).rejects.toThrow(/127\.0\.0\.1/);
      await expect(poolUsesTls(url('localhost', 'verify-ca', OTHER_CA))).rejects.toThrow(/certificate/);
      await expect(clientUsesTls(url('localhost', 'verify-full', OTHER_CA))).rejects.toThrow(/certificate/);
      // no root certificate given: the system's authorities, which do not know the test one
      await expect(poolUsesTls(url('localhost', 'verify-full'))).rejects.toThrow(/certificate/);
    });

    it("a raw client sent to the address a session reached (the watchdog's probe) still checks the URL's host name", async () => {
      const url = (host: string, mode: string) => withTls(tlsServer.url(), host, { sslmode: mode, sslrootcert: CA });
      const address = { host: '127.0.0.1', port: tlsServer.port };
      // the URL's port leads nowhere: only the address is connected to
      const elsewhere = (u: string) => Object.assign(new URL(u), { port: '1' }).toString();
      expect(await clientUsesTls(elsewhere(url('localhost', 'verify-full')), { address })).toBe(true);
      await expect(clientUsesTls(elsewhere(url('127.0.0.1', 'verify-full')), { address })).rejects.toThrow(/127\.0\.0\.1/);
      expect(await clientUsesTls(elsewhere(url('localhost', 'prefer')), { address })).toBe(true);
    });

    it("the watchdog's probe of a session reached through a URL listing several hosts, under verify-full, checks the name of the host that session reached", async () => {
      const url = new URL(withTls(tlsServer.url(), 'localhost', { sslmode: 'verify-full', sslrootcert: CA }));
      const severalHosts = url.toString().replace(`@${url.host}/`, `@localhost,${url.host}/`);
      expect(severalHosts).toContain('@localhost,localhost:');
      const pool = openPool(severalHosts, { poolSize: 1 });
      try {
        expect(await pool.query(sql`select ssl from pg_stat_ssl where pid = pg_backend_pid()`)).toEqual([{ ssl: true }]);
        await pool.task(async (conn) => {
          const [me] = await conn.query(sql`
            select pg_backend_pid() as pid, extract(epoch from backend_start)::text as started from pg_stat_activity where pid = pg_backend_pid()`);
          const peer = connectionPeer(conn);
          expect(peer).toMatchObject({ port: tlsServer.port });
          // (the session sits idle while it is asked about: alive, being far from stuck)
          const outcome = await createProbe(severalHosts, 10_000)({ pid: Number(me.pid), startedAt: me.started, peer }, 600_000);
          expect(outcome).toEqual({ kind: 'alive', state: 'idle' });
        });
      } finally {
        await pool.dispose();
      }
    });

    it('several hosts each with its port: verify-full checks the host each connection reached; require never falls back to plain text', async () => {
      // (port 1 of 127.0.0.1 first, where nothing listens; then the server)
      const ownPorts = (server: Cluster | string, root: string, mode = 'verify-full') => {
        const u = new URL(withTls(typeof server === 'string' ? server : server.url(), '127.0.0.1', { sslmode: mode, sslrootcert: root }));
        return u.toString().replace(`@${u.host}/`, `@127.0.0.1:1,${u.host}/`);
      };
      expect(ownPorts(ipServer, IP_CA)).toMatch(/@127\.0\.0\.1:1,127\.0\.0\.1:\d+\//);
      expect(await poolUsesTls(ownPorts(ipServer, IP_CA))).toBe(true);
      const listener = await startListener(ownPorts(ipServer, IP_CA), () => {}, silentLogger);
      await listener.close();
      // a certificate for localhost at 127.0.0.1
      await expect(poolUsesTls(ownPorts(tlsServer, CA))).rejects.toThrow(/IP: 127\.0\.0\.1 is not in the cert's list/);
      await expect(startListener(ownPorts(tlsServer, CA), () => {}, silentLogger)).rejects.toThrow(/IP: 127\.0\.0\.1 is not in the cert's list/);
      // a server without TLS
      await expect(poolUsesTls(ownPorts(plainServer(), CA, 'require'))).rejects.toThrow(/does not support SSL/);
      await expect(startListener(ownPorts(plainServer(), CA, 'require'), () => {}, silentLogger)).rejects.toThrow(/does not support SSL/);
    });

    it('verify-full on a URL listing several IP addresses checks each connection against the address it went to', async () => {
      /** The server's URL under verify-full, listing `hosts` (which share its port) instead of its host. */
      const listing = (server: Cluster, hosts: string, root: string, port = server.port) =>
        withTls(server.url(), 'localhost', { sslmode: 'verify-full', sslrootcert: root }).replace(`@localhost:${server.port}/`, `@${hosts}:${port}/`);
      // Nothing listens on 127.0.0.2: connections go on to 127.0.0.1, the
      // address the certificate names.
      const reached = listing(ipServer, '127.0.0.2,127.0.0.1', IP_CA);
      expect(reached).toContain('@127.0.0.2,127.0.0.1:');
      expect(await poolUsesTls(reached)).toBe(true);
      const pool = openPool(reached, { poolSize: 1 });
      try {
        // the raw clients sent to the address a pooled connection reached (pooler check, watchdog probe)
        const peer = await pool.task(async (conn) => connectionPeer(conn));
        expect(peer).toEqual({ host: '127.0.0.1', port: ipServer.port, name: '127.0.0.1' });
        expect(await clientUsesTls(reached, { address: peer })).toBe(true);
      } finally {
        await pool.dispose();
      }
      // The worker's listener, which goes through the list host by host itself.
      expect(await listenerUsesTls(reached, ipServer)).toEqual([true]);
      // A certificate for another name (localhost) at the address reached: refused.
      const wrongName = listing(tlsServer, '127.0.0.2,127.0.0.1', CA);
      await expect(poolUsesTls(wrongName)).rejects.toThrow(/IP: 127\.0\.0\.1 is not in the cert's list/);
      await expect(startListener(wrongName, () => {}, silentLogger)).rejects.toThrow(/IP: 127\.0\.0\.1 is not in the cert's list/);
      // A certificate for one of the listed addresses, reached at another
      // (a proxy on 127.0.0.2 in front of the server; nothing on 127.0.0.1
      // at the proxy's port): refused, though the URL names 127.0.0.1.
      const proxy = await startTcpProxy(ipServer.url(), { host: '127.0.0.2' });
      try {
        const elsewhere = listing(ipServer, '127.0.0.1,127.0.0.2', IP_CA, Number(new URL(proxy.url).port));
        await expect(poolUsesTls(elsewhere)).rejects.toThrow(/IP: 127\.0\.0\.2 is not in the cert's list: 127\.0\.0\.1/);
        expect(proxy.connections()).toBeGreaterThan(0);
      } finally {
        await proxy.close();
      }
    });

    it("the worker's listener connects on the same terms", async () => {
      expect(await listenerUsesTls(withTls(tlsServer.url(), '127.0.0.1', { sslmode: 'require' }), tlsServer)).toEqual([true]);
    });
  });
});
