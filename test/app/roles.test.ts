// The catalog of roles and operations (file parsing, sync, CLI), superusers,
// check_op and can() (sql/functions/090_catalog.sql, 100_access.sql;
// src/app/catalog.ts, access.ts, rls.ts), against the reference model
// wherever permissions are involved.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it, onTestFinished } from 'vitest';
import { canAccessRow, checkOperation, parseLevelOrRole } from '../../src/app/access.ts';
import { CatalogError, loadCatalogFile, parseCatalog, syncRoles, type Catalog } from '../../src/app/catalog.ts';
import { setSuperuser } from '../../src/app/rls.ts';
import { sql } from '../../src/db/pool.ts';
import { refresh } from '../../src/engine/apply.ts';
import { check } from '../../src/engine/check.ts';
import { InvalidInputError } from '../../src/errors.ts';
import * as model from '../reference/model.ts';
import type { Level, RefGraph } from '../reference/model.ts';
import { u, g, o, grant } from '../helpers/builders.ts';
import { runCli } from '../helpers/cli.ts';
import { expectedRowAccess, type AppRow } from '../helpers/app-rows.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { createLogin } from '../helpers/logins.ts';
import { PAST, graphArbitrary, loadGraph } from '../helpers/graph.ts';

/** Before every trash time the graphs use: "include trash" is the model at this instant. */
const BEFORE_ALL_TRASH = new Date(0);

const CATALOG_TEXT = `{
  "roles": { "viewer": 1, "editor": "write", "owner": 3 },
  "operations": {
    "document.read": 1,
    "document.edit": 2,
    "document.delete": "manage"
  }
}
`;
const CATALOG: Catalog = {
  roles: [{ name: 'editor', level: 2 }, { name: 'owner', level: 3 }, { name: 'viewer', level: 1 }],
  operations: [{ name: 'document.delete', level: 3 }, { name: 'document.edit', level: 2 }, { name: 'document.read', level: 1 }],
};

/** Line and column (1-based) of the first occurrence of `needle`, found independently of the parser. */
function locate(text: string, needle: string): string {
  const offset = text.indexOf(needle);
  if (offset < 0) throw new Error(`test bug: ${needle} not in text`);
  const before = text.slice(0, offset).split('\n');
  return `${before.length}:${before[before.length - 1]!.length + 1}`;
}

function catalogError(text: string): CatalogError {
  try {
    parseCatalog(text, 'cat.json');
  } catch (error) {
    expect(error).toBeInstanceOf(CatalogError);
    expect(error).toBeInstanceOf(InvalidInputError);
    return error as CatalogError;
  }
  throw new Error('expected a CatalogError');
}

describe('catalog file parsing', () => {
  it('reads roles and operations, levels as numbers or names', () => {
    expect(parseCatalog(CATALOG_TEXT)).toEqual(CATALOG);
    expect(parseCatalog('{"roles": {}, "operations": {}}')).toEqual({ roles: [], operations: [] });
  });

  // [case, text, the text the error must point at (null: the start), words of the reason]
  const malformed: [string, string, string | null, RegExp][] = [
    ['a trailing comma', '{\n  "roles": { "viewer": 1, },\n  "operations": {}\n}', '},', /invalid JSON: expected a quoted key/],
    ['an unterminated string', '{\n  "roles": { "viewer: 1 },\n  "operations": {}\n}', '"viewer', /invalid JSON: unterminated string/],
    ['a missing colon', '{"roles": {"viewer" 1}, "operations": {}}', '1}', /invalid JSON: expected ":" after key "viewer"/],
    ['garbage after the document', '{"roles": {}, "operations": {}}\ntrue', 'true', /invalid JSON: unexpected character "t" after the end/],
    ['an empty file', '', null, /invalid JSON: expected a value, found end of file/],
    ['a list instead of an object', '[1, 2]', null, /the catalog must be a JSON object/],
    ['an unknown top-level key', '{\n  "roles": {},\n  "operations": {},\n  "permissions": {}\n}', '"permissions"', /unknown top-level key "permissions"/],
    ['a missing section', '{"roles": {"viewer": 1}}', null, /missing top-level key "operations"/],
    ['a section that is not an object', '{"roles": ["viewer"], "operations": {}}', '["viewer"]', /"roles" must be an object/],
    ['level 0', '{"roles": {"viewer": 0}, "operations": {}}', '0}', /level of role "viewer" must be 1 \(read\), 2 \(write\) or 3 \(manage\).*got 0/],
    ['level 4', '{\n  "roles": {},\n  "operations": {\n    "document.read": 1,\n    "document.nuke": 4\n  }\n}', '4\n', /level of operation "document.nuke" .*got 4/],
    ['a fractional level', '{"roles": {"viewer": 1.5}, "operations": {}}', '1.5', /got 1.5/],
    ['an unknown level name', '{"roles": {"viewer": "admin"}, "operations": {}}', '"admin"', /got "admin"/],
    ['a boolean level', '{"roles": {"viewer": true}, "operations": {}}', 'true', /got true/],
    ['a duplicate role', '{\n  "roles": {\n    "viewer": 1,\n    "viewer": 2\n  },\n  "operations": {}\n}', '"viewer": 2', /duplicate role "viewer" \(first at line 3\)/],
    ['a duplicate operation', '{"roles": {}, "operations": {"doc.read": 1, "doc.read": 1}}', '"doc.read": 1}', /duplicate operation "doc.read"/],
    ['a name both role and operation', '{"roles": {"editor": 2}, "operations": {\n"editor": 1}}', '"editor": 1', /"editor" is both a role \(first at line 1\) and an operation/],
    ['a duplicate section', '{"roles": {}, "operations": {}, "roles": {}}', '"roles": {}}', /duplicate top-level key "roles"/],
    ['an empty name', '{"roles": {"": 1}, "operations": {}}', '""', /role name "" is not valid/],
    ['a name with a space', '{"roles": {}, "operations": {"doc read": 1}}', '"doc read"', /operation name "doc read" is not valid/],
    ['a name starting with a digit', '{"roles": {"2fast": 1}, "operations": {}}', '"2fast"', /role name "2fast" is not valid/],
    ['a role named like a level', '{"roles": {"write": 3}, "operations": {}}', '"write"', /role name "write" is reserved/],
    ['an operation named like a level', '{"roles": {}, "operations": {"manage": 1}}', '"manage"', /operation name "manage" is reserved: it already means level 3/],
  ];
  for (const [name, text, at, reason] of malformed) {
    it(`rejects ${name} with its line and column`, () => {
      const error = catalogError(text);
      expect(error.message).toMatch(reason);
      expect(error.message.startsWith(`cat.json:${at === null ? '1:1' : locate(text, at)}: `), error.message).toBe(true);
    });
  }

  it('accepts exactly the texts JSON.parse accepts (syntax), on random and mutated JSON', () => {
    const jsonSyntaxOk = (text: string) => {
      try {
        JSON.parse(text);
        return true;
      } catch {
        return false;
      }
    };
    const ourSyntaxOk = (text: string) => {
      try {
        parseCatalog(text);
        return true;
      } catch (error) {
        expect(error).toBeInstanceOf(CatalogError);
        return !(error as CatalogError).reason.startsWith('invalid JSON');
      }
    };
    const mutated = fc
      .tuple(fc.json(), fc.nat(), fc.constantFrom('', '"', ',', '}', ']', '{', ':', '\\', '\n', '0', '-', 'e', ' '), fc.nat({ max: 2 }))
      .map(([text, at, insert, cut]) => text.slice(0, at % (text.length + 1)) + insert + text.slice((at % (text.length + 1)) + cut));
    fc.assert(
      fc.property(fc.oneof(fc.json(), mutated, fc.string()), (text) => {
        expect(ourSyntaxOk(text), JSON.stringify(text)).toBe(jsonSyntaxOk(text));
      }),
      { numRuns: 2000 },
    );
  });

  it('any valid catalog survives a round trip through its JSON text', () => {
    const name = fc.stringMatching(/^[A-Za-z][A-Za-z0-9_.:-]{0,20}$/).filter((n) => !['read', 'write', 'manage'].includes(n));
    const level = fc.constantFrom<Level>(1, 2, 3);
    fc.assert(
      fc.property(fc.uniqueArray(fc.tuple(name, level, fc.boolean()), { selector: ([n]) => n, maxLength: 12 }), (entries) => {
        const roles = entries.filter(([, , isRole]) => isRole).map(([n, l]) => ({ name: n, level: l }));
        const operations = entries.filter(([, , isRole]) => !isRole).map(([n, l]) => ({ name: n, level: l }));
        const text = JSON.stringify(
          { roles: Object.fromEntries(roles.map((e) => [e.name, e.level])), operations: Object.fromEntries(operations.map((e) => [e.name, e.level])) },
          null,
          2,
        );
        const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
        expect(parseCatalog(text)).toEqual({ roles: roles.sort(byName), operations: operations.sort(byName) });
      }),
      { numRuns: 200 },
    );
  });

  it('loadCatalogFile names the file in errors, and a missing file', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'permgraph-catalog-'));
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'bad.json');
    await writeFile(file, '{\n  "roles": {"viewer": 1},\n  "operations": {"doc.read": 9}\n}\n');
    await expect(loadCatalogFile(file)).rejects.toThrow(`${file}:3:30: level of operation "doc.read"`);
    await expect(loadCatalogFile(path.join(dir, 'none.json'))).rejects.toThrow(/cannot read catalog file .*none\.json: no such file/);
  });
});

describe('roles, operations, superusers, can()', async () => {
  const { db, url } = await createTestDatabase();

  async function catalogInDb(): Promise<Catalog> {
    return {
      roles: await db.query(sql`select name, level from permgraph.roles order by name`),
      operations: await db.query(sql`select name, level from permgraph.operations order by name`),
    };
  }

  describe('sync', () => {
    it('adds, changes and removes; dry runs change nothing; a second run changes nothing', async () => {
      await syncRoles(db, { roles: [], operations: [] });
      const dry = await syncRoles(db, CATALOG, { dryRun: true });
      expect(dry.dryRun).toBe(true);
      expect(dry.changes).toHaveLength(6);
      expect(await catalogInDb()).toEqual({ roles: [], operations: [] });
      // a login that may only read the catalog may ask what a sync would change, and no more
      const reader = await createLogin(db, url, 'catalog_reader', 'permgraph_reader');
      expect(await syncRoles(reader.db, CATALOG, { dryRun: true })).toEqual(dry);
      await expect(syncRoles(reader.db, CATALOG)).rejects.toMatchObject({ code: '42501' });
      expect(await catalogInDb()).toEqual({ roles: [], operations: [] });

      const first = await syncRoles(db, CATALOG);
      expect(first.changes).toContainEqual({ kind: 'role', name: 'editor', change: 'add', from: null, to: 2 });
      expect(await catalogInDb()).toEqual(CATALOG);
      expect((await syncRoles(db, CATALOG)).changes).toEqual([]);

      const next: Catalog = { roles: [{ name: 'editor', level: 3 }, { name: 'viewer', level: 1 }], operations: [{ name: 'document.read', level: 1 }] };
      expect((await syncRoles(db, next)).changes).toEqual([
        { kind: 'role', name: 'editor', change: 'change', from: 2, to: 3 },
        { kind: 'role', name: 'owner', change: 'remove', from: 3, to: null },
        { kind: 'operation', name: 'document.delete', change: 'remove', from: 3, to: null },
        { kind: 'operation', name: 'document.edit', change: 'remove', from: 2, to: null },
      ]);
      expect(await catalogInDb()).toEqual(next);
    });

    it('random sequences of catalogs: the database always equals the last one synced, and the diff explains the step', async () => {
      const entry = fc.record({ name: fc.constantFrom('a', 'b', 'c', 'd.x', 'e:y'), level: fc.constantFrom<Level>(1, 2, 3) });
      const catalogArb = fc
        .tuple(fc.uniqueArray(entry, { selector: (e) => e.name, maxLength: 5 }), fc.array(fc.boolean(), { minLength: 5, maxLength: 5 }))
        .map(([entries, isRole]) => {
          const sorted = entries.sort((a, b) => (a.name < b.name ? -1 : 1));
          return { roles: sorted.filter((_, i) => isRole[i]), operations: sorted.filter((_, i) => !isRole[i]) };
        });
      await fc.assert(
        fc.asyncProperty(fc.array(fc.tuple(catalogArb, fc.boolean()), { minLength: 1, maxLength: 5 }), async (steps) => {
          await db.query(sql`delete from permgraph.roles; delete from permgraph.operations`);
          let current: Catalog = { roles: [], operations: [] };
          for (const [desired, dryRun] of steps) {
            const { changes } = await syncRoles(db, desired, { dryRun });
            // Replaying the diff on the previous state gives the desired state.
            const replay = (kind: 'role' | 'operation', entries: Catalog['roles']) => {
              const map = new Map(entries.map((e) => [e.name, e.level]));
              for (const c of changes.filter((c) => c.kind === kind)) {
                expect(map.get(c.name) ?? null).toBe(c.from);
                if (c.to === null) map.delete(c.name);
                else map.set(c.name, c.to);
              }
              return [...map].map(([name, level]) => ({ name, level })).sort((a, b) => (a.name < b.name ? -1 : 1));
            };
            expect({ roles: replay('role', current.roles), operations: replay('operation', current.operations) }).toEqual(desired);
            if (!dryRun) current = desired;
            expect(await catalogInDb()).toEqual(current);
          }
          expect((await syncRoles(db, current)).changes).toEqual([]);
        }),
        { numRuns: 40 },
      );
    });

    it('a catalog built in code gets the same checks, and nothing is written', async () => {
      await syncRoles(db, CATALOG);
      const bad: Catalog = { roles: [{ name: 'viewer', level: 4 as Level }], operations: [] };
      await expect(syncRoles(db, bad)).rejects.toThrow(/level of role "viewer" must be 1 \(read\), 2 \(write\) or 3 \(manage\).*got 4/);
      await expect(syncRoles(db, { roles: [{ name: 'x', level: 1 }], operations: [{ name: 'x', level: 1 }] })).rejects.toThrow(/"x" is both a role and an operation/);
      // a section missing or null (JavaScript, or a cast): a CatalogError, not a TypeError
      await expect(syncRoles(db, { roles: [{ name: 'x', level: 1 }] } as unknown as Catalog)).rejects.toThrow(CatalogError);
      await expect(syncRoles(db, { roles: null, operations: [] } as unknown as Catalog)).rejects.toThrow('<catalog>: "roles" must be a list of { name, level } (use [] for none), got null');
      await expect(syncRoles(db, { roles: [{ level: 1 }], operations: [] } as unknown as Catalog)).rejects.toThrow(/every entry of "roles" needs a name/);
      // names an object inherits are names like any other: a role, not a level
      await syncRoles(db, { roles: [...CATALOG.roles, { name: 'constructor', level: 2 }], operations: CATALOG.operations });
      expect(await parseLevelOrRole(db, 'constructor')).toBe(2);
      await syncRoles(db, CATALOG);
      expect(await catalogInDb()).toEqual(CATALOG);
    });
  });

  describe('CLI: permgraph roles sync', () => {
    const cli = (...args: string[]) => runCli(['--database-url', url, ...args]);

    it('prints the diff, --dry-run changes nothing, a second run prints "no changes", --json for scripts', async () => {
      await syncRoles(db, { roles: [], operations: [] });
      const dir = await mkdtemp(path.join(tmpdir(), 'permgraph-catalog-'));
      onTestFinished(() => rm(dir, { recursive: true, force: true }));
      const file = path.join(dir, 'catalog.json');
      await writeFile(file, CATALOG_TEXT);

      const dry = await cli('roles', 'sync', file, '--dry-run');
      expect(dry).toMatchObject({ code: 0, stderr: '' });
      expect(dry.stdout).toContain('+ role editor = 2 (write)\n');
      expect(dry.stdout).toContain('+ operation document.delete = 3 (manage)\n');
      expect(dry.stdout).toMatch(/dry run: 6 change\(s\) not applied\n$/);
      expect(await catalogInDb()).toEqual({ roles: [], operations: [] });

      expect((await cli('roles', 'sync', file)).stdout).toMatch(/applied 6 change\(s\)\n$/);
      expect(await catalogInDb()).toEqual(CATALOG);
      expect(await cli('roles', 'sync', file)).toMatchObject({ code: 0, stdout: 'no changes\n' });

      await writeFile(file, '{"roles": {"viewer": 1, "editor": 3}, "operations": {"document.read": 1}}');
      const json = await cli('--json', 'roles', 'sync', file, '--dry-run');
      expect(JSON.parse(json.stdout)).toEqual({
        dryRun: true,
        changes: [
          { kind: 'role', name: 'editor', change: 'change', from: 2, to: 3 },
          { kind: 'role', name: 'owner', change: 'remove', from: 3, to: null },
          { kind: 'operation', name: 'document.delete', change: 'remove', from: 3, to: null },
          { kind: 'operation', name: 'document.edit', change: 'remove', from: 2, to: null },
        ],
      });
      expect(await catalogInDb()).toEqual(CATALOG);
    });

    it('a malformed file: exit 1, one line with file, line, column and reason; nothing changed', async () => {
      await syncRoles(db, CATALOG);
      const dir = await mkdtemp(path.join(tmpdir(), 'permgraph-catalog-'));
      onTestFinished(() => rm(dir, { recursive: true, force: true }));
      const file = path.join(dir, 'bad.json');
      const text = '{\n  "roles": {"viewer": 1},\n  "operations": {"doc.read": 1,}\n}\n';
      await writeFile(file, text);
      expect(await cli('roles', 'sync', file)).toMatchObject({
        code: 1,
        stdout: '',
        stderr: `permgraph: ${file}:${locate(text, '}\n}')}: invalid JSON: expected a quoted key, found character "}"\n`,
      });
      await writeFile(file, '{"roles": {"viewer": 0}, "operations": {}}');
      expect((await cli('roles', 'sync', file)).stderr).toMatch(/^permgraph: .*bad\.json:1:22: level of role "viewer" must be .*got 0\n$/);
      expect((await cli('roles', 'sync', path.join(dir, 'missing.json'))).stderr).toMatch(/^permgraph: cannot read catalog file .*missing\.json: no such file\n$/);
      expect((await cli('roles', 'sync')).code).toBe(2);
      expect(await catalogInDb()).toEqual(CATALOG);
    });

    it('has --help', async () => {
      const help = await runCli(['roles', 'sync', '--help']);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain('Usage: permgraph roles sync [options] <file>');
      expect(help.stdout).toContain('--dry-run');
    });
  });

  describe('role names in grants, operation names in checks', () => {
    it('role_level / parseLevelOrRole: known roles, plain levels, clear errors for the rest', async () => {
      await syncRoles(db, CATALOG);
      expect(await parseLevelOrRole(db, 'editor')).toBe(2);
      expect(await parseLevelOrRole(db, 'manage')).toBe(3);
      expect(await parseLevelOrRole(db, '1')).toBe(1);
      expect(await parseLevelOrRole(db, 3)).toBe(3);
      await expect(parseLevelOrRole(db, 'admin')).rejects.toThrow(/^unknown role "admin"; known roles: editor, owner, viewer$/);
      await expect(parseLevelOrRole(db, 'admin')).rejects.toBeInstanceOf(InvalidInputError);
      await expect(parseLevelOrRole(db, '4')).rejects.toThrow('level must be 1 (read), 2 (write) or 3 (manage), got "4"');
      await expect(parseLevelOrRole(db, 0)).rejects.toThrow('got 0');

      await loadGraph(db, { nodes: [u('ann'), g('docs')], grants: [] });
      await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('ann', 'docs', permgraph.role_level('owner'))`);
      expect(await db.query(sql`select level from permgraph.grants`)).toEqual([{ level: 3 }]);
      await expect(db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('ann', 'docs', permgraph.role_level('nope'))`)).rejects.toThrow(
        /permgraph: unknown role "nope"/,
      );
      expect(await db.query(sql`select count(*)::int as n from permgraph.grants`)).toEqual([{ n: 1 }]);
    });

    it('check_op / checkOperation on random graphs equals the model at the operation\'s level; unknown operations are refused', async () => {
      await syncRoles(db, CATALOG);
      const operations = CATALOG.operations;
      const picks = fc.array(fc.tuple(fc.nat(), fc.nat(), fc.nat()), { minLength: 15, maxLength: 15 });
      await fc.assert(
        fc.asyncProperty(graphArbitrary({ users: 6, groups: 8, objects: 6, grants: 30 }), picks, async (graph, triples) => {
          await loadGraph(db, graph);
          await refresh(db);
          const users = graph.nodes.filter((n) => n.kind === 'user');
          const now = new Date();
          for (const [ui, ti, oi] of triples) {
            const user = users[ui % users.length]!.id;
            const target = graph.nodes[ti % graph.nodes.length]!.id;
            const op = operations[oi % operations.length]!;
            expect(await checkOperation(db, user, target, op.name), `${user} ${op.name} ${target}`).toBe(model.check(graph, user, target, op.level, now));
            expect(await checkOperation(db, user, target, op.name, { includeTrash: true })).toBe(model.check(graph, user, target, op.level, BEFORE_ALL_TRASH));
          }
        }),
        { numRuns: 25 },
      );
      await expect(checkOperation(db, 'u0', 'u0', 'document.nuke')).rejects.toThrow(
        /^unknown operation "document.nuke"; known operations: document.delete, document.edit, document.read$/,
      );
      await expect(db.query(sql`select permgraph.can_op('u0', 'x', null, 'nope')`)).rejects.toThrow(/permgraph: unknown operation "nope"/);
    });

    it('overloads resolve without surprises: untyped levels reach the int check, the 3- and 4-argument forms are distinct', async () => {
      await loadGraph(db, { nodes: [u('ann'), g('docs', null, PAST), g('live')], grants: [grant('ann', 2, 'docs'), grant('ann', 2, 'live')] });
      await refresh(db);
      // Bind parameters arrive untyped ('unknown'): with a text overload of check() this '2' would be taken for an operation name.
      expect(await db.query(sql`select permgraph.check(${'ann'}, ${'live'}, ${'2'}) as a`)).toEqual([{ a: true }]);
      expect(await db.query(sql`select permgraph.check('ann', 'live', '2') as a, permgraph.check('ann', 'live', 3) as b`)).toEqual([{ a: true, b: false }]);
      expect(await db.query(sql`select permgraph.check('ann', 'docs', 1) as a, permgraph.check('ann', 'docs', 1, true) as b`)).toEqual([{ a: false, b: true }]);
      expect(await db.query(sql`select permgraph.can(${'ann'}, ${'row1'}, ${'live'}, ${'2'}) as a`)).toEqual([{ a: true }]);
      await expect(db.query(sql`select permgraph.check('ann', 'live', 'read')`)).rejects.toThrow(/invalid input syntax for type integer/);
      await expect(db.query(sql`select permgraph.check('ann', 'live', 4)`)).rejects.toThrow('permgraph: level must be 1 (read), 2 (write) or 3 (manage), got 4');
      await expect(db.query(sql`select permgraph.can('ann', 'r', 'live', 0)`)).rejects.toThrow('permgraph: level must be 1 (read), 2 (write) or 3 (manage), got 0');
    });
  });

  describe('superusers', () => {
    const graph: RefGraph = {
      nodes: [u('root'), u('ann'), g('eng'), g('old', 'eng', PAST), o('doc', 'eng'), o('gone', 'eng', PAST)],
      grants: [grant('ann', 1, 'eng')],
    };

    it('only users can be superusers; unknown nodes are refused; nothing is written', async () => {
      await loadGraph(db, graph);
      await expect(setSuperuser(db, 'eng', true)).rejects.toThrow(/^only users can be superusers; node "eng" is a group$/);
      await expect(setSuperuser(db, 'eng', true)).rejects.toBeInstanceOf(InvalidInputError);
      await expect(setSuperuser(db, 'doc', true)).rejects.toThrow('node "doc" is an object');
      await expect(setSuperuser(db, 'nobody', true)).rejects.toThrow('node "nobody" does not exist');
      await expect(db.query(sql`insert into permgraph.nodes (id, kind, is_superuser) values ('g2', 'group', true)`)).rejects.toThrow(
        'permgraph: only users can be superusers; node "g2" is a group',
      );
      expect(await db.query(sql`select id from permgraph.nodes where is_superuser or id = 'g2'`)).toEqual([]);
      await setSuperuser(db, 'root', true);
      expect(await db.query(sql`select id from permgraph.nodes where is_superuser`)).toEqual([{ id: 'root' }]);
      await setSuperuser(db, 'root', false);
      expect(await db.query(sql`select id from permgraph.nodes where is_superuser`)).toEqual([]);
    });

    it('pass every check without rows of their own; trash still hides unless included', async () => {
      await loadGraph(db, graph);
      await refresh(db);
      await setSuperuser(db, 'root', true);
      expect(await db.query(sql`select target_id from permgraph.permissions where user_id = 'root'`)).toEqual([{ target_id: 'root' }]);
      for (const level of [1, 2, 3] as const) {
        expect(await check(db, 'root', 'eng', level)).toBe(true);
        expect(await check(db, 'root', 'doc', level)).toBe(true);
        expect(await check(db, 'root', 'ann', level)).toBe(true);
        expect(await check(db, 'root', 'old', level)).toBe(false);
        expect(await check(db, 'root', 'gone', level)).toBe(false);
        expect(await check(db, 'root', 'no-such-node', level)).toBe(false);
        expect(await canAccessRow(db, { userId: 'root', id: 'app-row', ownerId: 'eng' }, level)).toBe(true);
        expect(await canAccessRow(db, { userId: 'root', id: 'app-row', ownerId: 'old' }, level)).toBe(false);
        expect(await canAccessRow(db, { userId: 'root', id: 'app-row', ownerId: 'old' }, level, { includeTrash: true })).toBe(true);
      }
      expect(await db.query(sql`select permgraph.check('root', 'old', 3, true) as a, permgraph.check('root', 'gone', 3, true) as b`)).toEqual([{ a: true, b: true }]);
      expect(await check(db, 'ann', 'eng', 2)).toBe(false); // others are unchanged
    });
  });

  it('random graphs, superusers and application rows: check and can() equal the model, with and without trash', async () => {
    await syncRoles(db, CATALOG);
    const scenario = fc.record({
      graph: graphArbitrary({ users: 6, groups: 8, objects: 6, grants: 30 }),
      superPicks: fc.array(fc.nat(), { maxLength: 2 }),
      rowPicks: fc.array(fc.record({ registered: fc.boolean(), pick: fc.nat(), owner: fc.option(fc.nat(), { freq: 5 }) }), { minLength: 1, maxLength: 12 }),
    });
    await fc.assert(
      fc.asyncProperty(scenario, async ({ graph, superPicks, rowPicks }) => {
        await loadGraph(db, graph);
        await refresh(db);
        const users = graph.nodes.filter((n) => n.kind === 'user').map((n) => n.id);
        const superusers = new Set(superPicks.map((i) => users[i % users.length]!));
        for (const id of superusers) await setSuperuser(db, id, true);
        const rows = appRows(graph, rowPicks);
        const now = new Date();
        for (const userId of [...users, 'ghost']) {
          for (const level of [1, 2, 3] as const) {
            for (const row of rows) {
              const label = `${userId} ${level} ${row.id} owned by ${row.ownerId}`;
              expect(await canAccessRow(db, { userId, ...row }, level), label).toBe(expectedRowAccess(graph, superusers, userId, row, level, now));
              expect(await canAccessRow(db, { userId, ...row }, level, { includeTrash: true }), label).toBe(
                expectedRowAccess(graph, superusers, userId, row, level, BEFORE_ALL_TRASH),
              );
            }
            for (const node of graph.nodes) {
              const viaCheck = expectedRowAccess(graph, superusers, userId, { id: node.id, ownerId: node.ownerId }, level, now);
              expect(await check(db, userId, node.id, level), `check ${userId} ${node.id} ${level}`).toBe(viaCheck);
            }
          }
          const op = CATALOG.operations[users.indexOf(userId) % CATALOG.operations.length] ?? CATALOG.operations[0]!;
          for (const row of rows) {
            expect(await canAccessRow(db, { userId, ...row }, op.name)).toBe(expectedRowAccess(graph, superusers, userId, row, op.level, now));
          }
        }
      }),
      { numRuns: 15 },
    );
  });
});

/**
 * Application rows for a graph: some are registered nodes (any kind; their
 * owner column is the node's owner, as an app keeps them in step), the others
 * are fresh ids owned by a random user or group, an id that is no node, or nobody.
 */
function appRows(graph: RefGraph, picks: { registered: boolean; pick: number; owner: number | null }[]): AppRow[] {
  const owners = [...graph.nodes.filter((n) => n.kind !== 'object').map((n) => n.id), 'not-a-node'];
  const rows = new Map<string, AppRow>();
  picks.forEach(({ registered, pick, owner }, i) => {
    if (registered) {
      const node = graph.nodes[pick % graph.nodes.length]!;
      rows.set(node.id, { id: node.id, ownerId: node.ownerId });
    } else {
      rows.set(`row${i}`, { id: `row${i}`, ownerId: owner === null ? null : owners[owner % owners.length]! });
    }
  });
  return [...rows.values()];
}
