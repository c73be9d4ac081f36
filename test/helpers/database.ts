import { randomBytes } from 'node:crypto';
import { inject } from 'vitest';
import { openPool, sql, type ConnectionPool } from '../../src/db/pool.ts';
import { cleanUpAfter } from './cleanup.ts';
import { withDatabase } from './url.ts';

export interface TestDatabase {
  url: string;
  db: ConnectionPool;
  name: string;
}

/**
 * A fresh database cloned from the migrated template, dropped (WITH FORCE)
 * after the file's tests (after the test, when a test makes it). Worker tests commit for real, so no rollback tricks.
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  return createDatabase(inject('pgTemplate'));
}

/** A fresh database with no permgraph schema at all (for migration tests). */
export async function createEmptyDatabase(): Promise<TestDatabase> {
  return createDatabase('template0');
}

async function createDatabase(template: string): Promise<TestDatabase> {
  const serverUrl = inject('pgServerUrl');
  const name = `permgraph_test_${inject('pgRunTag')}_${randomBytes(6).toString('hex')}`;
  const admin = openPool(serverUrl, { poolSize: 1 });
  await admin.query(sql`create database ${sql.ident(name)} template ${sql.ident(template)}`);
  const url = withDatabase(serverUrl, name);
  const db = openPool(url, { poolSize: 8 });
  cleanUpAfter(async () => {
    await db.dispose();
    await admin.query(sql`drop database if exists ${sql.ident(name)} with (force)`);
    await admin.dispose();
  });
  return { url, db, name };
}
