// The database URL's parameters, read once for every connection permgraph
// opens: the pool (pool.ts) and the raw node-pg clients (client-config.ts:
// the first connection, LISTEN, COPY, the watchdog's probes). A parameter
// that libpq knows is either applied alike by all of them or refused,
// named as libpq names it, with what to do instead: the pool's parser knew
// them all and the pool passed none to its connections, while node-pg's raw
// clients applied some (options, replication), so that one URL meant two
// things in one process. TLS's parameters are tls.ts's.
import connectionString from '@databases/pg-connection-string';
import { CONNECT_TIMEOUT_MS, KEEPALIVE_INITIAL_DELAY_MS } from '../constants.ts';
import { InvalidInputError } from '../errors.ts';
import { NODE_PG_SSL_SWITCH, queryParameters } from './tls.ts';

/**
 * The URL's parameters that name a connection, which none of permgraph's
 * takes: permgraph names each of its own (the pool, the worker's, LISTEN's,
 * the watchdog's probes, the pooler check's), so that pg_stat_activity
 * tells them apart. The pool's name is its caller's (applicationName);
 * node-pg would let these rename the raw clients alone.
 */
export const CONNECTION_NAME_PARAMETERS = ['application_name', 'fallback_application_name'] as const;

/** What every connection takes from the URL, beyond its host, login and TLS. */
export interface UrlSettings {
  /** How long each connection may take to connect, to each host tried (ms; 0: no bound). */
  connectTimeoutMs: number;
  /** Whether its socket sends TCP keepalive probes. */
  keepAlive: boolean;
  /** After how long idle it starts them (ms; 0: the OS's own delay). */
  keepAliveInitialDelayMs: number;
}

/** The URL's parameters: as the pool's parser read those it knows, as given those it does not. */
type Parsed = ReturnType<typeof connectionString.default> & Record<string, string | undefined>;

/**
 * Each libpq parameter that the pool's parser knows and neither it nor
 * tls.ts applies: what it does to every connection, or, as a string, why
 * it is refused and what to do instead (after "the database URL sets NAME").
 */
const PARAMETERS: Record<string, (parsed: Parsed, settings: UrlSettings, query: Map<string, string>) => string | undefined> = {
  // (the pool's parser reads it before the path's database, node-pg not at
  // all: the pool and the raw clients would open two databases)
  dbname: (_parsed, _settings, query) =>
    query.has('dbname') ? ", which permgraph's connections do not all read: remove it, and put the database in the URL's path instead (postgres://host/dbname)" : undefined,
  // (libpq takes the query's in place of the address's; the pool's parser
  // adds it to them, and would try another server than the raw clients)
  host: ({ host = [] }, _settings, query) => givenTwice('host', host.length, query),
  port: ({ port = [] }, _settings, query) => givenTwice('port', port.length, query),
  // libpq: seconds, each host on its own; 0 waits for ever; 1 is read as 2.
  connect_timeout: ({ connect_timeout: seconds = 0 }, settings) => void (settings.connectTimeoutMs = seconds === 1 ? 2000 : seconds * 1000),
  keepalives: ({ keepalives }, settings) => void (settings.keepAlive = keepalives !== false),
  // libpq: 0 is the OS's own delay, as it is Node's
  keepalives_idle: ({ keepalives_idle: seconds = 0 }, settings) => void (settings.keepAliveInitialDelayMs = seconds * 1000),
  keepalives_interval: () => nodeCannotSet('the time between keepalive probes', "the operating system's applies (on Linux, net.ipv4.tcp_keepalive_intvl)"),
  keepalives_count: () => nodeCannotSet('how many keepalive probes may go unanswered', "the operating system's number applies (on Linux, net.ipv4.tcp_keepalive_probes)"),
  tcp_user_timeout: () => nodeCannotSet('how long sent data may go unacknowledged', "the operating system's retransmissions limit it (on Linux, net.ipv4.tcp_retries2)"),
  // (node-pg always asks the server for UTF8, whatever the URL says)
  client_encoding: ({ client_encoding: name = '' }) =>
    ['utf8', 'unicode'].includes(name.toLowerCase().replace(/[^a-z0-9]/g, ''))
      ? undefined
      : ", but permgraph's connections speak UTF8 only: remove it (the server converts to and from the database's encoding)",
  options: ({ options = '' }) =>
    options.trim() === ''
      ? undefined
      : ', which permgraph\'s pool cannot pass to its connections: remove it, and set those settings for the login or the database ' +
        "instead (ALTER ROLE name SET statement_timeout = '5s', or ALTER DATABASE name SET ...), which every connection then " +
        'starts with, through a connection pooler too',
  target_session_attrs: ({ target_session_attrs }) =>
    target_session_attrs === 'any' ? undefined : TARGET_SESSION_ATTRS,
  replication: () => ': permgraph\'s connections are not replication connections; remove it',
  // libpq: prefer goes on without GSS encryption when there are no GSS
  // credentials, as permgraph's connections always do
  gssencmode: ({ gssencmode }) =>
    gssencmode === 'require'
      ? "=require, but permgraph's connections cannot encrypt with GSSAPI: remove it, and encrypt with TLS instead (sslmode=verify-full)"
      : undefined,
  krbsrvname: () => KERBEROS,
  gsslib: () => KERBEROS,
  service: () =>
    ', a service of a pg_service.conf file, which permgraph does not read: remove it, and put that service\'s settings in the URL instead',
  // (node-pg reads the password file every connection reads: PGPASSFILE's, else ~/.pgpass)
  passfile: () =>
    ", which permgraph's connections do not read: remove it, and name the file in the PGPASSFILE environment variable " +
    'instead (every connection reads that file, else ~/.pgpass), or put the password in the URL',
  hostaddr: ({ hostaddr = [] }) =>
    hostaddr.length === 0
      ? undefined
      : ", which permgraph's connections do not use: remove it, and put the address in the host's place instead " +
        "(under sslmode=verify-full the server's certificate must then name that address)",
  requirepeer: () =>
    ", which permgraph's connections cannot check (Node.js does not read the user at the other end of a Unix socket): " +
    'remove it, and connect over TCP with sslmode=verify-full instead, which checks the server',
  // libpq: asks for TLS compression, which OpenSSL no longer does
  sslcompression: ({ sslcompression }) =>
    sslcompression === true ? "=1, but permgraph's connections do not compress TLS: remove it" : undefined,
  // (parameters of libpq that the pool's parser does not know)
  // libpq: 1 (its default) sends the host name, not an address, in the TLS
  // handshake (SNI), as node-pg always does
  sslsni: ({ sslsni }) =>
    sslsni === '1' ? undefined : ", but permgraph's connections always send a server's host name (SNI): remove it",
  sslcrldir: () =>
    ', a directory that permgraph does not read: remove it, and put the certificate revocation lists in one file ' +
    '(cat them) named by sslcrl instead',
  // libpq: disable (its default) tries the hosts in the order listed
  load_balance_hosts: ({ load_balance_hosts }) =>
    load_balance_hosts === 'disable'
      ? undefined
      : ", but permgraph's connections try the hosts in the order listed: remove it, and list them in the order to try",
  // (libpq 16 and later) node-pg answers whichever method the server asks for
  require_auth: () =>
    ", which permgraph's connections cannot enforce (they answer whichever login method the server asks for): remove it, " +
    'and have TLS check the server instead (sslmode=verify-full), so that no other server can ask for the password',
  // (libpq 16) allow, its default, sends the client certificate when the server asks for one, as node-pg does
  sslcertmode: ({ sslcertmode }) =>
    sslcertmode === 'allow'
      ? undefined
      : sslcertmode === 'disable'
        ? "=disable, but permgraph's connections send the client certificate that sslcert names: remove sslcert and sslkey instead"
        : `=${String(sslcertmode)}, but permgraph's connections cannot require a server to ask for a client certificate: remove it`,
  // (libpq 17) postgres, its default, asks for TLS first in PostgreSQL's protocol, as node-pg does
  sslnegotiation: ({ sslnegotiation }) =>
    sslnegotiation === 'postgres'
      ? undefined
      : `=${String(sslnegotiation)}, but permgraph's connections ask for TLS in PostgreSQL's protocol first (sslnegotiation=postgres): remove it`,
  channel_binding: () =>
    // (hosted servers put it in the URLs they hand out)
    ', which permgraph\'s connections do not do: remove it, and have TLS check the server instead (sslmode=verify-full), ' +
    'which also keeps a server in the middle out',
};

/** Why target_session_attrs is refused, whatever its value but any (the parser refuses the values it does not know itself). */
const TARGET_SESSION_ATTRS =
  ', but permgraph\'s connections take the first listed server that answers, primary or standby, and check neither: ' +
  'only target_session_attrs=any is taken; list the primary alone, or a name or a proxy that follows failover ' +
  '(a worker pointed at a standby refuses to start)';

/** Why Kerberos's parameters are refused. */
const KERBEROS =
  ", for Kerberos (GSSAPI) logins, which permgraph's connections cannot do: remove it, and log in with a password " +
  '(SCRAM) or a client certificate (sslcert, sslkey) instead';

/** Why a URL giving `name` both in its address and as a parameter is refused: the parser read more of them than the parameter lists. */
function givenTwice(name: 'host' | 'port', read: number, query: Map<string, string>): string | undefined {
  const listed = query.get(name)?.split(',').length ?? read;
  if (read <= listed) return undefined;
  return ` both in its address and as ?${name}=, which permgraph's connections would read differently: keep one of them ` +
    (name === 'host' ? '(postgres://host:port/db, or ?host=%2Fsocket%2Fdir for a Unix socket: a / in the query is written %2F)' : '(postgres://host:port/db)');
}

function nodeCannotSet(what: string, instead: string): string {
  return `, ${what}, which Node.js cannot set for a socket: remove it; ${instead}`;
}

/**
 * The URL's settings for every connection (UrlSettings), read with the
 * pool's parser, as libpq reads it (no environment variables): throws an
 * InvalidInputError for a URL the parser cannot read (without the URL,
 * which may hold a password, and without the parser's link to an old
 * PostgreSQL manual), for a parameter it does not know (as libpq refuses
 * one, "invalid URI query parameter": the parser would print a warning to
 * stderr, past the logger, and go on without it), and for one that the
 * table above refuses.
 */
export function readUrlParameters(url: string): UrlSettings {
  const unknown = new Map<string, string>();
  let parsed: Parsed;
  try {
    parsed = connectionString.default(url, {
      env: {},
      unrecognisedOptionMode: (name, value) => void (name === NODE_PG_SSL_SWITCH || unknown.set(name, value)),
    }) as Parsed;
  } catch (error) {
    if (/"target_session_attrs"/.test(String(error))) throw new InvalidInputError(`the database URL sets target_session_attrs${TARGET_SESSION_ATTRS}`);
    throw notAConnectionString(error, url);
  }
  // (libpq refuses these; the parser took them, 0 as no port at all, 5432)
  const badPort = (parsed.port ?? []).find((port) => !(port !== null && Number.isInteger(port) && port >= 1 && port <= 65535));
  if (badPort !== undefined) throw new InvalidInputError(`the database URL's port must be from 1 to 65535, got ${badPort}`);
  const settings: UrlSettings = { connectTimeoutMs: CONNECT_TIMEOUT_MS, keepAlive: true, keepAliveInitialDelayMs: KEEPALIVE_INITIAL_DELAY_MS };
  const values: Parsed = { ...Object.fromEntries(unknown), ...parsed };
  const query = queryParameters(url);
  for (const name of [...Object.keys(parsed), ...unknown.keys()]) {
    const rule = PARAMETERS[name];
    const refusal = rule?.(values, settings, query);
    if (refusal !== undefined) throw new InvalidInputError(`the database URL sets ${name}${refusal}`);
  }
  const unknownNames = [...unknown.keys()].filter((name) => !(name in PARAMETERS));
  if (unknownNames.length > 0) {
    throw new InvalidInputError(`the database URL has a parameter permgraph does not know: ${unknownNames.map((name) => JSON.stringify(name)).join(', ')}`);
  }
  return settings;
}

/**
 * A URL the pool's parser (or the pool, reading what it parsed, or node-pg,
 * reading what a connection of its own is given) cannot read, said without
 * the URL and without the parser's link. Of a postgres:// URL, with the
 * likeliest cause, what a password holds: libpq reads `a#b` there as it
 * is, node-pg reads a `#` as the URL's end and fails ("Invalid URL").
 */
/**
 * Makes what reads `url` as it is made (the pool, which reads its hosts and
 * ports again; a node-pg client, which reads it with WHATWG URL): an error
 * that `isUrlError` says is the URL's (every error, by default: the pool's
 * construction throws on nothing else) is an InvalidInputError, as
 * readUrlParameters' are (notAConnectionString).
 */
export function readingUrl<T>(url: string, make: () => T, isUrlError: (error: unknown) => boolean = () => true): T {
  try {
    return make();
  } catch (error) {
    throw isUrlError(error) ? notAConnectionString(error, url) : error;
  }
}

function notAConnectionString(error: unknown, url?: string): InvalidInputError {
  const reason = (error instanceof Error ? error.message : String(error)).replace(/\s*See https?:\S+ for examples\.$/, '');
  const advice = url === undefined || !/^postgres(?:ql)?:\/\//i.test(url) ? ''
    // (libpq's own form for a Unix socket, ?host=/run/postgresql, which the parser refuses)
    : /\?[^#]*\//.test(url) ? ` (${SLASH_IN_QUERY_ADVICE})`
    : ` (${PERCENT_ENCODING_ADVICE})`;
  return new InvalidInputError(`the database URL is not a PostgreSQL connection string: ${reason}${advice}`, undefined, { cause: error });
}

const SLASH_IN_QUERY_ADVICE = 'a / in the query must be %-encoded as %2F: a Unix socket directory as ?host=%2Frun%2Fpostgresql';
const PERCENT_ENCODING_ADVICE = 'a user name or password that holds @ : / ? # % or a space must be %-encoded in a URL: @ as %40, : as %3A, / as %2F, ? as %3F, # as %23, % as %25, a space as %20';
