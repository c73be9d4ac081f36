// TLS for every connection permgraph opens, from the URL's sslmode read as
// libpq reads it, so that a URL means the same to permgraph as to psql: the
// pool, the COPY connection of an import and the worker's LISTEN connection
// alike. Until this module, every sslmode but disable became "TLS if the
// server offers it, certificate unchecked" on the pool (require fell back to
// plain text, verify-full verified nothing), while the listener, through
// node-pg's own reading, took require as verify-full.
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import type { ConnectionOptions } from 'node:tls';
import { InvalidInputError } from '../errors.ts';

/** libpq's sslmode values; `no-verify` (node-pg's name for require) is taken as require. */
export const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];

/**
 * node-pg's own switch to read sslmode as libpq does, which permgraph
 * always does: taken, and ignored. The pool's parser does not know it.
 */
export const NODE_PG_SSL_SWITCH = 'uselibpqcompat';

/** The URL parameters about TLS, which every client library reads its own way: taken out of the URL handed on. */
const SSL_PARAMETERS = [
  'sslmode', 'ssl', 'sslcert', 'sslkey', 'sslrootcert', 'sslpassword', 'sslcrl', 'ssl_min_protocol_version', 'ssl_max_protocol_version',
  NODE_PG_SSL_SWITCH,
];

/** libpq's TLS protocol versions, oldest first: Node's names for them too (minVersion, maxVersion). */
const TLS_VERSIONS = ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'] as const;
type TlsVersion = (typeof TLS_VERSIONS)[number];

export interface TlsPlan {
  mode: SslMode;
  /** The URL without its TLS parameters (the options below say it all). */
  url: string;
  /** Options of the TLS session; null: a plain connection. */
  tls: ConnectionOptions | null;
  /** A server that offers no TLS is still used, in plain text (allow, prefer). */
  plainIfRefused: boolean;
}

/**
 * What the URL asks for. Without sslmode: a plain connection (as before;
 * libpq's default, prefer, would add an SSL request to every connection to a
 * local server). require: TLS or no connection, the certificate unchecked
 * (as libpq, checked like verify-ca when sslrootcert names a file).
 * verify-ca: the chain checked against sslrootcert (else
 * ~/.postgresql/root.crt, else the system's trusted authorities; `system`
 * names those); verify-full: the chain and the host name. sslcert and
 * sslkey: a client certificate, sslpassword the key's passphrase.
 * ssl_min_protocol_version and ssl_max_protocol_version: the TLS versions
 * taken. sslcrl: certificates revoked (else ~/.postgresql/root.crl, but not
 * with sslrootcert=system, as libpq), where the chain is checked (libpq reads it nowhere else). The parameters are read as the pool's parser (and
 * libpq) reads them, a + being a +, and so is the URL handed on (urlWithout).
 */
export function tlsPlan(url: string): TlsPlan {
  const read = readUrl(url);
  if (read === undefined) {
    // Not a postgres:// URL (a key=value string, or nonsense): the driver
    // says what it makes of it. Not of TLS parameters, though: the pool is
    // told 'disable' here, and would connect in plain text whatever they
    // ask for.
    if (SSL_PARAMETERS.some((key) => new RegExp(`(^|[?&\\s])${key}\\s*=`, 'i').test(url))) {
      throw new InvalidInputError(
        'TLS settings (sslmode, sslrootcert, …) are read from a postgres:// URL only (one host, or several: host1,host2:port or host1:port1,host2:port2); this connection string is not one',
      );
    }
    return { mode: 'disable', url, tls: null, plainIfRefused: false };
  }
  const { parsed, several } = read;
  const query = queryParameters(url);
  const raw = query.get('sslmode') ?? null;
  if (raw === null && query.has('ssl')) {
    // (node-pg's switch, which libpq does not know: the pool's parser reads
    // ssl=true as require, node-pg as verify-full; read as neither, it was
    // a plain connection)
    throw new InvalidInputError(
      "the database URL sets ssl, node-pg's switch, which means require to one library and verify-full to another: " +
        'remove it, and say which with sslmode instead: verify-full checks the server\'s certificate and name, require only encrypts',
    );
  }
  const mode = raw === null ? 'disable' : raw === 'no-verify' ? 'require' : SSL_MODES.find((m) => m === raw);
  if (mode === undefined) {
    throw new InvalidInputError(`sslmode must be one of ${SSL_MODES.join(', ')}, got "${raw}"`);
  }
  const stripped = urlWithout(url, SSL_PARAMETERS);
  if (mode === 'disable') return { mode, url: stripped, tls: null, plainIfRefused: false };
  const versions = protocolVersions(query);
  const passphrase = query.get('sslpassword') || undefined;
  if ((mode === 'allow' || mode === 'prefer') && (versions.minVersion || versions.maxVersion || passphrase)) {
    // (the pool's own fallback to plain text reads the client certificate's
    // files itself, and nothing more)
    const names = ['ssl_min_protocol_version', 'ssl_max_protocol_version', 'sslpassword'].filter((key) => query.get(key));
    throw new InvalidInputError(
      `the database URL sets ${names.join(' and ')} under sslmode=${mode}, which permgraph's pool cannot apply where it falls back to plain text: ` +
        'use sslmode=require or stronger (verify-full), or remove it',
    );
  }

  const file = (key: string) => {
    const name = query.get(key);
    return name ? readTlsFile(name, `${key} ${JSON.stringify(name)}`) : undefined;
  };
  const client: ConnectionOptions = { cert: file('sslcert'), key: file('sslkey'), ...(passphrase === undefined ? {} : { passphrase }), ...versions };
  const rootCert = query.get('sslrootcert');
  const verify = mode === 'verify-ca' || mode === 'verify-full' || (mode === 'require' && !!rootCert && rootCert !== 'system');
  if (!verify) {
    return { mode, url: stripped, tls: { ...client, rejectUnauthorized: false }, plainIfRefused: mode === 'allow' || mode === 'prefer' };
  }
  const ca = rootCert === 'system' ? undefined : rootCert ? file('sslrootcert') : defaultFile('root.crt');
  // (libpq's default list of revoked certificates, as its default root: a
  // server certificate revoked there is refused by psql, and so here; but
  // libpq reads it only beside a root certificate file, never with the
  // system's roots, where a list of one's own CA would leave a public
  // server's certificate with no list of its issuer: refused)
  const crl = query.get('sslcrl') ? file('sslcrl') : rootCert === 'system' ? undefined : defaultFile('root.crl');
  const tls: ConnectionOptions = { ...client, ca, ...(crl === undefined ? {} : { crl }), rejectUnauthorized: true };
  if (mode === 'verify-full') {
    // TLS checks the certificate against `host` (an IP address among its
    // names, else a host name), which node-pg sets to the host each
    // connection went to. Set here for a URL naming one host (or none: a
    // Unix socket, checked as localhost); of a URL listing several
    // ("ip1,ip2"), each connection's own is the one to check, never the list.
    if (!several) tls.host = parsed.hostname.replace(/^\[(.*)\]$/, '$1') || 'localhost';
  } else {
    tls.checkServerIdentity = () => undefined;
  }
  return { mode, url: stripped, tls, plainIfRefused: false };
}

/** libpq's default of a TLS file, ~/.postgresql/<name>, where it exists. */
function defaultFile(name: string): string | undefined {
  const file = path.join(homedir(), '.postgresql', name);
  return existsSync(file) ? readTlsFile(file, `${JSON.stringify(file)} (libpq's default ${name})`) : undefined;
}

/** A TLS file's text; one that cannot be read is an InvalidInputError naming it as `named` says. */
function readTlsFile(file: string, named: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new InvalidInputError(`${named} cannot be read: ${(error as Error).message}`);
  }
}

/**
 * The URL's parameters as the pool's parser reads them (and libpq): the
 * text after the first ?, pairs split at & and =, each name and value
 * percent-decoded and nothing more (a + stays a +, where URLSearchParams
 * reads a space); of a name given twice, the last value.
 */
export function queryParameters(url: string): Map<string, string> {
  const values = new Map<string, string>();
  const start = url.indexOf('?');
  if (start < 0) return values;
  for (const pair of url.slice(start + 1).split('&')) {
    const at = pair.indexOf('=');
    if (at < 0) continue; // (the pool's parser refuses it: url-parameters.ts)
    values.set(decode(pair.slice(0, at)), decode(pair.slice(at + 1)));
  }
  return values;
}

function decode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new InvalidInputError(`the database URL is not a PostgreSQL connection string: ${JSON.stringify(text)} is not percent-encoded text`);
  }
}

/**
 * The URL without the parameters `names`, the rest of its text as given
 * but each + of its parameters written %2B: node-pg reads the URL handed to
 * it through URLSearchParams, which would take a + for a space.
 */
export function urlWithout(url: string, names: readonly string[]): string {
  const start = url.indexOf('?');
  if (start < 0) return url;
  const kept = url
    .slice(start + 1)
    .split('&')
    .filter((pair) => pair !== '' && !names.includes(decode(pair.split('=', 1)[0]!)))
    .map((pair) => pair.replaceAll('+', '%2B'));
  return kept.length === 0 ? url.slice(0, start) : `${url.slice(0, start)}?${kept.join('&')}`;
}

/** ssl_min_protocol_version and ssl_max_protocol_version, as Node's TLS takes them. */
function protocolVersions(query: Map<string, string>): { minVersion?: TlsVersion; maxVersion?: TlsVersion } {
  const read = (key: string) => {
    const value = query.get(key);
    if (!value) return undefined;
    const version = TLS_VERSIONS.find((v) => v === value);
    if (version === undefined) throw new InvalidInputError(`${key} must be one of ${TLS_VERSIONS.join(', ')}, got ${JSON.stringify(value)}`);
    return version;
  };
  const minVersion = read('ssl_min_protocol_version');
  const maxVersion = read('ssl_max_protocol_version');
  if (minVersion && maxVersion && TLS_VERSIONS.indexOf(minVersion) > TLS_VERSIONS.indexOf(maxVersion)) {
    // (libpq: "invalid SSL protocol version range")
    throw new InvalidInputError(`the database URL's ssl_min_protocol_version (${minVersion}) is above its ssl_max_protocol_version (${maxVersion})`);
  }
  return { ...(minVersion ? { minVersion } : {}), ...(maxVersion ? { maxVersion } : {}) };
}

/** A URL listing several hosts (each with its port, 'h1:5432,h2:5433', which URL cannot read): its scheme and login, the list, and the rest. */
const HOST_LIST = /^(postgres(?:ql)?:\/\/(?:[^@/?#]*@)?)([^/?#]*,[^/?#]*)(.*)$/is;

/** Such a URL split into its scheme and login (`head`), its list of hosts, and the rest; undefined for any other string. */
export function splitHostList(url: string): { head: string; hosts: string; rest: string } | undefined {
  const list = HOST_LIST.exec(url);
  return list === null ? undefined : { head: list[1]!, hosts: list[2]!, rest: list[3]! };
}
/** What stands for such a list while URL reads the rest, which it cannot with the list in it. */
const HOST_LIST_PLACEHOLDER = 'permgraph-host-list.invalid';

/**
 * A postgres:// URL read by URL: as it is, or, when it lists several hosts
 * each with its port, with that list set aside. Undefined for anything else.
 */
function readUrl(url: string): { parsed: URL; several: boolean } | undefined {
  try {
    const parsed = new URL(url);
    return { parsed, several: parsed.hostname.includes(',') };
  } catch {
    const list = splitHostList(url);
    if (list === undefined) return undefined;
    try {
      const parsed = new URL(`${list.head}${HOST_LIST_PLACEHOLDER}${list.rest}`);
      return { parsed, several: true };
    } catch {
      return undefined;
    }
  }
}

/** node-pg's error when the server answers an SSL request with "no". */
export function isTlsRefused(error: unknown): boolean {
  return error instanceof Error && /does not support SSL/i.test(error.message);
}
