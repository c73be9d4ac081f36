// `permgraph doctor`: health checks an operator (or a readiness probe) runs.
import { DEFAULT_MAX_CONSUMER_LAG_SECONDS, DEFAULT_MAX_LAG_SECONDS, QUEUE_DEAD_SPACE_PAGES } from '../constants.ts';
import { toConsumerStatuses } from '../engine/changes.ts';
import { sql, type Queryable } from '../db/pool.ts';
import { connectionPath, type ConnectionPath } from '../db/pooler.ts';
import { missingClusterIdentityGrant, modifiedMigrations, schemaState } from '../migrations/migrate.ts';
import { indexesInDump, readCommittedDump } from '../migrations/schema-dump.ts';
import { readStatus, type Status } from './status.ts';

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface DoctorCheck {
  name: 'pooling' | 'schema' | 'indexes' | 'rights' | 'owner' | 'settings' | 'worker' | 'backlog' | 'table' | 'queue' | 'stream' | 'imports' | 'rls';
  status: CheckStatus;
  /** One line: what was found and, when not ok, what to do. */
  message: string;
}

export interface DoctorOptions {
  /** A pending change older than this many seconds is a warning (default 60). */
  maxLagSeconds?: number;
  /** A change stream consumer whose oldest unacknowledged event is older than this many seconds is a warning (default 3,600). */
  maxConsumerLagSeconds?: number;
  /** The URL `db` connects with: the `pooling` check asks how it reaches the server (without it, that check is left out). */
  url?: string;
}

/**
 * The indexes a correct install has: every index of the committed schema dump
 * (sql/schema.sql), so this list cannot drift from the migrations.
 */
export async function expectedIndexes(): Promise<{ table: string; index: string }[]> {
  return indexesInDump(await readCommittedDump());
}

export async function runDoctor(db: Queryable, options: DoctorOptions = {}): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  if (options.url !== undefined) checks.push(await poolingCheck(options.url));
  checks.push(await schemaCheck(db), await indexCheck(db), await rightsCheck(db), await ownerCheck(db), await settingsCheck(db));
  const [{ has_status: hasStatus }] = await db.query(sql`select to_regprocedure('permgraph.status()') is not null as has_status`);
  if (!hasStatus) {
    const message = 'not checked: permgraph.status() is missing (see the schema check)';
    for (const name of ['worker', 'backlog', 'table', 'queue', 'stream'] as const) checks.push({ name, status: 'warn', message });
  } else {
    const status = await readStatus(db); // (its moments in UTC)
    checks.push(
      workerCheck(status),
      backlogCheck(status, options.maxLagSeconds ?? DEFAULT_MAX_LAG_SECONDS),
      permissionsCheck(status),
      await queueCheck(db, status),
      streamCheck(status, options.maxConsumerLagSeconds ?? DEFAULT_MAX_CONSUMER_LAG_SECONDS),
    );
  }
  checks.push(await importsCheck(db), await rlsCheck(db));
  return checks;
}

/**
 * How the URL reaches the server (src/db/pooler.ts): directly, or through a
 * connection pooler, and whether that pooler shares server sessions between
 * clients (transaction pooling), where applications work and the worker
 * and imports refuse to run (docs/operations.md, "Connection poolers"). Sharing is
 * reported only when seen, which proves it.
 */
async function poolingCheck(url: string): Promise<DoctorCheck> {
  let path: ConnectionPath;
  try {
    path = await connectionPath(url);
  } catch (error) {
    return { name: 'pooling', status: 'warn', message: `not checked: ${error instanceof Error ? error.message : String(error)}` };
  }
  switch (path) {
    case 'direct':
      return { name: 'pooling', status: 'ok', message: 'direct to PostgreSQL (no connection pooler): fine for applications, the worker and imports' };
    case 'pooled':
      return {
        name: 'pooling',
        status: 'ok',
        message: 'through a connection pooler that kept each connection on a server session of its own (session pooling): fine for applications, the worker and imports',
      };
    case 'shared':
      return {
        name: 'pooling',
        status: 'warn',
        message:
          'through a transaction pooler (two connections were served by one server session): fine for applications, ' +
          'but the worker and imports refuse it: connect the worker and imports directly to PostgreSQL, or through session pooling',
      };
  }
}

async function schemaCheck(db: Queryable): Promise<DoctorCheck> {
  const { state, pending } = await schemaState(db);
  switch (state) {
    case 'ok': return { name: 'schema', status: 'ok', message: 'schema matches this package' };
    case 'missing': return { name: 'schema', status: 'fail', message: 'schema missing: run `permgraph migrate`' };
    case 'behind': return { name: 'schema', status: 'fail', message: `schema behind this package (pending: ${pending.join(', ')}): run \`permgraph migrate\`` };
    case 'ahead': return { name: 'schema', status: 'fail', message: 'schema ahead of this package (a newer permgraph migrated it): upgrade permgraph' };
    case 'modified': return { name: 'schema', status: 'fail', message: modifiedMigrations(pending) };
  }
}

async function indexCheck(db: Queryable): Promise<DoctorCheck> {
  const rows: { tablename: string; indexname: string; valid: boolean }[] = await db.query(sql`
    select i.tablename, i.indexname, x.indisvalid as valid
    from pg_indexes i
    join pg_class c on c.relname = i.indexname
    join pg_namespace n on n.oid = c.relnamespace and n.nspname = i.schemaname
    join pg_index x on x.indexrelid = c.oid
    where i.schemaname = 'permgraph'`);
  const expected = await expectedIndexes();
  const found = new Map(rows.map((r) => [`${r.tablename}.${r.indexname}`, r.valid]));
  const missing = expected.filter((e) => !found.has(`${e.table}.${e.index}`)).map((e) => `${e.table}.${e.index}`);
  const invalid = expected.filter((e) => found.get(`${e.table}.${e.index}`) === false).map((e) => `${e.table}.${e.index}`);
  if (missing.length === 0 && invalid.length === 0) {
    return { name: 'indexes', status: 'ok', message: `all ${expected.length} expected indexes present` };
  }
  if (missing.length === expected.length) {
    return { name: 'indexes', status: 'fail', message: `none of the ${expected.length} expected indexes exists (run \`permgraph migrate\`)` };
  }
  const parts = [
    missing.length ? `missing: ${missing.join(', ')}` : '',
    invalid.length ? `invalid (a failed concurrent build? rebuild with REINDEX): ${invalid.join(', ')}` : '',
  ].filter(Boolean);
  return { name: 'indexes', status: 'fail', message: parts.join('; ') };
}

/**
 * The three roles and their rights (sql/functions/900_privileges.sql). A
 * backup restored into a cluster without the roles has none of them:
 * pg_restore cannot grant a role that does not exist, and every login of
 * the application is then refused. `permgraph migrate` creates the roles
 * and grants them again.
 */
async function rightsCheck(db: Queryable): Promise<DoctorCheck> {
  const [{ present, allowed }] = await db.query(sql`
    select to_regprocedure('permgraph._missing_rights()') is not null as present,
           coalesce(pg_catalog.has_function_privilege(to_regprocedure('permgraph._missing_rights()'), 'execute'), false) as allowed`);
  if (!present) return { name: 'rights', status: 'warn', message: 'not checked: permgraph._missing_rights() is missing (see the schema check)' };
  if (!allowed) {
    return { name: 'rights', status: 'warn', message: "not checked: this login may not run permgraph._missing_rights(), so its role lacks its rights: run doctor as the schema's owner" };
  }
  const [{ missing }] = await db.query(sql`select permgraph._missing_rights() as missing`);
  const lines = missing as string[];
  if (lines.length === 0) {
    return { name: 'rights', status: 'ok', message: 'permgraph_reader, permgraph_writer and permgraph_worker exist and hold their rights' };
  }
  return {
    name: 'rights',
    status: 'fail',
    message:
      `${num(lines.length)} of the roles' rights missing (${lines.slice(0, 3).join('; ')}${lines.length > 3 ? '; …' : ''}), as after a restore into a cluster without the roles: ` +
      "run `permgraph migrate` as the schema's owner: it creates the missing roles and grants them their rights",
  };
}

/**
 * Who the schema belongs to. Its SECURITY DEFINER functions (the triggers
 * on nodes and grants, the batches, the queries) run with their owner's
 * rights, which is the schema's owner as migrate creates them: a
 * superuser's when a superuser migrated it, or restored it with
 * `pg_restore --no-owner` or without its owner's role. The owner must also
 * be able to read the cluster's identity (sql/functions/048_cluster_identity.sql).
 */
async function ownerCheck(db: Queryable): Promise<DoctorCheck> {
  const [row] = await db.query(sql`
    select pg_catalog.pg_get_userbyid(n.nspowner) as owner, r.rolsuper as superuser,
           (select count(*) from pg_catalog.pg_proc p where p.pronamespace = n.oid and p.prosecdef) as definers,
           (select pg_catalog.string_agg(p.oid::pg_catalog.regprocedure::text || ' (' || pg_catalog.pg_get_userbyid(p.proowner) || ')', ', ')
            from pg_catalog.pg_proc p where p.pronamespace = n.oid and p.prosecdef and p.proowner <> n.nspowner) as others
    from pg_catalog.pg_namespace n join pg_catalog.pg_roles r on r.oid = n.nspowner
    where n.nspname = 'permgraph'`);
  if (!row) return { name: 'owner', status: 'warn', message: 'not checked: schema permgraph is missing (see the schema check)' };
  const definers = Number(row.definers);
  const identityGrant = await missingClusterIdentityGrant(db, row.owner);
  if (identityGrant !== null) {
    // (a hardened server revokes it from PUBLIC, which PostgreSQL grants it to)
    return {
      name: 'owner',
      status: 'fail',
      message:
        `the schema's owner ${row.owner} may not execute pg_catalog.pg_control_system(): the first batch after each start of the server reads ` +
        "the cluster's identity with it (to tell a backup restored from another cluster) and fails without it. " +
        `Run, as a superuser: ${identityGrant}`,
    };
  }
  if (row.others) {
    return {
      name: 'owner',
      status: 'warn',
      message: `SECURITY DEFINER functions of another role than the schema's owner ${row.owner} run with that role's rights: ${row.others}`,
    };
  }
  if (row.superuser) {
    return {
      name: 'owner',
      status: 'warn',
      message:
        `schema permgraph belongs to ${row.owner}, a superuser: its ${definers} SECURITY DEFINER functions run with a superuser's rights. ` +
        'Fine for development; in production let a role that is not one own it (migrate as that role, or restore a backup with `pg_restore --no-owner --role=ROLE`)',
    };
  }
  return { name: 'owner', status: 'ok', message: `schema permgraph belongs to ${row.owner}, not a superuser; its ${definers} SECURITY DEFINER functions run as ${row.owner}` };
}

/**
 * Server settings that change how permgraph behaves, as this session sees
 * them (so per-database and per-role settings count), each with what to do.
 * jit needs nothing: the engine's functions switch it off for themselves.
 */
async function settingsCheck(db: Queryable): Promise<DoctorCheck> {
  const rows: { name: string; setting: string; unit: string | null; reset_val: string }[] = await db.query(sql`
    select name, setting, unit, reset_val from pg_catalog.pg_settings
    where name in ('statement_timeout', 'idle_in_transaction_session_timeout', 'autovacuum', 'track_activities', 'jit', 'DateStyle')`);
  const setting = new Map(rows.map((r) => [r.name, r.setting]));
  const advice: string[] = [];
  // (the session's own value is pinned to ISO on a direct connection: what
  // the database and login give a session is the value RESET returns to)
  const dateStyle = rows.find((r) => r.name === 'DateStyle')?.reset_val ?? 'ISO';
  if (!dateStyle.startsWith('ISO')) {
    const order = dateStyle.split(',')[1]?.trim() ?? 'MDY';
    advice.push(
      `DateStyle = '${dateStyle}': the driver reads timestamps only in the ISO form, so a connection permgraph cannot pin ` +
        `(through a transaction pooler) reads every expiry and trash time as null: alter database … set datestyle = 'ISO, ${order}'`,
    );
  }
  if (Number(setting.get('statement_timeout') ?? 0) > 0) {
    advice.push(
      `statement_timeout = ${setting.get('statement_timeout')} ms also cancels refresh, import and worker --once ` +
        "(the worker's own session runs without it): set it per application role (alter role … set statement_timeout) " +
        "and leave the owner's and the worker's logins at 0",
    );
  }
  if (Number(setting.get('idle_in_transaction_session_timeout') ?? 0) > 0) {
    advice.push('idle_in_transaction_session_timeout is set: a long import or refresh between statements may be cut off');
  }
  if (setting.get('autovacuum') === 'off') {
    advice.push('autovacuum = off: permissions, changes and edges churn with every batch; turn it on');
  }
  if (setting.get('track_activities') === 'off') {
    advice.push('track_activities = off: status and doctor cannot name the active worker');
  }
  if (advice.length === 0) {
    return { name: 'settings', status: 'ok', message: `server settings suit permgraph (jit = ${setting.get('jit')}: the engine's functions switch it off themselves)` };
  }
  return { name: 'settings', status: 'warn', message: advice.join('; ') };
}

function workerCheck(status: Status): DoctorCheck {
  const blocking = status.blocking_sessions ?? [];
  if (blocking.length > 0) {
    const sessions = blocking.map(
      (s) =>
        `pid ${s.pid} (role ${s.role}, application "${s.application_name}", ${s.lock === 'role' ? "the applier role's lock" : "a batch's lock"}, ` +
        `${s.state ?? 'state hidden'}${s.since ? ` since ${s.since}` : ''}${s.may_apply === false || s.may_apply === undefined ? ', may not apply changes' : ''})`,
    );
    return {
      name: 'worker',
      status: 'warn',
      message:
        `session(s) hold the applier's locks, so batches wait: ${sessions.join('; ')}. ` +
        'A transaction registering a change consumer, or one left open after apply_changes(), holds a batch\'s lock until it ends, ' +
        'as an import does from its validation to its commit; ' +
        'a superuser (or a member of pg_signal_backend) can end one that is stuck with select pg_terminate_backend(pid)',
    };
  }
  if (status.worker) {
    const since = status.worker.since === null ? '' : ` since ${status.worker.since}`; // (null: hidden from the schema's owner, see status)
    return { name: 'worker', status: 'ok', message: `active worker: backend pid ${status.worker.pid} (${status.worker.application_name})${since}` };
  }
  return { name: 'worker', status: 'warn', message: 'no worker holds the applier role: captured changes wait until `permgraph worker` runs' };
}

function backlogCheck(status: Status, maxLagSeconds: number): DoctorCheck {
  const pending = Number(status.pending_changes);
  // A long job's changes have left the queue, but their tokens wait until a chunk lets them go.
  const jobAge = status.long_job_oldest_change_age_s == null ? undefined : Number(status.long_job_oldest_change_age_s);
  const job = status.long_job as { users_remaining?: number; users_total?: number } | null | undefined;
  const jobText =
    jobAge === undefined
      ? ''
      : `a long job holds changes whose tokens wait for it, the oldest ${jobAge.toFixed(1)} s old (${job?.users_remaining ?? '?'} of ${job?.users_total ?? '?'} users left)`;
  if (pending === 0 && jobAge === undefined) return { name: 'backlog', status: 'ok', message: 'no pending changes' };
  const age = Number(status.oldest_pending_age_s ?? 0);
  const text = [pending === 0 ? 'no pending changes' : `${pending} pending change(s), oldest ${age.toFixed(1)} s old`, jobText].filter(Boolean).join('; ');
  if (Math.max(pending === 0 ? 0 : age, jobAge ?? 0) <= maxLagSeconds) return { name: 'backlog', status: 'ok', message: text };
  return { name: 'backlog', status: 'warn', message: `${text} (over ${maxLagSeconds} s: is the worker keeping up?)` };
}

/**
 * The permission table: empty while the graph has users, it has lost its
 * rows (a backup restored without them, pg_dump --exclude-table-data; a
 * truncate). Reads then deny everything and say nothing; the next batch
 * recomputes the table in full (sql/functions/060_apply.sql).
 */
function permissionsCheck(status: Status): DoctorCheck {
  if (status.permissions_missing === undefined) {
    return { name: 'table', status: 'warn', message: "not checked: this schema's permgraph.status() does not say (see the schema check)" };
  }
  if (status.permissions_missing) {
    return {
      name: 'table',
      status: 'fail',
      message:
        'permgraph.permissions is empty while the graph has users (a backup restored without its rows, or a truncated table): ' +
        'every check denies and no freshness token is applied until it is recomputed: the worker\'s next batch recomputes it in full, or run `permgraph refresh`',
    };
  }
  return { name: 'table', status: 'ok', message: `${num(Number(status.permission_rows))} permission row(s)` };
}

/**
 * The change queue. Batches read it from its low-water mark
 * (sql/functions/045_batch_split.sql), which every change not yet applied is
 * at or above; a pending row below it would never be applied (the mark's
 * rule broken), and a full recomputation applies every row. The table's
 * size is reported too: its dead rows, which batches skip, stay until
 * autovacuum reclaims them. A mark restored from another cluster (a logical
 * backup) is that cluster's transaction id, which says nothing about the
 * changes written here: the next batch forgets it and reads the whole queue
 * (sql/functions/048_cluster_identity.sql).
 */
async function queueCheck(db: Queryable, status: Status): Promise<DoctorCheck> {
  if (status.restored_from_another_cluster) {
    return {
      name: 'queue',
      status: 'ok',
      message: `restored from another cluster (a logical backup restored here, or pg_upgrade): the next batch reads the whole change queue (${num(Number(status.pending_changes))} pending change(s)) and takes the restored state as this cluster's`,
    };
  }
  const [row] = await db.query(sql`
    select pg_catalog.pg_relation_size('permgraph.changes'::regclass) / 8192 as pages,
           (select count(*) from permgraph.changes) as live,
           (select count(*) from permgraph._unapplied_changes c join permgraph.applier_state s on c.xact_id < s.queue_low_water
            where c.held_by = 'queue') as below`);
  const below = Number(row.below);
  if (below > 0) {
    return {
      name: 'queue',
      status: 'fail',
      message: `${num(below)} pending change(s) lie below the change queue's low-water mark, where no batch reads: \`permgraph refresh\` applies them (and please report it: a batch set the mark above a change it had not applied)`,
    };
  }
  const pages = Number(row.pages);
  const pending = Number(status.pending_changes);
  const live = Number(row.live);
  // (a long job's backlog stays in the table, hidden from batches, until its last chunks delete it)
  const held = live - pending;
  const text = `the change queue's table holds ${num(pages)} pages (${(pages / 128).toFixed(1)} MB) for ${num(pending)} pending change(s)${held > 0 ? ` and ${num(held)} row(s) of a long job's backlog` : ''}`;
  // (a page holds ~70 change rows: fewer than 10 a page is mostly dead space, not a backlog)
  if (pages <= QUEUE_DEAD_SPACE_PAGES || live >= 10 * pages) return { name: 'queue', status: 'ok', message: text };
  return { name: 'queue', status: 'ok', message: `${text}, mostly dead rows that batches skip (they read the queue from its low-water mark) until autovacuum reclaims them` };
}

const num = (n: number) => n.toLocaleString('en-US');

/**
 * The change stream's consumers. Events are kept until every consumer has
 * acknowledged them, however old, so a consumer nobody runs any more makes
 * permission_changes grow without end: one far behind is a warning.
 */
function streamCheck(status: Status, maxConsumerLagSeconds: number): DoctorCheck {
  if (status.change_consumers === undefined) {
    return { name: 'stream', status: 'warn', message: "not checked: this schema's permgraph.status() does not list the change stream's consumers (see the schema check)" };
  }
  const consumers = toConsumerStatuses(status.change_consumers);
  if (consumers.length === 0) return { name: 'stream', status: 'ok', message: 'no change stream consumers' };
  const describe = (c: (typeof consumers)[number]) =>
    `"${c.consumer}"${c.ownerRole === null ? '' : ` (${c.ownerRole})`}: ${num(c.lagEvents)} event(s) behind` +
    (c.oldestWaitingAgeS === null ? '' : `, the oldest waiting ${c.oldestWaitingAgeS.toFixed(1)} s`);
  const behind = consumers.filter((c) => (c.oldestWaitingAgeS ?? 0) > maxConsumerLagSeconds);
  if (behind.length > 0) {
    return {
      name: 'stream',
      status: 'warn',
      message:
        `change stream consumer(s) over ${maxConsumerLagSeconds} s behind: ${behind.slice(0, 5).map(describe).join('; ')}${behind.length > 5 ? `; and ${behind.length - 5} more` : ''}. ` +
        'Their events are kept until they acknowledge them: drop one nobody runs any more (`permgraph changes --consumer NAME --drop`, as its owner or the schema\'s owner)',
    };
  }
  const furthest = consumers.reduce((a, b) => ((b.oldestWaitingAgeS ?? -1) > (a.oldestWaitingAgeS ?? -1) ? b : a));
  return {
    name: 'stream',
    status: 'ok',
    message: `${consumers.length} change stream consumer(s); ${furthest.oldestWaitingAgeS === null ? 'none has events waiting' : `furthest behind ${describe(furthest)}`}`,
  };
}

async function importsCheck(db: Queryable): Promise<DoctorCheck> {
  const [{ present }] = await db.query(sql`select to_regclass('permgraph.import_runs') is not null as present`);
  if (!present) return { name: 'imports', status: 'warn', message: 'not checked: permgraph.import_runs is missing (see the schema check)' };
  // (imports run as the schema's owner, and only it reads their log: the
  // worker's and the readers' logins get this warning, not a permission error)
  const [{ readable }] = await db.query(sql`select pg_catalog.has_table_privilege('permgraph.import_runs', 'select') as readable`);
  if (!readable) return { name: 'imports', status: 'warn', message: 'not checked: this login may not read permgraph.import_runs (run doctor as the schema\'s owner to see interrupted imports)' };
  const rows: { name: string; phase: string }[] = await db.query(sql`
    select name, phase from permgraph.import_runs where phase not in ('done', 'failed') order by started_at limit 5`);
  if (rows.length === 0) return { name: 'imports', status: 'ok', message: 'no interrupted imports' };
  return {
    name: 'imports',
    status: 'warn',
    message: `interrupted import(s): ${rows.map((r) => `${r.name} (${r.phase})`).join(', ')}: the command that started one, with --resume (and --name NAME if it had one), continues it`,
  };
}

/**
 * The tables below one that carries permgraph's row-level security policies
 * (its partitions, or tables that inherit from it) and do not carry them: a
 * query naming one reads its rows past the policies. enable_rls puts them on
 * every such table it finds, so this is one attached or created afterwards.
 */
async function rlsCheck(db: Queryable): Promise<DoctorCheck> {
  const [{ present, allowed }] = await db.query(sql`
    select to_regprocedure('permgraph._rls_unprotected()') is not null as present,
           coalesce(pg_catalog.has_function_privilege(to_regprocedure('permgraph._rls_unprotected()'), 'execute'), false) as allowed`);
  if (!present) return { name: 'rls', status: 'warn', message: 'not checked: permgraph._rls_unprotected() is missing (see the schema check)' };
  if (!allowed) return { name: 'rls', status: 'warn', message: "not checked: this login may not run permgraph._rls_unprotected() (run doctor as a login granted a permgraph role)" };
  const rows: { unprotected: string; under: string }[] = await db.query(sql`
    select unprotected::text as unprotected, under::text as under from permgraph._rls_unprotected()`);
  if (rows.length === 0) return { name: 'rls', status: 'ok', message: "no partition or child of a table under permgraph's row-level security lacks its policies" };
  const above = [...new Set(rows.map((r) => r.under))];
  return {
    name: 'rls',
    status: 'warn',
    message:
      `${num(rows.length)} partition(s) or child table(s) lack the row-level security policies of the table above them, so a query naming one reads all its rows: ` +
      `${rows.slice(0, 5).map((r) => `${r.unprotected} (under ${r.under})`).join(', ')}${rows.length > 5 ? ', …' : ''}. ` +
      `Run permgraph.enable_rls on ${above.slice(0, 5).join(', ')}${above.length > 5 ? ', …' : ''} again, with the same arguments: it puts the policies on every table below`,
  };
}
