// Expiries of grants (docs/semantics.md, "Expiring grants"): the one place
// that decides what the API, sync-grants and the CLI accept as an expiry.
// A grant's expiry is a moment (a Date, or an ISO 8601 text with its time
// zone) or a duration from now ('90m', '12h', '7d'). The parsing here needs
// no database (the CLI checks its flags with it before connecting); whether
// the moment lies in the future is decided by the database's clock, the one
// every read compares it with (src/app/expiry.ts).
import { instantOf, utcText } from './db/moment.ts';
import { InvalidInputError } from './errors.ts';

/** How a caller may give a grant's expiry. Omitted (or both undefined/null): the grant never expires. */
export interface ExpiryInput {
  /** The moment the grant ends: a Date, or ISO 8601 text with a time zone ('2030-01-31T18:00:00Z'). null: never. */
  expiresAt?: Date | string | null;
  /** Or a duration from now (the database's clock): digits and a unit, s, m, h or d, combinable ('90m', '12h', '7d', '1d12h'). */
  expiresIn?: string;
}

/**
 * The forms of a moment's text, the same as import's (_import_moment_form,
 * sql/functions/150_import.sql): a date alone ('2030-01-31', midnight UTC),
 * or a date and time with its offset in any of ISO 8601's forms (Z, ±hh:mm,
 * ±hhmm, ±hh; z as RFC 3339 allows), or with seconds (±hh:mm:ss, as
 * PostgreSQL writes a zone's local mean time, -03:30:52), after a space or
 * none; and what PostgreSQL writes of a timestamptz outside the years 1 to
 * 9999 (a fifth digit of year, BC, ±infinity), so that it is named for what
 * it is. Groups: year, month, day; hour, minute, second, fraction (up to the
 * six digits timestamptz keeps), offset, BC; infinity.
 */
const DATE_ALONE = /^(\d{4})-(\d{2})-(\d{2})$/;
const DATE_TIME = /^(\d{4,})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?\s*(Z|z|[+-]\d{2}(?::\d{2}(?::\d{2})?|\d{2})?)(\s+BC)?$/;
const INFINITY = /^[+-]?infinity$/;
/**
 * What a text of no moment is told, whatever is wrong with it: import's
 * wording too (_import_moment_problem, 150_import.sql), so that one text
 * is refused alike by both.
 */
const NOT_A_MOMENT = 'is neither a timestamp with a time zone offset nor a date (ISO 8601, e.g. 2030-01-31T12:00:00Z, or 2030-01-31: its midnight UTC)';
/** PostgreSQL's limit of an offset, 15:59:59, in seconds. */
const MAX_OFFSET_S = 15 * 3600 + 59 * 60 + 59;
const DURATION = /^(?:\d+[smhd])+$/;
const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
/** Far enough for any grant, and well inside what timestamptz and Date hold. */
const MAX_DURATION_MS = 100 * 366 * UNIT_MS.d!;

/**
 * The moment of `value` (a Date or ISO text) as permgraph writes it, or an
 * InvalidInputError naming it; null/undefined: never. Text keeps the
 * microseconds timestamptz stores: see parseExactMoment, which this is to
 * the millisecond, as a Date.
 */
export function parseExpiresAt(value: unknown, what = 'expiry'): Date | null {
  const exact = parseExactMoment(value, what);
  return exact === null ? null : new Date(exact);
}

/**
 * The moment a caller gives (a grant's expiry, a node's trash time, a cut-off
 * of the audit log) as permgraph writes it: ISO 8601 in UTC with the six
 * digits of microseconds timestamptz keeps (2030-01-31T18:00:00.000250Z),
 * the form every moment the library reads comes in (src/db/moment.ts); an
 * InvalidInputError naming the value otherwise. null/undefined: none.
 * nullMeans: what null stands for where the caller takes it ('never' for an
 * expiry), which an out-of-range error suggests; null: no such hint.
 *
 * A Date gives its milliseconds ('.123' is '.123000'); text is ISO 8601 with
 * a time zone (Z, ±hh:mm, ±hhmm, ±hh or ±hh:mm:ss), its fraction up to six
 * digits, or a date alone (midnight UTC), read as import reads it and as
 * PostgreSQL's cast does where both take it (readMoment), and is converted
 * to UTC here, not by the session, so that
 * it names the same instant whatever the session's time zone. Bound as a
 * parameter and cast to timestamptz, it is stored to the microsecond typed:
 * a Date would keep milliseconds only.
 */
export function parseExactMoment(value: unknown, what = 'expiry', nullMeans: string | null = 'never'): string | null {
  if (value === undefined || value === null) return null;
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new InvalidInputError(`${what} is an invalid Date`);
    requireStorableYear(value, value.toISOString(), what, nullMeans);
    return value.toISOString().replace(/Z$/, '000Z');
  }
  if (typeof value !== 'string') {
    throw new InvalidInputError(`${what} must be a Date or an ISO 8601 timestamp such as 2030-01-31T18:00:00Z, got ${JSON.stringify(value)}`);
  }
  const text = value.trim();
  const shown = JSON.stringify(value);
  const moment = INFINITY.test(text) ? 'outside' : readMoment(text);
  if (moment === null) {
    throw new InvalidInputError(`${what} ${shown} ${NOT_A_MOMENT}`);
  }
  if (moment === 'outside') throw outsideTheYears(shown, what, nullMeans);
  requireStorableYear(moment.at, shown, what, nullMeans);
  return utcText(moment.at, moment.fraction);
}

/**
 * The instant of a moment's text (in whole seconds; its fraction as typed:
 * offsets are whole seconds, so it is the fraction of the instant in UTC
 * too), with PostgreSQL's rules for its fields: a day of the proleptic
 * Gregorian calendar, 24:00:00 the start of the next day, a leap second :60
 * the start of the next minute (without a fraction, as 24:00), an offset up
 * to 15:59:59. 'outside': a year 0 (which PostgreSQL refuses), or one
 * outside 1 to 9999 whose fields it would refuse, or a year beyond what a
 * Date holds. null: none of the forms, or fields it refuses.
 */
function readMoment(text: string): { at: Date; fraction: string } | 'outside' | null {
  const alone = DATE_ALONE.exec(text);
  const m = alone ?? DATE_TIME.exec(text);
  if (m === null) return null;
  const [, yearText, monthText, dayText, hourText = '0', minuteText = '0', secondText = '0', fraction = '', offset = 'Z', bc] = m;
  const year = Number(yearText);
  const [month, day, hour, minute, second] = [monthText, dayText, hourText, minuteText, secondText].map(Number) as [number, number, number, number, number];
  const offsetSeconds = offsetInSeconds(offset);
  const astronomical = bc === undefined ? year : 1 - year; // (1 BC is year 0)
  const noFraction = /^0*$/.test(fraction);
  const fieldsExist = month >= 1 && month <= 12 && day >= 1 && day <= daysInMonth(astronomical, month)
    && minute <= 59 && (hour < 24 ? second <= 59 || (second === 60 && noFraction) : hour === 24 && minute === 0 && second === 0 && noFraction)
    && offsetSeconds !== null;
  if (year === 0 || (!fieldsExist && (year > 9999 || bc !== undefined))) return 'outside';
  if (!fieldsExist) return null;
  const at = instantOf(astronomical, month, day, hour, minute, second, offsetSeconds);
  return Number.isNaN(at.getTime()) ? 'outside' : { at, fraction };
}

/** An offset in seconds east of UTC (Z, ±hh, ±hhmm, ±hh:mm, ±hh:mm:ss), null beyond PostgreSQL's 15:59:59 or 59 minutes or seconds. */
function offsetInSeconds(offset: string): number | null {
  if (offset.toUpperCase() === 'Z') return 0;
  const digits = offset.slice(1).replaceAll(':', ''); // (hh, hhmm or hhmmss)
  const [hours, minutes, seconds] = [0, 2, 4].map((at) => Number(digits.slice(at, at + 2) || '0')) as [number, number, number];
  const total = hours * 3600 + minutes * 60 + seconds;
  if (minutes > 59 || seconds > 59 || total > MAX_OFFSET_S) return null;
  return offset.startsWith('-') ? -total : total;
}

/** Days in a month of the proleptic Gregorian calendar (astronomical years: 0 is 1 BC). */
function daysInMonth(year: number, month: number): number {
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  return month === 2 ? (leap ? 29 : 28) : [4, 6, 9, 11].includes(month) ? 30 : 31;
}

/**
 * Refuses a moment outside the years 1 to 9999, which ISO 8601 text carries
 * as PostgreSQL reads it (new Date(8.64e15), a common "never", is year
 * 275760): an InvalidInputError naming it as given (shown), with what to
 * pass instead where null means something (nullMeans).
 */
function requireStorableYear(at: Date, shown: string, what: string, nullMeans: string | null): void {
  const year = at.getUTCFullYear();
  if (year >= 1 && year <= 9999) return;
  throw outsideTheYears(shown, what, nullMeans);
}

function outsideTheYears(shown: string, what: string, nullMeans: string | null): InvalidInputError {
  return new InvalidInputError(`${what} ${shown} is outside the years 1 to 9999${nullMeans === null ? '' : ` (for "${nullMeans}", pass null)`}`);
}

/** Milliseconds of a duration such as '90m', '12h', '7d' or '1d12h', or an InvalidInputError naming it. */
export function parseDuration(value: unknown, what = 'duration'): number {
  const text = typeof value === 'string' ? value.trim() : '';
  if (!DURATION.test(text)) {
    throw new InvalidInputError(`${what} ${JSON.stringify(value)} is not a duration: digits and a unit, s, m, h or d (e.g. 90m, 12h, 7d, 1d12h)`);
  }
  const ms = [...text.matchAll(/(\d+)([smhd])/g)].reduce((sum, [, n, unit]) => sum + Number(n) * UNIT_MS[unit!]!, 0);
  if (ms <= 0) throw new InvalidInputError(`${what} ${JSON.stringify(value)} is not longer than zero`);
  if (ms > MAX_DURATION_MS) throw new InvalidInputError(`${what} ${JSON.stringify(value)} is longer than 100 years`);
  return ms;
}

/** Checks the shape of an ExpiryInput without a database (so bad input fails before any connection is used). */
export function checkExpiryInput(input: ExpiryInput): void {
  if (input.expiresIn !== undefined && input.expiresAt !== undefined && input.expiresAt !== null) {
    throw new InvalidInputError('give an expiry as expiresAt or as expiresIn, not both');
  }
  if (input.expiresIn !== undefined) parseDuration(input.expiresIn, 'expiresIn');
  else parseExactMoment(input.expiresAt, 'expiresAt');
}

