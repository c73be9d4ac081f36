// The one set of builders for graphs of the reference model, used by every
// test: u/g/o make a user, group or object node, grant() a grant.
import type { Level, RefGrant, RefNode } from '../reference/model.ts';

/** A user node (trashAt is ignored by the semantics: the model's own tests set it to show that). */
export const u = (id: string, ownerId: string | null = null, trashAt: Date | null = null): RefNode => ({ id, kind: 'user', ownerId, trashAt });

export const g = (id: string, ownerId: string | null = null, trashAt: Date | null = null): RefNode => ({ id, kind: 'group', ownerId, trashAt });

export const o = (id: string, ownerId: string | null = null, trashAt: Date | null = null): RefNode => ({ id, kind: 'object', ownerId, trashAt });

/** A grant tail -[level]-> head, read in the order of an arrow. */
export const grant = (tailId: string, level: Level, headId: string, source = 'default'): RefGrant => ({ tailId, headId, level, source });

/** The same grant, expiring at `expiresAt`. */
export const expiring = (tailId: string, level: Level, headId: string, expiresAt: Date, source = 'default'): RefGrant => ({
  tailId,
  headId,
  level,
  source,
  expiresAt,
});
