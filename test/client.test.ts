import { afterAll, describe, expect, it } from 'vitest';
import { InvalidInputError, Permgraph } from '../src/index.ts';
import * as model from './reference/model.ts';
import { g, o, u } from './helpers/builders.ts';
import { createTestDatabase } from './helpers/database.ts';
import { readPermissions } from './helpers/graph.ts';

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

  it('bad input is an InvalidInputError naming the problem', async () => {
    await expect(pg.grant('spec', 'eng', 'read')).rejects.toThrow(InvalidInputError);
    await expect(pg.grant('spec', 'eng', 'read')).rejects.toThrow(/grant tail "spec" is an object/);
    await expect(pg.grant('alice', 'eng', 4 as 1)).rejects.toThrow(/level must be 1 \(read\), 2 \(write\) or 3 \(manage\), got 4/);
    await expect(pg.grant('alice', 'nobody', 'read')).rejects.toThrow(/grant head "nobody" does not exist/);
    await expect(pg.setOwner('ghost', 'eng')).rejects.toThrow(/node "ghost" does not exist/);
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
});
