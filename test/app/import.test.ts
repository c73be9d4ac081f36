import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { importGraph, ImportRejectedError, type ImportOptions } from '../../src/app/import/index.ts';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { InvalidInputError, PermissionDeniedError } from '../../src/errors.ts';
import { withRightsHint } from '../../src/cli/action.ts';
import * as model from '../reference/model.ts';
import type { RefGraph, RefNode } from '../reference/model.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { createEmptyDatabase, createTestDatabase } from '../helpers/database.ts';
import { createLogin } from '../helpers/logins.ts';
import { migrate } from '../../src/migrations/migrate.ts';
import { graphArbitrary, loadGraph, readPermissions, readTrashedGroups } from '../helpers/graph.ts';

const SIZE = { users: 8, groups: 10, objects: 6, grants: 30 };
const scratch = await mkdtemp(path.join(tmpdir(), 'permgraph-import-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));
let fileCounter = 0;

function field(value: string | null): string {
  if (value === null) return '';
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

/** Writes the graph as the CSV pair; nodes in reverse order, so owners come after what they own. */
async function writeCsvs(graph: RefGraph): Promise<{ nodes: string; grants: string }> {
  const dir = path.join(scratch, `g${fileCounter++}`);
  const { mkdir } = await import('node:fs/promises');
  await mkdir(dir);
  const nodeLines = [...graph.nodes].reverse().map((n) => [n.id, n.kind, n.ownerId, n.trashAt?.toISOString() ?? null].map(field).join(','));
  const grantLines = graph.grants.map((g) => [g.tailId, g.headId, String(g.level), g.source].map(field).join(','));
  const nodes = path.join(dir, 'nodes.csv');
  const grants = path.join(dir, 'grants.csv');
  await writeFile(nodes, ['id,kind,owner_id,trash_at', ...nodeLines].join('\n') + '\n');
  await writeFile(grants, ['tail_id,head_id,level,source', ...grantLines].join('\n') + '\n');
  return { nodes, grants };
}

async function writeText(name: string, text: string | Buffer): Promise<string> {
  const file = path.join(scratch, `${fileCounter++}-${name}`);
  await writeFile(file, text);
  return file;
}

interface Stored {
  nodes: RefNode[];
  grants: model.RefGrant[];
}

async function readGraph(db: Queryable): Promise<Stored> {
  const nodes: { id: string; kind: model.Kind; owner_id: string | null; trash_at: Date | null }[] = await db.query(
    sql`select id, kind, owner_id, trash_at from permgraph.nodes order by id`,
  );
  const grants: { tail_id: string; head_id: string; level: model.Level; source: string }[] = await db.query(
    sql`select tail_id, head_id, level, source from permgraph.grants order by tail_id, head_id, source`,
  );
  return {
    nodes: nodes.map((n) => ({ id: n.id, kind: n.kind, ownerId: n.owner_id, trashAt: n.trash_at })),
    grants: grants.map((g) => ({ tailId: g.tail_id, headId: g.head_id, level: g.level, source: g.source })),
  };
}

function sorted(graph: RefGraph): Stored {
  return {
    nodes: [...graph.nodes].sort((a, b) => model.compareIds(a.id, b.id)),
    grants: [...graph.grants].sort(
      (a, b) => model.compareIds(a.tailId, b.tailId) || model.compareIds(a.headId, b.headId) || model.compareIds(a.source, b.source),
    ),
  };
}

async function expectImported(db: Queryable, graph: RefGraph): Promise<void> {
  expect(await readGraph(db)).toEqual(sorted(graph));
  expect(await readPermissions(db)).toEqual(model.computePermissions(graph));
  expect(await readTrashedGroups(db)).toEqual(model.computeTrashedGroups(graph));
  const [{ pending }] = await db.query(sql`select count(*)::int as pending from permgraph.changes`);
  expect(pending).toBe(0);
}

async function emptyGraph(db: Queryable): Promise<void> {
  await loadGraph(db, { nodes: [], grants: [] });
}

async function snapshotCounts(db: Queryable) {
  const [row] = await db.query(sql`
    select (select count(*) from permgraph.nodes)::int as nodes, (select count(*) from permgraph.grants)::int as grants,
           (select count(*) from permgraph.permissions)::int as permissions, (select count(*) from permgraph.audit_log)::int as audit,
           (select count(*) from permgraph.import_nodes)::int as staged_nodes, (select count(*) from permgraph.import_grants)::int as staged_grants,
           (select count(*) from permgraph.changes)::int as changes`);
  return row;
}

describe('permgraph import', async () => {
  const { db } = await createTestDatabase();

  it('CSV import of random graphs equals the input and the reference model (owners after what they own)', async () => {
    await fc.assert(
      fc.asyncProperty(graphArbitrary(SIZE), fc.integer({ min: 1, max: 40 }), async (graph, batchSize) => {
        await emptyGraph(db);
        const files = await writeCsvs(graph);
        const summary = await importGraph(db, { nodes: { file: files.nodes }, grants: { file: files.grants }, batchSize });
        expect(summary).toMatchObject({ loaded: true, invalid: 0, problems: [] });
        expect(summary.nodes).toMatchObject({ read: graph.nodes.length, inserted: graph.nodes.length });
        expect(summary.grants).toMatchObject({ read: graph.grants.length, inserted: graph.grants.length });
        await expectImported(db, graph);
      }),
      { numRuns: 30 },
    );
  });

  it('query import over app tables equals the input and the reference model', async () => {
    await db.query(sql`
      create table public.app_nodes (key text, what text, parent text, trash timestamptz);
      create table public.app_grants (who text, what text, lvl integer, origin text)`);
    await fc.assert(
      fc.asyncProperty(graphArbitrary(SIZE), fc.integer({ min: 1, max: 40 }), async (graph, batchSize) => {
        await emptyGraph(db);
        await db.query(sql`truncate public.app_nodes, public.app_grants`);
        for (const n of graph.nodes) {
          await db.query(sql`insert into public.app_nodes values (${n.id}, ${n.kind}, ${n.ownerId}, ${n.trashAt})`);
        }
        for (const g of graph.grants) {
          await db.query(sql`insert into public.app_grants values (${g.tailId}, ${g.headId}, ${g.level}, ${g.source})`);
        }
        const summary = await importGraph(db, {
          nodes: { query: 'select key as id, what as kind, parent as owner_id, trash as trash_at from public.app_nodes' },
          grants: { query: 'select who as tail_id, what as head_id, lvl as level, origin as source from public.app_grants' },
          batchSize,
        });
        expect(summary).toMatchObject({ loaded: true, invalid: 0 });
        await expectImported(db, graph);
      }),
      { numRuns: 20 },
    );
  });

  it('a query page never splits rows sharing a key; rows with a null key are reported, not dropped', async () => {
    await emptyGraph(db);
    const summary = await importGraph(db, {
      nodes: { query: "select id, 'user' as kind, null as owner_id from (values ('a'), ('b'), ('b'), ('b'), ('c'), (null)) v(id)" },
      grants: { query: "select t as tail_id, h as head_id, 1 as level from (values ('a', 'b'), ('a', 'b'), ('b', 'c'), ('c', null)) v(t, h)" },
      batchSize: 1,
      onInvalid: 'skip',
    });
    expect(summary.nodes).toMatchObject({ read: 6, invalid: 3, inserted: 3 });
    expect(summary.grants).toMatchObject({ read: 4, invalid: 2, inserted: 2 });
    expect(summary.problems.map((p) => `${p.table} ${p.origin}: ${p.problem}`).sort()).toEqual([
      'grants grant "a" -> "b" (source "default"): duplicate grant "a" -> "b" (source "default"; the query returns it more than once)',
      'grants grant "c" -> null (source "default"): head_id is null',
      'nodes id "b": duplicate id "b" (the query returns it more than once)',
      'nodes id "b": duplicate id "b" (the query returns it more than once)',
      'nodes row with null id (kind "user", owner_id null): id is null',
    ]);
  });

  it('interrupted after K batches, then resumed: the same state as a clean import', async () => {
    await fc.assert(
      fc.asyncProperty(graphArbitrary(SIZE), fc.integer({ min: 1, max: 8 }), fc.nat(), fc.boolean(), async (graph, batchSize, k, useQuery) => {
        await emptyGraph(db);
        await db.query(sql`truncate public.app_nodes, public.app_grants`);
        const files = await writeCsvs(graph);
        let options: ImportOptions;
        if (useQuery) {
          await db.query(sql`insert into public.app_nodes select * from unnest(${graph.nodes.map((n) => n.id)}::text[], ${graph.nodes.map((n) => n.kind)}::text[],
            ${graph.nodes.map((n) => n.ownerId)}::text[], ${graph.nodes.map((n) => n.trashAt)}::timestamptz[])`);
          await db.query(sql`insert into public.app_grants select * from unnest(${graph.grants.map((g) => g.tailId)}::text[], ${graph.grants.map((g) => g.headId)}::text[],
            ${graph.grants.map((g) => g.level)}::int[], ${graph.grants.map((g) => g.source)}::text[])`);
          options = {
            nodes: { query: 'select key as id, what as kind, parent as owner_id, trash as trash_at from public.app_nodes' },
            grants: { query: 'select who as tail_id, what as head_id, lvl as level, origin as source from public.app_grants' },
            name: `resume-${fileCounter++}`,
            batchSize,
          };
        } else {
          options = { nodes: { file: files.nodes }, grants: { file: files.grants }, batchSize };
        }
        const totalBatches = Math.ceil(graph.nodes.length / batchSize) + Math.ceil(graph.grants.length / batchSize);
        const crashAt = (k % totalBatches) + 1;
        const crash = new Error('simulated crash');
        await expect(
          importGraph(db, { ...options, afterBatch: (n) => { if (n === crashAt) throw crash; } }),
        ).rejects.toBe(crash);
        expect((await readGraph(db)).nodes).toEqual([]); // nothing loaded yet: only staged
        await expect(importGraph(db, options)).rejects.toThrow(/was interrupted .*--resume/);
        const summary = await importGraph(db, { ...options, resume: true });
        expect(summary).toMatchObject({ resumed: true, loaded: true, invalid: 0 });
        expect(summary.nodes.read).toBe(graph.nodes.length);
        expect(summary.grants.read).toBe(graph.grants.length);
        await expectImported(db, graph);
      }),
      { numRuns: 20 },
    );
  });

  it('a resume refuses a file rewritten with other rows of the same size, its modification time put back (cp -p, rsync -t)', async () => {
    await emptyGraph(db);
    const file = await writeText('nodes.csv', 'id,kind,owner_id\naaaa,user,\nbbbb,user,\ncccc,user,\n');
    const crash = new Error('simulated crash');
    await expect(importGraph(db, { nodes: { file }, name: 'rewritten', batchSize: 1, afterBatch: (n) => { if (n === 1) throw crash; } })).rejects.toBe(crash);
    const { mtime, atime } = await stat(file);
    await writeFile(file, 'id,kind,owner_id\nxxxx,user,\nyyyy,user,\nzzzz,user,\n');
    await utimes(file, atime, mtime);
    await expect(importGraph(db, { nodes: { file }, name: 'rewritten', resume: true })).rejects.toThrow(
      'import "rewritten" was started with other inputs (or its files changed since); use --restart to start over',
    );
    expect((await readGraph(db)).nodes).toEqual([]);
    await importGraph(db, { nodes: { file }, name: 'rewritten', restart: true });
    await expectImported(db, { nodes: [u('xxxx'), u('yyyy'), u('zzzz')], grants: [] });
  });

  it('a finished import drops only its own staged rows: another run, interrupted while staging, keeps its rows and resumes', async () => {
    await emptyGraph(db);
    const node = (id: string, kind: model.Kind, ownerId: string | null = null): RefNode => ({ id, kind, ownerId, trashAt: null });
    const first: RefGraph = {
      nodes: [node('ua', 'user'), node('ga', 'group', 'ua'), node('oa', 'object', 'ga'), node('ob', 'object', 'ga')],
      grants: [{ tailId: 'ua', headId: 'oa', level: 1, source: 's' }],
    };
    const second: RefGraph = {
      nodes: [node('ub', 'user'), node('gb', 'group', 'ub')],
      grants: [{ tailId: 'ub', headId: 'gb', level: 2, source: 's' }],
    };
    const firstFiles = await writeCsvs(first);
    const secondFiles = await writeCsvs(second);
    const staged = async (run: string) => {
      const [row] = await db.query(sql`
        select (select count(*) from permgraph.import_nodes where run = ${run})::int as nodes,
               (select count(*) from permgraph.import_grants where run = ${run})::int as grants`);
      return row;
    };
    const options = { nodes: { file: firstFiles.nodes }, grants: { file: firstFiles.grants }, name: 'staged-first', batchSize: 2 };
    const crash = new Error('simulated crash');
    await expect(importGraph(db, { ...options, afterBatch: (n) => { if (n === 1) throw crash; } })).rejects.toBe(crash);
    expect(await staged('staged-first')).toEqual({ nodes: 2, grants: 0 });
    // Another import runs to the end meanwhile.
    await expect(importGraph(db, { nodes: { file: secondFiles.nodes }, grants: { file: secondFiles.grants }, name: 'second' })).resolves.toMatchObject({
      loaded: true,
      invalid: 0,
    });
    expect(await staged('second')).toEqual({ nodes: 0, grants: 0 });
    expect(await staged('staged-first')).toEqual({ nodes: 2, grants: 0 });
    await expect(importGraph(db, { ...options, resume: true })).resolves.toMatchObject({ loaded: true, resumed: true, invalid: 0 });
    await expectImported(db, { nodes: [...first.nodes, ...second.nodes], grants: [...first.grants, ...second.grants] });
    expect(await snapshotCounts(db)).toMatchObject({ staged_nodes: 0, staged_grants: 0 });
  });

  it('a finished import does not wait for the staging tables: with another session reading them, it deletes its rows instead of truncating', async () => {
    await emptyGraph(db);
    const graph: RefGraph = {
      nodes: [{ id: 'uc', kind: 'user', ownerId: null, trashAt: null }, { id: 'gc', kind: 'group', ownerId: 'uc', trashAt: null }],
      grants: [{ tailId: 'uc', headId: 'gc', level: 1, source: 's' }],
    };
    const files = await writeCsvs(graph);
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => (locked = resolve));
    const reader = db.tx(async (tx) => {
      await tx.query(sql`lock table permgraph.import_nodes in access share mode`);
      locked();
      await released;
    });
    await isLocked;
    try {
      await expect(importGraph(db, { nodes: { file: files.nodes }, grants: { file: files.grants }, name: 'beside-a-reader' })).resolves.toMatchObject({
        loaded: true,
        invalid: 0,
      });
    } finally {
      release();
      await reader;
    }
    await expectImported(db, graph);
    expect(await snapshotCounts(db)).toMatchObject({ staged_nodes: 0, staged_grants: 0 });
  });

  it('dry run writes nothing and reports what would change', async () => {
    await emptyGraph(db);
    const files = await writeCsvs({
      nodes: [u('ann'), g('team', 'ann')],
      grants: [grant('ann', 2, 'team', 'x')],
    });
    await importGraph(db, { nodes: { file: files.nodes } });
    const before = await snapshotCounts(db);
    const runs = await db.query(sql`select name, phase, summary from permgraph.import_runs order by name`);
    const bad = await writeText('grants.csv', 'tail_id,head_id,level\nann,team,3\nann,nobody,1\n');
    const summary = await importGraph(db, { nodes: { file: files.nodes }, grants: { file: bad }, dryRun: true, onInvalid: 'skip' });
    expect(summary).toMatchObject({ dryRun: true, loaded: false, invalid: 1, refresh: null });
    expect(summary.nodes).toMatchObject({ read: 2, unchanged: 2, inserted: 0 });
    expect(summary.grants).toMatchObject({ read: 2, invalid: 1, inserted: 1 });
    const problems = [
      { table: 'grants', origin: `${path.basename(bad)} line 3`, line: 3, problem: 'grant head "nobody" does not exist (neither in the input nor in the database)' },
    ];
    expect(summary.problems).toEqual(problems);
    // By default (onInvalid 'fail') a dry run counts nothing as loadable once a row is invalid.
    const failing = await importGraph(db, { nodes: { file: files.nodes }, grants: { file: bad }, dryRun: true });
    expect(failing).toMatchObject({ dryRun: true, loaded: false, invalid: 1, onInvalid: 'fail', problems });
    expect(await snapshotCounts(db)).toEqual(before);
    expect(await db.query(sql`select name, phase, summary from permgraph.import_runs order by name`)).toEqual(runs);
  });

  const badNodes = [
    'id,kind,owner_id',
    'u1,user,',             // line 2 ok
    'x,robot,',             // line 3 bad kind
    'u1,user,',             // line 4 duplicate
    'doc,object,g1',        // line 5 ok (owner later)
    'g1,group,u1',          // line 6 ok
    'd2,object,doc',        // line 7 owner is an object
    'c1,group,c2',          // line 8 cycle
    'c2,group,c1',          // line 9 cycle
    'c3,group,c2',          // line 10 below a cycle
    'lost,group,nobody',    // line 11 unknown owner
    'old,user,',            // line 12 kind change (old is a group in the database)
    'self,group,self',      // line 13 a group owning itself
    'me,user,me',           // line 14 ok: a user may own itself
    '"q,uoted",user,',      // line 15 ok
    'oldfile,group,',       // line 16 kind change (oldfile is an object in the database)
  ].join('\n');
  const badGrants = [
    'tail_id,head_id,level,source',
    'u1,g1,2,app',            // line 2 ok
    'u1,g1,4,other',          // line 3 bad level
    'doc,g1,1,app',           // line 4 object tail
    'u1,ghost,1,app',         // line 5 unknown head
    'u1,g1,3,app',            // line 6 duplicate of line 2
    'x,g1,1,app',             // line 7 tail was rejected
    '"q,uoted",doc,1,',       // line 8 ok (empty source: default)
    'u1,old,3,app',           // line 9 ok: old exists in the database
  ].join('\n');

  async function seedOld(): Promise<void> {
    await emptyGraph(db);
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('old', 'group')`);
    await db.query(sql`insert into permgraph.nodes (id, kind, owner_id) values ('oldfile', 'object', 'old')`);
    await db.query(sql`select permgraph.refresh()`);
  }

  it('invalid rows are reported with their line and skipped; the valid rest is loaded', async () => {
    await seedOld();
    const nodes = await writeText('nodes.csv', badNodes);
    const grants = await writeText('grants.csv', badGrants);
    const summary = await importGraph(db, { nodes: { file: nodes }, grants: { file: grants }, maxProblems: 100, onInvalid: 'skip' });
    const nodesCsv = path.basename(nodes);
    const grantsCsv = path.basename(grants);
    const at = (table: 'nodes' | 'grants', line: number, problem: unknown) => ({
      table,
      origin: `${table === 'nodes' ? nodesCsv : grantsCsv} line ${line}`,
      line,
      problem,
    });
    expect(summary.problems).toEqual([
      at('nodes', 3, 'kind must be user, group or object, got "robot"'),
      at('nodes', 4, 'duplicate id "u1" (first at line 2)'),
      at('nodes', 7, 'owner "doc" is an object; only users and groups own'),
      at('nodes', 8, expect.stringMatching(/^ownership cycle: ("c1" -> "c2" -> "c1"|"c2" -> "c1" -> "c2") \(the owner of each node is the next one\)$/)),
      at('nodes', 9, expect.stringMatching(/^ownership cycle: ("c1" -> "c2" -> "c1"|"c2" -> "c1" -> "c2") \(/)),
      at('nodes', 10, 'owner "c2" is not loaded: its row is invalid (line 9)'),
      at('nodes', 11, 'owner "nobody" does not exist (neither in the input nor in the database)'),
      at('nodes', 12, 'node "old" exists as a group; its kind cannot change to user'),
      at('nodes', 13, 'ownership cycle: group "self" cannot own itself'),
      at('nodes', 16, 'node "oldfile" exists as an object; its kind cannot change to group'),
      at('grants', 3, 'level must be 1 (read), 2 (write) or 3 (manage), got "4"'),
      at('grants', 4, 'grant tail "doc" is an object; only users and groups can hold grants'),
      at('grants', 5, 'grant head "ghost" does not exist (neither in the input nor in the database)'),
      at('grants', 6, 'duplicate grant "u1" -> "g1" (source "app"; first at line 2)'),
      at('grants', 7, 'grant tail "x" is not loaded: its row is invalid (line 3)'),
    ]);
    expect(summary.nodes).toMatchObject({ read: 15, invalid: 10, inserted: 5 });
    expect(summary.grants).toMatchObject({ read: 8, invalid: 5, inserted: 3 });
    const expected: RefGraph = {
      nodes: [
        g('old'),
        o('oldfile', 'old'),
        u('u1'),
        o('doc', 'g1'),
        g('g1', 'u1'),
        u('me', 'me'),
        u('q,uoted'),
      ],
      grants: [
        grant('u1', 2, 'g1', 'app'),
        grant('q,uoted', 1, 'doc'),
        grant('u1', 3, 'old', 'app'),
      ],
    };
    await expectImported(db, expected);
  });

  it("a grant within the lengths of its ids and source but too wide in bytes for the grants' unique index is an invalid row of its line, not a load that fails for good", async () => {
    await seedOld();
    const cjk = (n: number, from: number) => Array.from({ length: n }, (_, i) => String.fromCodePoint(0x4e00 + ((from + i * 7919) % 0x5000))).join('');
    const [tail, head, source] = [cjk(256, 1), cjk(256, 2), cjk(1024, 3)];
    const nodes = await writeText('nodes.csv', `id,kind,owner_id\n${tail},user,\n${head},group,\n`);
    const grants = await writeText('grants.csv', `tail_id,head_id,level,source\n${tail},${head},2,short\n${tail},${head},1,${source}\n`);
    const problem = expect.stringMatching(/^grant "[^"]+…" \(256 characters\) -> "[^"]+…" \(256 characters\): its tail, head and source are 4608 bytes together in UTF-8 \(at most 2600/);
    const refused = await importGraph(db, { nodes: { file: nodes }, grants: { file: grants }, name: 'wide-key' }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ImportRejectedError);
    expect((refused as ImportRejectedError).summary.problems).toEqual([{ table: 'grants', origin: `${path.basename(grants)} line 3`, line: 3, problem }]);
    // skipping it, the same run loads the rest
    const summary = await importGraph(db, { nodes: { file: nodes }, grants: { file: grants }, name: 'wide-key', restart: true, onInvalid: 'skip' });
    expect(summary.grants).toMatchObject({ read: 2, invalid: 1, inserted: 1 });
    await expectImported(db, { nodes: [g('old'), o('oldfile', 'old'), u(tail), g(head)], grants: [grant(tail, 2, head, 'short')] });
  });

  it('below a rejected owner, its whole staged chain is rejected line by line, down to a node that falls back to a stored user or group', async () => {
    // (found in one walk: a round per level scanned every staged node once a level, quadratic in the chain's depth)
    await seedOld(); // stores group "old" and object "oldfile"
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('kept', 'group')`);
    await db.query(sql`select permgraph.refresh()`);
    const depth = 300;
    const lines = ['id,kind,owner_id', 'c0,group,missing'];
    for (let i = 1; i < depth; i++) lines.push(`c${i},group,c${i - 1}`);
    // "kept", re-imported with a bad owner, falls back to its stored group: what it owns stays valid
    lines.push('kept,group,missing', 'k1,group,kept', 'k2,user,k1');
    // "oldfile" falls back to its stored object, which can own nothing
    lines.push('oldfile,object,missing', 'f1,group,oldfile', 'f2,group,f1');
    const nodes = await writeText('nodes.csv', `${lines.join('\n')}\n`);
    const summary = await importGraph(db, { nodes: { file: nodes }, onInvalid: 'skip', maxProblems: 1000 });
    const chain = Array.from({ length: depth - 1 }, (_, i) => ({ line: i + 3, problem: `owner "c${i}" is not loaded: its row is invalid (line ${i + 2})` }));
    expect(summary.problems.map(({ line, problem }) => ({ line, problem }))).toEqual([
      { line: 2, problem: 'owner "missing" does not exist (neither in the input nor in the database)' },
      ...chain,
      { line: depth + 2, problem: 'owner "missing" does not exist (neither in the input nor in the database)' },
      { line: depth + 5, problem: 'owner "missing" does not exist (neither in the input nor in the database)' },
      { line: depth + 6, problem: 'owner "oldfile" is an object; only users and groups own' },
      { line: depth + 7, problem: 'owner "f1" is not loaded: its row is invalid (line 306)' },
    ]);
    await expectImported(db, { nodes: [g('old'), o('oldfile', 'old'), g('kept'), g('k1', 'kept'), u('k2', 'k1')], grants: [] });
  });

  it('invalid rows fail the run by default: nothing from it is kept', async () => {
    await seedOld();
    const before = await snapshotCounts(db);
    const nodes = await writeText('nodes.csv', badNodes);
    const grants = await writeText('grants.csv', badGrants);
    const error = await importGraph(db, { nodes: { file: nodes }, grants: { file: grants }, maxProblems: 3 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ImportRejectedError);
    const rejected = error as ImportRejectedError;
    expect(rejected.message).toMatch(
      /^import "import-[0-9a-f]{10}" refused: 15 invalid row\(s\), nothing loaded \(first: .* line 3: kind must be .*\); fix them, or pass --on-invalid skip to load the valid rows$/,
    );
    expect(rejected.summary.onInvalid).toBe('fail');
    expect(rejected.summary.problems).toHaveLength(3);
    expect(await snapshotCounts(db)).toEqual(before);
    const [run] = await db.query(sql`select phase from permgraph.import_runs where name = ${rejected.summary.name}`);
    expect(run.phase).toBe('failed');
  });

  it('malformed CSV: a clear error naming the file and line, nothing written', async () => {
    await seedOld();
    const before = await snapshotCounts(db);
    const rows = (n: number) => Array.from({ length: n }, (_, i) => `n${i},user,`).join('\n');
    const cases: [string, string | Buffer, RegExp][] = [
      ['wrong header', 'id,kind,parent\na,user,\n', /header must be id,kind,owner_id\[,trash_at\], got "id,kind,parent" \(missing owner_id; unknown "parent"\)/],
      ['bad quoting', 'id,kind,owner_id\na,user,\nb,"us"er,\n', /^malformed CSV in \S+ line 3, field 2: unexpected character "e" after the closing quote at column 6 /],
      ['quote inside a field', 'id,kind,owner_id\na,user,\nb,us"er,\n', /^malformed CSV in \S+ line 3, field 2: a quote at column 5 inside an unquoted field/],
      // An unclosed quote is reported where it opened, not at the end of the file.
      ['unclosed quote', `id,kind,owner_id\n${rows(300)}\n"b,user,\n${rows(300)}\n`, /^malformed CSV in \S+ line 302, field 1: the quote opened at column 1 is never closed$/],
      ['unclosed quote in a later field', `id,kind,owner_id\n${rows(10)}\nb,"user,\nc,user,\n`, /^malformed CSV in \S+ line 12, field 2: the quote opened at column 3 is never closed$/],
      ['short row', 'id,kind,owner_id\na,user,\nb,user\n', /^malformed CSV in \S+ line 3: 2 field\(s\), expected 3 as in the header$/],
      // Lines are counted inside quoted fields too.
      ['short row after a quoted line break', 'id,kind,owner_id\n"a\nb",user,\nc,user\n', /^malformed CSV in \S+ line 4: 2 field\(s\), expected 3/],
      ['empty file', '', /is empty: expected a header line/],
      // Not UTF-8 (Latin-1's é): refused at its line, not loaded as U+FFFD. A U+FFFD the file holds is text like any other.
      ['not UTF-8', Buffer.concat([Buffer.from('id,kind,owner_id\na\ufffd,user,\nb,user,\ncaf'), Buffer.from([0xe9]), Buffer.from(',user,\n')]),
        /^malformed CSV in \S+ line 4: bytes that are not UTF-8 text: the file must be UTF-8/],
      ['not UTF-8, its last byte', Buffer.concat([Buffer.from('id,kind,owner_id\na,user,\nb,user,'), Buffer.from([0xc3])]), /^malformed CSV in \S+ line 3: bytes that are not UTF-8 text/],
      // An unclosed quote in a large file is reported as soon as its record outgrows any valid one, not after reading the file again with every chunk.
      ['unclosed quote in a large file', `id,kind,owner_id\n${rows(300)}\n"b,user,\n${rows(120_000)}\n`,
        /^malformed CSV in \S+ line 302: the record starting here runs past 1,048,576 characters: a quote never closed/],
    ];
    for (const [what, text, message] of cases) {
      const file = await writeText('nodes.csv', text);
      const error = await importGraph(db, { nodes: { file }, batchSize: 1 }).catch((e: unknown) => e);
      expect(error, what).toBeInstanceOf(InvalidInputError);
      expect((error as Error).message, what).toMatch(message);
      expect(await snapshotCounts(db), what).toEqual(before);
    }
    await expect(importGraph(db, { nodes: { file: path.join(scratch, 'no-such.csv') } })).rejects.toThrow(/cannot read .*no-such.csv/);
    // A pipe (/dev/stdin, <(…)) is read once: the header's read took the start of it, and the rows' read loaded the rest, short, as a success.
    const fifo = path.join(scratch, 'nodes.fifo');
    execFileSync('mkfifo', [fifo]);
    await expect(importGraph(db, { nodes: { file: fifo } })).rejects.toThrow(
      new InvalidInputError(`cannot read ${fifo}: not a regular file (a pipe?); an import reads its files more than once (the header, the rows, and again to resume), so save the input to a file first`),
    );
    await expect(importGraph(db, { nodes: { query: 'select 1 as id' } })).rejects.toThrow(/the nodes query must return columns id, kind, owner_id/);
    await expect(importGraph(db, { nodes: { query: 'selec nonsense' } })).rejects.toThrow(/the nodes query is not valid SQL/);
    await expect(importGraph(db, {})).rejects.toThrow(/nothing to import/);
    expect(await snapshotCounts(db)).toEqual(before);
  });

  it("a query the importing login may not run is refused as such, not as invalid SQL nor as the wrong login's command", async () => {
    // What PostgreSQL raises when the schema's owner lacks SELECT on an
    // application table (the test's owner is a superuser, which PostgreSQL
    // never refuses: the function raises the same SQLSTATE and message).
    await db.query(sql`
      create function public.denied_rows() returns table (id text, kind text, owner_id text)
      language plpgsql as $$ begin raise exception 'permission denied for table documents' using errcode = '42501'; end $$`);
    const before = await snapshotCounts(db);
    const error = await importGraph(db, { nodes: { query: 'select * from public.denied_rows()' } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PermissionDeniedError);
    expect((error as Error).message).toBe(
      'the nodes query was refused: permission denied for table documents (import queries run as the importing login, the schema\'s owner, ' +
        'with row-level security off so that no policy hides rows from them: it needs SELECT on the tables they read, and, on a table with ' +
        'row-level security, to own the table, to have BYPASSRLS, or to read it through a view that the table\'s owner owns)',
    );
    // the command line adds no "needs the schema's owner": the login is the owner, it lacks a right on the app's table
    expect(withRightsHint(error, 'import')).toBe(error);
    expect(await snapshotCounts(db)).toEqual(before);
  });

  it('a query over a table whose row-level security would hide rows from the importing login is refused, not loaded short', async () => {
    // A real owner that is no superuser (superusers bypass every policy),
    // importing from an application table that permgraph.enable_rls guards:
    // the policy shows it no row (no permgraph.user_id is set), so before,
    // the import loaded nothing and said so as a success.
    const fresh = await createEmptyDatabase();
    const owner = await createLogin(fresh.db, fresh.url, 'rlsimport');
    await fresh.db.query(sql`grant create on database ${sql.ident(fresh.name)} to ${sql.ident(owner.name)}`);
    await migrate(owner.db);
    await fresh.db.query(sql`create table public.documents (id text primary key, owner_id text)`);
    await fresh.db.query(sql`insert into public.documents values ('doc-1', null), ('doc-2', null)`);
    await fresh.db.query(sql`select permgraph.enable_rls('public.documents', 'id', 'owner_id')`);
    await fresh.db.query(sql`grant select on public.documents to ${sql.ident(owner.name)}`);
    const query = "select id, 'object' as kind, owner_id from public.documents";
    const error = await importGraph(owner.db, { nodes: { query } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PermissionDeniedError);
    expect((error as Error).message).toMatch(/^the nodes query was refused: query would be affected by row-level security policy for table "documents" \(.*BYPASSRLS.*\)$/);
    expect(await fresh.db.query(sql`select count(*)::int as nodes from permgraph.nodes`)).toEqual([{ nodes: 0 }]);
    // read through a view the table's owner owns, the same rows load whole
    await fresh.db.query(sql`create view public.documents_to_import as select id, owner_id from public.documents`);
    await fresh.db.query(sql`grant select on public.documents_to_import to ${sql.ident(owner.name)}`);
    await importGraph(owner.db, { nodes: { query: "select id, 'object' as kind, owner_id from public.documents_to_import" } });
    expect(await fresh.db.query(sql`select id from permgraph.nodes order by id`)).toEqual([{ id: 'doc-1' }, { id: 'doc-2' }]);
  });

  it('re-import upserts: owners, trash and levels change; a swap of owner and owned loads without a transient cycle', async () => {
    await emptyGraph(db);
    const first: RefGraph = {
      nodes: [
        u('u'),
        g('a', 'u'),
        g('b', 'a'),
      ],
      grants: [grant('u', 1, 'b', 's')],
    };
    const second: RefGraph = {
      nodes: [
        u('u'),
        { id: 'a', kind: 'group', ownerId: 'b', trashAt: new Date('2001-02-03T04:05:06Z') },
        g('b', 'u'),
      ],
      grants: [grant('u', 3, 'b', 's')],
    };
    const one = await writeCsvs(first);
    await importGraph(db, { nodes: { file: one.nodes }, grants: { file: one.grants } });
    await expectImported(db, first);
    const two = await writeCsvs(second);
    const summary = await importGraph(db, { nodes: { file: two.nodes }, grants: { file: two.grants } });
    expect(summary.nodes).toMatchObject({ inserted: 0, updated: 2, unchanged: 1 });
    expect(summary.grants).toMatchObject({ inserted: 0, updated: 1, unchanged: 0 });
    await expectImported(db, second);
    // Without a trash_at column, stored trash times are kept.
    const noTrash = await writeText('nodes.csv', 'id,kind,owner_id\na,group,b\n');
    expect((await importGraph(db, { nodes: { file: noTrash } })).nodes).toMatchObject({ unchanged: 1 });
    await expectImported(db, second);
  });

  it('one summary audit row per import, with the actor; no per-row audit; change capture stays empty', async () => {
    await emptyGraph(db);
    const [{ max }] = await db.query(sql`select coalesce(max(id), 0)::bigint as max from permgraph.audit_log`);
    const files = await writeCsvs({
      nodes: [u('ann'), g('team', 'ann')],
      grants: [grant('ann', 2, 'team', 'x')],
    });
    await db.tx(async (tx) => {
      await tx.query(sql`set local permgraph.actor = 'ops-bot'`);
      await importGraph(tx, { nodes: { file: files.nodes }, grants: { file: files.grants }, name: 'audited' });
    });
    const rows = await db.query(sql`select actor, action, source, details from permgraph.audit_log where id > ${max} order by id`);
    expect(rows).toEqual([
      {
        actor: 'ops-bot',
        action: 'import',
        source: 'audited',
        details: expect.objectContaining({ invalid: 0, nodes: expect.objectContaining({ inserted: 2 }), grants: expect.objectContaining({ inserted: 1 }) }),
      },
    ]);
    // The actor option names it, whatever the session says.
    const again = await writeCsvs({ nodes: [u('bea')], grants: [] });
    await db.tx(async (tx) => {
      await tx.query(sql`set local permgraph.actor = 'ops-bot'`);
      await importGraph(tx, { nodes: { file: again.nodes }, name: 'audited-2', actor: 'carol@example.com' });
    });
    const [last] = await db.query(sql`select actor, source from permgraph.audit_log where action = 'import' order by id desc limit 1`);
    expect(last).toEqual({ actor: 'carol@example.com', source: 'audited-2' });
    await expect(importGraph(db, { nodes: { file: again.nodes }, actor: ' ' })).rejects.toThrow(/the actor must not be empty/);
    // The load's own switches are back on: no trigger of nodes or grants stays disabled, and the next write is audited and captured.
    expect(await db.query(sql`
      select tgname from pg_trigger where tgrelid in ('permgraph.nodes'::regclass, 'permgraph.grants'::regclass) and tgenabled = 'D'`)).toEqual([]);
    await db.query(sql`insert into permgraph.nodes (id, kind, owner_id) values ('cid', 'group', 'bea')`);
    expect(await db.query(sql`select action, head_id from permgraph.audit_log where id > ${max} and action <> 'import' order by id`)).toEqual([
      { action: 'create_node', head_id: 'cid' },
    ]);
    expect(await db.query(sql`select tail_id, head_id from permgraph.changes where head_id = 'cid' and tail_id = 'bea'`)).toEqual([{ tail_id: 'bea', head_id: 'cid' }]);
    expect(await db.query(sql`select tail_id, head_id, level from permgraph.edges where head_id = 'cid'`)).toEqual([{ tail_id: 'bea', head_id: 'cid', level: 3 }]);
  });

  it('a trash_at is an instant with its offset: one without, one that is no timestamp or one outside the years 1 to 9999 is an error of its line', async () => {
    await emptyGraph(db);
    const nodes = await writeText('nodes.csv', [
      'id,kind,owner_id,trash_at',
      't1,user,,',
      't2,group,t1,infinity',                   // line 3
      't3,group,t1,9999-12-31T23:00:00-05:00',  // line 4: in the year 10000 (UTC)
      't4,group,t1,soon',                       // line 5
      't5,group,t1,2031-01-01T00:00:00Z',       // line 6
      't6,group,t1,2030-02-30T00:00:00Z',       // line 7: no such day
      't7,group,t1,2031-01-01T00:00:00',        // line 8: no offset
    ].join('\n') + '\n');
    const summary = await importGraph(db, { nodes: { file: nodes }, onInvalid: 'skip' });
    const at = (line: number, problem: string) => ({ table: 'nodes', origin: `${path.basename(nodes)} line ${line}`, line, problem });
    const form = '(ISO 8601, e.g. 2030-01-31T12:00:00Z, or 2030-01-31: its midnight UTC)';
    expect(summary.problems).toEqual([
      at(3, 'trash_at "infinity" is outside the years 1 to 9999 (for no trash time, leave it empty)'),
      at(4, 'trash_at "9999-12-31T23:00:00-05:00" is outside the years 1 to 9999 (for no trash time, leave it empty)'),
      at(5, `trash_at "soon" is neither a timestamp with a time zone offset nor a date ${form}`),
      at(7, `trash_at "2030-02-30T00:00:00Z" is neither a timestamp with a time zone offset nor a date ${form}`),
      at(8, `trash_at "2031-01-01T00:00:00" is neither a timestamp with a time zone offset nor a date ${form}`),
    ]);
    expect(await db.query(sql`select id, trash_at from permgraph.nodes order by id`)).toEqual([
      { id: 't1', trash_at: null },
      { id: 't5', trash_at: new Date('2031-01-01T00:00:00Z') },
    ]);
    // without a bad cast, the form and range checks alone (the statement's first try)
    const noBadCast = await writeText('nodes.csv', 'id,kind,owner_id,trash_at\nt8,group,t1,0001-01-01T00:00:00+01:00\nt9,group,t1,-infinity\n');
    expect((await importGraph(db, { nodes: { file: noBadCast }, onInvalid: 'skip' })).problems).toEqual([
      { ...at(2, 'trash_at "0001-01-01T00:00:00+01:00" is outside the years 1 to 9999 (for no trash time, leave it empty)'), origin: `${path.basename(noBadCast)} line 2` },
      { ...at(3, 'trash_at "-infinity" is outside the years 1 to 9999 (for no trash time, leave it empty)'), origin: `${path.basename(noBadCast)} line 3` },
    ]);
  });

  it('grants may carry expires_at: an instant with its offset, empty = never; a bad one is an error of its line; absent keeps the stored one', async () => {
    await emptyGraph(db);
    const nodes = await writeText('nodes.csv', 'id,kind,owner_id\nu1,user,\nu2,user,\ng1,group,u1\n');
    const grants = await writeText('grants.csv', [
      'tail_id,head_id,level,source,expires_at',
      'u1,g1,1,a,2030-01-31T12:00:00Z',      // line 2
      'u2,g1,2,a,2030-01-31 14:00:00+02:00', // line 3: the same instant
      'u1,g1,1,b,',                          // line 4: never
      'u2,g1,1,b,2030-01-31T12:00:00',       // line 5: no offset
      'u1,g1,1,c,next tuesday',              // line 6
      'u2,g1,1,c,2030-02-30T12:00:00Z',      // line 7: no such day
      'u1,g1,1,d,9999-12-31T23:00:00-05:00', // line 8: in the year 10000 (UTC), past what a Date carries as ISO text
    ].join('\n') + '\n');
    const summary = await importGraph(db, { nodes: { file: nodes }, grants: { file: grants }, onInvalid: 'skip' });
    const at = (line: number, problem: string) => ({ table: 'grants', origin: `${path.basename(grants)} line ${line}`, line, problem });
    const form = '(ISO 8601, e.g. 2030-01-31T12:00:00Z, or 2030-01-31: its midnight UTC)';
    expect(summary.problems).toEqual([
      at(5, `expires_at "2030-01-31T12:00:00" is neither a timestamp with a time zone offset nor a date ${form}`),
      at(6, `expires_at "next tuesday" is neither a timestamp with a time zone offset nor a date ${form}`),
      at(7, `expires_at "2030-02-30T12:00:00Z" is neither a timestamp with a time zone offset nor a date ${form}`),
      at(8, 'expires_at "9999-12-31T23:00:00-05:00" is outside the years 1 to 9999 (for never, leave it empty)'),
    ]);
    expect(summary.grants).toMatchObject({ read: 7, invalid: 4, inserted: 3 });
    const stored = () => db.query(sql`select tail_id, head_id, source, level, expires_at from permgraph.grants order by tail_id, source`);
    const at2030 = new Date('2030-01-31T12:00:00Z');
    expect(await stored()).toEqual([
      { tail_id: 'u1', head_id: 'g1', source: 'a', level: 1, expires_at: at2030 },
      { tail_id: 'u1', head_id: 'g1', source: 'b', level: 1, expires_at: null },
      { tail_id: 'u2', head_id: 'g1', source: 'a', level: 2, expires_at: at2030 },
    ]);

    // Without the column, a re-import keeps the stored expiries; with it, it sets them (empty: never).
    const levelsOnly = await writeText('grants.csv', 'tail_id,head_id,level,source\nu1,g1,2,a\nu1,g1,1,b\n');
    expect((await importGraph(db, { grants: { file: levelsOnly } })).grants).toMatchObject({ updated: 1, unchanged: 1 });
    const expiries = await writeText('grants.csv', 'tail_id,head_id,level,source,expires_at\nu1,g1,2,a,\nu2,g1,2,a,2031-06-01T00:00:00-05:00\nu1,g1,1,b,\n');
    expect((await importGraph(db, { grants: { file: expiries } })).grants).toMatchObject({ updated: 2, unchanged: 1 });
    expect(await stored()).toEqual([
      { tail_id: 'u1', head_id: 'g1', source: 'a', level: 2, expires_at: null },
      { tail_id: 'u1', head_id: 'g1', source: 'b', level: 1, expires_at: null },
      { tail_id: 'u2', head_id: 'g1', source: 'a', level: 2, expires_at: new Date('2031-06-01T05:00:00Z') },
    ]);

    // A query may return it too, as a timestamptz or as text.
    const summaryQuery = await importGraph(db, {
      grants: { query: `select 'u2' as tail_id, 'g1' as head_id, 'read' as level, 'q' as source, timestamptz '2032-05-01 00:00:00+00' as expires_at
                        union all select 'u1', 'g1', 'read', 'q', null` },
    });
    expect(summaryQuery).toMatchObject({ invalid: 0, loaded: true });
    expect(await db.query(sql`select tail_id, expires_at from permgraph.grants where source = 'q' order by tail_id`)).toEqual([
      { tail_id: 'u1', expires_at: null },
      { tail_id: 'u2', expires_at: new Date('2032-05-01T00:00:00Z') },
    ]);
    // The engine reads the loaded expiries: u2's permission on g1 changes at the first.
    const [row] = await db.query(sql`select valid_until from permgraph.permissions where user_id = 'u2' and target_id = 'g1'`);
    expect(row.valid_until).toEqual(new Date('2031-06-01T05:00:00Z')); // its level 2 (source a) ends first
  });
});
