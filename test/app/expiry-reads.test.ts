// Expiring grants on the read side (docs/semantics.md, "Expiring grants"):
// every read path treats a permission row whose valid_until has passed as
// absent, and one whose valid_until is still ahead as present, with no
// worker involved. The rows' valid_until is set here by hand, as the
// schema's owner, on rows computed by refresh(): what the engine writes is
// its own tests' business (test/engine/expiry.test.ts); these tests hold the
// readers to the column. The last block goes through real expiring grants
// and the engine, and waits for real expiries.
import type { Transaction } from '@databases/pg';
import fc from 'fast-check';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { explain } from '../../src/app/explain.ts';
import { listTargets, listUsers } from '../../src/app/listing.ts';
import { enableRowLevelSecurity } from '../../src/app/rls.ts';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { applyChanges, refresh } from '../../src/engine/apply.ts';
import { check } from '../../src/engine/check.ts';
import * as model from '../reference/model.ts';
import type { Level, RefGraph } from '../reference/model.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { graphArbitrary, loadGraph } from '../helpers/graph.ts';
import { createLogin } from '../helpers/logins.ts';
import { runCli } from '../helpers/cli.ts';

const HOUR = 3600 * 1000;
const AGO = () => new Date(Date.now() - HOUR);
const AHEAD = () => new Date(Date.now() + HOUR);

// ann -w-> eng (which owns roadmap, which owns spec); bob -r-> roadmap; dan -r-> spec, dan -r-> roadmap.
const graph: RefGraph = {
  nodes: [u('ann'), u('bob'), u('dan'), g('eng'), g('roadmap', 'eng'), o('spec', 'roadmap')],
  grants: [grant('ann', 2, 'eng'), grant('bob', 1, 'roadmap'), grant('dan', 1, 'spec'), grant('dan', 1, 'roadmap')],
};

async function setValidUntil(db: Queryable, user: string, target: string, validUntil: Date | null): Promise<void> {
  const rows = await db.query(sql`
    update permgraph.permissions set valid_until = ${validUntil}
    where user_id = ${user} and target_id = ${target} returning 1`);
  expect(rows, `a row (${user}, ${target}) to set valid_until on`).toHaveLength(1);
}

const ids = (page: { items: { id: string }[] }) => page.items.map((i) => i.id);
/** A moment of whole milliseconds, as set here, to the microsecond the database stores. */
const exactOf = (at: Date) => at.toISOString().replace(/Z$/, '000Z');

describe('reads treat a row whose valid_until has passed as absent', async () => {
  const { db, url } = await createTestDatabase();
  const app = await createLogin(db, url, 'expiry_rls', 'permgraph_reader');

  beforeEach(async () => {
    await loadGraph(db, graph);
    await refresh(db);
  });

  it('the graph without expiries gives the access the expiry tests take away', async () => {
    expect(await check(db, 'ann', 'spec', 2)).toBe(true);
    expect(ids(await listTargets(db, 'ann'))).toEqual(['ann', 'eng', 'roadmap', 'spec']);
    const [row] = await db.query(sql`select valid_until from permgraph.permissions where user_id = 'ann' and target_id = 'eng'`);
    expect(row.valid_until).toBeNull();
  });

  it('check, check_op and can: refused past valid_until, allowed before it', async () => {
    await setValidUntil(db, 'ann', 'eng', AGO());
    await setValidUntil(db, 'ann', 'roadmap', AGO());
    await setValidUntil(db, 'bob', 'roadmap', AHEAD());
    const answers = await db.query(sql`
      select permgraph.check('ann', 'eng', 1) as ann_eng, permgraph.check('ann', 'spec', 1) as ann_spec,
             permgraph.check('ann', 'ann', 3) as ann_self,
             permgraph.can('ann', 'doc-1', 'roadmap', 1) as ann_doc, permgraph.can('ann', 'doc-1', 'eng', 1) as ann_doc_eng,
             permgraph.check('bob', 'roadmap', 1) as bob_roadmap, permgraph.check('bob', 'spec', 1) as bob_spec,
             permgraph.can('bob', 'doc-1', 'roadmap', 1) as bob_doc`);
    expect(answers[0]).toEqual({
      ann_eng: false, ann_spec: false, ann_self: true, ann_doc: false, ann_doc_eng: false,
      bob_roadmap: true, bob_spec: true, bob_doc: true,
    });
    expect(await check(db, 'ann', 'roadmap', 1)).toBe(false);
    // The moment itself: a row whose valid_until is now() is already absent.
    await db.tx(async (tx) => {
      await tx.query(sql`update permgraph.permissions set valid_until = now() where user_id = 'bob' and target_id = 'roadmap'`);
      const [r] = await tx.query(sql`select permgraph.check('bob', 'roadmap', 1) as allowed`);
      expect(r.allowed).toBe(false);
    });
  });

  it('check() stays an index-only scan of the permission rows', async () => {
    const plan = await db.tx(async (tx) => {
      // No statistics on a tiny table: ask whether the index alone can answer (it cannot if valid_until is not in it).
      await tx.query(sql`set local enable_seqscan = off`);
      await tx.query(sql`set local enable_bitmapscan = off`);
      const rows: { 'QUERY PLAN': string }[] = await tx.query(sql`
        explain (costs off)
        select exists (select 1 from permgraph.effective_permissions p
                       where p.user_id = ${'ann'} and p.target_id = ${'eng'} and p.level >= ${2})`);
      return rows.map((r) => r['QUERY PLAN']).join('\n');
    });
    // either covering index will do: both include valid_until
    expect(plan).toMatch(/Index Only Scan using (permissions_key_with_valid_until|permissions_target_idx) on permissions p/);
    expect(plan).not.toMatch(/Seq Scan on permissions|Index Scan using permissions/);
    expect(plan).toContain('valid_until');
  });

  it('the view effective_permissions: expired rows absent, valid_until as its last column', async () => {
    const ahead = AHEAD();
    await setValidUntil(db, 'ann', 'eng', AGO());
    await setValidUntil(db, 'bob', 'roadmap', ahead);
    const columns = await db.query(sql`
      select attname from pg_attribute where attrelid = 'permgraph.effective_permissions'::regclass and attnum > 0 order by attnum`);
    expect(columns.map((c: { attname: string }) => c.attname)).toEqual(['user_id', 'target_id', 'level', 'traverse_owned', 'valid_until']);
    const rows = await db.query(sql`select * from permgraph.effective_permissions where user_id in ('ann', 'bob') order by 1, 2`);
    expect(rows).toEqual([
      { user_id: 'ann', target_id: 'ann', level: 3, traverse_owned: true, valid_until: null },
      { user_id: 'ann', target_id: 'roadmap', level: 2, traverse_owned: true, valid_until: null },
      { user_id: 'bob', target_id: 'bob', level: 3, traverse_owned: true, valid_until: null },
      { user_id: 'bob', target_id: 'roadmap', level: 1, traverse_owned: true, valid_until: ahead },
    ]);
  });

  it('list_targets / listTargets: expired rows list nothing; the others carry their valid_until', async () => {
    const ahead = AHEAD();
    await setValidUntil(db, 'ann', 'eng', AGO());
    expect(await listTargets(db, 'ann')).toEqual({
      items: [
        { id: 'ann', kind: 'user', level: 3, validUntil: null, validUntilExact: null },
        { id: 'roadmap', kind: 'group', level: 2, validUntil: null, validUntilExact: null },
        { id: 'spec', kind: 'object', level: 2, validUntil: null, validUntilExact: null },
      ],
      next: null,
    });
    await setValidUntil(db, 'ann', 'roadmap', ahead);
    expect(await listTargets(db, 'ann', { kind: 'object' })).toEqual({ items: [{ id: 'spec', kind: 'object', level: 2, validUntil: ahead, validUntilExact: exactOf(ahead) }], next: null });
    await setValidUntil(db, 'ann', 'roadmap', AGO());
    expect(ids(await listTargets(db, 'ann'))).toEqual(['ann']);
    // keyset pages skip expired rows too
    await setValidUntil(db, 'bob', 'roadmap', ahead);
    const first = await listTargets(db, 'bob', { limit: 1 });
    expect(ids(first)).toEqual(['bob']);
    expect(await listTargets(db, 'bob', { limit: 1, after: first.next })).toMatchObject({ items: [{ id: 'roadmap', validUntil: ahead, validUntilExact: exactOf(ahead) }] });
    const [sqlRow] = await db.query(sql`select * from permgraph.list_targets('bob', 1, 'object', null, 10)`);
    expect(sqlRow).toEqual({ target_id: 'spec', kind: 'object', level: 1, valid_until: ahead });
  });

  it("an item's valid_until: the latest of the rows giving its level, never when one of them never expires", async () => {
    // dan reaches spec directly (row dan,spec) and through its owner (row dan,roadmap), both at read.
    const soon = new Date(Date.now() + HOUR);
    const later = new Date(Date.now() + 2 * HOUR);
    const item = async () => (await listTargets(db, 'dan', { kind: 'object' })).items;
    const who = async () => (await listUsers(db, 'spec')).items.find((i) => i.id === 'dan');
    await setValidUntil(db, 'dan', 'spec', soon);
    expect(await item()).toEqual([{ id: 'spec', kind: 'object', level: 1, validUntil: null, validUntilExact: null }]);
    expect(await who()).toEqual({ id: 'dan', level: 1, validUntil: null, validUntilExact: null });
    await setValidUntil(db, 'dan', 'roadmap', later);
    expect(await item()).toEqual([{ id: 'spec', kind: 'object', level: 1, validUntil: later, validUntilExact: exactOf(later) }]);
    expect(await who()).toEqual({ id: 'dan', level: 1, validUntil: later, validUntilExact: exactOf(later) });
    await setValidUntil(db, 'dan', 'spec', null);
    expect(await item()).toEqual([{ id: 'spec', kind: 'object', level: 1, validUntil: null, validUntilExact: null }]);
    // a higher level through one row: that row's valid_until alone
    await db.query(sql`update permgraph.permissions set level = 2 where user_id = 'dan' and target_id = 'roadmap'`);
    expect(await item()).toEqual([{ id: 'spec', kind: 'object', level: 2, validUntil: later, validUntilExact: exactOf(later) }]);
    expect(await who()).toEqual({ id: 'dan', level: 2, validUntil: later, validUntilExact: exactOf(later) });
    // once that row has expired, the other row's level and valid_until
    await setValidUntil(db, 'dan', 'roadmap', AGO());
    await setValidUntil(db, 'dan', 'spec', soon);
    expect(await item()).toEqual([{ id: 'spec', kind: 'object', level: 1, validUntil: soon, validUntilExact: exactOf(soon) }]);
    expect(await who()).toEqual({ id: 'dan', level: 1, validUntil: soon, validUntilExact: exactOf(soon) });
  });

  it('list_users / listUsers (who): expired rows give nobody access; the others carry their valid_until', async () => {
    const ahead = AHEAD();
    expect(ids(await listUsers(db, 'spec'))).toEqual(['ann', 'bob', 'dan']);
    await setValidUntil(db, 'ann', 'roadmap', AGO());
    await setValidUntil(db, 'bob', 'roadmap', ahead);
    expect(await listUsers(db, 'spec')).toEqual({
      items: [
        { id: 'bob', level: 1, validUntil: ahead, validUntilExact: exactOf(ahead) },
        { id: 'dan', level: 1, validUntil: null, validUntilExact: null },
      ],
      next: null,
    });
    expect(await listUsers(db, 'eng')).toEqual({ items: [{ id: 'ann', level: 2, validUntil: null, validUntilExact: null }], next: null });
    await setValidUntil(db, 'ann', 'eng', AGO());
    expect(await listUsers(db, 'eng')).toEqual({ items: [], next: null });
    const rows = await db.query(sql`select * from permgraph.list_users('roadmap', 1, null, 10)`);
    expect(rows).toEqual([
      { user_id: 'bob', level: 1, valid_until: ahead },
      { user_id: 'dan', level: 1, valid_until: null },
    ]);
  });

  it('superusers are not bounded by any row', async () => {
    await db.query(sql`update permgraph.nodes set is_superuser = true where id = 'bob'`);
    await setValidUntil(db, 'bob', 'roadmap', AGO());
    expect(await check(db, 'bob', 'spec', 3)).toBe(true);
    expect((await listUsers(db, 'spec')).items.find((i) => i.id === 'bob')).toEqual({ id: 'bob', level: 3, validUntil: null, validUntilExact: null });
    expect((await explain(db, 'bob', 'spec')).validUntil).toBeNull();
  });

  it("explain: the rows check() reads with their valid_until; 'expired' when they have expired and await recomputation", async () => {
    const ahead = AHEAD();
    await setValidUntil(db, 'bob', 'roadmap', ahead);
    const bob = await explain(db, 'bob', 'spec', 1);
    expect(bob).toMatchObject({
      allowed: true, reason: null, via: 'owner', validUntil: ahead, expiredAt: null,
      rows: [{ target: 'roadmap', level: 1, traverseOwned: true, validUntil: ahead, expired: false }],
    });

    const ago = AGO();
    await setValidUntil(db, 'ann', 'roadmap', ago);
    const ann = await explain(db, 'ann', 'spec', 2);
    expect(ann).toMatchObject({
      allowed: false, reason: 'expired', bestLevel: 2, via: 'owner', validUntil: null, expiredAt: ago,
      rows: [{ target: 'roadmap', level: 2, traverseOwned: true, validUntil: ago, expired: true }],
    });
    // the path the recomputation will restore is still shown
    expect(ann.path.map((e) => e.head)).toEqual(['eng', 'roadmap', 'spec']);
    expect(await check(db, 'ann', 'spec', 2)).toBe(false);
    // on eng itself ann's row has not expired
    expect(await explain(db, 'ann', 'eng', 2)).toMatchObject({ allowed: true, reason: null, validUntil: null, rows: [{ target: 'eng', expired: false }] });

    // two rows: the thing's own first, then its owner's; the answer holds until the later of the allowing ones
    const later = new Date(Date.now() + 2 * HOUR);
    await setValidUntil(db, 'dan', 'spec', later);
    await setValidUntil(db, 'dan', 'roadmap', ahead);
    const dan = await explain(db, 'dan', 'spec', 1);
    expect(dan).toMatchObject({ allowed: true, validUntil: later, validUntilExact: exactOf(later) });
    expect(dan.rows.map((r) => [r.target, r.validUntil])).toEqual([['spec', later], ['roadmap', ahead]]);
    await setValidUntil(db, 'dan', 'spec', AGO());
    expect(await explain(db, 'dan', 'spec', 1)).toMatchObject({ allowed: true, validUntil: ahead, validUntilExact: exactOf(ahead) });
    await setValidUntil(db, 'dan', 'roadmap', AGO());
    expect(await explain(db, 'dan', 'spec', 1)).toMatchObject({ allowed: false, reason: 'expired' });
    expect(await check(db, 'dan', 'spec', 1)).toBe(false);

    // Not 'expired' when the path does not allow either: the graph's answer comes first.
    expect(await explain(db, 'ann', 'spec', 3)).toMatchObject({ allowed: false, reason: 'level too low' });
  });

  it('explain without a level: allowed while any live row allows, validUntil about the best level', async () => {
    // ann's row on roadmap (write) has expired; her row on its owner eng says read only, and never expires.
    await setValidUntil(db, 'ann', 'roadmap', AGO());
    await db.query(sql`update permgraph.permissions set level = 1 where user_id = 'ann' and target_id = 'eng'`);
    expect(await check(db, 'ann', 'roadmap', 1)).toBe(true);
    expect(await explain(db, 'ann', 'roadmap')).toMatchObject({ allowed: true, reason: null, bestLevel: 2, validUntil: null, expiredAt: null });
    expect(await explain(db, 'ann', 'roadmap', 2)).toMatchObject({ allowed: false, reason: 'expired' });
    // with the best level held by a live bounded row, validUntil is that row's
    const ahead = AHEAD();
    await setValidUntil(db, 'ann', 'roadmap', ahead);
    expect(await explain(db, 'ann', 'roadmap')).toMatchObject({ allowed: true, validUntil: ahead, validUntilExact: exactOf(ahead) });
  });

  it("explain says 'expired' when the grant that gave access has ended and its rows await recomputation; 'no path' after it", async () => {
    // dan reads spec by two grants; both end (the edges' expiry and the rows' valid_until alike), and no batch runs yet
    const ended = AGO();
    await db.query(sql`update permgraph.grants set expires_at = ${ended} where tail_id = 'dan'`);
    await setValidUntil(db, 'dan', 'spec', ended);
    await setValidUntil(db, 'dan', 'roadmap', ended);
    expect(await check(db, 'dan', 'spec', 1)).toBe(false);
    expect(await explain(db, 'dan', 'spec', 1)).toMatchObject({ allowed: false, reason: 'expired', bestLevel: 0, path: [], expiredAt: ended });
    const cli = await runCli(['--database-url', url, 'explain', 'dan', 'spec', '--level', 'read']);
    expect(cli.stdout).toContain(`dan may not read spec: access expired at ${ended.toISOString().replace(/Z$/, '000Z')} and awaits recomputation (the grants that gave it have ended: no path is left)\n`);
    await applyChanges(db);
    expect(await explain(db, 'dan', 'spec', 1)).toMatchObject({ allowed: false, reason: 'no path', expiredAt: null });
  });

  describe('row-level security policies', () => {
    beforeAll(async () => {
      await db.query(sql`create table public.docs (id text primary key, owner_id text)`);
      await db.query(sql`insert into public.docs values ('d-eng', 'eng'), ('d-roadmap', 'roadmap')`);
      await db.query(sql`grant select, update, delete on public.docs to ${sql.ident(app.name)}`);
      await enableRowLevelSecurity(db, 'public.docs', 'id', 'owner_id');
    });

    /** The ids the app's login sees as `user`, and the ids an UPDATE reaches (rolled back). */
    async function asUser(user: string): Promise<{ visible: string[]; writable: string[] }> {
      let result: { visible: string[]; writable: string[] } | undefined;
      await app.db
        .tx(async (tx: Transaction) => {
          await tx.query(sql`select set_config('permgraph.user_id', ${user}, true)`);
          const visible = (await tx.query(sql`select id from public.docs order by id`)).map((r: { id: string }) => r.id);
          const writable = (await tx.query(sql`update public.docs set owner_id = owner_id returning id`)).map((r: { id: string }) => r.id).sort();
          result = { visible, writable };
          throw new Error('rollback');
        })
        .catch((error: Error) => {
          if (error.message !== 'rollback') throw error;
        });
      return result!;
    }

    it('a policy hides the rows reached only through an expired row, and keeps those whose row has not expired', async () => {
      expect(await asUser('ann')).toEqual({ visible: ['d-eng', 'd-roadmap'], writable: ['d-eng', 'd-roadmap'] });
      await setValidUntil(db, 'ann', 'roadmap', AGO());
      expect(await asUser('ann')).toEqual({ visible: ['d-eng'], writable: ['d-eng'] });
      await setValidUntil(db, 'ann', 'eng', AGO());
      expect(await asUser('ann')).toEqual({ visible: [], writable: [] });
      await setValidUntil(db, 'bob', 'roadmap', AHEAD());
      expect(await asUser('bob')).toEqual({ visible: ['d-roadmap'], writable: [] });
    });
  });
});

/** Through real expiring grants: the engine writes valid_until, the reads honour it on time, with no batch in between. */
describe('expiring grants through the engine', async () => {
  const { db } = await createTestDatabase();

  beforeEach(async () => {
    await loadGraph(db, { nodes: [u('u'), u('v'), g('g'), o('doc', 'g')], grants: [] });
    await refresh(db);
  });

  /** Waits (without any worker or batch) until the database's now() is past `at`. */
  async function waitPast(at: Date): Promise<void> {
    for (;;) {
      const [{ past }] = await db.query(sql`select now() > ${at}::timestamptz as past`);
      if (past) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  it('a grant that expires ends access through check, listings and explain at its expiry, with no worker running', async () => {
    // (now() has microseconds: the exact expiry as the database writes it in UTC, beside the Date)
    const [{ at, exact }] = await db.query(sql`
      insert into permgraph.grants (tail_id, head_id, level, expires_at) values ('u', 'g', 2, now() + interval '2 seconds')
      returning expires_at as at, to_char(expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as exact`);
    await applyChanges(db);
    expect(await check(db, 'u', 'doc', 2)).toBe(true);
    expect((await listTargets(db, 'u', { kind: 'object' })).items).toEqual([{ id: 'doc', kind: 'object', level: 2, validUntil: at, validUntilExact: exact }]);
    await waitPast(at);
    expect(await check(db, 'u', 'doc', 1)).toBe(false);
    expect(ids(await listTargets(db, 'u'))).toEqual(['u']);
    expect(ids(await listUsers(db, 'doc'))).toEqual([]);
    // until a batch recomputes the rows, explain says why access ended, and when
    expect(await explain(db, 'u', 'doc')).toMatchObject({
      allowed: false, reason: 'expired', bestLevel: 0, expiredAt: at, rows: [{ target: 'g', expired: true, validUntil: at, validUntilExact: exact }],
    });
  });

  it('the worked example: write expiring at T next to read forever; nothing from T until the batch, then read', async () => {
    const [{ at }] = await db.query(sql`select now() + interval '2 seconds' as at`);
    await db.query(sql`
      insert into permgraph.grants (tail_id, head_id, level, source, expires_at)
      values ('u', 'g', 2, 'temp', ${at}), ('u', 'g', 1, 'default', null)`);
    await applyChanges(db);
    const row = async () => db.query(sql`select level, traverse_owned, valid_until from permgraph.permissions where user_id = 'u' and target_id = 'g'`);
    expect(await row()).toEqual([{ level: 2, traverse_owned: true, valid_until: at }]);
    await waitPast(at);
    expect(await check(db, 'u', 'g', 1)).toBe(false);
    expect(await explain(db, 'u', 'g', 1)).toMatchObject({ allowed: false, reason: 'expired', bestLevel: 1, expiredAt: at });
    await applyChanges(db);
    expect(await row()).toEqual([{ level: 1, traverse_owned: true, valid_until: null }]);
    expect(await check(db, 'u', 'g', 1)).toBe(true);
    expect(await check(db, 'u', 'g', 2)).toBe(false);
  });

  it('explain leaves an expired grant out of its paths, and shows the expiry of the grants it takes', async () => {
    // Independent of the engine: explain searches the edges, which carry their grant's expiry from the capture on.
    const ahead = AHEAD();
    await db.query(sql`
      insert into permgraph.grants (tail_id, head_id, level, source, expires_at)
      values ('u', 'g', 3, 'old', now() - interval '1 second'), ('u', 'g', 1, 'new', ${ahead}), ('v', 'g', 2, 'default', null)`);
    const e = await explain(db, 'u', 'doc');
    expect(e).toMatchObject({ bestLevel: 1, via: 'owner' });
    expect(e.path).toEqual([
      { tail: 'u', head: 'g', level: 1, source: 'new', expiresAt: ahead, expiresAtExact: ahead.toISOString().replace(/Z$/, '000Z') },
      { tail: 'g', head: 'doc', level: 3, source: 'owner', expiresAt: null, expiresAtExact: null },
    ]);
    expect((await explain(db, 'v', 'doc')).path[0]).toEqual({ tail: 'v', head: 'g', level: 2, source: 'default', expiresAt: null, expiresAtExact: null });
    await db.query(sql`update permgraph.grants set expires_at = now() - interval '1 second' where source = 'new'`);
    expect(await explain(db, 'u', 'doc')).toMatchObject({ allowed: false, reason: 'no path', bestLevel: 0, path: [] });
  });
});

/**
 * The level and validUntil a listing must give `user` on `x`, from the
 * model's rows: the best of the row on x and the row on x's owner (with
 * traverse_owned), valid until the latest valid_until among the rows giving
 * that level (null when one of them has none).
 */
function expectedItem(rows: model.PermissionRow[], graph: RefGraph, user: string, x: string): { level: number; validUntil: Date | null } {
  const owner = graph.nodes.find((n) => n.id === x)?.ownerId ?? null;
  const candidates = rows.filter(
    (r) => r.userId === user && (r.targetId === x || (owner !== null && owner !== x && r.targetId === owner && r.traverseOwned)),
  );
  const level = Math.max(0, ...candidates.map((r) => r.level));
  const giving = candidates.filter((r) => r.level === level);
  const validUntil = giving.some((r) => r.validUntil === null) ? null : new Date(Math.max(...giving.map((r) => r.validUntil!.getTime())));
  return { level, validUntil };
}

describe('random graphs with expiring grants, against the reference model', async () => {
  const { db } = await createTestDatabase();

  it('check, listTargets and listUsers agree with the model now, and each item carries the validUntil of its rows', async () => {
    await fc.assert(
      fc.asyncProperty(graphArbitrary({ users: 5, groups: 6, objects: 4, grants: 24 }, 0, true), fc.constantFrom<Level>(1, 2, 3), async (graph, level) => {
        await loadGraph(db, graph);
        await refresh(db);
        const now = new Date();
        const rows = model.computePermissions(graph, now);
        for (const user of graph.nodes.filter((n) => n.kind === 'user')) {
          const items = (await listTargets(db, user.id, { level, limit: 10_000 })).items;
          const allowed = graph.nodes.filter((n) => model.check(graph, user.id, n.id, level, now)).map((n) => n.id).sort(model.compareIds);
          expect(items.map((i) => i.id), `targets of ${user.id} at ${level}`).toEqual(allowed);
          for (const item of items) {
            expect({ level: item.level, validUntil: item.validUntil }, `${user.id} on ${item.id}`).toEqual(expectedItem(rows, graph, user.id, item.id));
          }
        }
        for (const target of graph.nodes) {
          const items = (await listUsers(db, target.id, { level, limit: 10_000 })).items;
          for (const item of items) {
            expect({ level: item.level, validUntil: item.validUntil }, `${item.id} on ${target.id}`).toEqual(expectedItem(rows, graph, item.id, target.id));
          }
          for (const user of graph.nodes.filter((n) => n.kind === 'user')) {
            expect(await check(db, user.id, target.id, level), `check ${user.id} ${target.id} ${level}`).toBe(model.check(graph, user.id, target.id, level, now));
          }
        }
      }),
      { numRuns: 25 },
    );
  });
});
