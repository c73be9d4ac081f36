import { InvalidArgumentError, Option, type Command } from 'commander';
import { withContext, type CommandContext, type GlobalOptions } from './context.ts';
import { MAX_PAGE_LIMIT } from '../constants.ts';
import { InvalidInputError, SqlState, sqlStateOf } from '../errors.ts';
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

/** Which login each command needs (docs/security.md); the rest read, as permgraph_reader. */
const RIGHTS_NEEDED: Record<string, string> = {
  migrate: "the schema's owner",
  dev: "the schema's owner (it migrates)",
  import: "the schema's owner",
  'roles sync': "the schema's owner (a dry run: any permgraph role)",
  'prune-audit': "the schema's owner",
  worker: 'a login granted permgraph_worker',
  refresh: 'a login granted permgraph_worker',
  verify: 'a login granted permgraph_worker',
  grant: 'a login granted permgraph_writer',
  revoke: 'a login granted permgraph_writer',
  'sync-grants': 'a login granted permgraph_writer',
};

function commandPath(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/**
 * PostgreSQL's own refusals ("permission denied for …", "must be owner of
 * …", as a migration's DROP or ALTER gets) say what was refused, not why:
 * the login lacks the role the command needs. Said here, with the SQLSTATE
 * kept. (The SQL side's own refusals name their reason already.)
 */
export function withRightsHint(error: unknown, path: string, needs = RIGHTS_NEEDED[path] ?? 'a login granted permgraph_reader'): unknown {
  const message = error instanceof Error ? error.message : '';
  const postgresOwn = /^(permission denied for |must be owner of )/.test(message);
  if (sqlStateOf(error) !== SqlState.insufficientPrivilege || !postgresOwn || error instanceof RightsHinted) return error;
  return Object.assign(new RightsHinted(`${message}: \`permgraph ${path}\` needs ${needs} (docs/security.md)`, { cause: error }), { code: SqlState.insufficientPrivilege });
}

/** A refusal already told which login it needs (withRightsHint). */
class RightsHinted extends Error {}

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

/** A page size flag (--limit of list, who, audit): 1 to MAX_PAGE_LIMIT, else a usage error. */
export function pageSize(value: string, flag: string): number {
  const n = positiveInteger(value, flag);
  if (n > MAX_PAGE_LIMIT) throw new ExitCode(2, `${flag} must be at most ${MAX_PAGE_LIMIT}, got "${value}"`);
  return n;
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
