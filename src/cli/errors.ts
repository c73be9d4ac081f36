// How a command ends when it does not succeed: its exit status, and the
// failure as one line for people or, with --json, as a JSON object for
// scripts. Imports nothing that loads a database driver (see main.ts).
import { CommanderError } from 'commander';
import { InvalidInputError, isConnectionError, MigrationLockTimeoutError, PermgraphError, sqlStateOf } from '../errors.ts';

/**
 * Exit statuses, the same for every command: 0 success, 1 failure (bad input,
 * database or connection errors, verify's differences, doctor's failed
 * checks), 2 usage error (unknown command or option, malformed flag value),
 * 3 denied (`permgraph check` only), 130 / 143 interrupted by SIGINT / SIGTERM,
 * 141 when what reads stdout stopped reading (as a process SIGPIPE ended).
 */
export const EXIT = { ok: 0, failure: 1, usage: 2, denied: 3, sigint: 130, sigterm: 143, sigpipe: 141 } as const;

/**
 * Thrown by commands that must exit non-zero (e.g. verify found differences):
 * the exit status, the one-line reason (empty: print nothing, as `check`
 * when denied), and the failure's code for --json (see FailureCode).
 */
export class ExitCode extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly failure: FailureCode = code === EXIT.usage ? 'usage' : 'failed',
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/**
 * The `code` of a failure in --json output, stable for scripts:
 * usage (exit 2), denied (exit 3, check; nothing is printed), invalid_input (permgraph refused the input; sqlState when it
 * came from the database), not_migrated (no or another schema version),
 * differences (verify), checks_failed (doctor), interrupted (130/143),
 * connection (the server could not be reached), timeout, migration_checksum,
 * lock_timeout (migrate gave way to transactions holding its locks for as
 * long as it may, and gave up; with sqlState 55P03), database (any other
 * database error; with sqlState), failed (a command's own reason), internal
 * (a bug: please report it).
 */
export type FailureCode =
  | 'usage'
  | 'denied'
  | 'invalid_input'
  | 'not_migrated'
  | 'differences'
  | 'checks_failed'
  | 'interrupted'
  | 'connection'
  | 'timeout'
  | 'migration_checksum'
  | 'lock_timeout'
  | 'database'
  | 'failed'
  | 'internal';

export interface Failure {
  message: string;
  code: FailureCode;
  exitCode: number;
  sqlState?: string;
}

/** What went wrong, for the exit status, the one line and the JSON. `usage` marks commander's parse errors. */
export function describeFailure(error: unknown, usage = false): Failure {
  const text = error instanceof Error ? error.message : String(error);
  // One line, named once: the SQL side's "permgraph: " and commander's "error: " go.
  const firstLine = text.split('\n')[0]!.replace(/^permgraph: /, '');
  // (commander's error for a command group called without its command, after
  // the help it prints, which --json silences: its message is a placeholder)
  if (usage && error instanceof CommanderError && error.code === 'commander.help') {
    return { message: 'a command is missing (add --help for the commands)', code: 'usage', exitCode: EXIT.usage };
  }
  if (usage) return { message: firstLine.replace(/^error: /, ''), code: 'usage', exitCode: EXIT.usage };
  if (error instanceof ExitCode) return { message: firstLine, code: error.failure, exitCode: error.code };
  const message = withServerHint(firstLine, error);
  const sqlState = sqlStateOf(error);
  const withState = (failure: Failure): Failure => (sqlState ? { ...failure, sqlState } : failure);
  if (error instanceof InvalidInputError) return withState({ message, code: 'invalid_input', exitCode: EXIT.failure });
  const name = error instanceof Error ? error.name : '';
  if (name === 'FreshnessTimeoutError') return { message, code: 'timeout', exitCode: EXIT.failure };
  if (name === 'MigrationChecksumError') return { message, code: 'migration_checksum', exitCode: EXIT.failure };
  if (error instanceof MigrationLockTimeoutError) return withState({ message, code: 'lock_timeout', exitCode: EXIT.failure });
  if (isConnectionError(error)) return withState({ message, code: 'connection', exitCode: EXIT.failure });
  if (sqlState) return withState({ message, code: 'database', exitCode: EXIT.failure });
  if (error instanceof PermgraphError) return { message, code: 'failed', exitCode: EXIT.failure };
  return { message, code: 'internal', exitCode: EXIT.failure };
}

/**
 * The reason followed by the server's HINT, when the database error (or the
 * error translated from it, in `cause`) carries one: what to do about it,
 * which the SQL side words for whoever reads the error (a role that
 * `migrate` may not create: who can create it; a change consumer of another
 * login: whose it is), and which the one line would otherwise drop.
 */
function withServerHint(message: string, error: unknown): string {
  for (let e: unknown = error, depth = 0; typeof e === 'object' && e !== null && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const hint = (e as { hint?: unknown }).hint;
    if (typeof hint === 'string' && hint.trim() !== '' && sqlStateOf(e) !== undefined) {
      const oneLine = hint.trim().replace(/\s*\n\s*/g, ' ');
      return message.includes(oneLine) ? message : `${message}: ${oneLine}`;
    }
  }
  return message;
}

/** Writes the failure on stderr: `permgraph: reason`, or with --json `{"error": {...}}` on one line. Nothing for an empty reason. */
export function reportFailure(failure: Failure, json: boolean): void {
  if (failure.message === '') return;
  if (json) process.stderr.write(`${JSON.stringify({ error: failure })}\n`);
  else process.stderr.write(`permgraph: ${failure.message}\n`);
}
