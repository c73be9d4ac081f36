import { pino, type Logger } from 'pino';

export type { Logger };

/** Structured JSON logs to stderr, so stdout stays free for command output. */
export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  return pino(
    { name: options.name ?? 'permgraph', level: options.level ?? process.env.PERMGRAPH_LOG_LEVEL ?? 'info' },
    pino.destination(2),
  );
}

/** A logger that drops everything: the default for library calls that were given none. */
export const silentLogger: Logger = pino({ level: 'silent' });
