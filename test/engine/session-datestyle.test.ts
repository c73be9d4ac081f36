// The time a full recomputation computes at, and the moments the library
// reads, under a session whose DateStyle writes zones as abbreviations
// (SQL, Postgres, German). A review found that the full recomputation passed
// its time through text in the session's form, which PostgreSQL 14-17 read
// back in another zone (IST under Asia/Kolkata as Israel's, 3.5 h later;
// WIB not at all): refresh(), verify(), an import's refresh and the
// worker's full batches left out grants with hours to run. And the driver
// read every timestamp as null under such a DateStyle. The oracle is the
// reference model. (PostgreSQL 18 reads a zone abbreviation in the
// session's zone first, so there only the driver's part could fail: CI runs
// this file on PostgreSQL 14 too.)
import { describe, expect, it } from 'vitest';
import { runDoctor } from '../../src/app/doctor.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import { refresh } from '../../src/engine/apply.ts';
import { verify } from '../../src/engine/verify.ts';
import { computePermissions, type RefGraph } from '../reference/model.ts';
import { expiring, g, grant, o, u } from '../helpers/builders.ts';
import { runCli } from '../helpers/cli.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { insertGrants, loadGraph, readPermissions, wholeSecondAfter } from '../helpers/graph.ts';

const HOUR = 3600 * 1000;

/** DateStyles that write a zone abbreviation, in zones whose abbreviation PostgreSQL 14-17 read as another zone (or not at all). */
const SESSIONS = [
  { datestyle: 'SQL, DMY', timezone: 'Asia/Kolkata' },
  { datestyle: 'Postgres, MDY', timezone: 'Asia/Manila' },
  { datestyle: 'German', timezone: 'America/Havana' },
  { datestyle: 'SQL, MDY', timezone: 'Asia/Jakarta' },
];

/** Grants ending within the shifts above (half an hour to a day), beside lasting ones. */
function graphExpiringSoon(): RefGraph {
  const after = (hours: number) => wholeSecondAfter(Date.now() + hours * HOUR);
  return {
    nodes: [u('mia'), u('noa'), g('runbooks'), g('wiki'), g('ops'), o('page', 'wiki')],
    grants: [
      expiring('mia', 2, 'runbooks', after(0.5), 'on-call'),
      grant('mia', 1, 'runbooks'),
      expiring('mia', 1, 'wiki', after(2)),
      expiring('noa', 3, 'ops', after(8)),
      expiring('noa', 1, 'wiki', after(20)),
      expiring('ops', 2, 'wiki', after(23)),
    ],
  };
}

describe('a session whose DateStyle writes zone abbreviations', () => {
  for (const session of SESSIONS) {
    it(`refresh() and verify() in a transaction with DateStyle ${session.datestyle}, TimeZone ${session.timezone}: the table equals the model`, async () => {
      const { db } = await createTestDatabase();
      const graph = graphExpiringSoon();
      await loadGraph(db, graph);
      const differences = await db.tx(async (tx) => {
        await tx.query(sql`select set_config('datestyle', ${session.datestyle}, true), set_config('timezone', ${session.timezone}, true)`);
        await tx.query(sql`select permgraph.refresh()`);
        return tx.query(sql`select * from permgraph.verify()`);
      });
      expect(await readPermissions(db)).toEqual(computePermissions(graph));
      expect(differences).toEqual([]);
    });
  }

  it("as a database's defaults: the library reads moments, and refresh, verify and the worker's full batch (CLI) keep every valid row", async () => {
    const { db, url, name } = await createTestDatabase();
    const graph = graphExpiringSoon();
    await loadGraph(db, { nodes: graph.nodes, grants: [] });
    await refresh(db);
    await db.query(sql`alter database ${sql.ident(name)} set datestyle = 'SQL, DMY'`);
    await db.query(sql`alter database ${sql.ident(name)} set timezone = 'Asia/Kolkata'`);
    const pool = openPool(url, { poolSize: 1 });
    try {
      // the library's own connection: moments read as they are, not as null
      const [{ moment, style }] = await pool.query(sql`select '2030-01-31T18:00:00.5Z'::timestamptz as moment, current_setting('datestyle') as style`);
      expect(moment).toEqual(new Date('2030-01-31T18:00:00.5Z'));
      expect(style).toBe('ISO, DMY');
      await insertGrants(pool, graph.grants);
      // more pending changes than --max-batch: the worker applies them by a full recomputation
      const once = await runCli(['--database-url', url, 'worker', '--once', '--max-batch', '1']);
      expect(once.code, once.stderr).toBe(0);
      expect(once.stdout).toMatch(/full/);
      expect(await readPermissions(pool)).toEqual(computePermissions(graph));
      await refresh(pool);
      expect(await readPermissions(pool)).toEqual(computePermissions(graph));
      expect((await verify(pool)).differences).toEqual([]);
      const verified = await runCli(['--database-url', url, 'verify']);
      expect(verified.code, verified.stdout + verified.stderr).toBe(0);
      // what a connection permgraph cannot pin (through a pooler) would read: doctor says so
      const settings = (await runDoctor(pool)).find((c) => c.name === 'settings');
      expect(settings).toMatchObject({ status: 'warn', message: expect.stringContaining("DateStyle = 'SQL, DMY': the driver reads timestamps only in the ISO form") });
      expect(settings!.message).toContain("alter database … set datestyle = 'ISO, DMY'");
    } finally {
      await pool.dispose();
    }
  });
});
