// A function file's checksum as a database an older release migrated holds
// it: the file's first version in sql/function-history.json (its first 16
// hex digits, which is what migrate compares), so that migrate takes the
// database as behind and applies the file again. A checksum the history does
// not hold would be a newer package's, which migrate refuses.
import { readFunctionHistory } from '../../src/migrations/function-history.ts';
import { loadFunctionFiles, SQL_DIR } from '../../src/migrations/migrate.ts';

export async function earlierFunctionChecksum(name: string): Promise<string> {
  const [history, files] = await Promise.all([readFunctionHistory(SQL_DIR), loadFunctionFiles()]);
  const first = history[name]?.[0];
  const current = files.find((f) => f.name === name)?.checksum;
  if (first === undefined || current === undefined || current.startsWith(first)) {
    throw new Error(`sql/function-history.json holds no earlier version of ${name}`);
  }
  return first.padEnd(64, '0');
}
