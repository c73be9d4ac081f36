// The one parser of levels, used by the API, the CLI, sync-grants and the
// catalog: 1..3 (as numbers or digits) or read/write/manage.
import { InvalidInputError } from './errors.ts';
import type { Level } from './types.ts';

export const LEVEL_NAMES = { read: 1, write: 2, manage: 3 } as const;

/** Is this a level (1..3 as number or digits, or read/write/manage) rather than a role or operation name? */
export function isLevelInput(value: string | number): boolean {
  return typeof value === 'number' || /^\s*-?\d+\s*$/.test(value) || value in LEVEL_NAMES;
}

/** Accepts 1..3 or read/write/manage; anything else is an InvalidInputError naming the value. */
export function parseLevel(value: string | number): Level {
  const level = typeof value === 'number' ? value : (LEVEL_NAMES[value as keyof typeof LEVEL_NAMES] ?? Number(value));
  if (level === 1 || level === 2 || level === 3) return level;
  throw new InvalidInputError(`level must be 1 (read), 2 (write) or 3 (manage), got ${JSON.stringify(value)}`);
}
