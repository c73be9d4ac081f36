import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../src/errors.ts';
import { isLevelInput, parseLevel } from '../src/levels.ts';

/** The levels, as the docs define them: a name or the digits 1-3 (blanks around allowed). */
function expected(value: string): 1 | 2 | 3 | null {
  const named = ({ read: 1, write: 2, manage: 3 } as const)[value as 'read'];
  if (['read', 'write', 'manage'].includes(value)) return named;
  const digits = /^\s*-?\d+\s*$/.test(value) ? Number(value) : null;
  return digits === 1 || digits === 2 || digits === 3 ? digits : null;
}

describe('levels', () => {
  it('a level is read, write, manage or the digits 1-3: no name an object inherits, no other way to write a number', () => {
    for (const value of ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf']) {
      expect(isLevelInput(value), value).toBe(false); // a role or operation name, then
      expect(() => parseLevel(value), value).toThrow(InvalidInputError);
    }
    for (const value of ['0x3', '3e0', '3.0', 'Infinity', '', ' ']) {
      expect(() => parseLevel(value), value).toThrow(`level must be 1 (read), 2 (write) or 3 (manage), got ${JSON.stringify(value)}`);
    }
    expect([parseLevel('read'), parseLevel(' 2 '), parseLevel('manage'), parseLevel(1)]).toEqual([1, 2, 3, 1]);
  });

  it('parseLevel agrees with the definition on any text, and accepts only what isLevelInput calls a level', () => {
    const text = fc.oneof(fc.string(), fc.constantFrom('read', 'write', 'manage', '1', '2', '3', '0', '4', '-1', ' 3', 'constructor', '0x2', '2.0'));
    fc.assert(
      fc.property(text, (value) => {
        const want = expected(value);
        if (want === null) expect(() => parseLevel(value)).toThrow(InvalidInputError);
        else expect(parseLevel(value)).toBe(want);
        if (want !== null) expect(isLevelInput(value)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });
});
