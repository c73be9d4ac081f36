// Not part of the benchmark: compares versions of sql/functions/150_import.sql
// on the same staged run, interleaved, as the benchmark's import phase times
// them (validate, load).
//   npx tsx bench/measure/import-ab.ts --size 1000000 --variant A=/tmp/a.sql --variant B=sql/functions/150_import.sql
//     [--rounds 3] [--modes default,exclusive]
// One database gets the benchmark's history (import.ts) and one staged run of
// `size` nodes + `size` grants; each trial runs in a copy of it (CREATE
// DATABASE … TEMPLATE): the variant's file is applied, permgraph.refresh() is
// replaced by a stub (the refresh is not what is compared), and the run is
// resumed through importGraph, which validates and loads it as `permgraph
// import` does. Prints, per trial, validation and load (wall clock, as the
// benchmark times them) and the CPU time of every server process meanwhile.
import { readdirSync, readFileSync } from 'node:fs';
import { execSync } from 'node:child_process';
import path from 'node:path';
import pg from 'pg';
import { importGraph } from '../../src/app/import/index.ts';
import { openPool, sql } from '../../src/db/pool.ts';
import { freshDatabase, startServer, TMP_DIR, withDatabase } from '../lib/server.ts';
import { seedHistory, writePair } from './import.ts';

const args = process.argv.slice(2);
const values = (name: string) => args.flatMap((a, i) => (a === name ? [args[i + 1]!] : []));
const size = Number(values('--size')[0] ?? 200000);
const rounds = Number(values('--rounds')[0] ?? 3);
const modes = (values('--modes')[0] ?? 'default,exclusive').split(',') as ('default' | 'exclusive')[];
const variants = values('--variant').map((v) => {
  const [name, file] = v.split('=') as [string, string];
  return { name, text: readFileSync(file, 'utf8') };
});
if (variants.length === 0) throw new Error('give at least one --variant NAME=FILE');

/** utime + stime of every process of the server (the postmaster's children, live or reaped), in seconds. */
function serverCpu(): number {
  const postmaster = Number(readFileSync(path.join(TMP_DIR, 'pgdata', 'postmaster.pid'), 'utf8').split('\n')[0]);
  const stat = (pid: number | string) => readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  const own = stat(postmaster);
  let ticks = Number(own[11]) + Number(own[12]) + Number(own[13]) + Number(own[14]);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const f = stat(entry);
      if (Number(f[1]) === postmaster) ticks += Number(f[11]) + Number(f[12]);
    } catch {
      // gone meanwhile
    }
  }
  return ticks / 100;
}

const server = await startServer();
try {
  const base = await freshDatabase(server.url, 'import_ab_base');
  await seedHistory(base.db, base.url);
  const files = await writePair(`measured-${size}`, 'n', size);
  const staged = new Error('staged');
  let t = performance.now();
  await importGraph(base.db, {
    ...files,
    name: 'p',
    connectionUrl: base.url,
    onProgress: (p) => {
      if (p.phase === 'validate') throw staged;
    },
  }).catch((e) => {
    if (e !== staged) throw e;
  });
  console.log(`staged ${size} + ${size} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  await base.db.dispose();
  const admin = openPool(server.url, { poolSize: 1 });
  for (let round = 1; round <= rounds; round++) {
    for (const variant of variants) {
      for (const mode of modes) {
        const name = `permgraph_bench_import_ab_trial`;
        await admin.query(sql`drop database if exists ${sql.ident(name)} with (force)`);
        await admin.query(sql`create database ${sql.ident(name)} template ${sql.ident(base.name)} strategy file_copy`);
        const url = withDatabase(server.url, name);
        const setup = new pg.Client({ connectionString: url });
        await setup.connect();
        // The variant's file as it is, and a refresh that does nothing (scratch databases only).
        await setup.query(variant.text);
        await setup.query(`create or replace function permgraph.refresh() returns jsonb language sql set search_path = pg_catalog, pg_temp
          as $$ select jsonb_build_object('mode', 'stub', 'ms', 0) $$`);
        await setup.query('checkpoint');
        await setup.end();
        const db = openPool(url, { poolSize: 2 });
        const marks: Record<string, number> = {};
        const cpu: Record<string, number> = {};
        const load = execSync('cat /proc/loadavg').toString().split(' ')[0];
        t = performance.now();
        await importGraph(db, {
          ...files,
          name: 'p',
          resume: true,
          connectionUrl: url,
          exclusive: mode === 'exclusive',
          onProgress: (p) => {
            if ((p.phase === 'validate' || p.phase === 'load') && marks[p.phase] === undefined) {
              marks[p.phase] = performance.now();
              cpu[p.phase] = serverCpu();
            }
          },
        });
        const end = performance.now();
        const endCpu = serverCpu();
        await db.dispose();
        const v = (marks.load! - marks.validate!) / 1000;
        const l = (end - marks.load!) / 1000;
        console.log(
          `round ${round} ${variant.name} ${mode}: validate ${v.toFixed(1)} s (cpu ${(cpu.load! - cpu.validate!).toFixed(1)}), ` +
            `load ${l.toFixed(1)} s (cpu ${(endCpu - cpu.load!).toFixed(1)}), sum ${(v + l).toFixed(1)} s; load average ${load}`,
        );
        await admin.query(sql`drop database if exists ${sql.ident(name)} with (force)`);
      }
    }
  }
  await admin.dispose();
  const again = openPool(server.url, { poolSize: 1 });
  await again.query(sql`drop database if exists ${sql.ident(base.name)} with (force)`);
  await again.dispose();
} finally {
  await server.stop();
}
