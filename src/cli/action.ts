import type { Command } from 'commander';
import { withContext, type CommandContext, type GlobalOptions } from './context.ts';

/** Thrown by commands that ran fine but must exit non-zero (e.g. verify found differences). */
export class ExitCode extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

export type Action<O> = (context: CommandContext, options: O, args: string[]) => Promise<void>;

/** Wraps a command body: global options, database, cleanup. Daemons log at info by default, one-shot commands at warn. */
export function action<O>(program: Command, run: Action<O>, defaults: { logLevel: string } = { logLevel: 'warn' }) {
  return async (...args: unknown[]) => {
    const command = args[args.length - 1] as Command;
    const options = command.opts() as O;
    const global = program.opts<GlobalOptions>();
    await withContext({ ...global, logLevel: global.logLevel ?? defaults.logLevel }, (context) => run(context, options, command.args));
  };
}

/** Fails with a one-line reason unless the schema matches this package. */
export async function requireSchema(ctx: CommandContext): Promise<void> {
  const { schemaState } = await import('../migrations/migrate.ts'); // loaded lazily: see context.ts
  const { state, pending } = await schemaState(ctx.db);
  if (state === 'missing') throw new ExitCode(1, 'permgraph schema not found in this database: run `permgraph migrate` first');
  if (state === 'behind') throw new ExitCode(1, `permgraph schema is behind this package (pending: ${pending.join(', ')}): run \`permgraph migrate\``);
  if (state === 'ahead') throw new ExitCode(1, 'permgraph schema is newer than this package: upgrade permgraph');
}

export function positiveInteger(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new ExitCode(2, `${flag} must be a positive integer, got "${value}"`);
  return n;
}
