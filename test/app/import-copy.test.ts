// permgraph import stages CSV rows with COPY when it has the database's URL:
// the same staged rows, lines and problems as the INSERT batches, whatever
// the values hold (tabs, newlines, backslashes, "\N", NUL bytes, long ids).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { importGraph } from '../../src/app/import/index.ts';
import { copyValue } from '../../src/app/import/staging.ts';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { loadGraph } from '../helpers/graph.ts';
import { createLogin } from '../helpers/logins.ts';

const scratch = await mkdtemp(path.join(tmpdir(), 'permgraph-import-copy-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));
let counter = 0;

async function writeText(name: string, text: string): Promise<string> {
  const file = path.join(scratch, `${counter++}-${name}`);
  await writeFile(file, text);
  return file;
}

const stopped = new Error('staged');

/** Stages a run and stops before validation; returns what it staged. */
async function staged(db: Queryable, name: string, files: { nodes: { file: string }; grants: { file: string } }, connectionUrl?: string) {
  await importGraph(db, { ...files, name, batchSize: 3, connectionUrl, onProgress: (p) => { if (p.phase === 'validate') throw stopped; } })
    .then(() => { throw new Error('not stopped'); }, (e: unknown) => { if (e !== stopped) throw e; });
  const nodes = await db.query(sql`select seq, line, problem, id, kind, owner_id, trash_at from permgraph.import_nodes where run = ${name} order by seq`);
  const grants = await db.query(sql`select seq, line, problem, tail_id, head_id, level, source, expires_at from permgraph.import_grants where run = ${name} order by seq`);
  const [run] = await db.query(sql`select phase, last_key, rows_done from permgraph.import_runs where name = ${name}`);
  return { nodes, grants, run };
}

describe('permgraph import: staging with COPY', async () => {
  const { db, url } = await createTestDatabase();

  it('copyValue escapes what COPY text format gives a meaning to', () => {
    expect(copyValue(null)).toBe('\\N');
    expect(copyValue('\\N')).toBe('\\\\N');
    expect(copyValue('a\tb\nc\rd\\e')).toBe('a\\tb\\nc\\rd\\\\e');
    expect(copyValue('\\.')).toBe('\\\\.');
    expect(copyValue('plain ✓ "quoted", comma')).toBe('plain ✓ "quoted", comma');
  });

  it('stages exactly what the INSERT batches stage, in batches with their progress', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const long = 'L'.repeat(300);
    const nodes = await writeText(
      'nodes.csv',
      'id,kind,owner_id,trash_at\n' +
        'ann,user,,\n"tab\there",user,,\n"new\nline",group,ann,\nback\\slash,object,ann,\n\\N,user,,\n' +
        'nul\0byte,user,,\n"cr\rin",user,,\nbad,kind,,\n' +
        `${long},user,,\nx1,object,ann,2030-01-01T00:00:00Z\n`,
    );
    const grants = await writeText(
      'grants.csv',
      'tail_id,head_id,level,source,expires_at\nann,back\\slash,read,,\n"tab\there",ann,write,"s\\N",\nann,x1,manage,"a\tb",2030-01-01T00:00:00Z\n' +
        `ann,${long},read,,\nann,"new\nline",1,${'s'.repeat(1100)},\n`,
    );
    const files = { nodes: { file: nodes }, grants: { file: grants } };
    const byInsert = await staged(db, 'by-insert', files);
    const byCopy = await staged(db, 'by-copy', files, url);
    expect(byCopy).toEqual(byInsert);
    expect(byCopy.nodes.map((r) => r.id)).toContain('tab\there');
    expect(byCopy.nodes.find((r) => r.id === '\\N')).toMatchObject({ line: 7, problem: null });
    expect(byCopy.nodes.find((r) => r.line === 8)).toMatchObject({ id: 'nul?byte', problem: 'id contains a NUL byte (0x00), which PostgreSQL text cannot hold' });
    expect(String(byCopy.nodes.find((r) => String(r.id).startsWith('LLL'))?.problem)).toMatch(/^id "L+…" \(300 characters\) is 300 characters long/);
    expect(byCopy.grants.find((r) => r.tail_id === 'tab\there')).toMatchObject({ source: 's\\N' });

    // The COPY path is the one taken when the URL is given: a URL whose login may not write the staging tables fails the run.
    // (a URL that leads nowhere fails before, when the run asks how it reaches the server)
    const nobody = await createLogin(db, url, 'nobody');
    await expect(staged(db, 'nowhere', files, nobody.url)).rejects.toThrow(/permission denied/);
    // A dry run stages in its own transaction: no COPY connection.
    expect(await importGraph(db, { ...files, name: 'dry', dryRun: true, onInvalid: 'skip', connectionUrl: nobody.url })).toMatchObject({ dryRun: true });
  });

  it('stages through a URL that lists several hosts, the first of them down, as through the server\'s own', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const nodes = await writeText('nodes.csv', 'id,kind,owner_id\ndoc,object,eng\neng,group,ann\nann,user,\n"tab\there",user,\n');
    const grants = await writeText('grants.csv', 'tail_id,head_id,level\n"tab\there",eng,write\nann,doc,read\n');
    const files = { nodes: { file: nodes }, grants: { file: grants } };
    const { host, hostname, port } = new URL(url);
    const byServer = await staged(db, 'one-host', files, url);
    // (nothing listens on port 1, nor on 127.0.0.2: the next host is the server)
    for (const [name, hosts] of [['own-ports', `127.0.0.1:1,${host}`], ['shared-port', `127.0.0.2,${hostname}:${port}`]] as const) {
      const several = url.replace(`@${host}/`, `@${hosts}/`);
      expect(several).not.toBe(url);
      expect(await staged(db, name, files, several), name).toEqual(byServer);
    }
  });

  it('a run staged with COPY loads like any other', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const nodes = await writeText('nodes.csv', 'id,kind,owner_id\ndoc,object,eng\neng,group,ann\nann,user,\nbob,user,\n');
    const grants = await writeText('grants.csv', 'tail_id,head_id,level\nbob,eng,write\nann,doc,read\n');
    const summary = await importGraph(db, { nodes: { file: nodes }, grants: { file: grants }, connectionUrl: url, batchSize: 2 });
    expect(summary).toMatchObject({ loaded: true, invalid: 0, nodes: { inserted: 4 }, grants: { inserted: 2 } });
  });
});
