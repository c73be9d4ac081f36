import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sql } from '../../src/db/pool.ts';
import { refresh } from '../../src/engine/apply.ts';
import type * as model from '../reference/model.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { runCli } from '../helpers/cli.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { loadGraph } from '../helpers/graph.ts';

const graph: model.RefGraph = {
  nodes: [
    u('ann'),
    u('bob'),
    g('eng'),
    g('roadmap', 'eng'),
    o('spec', 'roadmap'),
  ],
  grants: [grant('ann', 2, 'eng')],
};

describe('permgraph list / who / explain / grant / revoke / sync-grants', async () => {
  const { db, url } = await createTestDatabase();
  const cli = (...args: string[]) => runCli(['--database-url', url, ...args]);
  const scratch = await mkdtemp(path.join(tmpdir(), 'permgraph-app-cli-'));
  afterAll(() => rm(scratch, { recursive: true, force: true }));
  const grants = () => db.query(sql`select tail_id, head_id, level, source from permgraph.grants order by source, tail_id, head_id`);

  it('list and who: human pages with a cursor to follow, --json for scripts', async () => {
    await loadGraph(db, graph);
    await refresh(db);
    const first = await cli('list', 'ann', '--level', 'write', '--limit', '2');
    expect(first.code).toBe(0);
    const lines = first.stdout.trimEnd().split('\n');
    expect(lines.slice(0, 2)).toEqual(['ann\tuser\tmanage', 'eng\tgroup\twrite']);
    const cursor = lines[2]!.match(/^-- more: --after (\S+)$/)![1]!;
    const second = JSON.parse((await cli('--json', 'list', 'ann', '--level', '2', '--limit', '2', '--after', cursor)).stdout);
    expect(second).toEqual({ items: [{ id: 'roadmap', kind: 'group', level: 2, validUntil: null }, { id: 'spec', kind: 'object', level: 2, validUntil: null }], next: null });
    expect((await cli('list', 'ann', '--kind', 'object')).stdout).toBe('spec\tobject\twrite\n');
    expect(JSON.parse((await cli('--json', 'who', 'spec')).stdout)).toEqual({ items: [{ id: 'ann', level: 2, validUntil: null }], next: null });
  });

  it('explain: the path in words, or the reason; --json gives the structure', async () => {
    await loadGraph(db, graph);
    await refresh(db);
    const yes = await cli('explain', 'ann', 'spec', '--level', 'write');
    expect(yes).toMatchObject({ code: 0 });
    expect(yes.stdout).toBe(
      [
        'ann may write spec (best level: write, through its owner)',
        'path:',
        '  ann -[write, default]-> eng',
        '  eng -[manage, owner]-> roadmap',
        '  roadmap -[manage, owner]-> spec',
        '',
      ].join('\n'),
    );
    expect((await cli('explain', 'bob', 'spec')).stdout).toBe('bob may not access spec: no path\n');
    expect(JSON.parse((await cli('--json', 'explain', 'ann', 'eng', '--level', 'manage')).stdout)).toMatchObject({
      allowed: false, reason: 'level too low', bestLevel: 2, path: [{ tail: 'ann', head: 'eng', level: 2, source: 'default' }], pendingChanges: 0,
    });
  });

  it('explain says when changes are pending (check answers from the table until they are applied)', async () => {
    await loadGraph(db, graph);
    await refresh(db);
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('bob', 'roadmap', 1)`);
    expect((await cli('check', 'bob', 'spec', 'read')).stdout).toBe('no\n');
    const explained = await cli('explain', 'bob', 'spec');
    expect(explained.code).toBe(0);
    expect(explained.stdout.split('\n')[0]).toBe('bob may read spec (best level: read, through its owner)');
    expect(explained.stdout).toContain('\nnote: 1 change(s) pending: the permission table may not reflect this yet ');
    expect(JSON.parse((await cli('--json', 'explain', 'bob', 'spec')).stdout)).toMatchObject({ allowed: true, pendingChanges: 1 });
    expect((await cli('worker', '--once')).code).toBe(0);
    expect((await cli('explain', 'bob', 'spec')).stdout).not.toContain('pending');
    expect((await cli('check', 'bob', 'spec', 'read')).stdout).toBe('yes\n');
  });

  it('grant and revoke write through plain SQL on grants, per source', async () => {
    await loadGraph(db, graph);
    await refresh(db);
    const granted = await cli('grant', 'bob', 'roadmap', 'read', '--source', 'ui');
    expect(granted.code).toBe(0);
    expect(granted.stdout).toMatch(/^granted bob -\[read\]-> roadmap \(source ui\); token \d+\n$/);
    expect(await grants()).toContainEqual({ tail_id: 'bob', head_id: 'roadmap', level: 1, source: 'ui' });
    const [pending] = await db.query(sql`select count(*)::int as n from permgraph.changes where tail_id = 'bob'`);
    expect(pending.n).toBe(1); // captured for the worker
    expect((await cli('revoke', 'bob', 'roadmap')).stdout).toBe('no grant bob -> roadmap from source default: nothing to revoke\n');
    expect(JSON.parse((await cli('--json', 'revoke', 'bob', 'roadmap', '--source', 'ui')).stdout)).toEqual({ tail: 'bob', head: 'roadmap', source: 'ui', revoked: true, token: expect.any(String) });
    expect(await grants()).toEqual([{ tail_id: 'ann', head_id: 'eng', level: 2, source: 'default' }]);
  });

  it('sync-grants: a JSON file becomes the source\'s grants', async () => {
    await loadGraph(db, graph);
    const file = path.join(scratch, 'ldap.json');
    await writeFile(file, JSON.stringify([{ tail: 'bob', head: 'eng', level: 'read' }, { tail: 'ann', head: 'roadmap', level: 3 }]));
    const result = await cli('sync-grants', 'ldap', file);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^synced source ldap: 2 inserted, 0 updated, 0 deleted; token \d+\n$/);
    await writeFile(file, JSON.stringify([{ tail: 'bob', head: 'eng', level: 'write' }]));
    expect(JSON.parse((await cli('--json', 'sync-grants', 'ldap', file)).stdout)).toMatchObject({ source: 'ldap', inserted: 0, updated: 1, deleted: 1 });
    expect(await grants()).toEqual([
      { tail_id: 'ann', head_id: 'eng', level: 2, source: 'default' },
      { tail_id: 'bob', head_id: 'eng', level: 2, source: 'ldap' },
    ]);
  });

  it('--actor: grant, revoke, sync-grants and roles sync record who made the change in the audit log', async () => {
    await loadGraph(db, graph);
    const [{ from }] = await db.query(sql`select coalesce(max(id), 0)::int as from from permgraph.audit_log`);
    const [{ login }] = await db.query(sql`select session_user as login`);
    expect((await cli('grant', 'bob', 'roadmap', 'read', '--source', 'ui', '--actor', 'ann@example.com')).code).toBe(0);
    expect((await cli('grant', 'bob', 'eng', 'write', '--source', 'ui')).code).toBe(0);
    expect((await cli('revoke', 'bob', 'roadmap', '--source', 'ui', '--actor', 'carol@example.com')).code).toBe(0);
    const file = path.join(scratch, 'actor.json');
    await writeFile(file, JSON.stringify([{ tail: 'bob', head: 'spec', level: 1 }]));
    expect((await cli('sync-grants', 'ldap', file, '--actor', 'ldap-sync')).code).toBe(0);
    const catalog = path.join(scratch, 'catalog.json');
    await writeFile(catalog, JSON.stringify({ roles: { viewer: 1 }, operations: { 'doc.edit': 2 } }));
    expect((await cli('roles', 'sync', catalog, '--actor', 'root@example.com')).code).toBe(0);
    await writeFile(catalog, JSON.stringify({ roles: { viewer: 2 }, operations: {} }));
    expect((await cli('roles', 'sync', catalog, '--dry-run', '--actor', 'nobody@example.com')).code).toBe(0); // writes nothing
    expect((await cli('roles', 'sync', catalog)).code).toBe(0);
    expect(await db.query(sql`select actor, action, tail_id, head_id, details, old_level, new_level from permgraph.audit_log where id > ${from} order by id`)).toEqual([
      { actor: 'ann@example.com', action: 'grant', tail_id: 'bob', head_id: 'roadmap', details: null, old_level: null, new_level: 1 },
      { actor: login, action: 'grant', tail_id: 'bob', head_id: 'eng', details: null, old_level: null, new_level: 2 },
      { actor: 'carol@example.com', action: 'revoke', tail_id: 'bob', head_id: 'roadmap', details: null, old_level: 1, new_level: null },
      { actor: 'ldap-sync', action: 'grant', tail_id: 'bob', head_id: 'spec', details: null, old_level: null, new_level: 1 },
      { actor: 'root@example.com', action: 'catalog', tail_id: null, head_id: null, details: { kind: 'role', name: 'viewer' }, old_level: null, new_level: 1 },
      { actor: 'root@example.com', action: 'catalog', tail_id: null, head_id: null, details: { kind: 'operation', name: 'doc.edit' }, old_level: null, new_level: 2 },
      { actor: login, action: 'catalog', tail_id: null, head_id: null, details: { kind: 'role', name: 'viewer' }, old_level: 1, new_level: 2 },
      { actor: login, action: 'catalog', tail_id: null, head_id: null, details: { kind: 'operation', name: 'doc.edit' }, old_level: 2, new_level: null },
    ]);
    const listed = await cli('audit', '--action', 'catalog', '--actor', 'root@example.com');
    expect(listed.stdout.trimEnd().split('\n').map((l) => l.split('\t').slice(2).join(' | '))).toEqual([
      `root@example.com (login ${login}) | catalog | role viewer level - => 1`,
      `root@example.com (login ${login}) | catalog | operation doc.edit level - => 2`,
    ]);
    const empty = await cli('grant', 'bob', 'eng', 'read', '--actor', ' ');
    expect(empty.code).toBe(2);
    expect(empty.stderr).toMatch(/--actor <actor>' argument ' ' is invalid\. the actor must not be empty\./);
    await db.query(sql`delete from permgraph.roles; delete from permgraph.operations`);
  });

  it('bad input: one-line reason, non-zero exit, nothing written', async () => {
    await loadGraph(db, graph);
    await refresh(db);
    const before = await grants();
    const fails = async (args: string[], message: string | RegExp, code = 1) => {
      const result = await cli(...args);
      expect(result.code, args.join(' ')).toBe(code);
      expect(result.stderr, args.join(' ')).toMatch(typeof message === 'string' ? new RegExp(`^permgraph: ${escape(message)}\n$`) : message);
    };
    // independent failing commands: run a few at a time (each CLI start costs seconds)
    await inBatches([
      () => fails(['list', 'nobody'], 'user "nobody" does not exist'),
      () => fails(['list', 'ann', '--level', '4'], 'level must be 1 (read), 2 (write) or 3 (manage), got "4"'),
      () => fails(['list', 'ann', '--limit', '0'], '--limit must be a positive integer, got "0"', 2),
      () => fails(['list', 'ann', '--limit', '10001'], '--limit must be at most 10000, got "10001"', 2),
      () => fails(['check', 'ann', 'eng', 'admin'], 'unknown operation "admin"; known operations: none (run `permgraph roles sync FILE`); nor is it a level (read, write, manage or 1-3)'),
      () => fails(['list', 'ann', '--after', 'bogus'], /^permgraph: invalid cursor "bogus": not a permgraph cursor; pass the "next" value of a previous page\n$/),
      () => fails(['who', 'nothing'], 'target "nothing" does not exist'),
      () => fails(['explain', 'ann', 'nothing'], 'thing "nothing" does not exist'),
      () => fails(['grant', 'spec', 'eng', '1'], 'grant tail "spec" is an object; only users and groups can hold grants'),
      () => fails(['grant', 'ann', 'ghost', 'read'], 'grant head "ghost" does not exist'),
      () => fails(['grant', 'ann', 'eng', '0'], 'level must be 1 (read), 2 (write) or 3 (manage), got "0"'),
      () => fails(['revoke', 'ann', 'ghost'], 'node "ghost" does not exist'),
    ]);
    const bad = path.join(scratch, 'bad.json');
    await writeFile(bad, '[{"tail": "ann", "head": "eng", "level": 1},\n {"tail": "bob" "head": "eng", "level": 1}]');
    await fails(['sync-grants', 'ldap', bad], /^permgraph: .*bad\.json:2:17: not valid JSON: .*\n$/);
    await writeFile(bad, JSON.stringify([{ tail: 'bob', head: 'eng', level: 1 }, { tail: 'spec', head: 'eng', level: 1 }]));
    await fails(['sync-grants', 'ldap', bad], 'sync-grants: grant #2 (spec -> eng): tail "spec" is an object; only users and groups can hold grants; nothing was written');
    await fails(['sync-grants', 'ldap', path.join(scratch, 'missing.json')], /^permgraph: cannot read .*missing\.json: ENOENT.*\n$/);
    expect(await grants()).toEqual(before);
    const [pending] = await db.query(sql`select count(*)::int as n from permgraph.changes`);
    expect(pending.n).toBe(0);
  });

  it('every command has --help', async () => {
    await inBatches(
      ['list', 'who', 'explain', 'grant', 'revoke', 'sync-grants'].map((command) => async () => {
        const result = await runCli([command, '--help']);
        expect(result.code, command).toBe(0);
        expect(result.stdout, command).toContain(`Usage: permgraph ${command}`);
      }),
    );
  });
});

async function inBatches(tasks: (() => Promise<unknown>)[], size = 3): Promise<void> {
  for (let i = 0; i < tasks.length; i += size) await Promise.all(tasks.slice(i, i + size).map((task) => task()));
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
