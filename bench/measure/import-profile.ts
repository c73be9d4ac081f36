// Not part of the benchmark: profiles one import's validate and load
// statement by statement (auto_explain, nested statements, durations).
//   npx tsx bench/measure/import-profile.ts --size 200000 [--batch 10000] [--exclusive] [--insert] [--plans] [--timing]
//     [--min MS] (log statements above MS ms; default 300) [--temp-buffers MB] (the session's temp_buffers, set before validating)
//     [--history] (first the benchmark's history: earlier imports and other nodes, import.ts)
// Each phase prints its wall-clock time and the backend's CPU time.
// The load takes its locks as src/app/import/load.ts does (--exclusive: ImportOptions.exclusive).
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { importGraph } from '../../src/app/import/index.ts';
import { resolveLevels } from '../../src/app/import/validate.ts';
import { sql } from '../../src/db/pool.ts';
import { freshDatabase, startServer } from '../lib/server.ts';
import { seedHistory, writePair } from './import.ts';

const arg = (name: string, fallback: number) => (process.argv.includes(name) ? Number(process.argv[process.argv.indexOf(name) + 1]) : fallback);
const size = arg('--size', 200000);
const batchSize = arg('--batch', 10000);
const server = await startServer();
try {
  const bdb = await freshDatabase(server.url, `import_profile`);
  if (process.argv.includes('--history')) await seedHistory(bdb.db, bdb.url);
  const files = await writePair(`profile-${size}`, 'n', size);
  const stopped = new Error('staged');
  const t0 = performance.now();
  await importGraph(bdb.db, { ...files, name: 'p', batchSize, connectionUrl: process.argv.includes('--insert') ? undefined : bdb.url, afterBatch: async () => {}, onProgress: (p) => { if (p.phase === 'validate') throw stopped; } }).catch((e) => {
    if (e !== stopped) throw e;
  });
  console.log(`staged in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const client = new pg.Client({ connectionString: bdb.url });
  client.on('notice', (n) => {
    const text = n.message ?? '';
    if (!text.startsWith('duration:')) return;
    const m = /^duration: ([\d.]+) ms\s+plan:\s*([\s\S]*)$/.exec(text);
    if (!m) return console.log(text.slice(0, 300));
    const q = /Query Text: ([\s\S]*?)\n[A-Z]/.exec(m[2]!)?.[1] ?? m[2]!.slice(0, 200);
    console.log(`--- ${(Number(m[1]) / 1000).toFixed(2)} s: ${q.replace(/\s+/g, ' ').slice(0, 180)}`);
    if (process.argv.includes('--plans')) console.log(m[2]);
  });
  client.on('error', () => {}); // the server stopping after a failed statement: that statement's error is the one to see
  await client.connect();
  // The backend's own CPU time (utime + stime, from /proc: the server runs on this machine), which moves far less than
  // wall-clock time when the machine is shared.
  const { rows: [{ pid }] } = await client.query('select pg_backend_pid() as pid');
  if (process.argv.includes('--pid')) console.log(`backend pid ${pid}`);
  const cpu = () => {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime: fields 14 and 15 of stat, in ticks of 1/100 s
  };
  let c = cpu();
  const cpuSince = () => {
    const now = cpu();
    const spent = now - c;
    c = now;
    return `(backend cpu ${spent.toFixed(1)} s)`;
  };
  if (process.argv.includes('--temp-buffers')) await client.query(`set temp_buffers = '${arg('--temp-buffers', 256)}MB'`);
  await client.query(`set search_path = pg_catalog, pg_temp; load 'auto_explain';
    set auto_explain.log_min_duration = ${arg('--min', 300)}; set auto_explain.log_analyze = on; set auto_explain.log_timing = ${process.argv.includes('--timing') ? 'on' : 'off'};
    set auto_explain.log_nested_statements = on; set auto_explain.log_level = notice`);
  await client.query('begin');
  // As the import: locked before validating (load.ts).
  await client.query(`lock table permgraph.nodes, permgraph.grants${process.argv.includes('--exclusive') ? ', permgraph.edges in access exclusive' : ' in share row exclusive'} mode`);
  const levels = await resolveLevels(bdb.db, 'p');
  let t = performance.now();
  cpuSince();
  await client.query('select permgraph._import_validate($1, $2::jsonb) as counts', ['p', JSON.stringify(levels)]);
  console.log(`validate ${((performance.now() - t) / 1000).toFixed(1)} s ${cpuSince()}`);
  const exclusive = process.argv.includes('--exclusive');
  t = performance.now();
  if (exclusive) {
    await client.query('select permgraph._import_drop_foreign_keys()');
    const { rows } = await client.query('select permgraph._import_drop_indexes($1) as n', ['p']);
    console.log(`dropped ${rows[0].n} secondary indexes`);
  }
  await client.query(`select set_config('permgraph.nodes_locked', 'on', true)`);
  console.log(`lock ${((performance.now() - t) / 1000).toFixed(1)} s`);
  t = performance.now();
  cpuSince();
  await client.query('select permgraph._import_load($1, false, false, $2::jsonb)', ['p', JSON.stringify(levels)]);
  console.log(`load ${((performance.now() - t) / 1000).toFixed(1)} s ${cpuSince()}`);
  if (exclusive) {
    t = performance.now();
    await client.query("select permgraph._rebuild_set_aside('import')");
    console.log(`rebuild indexes and foreign keys ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  t = performance.now();
  await client.query('commit');
  console.log(`commit ${((performance.now() - t) / 1000).toFixed(1)} s`);
  await client.end();
  void sql;
  await bdb.drop();
} finally {
  await server.stop();
}
