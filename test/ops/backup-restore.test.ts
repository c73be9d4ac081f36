// Backups and restores of a database with permgraph in it
// (docs/operations.md, "Backups and restores"), with the tools an operator
// uses: pg_dump in its custom format and pg_restore, pg_dumpall
// --roles-only for the roles, pg_basebackup for a physical backup. They
// run on throwaway clusters of the newest PostgreSQL installed on this
// machine (the embedded server ships no pg_dump, and pg_dump refuses a
// server newer than itself); where none is installed the tests skip and
// say why.
//
// The source is a cluster whose transaction ids are far ahead of a fresh
// one's, as a production server's are: what permgraph stores in terms of
// one cluster (transaction ids, role oids) must not mislead it in another.
// Every table is judged against the reference model and the engine's own
// full recomputation (verify), never against the code under test alone.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sql } from '../../src/db/pool.ts';
import { applyChanges } from '../../src/engine/apply.ts';
import { findInstalledPostgres, type Cluster } from '../../scripts/lib/postgres-cluster.ts';
import * as model from '../reference/model.ts';
import type { RefGraph } from '../reference/model.ts';
import { g, grant, u } from '../helpers/builders.ts';
import { runCli, waitUntil } from '../helpers/cli.ts';
import { failureOf } from '../helpers/failure.ts';
import { insertGrants, insertNodes, readPermissions } from '../helpers/graph.ts';
import {
  burnTransactionIds, clusterSet, doctor, expectedTable, isApplied, LOGINS, OWNER, PASSWORD, readEvents, setUpApplication, startingGraph, tokenOf, tool, urlOf, type Tool,
} from '../helpers/ops.ts';
import { BEFORE_049, historyMissing, migrateAsAt } from '../helpers/released.ts';

const POSTGRES = findInstalledPostgres();
const CONSUMER = 'search';
/** Why a database as migrated before 049 cannot be built here (no git history), or null. */
const NO_049 = historyMissing(BEFORE_049);
/** The consumer of that database, and the login that registers it: the source cluster's first role. */
const FEED = 'feed';
const FEED_LOGIN = 'app_feed';
/** Another consumer of that database, whose login is renamed afterwards. */
const TAIL = 'tail';
const TAIL_LOGIN = 'app_tail';
const TAIL_LOGIN_RENAMED = 'app_tail_v2';

if (typeof POSTGRES === 'string') {
  it.skip(`backups and restores: skipped, ${POSTGRES}`, () => {});
} else {
  const binaries = POSTGRES;

  describe(`backups and restores (PostgreSQL ${binaries.version} in ${binaries.binDir})`, async () => {
    const { open, start, close } = clusterSet(binaries);
    const scratch = mkdtempSync(path.join(tmpdir(), 'permgraph-backup-'));
    // (the clusters stop themselves at exit too, should the set-up below fail)
    const removeScratch = () => rmSync(scratch, { recursive: true, force: true });
    process.once('exit', removeScratch);
    afterAll(async () => {
      await close();
      removeScratch();
    });

    // The source: an application database migrated by its own owner (not a
    // superuser), its logins, and a graph in every state a backup can
    // catch: rows applied, changes still queued (no worker running), an
    // expiring grant, one whose expiry has passed unapplied, a change
    // stream consumer, the audit log.
    const source = await start();
    const sourceAdmin = open(source.url);
    await sourceAdmin.query(sql.__dangerous__rawValue(`create role ${FEED_LOGIN} login password '${PASSWORD}'`));
    await burnTransactionIds(sourceAdmin, 30000);
    const { owner: sourceOwner, writer: sourceWriter, worker: sourceWorker, reader: sourceReader } = await setUpApplication(source, sourceAdmin, open);

    const initial = startingGraph();
    const { soon, nodes } = initial;
    let grants = initial.grants;
    await insertNodes(sourceWriter, nodes);
    await insertGrants(sourceWriter, grants);
    await applyChanges(sourceWorker);
    await sourceReader.query(sql`select permgraph.register_consumer(${CONSUMER})`);
    // queued: a revoke, a new user and its grant, a raised level
    nodes.push(u('erin'));
    await tokenOf(sourceWriter, async (tx) => {
      await tx.query(sql`delete from permgraph.grants where tail_id = 'alice' and head_id = 'eng'`);
      await insertNodes(tx, [u('erin')]);
      await insertGrants(tx, [grant('erin', 2, 'ops')]);
      await tx.query(sql`update permgraph.grants set level = 2 where tail_id = 'bob' and head_id = 'ops'`);
    });
    grants = [...grants.filter((x) => x.tailId !== 'alice' && x.tailId !== 'bob'), grant('erin', 2, 'ops'), grant('bob', 2, 'ops')];
    // dave's grant expires with nobody to apply it: reads deny it, its row stays stored
    await waitUntil(async () => Date.now() > soon.getTime() + 100, "dave's grant to expire");
    const [{ n: queued }] = await sourceOwner.query(sql`select count(*)::int as n from permgraph.changes`);
    expect(queued).toBeGreaterThan(0);
    const [{ n: auditEntries }] = await sourceOwner.query(sql`select count(*)::int as n from permgraph.audit_log`);
    /** The graph the backups hold. */
    const dumped: RefGraph = { nodes: [...nodes], grants: [...grants] };

    // A database as migrated before migration 049 (the commit before it,
    // read from git), so that its stored state records no cluster, with a
    // change consumer registered by the cluster's first role, events it has
    // not acknowledged, a mark and a snapshot, and changes queued.
    const dump048 = path.join(scratch, 'app048.dump');
    const graph048: RefGraph = { nodes: [u('ann'), u('ben'), g('docs'), g('wiki', 'docs')], grants: [grant('ann', 1, 'docs'), grant('ben', 2, 'wiki'), grant('ben', 1, 'docs')] };
    let feedOid = 0;
    let feedEvents: string[] = [];
    if (NO_049 === null) {
      await sourceAdmin.query(sql.__dangerous__rawValue(`grant permgraph_reader to ${FEED_LOGIN}`));
      await sourceAdmin.query(sql.__dangerous__rawValue(`create database app048 owner ${OWNER}`));
      const owner048 = open(urlOf(source, 'app048', OWNER));
      await migrateAsAt(owner048, BEFORE_049);
      expect((await owner048.query(sql`select to_regclass('permgraph.cluster_identity') as t`))[0].t).toBeNull();
      const writer048 = open(urlOf(source, 'app048', LOGINS.writer));
      const worker048 = open(urlOf(source, 'app048', LOGINS.worker));
      const feed048 = open(urlOf(source, 'app048', FEED_LOGIN));
      await insertNodes(writer048, graph048.nodes);
      await insertGrants(writer048, graph048.grants.slice(0, 1));
      await worker048.query(sql`select permgraph.apply_changes()`);
      await feed048.query(sql`select permgraph.register_consumer(${FEED})`);
      await sourceAdmin.query(sql.__dangerous__rawValue(`create role ${TAIL_LOGIN} login password '${PASSWORD}' in role permgraph_reader`));
      const tail048 = open(urlOf(source, 'app048', TAIL_LOGIN));
      await tail048.query(sql`select permgraph.register_consumer(${TAIL})`);
      await tail048.dispose();
      await sourceAdmin.query(sql.__dangerous__rawValue(`alter role ${TAIL_LOGIN} rename to ${TAIL_LOGIN_RENAMED}`));
      await insertGrants(writer048, graph048.grants.slice(1, 2));
      await worker048.query(sql`select permgraph.apply_changes()`);
      feedEvents = await readEvents(feed048, FEED);
      expect(feedEvents.length).toBeGreaterThan(0);
      // (queued)
      await insertGrants(writer048, graph048.grants.slice(2));
      feedOid = Number((await sourceAdmin.query(sql`select oid::bigint as oid from pg_roles where rolname = ${FEED_LOGIN}`))[0].oid);
      const run = tool(binaries, 'pg_dump', ['--format=custom', `--file=${dump048}`, urlOf(source, 'app048')]);
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
    }

    // The backups: the whole database, and without the permission table's rows.
    const dump = path.join(scratch, 'app.dump');
    const dumpWithoutRows = path.join(scratch, 'app-without-permissions.dump');
    const roles = path.join(scratch, 'roles.sql');
    for (const [file, extra] of [[dump, []], [dumpWithoutRows, ['--exclude-table-data=permgraph.permissions']]] as const) {
      const run = tool(binaries, 'pg_dump', ['--format=custom', `--file=${file}`, ...extra, urlOf(source, 'app')]);
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
    }
    expect(tool(binaries, 'pg_dumpall', ['--roles-only', `--file=${roles}`, `--dbname=${source.url}`]).code).toBe(0);

    /** A target cluster with the source's roles, as pg_dumpall --roles-only and psql carry them over. */
    const withRoles = await start();
    // (psql goes on past "role postgres already exists")
    expect(tool(binaries, 'psql', ['--quiet', `--file=${roles}`, withRoles.url]).code).toBe(0);

    /** Restores `file` into a new database `name` of `cluster`, owned by `owner`, as pg_restore does (extra: its options). */
    function restore(cluster: Cluster, name: string, file: string, options: { owner?: string; extra?: string[] } = {}): Tool {
      const created = tool(binaries, 'psql', ['--quiet', '-v', 'ON_ERROR_STOP=1', '-c',
        `create database ${name}${options.owner ? ` owner ${options.owner}` : ''}`, cluster.url]);
      expect(created.stderr).toBe('');
      return tool(binaries, 'pg_restore', ['--dbname', urlOf(cluster, name), ...(options.extra ?? []), file]);
    }

    it('a custom-format dump restores into a fresh cluster whose roles came first: the schema, queue, audit log and rights hold, and new writes are applied', async () => {
      const restored = restore(withRoles, 'app', dump, { owner: OWNER });
      expect(restored.stderr).toBe('');
      expect(restored.code).toBe(0);
      const ownerUrl = urlOf(withRoles, 'app', OWNER);
      const owner = open(ownerUrl);
      const writer = open(urlOf(withRoles, 'app', LOGINS.writer));
      const reader = open(urlOf(withRoles, 'app', LOGINS.reader));
      const workerUrl = urlOf(withRoles, 'app', LOGINS.worker);

      // The schema's history came with it: nothing to migrate.
      const migrated = await runCli(['--database-url', ownerUrl, 'migrate']);
      expect(migrated.stdout.trim()).toBe('schema is up to date');
      expect(migrated.code).toBe(0);
      let checks = await doctor(ownerUrl);
      expect(Object.entries(checks.checks).filter(([, c]) => c.status === 'fail')).toEqual([]);
      expect(checks.code).toBe(0);
      expect((await owner.query(sql`select count(*)::int as n from permgraph.audit_log`))[0].n).toBe(auditEntries);
      expect((await owner.query(sql`select count(*)::int as n from permgraph.changes`))[0].n).toBe(queued);

      // The change stream's consumer is still its login's, before any batch
      // here too: the reader reads it, a writer may not acknowledge it.
      expect(await reader.query(sql`select seq from permgraph.read_changes(${CONSUMER})`)).toEqual([]);
      expect((await failureOf(writer.query(sql`select permgraph.ack_changes(${CONSUMER}, 1)`))).code).toBe('42501');

      // The application writes before any worker runs on the restored database.
      const token = await tokenOf(writer, async (tx) => {
        await insertNodes(tx, [u('fay')]);
        await insertGrants(tx, [grant('fay', 1, 'eng')]);
      });
      const graph: RefGraph = { nodes: [...dumped.nodes, u('fay')], grants: [...dumped.grants, grant('fay', 1, 'eng')] };
      expect(await isApplied(reader, token)).toBe(false);
      const restoredFromElsewhere = async () =>
        (await reader.query(sql`select permgraph.status() -> 'restored_from_another_cluster' as restored`))[0].restored;
      expect(await restoredFromElsewhere()).toBe(true);
      expect((await runCli(['--database-url', ownerUrl, 'status'])).stdout).toContain('\nrestored:         from another cluster (a logical backup restored here, or pg_upgrade);');

      const once = await runCli(['--database-url', workerUrl, 'worker', '--once']);
      expect(once.stderr).toBe('');
      expect(once.code).toBe(0);
      expect(await isApplied(reader, token)).toBe(true);
      expect(await restoredFromElsewhere()).toBe(false);
      expect(await readPermissions(reader)).toEqual(expectedTable(graph));
      expect((await runCli(['--database-url', workerUrl, 'verify'])).code).toBe(0);
      checks = await doctor(ownerUrl);
      expect(checks.checks.queue!.status).toBe('ok');
      expect(checks.code).toBe(0);

      // The roles' rights came back with the roles: a writer writes the graph
      // and nothing else, a reader only reads.
      for (const [db, statement] of [
        [writer, sql`insert into permgraph.permissions values ('fay', 'ops', 3, true)`],
        [writer, sql`delete from permgraph.changes`],
        [writer, sql`select permgraph.apply_changes()`],
        [reader, sql`insert into permgraph.nodes (id, kind) values ('mallory', 'user')`],
      ] as const) {
        expect((await failureOf(db.query(statement))).code).toBe('42501');
      }

      // The change stream's consumer is still its login's, and has the events
      // of the batch applied since.
      const events = await reader.query(sql`select user_id, target_id from permgraph.read_changes(${CONSUMER})`);
      expect(events.map((e: { user_id: string; target_id: string }) => `${e.user_id} ${e.target_id}`)).toContain('fay eng');
      expect((await failureOf(writer.query(sql`select permgraph.ack_changes(${CONSUMER}, 1)`))).code).toBe('42501');
    });

    it("a dump without the permission table's rows: doctor fails, tokens wait, and the worker's next batch recomputes the table in full", async () => {
      const restored = restore(withRoles, 'app_without_rows', dumpWithoutRows, { owner: OWNER });
      expect(restored.stderr).toBe('');
      expect(restored.code).toBe(0);
      const ownerUrl = urlOf(withRoles, 'app_without_rows', OWNER);
      const workerUrl = urlOf(withRoles, 'app_without_rows', LOGINS.worker);
      const writer = open(urlOf(withRoles, 'app_without_rows', LOGINS.writer));
      const reader = open(urlOf(withRoles, 'app_without_rows', LOGINS.reader));
      expect(await readPermissions(reader)).toEqual([]);

      // Reads deny what the graph grants (they fail closed), and say nothing
      // is wrong: doctor does.
      const allowed = async () => (await reader.query(sql`select permgraph.check('bob', 'ops', 1) as allowed`))[0].allowed;
      expect(model.check(dumped, 'bob', 'ops', 1, new Date())).toBe(true);
      expect(await allowed()).toBe(false);
      const before = await doctor(ownerUrl);
      expect(before.code).toBe(1);
      expect(before.checks.table).toMatchObject({ status: 'fail' });
      expect(before.checks.table!.message).toContain('permgraph refresh');

      // A write's token is not applied while the table is missing, even one
      // that changed nothing (it needs no batch of its own).
      const token = await tokenOf(writer, async () => {});
      expect(await isApplied(reader, token)).toBe(false);

      const once = await runCli(['--database-url', workerUrl, 'worker', '--once']);
      expect(once.stderr).toBe('');
      expect(once.stdout).toMatch(/^full: /);
      expect(await isApplied(reader, token)).toBe(true);
      expect(await allowed()).toBe(true);
      const table = await readPermissions(reader);
      expect(table).toEqual(expectedTable(dumped));
      expect((await runCli(['--database-url', workerUrl, 'verify'])).code).toBe(0);
      // The change stream's consumer gets every row of it, as new.
      const events = await reader.query(sql`select user_id, target_id, old_level from permgraph.read_changes(${CONSUMER}, 100000)`);
      expect(events.map((e: { user_id: string; target_id: string }) => `${e.user_id} ${e.target_id}`).sort())
        .toEqual(table.map((r) => `${r.userId} ${r.targetId}`).sort());
      expect(events.every((e: { old_level: number | null }) => e.old_level === null)).toBe(true);
      const after = await doctor(ownerUrl);
      expect(after.checks.table).toMatchObject({ status: 'ok' });
      expect(after.code).toBe(0);
    });

    it('into a cluster without the roles: restored as its superuser, doctor says what is wrong; restored with --no-owner as a deployment role, migrate creates the roles and grants their rights, and the owner is no superuser', async () => {
      const bare = await start();

      // As the cluster's superuser, without the roles: every object becomes
      // the superuser's, and no role is granted anything.
      const plain = restore(bare, 'app_plain', dump);
      expect(plain.code).toBe(1);
      expect(plain.stderr).toContain(`role "${OWNER}" does not exist`);
      expect(plain.stderr).toContain('role "permgraph_reader" does not exist');
      const asSuperuser = await doctor(urlOf(bare, 'app_plain'));
      expect(asSuperuser.code).toBe(1);
      expect(asSuperuser.checks.rights).toMatchObject({ status: 'fail' });
      expect(asSuperuser.checks.rights!.message).toContain('role permgraph_writer does not exist');
      expect(asSuperuser.checks.owner).toMatchObject({ status: 'warn' });
      expect(asSuperuser.checks.owner!.message).toContain('postgres, a superuser');

      // As the deployment role this cluster has (another name than the
      // source's owner): pg_restore --no-owner --role. What fails is
      // granting the roles that do not exist yet.
      const bareAdmin = open(bare.url);
      await bareAdmin.query(sql.__dangerous__rawValue(`create role deploy login createrole password '${PASSWORD}'`));
      const restored = restore(bare, 'app', dump, { owner: 'deploy', extra: ['--no-owner', '--role=deploy'] });
      expect(restored.code).toBe(1);
      const errors = restored.stderr.split('\n').filter((line) => line.includes('ERROR:'));
      expect(errors.length).toBeGreaterThan(0);
      for (const line of errors) expect(line).toMatch(/ERROR: {2}role "permgraph_(reader|writer|worker)" does not exist/);
      const deployUrl = urlOf(bare, 'app', 'deploy');
      expect((await doctor(deployUrl)).checks.rights).toMatchObject({ status: 'fail' });

      // migrate has nothing to apply, but finds the rights missing: it
      // creates the roles and grants them.
      const migrated = await runCli(['--database-url', deployUrl, 'migrate']);
      expect(migrated.stderr).toBe('');
      expect(migrated.code).toBe(0);
      expect(migrated.stdout).toMatch(/^granted the roles their missing rights \(\d+\)/);
      expect((await runCli(['--database-url', deployUrl, 'migrate'])).stdout.trim()).toBe('schema is up to date');
      const checks = await doctor(deployUrl);
      expect(checks.checks.rights).toMatchObject({ status: 'ok' });
      expect(checks.checks.owner).toMatchObject({ status: 'ok' });
      expect(checks.code).toBe(0);

      // Nothing runs with more rights than before: every object, each
      // SECURITY DEFINER function among them, is the deployment role's.
      const deploy = open(deployUrl);
      const owners = await deploy.query(sql`
        select distinct r.rolname as owner, r.rolsuper as superuser, p.prosecdef as definer
        from pg_proc p join pg_roles r on r.oid = p.proowner
        where p.pronamespace = 'permgraph'::regnamespace
        union
        select distinct r.rolname, r.rolsuper, null::boolean from pg_class c join pg_roles r on r.oid = c.relowner
        where c.relnamespace = 'permgraph'::regnamespace
        order by 3`);
      expect(owners).toEqual([
        { owner: 'deploy', superuser: false, definer: false },
        { owner: 'deploy', superuser: false, definer: true },
        { owner: 'deploy', superuser: false, definer: null },
      ]);

      // The application's logins, as on any new cluster: the graph is
      // written, captured and applied, and the rights hold.
      for (const [role, login] of Object.entries(LOGINS)) {
        await deploy.query(sql.__dangerous__rawValue(`create role ${login} login password '${PASSWORD}' in role permgraph_${role}`));
      }
      const writer = open(urlOf(bare, 'app', LOGINS.writer));
      const reader = open(urlOf(bare, 'app', LOGINS.reader));
      const workerUrl = urlOf(bare, 'app', LOGINS.worker);
      const token = await tokenOf(writer, (tx) => insertGrants(tx, [grant('dave', 3, 'ops')]));
      expect((await runCli(['--database-url', workerUrl, 'worker', '--once'])).code).toBe(0);
      expect(await isApplied(reader, token)).toBe(true);
      expect(await readPermissions(reader)).toEqual(expectedTable({ nodes: dumped.nodes, grants: [...dumped.grants, grant('dave', 3, 'ops')] }));
      expect((await runCli(['--database-url', workerUrl, 'verify'])).code).toBe(0);
      expect((await failureOf(writer.query(sql`insert into permgraph.permissions values ('dave', 'eng', 3, true)`))).code).toBe('42501');
      // (the consumer's login, created before the first batch here, is its owner again)
      expect(await reader.query(sql`select seq from permgraph.read_changes(${CONSUMER}) limit 1`)).toHaveLength(1);
    });

    const before049 = NO_049 === null ? it : it.skip;
    const skipped049 = NO_049 === null ? '' : ` (skipped: ${NO_049})`;

    before049(`a dump taken before migration 049, restored where its consumer's login has another oid and that oid is another role's, then migrated: the consumer is its login's${skipped049}`, async () => {
      const decoyed = await start();
      const admin = open(decoyed.url);
      // Roles created before the source's: the oid of the consumer's login
      // in the source is a decoy's here.
      for (let i = 1; (await admin.query(sql`select 1 from pg_roles where oid >= ${feedOid}`)).length === 0; i++) {
        await admin.query(sql.__dangerous__rawValue(`create role decoy_${i} login password '${PASSWORD}'`));
      }
      const [decoy] = await admin.query(sql`select rolname from pg_roles where oid = ${feedOid}`);
      expect(decoy?.rolname).toMatch(/^decoy_/);
      expect(tool(binaries, 'psql', ['--quiet', `--file=${roles}`, decoyed.url]).code).toBe(0);
      const restored = restore(decoyed, 'app048', dump048, { owner: OWNER });
      expect(restored.stderr).toBe('');
      expect(restored.code).toBe(0);
      const ownerUrl = urlOf(decoyed, 'app048', OWNER);
      const migrated = await runCli(['--database-url', ownerUrl, 'migrate']);
      expect(migrated.stderr).toBe('');
      expect(migrated.code).toBe(0);
      expect((await runCli(['--database-url', ownerUrl, 'migrate'])).stdout.trim()).toBe('schema is up to date');
      const feed = open(urlOf(decoyed, 'app048', FEED_LOGIN));
      const decoyLogin = open(urlOf(decoyed, 'app048', decoy.rolname));
      const writer = open(urlOf(decoyed, 'app048', LOGINS.writer));

      // Before any batch and after one, the consumer is its login's, with
      // its events; the role that has its old oid here may not use it.
      expect(await readEvents(feed, FEED)).toEqual(feedEvents);
      expect((await failureOf(decoyLogin.query(sql`select permgraph.ack_changes(${FEED}, 1)`))).code).toBe('42501');
      const token = await tokenOf(writer, (tx) => insertGrants(tx, [grant('ann', 3, 'wiki')]));
      const graph: RefGraph = { nodes: graph048.nodes, grants: [...graph048.grants, grant('ann', 3, 'wiki')] };
      const once = await runCli(['--database-url', urlOf(decoyed, 'app048', LOGINS.worker), 'worker', '--once']);
      expect(once.stderr).toBe('');
      expect(once.code).toBe(0);
      expect(await isApplied(feed, token)).toBe(true);
      expect(await readPermissions(feed)).toEqual(expectedTable(graph));
      expect((await runCli(['--database-url', urlOf(decoyed, 'app048', LOGINS.worker), 'verify'])).code).toBe(0);
      const checks = await doctor(ownerUrl);
      expect(Object.entries(checks.checks).filter(([, c]) => c.status === 'fail')).toEqual([]);
      const events = await readEvents(feed, FEED);
      expect(events.slice(0, feedEvents.length)).toEqual(feedEvents);
      expect(events.slice(feedEvents.length).map((e) => e.split(' ').slice(1).join(' '))).toContain('ann wiki');
      expect((await failureOf(decoyLogin.query(sql`select permgraph.ack_changes(${FEED}, 1)`))).code).toBe('42501');
    });

    before049(`the same database migrated in place, in the cluster that registered its consumers: each stays its login's, a renamed one's once its name is brought up to date${skipped049}`, async () => {
      const ownerUrl = urlOf(source, 'app048', OWNER);
      // What docs/operations.md has the schema's owner run before upgrading
      // from a release before 049: the names of renamed logins.
      await open(ownerUrl).query(sql`
        update permgraph.change_consumers c set owner_role = r.rolname
        from pg_roles r where r.oid = c.owner_oid and r.rolname <> c.owner_role`);
      const migrated = await runCli(['--database-url', ownerUrl, 'migrate']);
      expect(migrated.stderr).toBe('');
      expect(migrated.code).toBe(0);
      const feed = open(urlOf(source, 'app048', FEED_LOGIN));
      const tail = open(urlOf(source, 'app048', TAIL_LOGIN_RENAMED));
      const reader = open(urlOf(source, 'app048', LOGINS.reader));
      expect(await readEvents(feed, FEED)).toEqual(feedEvents);
      expect(await readEvents(tail, TAIL)).toEqual(feedEvents);
      expect((await failureOf(reader.query(sql`select permgraph.ack_changes(${FEED}, 1)`))).code).toBe('42501');
      const once = await runCli(['--database-url', urlOf(source, 'app048', LOGINS.worker), 'worker', '--once']);
      expect(once.code).toBe(0);
      expect(await readPermissions(feed)).toEqual(expectedTable(graph048));
      expect((await readEvents(feed, FEED)).slice(0, feedEvents.length)).toEqual(feedEvents);
      expect(await readEvents(tail, TAIL)).toEqual(await readEvents(feed, FEED));
      for (const consumer of [FEED, TAIL]) expect((await failureOf(reader.query(sql`select permgraph.ack_changes(${consumer}, 1)`))).code).toBe('42501');
    });

    it('a physical backup needs nothing special: a base backup started as a server of its own applies the queue, and new writes, as the original would', async () => {
      const copy = await start({ baseBackupOf: source });
      const ownerUrl = urlOf(copy, 'app', OWNER);
      const workerUrl = urlOf(copy, 'app', LOGINS.worker);
      const writer = open(urlOf(copy, 'app', LOGINS.writer));
      const reader = open(urlOf(copy, 'app', LOGINS.reader));
      const before = await doctor(ownerUrl);
      expect(Object.entries(before.checks).filter(([, c]) => c.status === 'fail')).toEqual([]);
      expect(before.checks.queue!.message).not.toContain('restored from another cluster');
      expect((await reader.query(sql`select permgraph.status() -> 'restored_from_another_cluster' as restored`))[0].restored).toBe(false);

      const token = await tokenOf(writer, (tx) => insertGrants(tx, [grant('carol', 1, 'ops')]));
      expect((await runCli(['--database-url', workerUrl, 'worker', '--once'])).code).toBe(0);
      expect(await isApplied(reader, token)).toBe(true);
      expect(await readPermissions(reader)).toEqual(expectedTable({ nodes: dumped.nodes, grants: [...dumped.grants, grant('carol', 1, 'ops')] }));
      expect((await runCli(['--database-url', workerUrl, 'verify'])).code).toBe(0);
      expect((await reader.query(sql`select seq from permgraph.read_changes(${CONSUMER}) limit 1`)).length).toBe(1);
    });
  });
}
