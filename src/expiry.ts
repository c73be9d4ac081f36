// Expiries of grants (docs/semantics.md, "Expiring grants"): the one place
// that decides what the API, sync-grants and the CLI accept as an expiry.
// A grant's expiry is a moment (a Date, or an ISO 8601 text with its time
// zone) or a duration from now ('90m', '12h', '7d'). The parsing here needs
// no database (the CLI checks its flags with it before connecting); whether
// the moment lies in the future is decided by the database's clock, the one
// every read compares it with (src/app/expiry.ts).
import { InvalidInputError } from './errors.ts';

/** How a caller may give a grant's expiry. Omitted (or both undefined/null): the grant never expires. */
export interface ExpiryInput {
  /** The moment the grant ends: a Date, or ISO 8601 text with a time zone ('2030-01-31T18:00:00Z'). null: never. */
  expiresAt?: Date | string | null;
  /** Or a duration from now (the database's clock): digits and a unit, s, m, h or d, combinable ('90m', '12h', '7d', '1d12h'). */
  expiresIn?: string;
}

/**
 * A date ('2030-01-31', midnight UTC) or a date and time with a time zone in
 * any of ISO 8601's forms (Z, ±hh:mm, ±hhmm, ±hh; z as RFC 3339 allows), as
 * PostgreSQL reads them too (import casts its rows' moments so); groups: the
 * date and time, the fraction of a second, and the offset.
 */
const ISO_TIMESTAMP = /^(\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?)(?:\.(\d{1,6}))?(Z|z|[+-]\d{2}(?::?\d{2})?)?$/;
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
 * a time zone (Z, ±hh:mm, ±hhmm or ±hh), its fraction up to six digits, or a date alone
 * (midnight UTC), and is converted to UTC here, not by the session, so that
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
  const m = ISO_TIMESTAMP.exec(text);
  // (the whole seconds through Date.parse, which checks the fields and the
  // offset, written as ±hh:mm, the one form it is sure to read; the fraction
  // as typed: offsets are whole minutes, so it is the fraction of the
  // instant in UTC too)
  const wholeSeconds = m !== null && calendarDate(text) && wellFormed(m) ? Date.parse(m[1]!.replace(' ', 'T') + extendedOffset(m[3])) : NaN;
  if (Number.isNaN(wholeSeconds)) {
    throw new InvalidInputError(`${what} ${JSON.stringify(value)} is not an ISO 8601 timestamp with a time zone, such as 2030-01-31T18:00:00Z`);
  }
  const at = new Date(wholeSeconds);
  requireStorableYear(at, JSON.stringify(value), what, nullMeans);
  return `${at.toISOString().slice(0, -'.000Z'.length)}.${(m![2] ?? '').padEnd(6, '0')}Z`;
}

/** A date alone has neither a time nor an offset; a date and time has both, and a fraction only after its seconds. */
function wellFormed([, dateTime, fraction, offset]: RegExpExecArray): boolean {
  if (dateTime!.length === 10) return fraction === undefined && offset === undefined;
  return offset !== undefined && (fraction === undefined || dateTime!.length === 19);
}

/** An ISO 8601 offset as ±hh:mm, or Z ('' for none: a date alone, midnight UTC). */
function extendedOffset(offset: string | undefined): string {
  if (offset === undefined) return '';
  if (offset.toUpperCase() === 'Z') return 'Z';
  const digits = offset.slice(1).replace(':', ''); // (hh or hhmm)
  return `${offset[0]}${digits.slice(0, 2)}:${digits.slice(2) || '00'}`;
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
  throw new InvalidInputError(`${what} ${shown} is outside the years 1 to 9999${nullMeans === null ? '' : ` (for "${nullMeans}", pass null)`}`);
}

/** Whether the text's year-month-day exists (Date.parse rolls 2030-02-31 over into March). */
function calendarDate(text: string): boolean {
  const [year, month, day] = text.slice(0, 10).split('-').map(Number) as [number, number, number];
  return month >= 1 && month <= 12 && day >= 1 && day <= new Date(Date.UTC(year, month, 0)).getUTCDate();
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

