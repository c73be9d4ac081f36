import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { IMPORT_LOCK_CLASS } from '../../src/constants.ts';
import { applyChanges } from '../../src/engine/apply.ts';
import { openPool, sql, type Queryable } from '../../src/db/pool.ts';
import * as model from '../reference/model.ts';
import type { RefGraph } from '../reference/model.ts';
import { collect, runCli, spawnCli, waitForImportBlocked, waitUntil } from '../helpers/cli.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { graphArbitrary, loadGraph, readPermissions } from '../helpers/graph.ts';
import { withDatabase } from '../helpers/url.ts';

const scratch = await mkdtemp(path.join(tmpdir(), 'permgraph-ops-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));
let counter = 0;

const csvField = (v: string | null) => (v === null ? '' : /[",\r\n]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v);

async function writeCsvs(graph: RefGraph): Promise<{ nodes: string; grants: string }> {
  const nodes = path.join(scratch, `${counter}-nodes.csv`);
  const grants = path.join(scratch, `${counter++}-grants.csv`);
  const nodeLines = [...graph.nodes].reverse().map((n) => [n.id, n.kind, n.ownerId, n.trashAt?.toISOString() ?? null].map(csvField).join(','));
  await writeFile(nodes, ['id,kind,owner_id,trash_at', ...nodeLines, ''].join('\n'));
  await writeFile(grants, ['tail_id,head_id,level,source', ...graph.grants.map((g) => [g.tailId, g.headId, String(g.level), g.source].map(csvField).join(',')), ''].join('\n'));
  return { nodes, grants };
}

async function counts(db: Queryable) {
  const [row] = await db.query(sql`
    select (select count(*) from permgraph.nodes)::int as nodes, (select count(*) from permgraph.grants)::int as grants,
           (select count(*) from permgraph.permissions)::int as permissions, (select count(*) from permgraph.audit_log)::int as audit`);
  return row;
}

const bigGraph = fc.sample(graphArbitrary({ users: 40, groups: 60, objects: 30, grants: 200 }, 1), { seed: 7, numRuns: 1 })[0]!;

describe('permgraph import / audit / doctor (CLI)', async () => {
  const { db, url } = await createTestDatabase();
  const cli = (...args: string[]) => runCli(['--database-url', url, ...args]);

  it('imports a CSV pair; the table equals the reference model', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const files = await writeCsvs(bigGraph);
    const result = await cli('import', '--nodes', files.nodes, '--grants', files.grants, '--batch-size', '50');
    expect(result.stderr).toBe(''); // not a TTY: no progress bar
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^import import-[0-9a-f]{10}: loaded\n/);
    expect(result.stdout).toContain(`  nodes   ${bigGraph.nodes.length} read, 0 invalid; ${bigGraph.nodes.length} new, 0 updated, 0 unchanged`);
    expect(await readPermissions(db)).toEqual(model.computePermissions(bigGraph));
    const json = JSON.parse((await cli('--json', 'import', '--nodes', files.nodes, '--grants', files.grants)).stdout);
    expect(json).toMatchObject({ loaded: true, nodes: { unchanged: bigGraph.nodes.length }, grants: { unchanged: bigGraph.grants.length } });
  });

  it('SIGKILL mid-import, then --resume: the same state as a clean import', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const files = await writeCsvs(bigGraph);
    const args = ['import', '--nodes', files.nodes, '--grants', files.grants, '--batch-size', '3', '--name', 'killed'];
    const child = spawnCli(['--database-url', url, ...args]);
    const exited = collect(child);
    const locker = openPool(url, { poolSize: 1 });
    try {
      await waitUntil(async () => {
        const [run] = await locker.query(sql`select rows_done from permgraph.import_runs where name = 'killed'`);
        return (run?.rows_done ?? 0) >= 12;
      }, 'the import to commit a few batches');
      // Holding the run's row stops the child inside its next batch; kill it there.
      await locker.tx(async (tx) => {
        const [run] = await tx.query(sql`select phase from permgraph.import_runs where name = 'killed' for update`);
        expect(['nodes', 'grants']).toContain(run.phase);
        child.kill('SIGKILL');
        expect((await exited).code).toBe(null);
      });
      // The killed session's backend ends (rolling its batch back) once it sees the closed socket.
      await waitUntil(async () => {
        const [row] = await locker.query(sql`
          select count(*)::int as n from pg_locks
          where locktype = 'advisory' and classid = ${IMPORT_LOCK_CLASS}
            and database = (select oid from pg_database where datname = current_database())`);
        return row.n === 0;
      }, 'the killed import session to end');
    } finally {
      await locker.dispose();
    }
    expect(await counts(db)).toMatchObject({ nodes: 0, grants: 0 });
    const again = await cli(...args);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^permgraph: import "killed" was interrupted \(phase (nodes|grants), \d+ row\(s\) staged\): pass --resume to continue it or --restart to start over\n$/);
    const resumed = await cli(...args, '--resume');
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toContain('import killed: loaded (resumed)');
    expect(resumed.stdout).toContain(`  nodes   ${bigGraph.nodes.length} read, 0 invalid; ${bigGraph.nodes.length} new`);
    expect(resumed.stdout).toContain(`  grants  ${bigGraph.grants.length} read, 0 invalid; ${bigGraph.grants.length} new`);
    expect(await readPermissions(db)).toEqual(model.computePermissions(bigGraph));
    expect(await counts(db)).toMatchObject({ nodes: bigGraph.nodes.length, grants: bigGraph.grants.length });
  });

  it('SIGINT while the import runs a statement: the statement is cancelled on the server, exit 130, --resume completes', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const files = await writeCsvs(bigGraph);
    const args = ['import', '--nodes', files.nodes, '--grants', files.grants, '--name', 'sigint', '--actor', 'ops@example.com'];
    const locker = openPool(url, { poolSize: 2 });
    try {
      // The import's lock before validating waits for the one this transaction holds: the import's statement is running on the server when the signal comes.
      const result = await locker.tx(async (tx) => {
        await tx.query(sql`lock table permgraph.nodes in access exclusive mode`);
        const child = spawnCli(['--database-url', url, ...args]);
        const exited = collect(child);
        const backend = await waitForImportBlocked(locker);
        child.kill('SIGINT');
        const outcome = await exited;
        // Nothing of the import still runs: without the cancel, its statement would wait for this lock for as long as it is held.
        await waitUntil(async () => {
          const [row] = await locker.query(sql`select count(*)::int as n from pg_stat_activity where pid = ${backend} and state = 'active'`);
          return row.n === 0;
        }, 'the import statement to stop');
        return outcome;
      });
      expect(result.code).toBe(130);
      expect(result.stderr).toBe('permgraph: import "sigint" interrupted (SIGINT); nothing was loaded: run the same command with --resume to continue\n');
    } finally {
      await locker.dispose();
    }
    const [run] = await db.query(sql`select phase from permgraph.import_runs where name = 'sigint'`);
    expect(run.phase).toBe('load');
    expect(await counts(db)).toMatchObject({ nodes: 0, grants: 0 });
    const resumed = await cli(...args, '--resume');
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toContain('import sigint: loaded (resumed)');
    expect(await readPermissions(db)).toEqual(model.computePermissions(bigGraph));
    const [audit] = await db.query(sql`select actor, source from permgraph.audit_log where action = 'import' order by id desc limit 1`);
    expect(audit).toEqual({ actor: 'ops@example.com', source: 'sigint' });
  });

  it('dry run, invalid rows, fail mode and malformed input from the command line', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const nodes = path.join(scratch, 'bad-nodes.csv');
    await writeFile(nodes, 'id,kind,owner_id\nann,user,\nbob,robot,\nteam,group,ann\n');
    const before = await counts(db);
    // Skipping is a choice: the dry run says what it would skip.
    const dry = await cli('import', '--nodes', nodes, '--dry-run', '--on-invalid', 'skip');
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain('dry run');
    expect(dry.stdout).toContain('  nodes   3 read, 1 invalid (skipped); would be 2 new, 0 updated, 0 unchanged');
    expect(dry.stdout).toContain('  nodes bad-nodes.csv line 3: kind must be user, group or object, got "robot"');
    expect(await counts(db)).toEqual(before);
    // By default an invalid row fails the run: exit 1, nothing written.
    const failDry = await cli('import', '--nodes', nodes, '--dry-run');
    expect(failDry.code).toBe(1);
    expect(failDry.stderr).toMatch(/^permgraph: dry run: 1 invalid row\(s\); nothing would be loaded \(first: .*\); pass --on-invalid skip to load the valid rows\n$/);
    const fail = await cli('import', '--nodes', nodes);
    expect(fail.code).toBe(1);
    expect(fail.stdout).toContain('  nodes   3 read, 1 invalid (refused); 0 new, 0 updated, 0 unchanged');
    expect(fail.stderr).toMatch(/^permgraph: import "import-[0-9a-f]{10}" refused: 1 invalid row\(s\), nothing loaded \(first: bad-nodes.csv line 3: kind must be/);
    expect(await counts(db)).toEqual(before);
    const failJson = await cli('--json', 'import', '--nodes', nodes);
    expect(failJson.code).toBe(1);
    expect(JSON.parse(failJson.stdout)).toMatchObject({ loaded: false, invalid: 1, onInvalid: 'fail' });
    expect(JSON.parse(failJson.stderr)).toMatchObject({ error: { code: 'invalid_input', exitCode: 1 } });
    const skip = await cli('import', '--nodes', nodes, '--on-invalid', 'skip');
    expect(skip.code).toBe(0);
    expect(skip.stdout).toContain('  nodes   3 read, 1 invalid (skipped); 2 new, 0 updated, 0 unchanged');

    // Malformed CSV: the line and field where it happens (an unclosed quote: where it opened).
    const malformed = path.join(scratch, 'malformed.csv');
    await writeFile(malformed, `id,kind,owner_id\nx,user,\n"y,user,\n${'z,user,\n'.repeat(500)}`);
    const afterSkip = await counts(db);
    const bad = await cli('import', '--nodes', malformed, '--batch-size', '1');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^permgraph: malformed CSV in .*malformed.csv line 3, field 1: the quote opened at column 1 is never closed\n$/);
    expect(await counts(db)).toEqual(afterSkip);
    const header = path.join(scratch, 'header.csv');
    await writeFile(header, 'tail,head,level\n');
    expect((await cli('import', '--grants', header)).stderr).toMatch(/^permgraph: .*header.csv: header must be tail_id,head_id,level\[,source\]\[,expires_at\], got "tail,head,level"/);
    expect((await cli('import')).stderr).toBe('permgraph: nothing to import: give --nodes/--nodes-query and/or --grants/--grants-query\n');
    expect((await cli('import', '--nodes', nodes, '--on-invalid', 'maybe')).code).toBe(2);
    expect((await cli('import', '--nodes', nodes, '--batch-size', '0')).stderr).toBe('permgraph: --batch-size must be a positive integer, got "0"\n');
  });

  it('imports from a query over an app table (named with its schema; one read-only statement)', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    await db.query(sql`
      create table public.sessions (id integer primary key, project_id text);
      insert into public.sessions select i, 'proj' || (i % 3) from generate_series(1, 20) i`);
    const result = await cli(
      'import',
      '--nodes-query', "select 'proj' || i as id, 'group' as kind, null as owner_id from generate_series(0, 2) i",
      '--batch-size', '2',
    );
    expect(result.code).toBe(0);
    const unqualified = await cli('import', '--nodes-query', "select id, 'object' as kind, project_id as owner_id from sessions");
    expect(unqualified.code).toBe(1);
    expect(unqualified.stderr).toBe(
      'permgraph: the nodes query failed: relation "sessions" does not exist (import queries run with search_path = pg_catalog, pg_temp: name tables with their schema, e.g. public.sessions)\n',
    );
    const sessions = await cli('import', '--nodes-query', "select id, 'object' as kind, project_id as owner_id from public.sessions", '--batch-size', '7');
    expect(sessions.code).toBe(0);
    expect(sessions.stdout).toContain('  nodes   20 read, 0 invalid; 20 new');
    // The injection of issue 10: refused, and nothing is created.
    const injected = await cli(
      'import', '--dry-run',
      '--nodes-query', "select id::text, 'object' as kind, null as owner_id from public.sessions limit 0; create table public.x (a int); select 'b' as id, 'user' as kind, null as owner_id",
    );
    expect(injected.code).toBe(1);
    expect(injected.stderr).toMatch(/^permgraph: the nodes query must be a single statement: a second one starts after the ";" at character \d+\n$/);
    const [{ created }] = await db.query(sql`select to_regclass('public.x') is not null as created`);
    expect(created).toBe(false);
    const [{ n }] = await db.query(sql`select count(*)::int as n from permgraph.nodes where kind = 'object' and owner_id like 'proj%'`);
    expect(n).toBe(20);
  });

  it('audit lists changes with filters, --json and a cursor', async () => {
    await db.query(sql`select permgraph.prune_audit_log(now() + interval '1 minute')`);
    await db.tx(async (tx) => {
      await tx.query(sql`set local permgraph.actor = 'cli-tester'`);
      await tx.query(sql`insert into permgraph.nodes (id, kind) values ('au1', 'user'), ('ag1', 'group')`);
      await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('au1', 'ag1', 2, 'ui')`);
    });
    await db.query(sql`update permgraph.grants set level = 3 where tail_id = 'au1' and head_id = 'ag1'`);
    const all = await cli('audit', '--target', 'ag1');
    expect(all.code).toBe(0);
    const lines = all.stdout.trim().split('\n');
    const [{ login }] = await db.query(sql`select session_user::text as login`);
    // a declared actor is shown with the login that declared it; the login alone when it is the actor
    expect(lines.map((l) => l.split('\t').slice(2).join(' | '))).toEqual([
      `cli-tester (login ${login}) | create_node | group ag1`,
      `cli-tester (login ${login}) | grant | au1 -> ag1 level 2 (source ui)`,
      `${login} | change_level | au1 -> ag1 level 2 => 3 (source ui)`,
    ]);
    const byLogin = JSON.parse((await cli('--json', 'audit', '--login', login, '--target', 'ag1')).stdout);
    expect(byLogin.entries.map((e: { actor: string; dbRole: string }) => [e.actor, e.dbRole])).toEqual([['cli-tester', login], ['cli-tester', login], [login, login]]);
    expect(JSON.parse((await cli('--json', 'audit', '--login', 'nobody-at-all')).stdout).entries).toEqual([]);
    const first = await cli('audit', '--actor', 'cli-tester', '--limit', '2');
    expect(first.stdout).toMatch(/\nmore: --after \d+\n$/);
    const cursor = /--after (\d+)/.exec(first.stdout)![1]!;
    const rest = JSON.parse((await cli('--json', 'audit', '--actor', 'cli-tester', '--limit', '2', '--after', cursor)).stdout);
    expect(rest.entries.map((e: { action: string }) => e.action)).toEqual(['grant']);
    expect(rest.nextCursor).toBe(null);
    const last = rest.entries[0].id;
    expect(await cli('audit', '--actor', 'cli-tester', '--after', String(last))).toMatchObject({ code: 0, stdout: `no audit entries after ${last} match\n` });
    expect(await cli('audit', '--actor', 'nobody-at-all')).toMatchObject({ code: 0, stdout: 'no audit entries match\n' });
    expect(JSON.parse((await cli('--json', 'audit', '--actor', 'nobody-at-all')).stdout)).toEqual({ entries: [], nextCursor: null });
    expect((await cli('audit', '--source', 'ui', '--action', 'change_level')).stdout.trim().split('\n')).toHaveLength(1);
    expect((await cli('audit', '--since', 'whenever')).stderr).toBe('permgraph: since "whenever" is neither a timestamp with a time zone offset nor a date (ISO 8601, e.g. 2030-01-31T12:00:00Z, or 2030-01-31: its midnight UTC)\n');
    expect((await cli('audit', '--limit', 'x')).code).toBe(2);
  });

  it('audit and explain print stored text on its own line and column: control characters in actors and sources are escaped', async () => {
    await db.tx(async (tx) => {
      await tx.query(sql`select set_config('permgraph.actor', ${'mallory\tgrant\tforged\n999'}, true)`);
      await tx.query(sql`insert into permgraph.nodes (id, kind) values ('cc-user', 'user'), ('cc-group', 'group')`);
      await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('cc-user', 'cc-group', 1, ${'x)\n1000\tforged line\u0007'})`);
    });
    const audit = await cli('audit', '--target', 'cc-group');
    expect(audit.code).toBe(0);
    const lines = audit.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line.split('\t')).toHaveLength(5);
    expect(lines[1]).toMatch(/\tmallory\\tgrant\\tforged\\n999 \(login [^)]+\)\tgrant\tcc-user -> cc-group level 1 \(source x\)\\n1000\\tforged line\\x07\)$/);
    await applyChanges(db);
    const explain = await cli('explain', 'cc-user', 'cc-group');
    expect(explain.stdout).toContain('  cc-user -[read, x)\\n1000\\tforged line\\x07]-> cc-group\n');
    expect(explain.stdout.split('\n').filter((l) => l.includes('forged'))).toHaveLength(1);
  });

  it('a moment no Date can carry, stored before the schema refused it, is shown rather than thrown', async () => {
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('inf-user', 'user'), ('inf-group', 'group')`);
    // the schema refuses it now…
    await expect(db.query(sql`insert into permgraph.grants (tail_id, head_id, level, expires_at) values ('inf-user', 'inf-group', 1, 'infinity')`))
      .rejects.toThrow(/grant "inf-user" -> "inf-group" expires_at infinity is outside the years 1 to 9999 \(for never, null\)/);
    // …so write it the way an older release let it through
    await db.query(sql`alter table permgraph.grants disable trigger grants_validate`);
    try {
      await db.query(sql`insert into permgraph.grants (tail_id, head_id, level, expires_at) values ('inf-user', 'inf-group', 1, 'infinity')`);
      await db.query(sql`update permgraph.grants set level = 2 where tail_id = 'inf-user' and head_id = 'inf-group'`);
      await db.query(sql`update permgraph.grants set level = 1 where tail_id = 'inf-user' and head_id = 'inf-group'`);
    } finally {
      await db.query(sql`alter table permgraph.grants enable trigger grants_validate`);
    }
    await applyChanges(db);
    const audit = await cli('audit', '--target', 'inf-group', '--action', 'grant');
    expect(audit).toMatchObject({ code: 0 });
    expect(audit.stdout).toMatch(/\tgrant\tinf-user -> inf-group level 1 until infinity \(source default\)\n$/);
    const changes = await cli('audit', '--target', 'inf-group', '--action', 'change_level');
    expect(changes).toMatchObject({ code: 0 });
    expect(changes.stdout).toMatch(/\tchange_level\tinf-user -> inf-group level 1 => 2 until infinity \(source default\)\n.*\tchange_level\tinf-user -> inf-group level 2 => 1 until infinity/);
    const explain = await cli('explain', 'inf-user', 'inf-group');
    expect(explain.code).toBe(0);
    expect(explain.stdout).toContain('  inf-user -[read, default, until infinity]-> inf-group\n'); // (explain prints the database's text, as audit does)
  });

  it('prune-audit deletes the entries before a moment (or older than a duration), says how many, and refuses bad input with nothing deleted', async () => {
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('prune-old', 'user')`);
    // the cut-off to the microsecond (clock_timestamp() has them), as the database writes it in UTC
    const [{ stamp }] = await db.query(sql`select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as stamp from pg_sleep(0.005)`);
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('prune-new', 'user')`);
    const count = async (where: 'before' | 'all') =>
      Number((await db.query(where === 'all' ? sql`select count(*) as n from permgraph.audit_log` : sql`select count(*) as n from permgraph.audit_log where at < ${stamp}::timestamptz`))[0].n);
    const older = await count('before');
    expect(older).toBeGreaterThan(0);
    const total = await count('all');

    for (const args of [[], ['--before', stamp, '--older-than', '1d']]) {
      expect(await cli('prune-audit', ...args), args.join(' ')).toMatchObject({ code: 2, stderr: 'permgraph: give --before or --older-than, one of the two\n' });
    }
    const future = await cli('prune-audit', '--before', '2999-01-01T00:00:00Z');
    expect(future).toMatchObject({ code: 1, stderr: expect.stringMatching(/^permgraph: before 2999-01-01T00:00:00.000000Z is in the future/) });
    expect(await cli('prune-audit', '--older-than', 'a while')).toMatchObject({ code: 2, stderr: expect.stringMatching(/^permgraph: --older-than "a while" is not a duration/) });
    expect(await cli('prune-audit', '--before', 'yesterday')).toMatchObject({ code: 2, stderr: expect.stringMatching(/^permgraph: --before "yesterday" is neither a timestamp with a time zone offset nor a date/) });
    expect(await count('all')).toBe(total);

    expect(await cli('prune-audit', '--before', stamp, '--dry-run')).toMatchObject({ code: 0, stdout: `would prune ${older.toLocaleString('en-US')} audit entries before ${stamp}\n` });
    expect(await count('all')).toBe(total);
    const json = await cli('--json', 'prune-audit', '--before', stamp, '--actor', 'ops@example.com');
    expect(JSON.parse(json.stdout)).toEqual({ before: stamp, entries: older, dryRun: false });
    expect(await count('before')).toBe(0);
    expect(await count('all')).toBe(total - older + 1);
    const [last] = await db.query(sql`select action, actor, details from permgraph.audit_log order by id desc limit 1`);
    expect(last).toEqual({ action: 'prune_audit', actor: 'ops@example.com', details: { before: stamp, entries: older } });
    expect((await cli('audit', '--action', 'prune_audit')).stdout).toContain(`\tprune_audit\tentries before ${stamp} pruned (${older})\n`);
  });

  it('doctor: ok on a migrated database (warns without a worker), all ok with a worker', async () => {
    await db.query(sql`delete from permgraph.changes`);
    const noWorker = await cli('doctor');
    expect(noWorker.code).toBe(0);
    expect(noWorker.stdout).toMatch(/^ok    schema    schema matches this package$/m);
    const [{ count }] = await db.query(sql`select count(*)::int as count from pg_indexes where schemaname = 'permgraph'`);
    expect(noWorker.stdout).toContain(`ok    indexes   all ${count} expected indexes present\n`);
    expect(noWorker.stdout).toMatch(/^warn  worker    no worker holds the applier role/m);
    expect(noWorker.stdout).toMatch(/^ok    backlog   no pending changes$/m);
    // (ok or warn: earlier tests in this file may have left the queue's table full of applied rows)
    expect(noWorker.stdout).toMatch(/^(ok  |warn)  queue     the change queue's table holds [\d,]+ pages/m);
    // What a worker holds to be the active applier.
    const holder = openPool(url, { poolSize: 1 });
    try {
      await holder.task(async (conn) => {
        await conn.query(sql`select pg_advisory_lock(permgraph._applier_role_key())`);
        const json = JSON.parse((await cli('--json', 'doctor')).stdout);
        expect(json.ok).toBe(true);
        expect(json.checks.find((c: { name: string }) => c.name === 'worker')).toMatchObject({ status: 'ok' });
        await conn.query(sql`select pg_advisory_unlock(permgraph._applier_role_key())`);
      });
    } finally {
      await holder.dispose();
    }
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('pending-user', 'user')`);
    expect((await cli('doctor')).stdout).toMatch(/^ok    backlog   \d+ pending change\(s\), oldest [\d.]+ s old$/m);
    await db.query(sql`update permgraph.changes set captured_at = now() - interval '1 hour'`);
    expect((await cli('doctor', '--max-lag', '600')).stdout).toMatch(/^warn  backlog   \d+ pending change\(s\), oldest 36\d\d\.\d s old \(over 600 s/m);
    await db.query(sql`delete from permgraph.changes`);
  });

  it('doctor: reports a dropped index (exit 1)', async () => {
    await db.query(sql`drop index permgraph.grants_head_idx`);
    try {
      const result = await cli('doctor');
      expect(result.code).toBe(1);
      expect(result.stdout).toMatch(/^fail  indexes   missing: grants.grants_head_idx$/m);
      expect(result.stderr).toBe('permgraph: 1 check(s) failed: indexes\n');
    } finally {
      await db.query(sql`create index if not exists grants_head_idx on permgraph.grants (head_id)`);
    }
  });

  it('doctor: reports a missing schema on an empty database', async () => {
    const admin = openPool(inject('pgServerUrl'), { poolSize: 1 });
    const name = `permgraph_empty_${process.pid}_${Date.now()}`;
    await admin.query(sql`create database ${sql.ident(name)}`);
    try {
      const result = await runCli(['--database-url', withDatabase(inject('pgServerUrl'), name), 'doctor']);
      expect(result.code).toBe(1);
      expect(result.stdout).toMatch(/^fail  schema    schema missing: run `permgraph migrate`$/m);
      expect(result.stdout).toMatch(/^fail  indexes   none of the \d+ expected indexes exists \(run `permgraph migrate`\)$/m);
      expect(result.stderr).toBe('permgraph: 2 check(s) failed: schema, indexes\n');
    } finally {
      await admin.query(sql`drop database if exists ${sql.ident(name)} with (force)`);
      await admin.dispose();
    }
  });

  it('every new command has --help', async () => {
    for (const command of ['import', 'audit', 'doctor']) {
      const result = await runCli([command, '--help']);
      expect(result.code, command).toBe(0);
      expect(result.stdout, command).toContain(`Usage: permgraph ${command}`);
    }
  });
});
