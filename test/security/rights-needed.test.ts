// A right the login lacks, said in the application developer's terms:
// PostgreSQL's own refusal ("permission denied for function
// apply_local_changes") names an internal object, not the call nor the role
// it needs. Through real login roles, the library's calls (the Permgraph
// methods and the exported functions) add which login the call needs, as
// docs/security.md's table of roles says, and keep PostgreSQL's text, the
// SQLSTATE and the driver's error; the SQL side's own refusals, which name
// their reason, stay as they are.
import { describe, expect, it } from 'vitest';
import {
  applyChanges, migrate, Permgraph, PermissionDeniedError, PermgraphError, pruneAudit, refresh, registerConsumer, dropConsumer, sqlStateOf, verify, writeGrant,
} from '../../src/index.ts';
import { sql } from '../../src/db/pool.ts';
import { loadFunctionFiles } from '../../src/migrations/migrate.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { earlierFunctionChecksum } from '../helpers/function-versions.ts';
import { createLogin } from '../helpers/logins.ts';

/** What the roles table of docs/security.md says each call needs, in the words the message uses. */
const WORKER = 'a login granted permgraph_worker';
const WRITER = 'a login granted permgraph_writer';
const READER = 'a login granted permgraph_reader';
const OWNER = "the schema's owner";
/** (pruneAudit and syncRoles only count with dryRun, which any permgraph role may) */
const OWNER_UNLESS_DRY_RUN = `${OWNER} (a dry run: any permgraph role)`;

/** The refusal of `run`, which must be PostgreSQL's own, told as `operation` needing `needs`. */
async function expectRefusal(run: () => Promise<unknown>, operation: string, needs: string): Promise<void> {
  const error = await run().then(() => undefined, (e: unknown) => e);
  expect(error, operation).toBeInstanceOf(PermissionDeniedError);
  expect(error, operation).toBeInstanceOf(PermgraphError);
  const denied = error as PermissionDeniedError;
  // PostgreSQL's text first, then the call and the login it needs
  expect(denied.message, operation).toMatch(/^(permission denied for|must be owner of) \S+ \S+: /);
  expect(denied.message.endsWith(`: ${operation} needs ${needs} (docs/security.md)`), denied.message).toBe(true);
  // the SQLSTATE kept, and the driver's error in cause, with PostgreSQL's own text
  expect(sqlStateOf(denied), operation).toBe('42501');
  expect(denied, operation).toMatchObject({ code: '42501', sqlState: '42501' });
  const cause = denied.cause as Error & { code?: string };
  expect(cause, operation).toBeInstanceOf(Error);
  expect(cause, operation).not.toBeInstanceOf(PermgraphError);
  expect(cause.code, operation).toBe('42501');
  // (PostgreSQL's message, without the code frame of the statement that the driver adds after a blank line)
  expect(denied.message, operation).toBe(`${cause.message.split('\n\n')[0]}: ${operation} needs ${needs} (docs/security.md)`);
}

describe('a right the login lacks: the call and the login it needs', async () => {
  const { db: owner, url } = await createTestDatabase();
  await owner.query(sql`insert into permgraph.nodes (id, kind) values ('alice', 'user'), ('eng', 'group')`);
  const reader = await createLogin(owner, url, 'needs_reader', 'permgraph_reader');
  const writer = await createLogin(owner, url, 'needs_writer', 'permgraph_writer');
  const worker = await createLogin(owner, url, 'needs_worker', 'permgraph_worker');
  const nobody = await createLogin(owner, url, 'needs_nobody');
  const asWriter = Permgraph.fromPool(writer.db, writer.url);
  const asReader = Permgraph.fromPool(reader.db, reader.url);
  const asWorker = Permgraph.fromPool(worker.db, worker.url);
  const asNobody = Permgraph.fromPool(nobody.db, nobody.url);

  it("the engine's calls, as a writer: they need the worker's role", async () => {
    await expectRefusal(() => asWriter.applyChanges(), 'applyChanges()', WORKER);
    await expectRefusal(() => asWriter.refresh(), 'refresh()', WORKER);
    await expectRefusal(() => asWriter.verify(), 'verify()', WORKER);
    await expectRefusal(() => asWriter.applyJobChunk(), 'applyJobChunk()', WORKER);
    // the exported functions, on the login's pool, say the same
    await expectRefusal(() => applyChanges(writer.db), 'applyChanges()', WORKER);
    await expectRefusal(() => refresh(writer.db), 'refresh()', WORKER);
    await expectRefusal(() => verify(writer.db), 'verify()', WORKER);
  });

  it("the writes, as a reader: they need the writer's role", async () => {
    await expectRefusal(() => asReader.grant('alice', 'eng', 1), 'grant()', WRITER);
    await expectRefusal(() => asReader.revoke('alice', 'eng'), 'revoke()', WRITER);
    await expectRefusal(() => asReader.addNode('bob', 'user'), 'addNode()', WRITER);
    await expectRefusal(() => asReader.syncGrants('hr', [{ tail: 'alice', head: 'eng', level: 1 }]), 'syncGrants()', WRITER);
    await expectRefusal(() => writeGrant(reader.db, 'alice', 'eng', 1), 'writeGrant()', WRITER);
    expect(await owner.query(sql`select count(*)::int as n from permgraph.grants`)).toEqual([{ n: 0 }]);
  });

  it("the owner's jobs, as a worker: they need the schema's owner", async () => {
    await expectRefusal(() => asWorker.pruneAudit({ olderThan: '365d' }), 'pruneAudit()', OWNER_UNLESS_DRY_RUN);
    await expectRefusal(() => pruneAudit(worker.db, { olderThan: '365d' }), 'pruneAudit()', OWNER_UNLESS_DRY_RUN);
    // migrate with something to do: a function file to apply again
    const [firstFile] = await loadFunctionFiles();
    await owner.query(sql`update permgraph.function_files set checksum = ${await earlierFunctionChecksum(firstFile!.name)} where name = ${firstFile!.name}`);
    try {
      await expectRefusal(() => asWorker.migrate(), 'migrate()', OWNER);
      await expectRefusal(() => migrate(worker.db), 'migrate()', OWNER);
    } finally {
      await migrate(owner);
    }
  });

  it('the reads, as a login with no permgraph role: they need the reader\'s role', async () => {
    await expectRefusal(() => asNobody.check('alice', 'eng', 1), 'check()', READER);
    await expectRefusal(() => asNobody.listTargets('alice'), 'listTargets()', READER);
  });

  it("the SQL side's own refusals already say their reason, and stay as they are", async () => {
    await registerConsumer(worker.db, 'workers-feed');
    const error = await dropConsumer(writer.db, 'workers-feed').then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(PermissionDeniedError);
    expect((error as Error).message).toBe(`change consumer "workers-feed" belongs to role ${worker.name}; ${writer.name} may not use it`);
    expect(sqlStateOf(error)).toBe('42501');
    await dropConsumer(worker.db, 'workers-feed');
  });
});
