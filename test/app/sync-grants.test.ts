import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { syncGrants, type DesiredGrant } from '../../src/app/sync-grants.ts';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { isApplied } from '../../src/engine/freshness.ts';
import { InvalidInputError } from '../../src/errors.ts';
import * as model from '../reference/model.ts';
import type { Level, RefGrant } from '../reference/model.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { graphArbitrary, loadGraph, readPermissions } from '../helpers/graph.ts';

interface GrantRow {
  tail: string;
  head: string;
  level: Level;
  source: string;
}

async function readGrants(db: Queryable): Promise<GrantRow[]> {
  const rows: GrantRow[] = await db.query(
    sql`select tail_id as tail, head_id as head, level, source from permgraph.grants order by source, tail_id, head_id`,
  );
  return rows;
}

const key = (g: { tail: string; head: string }) => `${g.tail}\u0000${g.head}`;

describe('syncGrants', async () => {
  const { db } = await createTestDatabase();

  it('random desired sets: the source ends up exactly as asked, others untouched, counts are the true differences', async () => {
    const desiredSpec = fc.array(fc.record({ tail: fc.nat(), head: fc.nat(), level: fc.constantFrom<Level>(1, 2, 3) }), { maxLength: 25 });
    await fc.assert(
      fc.asyncProperty(
        graphArbitrary({ users: 6, groups: 8, objects: 5, grants: 40 }),
        fc.constantFrom('a', 'b', 'new-source'),
        desiredSpec,
        fc.boolean(),
        async (graph, source, spec, levelsAsNames) => {
          await loadGraph(db, graph);
          await refresh(db);
          const tails = graph.nodes.filter((n) => n.kind !== 'object');
          // Desired pairs: some new, some overlapping the source's current grants (same or other level).
          const current = graph.grants.filter((g) => g.source === source);
          const desired = new Map<string, { tail: string; head: string; level: Level }>();
          for (const [i, s] of spec.entries()) {
            const reuse = i % 2 === 0 && current.length > 0 ? current[s.tail % current.length]! : null;
            const tail = reuse?.tailId ?? tails[s.tail % tails.length]!.id;
            const head = reuse?.headId ?? graph.nodes[s.head % graph.nodes.length]!.id;
            desired.set(key({ tail, head }), { tail, head, level: s.level });
          }
          const names = ['read', 'write', 'manage'] as const;
          const input: DesiredGrant[] = [...desired.values()].map((d) => ({ ...d, level: levelsAsNames ? names[d.level - 1]! : d.level }));

          const before = await readGrants(db);
          const result = await syncGrants(db, source, input);
          const after = await readGrants(db);

          const expectedMine = [...desired.values()].map((d) => ({ ...d, source })).sort(byKey);
          expect(after.filter((g) => g.source === source).sort(byKey)).toEqual(expectedMine);
          expect(after.filter((g) => g.source !== source)).toEqual(before.filter((g) => g.source !== source));
          const old = new Map(before.filter((g) => g.source === source).map((g) => [key(g), g.level] as const));
          expect(result).toMatchObject({
            inserted: [...desired.keys()].filter((k) => !old.has(k)).length,
            updated: [...desired].filter(([k, d]) => old.has(k) && old.get(k) !== d.level).length,
            deleted: [...old.keys()].filter((k) => !desired.has(k)).length,
          });

          // The table, once the captured changes are applied, is the model's.
          const grants: RefGrant[] = after.map((g) => ({ tailId: g.tail, headId: g.head, level: g.level, source: g.source }));
          const changed = result.inserted + result.updated + result.deleted > 0;
          expect(await isApplied(db, result.token)).toBe(!changed);
          await applyChanges(db);
          expect(await isApplied(db, result.token)).toBe(true);
          expect(await readPermissions(db)).toEqual(model.computePermissions({ nodes: graph.nodes, grants }));

          // Syncing the same set again writes nothing.
          expect(await syncGrants(db, source, input)).toMatchObject({ inserted: 0, updated: 0, deleted: 0 });
        },
      ),
      { numRuns: 60 },
    );
  });

  it('an empty set removes every grant of the source', async () => {
    await loadGraph(db, {
      nodes: [
        u('ann'),
        g('team'),
      ],
      grants: [
        grant('ann', 2, 'team', 'ldap'),
        grant('ann', 1, 'team', 'manual'),
      ],
    });
    expect(await syncGrants(db, 'ldap', [])).toMatchObject({ inserted: 0, updated: 0, deleted: 1 });
    expect(await readGrants(db)).toEqual([{ tail: 'ann', head: 'team', level: 1, source: 'manual' }]);
  });

  it('bad input: a clear error naming the entry, and nothing written', async () => {
    await loadGraph(db, {
      nodes: [
        u('ann'),
        g('team'),
        o('doc'),
      ],
      grants: [grant('ann', 1, 'doc', 'ldap')],
    });
    await refresh(db);
    const before = await readGrants(db);
    const refused = async (desired: unknown, message: RegExp, source = 'ldap') => {
      const error = await syncGrants(db, source, desired as DesiredGrant[]).then(() => null, (e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidInputError);
      expect((error as Error).message).toMatch(message);
      expect(await readGrants(db)).toEqual(before);
      const [pending] = await db.query(sql`select count(*)::int as n from permgraph.changes`);
      expect(pending.n).toBe(0);
    };
    const ok = { tail: 'ann', head: 'team', level: 2 };
    await refused([ok, { tail: 'ann', head: 'team', level: 1 }], /grants #1 and #2 both join "ann" -> "team"/);
    await refused([ok, { tail: 'team', head: 'doc', level: 0 }], /grant #2: level must be 1 \(read\), 2 \(write\) or 3 \(manage\), got 0/);
    await refused([{ tail: 'team', head: 'doc', level: 4 }], /grant #1: level must be .* got 4/);
    await refused([{ tail: 'team', head: 'doc', level: 'owner' }], /grant #1: level must be .* got "owner"/);
    await refused([ok, { tail: 'ghost', head: 'team', level: 1 }], /grant #2 \(ghost -> team\): tail "ghost" does not exist/);
    await refused([{ tail: 'ann', head: 'ghost', level: 1 }, { tail: 'x', head: 'y', level: 1 }], /grant #1 \(ann -> ghost\): head "ghost" does not exist \(and 1 more bad grant\(s\)\)/);
    await refused([ok, { tail: 'doc', head: 'team', level: 1 }], /tail "doc" is an object; only users and groups can hold grants/);
    await refused([{ tail: 'ann', head: 'team' }], /grant #1 needs "level"/);
    await refused([{ tail: 'ann', level: 1 }], /grant #1 needs "head" as a non-empty string/);
    await refused([{ tail: 'ann', head: 'team', level: 1, expires: 'never' }], /grant #1 has unknown field\(s\) expires/);
    await refused(['ann team 1'], /grant #1 must be an object/);
    await refused({ tail: 'ann' }, /must be an array/);
    await refused([ok], /source must be a non-empty string/, '');
  });
});

function byKey(a: GrantRow, b: GrantRow): number {
  return model.compareIds(a.tail, b.tail) || model.compareIds(a.head, b.head);
}
