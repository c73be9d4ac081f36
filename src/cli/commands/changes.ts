import type { Command } from 'commander';
import { DEFAULT_CHANGES_BATCH, DEFAULT_POLL_INTERVAL_MS, MAX_CHANGES_BATCH } from '../../constants.ts'; // imports nothing: cheap for --help
import type { PermissionChange } from '../../engine/changes.ts';
import { InvalidInputError, SqlState } from '../../errors.ts';
import { action, ExitCode, integerAtMost, intervalMs, requireSchema } from '../action.ts';
import { exactMoments } from '../json.ts';
import { onShutdownSignal, type CommandContext } from '../context.ts';

interface ChangesFlags {
  consumer: string;
  follow?: boolean;
  register?: boolean;
  drop?: boolean;
  maxEvents: string;
  pollInterval: string;
  listen: boolean;
}

/** changes: the derived-permission change stream (sql/functions/170_changes.sql). */
export function registerChangesCommands(program: Command): void {
  program
    .command('changes')
    .description('print the permission changes a consumer has not acknowledged, then acknowledge them; --follow waits for more until SIGINT/SIGTERM')
    .requiredOption('--consumer <name>', 'the consumer (registered with permgraph.register_consumer, or --register)')
    .option('--follow', 'keep waiting for new events (woken by LISTEN/NOTIFY, polling as a backstop)')
    .option('--register', 'register the consumer first unless it exists (a new one starts with the changes after now)')
    .option('--drop', 'drop the consumer (and the events only it still needed), then exit')
    .option('--max-events <n>', 'events read and acknowledged at a time', String(DEFAULT_CHANGES_BATCH))
    .option('--poll-interval <ms>', 'with --follow: read at least this often (backstop for lost notifications)', String(DEFAULT_POLL_INTERVAL_MS))
    .option('--no-listen', 'with --follow: do not LISTEN; rely on polling only')
    .action(action<ChangesFlags>(program, (ctx, flags) => runChanges(ctx, flags)));
}

async function runChanges(ctx: CommandContext, flags: ChangesFlags): Promise<void> {
  const maxEvents = integerAtMost(flags.maxEvents, '--max-events', MAX_CHANGES_BATCH);
  if (flags.drop && (flags.register || flags.follow)) {
    throw new ExitCode(2, `--drop cannot be combined with ${flags.register ? '--register' : '--follow'}: it drops the consumer and exits`);
  }
  const pollIntervalMs = intervalMs(flags.pollInterval, '--poll-interval');
  await requireSchema(ctx);
  const { changes, dropConsumer, registerConsumer } = await import('../../engine/changes.ts');
  const name = flags.consumer;
  if (flags.drop) {
    const existed = await dropConsumer(ctx.db, name);
    if (ctx.options.json) ctx.emitJson({ consumer: name, dropped: existed });
    ctx.say(existed ? `dropped consumer ${name}` : `no consumer named ${name}`);
    return;
  }
  if (flags.register) {
    const { seq, created } = await registerConsumer(ctx.db, name);
    // stderr: stdout carries only events (one JSON object a line with --json)
    if (created) process.stderr.write(`permgraph: registered consumer ${name} at seq ${seq}\n`);
  }
  const stop = new AbortController();
  let finished: Promise<void> = Promise.resolve();
  // The batch being printed is printed and acknowledged; then the command ends with exit 0.
  void onShutdownSignal(ctx.logger, async () => {
    stop.abort();
    await finished;
  });
  finished = (async () => {
    let printed = 0;
    const stream = changes(ctx.db, name, {
      follow: flags.follow,
      url: flags.listen ? ctx.database.url : undefined,
      maxEvents,
      pollIntervalMs,
      signal: stop.signal,
      logger: ctx.logger,
    });
    for await (const batch of stream) {
      // (JSON: each moment's exact text in place of its Date, as the other commands print them)
      const lines = batch.events.map((e) => (ctx.options.json ? JSON.stringify(exactMoments(e)) : describeChange(e)));
      await writeStdout(`${lines.join('\n')}\n`);
      // Only what reached stdout is acknowledged: a failed write (a closed pipe) leaves it for the next run.
      await batch.ack();
      printed += batch.events.length;
    }
    if (printed === 0 && !flags.follow) ctx.say(`no new changes for consumer ${name}`);
  })();
  await finished.catch((error: unknown) => {
    // (the SQL side's hint, which the command line prints, names its
    // function: here the flag does it, so the driver's error is left out)
    if (error instanceof InvalidInputError && error.sqlState === SqlState.undefinedObject) {
      throw new InvalidInputError(`${error.message}: register it with --register (a new consumer starts with the changes after now)`, error.sqlState);
    }
    throw error;
  });
}

function writeStdout(text: string): Promise<void> {
  return new Promise((resolve, reject) => process.stdout.write(text, (error) => (error ? reject(error) : resolve())));
}

/**
 * One event as a line: `12 insert alice -> eng: level 2, traverse_owned
 * true`, with the row's valid_until where it has one, to the microsecond
 * (`, valid_until 2030-01-31T18:00:00.000250Z`; an update: `valid_until OLD
 * -> NEW`, `none` for no expiry).
 */
export function describeChange(e: PermissionChange): string {
  const until = (at: string | null) => (at === null ? '' : `, valid_until ${at}`);
  const value = (level: number | null, traverse: boolean | null, at: string | null) => `level ${level}, traverse_owned ${traverse}${until(at)}`;
  const untilChange =
    e.oldValidUntilExact === null && e.newValidUntilExact === null ? '' : `, valid_until ${e.oldValidUntilExact ?? 'none'} -> ${e.newValidUntilExact ?? 'none'}`;
  const what =
    e.op === 'insert'
      ? value(e.newLevel, e.newTraverseOwned, e.newValidUntilExact)
      : e.op === 'delete'
        ? `was ${value(e.oldLevel, e.oldTraverseOwned, e.oldValidUntilExact)}`
        : `level ${e.oldLevel} -> ${e.newLevel}, traverse_owned ${e.oldTraverseOwned} -> ${e.newTraverseOwned}${untilChange}`;
  return `${e.seq} ${e.op} ${e.userId} -> ${e.targetId}: ${what}`;
}
