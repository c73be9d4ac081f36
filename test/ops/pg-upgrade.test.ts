// A major-version upgrade of the server by pg_upgrade, with permgraph in an
// application database (docs/operations.md, "Upgrading PostgreSQL"): from
// the oldest PostgreSQL installed on this machine with what pg_upgrade
// needs of the old version (its server, pg_ctl, pg_controldata and
// pg_resetwal) to the newest with pg_upgrade and the client tools
// (scripts/lib/postgres-cluster.ts, findUpgradePair). Where only one
// version is installed, from it to itself: pg_upgrade then does all that a
// major upgrade does but convert the catalog (a new cluster by initdb, the
// schema dumped and restored with every oid kept, the data files copied or
// linked, the transaction ids carried over), which is all permgraph sees.
// Where none is installed, the test skips and says why.
//
// The old cluster holds every state an upgrade can catch: rows applied by
// a worker that has run (so a queue mark and a batch snapshot exist),
// changes still queued (no worker running), an expiring grant and one
// whose expiry passed unapplied, change consumers registered by logins
// that are no superusers, with events they have not acknowledged, one of
// them renamed since, and transaction ids thousands ahead of a fresh
// cluster's. Each upgrade (--copy, then --link from the same old cluster,
// which a copy leaves as it was) is judged against the reference model and
// the engine's full recomputation (verify).
import { afterAll, describe, expect, it } from 'vitest';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { applyChanges } from '../../src/engine/apply.ts';
import { findUpgradePair } from '../../scripts/lib/postgres-cluster.ts';
import type { RefGraph } from '../reference/model.ts';
import { grant, u } from '../helpers/builders.ts';
import { runCli, waitUntil } from '../helpers/cli.ts';
import { failureOf } from '../helpers/failure.ts';
import { insertGrants, insertNodes, readPermissions } from '../helpers/graph.ts';
import {
  burnTransactionIds, clusterSet, doctor, expectedTable, isApplied, LOGINS, OWNER, PASSWORD, readEvents, setUpApplication, startingGraph, tokenOf, urlOf,
} from '../helpers/ops.ts';

const PAIR = findUpgradePair();
const SEARCH = 'search';
/** A consumer registered by a login that is renamed afterwards (its role, its oid, stays the owner). */
const AUDIT = 'audit';
const AUDIT_LOGIN = 'app_audit';
const AUDIT_LOGIN_RENAMED = 'app_audit_v2';

const systemIdentifier = async (db: Queryable): Promise<string> =>
  (await db.query(sql`select system_identifier::text as id from pg_control_system()`))[0].id;
const roleOids = async (db: Queryable): Promise<Record<string, number>> =>
  Object.fromEntries((await db.query(sql`select rolname, oid::bigint as oid from pg_roles where rolname like 'app\_%' or rolname like 'permgraph\_%'`))
    .map((r: { rolname: string; oid: string }) => [r.rolname, Number(r.oid)]));

if (typeof PAIR === 'string') {
  it.skip(`pg_upgrade: skipped, ${PAIR}`, () => {});
} else {
  const { from, to } = PAIR;

  describe(`pg_upgrade from PostgreSQL ${from.version} (${from.binDir}) to ${to.version} (${to.binDir})`, async () => {
    const { open, start, close } = clusterSet(to);
    afterAll(close);

    const old = await start({}, from);
    const oldAdmin = open(old.url);
    await burnTransactionIds(oldAdmin, 20000);
    const app = await setUpApplication(old, oldAdmin, open);
    const audit = async (login: string) => {
      await app.owner.query(sql.__dangerous__rawValue(`create role ${login} login password '${PASSWORD}' in role permgraph_reader`));
    };
    await audit(AUDIT_LOGIN);
    const auditor = open(urlOf(old, 'app', AUDIT_LOGIN));

    const initial = startingGraph();
    const { soon, nodes } = initial;
    let grants = initial.grants;
    await insertNodes(app.writer, nodes);
    await insertGrants(app.writer, grants.slice(0, 2));
    await applyChanges(app.worker);
    await app.reader.query(sql`select permgraph.register_consumer(${SEARCH})`);
    await auditor.query(sql`select permgraph.register_consumer(${AUDIT})`);
    await auditor.dispose();
    // The auditing login is renamed, and another login takes its old name.
    await app.owner.query(sql.__dangerous__rawValue(`alter role ${AUDIT_LOGIN} rename to ${AUDIT_LOGIN_RENAMED}`));
    await audit(AUDIT_LOGIN);
    // Events the consumers have not acknowledged, and a token whose batch ran.
    const appliedToken = await tokenOf(app.writer, (tx) => insertGrants(tx, grants.slice(2)));
    await applyChanges(app.worker);
    expect(await isApplied(app.reader, appliedToken)).toBe(true);
    // Queued: a revoke, a new user and its grant, a raised level.
    nodes.push(u('erin'));
    const pendingToken = await tokenOf(app.writer, async (tx) => {
      await tx.query(sql`delete from permgraph.grants where tail_id = 'alice' and head_id = 'eng'`);
      await insertNodes(tx, [u('erin')]);
      await insertGrants(tx, [grant('erin', 2, 'ops')]);
      await tx.query(sql`update permgraph.grants set level = 2 where tail_id = 'bob' and head_id = 'ops'`);
    });
    grants = [...grants.filter((x) => x.tailId !== 'alice' && x.tailId !== 'bob'), grant('erin', 2, 'ops'), grant('bob', 2, 'ops')];
    expect(await isApplied(app.reader, pendingToken)).toBe(false);
    // dave's grant expires with nobody to apply it
    await waitUntil(async () => Date.now() > soon.getTime() + 100, "dave's grant to expire");
    const events = await readEvents(app.reader, SEARCH);
    expect(events.length).toBeGreaterThan(0);
    const [{ n: queued }] = await app.owner.query(sql`select count(*)::int as n from permgraph.changes`);
    expect(queued).toBeGreaterThan(0);
    const oldIdentifier = await systemIdentifier(oldAdmin);
    const oldRoles = await roleOids(oldAdmin);
    const graph: RefGraph = { nodes, grants };

    it.each(['copy', 'link'] as const)('--%s: the queue, tokens, consumers and their owners come through, and the first batch applies what was queued', async (mode) => {
      const upgraded = await start({ upgradeOf: { cluster: old, mode } });
      const admin = open(upgraded.url);
      const ownerUrl = urlOf(upgraded, 'app', OWNER);
      const workerUrl = urlOf(upgraded, 'app', LOGINS.worker);
      const writer = open(urlOf(upgraded, 'app', LOGINS.writer));
      const reader = open(urlOf(upgraded, 'app', LOGINS.reader));
      const renamedAuditor = open(urlOf(upgraded, 'app', AUDIT_LOGIN_RENAMED));
      const newAuditor = open(urlOf(upgraded, 'app', AUDIT_LOGIN));

      // What pg_upgrade keeps: transaction ids and role oids; what it does
      // not: the system identifier (initdb made a new one).
      expect(await systemIdentifier(admin)).not.toBe(oldIdentifier);
      expect(await roleOids(admin)).toEqual(oldRoles);
      const [{ next }] = await admin.query(sql`select pg_current_xact_id()::text as next`);
      expect(BigInt(next)).toBeGreaterThan(BigInt(pendingToken));

      // Nothing to migrate; doctor finds nothing wrong before any batch.
      const migrated = await runCli(['--database-url', ownerUrl, 'migrate']);
      expect(migrated.stdout.trim()).toBe('schema is up to date');
      expect(migrated.code).toBe(0);
      let checks = await doctor(ownerUrl);
      expect(Object.entries(checks.checks).filter(([, c]) => c.status === 'fail')).toEqual([]);
      // (the stored state names another cluster until the first batch)
      const anotherCluster = async () =>
        (await reader.query(sql`select permgraph.status() -> 'restored_from_another_cluster' as another`))[0].another;
      expect(await anotherCluster()).toBe(true);

      // Before any batch: tokens read as they did, and each consumer is its
      // login's, with the events it had not acknowledged.
      expect(await isApplied(reader, appliedToken)).toBe(true);
      expect(await isApplied(reader, pendingToken)).toBe(false);
      expect(await readEvents(reader, SEARCH)).toEqual(events);
      expect(await readEvents(renamedAuditor, AUDIT)).toEqual(events);
      expect((await failureOf(newAuditor.query(sql`select permgraph.ack_changes(${AUDIT}, 1)`))).code).toBe('42501');

      const token = await tokenOf(writer, async (tx) => {
        await insertNodes(tx, [u('fay')]);
        await insertGrants(tx, [grant('fay', 1, 'eng')]);
      });
      const after: RefGraph = { nodes: [...graph.nodes, u('fay')], grants: [...graph.grants, grant('fay', 1, 'eng')] };
      const once = await runCli(['--database-url', workerUrl, 'worker', '--once']);
      expect(once.stderr).toBe('');
      expect(once.code).toBe(0);
      for (const t of [appliedToken, pendingToken, token]) expect(await isApplied(reader, t)).toBe(true);
      expect(await anotherCluster()).toBe(false);
      expect(await readPermissions(reader)).toEqual(expectedTable(after));
      expect((await runCli(['--database-url', workerUrl, 'verify'])).code).toBe(0);
      checks = await doctor(ownerUrl);
      expect(Object.entries(checks.checks).filter(([, c]) => c.status === 'fail')).toEqual([]);
      expect(checks.checks.queue!.status).toBe('ok');
      expect(checks.code).toBe(0);

      // The consumers are still their logins' (the renamed one's too), and
      // have the batch's events after the ones from before the upgrade.
      const now = await readEvents(reader, SEARCH);
      expect(now.slice(0, events.length)).toEqual(events);
      expect(now.slice(events.length).map((e) => e.split(' ').slice(1).join(' '))).toContain('fay eng');
      expect(await readEvents(renamedAuditor, AUDIT)).toEqual(now);
      expect((await failureOf(newAuditor.query(sql`select permgraph.ack_changes(${AUDIT}, 1)`))).code).toBe('42501');
      expect((await failureOf(writer.query(sql`select permgraph.ack_changes(${SEARCH}, 1)`))).code).toBe('42501');
    });
  });
}
