// permgraph import into a database that already holds data (issue 11: with
// earlier imports behind it, 5,001 nodes took 15 s and 20,001 took 7 min,
// because a duplicate check ran as a nested loop over unanalyzed staging
// rows). Every statement of validate and load must stay linear whatever the
// statistics say: the plans are captured with auto_explain (row counts, not
// times) while the staging tables carry the statistics of an empty table.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { importGraph } from '../../src/app/import/index.ts';
import { resolveLevels } from '../../src/app/import/validate.ts';
import { sql } from '../../src/db/pool.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { capturePlans, describeQuery, heaviest } from '../helpers/plans.ts';
import { insertNodes, readPermissions, readTrashedGroups } from '../helpers/graph.ts';
import * as model from '../reference/model.ts';
import type { RefGrant, RefGraph, RefNode } from '../reference/model.ts';

const scratch = await mkdtemp(path.join(tmpdir(), 'permgraph-import-plans-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

const csvField = (v: string | null) => (v === null ? '' : v);

async function writeCsvs(name: string, graph: RefGraph): Promise<{ nodes: string; grants: string }> {
  const nodes = path.join(scratch, `${name}-nodes.csv`);
  const grants = path.join(scratch, `${name}-grants.csv`);
  // Owners after what they own.
  await writeFile(nodes, ['id,kind,owner_id', ...[...graph.nodes].reverse().map((n) => [n.id, n.kind, n.ownerId].map(csvField).join(','))].join('\n') + '\n');
  const level = ['', 'read', '2', 'manage'];
  await writeFile(grants, ['tail_id,head_id,level,source', ...graph.grants.map((g) => `${g.tailId},${g.headId},${level[g.level]},${g.source}`)].join('\n') + '\n');
  return { nodes, grants };
}

/**
 * n nodes named p…: a fifth users, three tenths groups (the first half owned
 * by users, the second by a group of the first half), the rest objects owned
 * by groups; each user is granted one group, each group one object.
 */
function layered(p: string, n: number): RefGraph {
  const users = Math.floor(n / 5);
  const groups = Math.floor((3 * n) / 10);
  const objects = n - users - groups;
  const half = Math.floor(groups / 2);
  const nodes: RefNode[] = [];
  for (let i = 0; i < users; i++) nodes.push({ id: `${p}u${i}`, kind: 'user', ownerId: null, trashAt: null });
  for (let i = 0; i < groups; i++) {
    nodes.push({ id: `${p}g${i}`, kind: 'group', ownerId: i < half ? `${p}u${i % users}` : `${p}g${i - half}`, trashAt: null });
  }
  for (let i = 0; i < objects; i++) nodes.push({ id: `${p}o${i}`, kind: 'object', ownerId: `${p}g${i % groups}`, trashAt: null });
  const grants: RefGrant[] = [];
  for (let i = 0; i < users; i++) grants.push({ tailId: `${p}u${i}`, headId: `${p}g${(7 * i) % groups}`, level: ((i % 3) + 1) as 1 | 2 | 3, source: 's' });
  for (let i = 0; i < groups; i++) grants.push({ tailId: `${p}g${i}`, headId: `${p}o${i % objects}`, level: 1, source: 's' });
  return { nodes, grants };
}

describe('permgraph import into a database already holding data', async () => {
  const { db, url } = await createTestDatabase();

  it('every statement of validate and load stays linear with stale statistics; the result equals the reference model', async () => {
    // Earlier imports, and many nodes written otherwise.
    const earlier = [layered('a', 4000), layered('b', 4000), layered('c', 4000)];
    for (const [i, graph] of earlier.entries()) {
      const files = await writeCsvs(`earlier-${i}`, graph);
      expect(await importGraph(db, { nodes: { file: files.nodes }, grants: { file: files.grants } })).toMatchObject({ loaded: true, invalid: 0 });
    }
    const extra: RefNode[] = Array.from({ length: 20_000 }, (_, i) => ({ id: `x${i}`, kind: 'object', ownerId: `ag${i % 1200}`, trashAt: null }));
    await insertNodes(db, extra);
    await db.query(sql`select permgraph.refresh()`);
    // The statistics of the issue: staging tables analyzed while empty.
    await db.query(sql`analyze permgraph.import_nodes; analyze permgraph.import_grants; analyze permgraph.nodes`);

    // Stage the new run without validating it (a crash after the last batch), then validate and load it by hand under auto_explain.
    const next = layered('n', 20_001);
    const files = await writeCsvs('next', next);
    const options = { nodes: { file: files.nodes }, grants: { file: files.grants }, name: 'next', batchSize: 50_000 };
    const staged = new Error('staged');
    await expect(importGraph(db, { ...options, afterBatch: (n) => { if (n === 2) throw staged; } })).rejects.toBe(staged);
    const [{ rows }] = await db.query(sql`
      select (select count(*) from permgraph.import_nodes where run = 'next') + (select count(*) from permgraph.import_grants where run = 'next')
           + (select count(*) from permgraph.nodes) as rows`);
    const plans = await capturePlans(url, async (client) => {
      await client.query('begin');
      const levels = await resolveLevels(db, 'next');
      const validated = await client.query('select permgraph._import_validate($1, $2::jsonb) as counts', ['next', JSON.stringify(levels)]);
      expect(validated.rows[0].counts).toMatchObject({ nodes_invalid: 0, grants_invalid: 0 });
      await client.query('select permgraph._import_load($1, false, false, $2::jsonb)', ['next', JSON.stringify(levels)]);
      await client.query('rollback');
    });
    const ours = plans.filter((p) => /import_(nodes|grants|bad|removed|rejected|valid|changed|g|unrooted)\b/.test(p.query));
    expect(ours.length).toBeGreaterThan(5);
    // Linear: no plan node handles more than a few times the rows there are (a
    // quadratic one would handle ~20,000 × 20,000).
    const limit = 10 * Number(rows);
    for (const { query, plan } of ours) {
      const h = heaviest(plan);
      expect(h.rows, `${h.type} in: ${describeQuery(query)}`).toBeLessThanOrEqual(limit);
    }

    // The run, resumed, loads what the reference model says.
    expect(await importGraph(db, { ...options, resume: true })).toMatchObject({ loaded: true, resumed: true, invalid: 0 });
    const whole: RefGraph = {
      nodes: [...earlier.flatMap((e) => e.nodes), ...extra, ...next.nodes],
      grants: [...earlier.flatMap((e) => e.grants), ...next.grants],
    };
    expect(await readPermissions(db)).toEqual(model.computePermissions(whole));
    expect(await readTrashedGroups(db)).toEqual(model.computeTrashedGroups(whole));
    const [{ n }] = await db.query(sql`select count(*)::int as n from permgraph.nodes`);
    expect(n).toBe(whole.nodes.length);
  });
});
