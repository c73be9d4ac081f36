// The npm package as a user gets it: `npm pack` (whose prepack builds dist/)
// on a copy of the working tree, installed into an empty project, then run
// with plain node and no tsx: the bin, migrate and verify against a database,
// the API from a script, the declarations under tsc, and SIGTERM to
// `npx permgraph worker`.
import { spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync, readdirSync, type Dirent } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { activeWorker, alive, cleanEnv, collect, commandLine, createOwnDatabase, descendants, expectOk, HAS_PROC, REPO, run, until } from './support.ts';

const TSC = path.join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');

describe('the npm package', async () => {
  const work = await mkdtemp(path.join(tmpdir(), 'permgraph-pack-'));
  const leftovers: number[] = [];
  afterAll(async () => {
    for (const pid of leftovers) if (alive(pid)) process.kill(pid, 'SIGKILL');
    await rm(work, { recursive: true, force: true });
  });

  // A copy of what the package is built from, so that packing neither races
  // with other runs over the checkout's dist/ nor ships a stale one.
  const staging = path.join(work, 'staging');
  await mkdir(staging);
  for (const entry of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'README.md', 'LICENSE', 'src', 'sql', 'docs']) {
    if (existsSync(path.join(REPO, entry))) await cp(path.join(REPO, entry), path.join(staging, entry), { recursive: true });
  }
  await symlink(path.join(REPO, 'node_modules'), path.join(staging, 'node_modules'), 'dir');
  const packed = expectOk(await run('npm', ['pack', '--json', '--pack-destination', work], { cwd: staging }), 'npm pack');
  const [manifest] = JSON.parse(packed.stdout.slice(packed.stdout.search(/^\[/m))) as { filename: string; files: { path: string }[] }[];
  const tarball = path.join(work, manifest!.filename);
  const shipped = manifest!.files.map((f) => f.path);

  // The consumer: an empty ES module project with the tarball and @types/node.
  const app = path.join(work, 'app');
  await mkdir(app);
  await writeFile(path.join(app, 'package.json'), `${JSON.stringify({ name: 'consumer', private: true, type: 'module' }, null, 2)}\n`);
  const typesNode = `@types/node@${JSON.parse(await readFile(path.join(REPO, 'package.json'), 'utf8')).devDependencies['@types/node']}`;
  const install = (mode: string) => run('npm', ['install', mode, '--no-audit', '--no-fund', '--loglevel=error', tarball, typesNode], { cwd: app });
  // From the cache that `npm ci` filled; the first run on a machine may still need the registry's metadata.
  let installed = await install('--offline');
  if (installed.code !== 0) installed = await install('--prefer-offline');
  expectOk(installed, 'npm install <tarball>');
  const bin = path.join(app, 'node_modules', '.bin', 'permgraph');

  const { url, db } = await createOwnDatabase('permgraph_pack');

  it('ships dist/ (JavaScript, declarations, source maps), sql/ with its subfolders and the README; no sources, tests or dev entry', () => {
    for (const file of ['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts', 'dist/index.js.map', 'dist/cli/main.js', 'dist/migrations/migrate.js']) {
      expect(shipped).toContain(file);
    }
    // Every file of sql/, at any depth (migrations/, functions/, …).
    const sqlFiles = (readdirSync(path.join(staging, 'sql'), { recursive: true, withFileTypes: true }) as Dirent[])
      .filter((entry) => entry.isFile())
      .map((entry) => path.relative(staging, path.join(entry.parentPath, entry.name)).split(path.sep).join('/'));
    expect(sqlFiles.length).toBeGreaterThan(10);
    expect(shipped.filter((f) => f.startsWith('sql/')).sort()).toEqual(sqlFiles.sort());
    expect(shipped.filter((f) => /^(src|test|bench|bin)\//.test(f))).toEqual([]);
    expect(existsSync(path.join(app, 'node_modules', 'tsx'))).toBe(false);
    expect(existsSync(path.join(app, 'node_modules', 'typescript'))).toBe(false);
  });

  it('the bin runs with plain node: --help', async () => {
    const help = expectOk(await run(bin, ['--help'], { cwd: app }), 'permgraph --help');
    expect(help.stdout).toMatch(/^Usage: permgraph /);
    for (const command of ['migrate', 'verify', 'worker', 'import', 'doctor']) expect(help.stdout).toContain(command);
  });

  it('permgraph migrate, verify and doctor against a database (sql/ is found from dist/)', async () => {
    const migrated = expectOk(await run(bin, ['migrate', '--database-url', url], { cwd: app }), 'permgraph migrate');
    expect(migrated.stdout).toMatch(/^applied 001_/);
    const again = expectOk(await run(bin, ['migrate', '--database-url', url], { cwd: app }), 'permgraph migrate (again)');
    expect(again.stdout).toBe('schema is up to date\n');
    const verified = expectOk(await run(bin, ['verify', '--database-url', url], { cwd: app }), 'permgraph verify');
    expect(verified.stdout).toMatch(/^ok: the table equals a full recomputation/);
    // doctor compares the indexes with the shipped sql/schema.sql
    const doctor = expectOk(await run(bin, ['doctor', '--database-url', url], { cwd: app }), 'permgraph doctor');
    expect(doctor.stdout).toMatch(/^ok {4}indexes /m);
  });

  it("the API from a plain node script: import { Permgraph } from 'permgraph'", async () => {
    await writeFile(
      path.join(app, 'api.mjs'),
      `import { Permgraph, InvalidInputError } from 'permgraph';
const pg = await Permgraph.connect({ databaseUrl: process.argv[2] });
await pg.migrate();
await pg.addNode('alice', 'user');
await pg.addNode('eng', 'group');
await pg.addNode('roadmap', 'group', { ownerId: 'eng' });
await pg.grant('alice', 'eng', 'write');
await pg.applyChanges();
const result = {
  write: await pg.check('alice', 'roadmap', 'write'),
  manage: await pg.check('alice', 'roadmap', 'manage'),
  refused: await pg.grant('alice', 'nobody', 'read').then(() => false, (error) => error instanceof InvalidInputError),
};
await pg.close();
console.log(JSON.stringify(result));
`,
    );
    const out = expectOk(await run(process.execPath, ['api.mjs', url], { cwd: app }), 'node api.mjs');
    expect(JSON.parse(out.stdout)).toEqual({ write: true, manage: false, refused: true });
  });

  // Node 20.19+ loads an ES module from require(): a CommonJS application
  // gets the same API, provided the exports map has a condition require()
  // matches ("default", not "import" alone).
  it("the API from a CommonJS script: require('permgraph')", async () => {
    await writeFile(
      path.join(app, 'api.cjs'),
      `const { Permgraph, parseLevel } = require('permgraph');
(async () => {
  const pg = await Permgraph.connect({ databaseUrl: process.argv[2] });
  const readable = await pg.check('alice', 'roadmap', parseLevel('read'));
  await pg.close();
  console.log(JSON.stringify({ readable }));
})();
`,
    );
    const out = expectOk(await run(process.execPath, ['api.cjs', url], { cwd: app }), 'node api.cjs');
    expect(JSON.parse(out.stdout)).toEqual({ readable: true });
  });

  it("the declarations type-check a consumer's TypeScript (tsc, strict, no skipLibCheck)", async () => {
    await writeFile(
      path.join(app, 'tsconfig.json'),
      `${JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: false, types: ['node'] }, files: ['consumer.ts'] }, null, 2)}\n`,
    );
    await writeFile(
      path.join(app, 'consumer.ts'),
      `import { Permgraph, parseLevel, InvalidInputError, type Level, type BatchResult } from 'permgraph';

export async function demo(url: string): Promise<boolean> {
  const pg: Permgraph = await Permgraph.connect({ databaseUrl: url });
  const level: Level = parseLevel('write');
  const batch: BatchResult = await pg.applyChanges();
  const mode: 'none' | 'incremental' | 'full' = batch.mode;
  // @ts-expect-error check() resolves to a boolean: proves the declarations are read, not any
  const wrong: number = await pg.check('alice', 'eng', level);
  const error: Error = new InvalidInputError('bad');
  await pg.close();
  return mode !== 'full' && wrong !== 0 && error.message !== '';
}
`,
    );
    const checked = await run(process.execPath, [TSC, '-p', app], { cwd: app });
    expect(checked.stdout + checked.stderr).toBe('');
    expect(checked.code).toBe(0);
  });

  it.runIf(HAS_PROC)('SIGTERM to `npx permgraph worker` stops the worker: batch finished, applier lock released, no orphan', async () => {
    const npx = spawn('npx', ['--no', 'permgraph', 'worker', '--migrate', '--database-url', url, '--poll-interval', '200'], {
      cwd: app,
      env: cleanEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const output = collect(npx);
    const backend = await until('the worker to hold the applier role', () => activeWorker(db), 60_000);
    const worker = await until('the worker process', () => descendants(npx.pid!).find((pid) => /node.*permgraph.* worker/.test(commandLine(pid))));
    leftovers.push(worker);
    expect(backend).toBeGreaterThan(0);

    process.kill(npx.pid!, 'SIGTERM');
    await until('the worker process to exit', () => !alive(worker) || undefined, 30_000);
    await until('the applier lock to be released', async () => ((await activeWorker(db)) === undefined) || undefined, 10_000);
    const { stderr } = await output; // closes once the worker, which shares npx's stderr, is gone too
    expect(stderr).toContain('shutting down');
    expect(stderr).toContain('worker stopped');
  });
});
