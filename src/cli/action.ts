import { InvalidArgumentError, Option, type Command } from 'commander';
import { withContext, type CommandContext, type GlobalOptions } from './context.ts';
import { MAX_INTERVAL_MS, MAX_PAGE_LIMIT } from '../constants.ts';
import { InvalidInputError, withRightsNeeded } from '../errors.ts';
import { describeRightNeeded, RIGHTS_NEEDED, type Operation } from '../rights.ts';
import { ExitCode } from './errors.ts';

export { ExitCode };

export type Action<O> = (context: CommandContext, options: O, args: string[]) => Promise<void>;

/**
 * Wraps a command body: global options, database, cleanup, and SIGINT/SIGTERM
 * cancelling the command's statements on the server (see withContext).
 * Daemons log at info by default, one-shot commands at warn.
 */
export function action<O>(program: Command, run: Action<O>, defaults: { logLevel: string } = { logLevel: 'warn' }) {
  return async (...args: unknown[]) => {
    const command = args[args.length - 1] as Command;
    const options = command.opts() as O;
    const global = program.opts<GlobalOptions>();
    try {
      await withContext({ ...global, logLevel: global.logLevel ?? defaults.logLevel }, (context) => run(context, options, command.args));
    } catch (error) {
      throw withRightsHint(error, commandPath(command));
    }
  };
}

/**
 * The library's operation each command runs, whose need (src/rights.ts)
 * the command has; `note` words what else the command line's user should
 * know. A command not listed reads, as the reads do.
 */
const COMMAND_OPERATIONS: Record<string, { operation: Operation; note?: string }> = {
  migrate: { operation: 'migrate' },
  dev: { operation: 'migrate', note: 'it migrates' },
  'worker --migrate': { operation: 'migrate', note: 'run `permgraph migrate` as it, and the worker without --migrate' },
  import: { operation: 'importGraph' },
  'roles sync': { operation: 'syncRoles' },
  'prune-audit': { operation: 'pruneAudit' },
  worker: { operation: 'applyChanges' },
  refresh: { operation: 'refresh' },
  verify: { operation: 'verify' },
  grant: { operation: 'grant' },
  revoke: { operation: 'revoke' },
  'sync-grants': { operation: 'syncGrants' },
  check: { operation: 'check' },
  explain: { operation: 'explain' },
  list: { operation: 'listTargets' },
  who: { operation: 'listUsers' },
  audit: { operation: 'audit' },
  changes: { operation: 'changes' },
  doctor: { operation: 'doctor' },
};

function commandPath(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/**
 * PostgreSQL's own refusals ("permission denied for …", "must be owner of
 * …", as a migration's DROP or ALTER gets) say what was refused, not why:
 * the login lacks the role the command needs. Said here as the command's
 * (withRightsNeeded), with the SQLSTATE kept, whatever the library call
 * that was refused said. (The SQL side's own refusals name their reason
 * already.)
 */
export function withRightsHint(error: unknown, path: string): unknown {
  if (toldByCommand.has(error as object)) return error; // (`worker --migrate`'s, through the worker's action)
  const { operation, note } = COMMAND_OPERATIONS[path] ?? { operation: 'check' };
  const need = RIGHTS_NEEDED[operation];
  const told = withRightsNeeded(error, `\`permgraph ${path}\``, describeRightNeeded(need, note ?? need.note));
  if (told !== error) toldByCommand.add(told as object);
  return told;
}

/** Refusals already told as a command's (withRightsHint). */
const toldByCommand = new WeakSet<object>();

/** A command's end on a database without the permgraph schema (requireSchema, and status, which shows the other states). */
export function schemaNotFound(ctx: CommandContext): ExitCode {
  // (with neither a URL nor DATABASE_URL the command ran on the embedded
  // development server: in production, a missing or misspelt variable)
  const where = ctx.database.origin === 'embedded' ? ' (the embedded development server: neither --database-url nor DATABASE_URL was given)' : '';
  return new ExitCode(1, `permgraph schema not found in this database${where}: run \`permgraph migrate\` first`, 'not_migrated');
}

/** Fails with a one-line reason unless the schema matches this package. */
export async function requireSchema(ctx: CommandContext): Promise<void> {
  const { modifiedMigrations, schemaState } = await import('../migrations/migrate.ts'); // loaded lazily: see context.ts
  const { state, pending } = await schemaState(ctx.db);
  if (state === 'missing') throw schemaNotFound(ctx);
  if (state === 'behind') throw new ExitCode(1, `permgraph schema is behind this package (pending: ${pending.join(', ')}): run \`permgraph migrate\``, 'not_migrated');
  if (state === 'ahead') throw new ExitCode(1, 'permgraph schema is newer than this package: upgrade permgraph', 'not_migrated');
  if (state === 'modified') throw new ExitCode(1, modifiedMigrations(pending), 'migration_checksum');
}

export function positiveInteger(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new ExitCode(2, `${flag} must be a positive integer, got "${value}"`);
  return n;
}

/** A positive integer flag of at most `max` (`unit` follows it in the message), else a usage error. */
export function integerAtMost(value: string, flag: string, max: number, unit = ''): number {
  const n = positiveInteger(value, flag);
  if (n > max) throw new ExitCode(2, `${flag} must be at most ${max}${unit}, got "${value}"`);
  return n;
}

/** An interval flag in ms (--poll-interval, --standby-interval): 1 to what a timer holds, else a usage error. */
export function intervalMs(value: string, flag: string): number {
  return integerAtMost(value, flag, MAX_INTERVAL_MS, ' ms (about 24 days)');
}

/** A page size flag (--limit of list, who, audit): 1 to MAX_PAGE_LIMIT, else a usage error. */
export function pageSize(value: string, flag: string): number {
  return integerAtMost(value, flag, MAX_PAGE_LIMIT);
}

/** A TCP port to listen on: 1 to 65535, else a usage error. */
export function portNumber(value: string, flag: string): number {
  const n = positiveInteger(value, flag);
  if (n > 65535) throw new ExitCode(2, `${flag} must be a port from 1 to 65535, got "${value}"`);
  return n;
}

/**
 * Runs the library's own check of a flag's value (a parser that throws
 * InvalidInputError naming the flag), turning its refusal into a usage
 * error: exit 2, as for every malformed flag.
 */
export function checkFlag<T>(check: () => T): T {
  try {
    return check();
  } catch (error) {
    if (error instanceof InvalidInputError) throw new ExitCode(2, error.message);
    throw error;
  }
}

/**
 * --actor ACTOR: who the audit log records as making a command's changes
 * (permgraph.actor for its transactions; default: the database login). Every
 * command that writes audited changes takes it: grant, revoke, sync-grants,
 * roles sync, import. Add it with `.addOption(actorOption())`; the value is
 * `flags.actor` (a non-empty string, or undefined).
 */
export function actorOption(): Option {
  return new Option('--actor <actor>', 'record the changes in the audit log as made by ACTOR, e.g. an e-mail address (default: the database login)').argParser(
    (value: string) => {
      if (value.trim() === '') throw new InvalidArgumentError('the actor must not be empty.');
      return value;
    },
  );
}
