// The committed schema dump (sql/schema.sql) must be what a fresh install
// creates: a change to migrations or function files that is not reflected in
// the dump fails here, so every schema change shows in review.
import { describe, expect, it } from 'vitest';
import { readFunctionHistory, unrecordedFiles } from '../../src/migrations/function-history.ts';
import { loadFunctionFiles, SQL_DIR } from '../../src/migrations/migrate.ts';
import { dumpSchema, dumpServerMajor, readCommittedDump } from '../../src/migrations/schema-dump.ts';
import { createTestDatabase } from '../helpers/database.ts';

describe('schema dump', async () => {
  const { db } = await createTestDatabase();
  const committed = await readCommittedDump();
  const live = await dumpSchema(db);
  // The catalog prints definitions slightly differently across major versions;
  // the dump is compared on the version it was made with (the embedded server).
  const sameMajor = dumpServerMajor(committed) === dumpServerMajor(live);

  it.runIf(sameMajor)('sql/schema.sql matches a fresh install (else run `npm run schema:dump`)', () => {
    expect(live).toEqual(committed);
  });

  it('sql/function-history.json ends with the current version of every function file (else run `npm run schema:dump`)', async () => {
    const [history, files] = await Promise.all([readFunctionHistory(SQL_DIR), loadFunctionFiles()]);
    expect(unrecordedFiles(history, files)).toEqual([]);
  });

  it('lists every table of the schema', () => {
    for (const table of ['nodes', 'grants', 'permissions', 'trashed_groups', 'changes', 'edges', 'audit_log']) {
      expect(committed).toMatch(new RegExp(`^table permgraph\\.${table}$`, 'm'));
    }
  });
});
