// Every version each file of sql/functions/ has had (the first 16 hex digits
// of its sha-256, oldest first, the current one last), kept in
// sql/function-history.json. With it migrate tells a database whose
// functions an older package applied (it applies the current ones) from one
// whose functions a newer package applied (it refuses, as for a migration it
// does not know): a release that changes only function files adds no
// migration, and an older package's migrate put its old functions back over
// the newer ones, and the newer package's put them back again.
// `npm run schema:dump` records the current versions; test/db/schema-dump.test.ts
// fails until it has.
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { SqlFile } from './migrate.ts';

/** The file's name, next to the functions it lists. */
export const FUNCTION_HISTORY_FILE = 'function-history.json';

/** How much of a checksum the history keeps. */
const KEY_LENGTH = 16;

export type FunctionHistory = Record<string, string[]>;

const key = (checksum: string) => checksum.slice(0, KEY_LENGTH);

export async function readFunctionHistory(sqlDir: string): Promise<FunctionHistory> {
  return JSON.parse(await readFile(path.join(sqlDir, FUNCTION_HISTORY_FILE), 'utf8')) as FunctionHistory;
}

/** The history with each file's current version last (appended when new). */
export function withCurrentVersions(history: FunctionHistory, files: SqlFile[]): FunctionHistory {
  const next: FunctionHistory = { ...history };
  for (const file of files) {
    const versions = next[file.name] ?? [];
    if (versions.at(-1) !== key(file.checksum)) next[file.name] = [...versions.filter((v) => v !== key(file.checksum)), key(file.checksum)];
  }
  return Object.fromEntries(Object.entries(next).sort(([a], [b]) => (a < b ? -1 : 1)));
}

export async function writeFunctionHistory(sqlDir: string, history: FunctionHistory): Promise<void> {
  await writeFile(path.join(sqlDir, FUNCTION_HISTORY_FILE), `${JSON.stringify(history, null, 1)}\n`);
}

/** The files whose current version the history does not end with (schema:dump not run since they changed). */
export function unrecordedFiles(history: FunctionHistory, files: SqlFile[]): string[] {
  return files.filter((f) => history[f.name]?.at(-1) !== key(f.checksum)).map((f) => f.name);
}

/**
 * The function files the database holds in a version this package never
 * had: applied by a newer package (or edited by hand). `applied`: name ->
 * checksum, from permgraph.function_files.
 */
export function unknownFunctionVersions(history: FunctionHistory, files: SqlFile[], applied: Map<string, string>): string[] {
  const current = new Map(files.map((f) => [f.name, f.checksum]));
  return [...applied]
    .filter(([name, checksum]) => current.get(name) !== checksum && !(history[name] ?? []).includes(key(checksum)))
    .map(([name]) => name)
    .sort();
}
