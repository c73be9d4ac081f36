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

/**
 * A logger that drops everything: the default for library calls that were
 * given none. Its destination drops what it is given too: pino's default
 * would open a buffered writer on stdout when permgraph is imported, which
 * flushes and fsyncs stdout as the process exits (1-3 ms when stdout is a
 * file), for a logger that never writes.
 */
export const silentLogger: Logger = pino({ level: 'silent' }, { write: () => {} });
