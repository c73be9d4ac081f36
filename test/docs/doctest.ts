// Doctests for Markdown: the fenced code blocks of README.md and docs/*.md,
// run the way a reader would run them, against the test server.
//
// A block's info string is its language, then tags: ```sql, ```sh no-test,
// ```json file=catalog.json. Every block is either run or tagged `no-test`
// (output samples, diagrams, commands that install or start things);
// anything else fails the document's test. How each language runs:
//
// - sql: one psql-like session per document (autocommit, psql's default
//   search_path, text output), on a fresh migrated database; statements run
//   one at a time, in document order, across blocks. Comments directly after
//   a statement state its result, as psql would print it:
//     select permgraph.check('alice', 'eng', 2);   -- true     one value (a note in parentheses may follow)
//     --  alice | eng | 2 | t                               rows: "--" then two spaces
//     -- (0 rows)                                           a row count
//     -- ERROR:  permgraph: ownership cycle…                the statement fails, message starting so
//   Any other comment is prose. A statement that fails without an ERROR line
//   fails the test.
// - sh: each line is a `permgraph …` (or `npx permgraph …`) command, run by
//   the real CLI against the document's database, in a scratch folder that
//   holds the document's `file=` blocks. `# => text` after a command: its
//   output (trimmed) is exactly text; `# exit N`: it exits N (else 0).
// - ts: a complete program, run by tsx with `permgraph` resolving to this
//   repository's src/index.ts and DATABASE_URL set to a fresh database of its
//   own; `console.log(…); // text` lines state the program's output lines, in
//   order. All ts blocks of a document are also type-checked together.
// - json, csv, … with `file=NAME`: written into the scratch folder for sh blocks.
//
// Roles that a document creates (`create role NAME`) are renamed NAME_<random>
// in every block of that document, so documents can run in parallel on one
// server, and are dropped afterwards.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { BIN } from '../helpers/cli.ts';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));

export interface Block {
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  tags: string[];
  attrs: Record<string, string>;
  code: string;
}

export type BlockKind = 'sql' | 'sh' | 'ts' | 'file' | 'no-test' | 'untagged';

const RUNNABLE: Record<string, BlockKind> = { sql: 'sql', sh: 'sh', bash: 'sh', shell: 'sh', ts: 'ts', typescript: 'ts' };

/** The fenced code blocks of a Markdown text (``` and ~~~ fences; indented code is not a block). */
export function parseBlocks(markdown: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})(.*)$/.exec(lines[i]!);
    if (!open) continue;
    const [, indent, fence, info] = open;
    const words = info!.trim().split(/\s+/).filter(Boolean);
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const close = new RegExp(`^\\s*${fence![0] === '`' ? '`' : '~'}{${fence!.length},}\\s*$`).exec(lines[j]!);
      if (close) break;
      body.push(lines[j]!.startsWith(indent!) ? lines[j]!.slice(indent!.length) : lines[j]!.trimStart());
    }
    const attrs: Record<string, string> = {};
    const tags: string[] = [];
    for (const word of words.slice(1)) {
      const eq = word.indexOf('=');
      if (eq > 0) attrs[word.slice(0, eq)] = word.slice(eq + 1);
      else tags.push(word);
    }
    blocks.push({ line: i + 1, lang: (words[0] ?? '').toLowerCase(), tags, attrs, code: body.join('\n') });
    i = j;
  }
  return blocks;
}

/** What the doctest does with a block. */
export function kindOf(block: Block): BlockKind {
  if (block.tags.includes('no-test')) return 'no-test';
  if (block.attrs.file) return 'file';
  return RUNNABLE[block.lang] ?? 'untagged';
}

// ---------------------------------------------------------------------------
// SQL: statements and their stated results

export type Expectation =
  | { kind: 'value'; value: string }
  | { kind: 'rows'; rows: string[][] }
  | { kind: 'count'; count: number }
  | { kind: 'error'; message: string };

export interface Statement {
  text: string;
  /** Line within the block where the statement starts (1-based). */
  line: number;
  expect: Expectation[];
}

/** Splits SQL into statements at top-level semicolons (quotes, dollar quotes and comments respected), with their result comments. */
export function splitStatements(code: string): Statement[] {
  const statements: Statement[] = [];
  let start = 0;
  let i = 0;
  const n = code.length;
  const lineAt = (offset: number) => code.slice(0, offset).split('\n').length;
  while (i < n) {
    const c = code[i]!;
    if (c === "'" || c === '"') {
      i = code.indexOf(c, i + 1);
      while (i !== -1 && code[i + 1] === c) i = code.indexOf(c, i + 2);
      if (i === -1) throw new Error(`unterminated ${c} quote in:\n${code.slice(start)}`);
      i++;
    } else if (c === '$' && /^\$[A-Za-z_]*\$/.test(code.slice(i)) && !/[A-Za-z0-9_]/.test(code[i - 1] ?? ' ')) {
      const tag = /^\$[A-Za-z_]*\$/.exec(code.slice(i))![0];
      const end = code.indexOf(tag, i + tag.length);
      if (end === -1) throw new Error(`unterminated ${tag} quote`);
      i = end + tag.length;
    } else if (c === '-' && code[i + 1] === '-') {
      const eol = code.indexOf('\n', i);
      i = eol === -1 ? n : eol;
    } else if (c === '/' && code[i + 1] === '*') {
      const end = code.indexOf('*/', i + 2);
      i = end === -1 ? n : end + 2;
    } else if (c === ';') {
      const text = code.slice(start, i + 1).trim();
      let firstCode = start;
      for (;;) {
        while (firstCode < i && /\s/.test(code[firstCode]!)) firstCode++;
        if (!code.startsWith('--', firstCode)) break;
        const end = code.indexOf('\n', firstCode);
        firstCode = end === -1 ? i : end;
      }
      // The rest of the line, then the comment lines directly below.
      const eol = code.indexOf('\n', i);
      const trailing = code.slice(i + 1, eol === -1 ? n : eol).trim();
      const annotations: string[] = [];
      let next = eol === -1 ? n : eol + 1;
      while (next < n) {
        const lineEnd = code.indexOf('\n', next) === -1 ? n : code.indexOf('\n', next);
        const line = code.slice(next, lineEnd);
        if (!line.trim().startsWith('--')) break;
        annotations.push(line.trim());
        next = lineEnd + 1;
      }
      statements.push({ text: stripComments(text), line: lineAt(firstCode), expect: expectations(trailing, annotations) });
      start = i + 1;
      i++;
    } else {
      i++;
    }
  }
  const rest = stripComments(code.slice(start)).trim();
  if (rest !== '') throw new Error(`SQL without a closing semicolon: ${rest.slice(0, 80)}`);
  return statements;
}

/** Drops whole-line comments before a statement (prose above it), keeping the statement's own text. */
function stripComments(text: string): string {
  const lines = text.split('\n');
  while (lines.length && (lines[0]!.trim() === '' || lines[0]!.trim().startsWith('--'))) lines.shift();
  return lines.join('\n');
}

function expectations(trailing: string, annotations: string[]): Expectation[] {
  const result: Expectation[] = [];
  const value = /^--\s*(true|false|t|f|-?\d+(?:\.\d+)?|null)(?:\s+\(.*\))?$/.exec(trailing);
  if (value) result.push({ kind: 'value', value: normalize(value[1]!) });
  const rows: string[][] = [];
  for (const line of annotations) {
    const error = /^--\s*ERROR:\s+(.*)$/.exec(line);
    const count = /^--\s*\((\d+) rows?\)$/.exec(line);
    const row = /^--\s{2,}(\S.*)$/.exec(line);
    if (error) result.push({ kind: 'error', message: error[1]!.replace(/…$/, '').trim() });
    else if (count) result.push({ kind: 'count', count: Number(count[1]) });
    else if (row) rows.push(row[1]!.split('|').map((cell) => cell.trim()));
  }
  if (rows.length) result.push({ kind: 'rows', rows });
  return result;
}

function normalize(value: string): string {
  return value === 'true' ? 't' : value === 'false' ? 'f' : value === 'null' ? '' : value;
}

/** A psql-like session: autocommit, the server's default search_path, values as text. */
export class SqlSession {
  private readonly client: pg.Client;

  constructor(url: string) {
    this.client = new pg.Client({ connectionString: url, types: { getTypeParser: () => (value: string) => value } });
  }

  async open(): Promise<void> {
    await this.client.connect();
  }

  async close(): Promise<void> {
    await this.client.query('rollback').catch(() => {});
    await this.client.end();
  }

  /**
   * Runs the statements; returns how many stated results were checked. Throws
   * on the first mismatch, after rolling back and resetting the role, so that
   * the next block starts from a clean session.
   */
  async run(statements: Statement[], where: (statement: Statement) => string): Promise<number> {
    try {
      return await this.runAll(statements, where);
    } catch (error) {
      await this.client.query('rollback').catch(() => {});
      await this.client.query('reset role').catch(() => {});
      throw error;
    }
  }

  private async runAll(statements: Statement[], where: (statement: Statement) => string): Promise<number> {
    let checked = 0;
    for (const statement of statements) {
      let rows: string[][] | undefined;
      let failure: Error | undefined;
      try {
        const result = await this.client.query({ text: statement.text, rowMode: 'array' });
        const last = Array.isArray(result) ? result[result.length - 1] : result;
        rows = (last.rows as (string | null)[][]).map((row) => row.map((cell) => (cell ?? '').trim()));
      } catch (error) {
        failure = error as Error;
      }
      const expectedError = statement.expect.find((e) => e.kind === 'error');
      if (failure) {
        if (!expectedError) throw new Error(`${where(statement)}: ${firstLine(statement.text)} failed: ${failure.message}`);
        if (!failure.message.startsWith(expectedError.message)) {
          throw new Error(`${where(statement)}: expected the error "${expectedError.message}…", got "${failure.message}"`);
        }
        checked++;
        continue;
      }
      if (expectedError) throw new Error(`${where(statement)}: expected the error "${expectedError.message}…", but the statement succeeded`);
      for (const expect of statement.expect) {
        checked++;
        if (expect.kind === 'value') {
          const got = rows!.length === 1 && rows![0]!.length === 1 ? rows![0]![0] : JSON.stringify(rows);
          if (got !== expect.value) throw new Error(`${where(statement)}: expected ${expect.value}, got ${got}`);
        } else if (expect.kind === 'count') {
          if (rows!.length !== expect.count) throw new Error(`${where(statement)}: expected ${expect.count} row(s), got ${rows!.length}: ${formatRows(rows!)}`);
        } else if (expect.kind === 'rows') {
          if (formatRows(rows!) !== formatRows(expect.rows)) {
            throw new Error(`${where(statement)}: rows differ\nexpected:\n${formatRows(expect.rows)}\ngot:\n${formatRows(rows!)}`);
          }
        }
      }
    }
    return checked;
  }
}

function formatRows(rows: string[][]): string {
  return rows.map((row) => ` ${row.join(' | ')}`).join('\n') || '(no rows)';
}

function firstLine(text: string): string {
  const line = text.split('\n')[0]!;
  return line.length > 70 ? `${line.slice(0, 70)}…` : line;
}

// ---------------------------------------------------------------------------
// sh: permgraph commands

export interface ShCommand {
  line: number;
  args: string[];
  expectOutput?: string;
  expectExit: number;
}

/** The commands of an sh block: `permgraph …` / `npx permgraph …`, one a line; anything else is refused. */
export function parseShell(code: string): ShCommand[] {
  const commands: ShCommand[] = [];
  code.split('\n').forEach((raw, index) => {
    const words = shellWords(raw);
    if (words.words.length === 0) return;
    const args = words.words[0] === 'npx' ? words.words.slice(1) : words.words;
    if (args[0] !== 'permgraph') throw new Error(`line ${index + 1}: only permgraph commands run in a doctest, got: ${raw.trim()} (tag the block no-test)`);
    const output = /^=>\s?(.*)$/.exec(words.comment ?? '');
    const exit = /^exit (\d+)/.exec(words.comment ?? '');
    commands.push({ line: index + 1, args: args.slice(1), expectOutput: output?.[1]?.trim(), expectExit: exit ? Number(exit[1]) : 0 });
  });
  return commands;
}

/** POSIX-ish word splitting: single and double quotes, backslash escapes, a trailing # comment. */
function shellWords(line: string): { words: string[]; comment?: string } {
  const words: string[] = [];
  let word: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === '#' && word === null) return { words, comment: line.slice(i + 1).trim() };
    if (/\s/.test(c)) {
      if (word !== null) words.push(word);
      word = null;
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end === -1) throw new Error(`unterminated ' in: ${line}`);
      word = (word ?? '') + line.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      let j = i + 1;
      let text = '';
      for (; j < line.length && line[j] !== '"'; j++) text += line[j] === '\\' ? line[++j] : line[j];
      if (j >= line.length) throw new Error(`unterminated " in: ${line}`);
      word = (word ?? '') + text;
      i = j;
    } else if (c === '\\') {
      word = (word ?? '') + (line[++i] ?? '');
    } else if (/[|&;<>()$`]/.test(c)) {
      throw new Error(`shell syntax (${c}) is not supported in a doctest: ${line.trim()} (tag the block no-test)`);
    } else {
      word = (word ?? '') + c;
    }
  }
  if (word !== null) words.push(word);
  return { words };
}

// ---------------------------------------------------------------------------
// ts: programs

/** The output lines a program states: `console.log(…); // text`. */
export function statedOutput(code: string): string[] {
  return code
    .split('\n')
    .map((line) => /console\.log\(.*\);?\s*\/\/\s?(.*)$/.exec(line)?.[1]?.trim())
    .filter((text): text is string => text !== undefined);
}

const TSX = path.join(REPO, 'node_modules', 'tsx', 'dist', 'cli.mjs');
const TSC = path.join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');

function run(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs: number }) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(command, args, { cwd: options.cwd, env: options.env ?? process.env, timeout: options.timeoutMs, maxBuffer: 10 << 20 }, (error, stdout, stderr) => {
      if (!error) return resolve({ code: 0, stdout, stderr });
      if (typeof error.code === 'number') return resolve({ code: error.code, stdout, stderr });
      // Killed by a signal (or a timeout), or not started at all: say which.
      const why = error.signal ? `killed by ${error.signal}${error.killed ? ' (timeout)' : ''}` : `not run: ${error.message}`;
      resolve({ code: -1, stdout, stderr: `${stderr}[${why}]\n` });
    });
  });
}

/** A scratch folder with a tsconfig that maps `permgraph` to this repository's source (for tsx and tsc alike). */
export async function scratchFolder(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'permgraph-doctest-'));
  const tsconfig = {
    compilerOptions: {
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      strict: true,
      skipLibCheck: true,
      allowImportingTsExtensions: true,
      noEmit: true,
      types: ['node'],
      typeRoots: [path.join(REPO, 'node_modules', '@types')],
      baseUrl: '.',
      paths: { permgraph: [path.join(REPO, 'src', 'index.ts')] },
    },
    include: ['*.mts'],
  };
  await writeFile(path.join(dir, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2));
  return dir;
}

export async function removeScratch(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** Writes each program as NAME.mts and type-checks them together; throws with tsc's report. */
export async function typecheckPrograms(dir: string, programs: { name: string; code: string }[]): Promise<void> {
  for (const program of programs) await writeFile(path.join(dir, `${program.name}.mts`), program.code);
  const result = await run(process.execPath, [TSC, '-p', 'tsconfig.json'], { cwd: dir, timeoutMs: 90_000 });
  if (result.code !== 0) throw new Error(`the TypeScript blocks do not type-check:\n${result.stdout}${result.stderr}`);
}

/** Writes NAME.mts and runs it with tsx; checks exit 0 and the stated output. */
export async function runProgram(dir: string, name: string, code: string, databaseUrl: string): Promise<void> {
  await writeFile(path.join(dir, `${name}.mts`), code);
  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: databaseUrl };
  const result = await run(process.execPath, [TSX, '--tsconfig', 'tsconfig.json', `${name}.mts`], { cwd: dir, env, timeoutMs: 90_000 });
  if (result.code !== 0) throw new Error(`the program exited ${result.code}:\n${result.stderr || result.stdout}`);
  const expected = statedOutput(code);
  const got = result.stdout.split('\n').map((line) => line.trim()).filter(Boolean);
  if (JSON.stringify(got) !== JSON.stringify(expected)) {
    const line = got.findIndex((text, i) => text !== expected[i]);
    const first = line === -1 ? got.length : line;
    throw new Error(
      `output differs from the // comments at output line ${first + 1}: expected ${JSON.stringify(expected[first] ?? '(nothing)')}, got ${JSON.stringify(got[first] ?? '(nothing)')}\n` +
        `expected:\n${expected.join('\n')}\ngot:\n${got.join('\n')}`,
    );
  }
}

/** Runs the CLI commands of an sh block in `cwd` against `databaseUrl`; returns how many stated results were checked. */
export async function runShell(commands: ShCommand[], databaseUrl: string, cwd: string, where: (c: ShCommand) => string): Promise<number> {
  let checked = 0;
  for (const command of commands) {
    const result = await runIn(cwd, ['--database-url', databaseUrl, ...command.args]);
    if (result.code !== command.expectExit) {
      throw new Error(`${where(command)}: permgraph ${command.args.join(' ')} exited ${result.code} (expected ${command.expectExit}):\n${result.stderr}${result.stdout}`);
    }
    if (command.expectOutput !== undefined) {
      checked++;
      if (result.stdout.trim() !== command.expectOutput) {
        throw new Error(`${where(command)}: permgraph ${command.args.join(' ')} printed\n${result.stdout.trim()}\nexpected\n${command.expectOutput}`);
      }
    }
  }
  return checked;
}

/** The real CLI (the helper's entry point) in a working directory of our choosing, DATABASE_URL removed. */
async function runIn(cwd: string, args: string[]) {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.DATABASE_URL;
  return run(process.execPath, [BIN, ...args], { cwd, env, timeoutMs: 90_000 });
}

// ---------------------------------------------------------------------------
// Roles a document creates

/** Names of roles the SQL blocks create. */
export function createdRoles(blocks: Block[]): string[] {
  const names = new Set<string>();
  for (const block of blocks) {
    if (kindOf(block) !== 'sql') continue;
    for (const match of block.code.matchAll(/create\s+role\s+([a-z_][a-z0-9_]*)/gi)) names.add(match[1]!);
  }
  return [...names];
}

/** Renames each role to NAME_<suffix> everywhere in the blocks (whole words only). */
export function renameRoles(blocks: Block[], roles: string[]): { blocks: Block[]; renamed: Map<string, string> } {
  const suffix = randomBytes(3).toString('hex');
  const renamed = new Map(roles.map((role) => [role, `${role}_${suffix}`]));
  if (roles.length === 0) return { blocks, renamed };
  const pattern = new RegExp(`\\b(${roles.join('|')})\\b`, 'g');
  return { blocks: blocks.map((b) => ({ ...b, code: b.code.replace(pattern, (name) => renamed.get(name)!) })), renamed };
}
