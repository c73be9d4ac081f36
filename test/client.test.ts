import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, onTestFinished } from 'vitest';
import { openPool, sql } from '../src/db/pool.ts';
import { currentToken, InvalidInputError, PermgraphError, Permgraph } from '../src/index.ts';
import * as model from './reference/model.ts';
import { g, o, u } from './helpers/builders.ts';
import { createTestDatabase } from './helpers/database.ts';
import { readPermissions } from './helpers/graph.ts';
import { createLogin } from './helpers/logins.ts';

describe('TypeScript API (Permgraph)', async () => {
  const { db, url } = await createTestDatabase();
  const pg = Permgraph.fromPool(db, url);
  const worker = pg.worker({ pollIntervalMs: 100 });
  await worker.start();
  afterAll(() => worker.stop());

  it('writes return tokens; waitFor gives read-your-writes on the table', async () => {
    await pg.addNode('alice', 'user');
    await pg.addNode('eng', 'group');
    await pg.addNode('roadmap', 'group', { ownerId: 'eng' });
    await pg.addNode('spec', 'object', { ownerId: 'roadmap' });
    const token = await pg.grant('alice', 'eng', 'write');
    await pg.waitFor(token);
    expect(await pg.check('alice', 'spec', 'write')).toBe(true);
    expect(await pg.check('alice', 'spec', 'manage')).toBe(false);
    await pg.waitFor(await pg.setTrash('roadmap', new Date(Date.now() - 1000)));
    expect(await pg.check('alice', 'spec', 'read')).toBe(false); // trashed with its owner
    expect(await pg.check('alice', 'spec', 'write', { includeTrash: true })).toBe(true); // as if nothing were trashed
    expect(await pg.check('alice', 'spec', 'manage', { includeTrash: true })).toBe(false);
    await pg.waitFor(await pg.setTrash('roadmap', null));
    await pg.waitFor(await pg.revoke('alice', 'eng'));
    expect(await pg.check('alice', 'roadmap', 'read')).toBe(false);
    const graph: model.RefGraph = {
      nodes: [
        u('alice'),
        g('eng'),
        g('roadmap', 'eng'),
        o('spec', 'roadmap'),
      ],
      grants: [],
    };
    expect(await readPermissions(db)).toEqual(model.computePermissions(graph));
  });

  it('connect: a databaseUrl given but empty (an unset environment variable) is refused; with NODE_ENV=production so is the embedded fallback', async () => {
    for (const databaseUrl of [undefined, '']) {
      await expect(Permgraph.connect({ databaseUrl })).rejects.toThrow(
        new InvalidInputError(
          `databaseUrl is ${databaseUrl === '' ? 'empty' : 'undefined'} (an unset environment variable?): ` +
            'pass a PostgreSQL URL, or leave the option out to use DATABASE_URL (then, in development, the embedded server)',
        ),
      );
    }
    const saved = { url: process.env.DATABASE_URL, env: process.env.NODE_ENV };
    onTestFinished(() => {
      for (const [name, value] of [['DATABASE_URL', saved.url], ['NODE_ENV', saved.env]] as const) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    });
    delete process.env.DATABASE_URL;
    process.env.NODE_ENV = 'production';
    await expect(Permgraph.connect()).rejects.toThrow(
      /^no database URL \(neither given nor in DATABASE_URL\) and NODE_ENV is production: the embedded PostgreSQL is for development only$/,
    );
  });

  it('bad input is an InvalidInputError naming the problem', async () => {
    await expect(pg.grant('spec', 'eng', 'read')).rejects.toThrow(InvalidInputError);
    await expect(pg.grant('spec', 'eng', 'read')).rejects.toThrow(/grant tail "spec" is an object/);
    await expect(pg.grant('alice', 'eng', 4 as 1)).rejects.toThrow(/level must be 1 \(read\), 2 \(write\) or 3 \(manage\), got 4/);
    await expect(pg.grant('alice', 'nobody', 'read')).rejects.toThrow(/grant head "nobody" does not exist/);
    await expect(pg.setOwner('ghost', 'eng')).rejects.toThrow(/node "ghost" does not exist/);
    await expect(pg.setTrash('ghost', null)).rejects.toThrow(/node "ghost" does not exist/);
    await expect(pg.removeNode('ghost')).rejects.toThrow(InvalidInputError);
    await expect(pg.removeNode('ghost')).rejects.toThrow(/node "ghost" does not exist/);
    await expect(pg.addNode('alice', 'user')).rejects.toThrow(new InvalidInputError('node "alice" already exists'));
    // moments PostgreSQL would not read back as written: refused, named (for "never", null)
    await expect(pg.grant('alice', 'eng', 'read', { expiresAt: new Date(8.64e15) })).rejects.toThrow('expiresAt +275760-09-13T00:00:00.000Z is outside the years 1 to 9999 (for "never", pass null)');
    await expect(pg.grant('alice', 'eng', 'read', { expiresAt: '0000-01-01T00:00:00Z' })).rejects.toThrow(InvalidInputError);
    await expect(pg.setTrash('spec', new Date('x'))).rejects.toThrow('trash time is an invalid Date');
    await expect(pg.addNode('x2', 'object', { ownerId: 'eng', trashAt: new Date('x') })).rejects.toThrow(InvalidInputError);
    // a size or a timeout that would leave a call waiting forever
    await expect(Permgraph.connect({ databaseUrl: url, poolSize: -1 })).rejects.toThrow('poolSize must be a positive integer, got -1');
    await expect(pg.waitFor(await pg.addNode('waiting', 'user'), Number.NaN)).rejects.toThrow(/timeout must be a number of milliseconds, 0 or more, got NaN/);
    await expect(pg.setOwner('eng', 'roadmap')).rejects.toThrow(/ownership cycle/);
    await expect(pg.addNode('x', 'robot' as 'user')).rejects.toThrow(/kind must be user, group or object/);
  });

  it('grants accept a role name and check accepts an operation name, from the catalog', async () => {
    await pg.syncRoles({ roles: [{ name: 'editor', level: 2 }], operations: [{ name: 'doc.delete', level: 3 }, { name: 'doc.edit', level: 2 }] });
    await pg.addNode('carol', 'user');
    await pg.waitFor(await pg.grant('carol', 'eng', 'editor'));
    expect(await pg.check('carol', 'roadmap', 'doc.edit')).toBe(true);
    expect(await pg.check('carol', 'roadmap', 'doc.delete')).toBe(false);
    expect(await pg.check('carol', 'roadmap', 2)).toBe(true);
    await expect(pg.grant('carol', 'eng', 'overlord')).rejects.toThrow(/unknown role "overlord"; known roles: editor/);
    await expect(pg.check('carol', 'roadmap', 'doc.fly')).rejects.toThrow(/unknown operation "doc.fly"/);
  });

  describe('asActor: the audit log records the actor of every API call inside it', () => {
    /** Audit rows about these nodes, oldest first. */
    const audit = (...ids: string[]) =>
      db.query(sql`
        select actor, action, coalesce(tail_id || ' -> ' || head_id, head_id, details ->> 'name') as what, db_role
        from permgraph.audit_log
        where head_id = any(${ids}::text[]) or tail_id = any(${ids}::text[]) or details ->> 'name' = any(${ids}::text[])
        order by id`);

    it('grant, revoke, node writes, syncGrants, syncRoles and importGraph inside asActor record the actor; the login stays in db_role', async () => {
      // A writer's login through a pool of its own, as an application would connect.
      const writer = await createLogin(db, url, 'api_writer', 'permgraph_writer');
      const api = Permgraph.fromPool(writer.db, writer.url);
      const token = await api.asActor('ann@example.com', async () => {
        await api.addNode('ax-user', 'user');
        await api.addNode('ax-team', 'group');
        await api.setOwner('ax-team', 'ax-user');
        await api.grant('ax-user', 'ax-team', 'read', { source: 'ui' });
        await api.revoke('ax-user', 'ax-team', { source: 'ui' });
        await api.syncGrants('ax-ldap', [{ tail: 'ax-user', head: 'ax-team', level: 'write' }]);
        return api.grant('ax-user', 'ax-team', 'manage', { source: 'ui' });
      });
      await api.grant('ax-user', 'ax-team', 'read', { source: 'outside' }); // outside asActor: the login
      await pg.asActor('root@example.com', () => pg.syncRoles({ roles: [{ name: 'ax-role', level: 1 }], operations: [] }));
      const scratch = await mkdtemp(path.join(tmpdir(), 'permgraph-client-'));
      onTestFinished(() => rm(scratch, { recursive: true, force: true }));
      const csv = path.join(scratch, 'nodes.csv');
      await writeFile(csv, 'id,kind,owner_id\nax-doc,object,ax-team\n');
      const imported = await pg.asActor('importer@example.com', () => pg.importGraph({ nodes: { file: csv }, name: 'ax-import' }));
      expect(imported.loaded).toBe(true);
      expect(await audit('ax-user', 'ax-team', 'ax-role')).toEqual([
        { actor: 'ann@example.com', action: 'create_node', what: 'ax-user', db_role: writer.name },
        { actor: 'ann@example.com', action: 'create_node', what: 'ax-team', db_role: writer.name },
        { actor: 'ann@example.com', action: 'set_owner', what: 'ax-team', db_role: writer.name },
        { actor: 'ann@example.com', action: 'grant', what: 'ax-user -> ax-team', db_role: writer.name },
        { actor: 'ann@example.com', action: 'revoke', what: 'ax-user -> ax-team', db_role: writer.name },
        { actor: 'ann@example.com', action: 'grant', what: 'ax-user -> ax-team', db_role: writer.name },
        { actor: 'ann@example.com', action: 'grant', what: 'ax-user -> ax-team', db_role: writer.name },
        { actor: writer.name, action: 'grant', what: 'ax-user -> ax-team', db_role: writer.name },
        { actor: 'root@example.com', action: 'catalog', what: 'ax-role', db_role: expect.any(String) },
      ]);
      expect(await db.query(sql`select actor from permgraph.audit_log where action = 'import' and source = 'ax-import'`)).toEqual([{ actor: 'importer@example.com' }]);
      // the writes inside asActor committed together, when it returned
      await pg.waitFor(token);
      expect(await pg.check('ax-user', 'ax-team', 'manage')).toBe(true);
    });

    it('concurrent calls on one pool each record their own actor; nothing leaks to the next user of a connection', async () => {
      const small = Permgraph.fromPool(openPool(url, { poolSize: 2 }), url);
      try {
        await pg.addNode('cx-team', 'group');
        const users = Array.from({ length: 8 }, (_, i) => `cx-user${i}`);
        for (const user of users) await pg.addNode(user, 'user');
        await Promise.all(
          users.map((user, i) =>
            i % 2 === 0
              ? small.asActor(`actor-${user}`, () => small.grant(user, 'cx-team', 'read'))
              : small.grant(user, 'cx-team', 'read'),
          ),
        );
        const [{ login }] = await db.query(sql`select current_user as login`);
        const rows = await db.query(sql`select tail_id, actor from permgraph.audit_log where action = 'grant' and head_id = 'cx-team' order by tail_id`);
        expect(rows).toEqual(users.map((user, i) => ({ tail_id: user, actor: i % 2 === 0 ? `actor-${user}` : login })));
      } finally {
        await small.db.dispose();
      }
    });

    it("waitFor on the token of fn's own SQL writes inside asActor is refused, not timed out", async () => {
      await pg.addNode('ow-user', 'user');
      await pg.addNode('ow-team', 'group');
      await pg.asActor('ann@example.com', async (tx) => {
        await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('ow-user', 'ow-team', 1)`);
        const token = await currentToken(tx);
        await expect(pg.waitFor(token, 300)).rejects.toThrow(/is the transaction of asActor, which commits only when asActor returns/);
      });
      expect(await db.query(sql`select actor from permgraph.audit_log where head_id = 'ow-team' and action = 'grant'`)).toEqual([{ actor: 'ann@example.com' }]);

      // Waiting on another transaction's token inside asActor: the check
      // gives a read-only transaction no id, survives a failed statement of
      // fn's, and a callback left behind may wait once asActor has returned.
      const other = await pg.grant('ow-user', 'ow-team', 'read', { source: 'other' });
      let later: (() => Promise<void>) | undefined;
      await pg.asActor('ann@example.com', async (tx) => {
        await pg.waitFor(other, 30_000);
        expect(await tx.query(sql`select pg_current_xact_id_if_assigned() as xid`)).toEqual([{ xid: null }]);
        later = () => pg.waitFor(other, 30_000);
      });
      await later!();
      await expect(
        pg.asActor('ann@example.com', async (tx) => {
          await tx.query(sql`select 1/0`).catch(() => {});
          await pg.waitFor(other, 30_000);
          throw new Error('waited');
        }),
      ).rejects.toThrow('waited');
    });

    it('on a pool of one connection; all or nothing; nested actors; waitFor inside is refused', async () => {
      const single = Permgraph.fromPool(openPool(url, { poolSize: 1 }), url);
      try {
        await single.addNode('nx-user', 'user');
        await single.addNode('nx-team', 'group');
        await expect(
          single.asActor('ann@example.com', async () => {
            await single.grant('nx-user', 'nx-team', 'read');
            throw new Error('changed my mind');
          }),
        ).rejects.toThrow('changed my mind');
        expect(await db.query(sql`select count(*)::int as n from permgraph.grants where head_id = 'nx-team'`)).toEqual([{ n: 0 }]);

        await single.asActor('outer@example.com', async (tx) => {
          await single.asActor('inner@example.com', () => single.grant('nx-user', 'nx-team', 'read', { source: 'inner' }));
          await single.grant('nx-user', 'nx-team', 'read', { source: 'outer' });
          // the transaction handed to fn is the same one
          await tx.query(sql`update permgraph.grants set level = 2 where head_id = 'nx-team' and source = 'outer'`);
          const token = await single.grant('nx-user', 'nx-team', 'manage', { source: 'late' });
          await expect(single.waitFor(token)).rejects.toThrow(PermgraphError);
          await expect(single.waitFor(token)).rejects.toThrow(/is the transaction of asActor, which commits only when asActor returns/);
        });
        const rows = await db.query(sql`select source, actor, action from permgraph.audit_log where head_id = 'nx-team' and tail_id = 'nx-user' order by id`);
        expect(rows).toEqual([
          { source: 'inner', actor: 'inner@example.com', action: 'grant' },
          { source: 'outer', actor: 'outer@example.com', action: 'grant' },
          { source: 'outer', actor: 'outer@example.com', action: 'change_level' },
          { source: 'late', actor: 'outer@example.com', action: 'grant' },
        ]);
        await expect(single.asActor('  ', async () => {})).rejects.toThrow(InvalidInputError);
      } finally {
        await single.db.dispose();
      }
    });
  });
});
