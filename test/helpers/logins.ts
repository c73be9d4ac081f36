// Real login roles for security tests: each one a LOGIN role of its own
// (roles are server-wide, so names carry the run's tag and a random suffix), granted one of
// permgraph's roles (or none), with its own connection pool. Everything is
// dropped after the test file (after the test, when a test makes it).
import { randomBytes } from 'node:crypto';
import { inject } from 'vitest';
import { openPool, sql, type ConnectionPool } from '../../src/db/pool.ts';
import { cleanUpAfter } from './cleanup.ts';

export interface Login {
  name: string;
  url: string;
  db: ConnectionPool;
}

const PASSWORD = 'permgraph-test-login';

/** Creates a login role granted `member` (e.g. 'permgraph_writer'), or nothing. */
export async function createLogin(admin: ConnectionPool, databaseUrl: string, label: string, member?: string): Promise<Login> {
  const name = `login_${inject('pgRunTag')}_${label}_${randomBytes(4).toString('hex')}`;
  await admin.query(sql`create role ${sql.ident(name)} login nosuperuser nocreaterole nocreatedb nobypassrls`);
  // CREATE/ALTER ROLE take no bind parameters: the server quotes the password (format %L).
  const [{ statement }] = await admin.query(sql`select format('alter role %I password %L', ${name}::text, ${PASSWORD}::text) as statement`);
  await admin.query(sql.__dangerous__rawValue(statement));
  if (member) await admin.query(sql`grant ${sql.ident(member)} to ${sql.ident(name)}`);
  const url = new URL(databaseUrl);
  url.username = name;
  url.password = PASSWORD;
  const db = openPool(url.toString(), { poolSize: 2, applicationName: `permgraph-test-${label}` });
  cleanUpAfter(async () => {
    await db.dispose();
    await admin.query(sql`drop owned by ${sql.ident(name)} cascade`);
    await admin.query(sql`drop role ${sql.ident(name)}`);
  });
  return { name, url: url.toString(), db };
}
