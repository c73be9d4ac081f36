#!/usr/bin/env node
// The permgraph command (the package's bin, as dist/cli/main.js). Only commander
// and the command definitions load here; each command imports its implementation
// when it runs, so `permgraph --help` stays close to bare node's start-up time.
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { registerCommands } from './commands/index.ts';
import { describeFailure, EXIT, reportFailure } from './errors.ts';
import { LOG_LEVELS } from './log-format.ts';

/** --json anywhere before a `--`: failures are then reported as JSON too, usage errors included. */
const json = (() => {
  const args = process.argv.slice(2);
  const end = args.indexOf('--');
  return (end === -1 ? args : args.slice(0, end)).includes('--json');
})();

/** The package's version: package.json sits two levels up from src/cli/ and from dist/cli/ alike. */
const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

const program = new Command('permgraph')
  .description('materialized permission graph for PostgreSQL')
  .version(version, '-V, --version', "print permgraph's version")
  .option('--database-url <url>', 'PostgreSQL connection string (default: $DATABASE_URL, else the embedded server)')
  .option('--log-level <level>', `${LOG_LEVELS.join('|')} (logs go to stderr)`)
  .option('--log-format <format>', 'json|text (default: text on a terminal, else JSON lines)')
  .option('--json', 'machine-readable output on stdout, keys in camelCase; a failure is {"error": {"message", "code", "exitCode"}} on stderr')
  // one line and a pointer, not the whole help, after a usage error
  .showHelpAfterError('(add --help for usage)')
  // With --json, commander's own error text and help are replaced by the JSON failure (main below).
  .configureOutput({ writeErr: (text) => void (json ? undefined : process.stderr.write(text)) })
  .addHelpText(
    'after',
    '\nExit status: 0 success; 1 failure; 2 usage error; 3 denied (check); 130/143 interrupted by SIGINT/SIGTERM\n' +
      '(the statement running on the server is cancelled first); 141 the output\'s reader stopped reading.',
  )
  .exitOverride();
registerCommands(program);
for (const command of program.commands) command.exitOverride();

// Whatever read stdout stopped reading (`permgraph audit | head -1`): end
// quietly with the status of a Unix tool that SIGPIPE ended, not with an
// unhandled 'error' event's stack trace.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(EXIT.sigpipe);
  throw error;
});

/** Runs the CLI and returns the exit code: one line (or one JSON object) on stderr for any failure. */
async function main(argv: string[]): Promise<number> {
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (error) {
    // --help and --version are "errors" with exit code 0.
    if (error instanceof CommanderError && error.exitCode === 0) return 0;
    const failure = describeFailure(error, error instanceof CommanderError);
    // Commander has printed its usage errors already, unless --json silenced it.
    if (!(error instanceof CommanderError) || json) reportFailure(failure, json);
    return failure.exitCode;
  }
}

// Exit explicitly, with the command's code, whatever handles a library left open.
process.exit(await main(process.argv));
