/**
 * The catalog of named roles and operations (sql/functions/090_catalog.sql): a JSON
 * file, validated strictly and with positions (./positioned-json.ts), synced
 * into permgraph.roles and permgraph.operations.
 */
import { readFile } from 'node:fs/promises';
import { sql, type Queryable } from '../db/pool.ts';
import { InvalidInputError, withInputErrors } from '../errors.ts';
import { isLevelName, LEVEL_NAMES, parseLevel } from '../levels.ts';
import type { Level } from '../types.ts';
import { applyActor } from './audit.ts';
import { parsePositionedJson, type SourcePosition } from './positioned-json.ts';

export type { SourcePosition } from './positioned-json.ts';

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
    // (an operation named "write" would make check(…, 'write') mean level 2
    // in one call and the operation in another)
    if (isLevelName(entry.name)) {
      throw new CatalogError(`${what} name ${JSON.stringify(entry.name)} is reserved: it already means level ${LEVEL_NAMES[entry.name]}`, source, entry.nameAt);
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
        : typeof entry.level === 'string' && isLevelName(entry.level)
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
  const root = parsePositionedJson(text, (reason, at) => {
    throw new CatalogError(`invalid JSON: ${reason}`, source, at);
  });
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
export async function syncRoles(
  db: Queryable,
  catalog: Catalog,
  options: { dryRun?: boolean; /** Who the audit log records as making the changes (default: the database login). */ actor?: string } = {},
): Promise<SyncResult> {
  const dryRun = options.dryRun ?? false;
  // A catalog built in code gets the same checks as one read from a file,
  // its shape first (JavaScript callers, or a cast, can pass anything).
  const sections = (Object.keys(SECTIONS) as Section[]).map((section) => {
    const entries: unknown = (catalog as Partial<Catalog> | null)?.[section];
    if (!Array.isArray(entries)) {
      throw new CatalogError(`"${section}" must be a list of { name, level } (use [] for none), got ${entries === null ? 'null' : typeof entries}`, '<catalog>');
    }
    return entries.map((e: unknown) => {
      const entry = e as { name?: unknown; level?: unknown } | null;
      if (typeof entry?.name !== 'string') throw new CatalogError(`every entry of "${section}" needs a name (a string), got ${JSON.stringify(e)}`, '<catalog>');
      return { section, name: entry.name, level: entry.level };
    });
  });
  const checked = validateEntries(sections.flat(), '<catalog>');
  return withInputErrors(() =>
    db.tx(async (tx) => {
      // Concurrent syncs take turns; readers of the catalog are not blocked.
      // A dry run writes nothing and takes no lock (which would need write
      // rights): any login that may read the catalog may ask what a sync
      // would change, from one snapshot of both tables.
      if (!dryRun) await tx.query(sql`lock table permgraph.roles, permgraph.operations in share row exclusive mode`);
      await applyActor(tx, options.actor);
      const entries: (CatalogEntry & { section: Section })[] = await tx.query(sql`
        select 'roles' as section, name, level from permgraph.roles
        union all
        select 'operations', name, level from permgraph.operations
        order by 1, 2`);
      const changes: CatalogChange[] = [];
      for (const section of Object.keys(SECTIONS) as Section[]) {
        const current = entries.filter((e) => e.section === section).map(({ name, level }) => ({ name, level }));
        const sectionChanges = diffSection(SECTIONS[section], current, checked[section]);
        changes.push(...sectionChanges);
        if (dryRun || sectionChanges.length === 0) continue;
        const removed = sectionChanges.filter((c) => c.change === 'remove').map((c) => c.name);
        const upserts = sectionChanges.filter((c) => c.change !== 'remove');
        if (removed.length) await tx.query(sql`delete from ${TABLES[section]} where name = any(${removed}::text[])`);
        if (upserts.length) {
          await tx.query(sql`
            insert into ${TABLES[section]} (name, level)
            select * from rows from (pg_catalog.unnest(${upserts.map((c) => c.name)}::text[]), pg_catalog.unnest(${upserts.map((c) => c.to)}::smallint[]))
            on conflict (name) do update set level = excluded.level`);
        }
      }
      return { dryRun, changes };
    }),
  );
}
