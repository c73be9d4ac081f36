// The access rule for application rows, stated through the reference model.
import * as model from '../reference/model.ts';
import type { Level, RefGraph } from '../reference/model.ts';
import { o } from './builders.ts';

/** A row of an application table: its id and its owner column. */
export interface AppRow {
  id: string;
  ownerId: string | null;
}

/**
 * A row that is not a registered node is the model's unregistered object,
 * owned by its owner column; superusers pass unless trash hides the row.
 */
export function expectedRowAccess(graph: RefGraph, superusers: ReadonlySet<string>, userId: string, row: AppRow, level: Level, now: Date): boolean {
  const registered = graph.nodes.some((n) => n.id === row.id);
  const asObject = o(row.id, row.ownerId);
  const withRow: RefGraph = registered ? graph : { nodes: [...graph.nodes, asObject], grants: graph.grants };
  if (superusers.has(userId)) {
    const trash = model.effectiveTrashAt(withRow, row.id);
    return trash === null || trash.getTime() > now.getTime();
  }
  return model.check(withRow, userId, row.id, level, now);
}
