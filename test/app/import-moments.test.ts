// The moments of `permgraph import` (a node's trash_at, a grant's
// expires_at) name one instant whatever the importing session's TimeZone
// and DateStyle. Each import here runs on a pool whose connections take the
// database's defaults, set for the run (as a server's defaults or PGTZ set
// them); every stored moment is read back by the database in UTC and
// compared with text written out here by hand.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { SQLQuery } from '@databases/pg';
import { writeGrant } from '../../src/app/grants.ts';
import { importGraph, ImportRejectedError, type ImportOptions, type ImportSummary } from '../../src/app/import/index.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { loadGraph } from '../helpers/graph.ts';

/** Zones far apart (+14:00, -03:30), so that a moment read in either lands on a different instant. */
const ZONES = ['Pacific/Kiritimati', 'America/St_Johns'];
const FORM = '(ISO 8601, e.g. 2030-01-31T12:00:00Z, or 2030-01-31: its midnight UTC)';
const NOT_A_MOMENT = 'is neither a timestamp with a time zone offset nor a date';
const utc = (column: SQLQuery) => sql`to_char((${column}) at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

describe('import: moments carry their offset, whatever the session', async () => {
  const { db, url, name } = await createTestDatabase();
  const dir = await mkdtemp(path.join(tmpdir(), 'permgraph-import-moments-'));
  afterAll(() => rm(dir, { recursive: true, force: true }));
  let files = 0;
  const csv = async (text: string) => {
    const file = path.join(dir, `${files++}.csv`);
    await writeFile(file, text);
    return file;
  };

  /**
   * importGraph on a fresh pool whose sessions start with these defaults,
   * as through a transaction pooler: nothing pinned on them (a direct pool
   * pins DateStyle's output to ISO), so the import's SQL meets the session's
   * own DateStyle.
   */
  async function importUnder(settings: { timezone: string; datestyle?: string }, options: ImportOptions): Promise<ImportSummary> {
    await db.query(sql`alter database ${sql.ident(name)} set timezone = ${sql.__dangerous__rawValue(`'${settings.timezone}'`)}`);
    await db.query(sql`alter database ${sql.ident(name)} set datestyle = ${sql.__dangerous__rawValue(`'${settings.datestyle ?? 'ISO, MDY'}'`)}`);
    const pool = openPool(url, { poolSize: 2, pinSearchPath: false });
    try {
      const [seen] = await pool.query(sql`select current_setting('timezone') as zone, current_setting('datestyle') as style`);
      expect(seen).toEqual({ zone: settings.timezone, style: settings.datestyle ?? 'ISO, MDY' }); // the defaults are in force
      return await importGraph(pool, options);
    } finally {
      await pool.dispose();
      await db.query(sql`alter database ${sql.ident(name)} reset timezone; alter database ${sql.ident(name)} reset datestyle`);
    }
  }
  const stored = async () =>
    db.query(sql`select id, ${utc(sql.ident('trash_at'))} as trash_at from permgraph.nodes order by id`) as Promise<{ id: string; trash_at: string | null }[]>;
  const staged = async () =>
    (await db.query(sql`select (select count(*) from permgraph.import_nodes)::int + (select count(*) from permgraph.import_grants)::int as n`))[0].n;

  it('a CSV trash_at without an offset is a problem of its line under every zone; the run loads nothing', async () => {
    const nodes = await csv([
      'id,kind,owner_id,trash_at',
      'u1,user,,',
      'g1,group,u1,2030-01-01 00:00',      // line 3: no offset
      'g2,group,u1,2030-01-01T00:00:00Z',  // line 4: fine
      'g3,group,u1,2030-01-01T00:00',      // line 5: no offset either
      'g4,group,u1,soon',                  // line 6
    ].join('\n') + '\n');
    for (const timezone of ZONES) {
      await loadGraph(db, { nodes: [], grants: [] });
      const error = await importUnder({ timezone }, { nodes: { file: nodes } }).catch((e: unknown) => e);
      expect(error, timezone).toBeInstanceOf(ImportRejectedError);
      const at = (line: number, problem: string) => ({ table: 'nodes', origin: `${path.basename(nodes)} line ${line}`, line, problem });
      expect((error as ImportRejectedError).summary.problems, timezone).toEqual([
        at(3, `trash_at "2030-01-01 00:00" ${NOT_A_MOMENT} ${FORM}`),
        at(5, `trash_at "2030-01-01T00:00" ${NOT_A_MOMENT} ${FORM}`),
        at(6, `trash_at "soon" ${NOT_A_MOMENT} ${FORM}`),
      ]);
      expect(await stored(), timezone).toEqual([]); // nothing half-written
      expect(await staged(), timezone).toBe(0);
    }
  });

  it('a CSV trash_at with Z or an offset is stored as that instant, to the microsecond, under every zone', async () => {
    const nodes = await csv([
      'id,kind,owner_id,trash_at',
      'u1,user,,',
      'g1,group,u1,2030-01-01T00:00:00Z',
      'g2,group,u1,2030-01-01 05:45:00.000250+05:45',
      'g3,group,u1,2029-12-31T20:30-0330',
      'g4,group,u1,',
    ].join('\n') + '\n');
    for (const timezone of ZONES) {
      await loadGraph(db, { nodes: [], grants: [] });
      expect(await importUnder({ timezone }, { nodes: { file: nodes } }), timezone).toMatchObject({ loaded: true, invalid: 0 });
      expect(await stored(), timezone).toEqual([
        { id: 'g1', trash_at: '2030-01-01T00:00:00.000000Z' },
        { id: 'g2', trash_at: '2030-01-01T00:00:00.000250Z' },
        { id: 'g3', trash_at: '2030-01-01T00:00:00.000000Z' },
        { id: 'g4', trash_at: null },
        { id: 'u1', trash_at: null },
      ]);
    }
  });

  it('a query\'s timestamptz trash_at and expires_at are the same instants under any DateStyle; zone-less ones are problems of their rows', async () => {
    const nodesQuery = `select * from (values
        ('u1', 'user', null, null::timestamptz),
        ('g1', 'group', 'u1', timestamptz '2030-01-01 00:00:00.000250+00'),
        ('g2', 'group', 'u1', timestamptz '2030-01-01 05:45:00+05:45'),
        -- in both zones' local mean time then, written with an offset in seconds (-10:29:20, -03:30:52)
        ('g3', 'group', 'u1', timestamptz '1880-01-01 00:00:00+00')) v(id, kind, owner_id, trash_at)`;
    const grantsQuery = `select 'u1' as tail_id, 'g1' as head_id, 'read' as level, timestamptz '2031-06-01 00:00:00.0007-03:30' as expires_at`;
    for (const [timezone, datestyle] of [[ZONES[0]!, 'SQL, DMY'], [ZONES[1]!, 'Postgres, MDY'], [ZONES[0]!, 'German, DMY'], [ZONES[1]!, 'ISO, YMD']] as const) {
      const what = `${timezone} ${datestyle}`;
      await loadGraph(db, { nodes: [], grants: [] });
      const summary = await importUnder({ timezone, datestyle }, { nodes: { query: nodesQuery }, grants: { query: grantsQuery } });
      expect(summary, what).toMatchObject({ loaded: true, invalid: 0 });
      expect(await stored(), what).toEqual([
        { id: 'g1', trash_at: '2030-01-01T00:00:00.000250Z' },
        { id: 'g2', trash_at: '2030-01-01T00:00:00.000000Z' },
        { id: 'g3', trash_at: '1880-01-01T00:00:00.000000Z' },
        { id: 'u1', trash_at: null },
      ]);
      expect(await db.query(sql`select ${utc(sql.ident('expires_at'))} as at from permgraph.grants`), what).toEqual([{ at: '2031-06-01T03:30:00.000700Z' }]);
    }

    // Without an offset (a timestamp column, or text), a row is refused as in a CSV; empty text is no trash time, as in a CSV.
    await loadGraph(db, { nodes: [], grants: [] });
    const error = await importUnder({ timezone: ZONES[0]! }, {
      nodes: { query: `select * from (values
          ('u1', 'user', null, ''),
          ('g1', 'group', 'u1', (timestamp '2030-01-01 00:00')::text),
          ('g2', 'group', 'u1', '2030-01-01 00:00')) v(id, kind, owner_id, trash_at)` },
      grants: { query: `select 'u1' as tail_id, 'u1' as head_id, 'read' as level, timestamp '2031-06-01 00:00' as expires_at` },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ImportRejectedError);
    expect((error as ImportRejectedError).summary.problems.map((p) => `${p.origin}: ${p.problem}`)).toEqual([
      `id "g1": trash_at "2030-01-01 00:00:00" ${NOT_A_MOMENT} ${FORM}`,
      `id "g2": trash_at "2030-01-01 00:00" ${NOT_A_MOMENT} ${FORM}`,
      `grant "u1" -> "u1" (source "default"): expires_at "2031-06-01T00:00:00" ${NOT_A_MOMENT} ${FORM}`,
    ]);
    expect(await stored()).toEqual([]);
    expect(await staged()).toBe(0);
  });
  const expiries = async () =>
    db.query(sql`select tail_id, head_id, source, ${utc(sql.ident('expires_at'))} as at from permgraph.grants order by tail_id, head_id, source`) as Promise<
      { tail_id: string; head_id: string; source: string; at: string | null }[]
    >;

  it('a date alone is the start of that day in UTC under every zone, as the API and `grant --expires` read it (CSV, query text, a date column)', async () => {
    const nodes = await csv(['id,kind,owner_id,trash_at', 'u1,user,,', 'g1,group,u1,2030-01-31', 'g2,group,u1,2030-12-31T00:00:00Z'].join('\n') + '\n');
    const grants = await csv(['tail_id,head_id,level,expires_at', 'u1,g1,read,2030-01-31', 'u1,g2,read,2031-02-28'].join('\n') + '\n');
    const inputs: [string, ImportOptions][] = [
      ['csv', { nodes: { file: nodes }, grants: { file: grants } }],
      ['query', {
        nodes: { query: `select * from (values ('u1', 'user', null, null::text), ('g1', 'group', 'u1', '2030-01-31'),
                                               ('g2', 'group', 'u1', '2030-12-31T00:00:00Z')) v(id, kind, owner_id, trash_at)` },
        grants: { query: `select * from (values ('u1', 'g1', 'read', date '2030-01-31'), ('u1', 'g2', 'read', date '2031-02-28')) v(tail_id, head_id, level, expires_at)` },
      }],
    ];
    for (const timezone of [...ZONES, 'UTC']) {
      for (const [how, options] of inputs) {
        const what = `${timezone} ${how}`;
        await loadGraph(db, { nodes: [], grants: [] });
        expect(await importUnder({ timezone }, options), what).toMatchObject({ loaded: true, invalid: 0 });
        expect(await stored(), what).toEqual([
          { id: 'g1', trash_at: '2030-01-31T00:00:00.000000Z' },
          { id: 'g2', trash_at: '2030-12-31T00:00:00.000000Z' },
          { id: 'u1', trash_at: null },
        ]);
        // the API, under the same zone, stores the same text as the same instant
        await db.tx(async (tx) => {
          await tx.query(sql`select set_config('timezone', ${timezone}, true)`);
          await writeGrant(tx, 'u1', 'g1', 'read', { source: 'api', expiresAt: '2030-01-31' });
        });
        expect(await expiries(), what).toEqual([
          { tail_id: 'u1', head_id: 'g1', source: 'api', at: '2030-01-31T00:00:00.000000Z' },
          { tail_id: 'u1', head_id: 'g1', source: 'default', at: '2030-01-31T00:00:00.000000Z' },
          { tail_id: 'u1', head_id: 'g2', source: 'default', at: '2031-02-28T00:00:00.000000Z' },
        ]);
      }
    }
  });

  it('a moment that parses but lies outside the years 1 to 9999 (or infinity) is named so, from a CSV or a query\'s timestamptz; a date that does not exist is no timestamp', async () => {
    const outside = (column: string, value: string, none: string) => `${column} "${value}" is outside the years 1 to 9999 (for ${none}, leave it empty)`;
    const nodes = await csv([
      'id,kind,owner_id,trash_at',
      'u1,user,,',
      'g1,group,u1,infinity',              // line 3
      'g2,group,u1,10000-01-01T00:00:00Z', // line 4
      'g3,group,u1,2030-02-30',            // line 5: no such day
      'g4,group,u1,9999-12-31',            // line 6: fine
    ].join('\n') + '\n');
    const grants = await csv(['tail_id,head_id,level,expires_at', 'u1,g4,read,-infinity', 'u1,u1,read,2031-02-29'].join('\n') + '\n');
    for (const timezone of ZONES) {
      await loadGraph(db, { nodes: [], grants: [] });
      const error = await importUnder({ timezone }, { nodes: { file: nodes }, grants: { file: grants } }).catch((e: unknown) => e);
      expect(error, timezone).toBeInstanceOf(ImportRejectedError);
      expect((error as ImportRejectedError).summary.problems.map((p) => `${p.origin}: ${p.problem}`), timezone).toEqual([
        `${path.basename(nodes)} line 3: ${outside('trash_at', 'infinity', 'no trash time')}`,
        `${path.basename(nodes)} line 4: ${outside('trash_at', '10000-01-01T00:00:00Z', 'no trash time')}`,
        `${path.basename(nodes)} line 5: trash_at "2030-02-30" ${NOT_A_MOMENT} ${FORM}`,
        `${path.basename(grants)} line 2: ${outside('expires_at', '-infinity', 'never')}`,
        `${path.basename(grants)} line 3: expires_at "2031-02-29" ${NOT_A_MOMENT} ${FORM}`,
      ]);
    }

    // A query's timestamptz is staged in the session's zone, with its offset (and BC): the text named is that one.
    const shown: Record<string, [string, string]> = {
      // 10000-01-01 00:00 UTC; 1 BC, December 31, 19:00 UTC (0001-01-01 00:00+05), in each zone's local mean time then
      'Pacific/Kiritimati': ['10000-01-01T14:00:00+14:00', '0001-12-31T08:30:40-10:29:20 BC'],
      'America/St_Johns': ['9999-12-31T20:30:00-03:30', '0001-12-31T15:29:08-03:30:52 BC'],
    };
    for (const timezone of ZONES) {
      await loadGraph(db, { nodes: [], grants: [] });
      const error = await importUnder({ timezone }, {
        nodes: { query: `select * from (values
            ('u1', 'user', null, null::timestamptz),
            ('g1', 'group', 'u1', timestamptz '10000-01-01 00:00Z'),
            ('g2', 'group', 'u1', timestamptz '0001-01-01 00:00+05'),
            ('g3', 'group', 'u1', timestamptz 'infinity'),
            ('g4', 'group', 'u1', timestamptz '9999-12-31 23:59:59.999999Z')) v(id, kind, owner_id, trash_at)` },
        grants: { query: `select 'u1' as tail_id, 'g4' as head_id, 'read' as level, timestamptz '-infinity' as expires_at` },
      }).catch((e: unknown) => e);
      expect(error, timezone).toBeInstanceOf(ImportRejectedError);
      expect((error as ImportRejectedError).summary.problems.map((p) => `${p.origin}: ${p.problem}`), timezone).toEqual([
        `id "g1": ${outside('trash_at', shown[timezone]![0], 'no trash time')}`,
        `id "g2": ${outside('trash_at', shown[timezone]![1], 'no trash time')}`,
        `id "g3": ${outside('trash_at', 'infinity', 'no trash time')}`,
        `grant "u1" -> "g4" (source "default"): ${outside('expires_at', '-infinity', 'never')}`,
      ]);
      expect(await stored(), timezone).toEqual([]);
      expect(await staged(), timezone).toBe(0);
    }
  });
});
