/**
 * The application-facing API around sql/008_roles_rls.sql: the catalog of
 * named roles and operations (a JSON file, synced into permgraph.roles and
 * permgraph.operations), superusers, operation checks, can() for application
 * rows, and row-level security on application tables.
 *
 * The catalog file is validated strictly, by hand: JSON.parse silently keeps
 * the last of duplicate keys and reports no positions, so the file is read by
 * a small JSON parser that keeps the line and column of every key and value,
 * and every error names them.
 */
import { readFile } from 'node:fs/promises';
import { sql, type Queryable } from '../db/pool.ts';
import { isLevelInput, LEVEL_NAMES, parseLevel, type Level } from '../engine/check.ts';
import { InvalidInputError, rethrowAsInputError } from '../errors.ts';

// ---------------------------------------------------------------------------
// Catalog types and errors

export interface CatalogEntry {
  name: string;
  level: Level;
}

/** The desired state of permgraph.roles and permgraph.operations, each sorted by name. */
export interface Catalog {
  roles: CatalogEntry[];
  operations: CatalogEntry[];
}

export interface SourcePosition {
  line: number;
  column: number;
}

/** A malformed catalog: where (when known) and why. Nothing was written. */
export class CatalogError extends InvalidInputError {
  override name = 'CatalogError';
  constructor(
    readonly reason: string,
    readonly source: string,
    readonly position?: SourcePosition,
  ) {
    super(`${source}${position ? `:${position.line}:${position.column}` : ''}: ${reason}`);
  }
}

/** Top-level keys of the catalog file; both are required so that a typo cannot wipe a whole section. */
const SECTIONS = { roles: 'role', operations: 'operation' } as const;
type Section = keyof typeof SECTIONS;

/** Names start with a letter so they never read as a level; dots and colons allow `document.read`, `doc:read`. */
const NAME_PATTERN = /^[A-Za-z][A-Za-z0-9_.:-]*$/;
const MAX_NAME_LENGTH = 100;

// ---------------------------------------------------------------------------
// A JSON parser that keeps positions (strict JSON, RFC 8259)

type JsonNode =
  | { kind: 'object'; at: SourcePosition; entries: { key: string; keyAt: SourcePosition; value: JsonNode }[] }
  | { kind: 'array'; at: SourcePosition; items: JsonNode[] }
  | { kind: 'string'; at: SourcePosition; value: string }
  | { kind: 'number'; at: SourcePosition; value: number }
  | { kind: 'boolean'; at: SourcePosition; value: boolean }
  | { kind: 'null'; at: SourcePosition };

class PositionedJsonParser {
  private offset = 0;
  private readonly lineStarts: number[] = [0];

  constructor(
    private readonly text: string,
    private readonly source: string,
  ) {
    for (let i = 0; i < text.length; i++) if (text[i] === '\n') this.lineStarts.push(i + 1);
  }

  parseDocument(): JsonNode {
    if (this.text.charCodeAt(0) === 0xfeff) this.offset = 1; // a byte-order mark is harmless
    this.skipSpace();
    const value = this.parseValue();
    this.skipSpace();
    if (this.offset < this.text.length) this.fail(`unexpected ${this.describeHere()} after the end of the JSON document`);
    return value;
  }

  positionOf(offset: number): SourcePosition {
    let low = 0;
    let high = this.lineStarts.length - 1;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if (this.lineStarts[mid]! <= offset) low = mid;
      else high = mid - 1;
    }
    return { line: low + 1, column: offset - this.lineStarts[low]! + 1 };
  }

  private fail(reason: string, offset = this.offset): never {
    throw new CatalogError(`invalid JSON: ${reason}`, this.source, this.positionOf(offset));
  }

  private describeHere(): string {
    return this.offset >= this.text.length ? 'end of file' : `character ${JSON.stringify(this.text[this.offset])}`;
  }

  private skipSpace(): void {
    while (this.offset < this.text.length && ' \t\r\n'.includes(this.text[this.offset]!)) this.offset++;
  }

  private parseValue(): JsonNode {
    const at = this.positionOf(this.offset);
    const c = this.text[this.offset];
    if (c === '{') return this.parseObject(at);
    if (c === '[') return this.parseArray(at);
    if (c === '"') return { kind: 'string', at, value: this.parseString() };
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return { kind: 'number', at, value: this.parseNumber() };
    for (const [word, node] of [
      ['true', { kind: 'boolean', at, value: true }],
      ['false', { kind: 'boolean', at, value: false }],
      ['null', { kind: 'null', at }],
    ] as const) {
      if (this.text.startsWith(word, this.offset)) {
        this.offset += word.length;
        return node;
      }
    }
    return this.fail(`expected a value, found ${this.describeHere()}`);
  }

  private parseObject(at: SourcePosition): JsonNode {
    this.offset++; // {
    const entries: { key: string; keyAt: SourcePosition; value: JsonNode }[] = [];
    this.skipSpace();
    if (this.text[this.offset] === '}') {
      this.offset++;
      return { kind: 'object', at, entries };
    }
    for (;;) {
      this.skipSpace();
      if (this.text[this.offset] !== '"') this.fail(`expected a quoted key, found ${this.describeHere()}`);
      const keyAt = this.positionOf(this.offset);
      const key = this.parseString();
      this.skipSpace();
      if (this.text[this.offset] !== ':') this.fail(`expected ":" after key ${JSON.stringify(key)}, found ${this.describeHere()}`);
      this.offset++;
      this.skipSpace();
      entries.push({ key, keyAt, value: this.parseValue() });
      this.skipSpace();
      const next = this.text[this.offset];
      this.offset++;
      if (next === '}') return { kind: 'object', at, entries };
      if (next !== ',') this.fail(`expected "," or "}" in an object, found ${next === undefined ? 'end of file' : JSON.stringify(next)}`, this.offset - 1);
    }
  }

  private parseArray(at: SourcePosition): JsonNode {
    this.offset++; // [
    const items: JsonNode[] = [];
    this.skipSpace();
    if (this.text[this.offset] === ']') {
      this.offset++;
      return { kind: 'array', at, items };
    }
    for (;;) {
      this.skipSpace();
      items.push(this.parseValue());
      this.skipSpace();
      const next = this.text[this.offset];
      this.offset++;
      if (next === ']') return { kind: 'array', at, items };
      if (next !== ',') this.fail(`expected "," or "]" in an array, found ${next === undefined ? 'end of file' : JSON.stringify(next)}`, this.offset - 1);
    }
  }

  private parseString(): string {
    const start = this.offset;
    this.offset++; // opening quote
    let value = '';
    for (;;) {
      const c = this.text[this.offset];
      if (c === undefined || c === '\n') this.fail('unterminated string', start);
      if (c === '"') {
        this.offset++;
        return value;
      }
      if (c < ' ') this.fail('control character in a string (escape it)');
      if (c !== '\\') {
        value += c;
        this.offset++;
        continue;
      }
      const escape = this.text[this.offset + 1];
      const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
      if (escape !== undefined && escape in simple) {
        value += simple[escape];
        this.offset += 2;
      } else if (escape === 'u' && /^[0-9a-fA-F]{4}$/.test(this.text.slice(this.offset + 2, this.offset + 6))) {
        value += String.fromCharCode(Number.parseInt(this.text.slice(this.offset + 2, this.offset + 6), 16));
        this.offset += 6;
      } else {
        this.fail(`invalid escape sequence in a string`);
      }
    }
  }

  private parseNumber(): number {
    const match = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(this.text.slice(this.offset));
    if (!match) this.fail('invalid number');
    this.offset += match[0].length;
    return Number(match[0]);
  }
}

// ---------------------------------------------------------------------------
// Catalog validation

/** An entry as read, before its level is checked; positions when it came from a file. */
interface RawEntry {
  section: Section;
  name: string;
  level: unknown;
  nameAt?: SourcePosition;
  levelAt?: SourcePosition;
}

function describeLevel(level: unknown): string {
  return typeof level === 'object' && level !== null ? 'a list or an object' : JSON.stringify(level);
}

const WITH_ARTICLE = { role: 'a role', operation: 'an operation' } as const;

/** Names, levels, duplicates, and names used both as a role and as an operation. */
function validateEntries(entries: RawEntry[], source: string): Catalog {
  const catalog: Catalog = { roles: [], operations: [] };
  const seen = new Map<string, RawEntry>();
  for (const entry of entries) {
    const what = SECTIONS[entry.section];
    if (entry.name.length === 0 || entry.name.length > MAX_NAME_LENGTH || !NAME_PATTERN.test(entry.name)) {
      throw new CatalogError(
        `${what} name ${JSON.stringify(entry.name)} is not valid: use 1 to ${MAX_NAME_LENGTH} letters, digits, "_", ".", ":" or "-", starting with a letter`,
        source,
        entry.nameAt,
      );
    }
    if (entry.section === 'roles' && entry.name in LEVEL_NAMES) {
      throw new CatalogError(`role name ${JSON.stringify(entry.name)} is reserved: it already means level ${LEVEL_NAMES[entry.name as keyof typeof LEVEL_NAMES]}`, source, entry.nameAt);
    }
    const previous = seen.get(entry.name);
    if (previous) {
      const where = previous.nameAt ? ` (first at line ${previous.nameAt.line})` : '';
      const reason =
        previous.section === entry.section
          ? `duplicate ${what} ${JSON.stringify(entry.name)}${where}`
          : `${JSON.stringify(entry.name)} is both ${WITH_ARTICLE[SECTIONS[previous.section]]}${where} and ${WITH_ARTICLE[what]}; use distinct names`;
      throw new CatalogError(reason, source, entry.nameAt);
    }
    seen.set(entry.name, entry);
    const level =
      typeof entry.level === 'number' && Number.isInteger(entry.level) && entry.level >= 1 && entry.level <= 3
        ? parseLevel(entry.level)
        : typeof entry.level === 'string' && entry.level in LEVEL_NAMES
          ? parseLevel(entry.level)
          : null;
    if (level === null) {
      throw new CatalogError(
        `level of ${what} ${JSON.stringify(entry.name)} must be 1 (read), 2 (write) or 3 (manage), or one of "read", "write", "manage"; got ${describeLevel(entry.level)}`,
        source,
        entry.levelAt ?? entry.nameAt,
      );
    }
    catalog[entry.section].push({ name: entry.name, level });
  }
  catalog.roles.sort(byName);
  catalog.operations.sort(byName);
  return catalog;
}

function byName(a: CatalogEntry, b: CatalogEntry): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/**
 * Parses and validates catalog text:
 * `{ "roles": { "viewer": 1, ... }, "operations": { "document.read": 1, ... } }`
 * (levels 1..3 or "read"/"write"/"manage"). Errors are CatalogErrors with line and column.
 */
export function parseCatalog(text: string, source = '<catalog>'): Catalog {
  const parser = new PositionedJsonParser(text, source);
  const root = parser.parseDocument();
  if (root.kind !== 'object') throw new CatalogError(`the catalog must be a JSON object with "roles" and "operations", got ${root.kind}`, source, root.at);
  const entries: RawEntry[] = [];
  const present = new Set<Section>();
  for (const { key, keyAt, value } of root.entries) {
    if (!(key in SECTIONS)) throw new CatalogError(`unknown top-level key ${JSON.stringify(key)}; expected "roles" and "operations"`, source, keyAt);
    const section = key as Section;
    if (present.has(section)) throw new CatalogError(`duplicate top-level key ${JSON.stringify(key)}`, source, keyAt);
    present.add(section);
    if (value.kind !== 'object') {
      throw new CatalogError(`"${section}" must be an object mapping each ${SECTIONS[section]} name to its level, got ${value.kind}`, source, value.at);
    }
    for (const entry of value.entries) {
      const level = entry.value.kind === 'string' || entry.value.kind === 'number' ? entry.value.value : entry.value.kind === 'null' ? null : entry.value.kind === 'boolean' ? entry.value.value : [];
      entries.push({ section, name: entry.key, level, nameAt: entry.keyAt, levelAt: entry.value.at });
    }
  }
  for (const section of Object.keys(SECTIONS) as Section[]) {
    if (!present.has(section)) throw new CatalogError(`missing top-level key "${section}" (use {} for none)`, source, root.at);
  }
  return validateEntries(entries, source);
}

/** Reads and validates a catalog file (JSON). */
export async function loadCatalogFile(path: string): Promise<Catalog> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new InvalidInputError(`cannot read catalog file ${path}: ${code === 'ENOENT' ? 'no such file' : code ?? String(error)}`);
  }
  return parseCatalog(text, path);
}

// ---------------------------------------------------------------------------
// Sync

export interface CatalogChange {
  kind: 'role' | 'operation';
  name: string;
  change: 'add' | 'change' | 'remove';
  /** The level in the database before (null when added). */
  from: Level | null;
  /** The level in the file (null when removed). */
  to: Level | null;
}

export interface SyncResult {
  dryRun: boolean;
  changes: CatalogChange[];
}

const TABLES = { roles: sql`permgraph.roles`, operations: sql`permgraph.operations` } as const;

function diffSection(kind: CatalogChange['kind'], current: CatalogEntry[], desired: CatalogEntry[]): CatalogChange[] {
  const before = new Map(current.map((e) => [e.name, e.level]));
  const after = new Map(desired.map((e) => [e.name, e.level]));
  const changes: CatalogChange[] = [];
  for (const name of [...new Set([...before.keys(), ...after.keys()])].sort()) {
    const from = before.get(name) ?? null;
    const to = after.get(name) ?? null;
    if (from === to) continue;
    changes.push({ kind, name, change: from === null ? 'add' : to === null ? 'remove' : 'change', from, to });
  }
  return changes;
}

/**
 * Makes permgraph.roles and permgraph.operations equal to the catalog (adds,
 * changes and removes) in one transaction, and returns what changed. With
 * dryRun, only computes it. A second sync of the same catalog changes nothing.
 * Grants keep the levels they were given: renaming or re-levelling a role
 * does not rewrite existing grants.
 */
export async function syncRoles(db: Queryable, catalog: Catalog, options: { dryRun?: boolean } = {}): Promise<SyncResult> {
  const dryRun = options.dryRun ?? false;
  // A catalog built in code gets the same checks as one read from a file.
  const checked = validateEntries(
    (Object.keys(SECTIONS) as Section[]).flatMap((section) => catalog[section].map((e) => ({ section, name: e.name, level: e.level as unknown }))),
    '<catalog>',
  );
  try {
    return await db.tx(async (tx) => {
      // Concurrent syncs take turns; readers of the catalog are not blocked.
      await tx.query(sql`lock table permgraph.roles, permgraph.operations in share row exclusive mode`);
      const changes: CatalogChange[] = [];
      for (const section of Object.keys(SECTIONS) as Section[]) {
        const current: CatalogEntry[] = await tx.query(sql`select name, level from ${TABLES[section]} order by name`);
        const sectionChanges = diffSection(SECTIONS[section], current, checked[section]);
        changes.push(...sectionChanges);
        if (dryRun || sectionChanges.length === 0) continue;
        const removed = sectionChanges.filter((c) => c.change === 'remove').map((c) => c.name);
        const upserts = sectionChanges.filter((c) => c.change !== 'remove');
        if (removed.length) await tx.query(sql`delete from ${TABLES[section]} where name = any(${removed}::text[])`);
        if (upserts.length) {
          await tx.query(sql`
            insert into ${TABLES[section]} (name, level)
            select * from unnest(${upserts.map((c) => c.name)}::text[], ${upserts.map((c) => c.to)}::smallint[])
            on conflict (name) do update set level = excluded.level`);
        }
      }
      return { dryRun, changes };
    });
  } catch (error) {
    return rethrowAsInputError(error);
  }
}

/** One line per change, e.g. `+ role viewer = 1 (read)`, `~ operation doc.delete: 2 -> 3`, `- role admin (was 3)`. */
export function describeChange(change: CatalogChange): string {
  const named = (level: Level) => `${level} (${Object.keys(LEVEL_NAMES)[level - 1]})`;
  if (change.change === 'add') return `+ ${change.kind} ${change.name} = ${named(change.to!)}`;
  if (change.change === 'remove') return `- ${change.kind} ${change.name} (was ${named(change.from!)})`;
  return `~ ${change.kind} ${change.name}: ${named(change.from!)} -> ${named(change.to!)}`;
}

// ---------------------------------------------------------------------------
// Levels, operations, superusers, application rows

/**
 * A level from 1..3, read/write/manage, or the name of a role in the catalog
 * (permgraph.role_level). Unknown roles are an InvalidInputError listing the known ones.
 */
export async function parseLevelOrRole(db: Queryable, value: string | number): Promise<Level> {
  if (isLevelInput(value)) return parseLevel(value);
  try {
    const [row] = await db.query(sql`select permgraph.role_level(${value}) as level`);
    return parseLevel(row.level as number);
  } catch (error) {
    return rethrowAsInputError(error);
  }
}

/** permgraph.check_op(): may the user perform the named operation on the node? */
export async function checkOperation(
  db: Queryable,
  userId: string,
  targetId: string,
  operation: string,
  options: { includeTrash?: boolean } = {},
): Promise<boolean> {
  try {
    const [row] = await db.query(sql`select permgraph.check_op(${userId}, ${targetId}, ${operation}, ${options.includeTrash ?? false}) as allowed`);
    return row.allowed === true;
  } catch (error) {
    return rethrowAsInputError(error);
  }
}

/**
 * permgraph.can() / can_op(): may the user act on an application row that
 * carries its own owner column (the row need not be a node)? `levelOrOperation`
 * is 1..3, read/write/manage, or an operation name from the catalog.
 */
export async function canAccessRow(
  db: Queryable,
  row: { userId: string; id: string; ownerId: string | null },
  levelOrOperation: Level | string,
  options: { includeTrash?: boolean } = {},
): Promise<boolean> {
  const includeTrash = options.includeTrash ?? false;
  const isLevel = isLevelInput(levelOrOperation);
  try {
    const [result] = isLevel
      ? await db.query(sql`select permgraph.can(${row.userId}, ${row.id}, ${row.ownerId}, ${parseLevel(levelOrOperation)}, ${includeTrash}) as allowed`)
      : await db.query(sql`select permgraph.can_op(${row.userId}, ${row.id}, ${row.ownerId}, ${levelOrOperation}, ${includeTrash}) as allowed`);
    return result.allowed === true;
  } catch (error) {
    return rethrowAsInputError(error);
  }
}

/**
 * Flags (or unflags) a user as superuser: check, can and the row-level
 * security policies let it through (trash still hides). Only users can be
 * superusers. A plain UPDATE on permgraph.nodes, so any SQL client can do the same.
 */
export async function setSuperuser(db: Queryable, userId: string, flag: boolean): Promise<void> {
  let updated: unknown[];
  try {
    updated = await db.query(sql`update permgraph.nodes set is_superuser = ${flag} where id = ${userId} returning id`);
  } catch (error) {
    return rethrowAsInputError(error);
  }
  if (updated.length === 0) throw new InvalidInputError(`node ${JSON.stringify(userId)} does not exist`);
}

/**
 * permgraph.enable_rls(): installs permgraph's row-level security policies on
 * an application table (idempotent). `table` is a table name as SQL reads it
 * (optionally schema-qualified); ownerColumn null means direct grants only.
 */
export async function enableRowLevelSecurity(db: Queryable, table: string, idColumn: string, ownerColumn: string | null): Promise<void> {
  await requireTable(db, table);
  try {
    await db.query(sql`select permgraph.enable_rls(${table}::regclass, ${idColumn}, ${ownerColumn})`);
  } catch (error) {
    return rethrowAsInputError(error);
  }
}

/** permgraph.disable_rls(): removes permgraph's policies (and RLS itself when no other policy remains). */
export async function disableRowLevelSecurity(db: Queryable, table: string): Promise<void> {
  await requireTable(db, table);
  try {
    await db.query(sql`select permgraph.disable_rls(${table}::regclass)`);
  } catch (error) {
    return rethrowAsInputError(error);
  }
}

/** The ::regclass cast's own error is not an input error; name the table instead. */
async function requireTable(db: Queryable, table: string): Promise<void> {
  let rows: { found: boolean }[];
  try {
    rows = await db.query(sql`select to_regclass(${table}) is not null as found`);
  } catch (error) {
    return rethrowAsInputError(error);
  }
  if (!rows[0]?.found) throw new InvalidInputError(`table ${JSON.stringify(table)} does not exist`);
}
