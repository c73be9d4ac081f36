// The one reading of the database's moments (src/db/moment.ts), on texts as
// the database writes timestamptz in JSON under various session time zones,
// each with the instant it names written out by hand.
import { describe, expect, it } from 'vitest';
import { exactMoment, moment } from '../../src/db/moment.ts';

describe('exactMoment', () => {
  it('reads the session\'s offset, seconds, BC and five-digit years, and keeps six digits', () => {
    const cases: [string, string][] = [
      ['2030-01-31T18:00:00.00025+00:00', '2030-01-31T18:00:00.000250Z'],
      ['2030-01-31T19:00:00.0007+01:00', '2030-01-31T18:00:00.000700Z'],
      ['2030-01-31T14:30:00.000001-03:30', '2030-01-31T18:00:00.000001Z'],
      ['2030-01-31T18:00:00+00:00', '2030-01-31T18:00:00.000000Z'],
      ['2030-01-31T18:00:00Z', '2030-01-31T18:00:00.000000Z'],
      // local mean time: Kathmandu +05:41:16, St. John's -03:30:52 (year 1 there is partly 1 BC)
      ['0001-01-01T05:41:16.000001+05:41:16', '0001-01-01T00:00:00.000001Z'],
      ['0001-12-31T20:29:08.000003-03:30:52 BC', '0001-01-01T00:00:00.000003Z'],
      ['0002-01-01T00:00:00+00:00 BC', '-000001-01-01T00:00:00.000000Z'],
      // the last hour of 9999 in Kathmandu (+05:45) and Berlin
      ['10000-01-01T04:45:00.0007+05:45', '9999-12-31T23:00:00.000700Z'],
      ['10000-01-01T00:00:00.000001+01:00', '9999-12-31T23:00:00.000001Z'],
    ];
    for (const [text, exact] of cases) expect(exactMoment(text), text).toBe(exact);
  });

  it('leaves what it cannot read as it is: infinity, and years no Date holds', () => {
    for (const text of ['infinity', '-infinity', '294276-12-31T23:59:59.999999+00:00']) expect(exactMoment(text)).toBe(text);
  });

  it('moment gives the Date and the exact text under the names asked', () => {
    expect(moment('at', '2030-01-31T19:00:00.0007+01:00')).toEqual({ at: new Date('2030-01-31T18:00:00.000Z'), atExact: '2030-01-31T18:00:00.000700Z' });
    expect(moment('at', null)).toEqual({ at: null, atExact: null });
  });
});
