import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/**
 * Structured logs, as JSON lines to stderr unless `destination` takes them
 * (the command line's text format), so stdout stays free for command output.
 */
export function createLogger(options: { level?: string; name?: string; destination?: DestinationStream } = {}): Logger {
  return pino(
    { name: options.name ?? 'permgraph', level: options.level ?? process.env.PERMGRAPH_LOG_LEVEL ?? 'info' },
    options.destination ?? pino.destination(2),
  );
}

/** A logger that drops everything: the default for library calls that were given none. */
export const silentLogger: Logger = pino({ level: 'silent' });
