// The command line and expiring grants: grant --expires / --expires-in,
// sync-grants files with expiresAt, and valid_until in the output of list,
// who, explain and audit (human lines, and camelCase JSON), and what explain
// says of access that an expired grant gave.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sql } from '../../src/db/pool.ts';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { expiring, g, grant, o, u } from '../helpers/builders.ts';
import { runCli } from '../helpers/cli.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { loadGraph } from '../helpers/graph.ts';

const HOUR = 3600 * 1000;
/** A moment of whole milliseconds as list, who, explain and audit print it: to the microsecond the database stores. */
const exact = (at: Date) => at.toISOString().replace(/Z$/, '000Z');

describe('permgraph grant --expires / --expires-in, sync-grants expiresAt, valid_until in list, who, explain and audit', async () => {
  const { db, url, name } = await createTestDatabase();
  const cli = (...args: string[]) => runCli(['--database-url', url, ...args]);
  const scratch = await mkdtemp(path.join(tmpdir(), 'permgraph-expiry-cli-'));
  afterAll(() => rm(scratch, { recursive: true, force: true }));
  const grants = () => db.query(sql`select tail_id, head_id, level, source, expires_at from permgraph.grants order by source, tail_id, head_id`);
  const graph = { nodes: [u('ann'), u('bob'), g('eng'), o('spec', 'eng')], grants: [grant('bob', 1, 'eng')] };

  it('grant --expires writes the expiry and says it; --expires-in counts from now', async () => {
    await loadGraph(db, graph);
    const granted = await cli('grant', 'ann', 'eng', 'write', '--expires', '2031-05-01T12:00:00+02:00');
    expect(granted).toMatchObject({ code: 0, stderr: '' });
    expect(granted.stdout).toMatch(/^granted ann -\[write\]-> eng \(source default, until 2031-05-01T10:00:00\.000000Z\); token \d+\n$/);
    const json = JSON.parse((await cli('--json', 'grant', 'ann', 'spec', 'read', '--expires-in', '90m', '--source', 'temp')).stdout);
    expect(json).toMatchObject({ tail: 'ann', head: 'spec', level: 1, source: 'temp' });
    const expiresAt = new Date(json.expiresAt).getTime();
    expect(Math.abs(expiresAt - (Date.now() + 90 * 60_000))).toBeLessThan(60_000);
    expect(await grants()).toEqual([
      { tail_id: 'ann', head_id: 'eng', level: 2, source: 'default', expires_at: new Date('2031-05-01T10:00:00Z') },
      { tail_id: 'bob', head_id: 'eng', level: 1, source: 'default', expires_at: null },
      { tail_id: 'ann', head_id: 'spec', level: 1, source: 'temp', expires_at: new Date(expiresAt) },
    ]);
    // re-granting without a flag makes the grant permanent
    expect((await cli('grant', 'ann', 'eng', 'write')).stdout).toMatch(/^granted ann -\[write\]-> eng \(source default\); token/);
    expect((await grants())[0]).toMatchObject({ expires_at: null });
  });

  it('bad expiries: exit non-zero with a one-line reason naming the value; nothing is written', async () => {
    await loadGraph(db, graph);
    const before = await grants();
    const cases: [string[], number, RegExp][] = [
      [['--expires', 'tomorrow'], 2, /^permgraph: --expires "tomorrow" is neither a timestamp with a time zone offset nor a date \(ISO 8601, e\.g\. 2030-01-31T12:00:00Z, or 2030-01-31: its midnight UTC\)\n$/],
      [['--expires', '2030-01-31T18:00:00'], 2, /^permgraph: --expires "2030-01-31T18:00:00" is neither a timestamp with a time zone offset nor a date \(ISO 8601, e\.g\. 2030-01-31T12:00:00Z, or 2030-01-31: its midnight UTC\)\n$/],
      [['--expires', '2001-01-01T00:00:00Z'], 1, /^permgraph: expiry 2001-01-01T00:00:00\.000000Z is not in the future \(the database's time is [^)]*\); nothing was written\n$/],
      [['--expires-in', '5x'], 2, /^permgraph: --expires-in "5x" is not a duration: digits and a unit, s, m, h or d \(e\.g\. 90m, 12h, 7d, 1d12h\)\n$/],
      [['--expires-in', '0m'], 2, /^permgraph: --expires-in "0m" is not longer than zero\n$/],
      [['--expires', '2031-01-01T00:00:00Z', '--expires-in', '1h'], 2, /^permgraph: give --expires or --expires-in, not both\n$/],
    ];
    await Promise.all(
      cases.map(async ([flags, code, message]) => {
        const result = await cli('grant', 'ann', 'eng', 'write', ...flags);
        expect(result.code, flags.join(' ')).toBe(code);
        expect(result.stderr, flags.join(' ')).toMatch(message);
        expect(result.stdout, flags.join(' ')).toBe('');
      }),
    );
    expect(await grants()).toEqual(before);
  });

  it('grant --help describes both flags', async () => {
    const help = (await runCli(['grant', '--help'])).stdout;
    const flat = help.replace(/\s+/g, ' ');
    expect(flat).toContain('--expires <time> the grant ends at TIME, an ISO 8601 timestamp with a time zone, e.g. 2030-01-31T18:00:00Z (default: never)');
    expect(flat).toContain("--expires-in <duration> the grant ends DURATION from now (the database's clock): digits and a unit s, m, h or d, e.g. 90m, 12h, 7d, 1d12h");
  });

  it('sync-grants reads expiresAt per grant, and refuses a bad one naming the entry', async () => {
    await loadGraph(db, graph);
    const file = path.join(scratch, 'grants.json');
    await writeFile(file, JSON.stringify([{ tail: 'ann', head: 'eng', level: 'read', expiresAt: '2032-01-01T00:00:00Z' }, { tail: 'bob', head: 'spec', level: 1 }]));
    expect((await cli('sync-grants', 'ldap', file)).stdout).toMatch(/^synced source ldap: 2 inserted, 0 updated, 0 deleted; token \d+\n$/);
    await writeFile(file, JSON.stringify([{ tail: 'ann', head: 'eng', level: 'read', expiresAt: '2033-01-01T00:00:00Z' }, { tail: 'bob', head: 'spec', level: 1 }]));
    expect((await cli('sync-grants', 'ldap', file)).stdout).toMatch(/^synced source ldap: 0 inserted, 1 updated, 0 deleted;/);
    const before = await grants();
    expect(before.filter((r: { source: string }) => r.source === 'ldap').map((r: { expires_at: Date | null }) => r.expires_at)).toEqual([
      new Date('2033-01-01T00:00:00Z'),
      null,
    ]);
    await writeFile(file, JSON.stringify([{ tail: 'ann', head: 'eng', level: 'read', expiresAt: '2020-01-01T00:00:00Z' }]));
    const refused = await cli('sync-grants', 'ldap', file);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^permgraph: sync-grants: grant #1 \(ann -> eng\) expires at 2020-01-01T00:00:00\.000000Z is not in the future .*; nothing was written\n$/);
    await writeFile(file, JSON.stringify([{ tail: 'ann', head: 'eng', level: 'read', expiresAt: 'someday' }]));
    expect((await cli('sync-grants', 'ldap', file)).stderr).toMatch(/^permgraph: sync-grants: grant #1: "expiresAt" "someday" is neither a timestamp with a time zone offset nor a date/);
    expect(await grants()).toEqual(before);
  });

  it('grant --expires and sync-grants write the moment typed to the microsecond, whatever the session\'s time zone, and say it', async () => {
    await loadGraph(db, graph);
    const stored = async (source: string) =>
      (await db.query(sql`select to_char(expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as at from permgraph.grants where source = ${source} order by tail_id`)).map((r: { at: string }) => r.at);
    const file = path.join(scratch, 'exact.json');
    await db.query(sql`alter database ${sql.ident(name)} set timezone = 'America/St_Johns'`);
    try {
      const granted = await cli('grant', 'ann', 'eng', 'write', '--expires', '2100-01-01T05:45:00.00025+05:45', '--source', 'typed');
      expect(granted).toMatchObject({ code: 0, stderr: '' });
      expect(granted.stdout).toMatch(/^granted ann -\[write\]-> eng \(source typed, until 2100-01-01T00:00:00\.000250Z\); token \d+\n$/);
      expect(await stored('typed')).toEqual(['2100-01-01T00:00:00.000250Z']);
      const json = JSON.parse((await cli('--json', 'grant', 'ann', 'eng', 'write', '--expires', '2100-01-01T00:00:00.000001Z', '--source', 'typed')).stdout);
      expect(json).toMatchObject({ tail: 'ann', head: 'eng', level: 2, source: 'typed', expiresAt: '2100-01-01T00:00:00.000001Z' });
      expect(Object.keys(json).filter((key) => key.endsWith('Exact'))).toEqual([]);
      expect(await stored('typed')).toEqual(['2100-01-01T00:00:00.000001Z']);
      await writeFile(file, JSON.stringify([{ tail: 'ann', head: 'eng', level: 'read', expiresAt: '2100-01-01T00:00:00.0007Z' }, { tail: 'bob', head: 'eng', level: 1, expiresAt: '2099-12-31T20:30:00.000001-03:30' }]));
      expect((await cli('sync-grants', 'typed-sync', file)).stdout).toMatch(/^synced source typed-sync: 2 inserted, 0 updated, 0 deleted;/);
      expect(await stored('typed-sync')).toEqual(['2100-01-01T00:00:00.000700Z', '2100-01-01T00:00:00.000001Z']);
      // moved by 450 microseconds: an update
      await writeFile(file, JSON.stringify([{ tail: 'ann', head: 'eng', level: 'read', expiresAt: '2100-01-01T00:00:00.00025Z' }, { tail: 'bob', head: 'eng', level: 1, expiresAt: '2099-12-31T20:30:00.000001-03:30' }]));
      expect((await cli('sync-grants', 'typed-sync', file)).stdout).toMatch(/^synced source typed-sync: 0 inserted, 1 updated, 0 deleted;/);
      expect(await stored('typed-sync')).toEqual(['2100-01-01T00:00:00.000250Z', '2100-01-01T00:00:00.000001Z']);
    } finally {
      await db.query(sql`alter database ${sql.ident(name)} reset timezone`);
    }
  });

  it('list, who and explain show valid_until where a row has one (JSON: validUntil)', async () => {
    await loadGraph(db, graph);
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level) values ('ann', 'eng', 2)`);
    await refresh(db);
    const ahead = new Date(Math.floor((Date.now() + HOUR) / 1000) * 1000);
    const ago = new Date(Math.floor((Date.now() - HOUR) / 1000) * 1000);
    await db.query(sql`update permgraph.permissions set valid_until = ${ahead} where user_id = 'ann' and target_id = 'eng'`);
    await db.query(sql`update permgraph.permissions set valid_until = ${ago} where user_id = 'bob' and target_id = 'eng'`);
    const iso = exact(ahead);

    expect((await cli('list', 'ann')).stdout).toBe(`ann\tuser\tmanage\neng\tgroup\twrite until ${iso}\nspec\tobject\twrite until ${iso}\n`);
    expect(JSON.parse((await cli('--json', 'list', 'ann', '--kind', 'object')).stdout)).toEqual({
      items: [{ id: 'spec', kind: 'object', level: 2, validUntil: iso }],
      next: null,
    });
    // bob's row has expired: bob is nowhere
    expect((await cli('list', 'bob')).stdout).toBe('bob\tuser\tmanage\n');
    expect((await cli('who', 'spec')).stdout).toBe(`ann\twrite until ${iso}\n`);
    expect(JSON.parse((await cli('--json', 'who', 'spec')).stdout)).toEqual({ items: [{ id: 'ann', level: 2, validUntil: iso }], next: null });

    expect((await cli('explain', 'ann', 'spec', '--level', 'write')).stdout).toBe(
      [
        `ann may write spec (best level: write, through its owner, until ${exact(ahead)})`,
        'path:',
        '  ann -[write, default]-> eng',
        '  eng -[manage, owner]-> spec',
        `row ann -> eng: write and what it owns, valid until ${exact(ahead)}`,
        '',
      ].join('\n'),
    );
    const bob = await cli('explain', 'bob', 'spec');
    expect(bob.code).toBe(0);
    expect(bob.stdout.split('\n').slice(0, 1)).toEqual([
      `bob may not access spec: access expired at ${exact(ago)} and awaits recomputation (refused until a worker recomputes the permission rows; the path below then gives read)`,
    ]);
    expect(bob.stdout).toContain(`\nrow bob -> eng: read and what it owns, expired at ${exact(ago)}, awaiting recomputation\n`);
    expect(JSON.parse((await cli('--json', 'explain', 'bob', 'spec')).stdout)).toMatchObject({
      allowed: false,
      reason: 'expired',
      expiredAt: exact(ago),
      validUntil: null,
      rows: [{ target: 'eng', level: 1, traverseOwned: true, validUntil: exact(ago), expired: true }],
    });
  });

  it('explain shows the expiry of the grants on its path', async () => {
    await loadGraph(db, graph);
    await db.query(sql`insert into permgraph.grants (tail_id, head_id, level, expires_at) values ('ann', 'eng', 3, '2034-02-03T04:05:06Z')`);
    expect((await cli('explain', 'ann', 'eng')).stdout).toContain('\n  ann -[manage, default, until 2034-02-03T04:05:06.000000Z]-> eng\n');
  });

  it('explain says which expired grant ended the access and when, before and after the worker recomputes the rows', async () => {
    const second = (ms: number) => new Date(Math.floor(ms / 1000) * 1000);
    const ago = second(Date.now() - 2 * HOUR);
    const before = second(Date.now() - 3 * HOUR);
    await loadGraph(db, {
      nodes: [u('alice'), g('g1'), g('p'), o('spec', 'p')],
      grants: [grant('alice', 3, 'g1'), expiring('g1', 1, 'p', ago, 'member')],
    });
    await refresh(db);
    expect((await cli('explain', 'alice', 'spec', '--level', 'read')).stdout).toBe(
      [
        'alice may not read spec: no path',
        `read access ended at ${exact(ago)}, when grant g1 -[read]-> p (source member) expired`,
        `path until ${exact(ago)} (through its owner):`,
        '  alice -[manage, default]-> g1',
        `  g1 -[read, member, until ${exact(ago)}]-> p`,
        '  p -[manage, owner]-> spec',
        '',
      ].join('\n'),
    );
    const hint = {
      at: exact(ago), level: 1, via: 'owner', traversePath: null,
      path: [
        { tail: 'alice', head: 'g1', level: 3, source: 'default', expiresAt: null },
        { tail: 'g1', head: 'p', level: 1, source: 'member', expiresAt: exact(ago) },
        { tail: 'p', head: 'spec', level: 3, source: 'owner', expiresAt: null },
      ],
      expiredGrants: [{ tail: 'g1', head: 'p', level: 1, source: 'member', expiresAt: exact(ago) }],
      endedBy: 1,
    };
    expect(JSON.parse((await cli('--json', 'explain', 'alice', 'spec')).stdout)).toMatchObject({ allowed: false, reason: 'no path', accessEnded: hint });

    // a level that ended while a lower one remains; two expired grants on the route, the first ended it;
    // a source with a control character is shown escaped
    await loadGraph(db, {
      nodes: [u('cy'), g('lead'), g('team'), o('doc', 'team')],
      grants: [grant('cy', 1, 'team', 'ldap'), expiring('cy', 3, 'lead', ago, 'admin\tui'), expiring('lead', 3, 'team', before, 'sync')],
    });
    await refresh(db);
    expect((await cli('explain', 'cy', 'doc', '--level', 'write')).stdout).toBe(
      [
        'cy may not write doc: level too low (best: read, through its owner)',
        `write access ended at ${exact(before)}, when grant lead -[manage]-> team (source sync) expired`,
        `also expired on that route since: grant cy -[manage]-> lead (source admin\\tui) at ${exact(ago)}`,
        'path:',
        '  cy -[read, ldap]-> team',
        '  team -[manage, owner]-> doc',
        `path until ${exact(before)} (through its owner):`,
        `  cy -[manage, admin\\tui, until ${exact(ago)}]-> lead`,
        `  lead -[manage, sync, until ${exact(before)}]-> team`,
        '  team -[manage, owner]-> doc',
        '',
      ].join('\n'),
    );
    expect((await cli('explain', 'cy', 'doc')).stdout).toBe('cy may read doc (best level: read, through its owner)\npath:\n  cy -[read, ldap]-> team\n  team -[manage, owner]-> doc\n');

    // two grants of the route expired less than a millisecond apart: only the first ended the access
    // (the database keeps microseconds, a Date milliseconds)
    await loadGraph(db, {
      nodes: [u('hal'), g('lead'), g('team'), o('doc', 'team')],
      grants: [expiring('hal', 2, 'lead', ago), expiring('lead', 2, 'team', ago)],
    });
    await db.query(sql`update permgraph.grants set expires_at = ${ago}::timestamptz + interval '600 microseconds' where tail_id = 'hal'`);
    await db.query(sql`update permgraph.grants set expires_at = ${ago}::timestamptz + interval '100 microseconds' where tail_id = 'lead'`);
    await refresh(db);
    // (printed to the microsecond, as the grants table holds them)
    const micros = (n: number) => ago.toISOString().replace(/Z$/, `${String(n).padStart(3, '0')}Z`);
    const hal = await cli('explain', 'hal', 'doc', '--level', 'write');
    expect(hal.stdout.split('\n').slice(0, 3)).toEqual([
      'hal may not write doc: no path',
      `write access ended at ${micros(100)}, when grant lead -[write]-> team (source default) expired`,
      `also expired on that route since: grant hal -[write]-> lead (source default) at ${micros(600)}`,
    ]);
    expect(hal.stdout).toContain(`\n  hal -[write, default, until ${micros(600)}]-> lead\n  lead -[write, default, until ${micros(100)}]-> team\n`);
    // (JSON: the same keys as the library's Explanation, each moment exact; its …Exact fields are not repeated)
    const halJson = (await cli('--json', 'explain', 'hal', 'doc', '--level', 'write')).stdout;
    expect(JSON.parse(halJson).accessEnded).toMatchObject({
      at: micros(100),
      expiredGrants: [{ tail: 'lead', expiresAt: micros(100) }, { tail: 'hal', expiresAt: micros(600) }],
    });
    expect(halJson).not.toContain('Exact');

    // before the recomputation: 'expired', and the same hint
    await loadGraph(db, { nodes: [u('fay'), g('eng')], grants: [expiring('fay', 2, 'eng', new Date(Date.now() + HOUR))] });
    await refresh(db);
    await db.query(sql`update permgraph.grants set expires_at = ${ago} where tail_id = 'fay'`);
    await db.query(sql`update permgraph.permissions set valid_until = ${ago} where user_id = 'fay' and target_id = 'eng'`);
    const lines = async () => (await cli('explain', 'fay', 'eng', '--level', 'write')).stdout.split('\n').slice(0, 2);
    const ended = `write access ended at ${exact(ago)}, when grant fay -[write]-> eng (source default) expired`;
    expect(await lines()).toEqual([
      `fay may not write eng: access expired at ${exact(ago)} and awaits recomputation (the grants that gave it have ended: no path is left)`,
      ended,
    ]);
    await applyChanges(db);
    expect(await lines()).toEqual(['fay may not write eng: no path', ended]);
  });

  it('list, who and audit print moments to the microsecond, as the database stores them, in UTC whatever its time zone (JSON too)', async () => {
    await loadGraph(db, { ...graph, nodes: [...graph.nodes, g('far')] });
    // a grant whose expiry moves by 450 microseconds within one millisecond, with its level
    await db.tx(async (tx) => {
      await tx.query(sql`select set_config('permgraph.actor', 'exact-cli', true)`);
      await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level, source, expires_at) values ('ann', 'eng', 1, 'exact', '2100-01-01T00:00:00.000250Z')`);
    });
    await db.tx(async (tx) => {
      await tx.query(sql`select set_config('permgraph.actor', 'exact-cli', true)`);
      await tx.query(sql`update permgraph.grants set level = 2, expires_at = '2100-01-01T00:00:00.000700Z' where source = 'exact'`);
    });
    // an entry written by hand at a moment of our choosing, with trash times at both ends of the years
    await db.query(sql`insert into permgraph.audit_log (at, actor, action, head_id, node_kind, old_trash_at, new_trash_at) values
      ('2030-01-31T18:00:00.000001Z', 'exact-cli', 'set_trash', 'far', 'group', '0001-01-01T00:00:00.000001Z', '9999-12-31T23:00:00.000700Z')`);
    await refresh(db);
    // the times of the entries the triggers wrote (now()), as the database writes them in UTC
    const written: string[] = (await db.query(sql`
      select to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as at from permgraph.audit_log where actor = 'exact-cli' and action <> 'set_trash' order by id`)).map((r: { at: string }) => r.at);
    expect(written).toHaveLength(2);
    // the CLI's sessions in a zone east of UTC, whose offset was +05:41:16 in year 1 and puts the end of 9999 in 10000
    await db.query(sql`alter database ${sql.ident(name)} set timezone = 'Asia/Kathmandu'`);
    try {
      expect((await cli('list', 'ann')).stdout).toBe(
        'ann\tuser\tmanage\neng\tgroup\twrite until 2100-01-01T00:00:00.000700Z\nspec\tobject\twrite until 2100-01-01T00:00:00.000700Z\n',
      );
      expect(JSON.parse((await cli('--json', 'list', 'ann', '--kind', 'group')).stdout)).toEqual({
        items: [{ id: 'eng', kind: 'group', level: 2, validUntil: '2100-01-01T00:00:00.000700Z' }],
        next: null,
      });
      expect((await cli('who', 'spec')).stdout).toBe('ann\twrite until 2100-01-01T00:00:00.000700Z\nbob\tread\n');
      expect(JSON.parse((await cli('--json', 'who', 'spec')).stdout)).toEqual({
        items: [{ id: 'ann', level: 2, validUntil: '2100-01-01T00:00:00.000700Z' }, { id: 'bob', level: 1, validUntil: null }],
        next: null,
      });
      // (time, action and what changed: the actor column names the test server's login too)
      const lines = (await cli('audit', '--actor', 'exact-cli')).stdout.trimEnd().split('\n').map((line) => line.split('\t').filter((_, i) => i !== 0 && i !== 2).join('\t'));
      expect(lines).toEqual([
        `${written[0]}\tgrant\tann -> eng level 1 until 2100-01-01T00:00:00.000250Z (source exact)`,
        `${written[1]}\tchange_level\tann -> eng level 1 => 2 expires 2100-01-01T00:00:00.000250Z => 2100-01-01T00:00:00.000700Z (source exact)`,
        '2030-01-31T18:00:00.000001Z\tset_trash\tgroup far trash_at 0001-01-01T00:00:00.000001Z => 9999-12-31T23:00:00.000700Z',
      ]);
      const json = JSON.parse((await cli('--json', 'audit', '--actor', 'exact-cli')).stdout);
      expect(json.entries).toMatchObject([
        { action: 'grant', at: written[0], oldExpiresAt: null, newExpiresAt: '2100-01-01T00:00:00.000250Z' },
        { action: 'change_level', at: written[1], oldExpiresAt: '2100-01-01T00:00:00.000250Z', newExpiresAt: '2100-01-01T00:00:00.000700Z' },
        { action: 'set_trash', at: '2030-01-31T18:00:00.000001Z', oldTrashAt: '0001-01-01T00:00:00.000001Z', newTrashAt: '9999-12-31T23:00:00.000700Z' },
      ]);
      // the JSON keeps the API's keys: the exact text in place of each Date, no ...Exact keys
      expect(Object.keys(json.entries[2]).filter((key) => key.endsWith('Exact'))).toEqual([]);
      // the time printed bounds --since / --until to the microsecond
      const between = await cli('audit', '--actor', 'exact-cli', '--since', '2030-01-31T18:00:00.000001Z', '--until', '2030-01-31T18:00:00.000002Z');
      expect(between.stdout.split('\t')[3]).toBe('set_trash');
      expect((await cli('audit', '--actor', 'exact-cli', '--since', '2030-01-31T18:00:00.000002Z', '--until', '2031-01-01T00:00:00Z')).stdout).toBe('no audit entries match\n');
      // a bound without a zone (here Kathmandu's 18:00:00.000001Z) is refused, not read in the session's zone
      const zoneless = await cli('audit', '--actor', 'exact-cli', '--since', '2030-01-31 23:45:00.000001');
      expect(zoneless).toMatchObject({ code: 1, stdout: '' });
      expect(zoneless.stderr).toBe('permgraph: since "2030-01-31 23:45:00.000001" is neither a timestamp with a time zone offset nor a date (ISO 8601, e.g. 2030-01-31T12:00:00Z, or 2030-01-31: its midnight UTC)\n');
    } finally {
      await db.query(sql`alter database ${sql.ident(name)} reset timezone`);
    }
  });

  it('audit shows the expiries of grants and the change_expiry action', async () => {
    await loadGraph(db, graph);
    await cli('grant', 'ann', 'eng', 'read', '--expires', '2035-01-01T00:00:00Z', '--actor', 'expiry-cli');
    await cli('grant', 'ann', 'eng', 'read', '--expires', '2036-01-01T00:00:00Z', '--actor', 'expiry-cli');
    await cli('revoke', 'ann', 'eng', '--actor', 'expiry-cli');
    const lines = (await cli('audit', '--actor', 'expiry-cli')).stdout.trimEnd().split('\n').map((line) => line.split('\t').slice(3).join('\t'));
    expect(lines).toEqual([
      'grant\tann -> eng level 1 until 2035-01-01T00:00:00.000000Z (source default)',
      'change_expiry\tann -> eng level 1 expires 2035-01-01T00:00:00.000000Z => 2036-01-01T00:00:00.000000Z (source default)',
      'revoke\tann -> eng level 1 until 2036-01-01T00:00:00.000000Z (source default)',
    ]);
    const json = JSON.parse((await cli('--json', 'audit', '--actor', 'expiry-cli', '--action', 'change_expiry')).stdout);
    expect(json.entries).toMatchObject([{ action: 'change_expiry', oldExpiresAt: '2035-01-01T00:00:00.000000Z', newExpiresAt: '2036-01-01T00:00:00.000000Z' }]);
  });
});
