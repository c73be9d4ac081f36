// The database's moments as the library gives them: timestamptz keeps
// microseconds, a Date milliseconds. Every moment the library reads from the
// database (explain's, the listings' validUntil, the audit log's) comes as
// the text of its JSON (to_json(column), or a function's jsonb), and is
// given twice: as a Date, as it always was, and as its exact text, in UTC to
// the microsecond, which names the instant the tables hold.

/**
 * A moment of the database's JSON, in ISO 8601 in UTC with the six digits
 * of microseconds timestamptz keeps: 2030-01-31T18:00:00.000250Z. The
 * database writes it in the session's time zone, whose offset may have
 * seconds (a zone's local mean time, before 1900 or so), may put the first
 * moments of year 1 in 1 BC and the last of year 9999 in year 10000, none of
 * which Date reads, and drops trailing zeros. Text of another shape
 * ('infinity', which an older row may hold), or beyond what a Date holds,
 * is returned as it is.
 */
export function exactMoment(text: string): string {
  const m = /^(\d{4,})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:Z|([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)( BC)?$/.exec(text);
  if (m === null) return text;
  const [, year, month, day, hour, minute, second, fraction = '', sign, offsetHours = '0', offsetMinutes = '0', offsetSeconds = '0', bc] = m;
  const offset = (sign === '-' ? -1 : 1) * ((Number(offsetHours) * 60 + Number(offsetMinutes)) * 60 + Number(offsetSeconds));
  // (1 BC is the year 0 of ISO 8601)
  const at = instantOf(bc ? 1 - Number(year) : Number(year), Number(month), Number(day), Number(hour), Number(minute), Number(second), offset);
  if (Number.isNaN(at.getTime())) return text; // (past the year 275760)
  return utcText(at, fraction);
}

/**
 * The instant (whole seconds) of a moment's fields written at an offset of
 * `offsetSeconds` east of UTC: the year astronomical (1 BC is 0), an hour
 * 24 or a second 60 carried into the next day or minute. An invalid Date
 * past the years a Date holds. For the database's text (exactMoment) and a
 * user's (parseExactMoment, src/expiry.ts), which check their fields first.
 */
export function instantOf(year: number, month: number, day: number, hour: number, minute: number, second: number, offsetSeconds: number): Date {
  const at = new Date(0);
  // (setUTCFullYear: Date.UTC reads the years 0 to 99 as 1900 to 1999)
  at.setUTCFullYear(year, month - 1, day);
  at.setUTCHours(hour, minute, second - offsetSeconds, 0);
  return at;
}

/** An instant's whole seconds and a fraction's digits (up to six, as written: offsets are whole seconds, so it is the UTC instant's fraction too) as the exact text: 2030-01-31T18:00:00.000250Z. */
export function utcText(wholeSeconds: Date, fraction: string): string {
  return `${wholeSeconds.toISOString().slice(0, -'.000Z'.length)}.${fraction.padEnd(6, '0')}Z`;
}

/**
 * { [name]: the moment as a Date (to the millisecond: a Date holds no
 * more; an invalid Date for text exactMoment leaves as it is),
 * [name + 'Exact']: its exact text (exactMoment) }, both null for null.
 */
export function moment<K extends string>(name: K, text: string | null): Record<K, Date | null> & Record<`${K}Exact`, string | null> {
  const exact = text === null ? null : exactMoment(text);
  return { [name]: exact === null ? null : new Date(exact), [`${name}Exact`]: exact } as Record<K, Date | null> & Record<`${K}Exact`, string | null>;
}
