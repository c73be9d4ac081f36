// Integrity rules (sql/functions/010_integrity.sql): bad input is refused with an error
// that names the problem, and a refused statement changes no table at all.
import { IsolationLevel, type SQLQuery } from '@databases/pg';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { openPool, sql, type ConnectionPool } from '../../src/db/pool.ts';
import { check } from '../../src/engine/check.ts';
import { InvalidInputError } from '../../src/errors.ts';
import * as model from '../reference/model.ts';
import type { Level, RefGraph } from '../reference/model.ts';
import { g, grant, o, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { PAST, loadGraph, readGraph, readPermissions } from '../helpers/graph.ts';
import { failureOf, type DbError } from '../helpers/failure.ts';
import { waitUntil } from '../helpers/cli.ts';

/**
 * Users, groups (an ownership chain g1 -> g2 -> g3, a trashed group), objects,
 * a self-owned user, and grants of every shape, so that every table the
 * snapshot covers has rows.
 */
const base: RefGraph = {
  nodes: [
    u('u1'), u('u2', 'u2'), u('u3'),
    g('g1', 'u1'), g('g2', 'g1'), g('g3', 'g2'),
    g('gA'), g('gB', 'u3'), g('gR'), g('gT', 'u1', PAST),
    o('o1', 'g1'), o('o2'),
  ],
  grants: [
    grant('u2', 1, 'g1'),
    grant('u3', 3, 'gA'),
    grant('gA', 2, 'o1'),
    grant('u1', 1, 'gR'),
    grant('gR', 3, 'u2'),
    grant('gR', 2, 'g3'),
    grant('g1', 3, 'u3', 's'),
    grant('u3', 1, 'o2'),
  ],
};


describe('integrity rules', async () => {
  const { db, url } = await createTestDatabase();

  /** Every row of every table a statement could touch, in a stable order. */
  async function snapshot(): Promise<Record<string, unknown[]>> {
    return {
      nodes: await db.query(sql`select * from permgraph.nodes order by id`),
      grants: await db.query(sql`select * from permgraph.grants order by tail_id, head_id, source`),
      permissions: await db.query(sql`select * from permgraph.permissions order by user_id, target_id`),
      trashed_groups: await db.query(sql`select * from permgraph.trashed_groups order by group_id`),
      changes: await db.query(sql`select * from permgraph.changes order by id`),
    };
  }


  /** Runs a statement that must be refused, and checks that it changed nothing. */
  async function expectRefused(query: SQLQuery, message: RegExp, code?: string): Promise<DbError> {
    const before = await snapshot();
    const error = await failureOf(db.query(query));
    expect(error.message).toMatch(message);
    if (code !== undefined) expect(error.code).toBe(code);
    expect(await snapshot()).toEqual(before);
    return error;
  }

  async function ownerOf(id: string): Promise<string | null> {
    const [row] = await db.query(sql`select owner_id from permgraph.nodes where id = ${id}`);
    return row.owner_id;
  }

  /** Owner edges that lead back to where they started (there must be none). */
  async function ownershipCycles(): Promise<unknown[]> {
    return db.query(sql`
      with recursive up(start, id, depth) as (
        select id, owner_id, 1 from permgraph.nodes where owner_id is not null and owner_id <> id
        union all
        select up.start, n.owner_id, up.depth + 1
        from up join permgraph.nodes n on n.id = up.id
        where n.owner_id is not null and n.owner_id <> n.id and up.id <> up.start and up.depth < 100
      )
      select distinct start from up where id = start`);
  }

  beforeEach(async () => {
    await loadGraph(db, base);
    await db.query(sql`select permgraph.refresh()`);
    // Leave a pending change so the changes table has a row to protect too.
    await db.query(sql`update permgraph.grants set level = 2 where tail_id = 'u2' and head_id = 'g1'`);
    const tables = await snapshot();
    for (const [name, rows] of Object.entries(tables)) expect(rows.length, name).toBeGreaterThan(0);
  });

  describe('ids', () => {
    it('an id is 1 to 256 characters with no control characters; errors never echo a huge id', async () => {
      const huge = 'x'.repeat(1_000_000);
      for (const [id, problem] of [
        ['', 'is empty'],
        ['a'.repeat(257), 'is 257 characters long \\(at most 256\\)'],
        ['tab\there', 'contains a control character'],
        ['new\nline', 'contains a control character'],
        [huge, 'is 1000000 characters long \\(at most 256\\)'],
      ] as const) {
        const error = await expectRefused(
          sql`insert into permgraph.nodes (id, kind) values (${id}, 'user')`,
          new RegExp(`^permgraph: node id .* ${problem}; an id is 1 to 256 characters with no control characters`),
          '22023',
        );
        expect(error.message.length).toBeLessThan(300);
      }
      const error = await expectRefused(
        sql`insert into permgraph.grants (tail_id, head_id, level) values (${huge}, 'g1', 1)`,
        /^permgraph: grant tail "x{64}…" \(1000000 characters\) does not exist/,
        '23503',
      );
      expect(error.message.length).toBeLessThan(300);
      await db.query(sql`insert into permgraph.nodes (id, kind) values (${'é'.repeat(256)}, 'object')`);
      await db.query(sql`delete from permgraph.nodes where id = ${'é'.repeat(256)}`);
    });
  });

  describe('whole statements: the order of rows never matters', () => {
    it('an owner inserted later in the same statement is found; a cycle within one statement is a cycle', async () => {
      await db.query(sql`insert into permgraph.nodes (id, kind, owner_id) values ('gx', 'group', 'gy'), ('gy', 'group', null)`);
      expect(await ownerOf('gx')).toBe('gy');
      await expectRefused(
        sql`insert into permgraph.nodes (id, kind, owner_id) values ('ga', 'group', 'gb'), ('gb', 'group', 'ga')`,
        /^permgraph: ownership cycle: ga -> gb -> ga \(the owner of each node is the next one\)/,
        '23514',
      );
      await expectRefused(
        sql`insert into permgraph.nodes (id, kind, owner_id) values ('gc', 'group', 'ghost'), ('gd', 'group', 'gc')`,
        /^permgraph: owner "ghost" of node "gc" does not exist/,
        '23503',
      );
      // An owner deleted together with what it owns, listed in either order.
      await db.query(sql`insert into permgraph.nodes (id, kind, owner_id) values ('gz', 'group', 'gx')`);
      await db.query(sql`delete from permgraph.nodes where id in ('gy', 'gx', 'gz')`);
      expect(await db.query(sql`select id from permgraph.nodes where id in ('gx', 'gy', 'gz')`)).toEqual([]);
      await db.query(sql`select permgraph.apply_changes()`);
    });
  });

  describe('nodes', () => {
    it('refuses a kind that is not user, group or object', async () => {
      await expectRefused(
        sql`insert into permgraph.nodes (id, kind) values ('r1', 'robot')`,
        /^permgraph: node "r1" has kind "robot"; the kind must be user, group or object/,
        '23514',
      );
      await expectRefused(
        sql`insert into permgraph.nodes (id, kind) values ('r2', 'User')`,
        /^permgraph: node "r2" has kind "User"/,
        '23514',
      );
      await expectRefused(
        sql`insert into permgraph.nodes (id, kind) values ('r3', null)`,
        /^permgraph: node "r3" has kind null/,
      );
    });

    it("refuses changing a node's kind", async () => {
      await expectRefused(
        sql`update permgraph.nodes set kind = 'object' where id = 'g1'`,
        /^permgraph: cannot change the kind of node "g1" from group to object/,
        '22023',
      );
      await expectRefused(
        sql`update permgraph.nodes set kind = 'group' where id = 'u3'`,
        /^permgraph: cannot change the kind of node "u3" from user to group/,
        '22023',
      );
    });

    it("refuses changing a node's id", async () => {
      // A leaf, a node other nodes name as owner, and a node grants point at.
      for (const [from, to] of [['o2', 'o9'], ['g1', 'g9'], ['gR', 'gZ']] as const) {
        await expectRefused(
          sql`update permgraph.nodes set id = ${to} where id = ${from}`,
          new RegExp(`^permgraph: cannot change the id of node "${from}" to "${to}"`),
          '22023',
        );
      }
    });

    it('refuses an owner that does not exist, on insert and on update', async () => {
      await expectRefused(
        sql`insert into permgraph.nodes (id, kind, owner_id) values ('x', 'group', 'ghost')`,
        /^permgraph: owner "ghost" of node "x" does not exist/,
        '23503',
      );
      await expectRefused(
        sql`update permgraph.nodes set owner_id = 'ghost' where id = 'o2'`,
        /^permgraph: owner "ghost" of node "o2" does not exist/,
        '23503',
      );
    });

    it('refuses an owner that is an object', async () => {
      for (const kind of ['user', 'group', 'object']) {
        await expectRefused(
          sql`insert into permgraph.nodes (id, kind, owner_id) values ('x', ${kind}, 'o1')`,
          /^permgraph: node "x" cannot be owned by object "o1"; only users and groups own/,
          '23514',
        );
      }
      await expectRefused(
        sql`update permgraph.nodes set owner_id = 'o1' where id = 'gA'`,
        /^permgraph: node "gA" cannot be owned by object "o1"/,
        '23514',
      );
      // An object owning itself is refused for the same reason.
      await expectRefused(
        sql`insert into permgraph.nodes (id, kind, owner_id) values ('o3', 'object', 'o3')`,
        /^permgraph: node "o3" cannot be owned by object "o3"/,
        '23514',
      );
    });

    it('accepts users and groups as owners of every kind of node', async () => {
      await db.query(sql`
        insert into permgraph.nodes (id, kind, owner_id)
        values ('nu', 'user', 'u1'), ('ng', 'group', 'g3'), ('no', 'object', 'u3')`);
      expect(await ownerOf('ng')).toBe('g3');
    });
  });

  describe('ownership cycles', () => {
    it('refuses a group owning itself', async () => {
      await expectRefused(
        sql`insert into permgraph.nodes (id, kind, owner_id) values ('gS', 'group', 'gS')`,
        /^permgraph: ownership cycle: group "gS" cannot own itself/,
        '23514',
      );
      await expectRefused(
        sql`update permgraph.nodes set owner_id = 'g1' where id = 'g1'`,
        /^permgraph: ownership cycle: group "g1" cannot own itself/,
        '23514',
      );
    });

    it('refuses a 2-cycle', async () => {
      await db.query(sql`update permgraph.nodes set owner_id = 'gB' where id = 'gA'`);
      await expectRefused(
        sql`update permgraph.nodes set owner_id = 'gA' where id = 'gB'`,
        /^permgraph: ownership cycle: gB -> gA -> gB \(the owner of each node is the next one\)/,
        '23514',
      );
      expect(await ownerOf('gB')).toBe('u3');
    });

    it('refuses a longer cycle, naming every node in it', async () => {
      // g1 owns g2, g2 owns g3; making g3 the owner of g1 closes g1 -> g3 -> g2 -> g1.
      const error = await expectRefused(
        sql`update permgraph.nodes set owner_id = 'g3' where id = 'g1'`,
        /^permgraph: ownership cycle: g1 -> g3 -> g2 -> g1 /,
        '23514',
      );
      for (const id of ['g1', 'g2', 'g3']) expect(error.message).toContain(id);
      expect(error.message).not.toMatch(/u1|gR/);
      // Reaching the cycle from below a user-owned chain and through a longer chain.
      await db.query(sql`insert into permgraph.nodes (id, kind, owner_id) values ('g4', 'group', 'g3'), ('g5', 'group', 'g4')`);
      await expectRefused(
        sql`update permgraph.nodes set owner_id = 'g5' where id = 'g2'`,
        /^permgraph: ownership cycle: g2 -> g5 -> g4 -> g3 -> g2 /,
        '23514',
      );
    });

    it('refuses a cycle closed within one multi-row UPDATE', async () => {
      await expectRefused(
        sql`update permgraph.nodes set owner_id = case id when 'gA' then 'gR' else 'gA' end where id in ('gA', 'gR')`,
        /^permgraph: ownership cycle: g[AR] -> g[AR] -> g[AR] /,
        '23514',
      );
      expect(await ownerOf('gA')).toBeNull();
      expect(await ownerOf('gR')).toBeNull();
    });

    it('allows a user to own itself, with no extra rows', async () => {
      await db.query(sql`insert into permgraph.nodes (id, kind, owner_id) values ('u4', 'user', 'u4')`);
      await db.query(sql`update permgraph.nodes set owner_id = 'u1' where id = 'u1'`);
      // Moving a group under a self-owned user walks up to the user and stops there.
      await db.query(sql`update permgraph.nodes set owner_id = 'u4' where id = 'gA'`);
      const captured = await db.query(sql`select tail_id, head_id from permgraph.changes where tail_id = head_id and tail_id in ('u1', 'u4')`);
      expect(captured).toEqual([{ tail_id: 'u4', head_id: 'u4' }]); // the new user's identity edge only
      await db.query(sql`select permgraph.refresh()`);
      const graph: RefGraph = {
        nodes: [
          ...base.nodes.map((n) => (n.id === 'u1' ? u('u1', 'u1') : n.id === 'gA' ? g('gA', 'u4') : n)),
          u('u4', 'u4'),
        ],
        grants: base.grants.map((gr) => (gr.tailId === 'u2' && gr.headId === 'g1' ? { ...gr, level: 2 as Level } : gr)),
      };
      const rows = await readPermissions(db);
      expect(rows).toEqual(model.computePermissions(graph));
      expect(rows.filter((r) => r.userId === 'u4')).toEqual([
        { userId: 'u4', targetId: 'gA', level: 3, traverseOwned: true, validUntil: null },
        { userId: 'u4', targetId: 'o1', level: 2, traverseOwned: false, validUntil: null },
        { userId: 'u4', targetId: 'u4', level: 3, traverseOwned: true, validUntil: null },
      ]);
      expect(await ownershipCycles()).toEqual([]);
    });
  });

  describe('concurrent halves of an ownership cycle', () => {
    const pools: ConnectionPool[] = [];
    afterAll(async () => {
      await Promise.all(pools.map((p) => p.dispose()));
    });
    function pool(): ConnectionPool {
      const p = openPool(url, { poolSize: 1, applicationName: 'permgraph-integrity-test' });
      pools.push(p);
      return p;
    }

    /** Waits until some other session is blocked on a lock. */
    async function waitForBlockedSession(): Promise<void> {
      for (let i = 0; i < 500; i++) {
        const [row] = await db.query(sql`
          select count(*)::int as n from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock' and pid <> pg_backend_pid()`);
        if (row.n > 0) return;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      throw new Error('the second transaction never blocked');
    }

    for (const isolationLevel of [IsolationLevel.READ_COMMITTED, IsolationLevel.REPEATABLE_READ, IsolationLevel.SERIALIZABLE]) {
      it(`exactly one of two transactions succeeds (second one ${isolationLevel})`, async () => {
        const [first, second] = [pool(), pool()];
        let release!: () => void;
        const held = new Promise<void>((resolve) => (release = resolve));
        let firstUpdated!: () => void;
        const updated = new Promise<void>((resolve) => (firstUpdated = resolve));

        const tx1 = first.tx(async (tx) => {
          await tx.query(sql`update permgraph.nodes set owner_id = 'gB' where id = 'gA'`);
          firstUpdated();
          await held;
        });
        await updated;
        const tx2 = second.tx(
          async (tx) => {
            // Take the snapshot while tx1 is still open.
            await tx.query(sql`select count(*) from permgraph.nodes`);
            await tx.query(sql`update permgraph.nodes set owner_id = 'gA' where id = 'gB'`);
          },
          { isolationLevel },
        );
        await waitForBlockedSession();
        release();
        const results = await Promise.allSettled([tx1, tx2]);
        expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected']);
        const error = (results[1] as PromiseRejectedResult).reason as DbError;
        if (isolationLevel === IsolationLevel.READ_COMMITTED) {
          expect(error.message).toMatch(/^permgraph: ownership cycle: gB -> gA -> gB /);
          expect(error.code).toBe('23514');
        } else {
          // Under a snapshot the second transaction cannot see the first one's
          // change: it fails with a serialization failure, and its retry sees
          // the cycle.
          expect(error.message).toMatch(/could not serialize access/);
          expect(error.code).toBe('40001');
          const retry = await failureOf(
            second.tx((tx) => tx.query(sql`update permgraph.nodes set owner_id = 'gA' where id = 'gB'`), { isolationLevel }),
          );
          expect(retry.message).toMatch(/^permgraph: ownership cycle: gB -> gA -> gB /);
          expect(retry.code).toBe('23514');
        }
        expect(await ownerOf('gA')).toBe('gB');
        expect(await ownerOf('gB')).toBe('u3');
        expect(await ownershipCycles()).toEqual([]);
      });
    }
  });

  describe('moments (a grant\'s expires_at, a node\'s trash_at): finite, in the years 1 to 9999', () => {
    // Each is a timestamptz PostgreSQL accepts, but no ISO 8601 text or JavaScript Date carries it back.
    for (const moment of ['infinity', '-infinity', '10000-01-01 00:00:00+00', '9999-12-31 23:00:00-05', '0001-01-01 00:00:00+00 BC']) {
      it(`refuses ${moment}`, async () => {
        await expectRefused(
          sql`insert into permgraph.grants (tail_id, head_id, level, expires_at) values ('u1', 'gA', 1, ${moment}::timestamptz)`,
          /^permgraph: grant "u1" -> "gA" expires_at .* is outside the years 1 to 9999 \(for never, null\)$/,
          '22023',
        );
        await expectRefused(
          sql`update permgraph.grants set expires_at = ${moment}::timestamptz where tail_id = 'u3' and head_id = 'gA'`,
          /^permgraph: grant "u3" -> "gA" expires_at .* is outside the years 1 to 9999/,
          '22023',
        );
        await expectRefused(
          sql`insert into permgraph.nodes (id, kind, trash_at) values ('late', 'group', ${moment}::timestamptz)`,
          /^permgraph: node "late" trash_at .* is outside the years 1 to 9999 \(for no trash time, null\)$/,
          '22023',
        );
        await expectRefused(
          sql`update permgraph.nodes set trash_at = ${moment}::timestamptz where id = 'gB'`,
          /^permgraph: node "gB" trash_at .* is outside the years 1 to 9999/,
          '22023',
        );
      });
    }

    it('accepts the first and last moments of that range, and null', async () => {
      await db.query(sql`update permgraph.grants set expires_at = '9999-12-31 23:59:59.999999+00' where tail_id = 'u3' and head_id = 'gA'`);
      await db.query(sql`update permgraph.nodes set trash_at = '0001-01-01 00:00:00+00' where id = 'gB'`);
      await db.query(sql`update permgraph.nodes set trash_at = null where id = 'gB'`);
      await db.query(sql`update permgraph.grants set expires_at = null where tail_id = 'u3' and head_id = 'gA'`);
    });

    it('a node already holding one (written before the rule) may still change its other columns', async () => {
      await db.query(sql`alter table permgraph.nodes disable trigger nodes_validate_changed`);
      try {
        await db.query(sql`update permgraph.nodes set trash_at = 'infinity' where id = 'gB'`);
      } finally {
        await db.query(sql`alter table permgraph.nodes enable trigger nodes_validate_changed`);
      }
      await db.query(sql`update permgraph.nodes set owner_id = 'u1' where id = 'gB'`);
      expect(await ownerOf('gB')).toBe('u1');
    });
  });

  describe('grants', () => {
    for (const level of [0, 4, -1, null]) {
      it(`refuses level ${level}`, async () => {
        await expectRefused(
          sql`insert into permgraph.grants (tail_id, head_id, level) values ('u1', 'gA', ${level})`,
          new RegExp(`^permgraph: grant level must be 1 \\(read\\), 2 \\(write\\) or 3 \\(manage\\), got ${level}$`),
          '23514',
        );
        await expectRefused(
          sql`update permgraph.grants set level = ${level} where tail_id = 'u3' and head_id = 'gA'`,
          new RegExp(`^permgraph: grant level must be .* got ${level}$`),
          '23514',
        );
      });
    }

    it('refuses a tail that is an object', async () => {
      await expectRefused(
        sql`insert into permgraph.grants (tail_id, head_id, level) values ('o1', 'gA', 1)`,
        /^permgraph: grant tail "o1" is an object; only users and groups can hold grants/,
        '23514',
      );
      await expectRefused(
        sql`update permgraph.grants set tail_id = 'o2' where tail_id = 'u3' and head_id = 'gA'`,
        /^permgraph: grant tail "o2" is an object/,
        '23514',
      );
    });

    it('refuses a tail or head that does not exist', async () => {
      await expectRefused(
        sql`insert into permgraph.grants (tail_id, head_id, level) values ('nobody', 'gA', 1)`,
        /^permgraph: grant tail "nobody" does not exist/,
        '23503',
      );
      await expectRefused(
        sql`insert into permgraph.grants (tail_id, head_id, level) values ('u1', 'nothing', 1)`,
        /^permgraph: grant head "nothing" does not exist/,
        '23503',
      );
      await expectRefused(
        sql`update permgraph.grants set head_id = 'nothing' where tail_id = 'u3' and head_id = 'gA'`,
        /^permgraph: grant head "nothing" does not exist/,
        '23503',
      );
    });

    it('refuses a key too wide for the unique index in bytes, though each part is within its length, however it would compress', async () => {
      // 256-character ids and a 1,024-character source in a script of 3 bytes a character: ~3 kB, past what one index entry holds
      const cjk = (n: number, from: number) => Array.from({ length: n }, (_, i) => String.fromCodePoint(0x4e00 + ((from + i * 7919) % 0x5000))).join('');
      const [tail, head] = [cjk(256, 1), cjk(256, 2)];
      await db.query(sql`insert into permgraph.nodes (id, kind) values (${tail}, 'user'), (${head}, 'group')`);
      for (const source of [cjk(1024, 3), '界'.repeat(1024)]) {
        await expectRefused(
          sql`insert into permgraph.grants (tail_id, head_id, level, source) values (${tail}, ${head}, 1, ${source})`,
          /^permgraph: grant "[^"]+…" \(256 characters\) -> "[^"]+…" \(256 characters\): its tail, head and source are 4608 bytes together in UTF-8 \(at most 2600: one entry of the grants' unique index\)$/,
          '54000',
        );
      }
      await db.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values (${tail}, ${head}, 1, 'short')`);
      await expectRefused(
        sql`update permgraph.grants set source = ${'界'.repeat(1024)} where tail_id = ${tail}`,
        /its tail, head and source are 4608 bytes together/,
        '54000',
      );
      // at the bound, in ASCII: 2 + 2 + 2,596 bytes
      await db.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('u1', 'gA', 1, ${'s'.repeat(2596)})`);
      await db.query(sql`delete from permgraph.grants where tail_id in (${tail}, 'u1') and source <> 'default'`);
      await db.query(sql`delete from permgraph.nodes where id in (${tail}, ${head})`);
    });

    it('refuses a duplicate (tail, head, source), naming the key', async () => {
      const error = await expectRefused(
        sql`insert into permgraph.grants (tail_id, head_id, level) values ('u3', 'gA', 1)`,
        /grants_unique_per_source/,
        '23505',
      );
      expect(error.detail).toMatch(/\(tail_id, head_id, source\)=\(u3, gA, default\) already exists/);
      await expectRefused(
        sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('g1', 'u3', 1, 's')`,
        /grants_unique_per_source/,
        '23505',
      );
      // The same pair from another source is a parallel grant, not a duplicate.
      await db.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('u3', 'gA', 1, 'other')`);
    });
  });

  describe('multi-row statements', () => {
    it('a multi-row INSERT of nodes with one bad row writes none of them', async () => {
      await expectRefused(
        sql`insert into permgraph.nodes (id, kind, owner_id)
            values ('n1', 'group', 'u1'), ('n2', 'user', null), ('n3', 'group', 'o1'), ('n4', 'object', 'n1')`,
        /^permgraph: node "n3" cannot be owned by object "o1"/,
        '23514',
      );
      await expectRefused(
        sql`insert into permgraph.nodes (id, kind) values ('n1', 'group'), ('n2', 'user'), ('n3', 'thing')`,
        /^permgraph: node "n3" has kind "thing"/,
        '23514',
      );
      const [row] = await db.query(sql`select count(*)::int as n from permgraph.nodes where id like 'n%'`);
      expect(row.n).toBe(0);
    });

    it('a multi-row INSERT of grants with one bad row writes none of them', async () => {
      await expectRefused(
        sql`insert into permgraph.grants (tail_id, head_id, level)
            values ('u1', 'gA', 1), ('u2', 'gB', 2), ('u3', 'g3', 0), ('gR', 'o2', 3)`,
        /^permgraph: grant level must be .* got 0$/,
        '23514',
      );
      await expectRefused(
        sql`insert into permgraph.grants (tail_id, head_id, level)
            values ('u1', 'gA', 1), ('u2', 'gB', 2), ('u3', 'gA', 3)`,
        /grants_unique_per_source/,
        '23505',
      );
    });

    // Ends are checked once per statement (grants_validate_inserted/updated):
    // of several bad rows the one reported depends on the problem and the
    // ids, never on the order of the rows.
    it('a multi-row INSERT or UPDATE of grants with bad ends writes none of them, whatever the order of the rows', async () => {
      for (const rows of [
        sql`('u1', 'o1', 1), ('nobody', 'gA', 1), ('o2', 'gA', 1), ('u2', 'gB', 2)`,
        sql`('u2', 'gB', 2), ('o2', 'gA', 1), ('nobody', 'gA', 1), ('u1', 'o1', 1)`,
      ]) {
        await expectRefused(
          sql`insert into permgraph.grants (tail_id, head_id, level) values ${rows}`,
          /^permgraph: grant tail "nobody" does not exist$/,
          '23503',
        );
      }
      await expectRefused(
        sql`insert into permgraph.grants (tail_id, head_id, level) values ('u1', 'nothing', 1), ('o2', 'gA', 1), ('u2', 'gB', 2)`,
        /^permgraph: grant tail "o2" is an object; only users and groups can hold grants$/,
        '23514',
      );
      await expectRefused(
        sql`insert into permgraph.grants (tail_id, head_id, level) values ('u2', 'gB', 2), ('u1', 'nothing', 1), ('u1', 'gone', 1)`,
        /^permgraph: grant head "gone" does not exist$/,
        '23503',
      );
      await expectRefused(
        sql`update permgraph.grants set head_id = case when head_id = 'o2' then 'ghost' else head_id end, level = 1 where tail_id = 'u3'`,
        /^permgraph: grant head "ghost" does not exist$/,
        '23503',
      );
      // A good multi-row statement writes its grants, and their edges carry the ends' kinds.
      await db.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('u1', 'o1', 1, 'm'), ('gA', 'u2', 2, 'm')`);
      expect(await db.query(sql`
        select tail_id, head_id, tail_kind, head_kind, level from permgraph.edges where source = 'm' order by tail_id`)).toEqual([
        { tail_id: 'gA', head_id: 'u2', tail_kind: 'group', head_kind: 'user', level: 2 },
        { tail_id: 'u1', head_id: 'o1', tail_kind: 'user', head_kind: 'object', level: 1 },
      ]);
    });
  });

  describe('a grant locks its ends as a foreign key would', () => {
    it('a concurrent delete of an end waits for the grant to commit, then removes it with the node', async () => {
      const other = openPool(url, { poolSize: 1, applicationName: 'permgraph-integrity-test' });
      try {
        let deleting: Promise<unknown> = Promise.resolve();
        await db.tx(async (tx) => {
          await tx.query(sql`insert into permgraph.grants (tail_id, head_id, level, source) values ('u1', 'o2', 1, 'locked')`);
          deleting = other.query(sql`delete from permgraph.nodes where id = 'o2'`);
          for (let i = 0; ; i++) {
            const [row] = await db.query(sql`
              select count(*)::int as n from pg_stat_activity
              where datname = current_database() and wait_event_type = 'Lock' and application_name = 'permgraph-integrity-test'`);
            if (row.n > 0) break;
            if (i > 500) throw new Error('the delete never waited for the grant');
            await new Promise((resolve) => setTimeout(resolve, 10));
          }
        });
        await deleting;
        expect(await db.query(sql`select * from permgraph.grants where 'o2' in (tail_id, head_id)`)).toEqual([]);
        expect(await db.query(sql`select * from permgraph.edges where 'o2' in (tail_id, head_id)`)).toEqual([]);
        // The grant's removal is captured with the kinds its edge carried.
        expect(await db.query(sql`
          select tail_id, head_id, tail_kind, head_kind, old_level, new_level from permgraph.changes
          where head_id = 'o2' and old_level is not null order by tail_id`)).toEqual([
          { tail_id: 'u1', head_id: 'o2', tail_kind: 'user', head_kind: 'object', old_level: 1, new_level: null },
          { tail_id: 'u3', head_id: 'o2', tail_kind: 'user', head_kind: 'object', old_level: 1, new_level: null },
        ]);
      } finally {
        await other.dispose();
      }
    });
  });

  describe('a node deleted and made again as another kind while a statement writes an edge to it (FINDINGS 61)', () => {
    // A statement's capture reads its ends' kinds and its validation locks
    // the ends, one trigger after the other. A trigger of the test's own,
    // named to fire between the two, makes the statement wait there.
    const PAUSE_KEY = 7238999001;

    /** Edges whose kinds are not their nodes' (there must be none). */
    async function edgesOfWrongKind(): Promise<unknown[]> {
      return db.query(sql`
        select e.tail_id, e.head_id, e.tail_kind, t.kind as tail_is, e.head_kind, h.kind as head_is
        from permgraph.edges e join permgraph.nodes t on t.id = e.tail_id join permgraph.nodes h on h.id = e.head_id
        where e.tail_kind <> t.kind or e.head_kind <> h.kind`);
    }

    async function expectTableMatchesGraph(): Promise<void> {
      await db.query(sql`select permgraph.apply_changes()`);
      expect(await readPermissions(db)).toEqual(model.computePermissions(await readGraph(db)));
    }

    /**
     * Runs `statement` (on a connection of its own) paused between its
     * capture and its validation while `meanwhile` runs; returns the
     * statement's outcome: 'committed' or its SQLSTATE.
     */
    async function pausedWhile(table: 'grants' | 'nodes', statement: SQLQuery, meanwhile: () => Promise<void>): Promise<string> {
      const [holder, writer] = [openPool(url, { poolSize: 1 }), openPool(url, { poolSize: 1 })];
      await db.query(sql`
        create or replace function public.permgraph_test_pause() returns trigger language plpgsql as $$
        begin
          if current_setting('permgraph_test.pause', true) = 'on' then
            perform pg_advisory_lock_shared(7238999001);  -- PAUSE_KEY
            perform pg_advisory_unlock_shared(7238999001);
          end if;
          return null;
        end $$`);
      await db.query(sql`create trigger ${sql.ident(`${table}_d_pause`)} after insert on ${sql.ident('permgraph', table)}
                         for each statement execute function public.permgraph_test_pause()`);
      try {
        await holder.query(sql`select pg_advisory_lock(${PAUSE_KEY}::bigint)`);
        const outcome = writer
          .tx(async (tx) => {
            await tx.query(sql`set local permgraph_test.pause = on`);
            await tx.query(statement);
          })
          .then(
            () => 'committed',
            (error: { code?: string }) => error.code ?? String(error),
          );
        await waitUntil(async () => {
          const [row] = await db.query(sql`
            select count(*)::int as n from pg_locks
            where locktype = 'advisory' and not granted and ((classid::bigint << 32) | objid::bigint) = ${PAUSE_KEY}::bigint`);
          return row.n > 0;
        }, 'the statement to pause');
        await meanwhile();
        await holder.query(sql`select pg_advisory_unlock(${PAUSE_KEY}::bigint)`);
        return await outcome;
      } finally {
        await db.query(sql`drop trigger if exists ${sql.ident(`${table}_d_pause`)} on ${sql.ident('permgraph', table)}`);
        await Promise.all([holder.dispose(), writer.dispose()]);
      }
    }

    it('a grant whose end its capture did not find, made meanwhile as a user, is refused as a serialization failure', async () => {
      const outcome = await pausedWhile('grants', sql`insert into permgraph.grants (tail_id, head_id, level) values ('u1', 'gX', 1)`, async () => {
        await db.query(sql`insert into permgraph.nodes (id, kind) values ('gX', 'user')`);
      });
      // (before the capture locked and noted missing ends: committed, its edge onto a user of kind group)
      expect(outcome).toBe('40001');
      expect(await edgesOfWrongKind()).toEqual([]);
      await expectTableMatchesGraph();
    });

    /**
     * Runs `insert` (a grant onto gA) paused between its capture and its
     * validation while another transaction deletes gA and makes it again as
     * a user; returns both outcomes. The remake waits for the paused grant,
     * or (had the capture not locked its ends) it is done at once.
     */
    async function remakeEndWhilePaused(insert: SQLQuery): Promise<{ grant: string; remake: string }> {
      const other = openPool(url, { poolSize: 1 });
      try {
        let remade: Promise<string> = Promise.resolve('not run');
        const grant = await pausedWhile('grants', insert, async () => {
          remade = other
            .tx(async (tx) => {
              await tx.query(sql`delete from permgraph.nodes where id = 'gA'`);
              await tx.query(sql`insert into permgraph.nodes (id, kind) values ('gA', 'user')`);
            })
            .then(() => 'committed', (error: { code?: string }) => error.code ?? String(error));
          await waitUntil(async () => {
            const [row] = await db.query(sql`
              select count(*)::int as n from pg_locks l join pg_stat_activity a on a.pid = l.pid
              where not l.granted and l.locktype in ('transactionid', 'tuple') and a.datname = current_database()`);
            return row.n > 0 || (await Promise.race([remade.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 10))]));
          }, 'the remake to wait or finish');
        });
        return { grant, remake: await remade };
      } finally {
        await other.dispose();
      }
    }

    it('a grant whose end its capture found holds it: a delete and remake as another kind waits for the grant', async () => {
      const outcome = await remakeEndWhilePaused(sql`insert into permgraph.grants (tail_id, head_id, level) values ('u1', 'gA', 1)`);
      expect(outcome).toEqual({ grant: 'committed', remake: 'committed' });
      expect(await edgesOfWrongKind()).toEqual([]);
      await expectTableMatchesGraph();
    });

    it("with capture off (an owner's bulk load, refreshed after), a grant's insert holds its ends the same way", async () => {
      const outcome = await remakeEndWhilePaused(
        sql`set local permgraph.capture = off; insert into permgraph.grants (tail_id, head_id, level) values ('u1', 'gA', 1)`,
      );
      expect(outcome).toEqual({ grant: 'committed', remake: 'committed' });
      // (before the capture with capture off read its ends locked: the grant's edge onto a user of kind group)
      expect(await edgesOfWrongKind()).toEqual([]);
      await db.query(sql`select permgraph.refresh()`);
      expect(await readPermissions(db)).toEqual(model.computePermissions(await readGraph(db)));
    });

    it("a node whose owner its capture did not find, made meanwhile as a user, is refused as a serialization failure", async () => {
      const outcome = await pausedWhile('nodes', sql`insert into permgraph.nodes (id, kind, owner_id) values ('gY', 'group', 'uX')`, async () => {
        await db.query(sql`insert into permgraph.nodes (id, kind) values ('uX', 'user')`);
      });
      expect(outcome).toBe('40001');
      expect(await edgesOfWrongKind()).toEqual([]);
      await expectTableMatchesGraph();
    });
  });

  describe('deleting nodes', () => {
    it('refuses deleting a node that still owns nodes', async () => {
      await expectRefused(
        sql`delete from permgraph.nodes where id = 'g1'`,
        /^permgraph: cannot delete node "g1": it still owns 2 node\(s\), e\.g\. "g2"; move or delete them first/,
        '23503',
      );
      await expectRefused(
        sql`delete from permgraph.nodes where id = 'u1'`,
        /^permgraph: cannot delete node "u1": it still owns 2 node\(s\), e\.g\. "g1"/,
        '23503',
      );
      // Deleting owned nodes first, then their owner, works.
      await db.query(sql`delete from permgraph.nodes where id = 'g3'`);
      await db.query(sql`delete from permgraph.nodes where id = 'g2'`);
      await expectRefused(
        sql`delete from permgraph.nodes where id = 'g1'`,
        /^permgraph: cannot delete node "g1": it still owns 1 node\(s\), e\.g\. "o1"/,
        '23503',
      );
      await db.query(sql`update permgraph.nodes set owner_id = null where id = 'o1'`);
      await db.query(sql`delete from permgraph.nodes where id = 'g1'`);
    });

    it('deletes a self-owned user', async () => {
      await db.query(sql`delete from permgraph.nodes where id = 'u2'`);
      expect(await db.query(sql`select id from permgraph.nodes where id = 'u2'`)).toEqual([]);
      expect(await db.query(sql`select 1 from permgraph.grants where 'u2' in (tail_id, head_id)`)).toEqual([]);
      expect(await db.query(sql`select 1 from permgraph.effective_permissions where 'u2' in (user_id, target_id)`)).toEqual([]);
      await db.query(sql`select permgraph.apply_changes()`);
      expect(await db.query(sql`select 1 from permgraph.permissions where 'u2' in (user_id, target_id)`)).toEqual([]);
      const graph: RefGraph = {
        nodes: base.nodes.filter((n) => n.id !== 'u2'),
        grants: base.grants.filter((gr) => gr.tailId !== 'u2' && gr.headId !== 'u2'),
      };
      expect(await readPermissions(db)).toEqual(model.computePermissions(graph));
    });

    for (const victim of ['gR', 'u3', 'o1', 'gA']) {
      it(`deleting ${victim} removes its grants at once, hides its rows at once, and apply_changes() matches the model`, async () => {
        const graph: RefGraph = {
          nodes: base.nodes.filter((n) => n.id !== victim),
          grants: base.grants
            .map((gr) => (gr.tailId === 'u2' && gr.headId === 'g1' ? { ...gr, level: 2 as Level } : gr))
            .filter((gr) => gr.tailId !== victim && gr.headId !== victim),
        };
        if (victim === 'u3') {
          // u3 owns gB: move it away first.
          await db.query(sql`update permgraph.nodes set owner_id = 'u1' where id = 'gB'`);
        }
        const reference: RefGraph =
          victim === 'u3' ? { ...graph, nodes: graph.nodes.map((n) => (n.id === 'gB' ? g('gB', 'u1') : n)) } : graph;
        const [{ n: grantsBefore }] = await db.query(
          sql`select count(*)::int as n from permgraph.grants where ${victim} in (tail_id, head_id)`,
        );
        const [{ n: rowsBefore }] = await db.query(
          sql`select count(*)::int as n from permgraph.permissions where ${victim} in (user_id, target_id)`,
        );
        expect(grantsBefore).toBeGreaterThan(0);
        if (victim !== 'o1') expect(rowsBefore).toBeGreaterThan(0);

        await db.query(sql`delete from permgraph.nodes where id = ${victim}`);

        expect(await db.query(sql`select * from permgraph.grants where ${victim} in (tail_id, head_id)`)).toEqual([]);
        // The rows stay in the table until the worker's batch (deleting them
        // here would make concurrent batches fail) but no reader sees them.
        expect(await db.query(sql`select * from permgraph.effective_permissions where ${victim} in (user_id, target_id)`)).toEqual([]);
        const [{ n: rowsKept }] = await db.query(
          sql`select count(*)::int as n from permgraph.permissions where ${victim} in (user_id, target_id)`,
        );
        expect(rowsKept).toBe(rowsBefore);
        expect(await db.query(sql`select id from permgraph.deleted_nodes`)).toEqual([{ id: victim }]);
        // Nothing was applied yet: the removed edges wait in permgraph.changes.
        const pending = await db.query(
          sql`select tail_id, head_id, old_level, new_level from permgraph.changes where ${victim} in (tail_id, head_id) and not trash_changed`,
        );
        expect(pending.length).toBeGreaterThanOrEqual(grantsBefore);

        const [{ result }] = await db.query(sql`select permgraph.apply_changes() as result`);
        expect(result.mode).toBe('incremental');
        expect(await readPermissions(db)).toEqual(model.computePermissions(reference));
        expect(await db.query(sql`select * from permgraph.verify()`)).toEqual([]);
        expect(await db.query(sql`select count(*)::int as n from permgraph.changes`)).toEqual([{ n: 0 }]);
        expect(await db.query(sql`select id from permgraph.deleted_nodes`)).toEqual([]);
      });
    }
  });

  describe('check() levels', () => {
    for (const level of [0, 4, null]) {
      it(`permgraph.check() with level ${level} raises an error naming the level`, async () => {
        await expectRefused(
          sql`select permgraph.check('u1', 'g1', ${level}::integer)`,
          new RegExp(`^permgraph: level must be 1 \\(read\\), 2 \\(write\\) or 3 \\(manage\\), got ${level}$`),
          '22023',
        );
      });
    }

    it('the TypeScript check() throws InvalidInputError for levels 0 and 4', async () => {
      for (const level of [0, 4, '4', 'admin']) {
        const error = await failureOf(check(db, 'u1', 'g1', level as Level));
        expect(error).toBeInstanceOf(InvalidInputError);
        expect(error.message).toMatch(new RegExp(`level must be 1 \\(read\\), 2 \\(write\\) or 3 \\(manage\\), got "?${level}"?`));
      }
      // Valid levels still answer.
      expect(await check(db, 'u1', 'g1', 3)).toBe(true);
      expect(await check(db, 'u2', 'g1', 'manage')).toBe(false);
    });
  });
});
