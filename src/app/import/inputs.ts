// The import's inputs: CSV files (header checked) or the operator's queries
// (columns probed), and the fingerprint a resumed run must match.
//
// A query is the operator's own SQL, but it may be assembled by a script
// from values nobody checked, so it runs with no power beyond reading:
// - one statement only: it is refused, with the position, if a `;` is
//   followed by more SQL, and every statement that contains it is sent
//   alone (not split by the driver) with a bound parameter, so over the
//   extended protocol, where PostgreSQL itself refuses a second statement;
// - in a READ ONLY transaction of its own: a function that writes fails;
// - with search_path = pg_catalog, pg_temp for its transaction, whatever
//   the connection's (a pool through a pooler, or an application's own,
//   keeps the login's): tables are named with their schema, and an
//   unqualified name is refused with an error that says so.
import { createHash } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import { isTransaction } from '@databases/pg';
import { PINNED_SEARCH_PATH, sql, type Queryable } from '../../db/pool.ts';
import { InvalidInputError, PermissionDeniedError, SqlState, SqlStateClass, sqlStateOf, translateDbError, withoutCodeFrame } from '../../errors.ts';
import { openCsv } from '../csv.ts';
import type { ImportSource, Prepared } from './types.ts';

/** SQLSTATEs an operator's query can fail with, beyond those of errors.ts. */
const QueryState = {
  undefinedTable: '42P01',
  undefinedFunction: '42883',
  readOnlySqlTransaction: '25006',
  /** class 22: division by zero, a bad cast… */
  dataException: '22',
} as const;

export const NODE_COLUMNS = { required: ['id', 'kind', 'owner_id'], optional: ['trash_at'] } as const;
export const GRANT_COLUMNS = { required: ['tail_id', 'head_id', 'level'], optional: ['source', 'expires_at'] } as const;

export function describeInput(input: ImportSource | undefined): { file: string } | { query: string } | null {
  if (!input) return null;
  if ('file' in input && 'query' in input) throw new InvalidInputError('give a file or a query for each input, not both');
  if ('file' in input) return { file: path.resolve(input.file) };
  if (typeof input.query !== 'string' || input.query.trim() === '') throw new InvalidInputError('an import query must not be empty');
  return { query: input.query };
}

/**
 * What a resume checks a file by: its size, modification time and a hash of
 * its first and last FINGERPRINT_SAMPLE bytes. Size and time alone let a
 * file rewritten with other rows of the same width (fixed-width ids) and
 * its time restored (cp -p, rsync -t, an archive) be resumed as the same,
 * loading the old file's first batches with the new file's rest. Reading
 * the whole file to hash it would cost another pass over a large input.
 */
export async function fileFingerprints(inputs: (ImportSource | undefined)[]): Promise<Record<string, { size: number; mtimeMs: number; sample: string }>> {
  const out: Record<string, { size: number; mtimeMs: number; sample: string }> = {};
  for (const input of inputs) {
    if (input && 'file' in input) {
      const s = await stat(input.file);
      out[path.resolve(input.file)] = { size: s.size, mtimeMs: Math.trunc(s.mtimeMs), sample: await sampleHash(input.file, s.size) };
    }
  }
  return out;
}

const FINGERPRINT_SAMPLE = 1 << 16;

async function sampleHash(file: string, size: number): Promise<string> {
  const handle = await open(file, 'r');
  try {
    const hash = createHash('sha256');
    const read = async (position: number, length: number) => {
      const buffer = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buffer, 0, length, position);
      hash.update(buffer.subarray(0, bytesRead));
    };
    await read(0, Math.min(size, FINGERPRINT_SAMPLE));
    if (size > FINGERPRINT_SAMPLE) await read(Math.max(FINGERPRINT_SAMPLE, size - FINGERPRINT_SAMPLE), Math.min(FINGERPRINT_SAMPLE, size - FINGERPRINT_SAMPLE));
    return hash.digest('hex').slice(0, 32);
  } finally {
    await handle.close();
  }
}

/** JSON with object keys sorted, so a value compares equal after a round trip through jsonb. */
export function canonicalJson(value: unknown): string {
  const sortKeys = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sortKeys);
    if (v && typeof v === 'object') {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
    }
    return v;
  };
  return JSON.stringify(sortKeys(value));
}

export async function prepare(
  db: Queryable,
  input: ImportSource,
  shape: { required: readonly string[]; optional: readonly string[] },
  table: 'nodes' | 'grants',
): Promise<Prepared> {
  if ('file' in input) {
    const file = await openCsv(input.file, shape);
    return { kind: 'csv', file, label: path.basename(input.file), optional: shape.optional.filter((c) => file.columns.includes(c)) };
  }
  const query = singleStatement(input.query, table);
  const label = `the ${table} query`;
  const expected = `${shape.required.join(', ')}${shape.optional.map((c) => ` [, ${c}]`).join('')}`;
  // Planning the query with LIMIT 0 checks its SQL and its columns without running it.
  const probe = (columns: readonly string[]) =>
    readOnly(db, label, async (tx) => {
      const list = sql.join(columns.map((c) => sql`q.${sql.ident(c)}`), sql`, `);
      await userQuery(tx, sql`select ${list} from (${sql.__dangerous__rawValue(query)}) as q limit ${0}`);
    }, { [SqlState.undefinedColumn]: (reason) => `${label} must return columns ${expected}: ${reason}` });
  await probe(shape.required);
  // Which optional columns the query returns, one probe each.
  const optional: string[] = [];
  for (const column of shape.optional) {
    try {
      await probe([column]);
      optional.push(column);
    } catch (error) {
      if (!(error instanceof InvalidInputError) || error.sqlState !== SqlState.undefinedColumn) throw error;
    }
  }
  return { kind: 'query', query, optional, label };
}

/**
 * Runs statements that contain an operator's query in a READ ONLY
 * transaction of their own, with the pinned search_path for that
 * transaction, mapping its errors to InvalidInputErrors that name the query
 * (see the file comment). A search_path the query may have set for the
 * session with set_config() is put back as the session had it: pinned on
 * permgraph's direct connections, the login's on any other, where pinning
 * it would change the path of a connection the application's own queries
 * use too.
 */
export async function readOnly<T>(
  db: Queryable,
  label: string,
  run: (tx: Queryable) => Promise<T>,
  reasons: Record<string, (reason: string) => string> = {},
): Promise<T> {
  if (isTransaction(db)) {
    throw new InvalidInputError(
      `${label} runs in a READ ONLY transaction of its own: import from a connection or a pool, not inside a transaction`,
    );
  }
  let sessionPath: string | undefined;
  try {
    return await db.tx(async (tx) => {
      [{ path: sessionPath }] = await tx.query(sql`select pg_catalog.current_setting('search_path') as path`);
      // (row_security off, as pg_dump reads: a table whose row-level
      // security would hide rows from this login raises an error, rather
      // than the run loading short)
      await tx.query(sql`
        select pg_catalog.set_config('search_path', ${PINNED_SEARCH_PATH.join(', ')}, true),
               pg_catalog.set_config('row_security', 'off', true)`);
      return run(tx);
    }, { readOnly: true });
  } catch (error) {
    throw queryError(error, label, reasons);
  } finally {
    if (sessionPath !== undefined) {
      await db
        .query(sql`select pg_catalog.set_config('search_path', ${sessionPath}, false) where pg_catalog.current_setting('search_path') <> ${sessionPath}`)
        .catch(() => {});
    }
  }
}

/** Sends one statement as it is (not split at semicolons by the driver); it must carry a bound parameter. */
export async function userQuery(db: Queryable, query: ReturnType<typeof sql>): Promise<unknown[]> {
  const [rows] = await db.query([query]);
  return rows ?? [];
}

function queryError(error: unknown, label: string, own: Record<string, (reason: string) => string>): unknown {
  if (sqlStateOf(error) === undefined) return error;
  if (sqlStateOf(error) === SqlState.insufficientPrivilege) {
    // (class 42 below would call it invalid SQL, and the command line's hint
    // would say the login is not the schema's owner: it is, and lacks a right
    // on the application's table)
    const reason = withoutCodeFrame(error instanceof Error ? error.message : String(error));
    return new PermissionDeniedError(
      `${label} was refused: ${reason} (import queries run as the importing login, the schema's owner, with row-level security off so that no ` +
        "policy hides rows from them: it needs SELECT on the tables they read, and, on a table with row-level security, to own the table, " +
        'to have BYPASSRLS, or to read it through a view that the table\'s owner owns)',
      { cause: error },
    );
  }
  const hint = 'import queries run with search_path = pg_catalog, pg_temp';
  const reasons: Record<string, (reason: string) => string> = {
    ...own,
    [QueryState.undefinedTable]: (reason) => {
      const name = /relation "([^"]+)" does not exist/.exec(reason)?.[1];
      const example = name && !name.includes('.') ? `, e.g. public.${name}` : '';
      return `${label} failed: ${reason} (${hint}: name tables with their schema${example})`;
    },
    [QueryState.undefinedFunction]: (reason) => `${label} failed: ${reason} (${hint}: name your own functions with their schema)`,
    [QueryState.readOnlySqlTransaction]: (reason) => `${label} tried to write: ${reason} (import queries run in a READ ONLY transaction)`,
    [SqlStateClass.syntaxErrorOrAccessRuleViolation]: (reason) => `${label} is not valid SQL: ${reason}`,
    [QueryState.dataException]: (reason) => `${label} failed: ${reason}`,
  };
  // The driver appends a code frame of the statement it wrapped the query
  // in; the message is about the operator's query.
  const withoutFrame = Object.fromEntries(
    Object.entries(reasons).map(([state, reason]) => [state, (message: string) => reason(withoutCodeFrame(message))]),
  );
  return translateDbError(error, withoutFrame);
}

/**
 * The query without a trailing semicolon; refuses a second statement with
 * the position of the semicolon that starts it. Skips string constants
 * ('…', E'…' with backslash escapes), quoted identifiers, dollar quotes and
 * comments, as PostgreSQL's lexer does.
 */
export function singleStatement(query: string, table: 'nodes' | 'grants'): string {
  let end = query.length;
  const n = query.length;
  let i = 0;
  while (i < n) {
    const c = query[i]!;
    if (c === "'") {
      const escapes = i > 0 && /[eE]/.test(query[i - 1]!) && (i < 2 || !/[\w$]/.test(query[i - 2]!));
      i += 1;
      while (i < n) {
        if (escapes && query[i] === '\\') i += 2;
        else if (query[i] === "'" && query[i + 1] === "'") i += 2;
        else if (query[i] === "'") break;
        else i += 1;
      }
      i += 1;
    } else if (c === '"') {
      i += 1;
      while (i < n && !(query[i] === '"' && query[i + 1] !== '"')) i += query[i] === '"' ? 2 : 1; // "" inside an identifier
      i += 1;
    } else if (c === '$' && (i === 0 || !/[\w$]/.test(query[i - 1]!))) {
      const tag = /^\$([A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$/.exec(query.slice(i))?.[0];
      if (tag) {
        const close = query.indexOf(tag, i + tag.length);
        i = close < 0 ? n : close + tag.length;
      } else {
        i += 1;
      }
    } else if (c === '-' && query[i + 1] === '-') {
      const close = query.indexOf('\n', i);
      i = close < 0 ? n : close + 1;
    } else if (c === '/' && query[i + 1] === '*') {
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (query[i] === '/' && query[i + 1] === '*') [depth, i] = [depth + 1, i + 2];
        else if (query[i] === '*' && query[i + 1] === '/') [depth, i] = [depth - 1, i + 2];
        else i += 1;
      }
    } else if (c === ';') {
      if (onlyBlanks(query.slice(i + 1))) {
        end = i;
        break;
      }
      throw new InvalidInputError(
        `the ${table} query must be a single statement: a second one starts after the ";" at character ${i + 1}`,
      );
    } else {
      i += 1;
    }
  }
  // A line break after it, so that a trailing -- comment cannot swallow what follows the query.
  return `${query.slice(0, end)}\n`;
}

/** Only whitespace and comments. */
function onlyBlanks(text: string): boolean {
  return text.replace(/--[^\n]*(\n|$)|\/\*[\s\S]*?\*\//g, '').trim() === '';
}
