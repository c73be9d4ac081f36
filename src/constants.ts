// Defaults and fixed values that more than one module relies on, in one
// place. This module imports nothing, so the CLI can read defaults for its
// --help text without loading a database driver.

// ---------------------------------------------------------------------------
// Worker

/** Apply pending changes at least this often even without a notification (ms). */
export const DEFAULT_POLL_INTERVAL_MS = 1000;

/** How often a standby worker tries to take over the applier role (ms). */
export const DEFAULT_STANDBY_INTERVAL_MS = 1000;

/**
 * The longest interval a timer can hold (ms, 2^31 - 1: about 24.8 days). Node
 * fires a longer one after 1 ms, so a poll interval past it polled in a loop.
 */
export const MAX_INTERVAL_MS = 2_147_483_647;

/** The longest a worker waits before it tries again after failures in a row (ms; retryDelay). */
export const MAX_RETRY_DELAY_MS = 30_000;

/**
 * More pending changes than this are applied by a full recomputation. The
 * affected region's size (at most a quarter of the table) is the main guard;
 * this bound only keeps one batch's walks and temporary tables in reason. An
 * incremental batch of 12,000 churn changes on org large takes ~6 s, a full
 * recomputation ~90 s, so the bound is set well above everyday bursts.
 */
export const DEFAULT_MAX_BATCH = 100_000;

/**
 * A change whose region is larger than this (pairs) becomes a long job,
 * applied in chunks of about this size between ordinary batches
 * (sql/functions/065_long_job.sql), so that one huge grant does not hold up
 * every other change. A chunk writes rows at about the rate a batch does
 * (20-90 µs per row on the 2-core development machine, depending on its
 * load: bench --hol), so 5,000 pairs keep a chunk well under a second.
 */
export const DEFAULT_CHUNK_PAIRS = 5_000;

/** application_name of the worker's connection (what `permgraph status` and tests look for). */
export const WORKER_APPLICATION_NAME = 'permgraph-worker';

/** application_name of the worker's LISTEN connection. */
export const LISTENER_APPLICATION_NAME = 'permgraph-listener';

/** application_name of every other pool permgraph opens. */
export const DEFAULT_APPLICATION_NAME = 'permgraph';

/**
 * TCP keepalive on every connection permgraph opens (unless the URL sets
 * keepalives=0 or keepalives_idle): the first probe after
 * this long idle (ms), so that a peer gone without closing (a partition, a
 * host that died) is noticed in minutes (the OS's interval and count then:
 * ~11 min on Linux), not after the OS's two hours.
 */
export const KEEPALIVE_INITIAL_DELAY_MS = 10_000;

/** How long each connection (the pool's, a raw client's) may take to connect (ms) when the URL sets no connect_timeout: a host that drops packets otherwise takes minutes. */
export const CONNECT_TIMEOUT_MS = 10_000;

/**
 * How long a first connection is tried again while the server is starting
 * (ms; isServerStarting), after waits of 100, 200, 300… ms, as @databases/pg
 * tries its pool's first one (whatever the error, there). Any other failure
 * is reported at once (src/db/client-config.ts, connectClient).
 */
export const SERVER_STARTING_RETRY_MS = 2_000;

/**
 * The worker's own detection of a stalled network (src/worker/watchdog.ts),
 * which TCP keepalives leave to the OS (~11 min on Linux): a statement on
 * the worker's connection still unanswered after this long makes the worker
 * ask the server, over a fresh connection, whether its session is still
 * there and busy, and again this often while the answer is missing; the
 * LISTEN connection runs a check query this often. A probe costs a
 * connection, and only a statement this slow, which everyday batches
 * (milliseconds) never are, is probed.
 */
export const STALL_CHECK_INTERVAL_MS = 5_000;

/**
 * How long a probe (connecting included), or the LISTEN connection's check
 * query, may take (ms): a server that does not answer in time counts as
 * unreachable. Generous next to a connection's few milliseconds, so that a
 * server busy with a full recomputation is not taken for a partition.
 */
export const STALL_CHECK_TIMEOUT_MS = 5_000;

/**
 * How long ending a stuck or shared session of the worker's waits for its
 * process to exit (ms; pg_terminate_backend's timeout): the signal alone
 * returns at once, and the applier role's lock stays taken until the
 * process is gone, so a worker reconnecting right after would find its own
 * old session still holding the role. Well within a probe's time.
 */
export const SESSION_END_WAIT_MS = 1_000;

/**
 * The longest wait between two probes of one statement (ms). A probe that
 * finds the worker's session there and busy makes the next one wait twice
 * as long as the last, up to this: a 10-minute batch is probed 21 times
 * rather than 120 (a connection each). A stall during such a batch is met
 * by the next probe, at most this long after the last one: a server out of
 * reach is then noticed within this plus two probes' time (40 s), where a
 * short statement's takes 15 s.
 */
export const STALL_CHECK_MAX_INTERVAL_MS = 30_000;

/**
 * How long the check for a transaction pooler (src/db/pooler.ts) waits for
 * a second connection's server session (ms): a session pooler whose pool
 * is full keeps it waiting while the first connection keeps its own, where
 * a transaction pooler would have handed it the first one's idle session.
 */
export const POOLER_CHECK_TIMEOUT_MS = 2_000;

/** application_name of that check's connections (short-lived). */
export const POOLER_CHECK_APPLICATION_NAME = 'permgraph-pooler-check';

/** application_name of the watchdog's probes (short-lived connections). */
export const WATCHDOG_APPLICATION_NAME = 'permgraph-watchdog';

/**
 * How long closing a raw client (the LISTEN connection, a probe) waits for
 * the server to close its side (ms) before closing the socket itself: on a
 * stalled network node-pg's polite end() waits until the OS gives up
 * (minutes).
 */
export const END_TIMEOUT_MS = 1_000;

/**
 * The protocol's CancelRequest code (1234 in the high 16 bits, 5678 in the
 * low), which the command line's Ctrl-C sends for its own connections'
 * statements (src/cli/context.ts).
 */
export const CANCEL_REQUEST_CODE = 80877102;

/**
 * How long a cancel request may take to be delivered (ms): connecting to
 * the server, or pooler, that the statement's connection reached, and
 * writing 16 bytes. After a signal the command line sends one every
 * CANCEL_REPEAT_MS for each statement still running, until the command
 * has stopped (a statement sent just as the signal came may arrive after
 * the first).
 */
export const CANCEL_REQUEST_TIMEOUT_MS = 1_000;
export const CANCEL_REPEAT_MS = 100;

/**
 * What the worker's applying session sets, whatever the login's or the
 * database's defaults (each one the server has: transaction_timeout is
 * PostgreSQL 17+). No timeout: a batch cancelled by a statement_timeout set
 * for the login would be retried, and cancelled, forever (long jobs bound a
 * batch's length instead), and a login's idle_session_timeout would end a
 * standby's session. (The daemon then bounds the idle ones by its own
 * intervals: WORKER_IDLE_GRACE_MS.) The server's side of dead-peer detection: its
 * session holds the applier role's lock, so a worker that vanished must not
 * keep it (standbys take over once the server ends that session: ~25 s of
 * silence); WORKER_CLIENT_CHECK_INTERVAL_MS below does the same for a
 * running batch.
 */
export const WORKER_SESSION_SETTINGS: Readonly<Record<string, string>> = {
  statement_timeout: '0',
  lock_timeout: '0',
  idle_in_transaction_session_timeout: '0',
  transaction_timeout: '0',
  idle_session_timeout: '0',
  tcp_keepalives_idle: '10',
  tcp_keepalives_interval: '5',
  tcp_keepalives_count: '3',
  // (keepalives probe an idle connection only: a result sent that the
  // worker never acknowledges is retransmitted for ~15 min, unless this)
  tcp_user_timeout: '25000',
};

/**
 * client_connection_check_interval of the worker's applying session (ms):
 * a batch whose worker died (killed, its host gone) is cancelled and rolled
 * back within this long, instead of running on to commit while the next
 * worker waits for its lock. Set apart from the others because a server
 * built for a platform that cannot check refuses any value but 0.
 */
export const WORKER_CLIENT_CHECK_INTERVAL_MS = 2000;

/**
 * A worker that is frozen (SIGSTOP, a paused container or VM) keeps its
 * connection: its kernel answers the keepalives, and it sends nothing that
 * goes unacknowledged. Its session would hold the applier role for as long,
 * and no standby would take over. So the daemon's session ends itself once
 * idle, or idle in a transaction, for longer than twice the longer of its
 * poll and standby intervals plus this (ms): a worker that runs sends a
 * statement at least once per interval (workerIdleLimitMs).
 */
export const WORKER_IDLE_GRACE_MS = 10_000;

/**
 * How long a metrics scrape waits for each read from the database (ms);
 * past it, that gauge has no value in the scrape and the rest still answer.
 */
export const METRICS_DATABASE_TIMEOUT_MS = 5_000;

/** The channel the capture triggers NOTIFY (payload-free) on every change. */
export const CHANGES_CHANNEL = 'permgraph_changes';

// ---------------------------------------------------------------------------
// Change stream (sql/functions/170_changes.sql, src/engine/changes.ts)

/** The channel a batch NOTIFYs (payload-free) when it recorded permission change events (= _permission_changes_channel() in SQL). */
export const PERMISSION_CHANGES_CHANNEL = 'permgraph_permission_changes';

/** application_name of a change stream follower's LISTEN connection. */
export const CHANGES_LISTENER_APPLICATION_NAME = 'permgraph-changes';

/** Events read (and acknowledged) at a time when none is given (= read_changes' default). */
export const DEFAULT_CHANGES_BATCH = 1000;

/** The most events one read may ask for (= read_changes' bound on max_events). */
export const MAX_CHANGES_BATCH = 1_000_000;

// ---------------------------------------------------------------------------
// Advisory locks
//
// Every advisory lock permgraph takes, so that none collides with another.
// Single bigint keys live in the 7238001xxx range; the SQL side defines its
// own as functions (they are used inside SQL):
//   7238001001  (retired, not to be reused: ownership changes took it until they locked
//               permgraph._ownership_change_lock instead, which no other
//               login can hold; docs/security.md)
//   7238001002  permgraph._applier_lock_key()    one batch at a time (transaction lock)
//   7238001003  permgraph._applier_role_key()    the active worker (session lock)
// Retired too: the keys hashtextextended('permgraph.sync_grants:' || source, 0),
// which syncGrants took until it locked its source's row of
// permgraph.grant_source_locks instead (160_sync_grants.sql).

/** Held (transaction-level) while migrating, so concurrent migrations apply each file once. */
export const MIGRATION_LOCK_KEY = 7238001000;

/** Class (first int4 key) of the session lock held by an import run; the second key is hashtext(run name). */
export const IMPORT_LOCK_CLASS = 7238010;


// ---------------------------------------------------------------------------
// Grants, listings, imports, audit

/** The source of a grant when none is given. */
export const DEFAULT_GRANT_SOURCE = 'default';

/** Page size of listings when none is given, and the largest one allowed. */
export const DEFAULT_PAGE_LIMIT = 100;
export const MAX_PAGE_LIMIT = 10_000;

/** Rows per committed staging batch of an import. */
export const DEFAULT_IMPORT_BATCH_SIZE = 10_000;

/** How many problems an import summary lists. */
export const DEFAULT_IMPORT_MAX_PROBLEMS = 20;

/** Page size of the audit log when none is given. */
export const DEFAULT_AUDIT_LIMIT = 100;

/** The actions of the audit log's entries (its CHECK constraint's list), in the order the docs give them. */
export const AUDIT_ACTIONS = [
  'grant',
  'revoke',
  'change_level',
  /** Only the grant's expires_at changed (oldExpiresAt/newExpiresAt). */
  'change_expiry',
  'set_owner',
  'create_node',
  'delete_node',
  'set_trash',
  'import',
  'truncate',
  /** A role or operation of the catalog added, changed or removed (details: kind, name; old/new level). */
  'catalog',
  'prune_audit',
  /** A user made an application superuser or no longer one (details: superuser, the new value). */
  'set_superuser',
  /** Written by releases before 0.2, when the log could be truncated: old logs may hold it. */
  'truncate_audit',
] as const;

/** A pending change older than this is a doctor warning (seconds). */
export const DEFAULT_MAX_LAG_SECONDS = 60;

/** A change stream consumer whose oldest unacknowledged event is older than this is a doctor warning (seconds). */
export const DEFAULT_MAX_CONSUMER_LAG_SECONDS = 3600;

/**
 * `permgraph doctor` says the change queue's table is mostly dead space when
 * it is larger than this many pages (8 kB) and holds fewer than 10 pending
 * changes a page. Batches read the queue from its low-water mark and skip
 * that space (before, it made a one-change batch 2.8 ms on the server
 * instead of 0.8: bench/FINDINGS.md 33); status and vacuum still read it.
 */
export const QUEUE_DEAD_SPACE_PAGES = 500;
