// A change-stream consumer's side, as a test plays it: its copy of the
// table, folded from its registration snapshot and the events after it.
import { expect } from 'vitest';
import type { Queryable } from '../../src/db/pool.ts';
import { readChanges, type PermissionChange } from '../../src/engine/changes.ts';
import * as model from '../reference/model.ts';
import type { PermissionRow } from '../reference/model.ts';

/** A consumer's copy of the table. */
export type Copy = Map<string, PermissionRow>;

export function copyOf(rows: readonly PermissionRow[]): Copy {
  return new Map(rows.map((r) => [model.rowKey(r), { ...r }]));
}

export function rowsOf(copy: Copy): PermissionRow[] {
  return [...copy.values()].sort(model.compareRows);
}

/**
 * Applies events in order, checking that each one's old value is what the
 * copy holds (so old_* are right and nothing is missed, doubled or out of order).
 */
export function fold(copy: Copy, events: readonly PermissionChange[], context: string): void {
  for (const e of events) {
    const k = model.rowKey(e);
    const held = copy.get(k);
    expect(
      { level: e.oldLevel, traverseOwned: e.oldTraverseOwned, validUntil: e.oldValidUntil },
      `${context}: old value of event ${e.seq} (${e.op} ${e.userId} -> ${e.targetId})`,
    ).toEqual({ level: held?.level ?? null, traverseOwned: held?.traverseOwned ?? null, validUntil: held?.validUntil ?? null });
    if (e.newLevel === null) copy.delete(k);
    else copy.set(k, { userId: e.userId, targetId: e.targetId, level: e.newLevel, traverseOwned: e.newTraverseOwned!, validUntil: e.newValidUntil });
  }
}

/** Every event after `after` (all of them, in batches of `maxEvents`), seq strictly increasing. */
export async function readAll(db: Queryable, name: string, after: number | null, maxEvents = 1000): Promise<PermissionChange[]> {
  const all: PermissionChange[] = [];
  for (;;) {
    const afterSeq = all.length ? all[all.length - 1]!.seq : after;
    const batch = await readChanges(db, name, { afterSeq, maxEvents });
    if (batch.length === 0) break;
    // (checked as each batch comes: a stream that hands out an event again
    // would otherwise keep this loop reading it for ever)
    if (afterSeq !== null) expect(batch[0]!.seq, 'the first event after afterSeq').toBeGreaterThan(afterSeq);
    all.push(...batch);
  }
  for (let i = 1; i < all.length; i++) expect(all[i]!.seq).toBeGreaterThan(all[i - 1]!.seq);
  return all;
}
