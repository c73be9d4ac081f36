// `permgraph import` throughput (issue 11 #3), in a database that already
// holds data: earlier imports behind it and many nodes written otherwise, and
// the staging tables' statistics taken while they were empty (the state in
// which validation used to go quadratic). For each size, a fresh database
// gets that history, then one CSV pair of `size` nodes and `size` grants is
// imported through the library (importGraph, as `permgraph import` runs it)
// and its phases are timed: staging (read, parse and write the rows in
// committed batches), validation, load (upsert with change capture off),
// and the one refresh() that follows.
//
//   npm run bench -- --import [--size small|large]
//   npx tsx bench/measure/import.ts [--sizes 20000,200000] [--keep]
//
// Rows/s counts nodes + grants over staging + validation + load (the refresh
// is the engine's, measured apart in the refresh phase of the benchmark).
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { importGraph, type ImportSummary } from '../../src/app/import/index.ts';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { writeLines } from '../graph/csv.ts';
import { say } from '../lib/progress.ts';
import { freshDatabase, TMP_DIR } from '../lib/server.ts';
import { measureCopyFloor, type CopyFloor } from './import-floor.ts';

/** Sizes (nodes, and as many grants) per benchmark size. */
export const IMPORT_SIZES = { small: [20_000, 50_000, 200_000], large: [20_000, 200_000, 1_000_000] } as const;

/** The history every measured import lands on. */
const HISTORY = { imports: 3, nodesPerImport: 20_000, otherNodes: 100_000 };

export interface ImportCase {
  /** default: `permgraph import`; exclusive: `permgraph import --exclusive` (readers wait; foreign keys checked once). Absent in older runs: default. */
  mode?: 'default' | 'exclusive';
  nodes: number;
  grants: number;
  /** Stage (both inputs), validate, load, refresh: wall-clock ms on the client; refresh as the server measured it. */
  stageMs: number;
  validateMs: number;
  loadMs: number;
  refreshMs: number;
  /** (nodes + grants) / (stage + validate + load), and the same with the refresh. */
  rowsPerSecond: number;
  rowsPerSecondWithRefresh: number;
  permissionRows: number;
  invalid: number;
  /** The same rows by a plain COPY into copies of nodes and grants with their indexes (import-floor.ts); measured once per size. Absent in older runs. */
  floor?: CopyFloor;
}

export interface ImportResult {
  /** What the database held before each measured import. */
  history: { imports: number; nodesPerImport: number; otherNodes: number; nodes: number; grants: number };
  cases: ImportCase[];
}

/** One run of the import phase: a fresh database per size. */
export async function measureImport(serverUrl: string, sizes: readonly number[], options: { keep?: boolean } = {}): Promise<ImportResult> {
  const cases: ImportCase[] = [];
  let history: ImportResult['history'] = { ...HISTORY, nodes: 0, grants: 0 };
  for (const size of sizes) for (const mode of ['default', 'exclusive'] as const) {
    const bdb = await freshDatabase(serverUrl, `import_${size}`);
    try {
      history = await seedHistory(bdb.db, bdb.url);
      const files = await writePair(`measured-${size}`, 'n', size);
      // The floor, once per size, on the same history, before the import.
      const floor = mode === 'default' ? await measureCopyFloor(bdb.db, bdb.url, files) : cases.find((c) => c.nodes === size)?.floor;
      if (mode === 'default') say(`  plain COPY floor of ${size.toLocaleString('en-US')} + ${size.toLocaleString('en-US')} rows: ${floor!.ms} ms, ${floor!.rowsPerSecond.toLocaleString('en-US')} rows/s`);
      say(`  import of ${size.toLocaleString('en-US')} nodes + ${size.toLocaleString('en-US')} grants onto ${history.nodes.toLocaleString('en-US')} nodes (${mode})`);
      const timed = await timedImport(bdb.db, files, `measured-${size}`, { connectionUrl: bdb.url, exclusive: mode === 'exclusive' });
      const [{ permissions }] = await bdb.db.query(sql`select count(*)::bigint as permissions from permgraph.permissions`);
      const rows = timed.summary.nodes.read + timed.summary.grants.read;
      const work = timed.stageMs + timed.validateMs + timed.loadMs;
      const c: ImportCase = {
        mode,
        nodes: timed.summary.nodes.read,
        grants: timed.summary.grants.read,
        stageMs: Math.round(timed.stageMs),
        validateMs: Math.round(timed.validateMs),
        loadMs: Math.round(timed.loadMs),
        refreshMs: Math.round(timed.refreshMs),
        rowsPerSecond: Math.round(rows / (work / 1000)),
        rowsPerSecondWithRefresh: Math.round(rows / ((work + timed.refreshMs) / 1000)),
        permissionRows: Number(permissions),
        invalid: timed.summary.invalid,
        floor,
      };
      say(`    stage ${(c.stageMs / 1000).toFixed(1)} s, validate ${(c.validateMs / 1000).toFixed(1)} s, load ${(c.loadMs / 1000).toFixed(1)} s: ` +
        `${c.rowsPerSecond.toLocaleString('en-US')} rows/s; refresh ${(c.refreshMs / 1000).toFixed(1)} s`);
      cases.push(c);
    } finally {
      if (options.keep) await bdb.db.dispose();
      else await bdb.drop();
    }
  }
  return { history, cases };
}

/** Earlier imports, many nodes written otherwise, and staging statistics taken while the staging tables were empty. */
export async function seedHistory(db: Queryable, connectionUrl: string): Promise<ImportResult['history']> {
  for (let i = 0; i < HISTORY.imports; i++) {
    const files = await writePair(`history-${i}`, `h${i}`, HISTORY.nodesPerImport);
    await importGraph(db, { ...files, name: `history-${i}`, connectionUrl });
  }
  await db.query(sql`
    insert into permgraph.nodes (id, kind, owner_id)
    select 'x' || i, 'object', 'h0g' || (i % ${Math.floor((3 * HISTORY.nodesPerImport) / 10)}) from generate_series(1, ${HISTORY.otherNodes}) i`);
  await db.query(sql`select permgraph.refresh()`);
  await db.query(sql`analyze permgraph.nodes; analyze permgraph.grants; analyze permgraph.import_nodes; analyze permgraph.import_grants`);
  const [row] = await db.query(sql`select (select count(*) from permgraph.nodes)::bigint as nodes, (select count(*) from permgraph.grants)::bigint as grants`);
  return { ...HISTORY, nodes: Number(row.nodes), grants: Number(row.grants) };
}

async function timedImport(
  db: Queryable,
  files: { nodes: { file: string }; grants: { file: string } },
  name: string,
  options: { connectionUrl: string; exclusive: boolean },
) {
  const started = performance.now();
  const marks: Partial<Record<'validate' | 'load', number>> = {};
  const summary: ImportSummary = await importGraph(db, {
    ...files,
    name,
    // As the CLI runs it: with the URL (COPY staging); --exclusive or not.
    ...options,
    onProgress: (p) => {
      if ((p.phase === 'validate' || p.phase === 'load') && marks[p.phase] === undefined) marks[p.phase] = performance.now();
    },
  });
  const ended = performance.now();
  const refreshMs = summary.refresh?.ms ?? 0;
  const validateAt = marks.validate ?? ended;
  const loadAt = marks.load ?? ended;
  return {
    summary,
    stageMs: validateAt - started,
    validateMs: loadAt - validateAt,
    // The refresh runs in the load's transaction, after the load; its own time is the server's.
    loadMs: ended - loadAt - refreshMs,
    refreshMs,
  };
}

/**
 * `n` nodes named p…: a fifth users, three tenths groups (the first half
 * owned by users, the second by a group of the first half), half objects
 * owned by groups; `n` grants: each user to a group, each group to an
 * object, and users to objects for the rest (unique pairs for n a multiple
 * of 10). A third of the levels are written by name.
 */
export async function writePair(label: string, p: string, n: number): Promise<{ nodes: { file: string }; grants: { file: string } }> {
  const dir = path.join(TMP_DIR, 'import', label);
  await mkdir(dir, { recursive: true });
  const users = Math.floor(n / 5);
  const groups = Math.floor((3 * n) / 10);
  const objects = n - users - groups;
  const half = Math.floor(groups / 2);
  const nodes = path.join(dir, 'nodes.csv');
  const grants = path.join(dir, 'grants.csv');
  await writeLines(nodes, 'id,kind,owner_id', (function* () {
    // Owners after what they own: the import takes any order.
    for (let i = 0; i < objects; i++) yield `${p}o${i},object,${p}g${i % groups}`;
    for (let i = groups - 1; i >= 0; i--) yield `${p}g${i},group,${i < half ? `${p}u${i % users}` : `${p}g${i - half}`}`;
    for (let i = 0; i < users; i++) yield `${p}u${i},user,`;
  })());
  const level = (i: number) => (i % 3 === 0 ? ['read', 'write', 'manage'][i % 9 / 3]! : String((i % 3) + 1));
  await writeLines(grants, 'tail_id,head_id,level,source', (function* () {
    for (let i = 0; i < n; i++) {
      if (i < users) yield `${p}u${i},${p}g${(7 * i) % groups},${level(i)},bench`;
      else if (i < users + groups) yield `${p}g${i - users},${p}o${(i - users) % objects},${level(i)},bench`;
      else yield `${p}u${i % users},${p}o${(3 * i) % objects},${level(i)},bench`;
    }
  })());
  return { nodes: { file: nodes }, grants: { file: grants } };
}

async function main(): Promise<void> {
  const { Command } = await import('commander');
  const { startServer } = await import('../lib/server.ts');
  const program = new Command()
    .option('--sizes <list>', 'comma-separated node counts (each also the grant count)', IMPORT_SIZES.small.join(','))
    .option('--keep', 'keep the databases', false)
    .parse();
  const opts = program.opts<{ sizes: string; keep: boolean }>();
  const sizes = opts.sizes.split(',').map((s) => Number(s.trim()));
  for (const s of sizes) if (!Number.isInteger(s) || s <= 0 || s % 10 !== 0) throw new Error(`sizes must be positive multiples of 10, got ${s}`);
  const server = await startServer();
  try {
    const result = await measureImport(server.url, sizes, { keep: opts.keep });
    process.stdout.write(`${JSON.stringify(result, null, 1)}\n`);
  } finally {
    await server.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((error: unknown) => {
    process.stderr.write(`import bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  });
}
