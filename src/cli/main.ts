#!/usr/bin/env node
// The permgraph command (the package's bin, as dist/cli/main.js). Only commander
// and the command definitions load here; each command imports its implementation
// when it runs, so `permgraph --help` stays close to bare node's start-up time.
import { Command, CommanderError } from 'commander';
import { ExitCode } from './action.ts';
import { registerCommands } from './commands/index.ts';

const program = new Command('permgraph')
  .description('materialized permission graph for PostgreSQL')
  .option('--database-url <url>', 'PostgreSQL connection string (default: $DATABASE_URL, else the embedded server)')
  .option('--log-level <level>', 'trace|debug|info|warn|error|silent (logs are JSON on stderr)')
  .option('--json', 'machine-readable output on stdout')
  .showHelpAfterError()
  .exitOverride();
registerCommands(program);
for (const command of program.commands) command.exitOverride();

/** Runs the CLI and returns the exit code: one line on stderr for any failure. */
async function main(argv: string[]): Promise<number> {
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version are "errors" with exit code 0; usage errors were already printed.
      return error.exitCode === 0 ? 0 : 2;
    }
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`permgraph: ${message.replace(/^permgraph: /, '').split('\n')[0]}\n`);
    return error instanceof ExitCode ? error.code : 1;
  }
}

// Exit explicitly, with the command's code, whatever handles a library left open.
process.exit(await main(process.argv));
