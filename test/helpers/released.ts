// The schema as the last release before sql/functions/ installed it, for
// upgrade tests and for showing that a security test detects an attack that
// worked on that release; and the schema as any earlier commit of this
// repository installed it, read from its history with git.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql, type Queryable } from '../../src/db/pool.ts';
import { loadFunctionFiles, loadMigrations } from '../../src/migrations/migrate.ts';

/** SHA-256 of sql/NNN_*.sql at commit d676c7c, the last release before sql/functions/. */
export const RELEASED_AT_D676C7C: Record<string, string> = {
  '001_schema.sql': 'f0e7425a38240665e9f8888e942d7d120ae0e102d9cb6f666ba009b89a36968e',
  '002_integrity.sql': 'b2c06dc04757b6899ad96784f3c70ef62337947060e09ae41c143f84897175ff',
  '003_capture.sql': '682ea4fe2074d4b79c37e708c981b04ff988a1f8db70535b7eae72d341db2699',
  '004_compute.sql': '7ba50678954227cac18a2f2538e12287de36a02ff895ea944420effa0094cd20',
  '005_apply.sql': 'f2d41377e89fa226503bfb34c3a842fadd901a60e16f40d181328c54f541bbb4',
  '006_verify.sql': '0e6a8ee9675cc3340e63346f671b16c91e168d8f212082b3b216fa044213bdee',
  '007_freshness.sql': 'a262bd58e82014a8ad46157b1e844c450bda1858170aba36c99fc2d20bda6c5c',
  '008_roles_rls.sql': 'dc97e2aa7ad7de422992f7fcef58c7a6b522b94fe34a1056772f1a2d088786d2',
  '009_listing_explain.sql': '02f6a09e6486ede4c19a6eb1ac1f069c274b4debee1f2251c09d388b0c187bd0',
  '010_import_audit.sql': '42bad1f73c3d45767300a5e8db45c2400c935001e6a696f366a898d58e3a1c49',
  '011_edge_indexes.sql': 'bb41068f82f4f3286397aa14b807e6169c1eaa384b8ae04d69777cb62e82bbcc',
  '012_batch_plans.sql': 'e05f2ea10b0c3b59698938edbedaf0cf3c9ebcc1923caeae942fef34262c2a5e',
};

/** What the release's runner did: each file in order, recorded in permgraph.migrations, in one transaction. */
export async function migrateAsReleased(db: Queryable): Promise<void> {
  const released = (await loadMigrations()).filter((m) => m.name in RELEASED_AT_D676C7C);
  await db.tx(async (tx) => {
    await tx.query(sql`
      create schema if not exists permgraph;
      create table if not exists permgraph.migrations (
        version integer primary key, name text not null, checksum text not null,
        applied_at timestamptz not null default now());`);
    for (const migration of released) {
      await tx.query(sql.__dangerous__rawValue(migration.text));
      await tx.query(sql`insert into permgraph.migrations (version, name, checksum)
                         values (${migration.version}, ${migration.name}, ${migration.checksum})`);
    }
  });
}


/** The last commit before migration 049 (permgraph.cluster_identity): what a database migrated then holds. */
export const BEFORE_049 = '2a25ad8f999489063a9778feb896099c93f7712e';

/** The last commit before migration 055 (backlogs as long jobs; long_job_users.wanted). */
export const BEFORE_055 = '6aaa8196ebd470587fb7ab0cfa60ecf77814de42';

/** The last commit before migration 056 (deferred changes let go by round; long_job_users.wanted_round). */
export const BEFORE_056 = 'ed85373f63a32aaeba54c7591eca9314aafb03ef';

/** The last commit before migration 058 (a backlog left in the change queue; long_job_backlog_tails). */
export const BEFORE_058 = '763b2395f249de0339a415ae0bde9b617a9ae4d8';

const REPOSITORY = fileURLToPath(new URL('../..', import.meta.url));

/** Why this repository's history cannot give the schema at `commit` (a copy without it, git missing), or null when it can. */
export function historyMissing(commit: string): string | null {
  const found = spawnSync('git', ['cat-file', '-e', `${commit}^{commit}`], { cwd: REPOSITORY, encoding: 'utf8' });
  return found.status === 0 ? null : `git cannot read commit ${commit.slice(0, 12)} of this repository (${(found.stderr || found.error?.message || '').trim()})`;
}

/**
 * What `permgraph migrate` did at `commit` to a database without the
 * schema: that commit's migrations, then its function files, each applied
 * in order and recorded, then the roles' rights, in one transaction.
 */
export async function migrateAsAt(db: Queryable, commit: string): Promise<void> {
  const scratch = mkdtempSync(path.join(tmpdir(), 'permgraph-sql-'));
  try {
    const archive = spawnSync('git', ['archive', '--output', path.join(scratch, 'sql.tar'), commit, 'sql/migrations', 'sql/functions'], { cwd: REPOSITORY, encoding: 'utf8' });
    if (archive.status !== 0) throw new Error(`git archive ${commit}: ${archive.stderr}`);
    const unpacked = spawnSync('tar', ['xf', path.join(scratch, 'sql.tar'), '-C', scratch], { encoding: 'utf8' });
    if (unpacked.status !== 0) throw new Error(`tar: ${unpacked.stderr}`);
    const migrations = await loadMigrations(path.join(scratch, 'sql', 'migrations'));
    const functionFiles = await loadFunctionFiles(path.join(scratch, 'sql', 'functions'));
    await db.tx(async (tx) => {
      await tx.query(sql`set local search_path = pg_catalog, pg_temp`);
      await tx.query(sql`
        create schema if not exists permgraph;
        create table if not exists permgraph.migrations (
          version integer primary key, name text not null, checksum text not null,
          applied_at timestamptz not null default now());
        create table if not exists permgraph.function_files (
          name text primary key, checksum text not null, applied_at timestamptz not null default now());`);
      for (const migration of migrations) {
        await tx.query(sql.__dangerous__rawValue(migration.text));
        await tx.query(sql`insert into permgraph.migrations (version, name, checksum)
                           values (${migration.version}, ${migration.name}, ${migration.checksum})`);
      }
      for (const file of functionFiles) {
        await tx.query(sql.__dangerous__rawValue(file.text));
        await tx.query(sql`insert into permgraph.function_files (name, checksum) values (${file.name}, ${file.checksum})`);
      }
      await tx.query(sql`select permgraph._apply_privileges()`);
    });
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
