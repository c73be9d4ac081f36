import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { listAudit, pruneAudit, setActor, type AuditEntry } from '../../src/app/audit.ts';
import { setSuperuser } from '../../src/app/rls.ts';
import { AUDIT_ACTIONS } from '../../src/constants.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { sql, type Queryable } from '../../src/db/pool.ts';
import type { RefGraph } from '../reference/model.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { createLogin } from '../helpers/logins.ts';
import { graphArbitrary, loadGraph } from '../helpers/graph.ts';
import { GraphState, mutationArbitrary } from '../helpers/mutations.ts';

/** The audit rows a change from `before` to `after` must produce, derived from the two graphs alone. */
function expectedEntries(before: RefGraph, after: RefGraph, actor: string): Partial<AuditEntry>[] {
  const out: Partial<AuditEntry>[] = [];
  const oldNodes = new Map(before.nodes.map((n) => [n.id, n]));
  const newNodes = new Map(after.nodes.map((n) => [n.id, n]));
  for (const n of after.nodes) {
    const old = oldNodes.get(n.id);
    if (!old) {
      out.push({ actor, action: 'create_node', tailId: null, headId: n.id, nodeKind: n.kind, newOwner: n.ownerId, newTrashAt: n.trashAt, oldOwner: null });
      continue;
    }
    if (old.ownerId !== n.ownerId) out.push({ actor, action: 'set_owner', headId: n.id, nodeKind: n.kind, oldOwner: old.ownerId, newOwner: n.ownerId });
    if (old.trashAt?.getTime() !== n.trashAt?.getTime()) {
      out.push({ actor, action: 'set_trash', headId: n.id, nodeKind: n.kind, oldTrashAt: old.trashAt, newTrashAt: n.trashAt });
    }
  }
  for (const n of before.nodes) {
    if (!newNodes.has(n.id)) out.push({ actor, action: 'delete_node', headId: n.id, nodeKind: n.kind, oldOwner: n.ownerId, oldTrashAt: n.trashAt });
  }
  const key = (g: { tailId: string; headId: string; source: string }) => `${g.tailId}\u0000${g.headId}\u0000${g.source}`;
  const oldGrants = new Map(before.grants.map((g) => [key(g), g]));
  const newGrants = new Map(after.grants.map((g) => [key(g), g]));
  for (const g of after.grants) {
    const old = oldGrants.get(key(g));
    const base = { actor, tailId: g.tailId, headId: g.headId, source: g.source };
    if (!old) out.push({ ...base, action: 'grant', oldLevel: null, newLevel: g.level });
    else if (old.level !== g.level) out.push({ ...base, action: 'change_level', oldLevel: old.level, newLevel: g.level });
  }
  for (const g of before.grants) {
    if (!newGrants.has(key(g))) out.push({ actor, tailId: g.tailId, headId: g.headId, source: g.source, action: 'revoke', oldLevel: g.level, newLevel: null });
  }
  return out;
}

const order = (e: Partial<AuditEntry>) => JSON.stringify([e.action, e.tailId ?? null, e.headId ?? null, e.source ?? null]);

async function allEntries(db: Queryable, after = 0): Promise<AuditEntry[]> {
  const entries: AuditEntry[] = [];
  let cursor: number | null = after;
  while (cursor !== null) {
    const page = await listAudit(db, { after: cursor, limit: 50 });
    entries.push(...page.entries);
    cursor = page.nextCursor;
  }
  return entries;
}

async function lastId(db: Queryable): Promise<number> {
  const [{ id }] = await db.query(sql`select coalesce(max(id), 0)::bigint as id from permgraph.audit_log`);
  return Number(id);
}

describe('audit log', async () => {
  const { db, url } = await createTestDatabase();
  const [{ role }] = await db.query(sql`select current_user as role`);

  it('random change sequences: the audit rows are exactly the changes made, with the actor', async () => {
    const actorArb = fc.option(fc.constantFrom('alice@example.com', 'svc:billing', 'Zoë'), { nil: null });
    await fc.assert(
      fc.asyncProperty(
        graphArbitrary({ users: 4, groups: 5, objects: 3, grants: 10 }),
        fc.array(fc.tuple(mutationArbitrary, actorArb), { minLength: 1, maxLength: 25 }),
        async (graph, steps) => {
          await loadGraph(db, graph);
          const state = new GraphState(graph);
          for (const [mutation, actor] of steps) {
            const before = state.snapshot();
            const from = await lastId(db);
            await db.tx(async (tx) => {
              if (actor !== null) await setActor(tx, actor);
              await state.apply(tx, mutation);
            });
            const expected = expectedEntries(before, state.snapshot(), actor ?? role);
            const actual = await allEntries(db, from);
            expect(actual.map((e) => ({ ...e })).sort((a, b) => order(a).localeCompare(order(b)))).toEqual(
              expected.sort((a, b) => order(a).localeCompare(order(b))).map((e) => expect.objectContaining(e)),
            );
          }
        },
      ),
      { numRuns: 25 },
    );
  });

  it('records the login when no actor is set (SET ROLE does not change it); the setting wins', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const from = await lastId(db);
    const writer = await createLogin(db, url, 'auditwriter', 'permgraph_writer');
    await writer.db.query(sql`insert into permgraph.nodes (id, kind) values ('by-login', 'user')`);
    await writer.db.tx(async (tx) => {
      await setActor(tx, 'named-actor');
      await tx.query(sql`insert into permgraph.nodes (id, kind) values ('by-setting', 'user')`);
    });
    await db.tx(async (tx) => {
      await tx.query(sql`set local role permgraph_writer`);
      await tx.query(sql`insert into permgraph.nodes (id, kind) values ('by-set-role', 'user')`);
    });
    const page = await listAudit(db, { action: 'create_node', after: from });
    expect(page.entries.map((e) => [e.headId, e.actor])).toEqual([
      ['by-login', writer.name],
      ['by-setting', 'named-actor'],
      ['by-set-role', role],
    ]);
    const logins = await db.query(sql`select head_id, db_role from permgraph.audit_log where id > ${from} order by id`);
    expect(logins).toEqual([
      { head_id: 'by-login', db_role: writer.name },
      { head_id: 'by-setting', db_role: writer.name },
      { head_id: 'by-set-role', db_role: role },
    ]);
  });

  it('making a user an application superuser, or no longer one, is recorded with who did it', async () => {
    await loadGraph(db, { nodes: [], grants: [] });
    const from = await lastId(db);
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('ursula', 'user'), ('plain', 'user')`);
    await db.query(sql`insert into permgraph.nodes (id, kind, is_superuser) values ('root', 'user', true)`);
    await db.tx(async (tx) => {
      await setActor(tx, 'admin@example.com');
      await setSuperuser(tx, 'ursula', true);
      await setSuperuser(tx, 'plain', false); // no change, no entry
    });
    await setSuperuser(db, 'ursula', false);
    const entries = (await listAudit(db, { after: from })).entries;
    expect(entries.map((e) => [e.action, e.headId, e.details, e.action === 'set_superuser' ? e.actor : null])).toEqual([
      ['create_node', 'plain', null, null], // (one statement's entries in id order)
      ['create_node', 'ursula', null, null],
      ['create_node', 'root', { superuser: true }, null],
      ['set_superuser', 'ursula', { superuser: true }, 'admin@example.com'],
      ['set_superuser', 'ursula', { superuser: false }, role],
    ]);
    expect((await listAudit(db, { action: 'set_superuser', target: 'ursula' })).entries).toHaveLength(2);
  });

  it('UPDATE, DELETE and TRUNCATE on audit_log are refused; pruning leaves a trace', async () => {
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('trace-me', 'user')`);
    const before = await lastId(db);
    await expect(db.query(sql`update permgraph.audit_log set actor = 'someone else'`)).rejects.toThrow(
      "permgraph: audit_log is append-only: UPDATE is refused (the schema's owner may drop old entries with permgraph.prune_audit_log(before))",
    );
    await expect(db.query(sql`delete from permgraph.audit_log where id = ${before}`)).rejects.toThrow(/audit_log is append-only: DELETE is refused/);
    await expect(db.query(sql`truncate permgraph.audit_log`)).rejects.toThrow(/audit_log is append-only: TRUNCATE is refused/);
    expect(await lastId(db)).toBe(before);
    await db.query(sql`select permgraph.prune_audit_log(now() + interval '1 minute')`);
    const after = await allEntries(db);
    expect(after.map((e) => [e.action, e.actor])).toEqual([['prune_audit', role]]);
  });

  it('pruneAudit deletes exactly the entries before its moment, as the owner only, and logs it; a future moment or bad input deletes nothing', async () => {
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('old-entry', 'user')`);
    // (5 ms apart: a Date keeps milliseconds, the log microseconds)
    const [{ cut }] = await db.query(sql`select clock_timestamp() as cut from pg_sleep(0.005)`);
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('new-entry', 'user')`);
    // the reference: which entries were written before the cut
    const everything = await allEntries(db);
    const older = everything.filter((e) => e.at < cut);
    expect(older.map((e) => e.headId)).toContain('old-entry');
    const newer = everything.filter((e) => e.at >= cut);
    expect(newer.map((e) => e.headId)).toEqual(['new-entry']);

    const reader = await createLogin(db, url, 'prune_reader', 'permgraph_worker');
    // (a Date gives its milliseconds: the cut-off to the microsecond is that with three zeros)
    const beforeExact = (cut as Date).toISOString().replace(/Z$/, '000Z');
    await expect(pruneAudit(reader.db, { before: cut, dryRun: true })).resolves.toEqual({ before: cut, beforeExact, entries: older.length, dryRun: true });
    await expect(pruneAudit(reader.db, { before: cut })).rejects.toMatchObject({ code: '42501', message: 'permission denied for function prune_audit_log' });
    await expect(pruneAudit(db, { before: new Date(Date.now() + 3_600_000) })).rejects.toThrow(/is in the future \(by the database's clock\): it would prune entries written now/);
    await expect(pruneAudit(db, { before: 'last tuesday' })).rejects.toThrow(InvalidInputError);
    await expect(pruneAudit(db, { olderThan: '3 weeks' })).rejects.toThrow(/olderThan "3 weeks" is not a duration/);
    await expect(pruneAudit(db, {} as never)).rejects.toThrow(/give the entries to prune as before \(a timestamp\) or olderThan/);
    await expect(pruneAudit(db, { olderThan: '1d' })).resolves.toMatchObject({ entries: 0, dryRun: false }); // nothing a day old here
    expect((await allEntries(db)).length).toBe(everything.length + 1); // the prune of nothing, logged

    await expect(pruneAudit(db, { before: cut.toISOString(), actor: 'ops@example.com' })).resolves.toEqual({ before: cut, beforeExact, entries: older.length, dryRun: false });
    const after = await allEntries(db);
    expect(after.filter((e) => e.at < cut)).toEqual([]);
    expect(after.filter((e) => e.action !== 'prune_audit').map((e) => e.id)).toEqual(newer.map((e) => e.id));
    expect(after.at(-1)).toMatchObject({ action: 'prune_audit', actor: 'ops@example.com', details: { before: beforeExact, entries: older.length } });
  });

  it('per-row auditing can be switched off for a transaction', async () => {
    const before = await lastId(db);
    await db.tx(async (tx) => {
      await tx.query(sql`set local permgraph.audit = 'off'`);
      await tx.query(sql`insert into permgraph.nodes (id, kind) values ('quiet', 'user')`);
    });
    expect(await lastId(db)).toBe(before);
  });

  it('filters and keyset pages agree with filtering the whole log', async () => {
    await db.query(sql`select permgraph.prune_audit_log(now() + interval '1 minute')`);
    await loadGraph(db, { nodes: [], grants: [] });
    const actors = ['ann', 'bob', 'cy'];
    for (let i = 0; i < 30; i++) {
      await db.tx(async (tx) => {
        await setActor(tx, actors[i % 3]!);
        await tx.query(sql`insert into permgraph.nodes (id, kind) values (${`n${i}`}, ${i % 2 ? 'group' : 'user'})`);
        if (i > 0) await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values (${`n${i - (i % 2)}`}, ${`n${i}`}, ${1 + (i % 3)}, ${`s${i % 4}`}) on conflict do nothing`);
      });
    }
    const everything = await allEntries(db);
    const [{ mid }] = await db.query(sql`select at + interval '0 second' as mid from permgraph.audit_log order by id offset 20 limit 1`);
    const filters = [
      { actor: 'bob' },
      { target: 'n4' },
      { source: 's1' },
      { action: 'grant' as const },
      { since: mid as Date },
      { until: mid as Date },
      { actor: 'ann', source: 's2' },
    ];
    for (const filter of filters) {
      const expected = everything.filter(
        (e) =>
          (filter.actor === undefined || e.actor === filter.actor) &&
          (filter.target === undefined || e.headId === filter.target || e.tailId === filter.target) &&
          (filter.source === undefined || e.source === filter.source) &&
          (filter.action === undefined || e.action === filter.action) &&
          (filter.since === undefined || e.at.getTime() >= filter.since.getTime()) &&
          (filter.until === undefined || e.at.getTime() < filter.until.getTime()),
      );
      const paged: AuditEntry[] = [];
      let after: number | undefined;
      for (;;) {
        const page = await listAudit(db, { ...filter, after, limit: 4 });
        paged.push(...page.entries);
        if (page.nextCursor === null) break;
        after = page.nextCursor;
      }
      expect(paged, JSON.stringify(filter)).toEqual(expected);
    }
    await expect(listAudit(db, { since: 'not a time' })).rejects.toThrow(/^since "not a time" is neither a timestamp with a time zone offset nor a date/);
    await expect(listAudit(db, { limit: 0 })).rejects.toThrow(/limit must be an integer from 1 to 10000, got 0/);
    await expect(listAudit(db, { limit: 10_001 })).rejects.toThrow(/limit must be an integer from 1 to 10000, got 10001/);
    await expect(listAudit(db, { after: 2 ** 63 })).rejects.toThrow(InvalidInputError);
    await expect(listAudit(db, { since: new Date('x') })).rejects.toThrow(/^since is an invalid Date$/);
  });

  it('the actions the API and the CLI accept are the ones the table may hold', async () => {
    const [{ definition }] = await db.query(sql`
      select pg_get_constraintdef(c.oid) as definition from pg_constraint c
      where c.conrelid = 'permgraph.audit_log'::regclass and c.conname = 'audit_log_action_valid'`);
    const allowed = [...(definition as string).matchAll(/'([a-z_]+)'::text/g)].map((m) => m[1]!);
    expect(allowed.length).toBeGreaterThan(0);
    expect([...AUDIT_ACTIONS].sort()).toEqual(allowed.sort());
    for (const action of AUDIT_ACTIONS) expect((await listAudit(db, { action })).entries.every((e) => e.action === action)).toBe(true);
  });
});
