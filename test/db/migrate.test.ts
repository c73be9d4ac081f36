import { describe, expect, it } from 'vitest';
import { sql } from '../../src/db/pool.ts';
import { loadFunctionFiles, loadMigrations, migrate, schemaState } from '../../src/migrations/migrate.ts';
import { earlierFunctionChecksum } from '../helpers/function-versions.ts';
import { runDoctor } from '../../src/app/doctor.ts';
import { runCli } from '../helpers/cli.ts';
import { createEmptyDatabase, createTestDatabase } from '../helpers/database.ts';
import { createLogin } from '../helpers/logins.ts';

describe('migrations', async () => {
  const { db, url } = await createTestDatabase();

  it('re-running is a no-op', async () => {
    expect(await migrate(db)).toEqual({ applied: [], functions: [], rights: [] });
    expect((await schemaState(db)).state).toBe('ok');
  });

  it("a worker's login may run it on an up-to-date schema: nothing to do, nothing it may not", async () => {
    const worker = await createLogin(db, url, 'migrate', 'permgraph_worker');
    expect(await migrate(worker.db)).toEqual({ applied: [], functions: [], rights: [] });
    const result = await runCli(['--database-url', worker.url, 'worker', '--migrate', '--once']);
    expect(result.code, result.stderr).toBe(0);
    // with a function file to apply again, it is refused, and told whose job that is
    const [firstFile] = await loadFunctionFiles();
    await db.query(sql`update permgraph.function_files set checksum = ${await earlierFunctionChecksum(firstFile!.name)} where name = ${firstFile!.name}`);
    try {
      for (const args of [['migrate'], ['worker', '--migrate', '--once']]) {
        const refused = await runCli(['--database-url', worker.url, ...args]);
        expect(refused.code, args.join(' ')).toBe(1);
        expect(refused.stderr, args.join(' ')).toMatch(/^permgraph: permission denied for .*: `permgraph (migrate|worker --migrate)` needs the schema's owner/);
      }
    } finally {
      await migrate(db);
    }
    // a migration's DROP of a function is refused with "must be owner of": told the same
    await db.query(sql`
      create function permgraph._explain_tree(text, integer) returns jsonb language sql as 'select null::jsonb';
      delete from permgraph.migrations where version = 47`);
    try {
      const refused = await runCli(['--database-url', worker.url, 'migrate']);
      expect(refused).toMatchObject({ code: 1, stderr: expect.stringMatching(/^permgraph: must be owner of function .*_explain_tree: `permgraph migrate` needs the schema's owner/) });
    } finally {
      await migrate(db);
    }
    expect(await db.query(sql`select count(*)::int as n from pg_proc where proname = '_explain_tree'`)).toEqual([{ n: 1 }]);
  });

  it('concurrent runs on an empty database apply each migration and function file exactly once', async () => {
    const empty = await createEmptyDatabase();
    const results = await Promise.all([migrate(empty.db), migrate(empty.db), migrate(empty.db)]);
    const migrations = (await loadMigrations()).map((m) => m.name);
    const functionFiles = (await loadFunctionFiles()).map((f) => f.name);
    // One run did all the work; the others waited on the lock and found nothing left.
    expect(results.map((r) => r.applied.length).sort((a, b) => a - b)).toEqual([0, 0, migrations.length]);
    expect(results.flatMap((r) => r.applied)).toEqual(migrations);
    expect(results.flatMap((r) => r.functions)).toEqual(functionFiles);
    expect((await schemaState(empty.db)).state).toBe('ok');
  });

  it("on a server that revoked pg_control_system() from PUBLIC, migrate as an owner that is no superuser says what to grant, and writes nothing", async () => {
    const hardened = await createEmptyDatabase();
    const owner = await createLogin(hardened.db, hardened.url, 'hardened');
    await hardened.db.query(sql`grant create on database ${sql.ident(hardened.name)} to ${sql.ident(owner.name)}`);
    // (pg_catalog's rights are each database's own)
    await hardened.db.query(sql`revoke execute on function pg_catalog.pg_control_system() from public`);
    await expect(migrate(owner.db)).rejects.toThrow(
      `may not execute pg_catalog.pg_control_system(); as a superuser, run: grant execute on function pg_catalog.pg_control_system() to ${owner.name}`,
    );
    expect(await hardened.db.query(sql`select to_regnamespace('permgraph') is null as absent`)).toEqual([{ absent: true }]);
    await hardened.db.query(sql`grant execute on function pg_catalog.pg_control_system() to ${sql.ident(owner.name)}`);
    expect((await migrate(owner.db)).applied).toEqual((await loadMigrations()).map((m) => m.name));
    expect((await schemaState(owner.db)).state).toBe('ok');
  });

  it('the first migrate by a login without CREATE on the database says to grant it (not that the login is not the owner), and writes nothing', async () => {
    const fresh = await createEmptyDatabase();
    const owner = await createLogin(fresh.db, fresh.url, 'nocreate');
    const grant = `grant create on database ${fresh.name} to ${owner.name}`;
    await expect(migrate(owner.db)).rejects.toMatchObject({
      name: 'PermissionDeniedError',
      message: expect.stringContaining(`the first \`permgraph migrate\` creates schema permgraph, which needs CREATE on database ${fresh.name}: as its owner or a superuser, run: ${grant}`),
    });
    const cli = await runCli(['--database-url', owner.url, 'migrate']);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toContain(`run: ${grant}`);
    expect(cli.stderr).not.toContain("needs the schema's owner");
    expect(await fresh.db.query(sql`select to_regnamespace('permgraph') is null as absent`)).toEqual([{ absent: true }]);
    await fresh.db.query(sql`grant create on database ${sql.ident(fresh.name)} to ${sql.ident(owner.name)}`);
    expect((await migrate(owner.db)).applied).toEqual((await loadMigrations()).map((m) => m.name));
  });

  it('an applied file whose content changed is an error', async () => {
    const [first] = await loadMigrations();
    await db.query(sql`update permgraph.migrations set checksum = 'deadbeef' where version = ${first!.version}`);
    await expect(migrate(db)).rejects.toThrow(/was changed after it was applied/);
    // and what reports on the schema says so, rather than 'ok'
    expect(await schemaState(db)).toEqual({ state: 'modified', pending: [first!.name] });
    const [schemaCheck] = (await runDoctor(db)).filter((c) => c.name === 'schema');
    expect(schemaCheck).toMatchObject({ status: 'fail', message: expect.stringContaining(first!.name) });
    const verify = await runCli(['--json', '--database-url', url, 'verify']);
    expect({ code: verify.code, failure: JSON.parse(verify.stderr).error.code }).toEqual({ code: 1, failure: 'migration_checksum' });
    await db.query(sql`update permgraph.migrations set checksum = ${first!.checksum} where version = ${first!.version}`);
    expect((await schemaState(db)).state).toBe('ok');
  });

  it('a changed function file is applied again, and only that one', async () => {
    const file = (await loadFunctionFiles()).find((f) => f.text.includes('function permgraph._path_traverses('))!;
    // The database holds an outdated definition, recorded under the checksum of an earlier version of the file.
    await db.query(sql`create or replace function permgraph._path_traverses(p_head_kind text, p_last_edge_manage boolean)
                       returns boolean language sql immutable as $$ select null::boolean $$`);
    await db.query(sql`update permgraph.function_files set checksum = ${await earlierFunctionChecksum(file.name)} where name = ${file.name}`);
    expect(await schemaState(db)).toEqual({ state: 'behind', pending: [`functions/${file.name}`] });

    expect(await migrate(db)).toEqual({ applied: [], functions: [file.name], rights: [] });
    const [{ traverses }] = await db.query(sql`select permgraph._path_traverses('group', false) as traverses`);
    expect(traverses).toBe(true);
    expect((await schemaState(db)).state).toBe('ok');
  });

  it('a database ahead of the package is reported, not downgraded', async () => {
    await db.query(sql`insert into permgraph.migrations (version, name, checksum) values (999, '999_future.sql', 'x')`);
    expect((await schemaState(db)).state).toBe('ahead');
    await expect(migrate(db)).rejects.toThrow(/newer than the package/);
    await db.query(sql`delete from permgraph.migrations where version = 999`);
  });

  it('a database whose function files a newer package applied (a release that adds no migration) is reported, not downgraded', async () => {
    // (an older package's migrate put its functions back over the newer ones, and the newer one's put them back again)
    const file = (await loadFunctionFiles()).find((f) => f.name.endsWith('_import.sql'))!;
    await db.query(sql`update permgraph.function_files set checksum = ${'f'.repeat(64)} where name = ${file.name}`);
    expect((await schemaState(db)).state).toBe('ahead');
    expect((await runDoctor(db)).find((c) => c.name === 'schema')).toMatchObject({ status: 'fail', message: expect.stringMatching(/^schema ahead of this package/) });
    await expect(migrate(db)).rejects.toThrow(
      `database has function file(s) ${file.name} in a version this permgraph never had: the schema is newer than the package (a newer permgraph migrated it: upgrade permgraph), or they were edited by hand ` +
        "(a development checkout's own edits: `permgraph migrate --overwrite-unknown-functions` applies this package's)",
    );
    // (a development checkout's way out: its own edit, applied before schema:dump recorded it)
    const overwritten = await runCli(['--database-url', url, 'migrate', '--overwrite-unknown-functions']);
    expect(overwritten).toMatchObject({ code: 0, stdout: `applied functions/${file.name}\n` });
    expect((await schemaState(db)).state).toBe('ok');
    // a file a newer package added
    await db.query(sql`insert into permgraph.function_files (name, checksum) values ('999_future.sql', ${'e'.repeat(64)})`);
    expect((await schemaState(db)).state).toBe('ahead');
    await expect(migrate(db)).rejects.toThrow(/function file\(s\) 999_future\.sql in a version this permgraph never had/);
    await db.query(sql`delete from permgraph.function_files where name = '999_future.sql'`);
    expect((await schemaState(db)).state).toBe('ok');
  });

  it('refuses a server older than PostgreSQL 14 with a clear message', async () => {
    const { assertServerVersion } = await import('../../src/db/server-version.ts');
    const fake = { query: async () => [{ num: 130012, version: '13.12' }] } as unknown as Parameters<typeof assertServerVersion>[0];
    await expect(assertServerVersion(fake)).rejects.toThrow('permgraph needs PostgreSQL 14 or newer; this server is PostgreSQL 13.12');
    expect(await assertServerVersion(db)).toBeGreaterThanOrEqual(140000);
  });
});
