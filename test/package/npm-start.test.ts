// `npm start` must pass SIGTERM on to the worker and wait for it: a process
// manager that stops npm's pid must not leave a worker holding the applier
// role. (npm forwards the signal to the script's shell only; the script execs
// node so that the shell is the worker.)
import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { activeWorker, alive, cleanEnv, collect, commandLine, createOwnDatabase, descendants, HAS_PROC, REPO, until } from './support.ts';

describe.runIf(HAS_PROC)('npm start and signals', async () => {
  const { url, db } = await createOwnDatabase('permgraph_start');
  const leftovers: number[] = [];
  afterAll(() => {
    for (const pid of leftovers) if (alive(pid)) process.kill(pid, 'SIGKILL');
  });

  it('SIGTERM to npm start: the worker finishes, releases the applier lock and exits before npm does', async () => {
    const npm = spawn('npm', ['start'], { cwd: REPO, env: cleanEnv({ DATABASE_URL: url }), stdio: ['ignore', 'pipe', 'pipe'] });
    const output = collect(npm);
    const npmExited = new Promise<number | null>((resolve) => npm.once('exit', (code) => resolve(code)));
    await until('the worker to hold the applier role', () => activeWorker(db), 90_000);
    leftovers.push(...descendants(npm.pid!));
    // The node process that runs `dev` (the last one, should a loader have spawned another).
    const worker = await until('the worker process', () => descendants(npm.pid!).filter((pid) => /node .* dev$/.test(commandLine(pid))).pop());

    process.kill(npm.pid!, 'SIGTERM');
    const code = await npmExited;
    // npm waited for the worker: by the time npm is gone, so are the worker and its lock.
    expect(alive(worker)).toBe(false);
    expect(await activeWorker(db)).toBeUndefined();
    expect(code).toBe(0);
    const { stdout, stderr } = await output;
    expect(stdout).toContain(`permgraph: PostgreSQL at ${url} (from env)`);
    expect(stdout).toContain(`try:  psql "${url}"`);
    expect(stderr).toContain('"signal":"SIGTERM"');
    expect(stderr).toContain('worker stopped');
  });

  // Ctrl-C in a terminal signals the whole foreground process group (npm and
  // the worker), and npm forwards the SIGINT to its child as well: the worker
  // gets the same keypress twice within milliseconds. That must be one
  // request to stop, not a "second signal" that skips the clean shutdown.
  it('Ctrl-C to npm start (SIGINT to the process group): one clean shutdown, not a forced exit', async () => {
    const npm = spawn('npm', ['start'], {
      cwd: REPO, env: cleanEnv({ DATABASE_URL: url }), stdio: ['ignore', 'pipe', 'pipe'], detached: true,
    });
    const output = collect(npm);
    const npmExited = new Promise<number | null>((resolve) => npm.once('exit', (code) => resolve(code)));
    await until('the worker to hold the applier role', () => activeWorker(db), 90_000);
    leftovers.push(...descendants(npm.pid!));
    const worker = await until('the worker process', () => descendants(npm.pid!).filter((pid) => /node .* dev$/.test(commandLine(pid))).pop());

    process.kill(-npm.pid!, 'SIGINT'); // what the terminal does: the process group
    await npmExited;
    await until('the worker to exit', () => (alive(worker) ? undefined : true));
    expect(await activeWorker(db)).toBeUndefined();
    const { stderr } = await output;
    expect(stderr).toContain('"signal":"SIGINT"');
    expect(stderr).toContain('worker stopped');
    expect(stderr).not.toContain('second signal');
  });
});
