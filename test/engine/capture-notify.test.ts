// The wake-up on channel permgraph_changes: sent by a transaction whose
// statements recorded a change (or deleted nodes), once per transaction, and
// by no statement that changed nothing the worker reads (a DELETE matching
// no row, an UPDATE of a column permgraph ignores), so that such writes
// neither wake the worker nor pay for the notification.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/database.ts';

const CHANNEL = 'permgraph_changes';

describe('capture wakes the worker only when it recorded something', async () => {
  // (made as the file is collected: its clean-up, an afterAll, is ignored when made in beforeAll)
  const { url } = await createTestDatabase();
  let writer: pg.Client;
  let listener: pg.Client;
  let received = 0;

  beforeAll(async () => {
    writer = new pg.Client({ connectionString: url });
    listener = new pg.Client({ connectionString: url });
    await writer.connect();
    await listener.connect();
    listener.on('notification', (message) => {
      if (message.channel === CHANNEL) received++;
    });
    await listener.query(`listen ${CHANNEL}`);
    await writer.query(`
      insert into permgraph.nodes (id, kind, owner_id) values ('ann', 'user', null), ('team', 'group', 'ann'), ('doc', 'object', 'team');
      insert into permgraph.grants (tail_id, head_id, level, source) values ('ann', 'doc', 1, 'app')`);
  });

  afterAll(async () => {
    await writer?.end();
    await listener?.end();
  });

  /**
   * Notifications that `statements`, committed as one transaction, sent. The
   * writer's COMMIT signals listeners before it returns, and a listening
   * backend delivers what it was signalled before its next ReadyForQuery,
   * so one round trip of the listener after the commit collects them.
   */
  async function notificationsOf(...statements: string[]): Promise<number> {
    await listener.query('select 1');
    received = 0;
    await writer.query('begin');
    for (const statement of statements) await writer.query(statement);
    await writer.query('commit');
    await listener.query('select 1');
    return received;
  }

  it('a DELETE or UPDATE matching no row sends nothing', async () => {
    expect(await notificationsOf(
      `delete from permgraph.grants where tail_id = 'nobody'`,
      `update permgraph.grants set level = 3 where tail_id = 'nobody'`,
      `delete from permgraph.nodes where id = 'nothing'`,
      `update permgraph.nodes set owner_id = 'ann' where id = 'nothing'`,
    )).toBe(0);
  });

  it('an UPDATE of a column permgraph does not read sends nothing', async () => {
    expect(await notificationsOf(`update permgraph.grants set created_at = now() - interval '1 day' where tail_id = 'ann'`)).toBe(0);
  });

  it('a transaction that changes the graph sends one notification, however many statements it has', async () => {
    expect(await notificationsOf(
      `insert into permgraph.grants (tail_id, head_id, level, source) values ('ann', 'team', 1, 'app')`,
      `update permgraph.grants set level = 2 where tail_id = 'ann' and head_id = 'team'`,
      `delete from permgraph.grants where tail_id = 'ann' and head_id = 'team'`,
    )).toBe(1);
  });

  it('each kind of recorded change sends one', async () => {
    expect(await notificationsOf(`update permgraph.nodes set trash_at = now() + interval '1 day' where id = 'team'`)).toBe(1);
    expect(await notificationsOf(`insert into permgraph.nodes (id, kind) values ('bob', 'user')`)).toBe(1);
    expect(await notificationsOf(`update permgraph.nodes set owner_id = 'bob' where id = 'team'`)).toBe(1);
  });

  it('deleting an object, which records no change row, still wakes the worker to remove its rows', async () => {
    await writer.query(`insert into permgraph.nodes (id, kind, owner_id) values ('memo', 'object', 'team')`);
    const [count] = (await writer.query(`select count(*)::int as n from permgraph.changes where head_id = 'memo'`)).rows;
    expect(count.n).toBe(0); // an object's owner is resolved at query time: no edge, no change row
    expect(await notificationsOf(`delete from permgraph.nodes where id = 'memo'`)).toBe(1);
  });
});
