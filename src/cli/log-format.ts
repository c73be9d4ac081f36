// How the command line's logs look on stderr: JSON lines (pino's own, for
// log collectors) or one line of text per entry for people at a terminal.
// The library logs structured entries either way; this is formatting only.
import { ExitCode } from './errors.ts';

export type LogFormat = 'json' | 'text';

/** --log-format, else text on a terminal and JSON elsewhere (a supervisor's or container's log). */
export function resolveLogFormat(flag: string | undefined, stderrIsTerminal: boolean = process.stderr.isTTY === true): LogFormat {
  if (flag === undefined) return stderrIsTerminal ? 'text' : 'json';
  if (flag === 'json' || flag === 'text') return flag;
  throw new ExitCode(2, `--log-format must be json or text, got "${flag}"`);
}

/** The levels --log-level takes (pino's, but fatal: the command line logs nothing at it). */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'silent'] as const;

/** --log-level, checked here so that a wrong one is a usage error naming it, not a failure deep in the logger. */
export function resolveLogLevel(flag: string): (typeof LOG_LEVELS)[number] {
  const level = LOG_LEVELS.find((known) => known === flag);
  if (level === undefined) throw new ExitCode(2, `--log-level must be ${LOG_LEVELS.slice(0, -1).join(', ')} or ${LOG_LEVELS.at(-1)}, got "${flag}"`);
  return level;
}

/** pino's numeric levels, as printed. */
const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
/** Fields every entry has, which the text line shows in its own places or leaves out. */
const FRAME_FIELDS = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name']);

/**
 * One pino JSON entry as `HH:MM:SS.mmm LEVEL message key=value …` (an error
 * as its message, its stack below from debug on). A nested object is spread
 * into dotted keys (`batch.mode=local batch.rows_written=8`), so a batch's
 * summary reads as fields rather than as one long JSON value.
 */
export function formatLogLine(json: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.trimEnd(); // not pino's: pass it through
  }
  const level = typeof entry.level === 'number' ? entry.level : 30;
  const time = typeof entry.time === 'number' ? clockTime(new Date(entry.time)) : '';
  const parts = [time, (LEVEL_NAMES[level] ?? String(level)).padEnd(5), String(entry.msg ?? '')];
  let stack = '';
  for (const [key, value] of Object.entries(entry)) {
    if (FRAME_FIELDS.has(key)) continue;
    if (key === 'err' && value !== null && typeof value === 'object') {
      const err = value as { message?: unknown; stack?: unknown };
      parts.push(`err=${JSON.stringify(String(err.message ?? ''))}`);
      if (level <= 20 && typeof err.stack === 'string') stack = `\n${err.stack.replace(/^/gm, '    ')}`;
      continue;
    }
    parts.push(...fields(key, value));
  }
  return parts.filter((part) => part !== '').join(' ') + stack;
}

/** `key=value` pairs of one field; a plain object's fields under `key.`, an empty one as `{}`. */
function fields(key: string, value: unknown): string[] {
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length > 0) {
    return Object.entries(value).flatMap(([inner, innerValue]) => fields(`${key}.${inner}`, innerValue));
  }
  const text = typeof value === 'string' && /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  return [`${key}=${text}`];
}

/** HH:MM:SS.mmm in local time. */
function clockTime(at: Date): string {
  const two = (n: number) => String(n).padStart(2, '0');
  return `${two(at.getHours())}:${two(at.getMinutes())}:${two(at.getSeconds())}.${String(at.getMilliseconds()).padStart(3, '0')}`;
}

/** A pino destination that writes each entry to stderr as formatLogLine's text. */
export function textLogDestination(write: (text: string) => void = (text) => void process.stderr.write(text)): { write(chunk: string): void } {
  return {
    write(chunk: string) {
      for (const line of chunk.split('\n')) if (line !== '') write(`${formatLogLine(line)}\n`);
    },
  };
}
