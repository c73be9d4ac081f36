// The one parser of levels, used by the API, the CLI, sync-grants and the
// catalog: 1..3 (as numbers or digits) or read/write/manage.
import { InvalidInputError } from './errors.ts';
import type { Level } from './types.ts';

export const LEVEL_NAMES = { read: 1, write: 2, manage: 3 } as const;

/** Digits, as a level is written in text ('0x3', '3e0' or '3.0' are names, not levels). */
const DIGITS = /^\s*-?\d+\s*$/;

/** A level's own name (never one an object inherits: 'constructor', 'toString'). */
export const isLevelName = (value: string): value is keyof typeof LEVEL_NAMES => Object.hasOwn(LEVEL_NAMES, value);

/** Is this a level (1..3 as number or digits, or read/write/manage) rather than a role or operation name? */
export function isLevelInput(value: string | number): boolean {
  return typeof value === 'number' || DIGITS.test(value) || isLevelName(value);
}

/** Accepts 1..3 or read/write/manage; anything else is an InvalidInputError naming the value. */
export function parseLevel(value: string | number): Level {
  const level = typeof value === 'number' ? value : isLevelName(value) ? LEVEL_NAMES[value] : DIGITS.test(value) ? Number(value) : NaN;
  if (level === 1 || level === 2 || level === 3) return level;
  throw new InvalidInputError(`level must be 1 (read), 2 (write) or 3 (manage), got ${JSON.stringify(value)}`);
}
