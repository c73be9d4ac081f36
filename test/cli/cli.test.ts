import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { registerCommands } from '../../src/cli/commands/index.ts';
import { workerConnection } from '../../src/cli/format.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import { REPO } from '../docs/doctest.ts';
import { refresh } from '../../src/engine/apply.ts';
import * as model from '../reference/model.ts';
import { g, grant, u } from '../helpers/builders.ts';
import { createEmptyDatabase, createTestDatabase } from '../helpers/database.ts';
import { BIN, collect, DEV_BIN, killWorkerMidBatch, runCli, spawnCli, waitUntil, wideGraph } from '../helpers/cli.ts';
import { loadGraph, readPermissions } from '../helpers/graph.ts';

/** --json output is camelCase: no key anywhere with an underscore (audit entries' free-form details aside). */
function expectCamelCase(value: unknown, path = '$'): void {
  if (Array.isArray(value)) return value.forEach((v, i) => expectCamelCase(v, `${path}[${i}]`));
  if (value === null || typeof value !== 'object') return;
  for (const [key, v] of Object.entries(value)) {
    expect(key, `${path}.${key}`).toMatch(/^[a-z][A-Za-z0-9]*$/);
    if (key !== 'details') expectCamelCase(v, `${path}.${key}`);
  }
}

describe('permgraph CLI', async () => {
  const { db, url, name } = await createTestDatabase();
  /** A database without the permgraph schema. */
  const empty = await createEmptyDatabase();
  const cli = (...args: string[]) => runCli(['--database-url', url, ...args]);

  it('migrate is idempotent', async () => {
    const result = await cli('migrate');
    expect(result).toMatchObject({ code: 0, stdout: 'schema is up to date\n' });
  });

  it('the development entry (bin/permgraph.mjs, through tsx) runs the same CLI as the build the other tests run', async () => {
    for (const args of [['--database-url', url, 'migrate'], ['check', '--help'], ['--database-url', url, 'check', 'nobody', 'nothing']]) {
      const built = await runCli(args);
      expect(await runCli(args, {}, DEV_BIN), args.join(' ')).toEqual(built);
    }
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
    const json = await cli('--json', 'verify');
    expect(JSON.parse(json.stdout)).toMatchObject({ differences: [{ relation: 'permissions' }], pendingChanges: 0 });
    expect(JSON.parse(json.stderr)).toEqual({ error: { message: '1 difference(s) from a full recomputation', code: 'differences', exitCode: 1 } });
  });

  it('check prints yes/no with exit status 0 / 3 for scripts (errors are 1), and --json', async () => {
    await loadGraph(db, { nodes: [u('ann'), g('docs')], grants: [grant('ann', 2, 'docs')] });
    await refresh(db);
    expect(await cli('check', 'ann', 'docs', 'write')).toEqual({ code: 0, stdout: 'yes\n', stderr: '' });
    expect(await cli('check', 'ann', 'docs', '3')).toEqual({ code: 3, stdout: 'no\n', stderr: '' });
    expect(await cli('check', 'ann', 'docs', 'doc.fly')).toMatchObject({ code: 1, stdout: '' });
    expect(JSON.parse((await cli('--json', 'check', 'ann', 'docs', 'read')).stdout)).toEqual({ user: 'ann', target: 'docs', level: 1, allowed: true });
    const denied = await cli('--json', 'check', 'ann', 'docs', 'manage');
    expect(denied).toMatchObject({ code: 3, stderr: '' });
    expect(JSON.parse(denied.stdout)).toEqual({ user: 'ann', target: 'docs', level: 3, allowed: false });
    expect((await runCli(['check', '--help'])).stdout).toContain('Exit status: 0 allowed; 3 denied; 1 error');
    // An id that is not a node is an error, as in list, who and explain, not a "no" (check() itself answers false).
    const [noUser, noTarget, notUser] = await Promise.all([
      cli('check', 'nobody', 'docs', 'read'),
      cli('check', 'ann', 'nothing', 'read'),
      cli('check', 'docs', 'ann', 'read'),
    ]);
    expect(noUser).toEqual({ code: 1, stdout: '', stderr: 'permgraph: user "nobody" does not exist\n' });
    expect(noTarget).toEqual({ code: 1, stdout: '', stderr: 'permgraph: target "nothing" does not exist\n' });
    expect(notUser).toEqual({ code: 1, stdout: '', stderr: 'permgraph: "docs" is a group, not a user (permissions start at users)\n' });
  });

  it("runs in a directory whose package.json, .pgrc or pg.config.js is not @databases/pg's configuration, and executes none of them", async () => {
    await loadGraph(db, { nodes: [u('ann'), g('docs')], grants: [grant('ann', 2, 'docs')] });
    await refresh(db);
    const root = await mkdtemp(path.join(tmpdir(), 'permgraph-cwd-'));
    try {
      const ran = path.join(root, 'ran');
      // (each directory holds one file: the search of @databases/pg-config stopped at the first it found)
      const files: Record<string, [string, string]> = {
        'being-edited': ['package.json', '{"name": "app", '],
        'other-pg-key': ['package.json', '{"name": "app", "pg": "^8.11.0"}'],
        'pgrc-of-another-tool': ['.pgrc', 'host: [db'],
        'config-script': ['pg.config.cjs', `require('node:fs').writeFileSync(${JSON.stringify(ran)}, 'ran'); module.exports = {};`],
      };
      for (const [dir, [file, text]] of Object.entries(files)) {
        await mkdir(path.join(root, dir));
        await writeFile(path.join(root, dir, file), text);
      }
      const results = await Promise.all(Object.keys(files).map((dir) => runCli(['--database-url', url, 'check', 'ann', 'docs', 'write'], {}, BIN, { cwd: path.join(root, dir) })));
      for (const [k, dir] of Object.keys(files).entries()) expect(results[k], dir).toEqual({ code: 0, stdout: 'yes\n', stderr: '' });
      expect(existsSync(ran)).toBe(false);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('bad input: one-line reason, non-zero exit', async () => {
    // (each its own process, none of them writing: run at once)
    const [badLevel, noCommand, missing, maxBatch, metricsPort, metricsOnce, unreachable, pollInterval, standbyInterval, badPort] = await Promise.all([
      cli('check', 'ann', 'docs', '4'),
      cli('no-such-command'),
      cli('check', 'ann'),
      cli('worker', '--once', '--max-batch', 'lots'),
      cli('worker', '--metrics-port', '99999'),
      cli('worker', '--once', '--metrics-port', '9464'),
      runCli(['--database-url', 'postgres://nobody:x@127.0.0.1:1/none', 'status']),
      // (a timer holds at most 2^31 - 1 ms: a longer poll interval polled in a loop)
      cli('worker', '--poll-interval', '2147483648'),
      cli('worker', '--standby-interval', '99999999999'),
      // (node-pg's own reading of it said "Invalid URL", with advice about passwords)
      runCli(['--database-url', 'postgres://nobody@127.0.0.1:99999/none', 'status']),
    ]);
    expect(badLevel.code).toBe(1);
    expect(badLevel.stderr).toBe('permgraph: level must be 1 (read), 2 (write) or 3 (manage), got "4"\n');
    expect(noCommand.code).toBe(2);
    // a usage error is its line and a pointer to --help, not the whole help
    expect(missing).toMatchObject({ code: 2, stdout: '', stderr: "error: missing required argument 'target'\n(add --help for usage)\n" });
    expect(maxBatch.stderr).toBe('permgraph: --max-batch must be a positive integer, got "lots"\n');
    expect(metricsPort).toMatchObject({ code: 2, stderr: 'permgraph: --metrics-port must be a port from 1 to 65535, got "99999"\n' });
    expect(metricsOnce).toMatchObject({ code: 2, stderr: 'permgraph: --metrics-port has no use with --once, which exits after its batch\n' });
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toMatch(/^permgraph: .*ECONNREFUSED.*\n$/);
    expect(pollInterval).toMatchObject({ code: 2, stderr: 'permgraph: --poll-interval must be at most 2147483647 ms (about 24 days), got "2147483648"\n' });
    expect(badPort).toMatchObject({ code: 1, stderr: "permgraph: the database URL's port must be from 1 to 65535, got 99999\n" });
    expect(standbyInterval).toMatchObject({ code: 2, stderr: 'permgraph: --standby-interval must be at most 2147483647 ms (about 24 days), got "99999999999"\n' });
  });

  it('a --metrics-port that another process holds: the worker exits 1 naming the flag and what to do', async () => {
    // (a second worker on the host given the first one's port, as a copied unit file does)
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '0.0.0.0', resolve));
    try {
      const port = (holder.address() as AddressInfo).port;
      const taken = await cli('worker', '--metrics-port', String(port));
      expect(taken).toMatchObject({
        code: 1,
        stdout: '',
        stderr: `permgraph: --metrics-port ${port}: the port is in use on this host (another worker's metrics?): give each worker on a host a port of its own\n`,
      });
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });

  it('with neither --database-url nor DATABASE_URL a command runs on the embedded development server, and says so when the schema is missing', async () => {
    const project = await mkdtemp(path.join(tmpdir(), 'permgraph-project-'));
    try {
      const env = { ...process.env };
      delete env.DATABASE_URL;
      const result = await collect(spawn(process.execPath, [BIN, 'status'], { cwd: project, env, stdio: ['ignore', 'pipe', 'pipe'] }));
      expect(result).toMatchObject({
        code: 1,
        // (after, as root, a warning that the project directory was made traversable for the postgres OS user)
        stderr: expect.stringMatching(/^permgraph: permgraph schema not found in this database \(the embedded development server: neither --database-url nor DATABASE_URL was given\): run `permgraph migrate` first\n$/m),
      });
    } finally {
      await rm(project, { recursive: true, force: true });
    }
  });

  it('--json: a failure is one JSON object on stderr with a stable code, usage errors included; nothing on stdout', async () => {
    const failure = async (args: string[]) => {
      const result = await cli('--json', ...args);
      expect(result.stdout, args.join(' ')).toBe('');
      expect(result.stderr.trimEnd().split('\n'), args.join(' ')).toHaveLength(1);
      return { code: result.code, ...JSON.parse(result.stderr) };
    };
    const onEmpty = async (args: string[]) => {
      const result = await runCli(['--json', '--database-url', empty.url, ...args]);
      return { code: result.code, ...JSON.parse(result.stderr) };
    };
    // (each its own process, none of them writing: run at once)
    const [level4, noUser, noCommand, maxBatch, unreachable, status, check, badLevel, unknownId, bare, group] = await Promise.all([
      failure(['check', 'ann', 'docs', '4']),
      failure(['list', 'nobody']),
      failure(['no-such-command']),
      failure(['worker', '--once', '--max-batch', 'lots']),
      runCli(['--json', '--database-url', 'postgres://nobody:x@127.0.0.1:1/none', 'status']),
      onEmpty(['status']),
      onEmpty(['check', 'ann', 'docs', 'read']),
      failure(['--log-level', 'loud', 'status']),
      failure(['check', 'nobody', 'docs', 'read']),
      // no command, or a group's command missing: commander's message is a placeholder, "(outputHelp)"
      failure([]),
      failure(['roles']),
    ]);
    for (const missingCommand of [bare, group]) {
      expect(missingCommand).toEqual({ code: 2, error: { message: 'a command is missing (add --help for the commands)', code: 'usage', exitCode: 2 } });
    }
    expect(level4).toEqual({
      code: 1,
      error: { message: 'level must be 1 (read), 2 (write) or 3 (manage), got "4"', code: 'invalid_input', exitCode: 1 },
    });
    expect(noUser).toEqual({
      code: 1,
      error: { message: 'user "nobody" does not exist', code: 'invalid_input', exitCode: 1, sqlState: '22023' },
    });
    expect(noCommand).toEqual({ code: 2, error: { message: "unknown command 'no-such-command'", code: 'usage', exitCode: 2 } });
    expect(maxBatch).toEqual({
      code: 2,
      error: { message: '--max-batch must be a positive integer, got "lots"', code: 'usage', exitCode: 2 },
    });
    expect(unreachable.code).toBe(1);
    expect(JSON.parse(unreachable.stderr)).toMatchObject({ error: { code: 'connection', exitCode: 1 } });
    const notMigrated = { code: 1, error: { message: 'permgraph schema not found in this database: run `permgraph migrate` first', code: 'not_migrated', exitCode: 1 } };
    expect(status).toEqual(notMigrated);
    expect(check).toEqual(notMigrated);
    expect(badLevel).toEqual({
      code: 2,
      error: { message: '--log-level must be trace, debug, info, warn, error or silent, got "loud"', code: 'usage', exitCode: 2 },
    });
    expect(unknownId).toEqual({ code: 1, error: { message: 'user "nobody" does not exist', code: 'invalid_input', exitCode: 1 } });
  });

  it('a reader that stops reading (| head -1): exit 141, nothing on stderr, no stack trace', async () => {
    await loadGraph(db, { nodes: [u('ann'), g('docs')], grants: [grant('ann', 2, 'docs')] });
    const child = spawnCli(['--database-url', url, 'status']);
    child.stdout!.destroy(); // the reader is gone before the command prints
    expect(await collect(child)).toEqual({ code: 141, stdout: '', stderr: '' });
  });

  it('--json output is camelCase in every command', async () => {
    await loadGraph(db, { nodes: [u('ann'), g('docs')], grants: [grant('ann', 2, 'docs')] });
    for (const args of [['migrate'], ['worker', '--once'], ['refresh'], ['status'], ['verify'], ['check', 'ann', 'docs', 'read'], ['doctor']]) {
      const result = await cli('--json', ...args);
      expectCamelCase(JSON.parse(result.stdout), args.join(' '));
    }
  });

  it('every argument of every command has help text', () => {
    const program = new Command('permgraph');
    registerCommands(program);
    const commands = (command: Command): Command[] => [command, ...command.commands.flatMap(commands)];
    const all = commands(program);
    expect(all.length).toBeGreaterThan(15);
    const missing = all.flatMap((command) => command.registeredArguments.filter((a) => !a.description).map((a) => `${command.name()} <${a.name()}>`));
    expect(missing).toEqual([]);
  });

  it('Ctrl-C: SIGINT / SIGTERM cancel the statement running on the server, then exit 130 / 143', async () => {
    await loadGraph(db, { nodes: [u('ann'), g('docs')], grants: [grant('ann', 2, 'docs')] });
    // Another session holds the permission table: refresh and check wait for it, on the server.
    const locker = openPool(url, { poolSize: 1 });
    try {
      await locker.tx(async (tx) => {
        await tx.query(sql`lock table permgraph.permissions in access exclusive mode`);
        for (const [signal, args, code] of [
          ['SIGINT', ['refresh'], 130],
          ['SIGTERM', ['check', 'ann', 'docs', 'read'], 143],
        ] as const) {
          const child = spawnCli(['--database-url', url, ...args]);
          const done = collect(child);
          let waiting: number[] = [];
          await waitUntil(async () => {
            const rows = await db.query(sql`
              select pid from pg_stat_activity
              where datname = current_database() and application_name like 'permgraph-cli-%' and wait_event_type = 'Lock'`);
            waiting = rows.map((r: { pid: number }) => r.pid);
            return waiting.length > 0;
          }, `${args[0]} to wait for the lock`);
          child.kill(signal);
          expect(await done, signal).toEqual({ code, stdout: '', stderr: `permgraph: interrupted by ${signal}\n` });
          // Its backend is gone while the lock is still held: cancelled, not left waiting behind the CLI.
          await waitUntil(async () => {
            const [row] = await db.query(sql`select count(*)::int as n from pg_stat_activity where pid = any(${waiting}::int[])`);
            return row.n === 0;
          }, `the backend of ${args[0]} to go away`);
          // pg_locks is the whole server's, and the files' databases are clones with the same table oids.
          const [held] = await tx.query(sql`
            select count(*)::int as n from pg_locks
            where locktype = 'relation' and relation = 'permgraph.permissions'::regclass and mode = 'AccessExclusiveLock' and granted
              and database = (select oid from pg_database where datname = current_database())`);
          expect(held.n).toBe(1);
        }
      });
    } finally {
      await locker.dispose();
    }
    expect((await cli('refresh')).code).toBe(0);
  });

  it('--version (and -V) prints the version of package.json, exit 0', async () => {
    const { version } = JSON.parse(await readFile(path.join(REPO, 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      expect(await runCli([flag])).toMatchObject({ code: 0, stdout: `${version}\n`, stderr: '' });
    }
  });

  it('every command has --help', async () => {
    const commands = ['migrate', 'refresh', 'verify', 'check', 'status', 'worker', 'dev'];
    const results = await Promise.all(commands.map((command) => runCli([command, '--help'])));
    for (const [i, command] of commands.entries()) {
      expect(results[i]!.code, command).toBe(0);
      expect(results[i]!.stdout, command).toContain(`Usage: permgraph ${command}`);
    }
  });

  it('status reports pending changes and the active worker', async () => {
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('status-user', 'user')`);
    const status = JSON.parse((await cli('--json', 'status')).stdout);
    expect(status).toMatchObject({ schema: 'ok', pendingChanges: 1, worker: null });
    expect((await cli('worker', '--once')).code).toBe(0);
    const after = JSON.parse((await cli('--json', 'status')).stdout);
    expect(after).toMatchObject({ pendingChanges: 0, lastBatch: { lastBatchMode: 'incremental' } });
    expectCamelCase(after);
    expect((await cli('status')).stdout).toMatch(/^pending changes: {2}0$/m);
    // an owner without pg_read_all_stats sees neither address nor start of another role's session: hidden, not "local socket"
    expect(workerConnection({ clientAddr: null, since: null })).toBe("its address and start hidden from the schema's owner (grant it pg_read_all_stats to see them)");
    expect(workerConnection({ clientAddr: null, since: '2026-12-05T02:00:00Z' })).toBe('from local socket, since 2026-12-05T02:00:00Z');
    expect(workerConnection({ clientAddr: '10.0.0.7', since: '2026-12-05T02:00:00Z' })).toBe('from 10.0.0.7, since 2026-12-05T02:00:00Z');
  });

  it('status prints the moments of its tables in UTC to the microsecond, whatever the session\'s time zone (JSON too)', async () => {
    await db.query(sql`insert into permgraph.nodes (id, kind) values ('status-exact-user', 'user')`);
    expect((await cli('worker', '--once')).code).toBe(0); // (applier_state has its row: a batch ran)
    await db.query(sql`update permgraph.applier_state set last_batch_at = '2030-01-31T18:00:00.000250Z'`);
    await db.query(sql`select permgraph.register_consumer('status-exact')`);
    const [{ registered }] = await db.query(sql`
      select to_char(registered_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as registered from permgraph.change_consumers where consumer = 'status-exact'`);
    await db.query(sql`alter database ${sql.ident(name)} set timezone = 'Asia/Kathmandu'`);
    try {
      const json = JSON.parse((await cli('--json', 'status')).stdout);
      expect(json.lastBatch.lastBatchAt).toBe('2030-01-31T18:00:00.000250Z');
      expect(json.changeConsumers.find((c: { consumer: string }) => c.consumer === 'status-exact')).toMatchObject({ registeredAt: registered, ackedAt: null });
      expect((await cli('status')).stdout).toMatch(/^last batch: {7}(incremental|full), \d+ change\(s\), [\d.]+ ms, at 2030-01-31T18:00:00\.000250Z$/m);
      // A session holding the applier role: its start (pg_stat_activity's) in UTC too, in status and doctor
      await db.task(async (holder) => {
        const [{ since }] = await holder.query(sql`
          select to_char(backend_start at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as since from pg_stat_activity where pid = pg_backend_pid()`);
        await holder.query(sql`select pg_advisory_lock(permgraph._applier_role_key())`);
        try {
          expect(JSON.parse((await cli('--json', 'status')).stdout).worker.since).toBe(since);
          expect((await cli('status')).stdout).toMatch(new RegExp(`^worker: {11}active \\(.*, since ${since.replace(/[.]/g, '\\.')}\\)$`, 'm'));
          const doctor = JSON.parse((await cli('--json', 'doctor')).stdout);
          expect(doctor.checks.find((c: { name: string }) => c.name === 'worker').message).toMatch(new RegExp(` since ${since.replace(/[.]/g, '\\.')}$`));
        } finally {
          await holder.query(sql`select pg_advisory_unlock(permgraph._applier_role_key())`);
        }
      });
    } finally {
      await db.query(sql`alter database ${sql.ident(name)} reset timezone`);
      await db.query(sql`select permgraph.drop_consumer('status-exact')`);
    }
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

  it('worker killed with SIGKILL mid-chunk of a long job: the job goes on from its last chunk, `worker --once` finishes it', async () => {
    // wideGraph, with a hub between the team and its groups: revoking team -> hub is one change of 200 x 201 pairs
    const wide = wideGraph(200, 200);
    const graph = {
      nodes: [...wide.nodes, g('hub')],
      grants: [...wide.grants.map((x) => (x.tailId === 'team' ? { ...x, tailId: 'hub' } : x)), grant('team', 2, 'hub')],
    };
    await loadGraph(db, graph);
    await refresh(db);
    const token = await db.tx(async (tx) => {
      await tx.query(sql`delete from permgraph.grants where tail_id = 'team' and head_id = 'hub'`);
      const [row] = await tx.query(sql`select permgraph.current_token() as token`);
      return row.token as string;
    });
    const after = { nodes: graph.nodes, grants: graph.grants.filter((x) => !(x.tailId === 'team' && x.headId === 'hub')) };
    await killWorkerMidBatch(db, url, { chunkPairs: 2_000 });
    const [{ applied }] = await db.query(sql`select permgraph.is_applied(${token}) as applied`);
    expect(applied).toBe(false);
    const midway = JSON.parse((await cli('--json', 'status')).stdout);
    expect(midway.longJob).toMatchObject({ finishedAt: null, usersTotal: 200 });
    expect((await cli('status')).stdout).toMatch(/^long job: {9}running since .*, \d+\/200 users, \d+ chunk\(s\), \d+ change\(s\) \(\+0 waiting for it\), 0 let go before its end$/m);
    const restarted = await cli('worker', '--once');
    expect(restarted.code).toBe(0);
    expect(restarted.stdout).toMatch(/finished a long job in \d+ chunk\(s\)/);
    expect(await readPermissions(db)).toEqual(model.computePermissions(after));
    const [{ done }] = await db.query(sql`select permgraph.is_applied(${token}) as done`);
    expect(done).toBe(true);
    expect(JSON.parse((await cli('--json', 'status')).stdout).longJob).toMatchObject({ endedBy: 'chunks', usersDone: 200 });
    expect((await cli('verify')).code).toBe(0);
  });
});
