import { describe, expect, it } from 'vitest';
import { sql } from '../../src/db/pool.ts';
import { refresh } from '../../src/engine/apply.ts';
import * as model from '../reference/model.ts';
import { g, grant, u } from '../helpers/builders.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { collect, killWorkerMidBatch, runCli, spawnCli, waitUntil, wideGraph } from '../helpers/cli.ts';
import { loadGraph, readPermissions } from '../helpers/graph.ts';

describe('permgraph CLI', async () => {
  const { db, url } = await createTestDatabase();
  const cli = (...args: string[]) => runCli(['--database-url', url, ...args]);

  it('migrate is idempotent', async () => {
    const result = await cli('migrate');
    expect(result).toMatchObject({ code: 0, stdout: 'schema is up to date\n' });
  });

  it('refresh then verify succeeds; verify lists a tampered row and exits 1', async () => {
    const graph: model.RefGraph = { nodes: [u('ann'), g('docs')], grants: [grant('ann', 2, 'docs')] };
    await loadGraph(db, graph);
    expect((await cli('refresh')).code).toBe(0);
    expect(await cli('verify')).toMatchObject({ code: 0 });
    await db.query(sql`update permgraph.permissions set level = 1 where user_id = 'ann' and target_id = 'docs'`);
    const result = await cli('verify');
    expect(result.code).toBe(1);
    expect(result.stdout).toContain('permissions ann -> docs: stored level 1, traverse_owned true, expected level 2, traverse_owned true');
    expect(result.stderr).toMatch(/^permgraph: 1 difference\(s\) from a full recomputation\n$/);
    expect((await cli('--json', 'verify')).stdout).toContain('"relation": "permissions"');
  });

  it('check prints yes/no, with --json for scripts', async () => {
    await loadGraph(db, { nodes: [u('ann'), g('docs')], grants: [grant('ann', 2, 'docs')] });
    await refresh(db);
    expect((await cli('check', 'ann', 'docs', 'write')).stdout).toBe('yes\n');
    expect((await cli('check', 'ann', 'docs', '3')).stdout).toBe('no\n');
    expect(JSON.parse((await cli('--json', 'check', 'ann', 'docs', 'read')).stdout)).toMatchObject({ allowed: true, level: 1 });
  });

  it('bad input: one-line reason, non-zero exit', async () => {
    const badLevel = await cli('check', 'ann', 'docs', '4');
    expect(badLevel.code).toBe(1);
    expect(badLevel.stderr).toBe('permgraph: level must be 1 (read), 2 (write) or 3 (manage), got "4"\n');
    expect((await cli('no-such-command')).code).toBe(2);
    expect((await cli('worker', '--once', '--max-batch', 'lots')).stderr).toBe('permgraph: --max-batch must be a positive integer, got "lots"\n');
    const unreachable = await runCli(['--database-url', 'postgres://nobody:x@127.0.0.1:1/none', 'status']);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toMatch(/^permgraph: .*ECONNREFUSED.*\n$/);
  });

  it('every command has --help', async () => {
    for (const command of ['migrate', 'refresh', 'verify', 'check', 'status', 'worker', 'dev']) {
      const result = await runCli([command, '--help']);
      expect(result.code, command).toBe(0);
      expect(result.stdout, command).toContain(`Usage: permgraph ${command}`);
    }
  });

  it('status reports pending changes and the active worker', async () => {
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('status-user', 'user')`);
    const status = JSON.parse((await cli('--json', 'status')).stdout);
    expect(status).toMatchObject({ schema: 'ok', pending_changes: 1, worker: null });
    expect((await cli('worker', '--once')).code).toBe(0);
    expect(JSON.parse((await cli('--json', 'status')).stdout)).toMatchObject({ pending_changes: 0, last_batch: { last_batch_mode: 'incremental' } });
  });

  it('worker: SIGTERM stops it cleanly with exit 0', async () => {
    const child = spawnCli(['--database-url', url, 'worker', '--poll-interval', '50']);
    const done = collect(child);
    await waitUntil(async () => {
      const [row] = await db.query(sql`select permgraph.status() -> 'worker' as worker`);
      return row.worker !== null;
    }, 'the worker to take the applier role');
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('sigterm-user', 'user')`);
    await waitUntil(async () => (await readPermissions(db)).some((r) => r.userId === 'sigterm-user'), 'the worker to apply');
    child.kill('SIGTERM');
    const result = await done;
    expect(result.code).toBe(0);
    expect(result.stderr).toContain('worker stopped');
  });

  it('worker killed with SIGKILL mid-batch: nothing half-written, and a restart converges', async () => {
    const graph = wideGraph(400, 400);
    await loadGraph(db, graph);
    await refresh(db);
    // Revoke the team's grants: a large batch (160k rows to delete) the worker will be killed in.
    await db.query(sql`delete from permgraph.grants where tail_id = 'team'`);
    const after = { nodes: graph.nodes, grants: graph.grants.filter((g) => g.tailId !== 'team') };
    const before = await readPermissions(db);
    await killWorkerMidBatch(db, url);
    // The batch's transaction died with its backend, or committed whole: never in between.
    const middle = await readPermissions(db);
    const [pending] = await db.query(sql`select count(*)::int as n from permgraph.changes`);
    if (pending.n > 0) expect(middle).toEqual(before);
    else expect(middle).toEqual(model.computePermissions(after));
    const restarted = await cli('worker', '--once');
    expect(restarted.code).toBe(0);
    expect(await readPermissions(db)).toEqual(model.computePermissions(after));
    expect((await cli('verify')).code).toBe(0);
  });
});
